// Data movement through a per-axis index map: Transpose, Slice, Expand and
// Tile (strided views) and Pad. Elements travel as their bits in 32-bit
// words, so one kernel serves every dtype of a width and NaN payloads
// survive the copy.
//
// params: [0] output elements, [1] units (the words or element pairs the
// invocations write), [2] offset of the view's first element (i32), then
// four words per output axis a at 3 + 4a: output dim, input dim, input
// stride (i32) and the pad before the axis (i32).

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

const RANK: u32 = {{RANK}}u;

{{LOAD}}

// The input element that output element `o` copies, or -1 for the fill.
fn source_of(o: u32) -> i32 {
    var rest = o;
    var src = bitcast<i32>(params[2]);
    for (var k = 0u; k < RANK; k++) {
        let p = 3u + 4u * (RANK - 1u - k);
        let dim = params[p];
        let c = rest % dim;
        rest = rest / dim;
        let in_dim = i32(params[p + 1u]);
        let stride = bitcast<i32>(params[p + 2u]);
        let before = bitcast<i32>(params[p + 3u]);
{{AXIS}}
    }
    return src;
}

fn value_at(o: u32) -> {{ELEM}} {
    let s = source_of(o);
    if (s < 0) {
        return {{FILL}};
    }
    return load_x(u32(s));
}

@compute @workgroup_size({{WORKGROUP}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let u = (wid.x + wid.y * nwg.x) * {{INVOCATIONS}}u + lid;
    if (u >= params[1]) {
        return;
    }
    let n = params[0];
{{STORE}}
}
