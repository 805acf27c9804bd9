// Rotary position embedding (ONNX RotaryEmbedding): each head vector is
// rotated pairwise by the angle of its position,
// (x1, x2) -> (cos * x1 - sin * x2, sin * x1 + cos * x2); elements past the
// rotated part are copied. One invocation per output element.
//
// params: [0] elements, [1] head size, [2] rotated pairs (half the rotated
// part), [3] sequence length, [4] heads, [5] rows of the cos/sin caches.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> cos_cache: array<f32>;
@group(0) @binding(2) var<storage, read> sin_cache: array<f32>;
{{IDS_BINDING}}
@group(0) @binding({{Y_BINDING}}) var<storage, read_write> y: array<f32>;
@group(0) @binding({{PARAMS_BINDING}}) var<storage, read> params: array<u32>;

// The cache row of batch `bi`, sequence position `si`.
fn cache_row(bi: u32, si: u32) -> u32 {
{{CACHE_ROW}}
}

@compute @workgroup_size({{WORKGROUP}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * {{INVOCATIONS}}u + lid;
    if (e >= params[0]) {
        return;
    }
    let d = params[1];
    let half = params[2];
    let k = e % d;
    if (k >= 2u * half) {
        y[e] = x[e];
        return;
    }
    let r = e / d;
    let seq = params[3];
    let heads = params[4];
{{ROW_POSITION}}
    let c = cache_row(bi, si) * half;
{{PAIR}}
    let base = e - k;
    let x1 = x[base + i1];
    let x2 = x[base + i2];
    let cs = cos_cache[c + j];
    let sn = sin_cache[c + j];
    if (first) {
        y[e] = cs * x1 - sn * x2;
    } else {
        y[e] = sn * x1 + cs * x2;
    }
}
