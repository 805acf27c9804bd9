// Elementwise kernel with a boolean result: one output word (four bools, one
// byte each) per invocation, so no two invocations write the same word.
//
// `element(i)` computes output element i from the operands: an operand with
// the output's shape is read at i, a one-element operand at 0, and a
// broadcast operand through the output coordinates and its own strides
// (0 along broadcast axes). params: [0] the element count, then, when an
// operand is broadcast, the output dims and each broadcast operand's
// strides (rank words each).
{{ENABLE}}
{{FUNCTIONS}}
{{BINDINGS}}
@group(0) @binding({{PARAMS_BINDING}}) var<storage, read> params: array<u32>;

fn element(i: u32) -> bool {
{{BODY}}}

@compute @workgroup_size({{WORKGROUP}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wg = wid.x + wid.y * nwg.x;
    let w = wg * {{INVOCATIONS}}u + lid;
    let n = params[0];
    if (w >= (n + 3u) / 4u) {
        return;
    }
    var word = 0u;
    for (var j = 0u; j < 4u; j = j + 1u) {
        let i = w * 4u + j;
        if (i < n && element(i)) {
            word = word | (1u << (8u * j));
        }
    }
    y[w] = word;
}
