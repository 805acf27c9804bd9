// Elementwise kernel: one output element per invocation.
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

fn element(i: u32) -> {{VALUE_TYPE}} {
{{BODY}}}

@compute @workgroup_size({{WORKGROUP}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wg = wid.x + wid.y * nwg.x;
    let i = wg * {{INVOCATIONS}}u + lid;
    if (i >= params[0]) {
        return;
    }
{{STORE}}}
