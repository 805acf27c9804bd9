// Gather along one axis: the output is [outer, indices, inner] and element
// (o, j, i) copies data (o, indices[j], i). Negative indices count from the
// end of the axis; an index outside the axis yields zeros (the CPU executor
// reports it as an error). Elements travel as their bits in 32-bit words.
//
// params: [0] output elements, [1] units (the words or element pairs the
// invocations write), [2] elements after the axis, [3] indices, [4] axis
// length.

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> indices: array<i32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
@group(0) @binding(3) var<storage, read> params: array<u32>;

{{LOAD}}

fn value_at(o: u32) -> {{ELEM}} {
    let inner = params[2];
    let count = params[3];
    let dim = i32(params[4]);
    let t = o / inner;
    var i = {{READ_INDEX}};
    if (i < 0) {
        i += dim;
    }
    if (i < 0 || i >= dim) {
        return {{ZERO}};
    }
    return load_x(((t / count) * u32(dim) + u32(i)) * inner + o % inner);
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
