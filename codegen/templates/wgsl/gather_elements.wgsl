// GatherElements: output element c (coordinates of the index tensor) copies
// data at c with its coordinate on the axis replaced by indices[c].
// Negative indices count from the end of the axis; an index outside the
// axis yields zeros (the CPU executor reports it as an error). Elements
// travel as their bits in 32-bit words.
//
// params: [0] output elements, [1] units (the words or element pairs the
// invocations write), [2] data's axis length, then per axis a at 3 + 2a:
// the index tensor's dim and data's stride.

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> indices: array<i32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
@group(0) @binding(3) var<storage, read> params: array<u32>;

const RANK: u32 = {{RANK}}u;
const AXIS: u32 = {{AXIS}}u;

{{LOAD}}

fn value_at(o: u32) -> {{ELEM}} {
    let dim = i32(params[2]);
    var i = {{READ_INDEX}};
    if (i < 0) {
        i += dim;
    }
    if (i < 0 || i >= dim) {
        return {{ZERO}};
    }
    var rest = o;
    var src = 0u;
    for (var k = 0u; k < RANK; k++) {
        let a = RANK - 1u - k;
        let p = 3u + 2u * a;
        let c = rest % params[p];
        rest = rest / params[p];
        if (a == AXIS) {
            src += u32(i) * params[p + 1u];
        } else {
            src += c * params[p + 1u];
        }
    }
    return load_x(src);
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
