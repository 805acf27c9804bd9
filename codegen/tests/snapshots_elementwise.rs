//! Snapshot of one representative elementwise kernel: a broadcast `Add`
//! with a bias row on WebGPU limits, as WGSL and as the MSL naga makes of
//! it, with structural checks beside each.

use kiln_codegen::validate::{to_msl, to_spirv, validate};
use kiln_codegen::{DeviceCaps, Family, KernelSpec, NodeCtx, Schedule};
use kiln_ir::{DType, Dim, Op, Shape, ValueType};

#[test]
fn broadcast_add_kernel() {
    let caps = DeviceCaps::webgpu();
    // x[batch, seq, 64] + bias[64]: the result keeps the symbolic dims.
    let x = ValueType::new(
        DType::F32,
        Shape(vec![
            Dim::Sym("batch".into()),
            Dim::Sym("seq".into()),
            Dim::Fixed(64),
        ]),
    );
    let bias = ValueType::new(DType::F32, Shape::fixed(&[64]));
    let cx = NodeCtx {
        name: "add",
        op: &Op::Add,
        inputs: vec![Some(&x), Some(&bias)],
        consts: vec![None, None],
        outputs: vec![&x],
        caps: &caps,
    };
    let spec = KernelSpec::select(&cx).expect("Add has an elementwise kernel");
    assert_eq!(spec.bound_inputs(), vec![0, 1]);
    let schedule = Schedule::default_for(Family::Elementwise, &caps);
    let kernel = spec.emit(&schedule).expect("emit");
    validate(&kernel).expect("valid WGSL");
    to_spirv(&kernel).expect("SPIR-V");

    // WGSL: x and bias read-only, y read-write, params last; the operand
    // with the result's shape is read at i, the bias through strides.
    assert_eq!(
        (kernel.inputs, kernel.outputs, kernel.storage_buffers()),
        (2, 1, 4)
    );
    let wgsl = &kernel.wgsl;
    assert!(wgsl.contains("@group(0) @binding(0) var<storage, read> x0: array<f32>;"));
    assert!(wgsl.contains("@group(0) @binding(2) var<storage, read_write> y: array<f32>;"));
    assert!(wgsl.contains("@group(0) @binding(3) var<storage, read> params: array<u32>;"));
    assert!(wgsl.contains("@workgroup_size(256, 1, 1)"));
    assert!(wgsl.contains("let a0 = x0[i];"));
    assert!(wgsl.contains("let o1 = c0 * params[4u] + c1 * params[5u] + c2 * params[6u];"));
    insta::assert_snapshot!("elementwise_broadcast_add_wgsl", wgsl);

    // MSL: real buffer slots 0..=3 for the bindings, the sizes table at 4,
    // outputs writable and inputs const.
    let msl = to_msl(&kernel).expect("MSL");
    for slot in 0..=4 {
        assert!(msl.contains(&format!("[[buffer({slot})]]")), "slot {slot}");
    }
    assert!(!msl.contains("[[buffer(5)]]"));
    assert!(msl.contains("const& x0_ [[buffer(0)]]"), "{msl}");
    assert!(msl.contains("const& params [[buffer(3)]]"), "{msl}");
    assert!(msl.contains("device type_1& y [[buffer(2)]]"), "{msl}");
    assert!(msl.contains("[[max_total_threads_per_threadgroup(256)]] kernel void main_("));
    insta::assert_snapshot!("elementwise_broadcast_add_msl", msl);

    // Launch for batch 2, seq 3: n, dims, then the bias's strides.
    let launch = spec
        .launch(&[Some(&[2, 3, 64]), Some(&[64])], &[&[2, 3, 64]], &schedule)
        .expect("launch");
    assert_eq!(launch.params, vec![384, 2, 3, 64, 0, 0, 1]);
    assert_eq!(launch.workgroups, [2, 1, 1]);
}
