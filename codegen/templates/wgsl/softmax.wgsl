// Softmax / LogSoftmax along one axis: one workgroup per row.
//
// A row is every element along the axis for one position of the other
// axes; `row_base` and `elem_offset` (below) place it from the run-time
// dims and strides in `params`, so the axis need not be the last one.
// Numerically stable: the row maximum is subtracted before exponentiating.
//
// params: [0] rows, [1] row length, then (dim, stride) per run of the
// other axes and for the softmax axis.
{{ENABLE}}
{{MATH}}
@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read_write> y: array<{{T}}>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

const WG: u32 = {{WG}}u;
// Largest power of two below WG: the first stride of the tree.
const TREE: u32 = {{TREE}}u;
// LogSoftmax instead of Softmax.
const LOG: bool = {{LOG}};

var<workgroup> red: array<f32, WG>;

{{INDEX}}

// Combines one value per invocation (maximum or sum); every invocation
// gets the result.
fn wg_reduce(is_max: bool, v: f32, tid: u32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = TREE; s > 0u; s = s >> 1u) {
        if (tid < s && tid + s < WG) {
            let a = red[tid];
            let b = red[tid + s];
            red[tid] = select(a + b, kiln_max(a, b), is_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
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
    var m = bitcast<f32>(0xff800000u);
    for (var r = tid; r < n; r += WG) {
        m = kiln_max(m, f32(x[base + elem_offset(r)]));
    }
    m = wg_reduce(true, m, tid);
    var s = 0.0;
    for (var r = tid; r < n; r += WG) {
        s += kiln_exp(f32(x[base + elem_offset(r)]) - m);
    }
    s = wg_reduce(false, s, tid);
    if (LOG) {
        let ls = log(s);
        for (var r = tid; r < n; r += WG) {
            let i = base + elem_offset(r);
            y[i] = {{T}}(f32(x[i]) - m - ls);
        }
    } else {
        let inv = 1.0 / s;
        for (var r = tid; r < n; r += WG) {
            let i = base + elem_offset(r);
            y[i] = {{T}}(kiln_exp(f32(x[i]) - m) * inv);
        }
    }
}
