//! Snapshot of the matmul family: the WGSL of a packed-weight product with
//! a bias epilogue (the shape of every linear layer of a quantized language
//! model) and its MSL, with structural checks beside each.

use kiln_codegen::validate::{to_msl, to_spirv, validate};
use kiln_codegen::{DeviceCaps, Family, KernelSpec, NodeCtx, Schedule};
use kiln_ir::fused::{BinaryFn, Program};
use kiln_ir::quant::QuantFormat;
use kiln_ir::{DType, Dim, Op, Shape, ValueType};

#[test]
fn packed_matmul_with_bias_kernel() {
    let caps = DeviceCaps::webgpu();
    let format = QuantFormat::parse("w4g64a").expect("format");
    let seq = || Dim::Sym("seq".into());
    let x = ValueType::new(
        DType::F32,
        Shape(vec![Dim::Fixed(1), seq(), Dim::Fixed(576)]),
    );
    let w = ValueType::new(DType::Quant(format), Shape::fixed(&[576, 1536]));
    let bias = ValueType::new(DType::F32, Shape::fixed(&[1536]));
    let y = ValueType::new(
        DType::F32,
        Shape(vec![Dim::Fixed(1), seq(), Dim::Fixed(1536)]),
    );
    let op = Op::FusedMatMul {
        trans_a: false,
        trans_b: false,
        epilogue: Program::binary(BinaryFn::Add),
    };
    let cx = NodeCtx {
        name: "mlp.up",
        op: &op,
        inputs: vec![Some(&x), Some(&w), Some(&bias)],
        consts: vec![None; 3],
        outputs: vec![&y],
        caps: &caps,
    };
    let spec = KernelSpec::select(&cx).expect("a kernel for the node");
    assert_eq!(spec.bound_inputs(), vec![0, 1, 2]);
    let schedule = Schedule::default_for(Family::MatMul, &caps);
    let k = spec.emit(&schedule).expect("the kernel emits");
    validate(&k).expect("valid WGSL");

    // A, B (raw bytes), bias, y, params: in order, with the convention's access.
    assert_eq!((k.inputs, k.outputs, k.storage_buffers()), (3, 1, 5));
    for (b, decl) in [
        "var<storage, read> a: array<f32>;",
        "var<storage, read> b: array<u32>;",
        "var<storage, read> e0: array<f32>;",
        "var<storage, read_write> y: array<f32>;",
        "var<storage, read> params: array<u32>;",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            k.wgsl.contains(&format!("@group(0) @binding({b}) {decl}")),
            "binding {b}"
        );
    }
    assert_eq!(k.wgsl.matches("@binding(").count(), 5);
    assert!(k.wgsl.contains("@workgroup_size(16, 16, 1)"));
    // Both tiles (64×16 + 16×64 floats) share one workgroup array with the
    // decode path's partial sums.
    assert!(k.wgsl.contains("var<workgroup> tile: array<f32, 2048>;"));
    assert_eq!(k.workgroup_bytes, 8192);
    assert!(k.wgsl.contains("fn decode_rows1(") && k.wgsl.contains("fn decode_rows4("));
    insta::assert_snapshot!("matmul_packed_bias_wgsl", k.wgsl);

    let msl = to_msl(&k).expect("MSL");
    for slot in 0..5 {
        assert!(
            msl.contains(&format!("[[buffer({slot})]]")),
            "MSL slot {slot}"
        );
    }
    // The lengths of the runtime-sized arrays come right after the bindings.
    assert!(msl.contains("[[buffer(5)]]"), "sizes slot");
    assert!(msl.contains("kernel void main_"), "entry point");
    assert!(msl.contains("threadgroup"), "workgroup memory");
    insta::assert_snapshot!("matmul_packed_bias_msl", msl);
    assert_eq!(to_spirv(&k).expect("SPIR-V")[0], 0x0723_0203);
}
