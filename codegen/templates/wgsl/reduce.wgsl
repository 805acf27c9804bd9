// Reduction over a set of axes: one workgroup per output element.
//
// The input is viewed as kept axes (which select the output element) and
// reduced axes (walked by the workgroup); `row_base` and `elem_offset`
// below turn the two linear indices into element offsets from the run-time
// dims and strides in `params`. Each invocation folds a strided slice of
// the reduced elements, then a tree in workgroup memory combines the
// partial results.
//
// params: [0] output elements, [1] reduced elements per output, then
// (dim, stride) per run of kept axes and per run of reduced axes.
{{ENABLE}}
{{MATH}}
@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read_write> y: array<{{T}}>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

const WG: u32 = {{WG}}u;
// Largest power of two below WG: the first stride of the tree.
const TREE: u32 = {{TREE}}u;
const OP_MAX: u32 = 1u;
const OP_MIN: u32 = 2u;
const OP_PROD: u32 = 3u;
// The fold of this kernel's reduce kind.
const OP: u32 = {{OP}}u;
// LogSumExp subtracts the largest finite element first (one extra pass).
const SHIFTED: bool = {{SHIFTED}};
const F32_MAX: f32 = 3.4028235e38;

var<workgroup> red: array<f32, WG>;

{{INDEX}}

fn combine(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case OP_MAX: { return kiln_max(a, b); }
        case OP_MIN: { return kiln_min(a, b); }
        case OP_PROD: { return a * b; }
        // Sums (0).
        default: { return a + b; }
    }
}

// Combines one value per invocation; every invocation gets the result.
fn wg_reduce(op: u32, v: f32, tid: u32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = TREE; s > 0u; s = s >> 1u) {
        if (tid < s && tid + s < WG) {
            red[tid] = combine(op, red[tid], red[tid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// The element as the fold sees it (|x|, x², e^(x - shift), ...).
fn map(v: f32, shift: f32) -> f32 {
    return {{MAP}};
}

// The output from the folded value of `n` elements.
fn finish(acc: f32, n: u32, shift: f32) -> f32 {
    return {{FINISH}};
}

@compute @workgroup_size({{WORKGROUP}})
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params[0]) {
        return;
    }
    let n = params[1];
    let base = row_base(row);
    var shift = 0.0;
    if (SHIFTED) {
        // Non-finite elements do not move the shift, as on the CPU.
        var m = bitcast<f32>(0xff800000u);
        for (var r = tid; r < n; r += WG) {
            let v = f32(x[base + elem_offset(r)]);
            if (abs(v) <= F32_MAX) {
                m = max(m, v);
            }
        }
        m = wg_reduce(OP_MAX, m, tid);
        shift = select(0.0, m, abs(m) <= F32_MAX);
    }
    var acc = {{IDENTITY}};
    for (var r = tid; r < n; r += WG) {
        acc = combine(OP, acc, map(f32(x[base + elem_offset(r)]), shift));
    }
    acc = wg_reduce(OP, acc, tid);
    if (tid == 0u) {
        y[row] = {{T}}(finish(acc, n, shift));
    }
}
