// Concat along one axis. The output is viewed as rows of `block` elements
// (the concatenated axis times the elements after it); input k fills the
// columns [start_k, start_k + block_k) of every row. Elements travel as
// their bits in 32-bit words.
//
// params: [0] output elements, [1] units (the words or element pairs the
// invocations write), [2] output row length, then per input k at 3 + 2k:
// its first column and its row length.

{{BINDINGS}}

{{LOADS}}

fn value_at(o: u32) -> {{ELEM}} {
    let row = o / params[2];
    let col = o % params[2];
{{PICK}}
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
