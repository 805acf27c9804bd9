// Split along one axis into several outputs in one launch. The input is
// viewed as rows of `row` elements (the split axis times the elements
// after it); output k takes the columns [start_k, start_k + block_k) of
// every row. The invocations cover the outputs' units one after another.
// Elements travel as their bits in 32-bit words.
//
// params: [0] input row length, [1] units of all outputs, then per output k
// at 2 + 4k: its first unit, its elements, its row length and its first
// column.

{{BINDINGS}}

{{LOAD}}

// Element `o` of the output whose rows are `block` long from column `start`.
fn value_at(block: u32, start: u32, o: u32) -> {{ELEM}} {
    return load_x((o / block) * params[0] + start + o % block);
}

@compute @workgroup_size({{WORKGROUP}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = (wid.x + wid.y * nwg.x) * {{INVOCATIONS}}u + lid;
    if (g >= params[1]) {
        return;
    }
{{PICK}}
}
