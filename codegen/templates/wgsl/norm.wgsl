// LayerNorm / RMSNorm over the trailing axes: one workgroup per row.
//
// A row is the `n` contiguous elements of the normalised axes. The
// statistics are folded with a strided loop and a tree in workgroup
// memory, in two passes over the row as on the CPU (the mean, then the
// mean square of the deviations), so cancellation does not hurt the
// variance. Scale and bias broadcast to the normalised axes; when they hold
// a full row they are indexed directly.
//
// params: [0] rows, [1] n, [2] scale is a full row, [3] bias is a full row,
// then per normalised axis (outermost first): dim, scale stride, bias stride.
{{ENABLE}}
{{BINDINGS}}

const WG: u32 = {{WG}}u;
// Largest power of two below WG: the first stride of the tree.
const TREE: u32 = {{TREE}}u;
// Number of normalised axes.
const TAIL: u32 = {{TAIL}}u;
// RMSNorm: no mean is subtracted.
const RMS: bool = {{RMS}};
const EPSILON: f32 = {{EPSILON}};

var<workgroup> red: array<f32, WG>;

// Sum of one value per invocation; every invocation gets the result.
fn wg_sum(v: f32, tid: u32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = TREE; s > 0u; s = s >> 1u) {
        if (tid < s && tid + s < WG) {
            red[tid] = red[tid] + red[tid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// Offset of element `j` of a row in the scale (which = 0) or bias (1),
// through their broadcast strides.
fn param_offset(j: u32, which: u32) -> u32 {
    if (params[2u + which] != 0u) {
        return j;
    }
    var rem = j;
    var off = 0u;
    for (var k = 0u; k < TAIL; k++) {
        let a = TAIL - 1u - k;
        let d = params[4u + 3u * a];
        off += (rem % d) * params[5u + 3u * a + which];
        rem = rem / d;
    }
    return off;
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
    let base = row * n;
    let nf = f32(n);
    var mean = 0.0;
    if (!RMS) {
        var s = 0.0;
        for (var j = tid; j < n; j += WG) {
            s += f32(x[base + j]);
        }
        mean = wg_sum(s, tid) / nf;
    }
    var q = 0.0;
    for (var j = tid; j < n; j += WG) {
        let d = f32(x[base + j]) - mean;
        q += d * d;
    }
    let inv = 1.0 / sqrt(wg_sum(q, tid) / nf + EPSILON);
    for (var j = tid; j < n; j += WG) {
        let v = (f32(x[base + j]) - mean) * inv * f32(scale[param_offset(j, 0u)]);
        y[base + j] = {{T}}({{BIAS}});
    }
}
