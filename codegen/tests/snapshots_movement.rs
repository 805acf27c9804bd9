//! Snapshots of the gather, conv and movement kernels: the WGSL of one
//! representative kernel per family and its MSL, each with structural
//! checks (bindings, workgroup size, Metal buffer slots) beside it.

use kiln_codegen::validate::{to_msl, to_spirv, validate};
use kiln_codegen::{DeviceCaps, Kernel, KernelSpec, NodeCtx, Schedule};
use kiln_ir::{AutoPad, DType, Op, Shape, ValueType, Window};

fn vt(dtype: DType, dims: &[u64]) -> ValueType {
    ValueType::new(dtype, Shape::fixed(dims))
}

/// The kernel the plan would generate for a node on WebGPU.
fn kernel(op: &Op, inputs: &[Option<&ValueType>], outputs: &[&ValueType]) -> (KernelSpec, Kernel) {
    let caps = DeviceCaps::webgpu();
    let cx = NodeCtx {
        name: "node",
        op,
        inputs: inputs.to_vec(),
        consts: vec![None; inputs.len()],
        outputs: outputs.to_vec(),
        caps: &caps,
    };
    let spec = KernelSpec::select(&cx).expect("a kernel for the node");
    let schedule = Schedule::default_for(spec.family(), &caps);
    let k = spec.emit(&schedule).expect("the kernel emits");
    (spec, k)
}

/// Checks every binding of `k` is declared once, in order, with the access
/// the calling convention gives it, and that the MSL keeps the slots.
fn check_structure(k: &Kernel, msl: &str, workgroup: &str) {
    let n = k.storage_buffers();
    for b in 0..n {
        let decl = format!("@group(0) @binding({b}) var<storage, ");
        assert_eq!(k.wgsl.matches(&decl).count(), 1, "binding {b}:\n{}", k.wgsl);
        let access = if b < k.inputs || b == n - 1 {
            "read>"
        } else {
            "read_write>"
        };
        assert!(
            k.wgsl.contains(&format!("{decl}{access}")),
            "binding {b} access"
        );
        assert!(msl.contains(&format!("[[buffer({b})]]")), "MSL slot {b}");
    }
    assert_eq!(k.wgsl.matches("@binding(").count() as u32, n);
    assert!(k.wgsl.contains(&format!("@workgroup_size({workgroup})")));
    // Runtime-sized arrays take their lengths from the slot after the last binding.
    assert!(msl.contains(&format!("[[buffer({n})]]")), "sizes slot");
    assert!(msl.contains("kernel void main_"), "entry point");
    validate(k).unwrap();
    assert_eq!(to_spirv(k).unwrap()[0], 0x0723_0203);
}

#[test]
fn gather_embedding_kernel() {
    let table = vt(DType::F32, &[49152, 576]);
    let ids = vt(DType::I64, &[1, 7]);
    let out = vt(DType::F32, &[1, 7, 576]);
    let (spec, k) = kernel(
        &Op::Gather { axis: 0 },
        &[Some(&table), Some(&ids)],
        &[&out],
    );
    assert!(matches!(spec, KernelSpec::Gather(_)));
    assert_eq!((k.inputs, k.outputs, k.workgroup_bytes), (2, 1, 0));
    // i64 ids are read as the low word of each pair.
    assert!(k.wgsl.contains("indices[2u * (t % count)]"));
    let msl = to_msl(&k).unwrap();
    check_structure(&k, &msl, "256, 1, 1");
    insta::assert_snapshot!("gather_embedding_wgsl", k.wgsl);
    insta::assert_snapshot!("gather_embedding_msl", msl);
}

#[test]
fn conv_patch_embedding_kernel() {
    let x = vt(DType::F32, &[1, 3, 224, 224]);
    let w = vt(DType::F32, &[768, 3, 14, 14]);
    let b = vt(DType::F32, &[768]);
    let y = vt(DType::F32, &[1, 768, 16, 16]);
    let op = Op::Conv {
        window: Window {
            kernel_shape: vec![14, 14],
            strides: vec![14, 14],
            pads: vec![0, 0, 0, 0],
            dilations: vec![1, 1],
            auto_pad: AutoPad::NotSet,
        },
        group: 1,
    };
    let (spec, k) = kernel(&op, &[Some(&x), Some(&w), Some(&b)], &[&y]);
    assert!(matches!(spec, KernelSpec::Conv(_)));
    assert_eq!((k.inputs, k.outputs), (3, 1));
    // Strides are baked in; four output channels per invocation by default.
    assert!(k.wgsl.contains("const STRIDE_H: u32 = 14u;"));
    assert!(k.wgsl.contains("const LANES: u32 = 4u;"));
    let msl = to_msl(&k).unwrap();
    check_structure(&k, &msl, "16, 16, 1");
    insta::assert_snapshot!("conv_patch_wgsl", k.wgsl);
    insta::assert_snapshot!("conv_patch_msl", msl);
}

#[test]
fn movement_transpose_kernel() {
    let x = vt(DType::F32, &[1, 7, 9, 64]);
    let y = vt(DType::F32, &[1, 9, 7, 64]);
    let op = Op::Transpose {
        perm: Some(vec![0, 2, 1, 3]),
    };
    let (spec, k) = kernel(&op, &[Some(&x)], &[&y]);
    assert!(matches!(spec, KernelSpec::Movement(_)));
    assert_eq!((k.inputs, k.outputs), (1, 1));
    // The rank is baked in, the permutation is not: it arrives as strides.
    assert!(k.wgsl.contains("const RANK: u32 = 4u;"));
    let msl = to_msl(&k).unwrap();
    check_structure(&k, &msl, "256, 1, 1");
    insta::assert_snapshot!("movement_transpose_wgsl", k.wgsl);
    insta::assert_snapshot!("movement_transpose_msl", msl);
}

#[test]
fn movement_rotary_kernel() {
    let x = vt(DType::F32, &[1, 7, 576]);
    let cache = vt(DType::F32, &[8192, 32]);
    let ids = vt(DType::I64, &[1, 7]);
    let op = Op::RotaryEmbedding {
        interleaved: false,
        num_heads: 9,
        rotary_embedding_dim: 0,
    };
    let (spec, k) = kernel(
        &op,
        &[Some(&x), Some(&cache), Some(&cache), Some(&ids)],
        &[&x],
    );
    assert_eq!(spec.bound_inputs(), vec![0, 1, 2, 3]);
    assert_eq!((k.inputs, k.outputs), (4, 1));
    assert!(
        k.wgsl.contains("let si = (r / heads) % seq;"),
        "3-d X walks [batch, seq, heads]"
    );
    let msl = to_msl(&k).unwrap();
    check_structure(&k, &msl, "256, 1, 1");
    insta::assert_snapshot!("movement_rotary_wgsl", k.wgsl);
    insta::assert_snapshot!("movement_rotary_msl", msl);
}

#[test]
fn split_kernel_binds_every_output() {
    let x = vt(DType::F16, &[2, 10]);
    let outs = [
        vt(DType::F16, &[2, 3]),
        vt(DType::F16, &[2, 3]),
        vt(DType::F16, &[2, 4]),
    ];
    let op = Op::Split {
        axis: 1,
        split: Some(vec![3, 3, 4]),
    };
    let (_, k) = kernel(&op, &[Some(&x)], &[&outs[0], &outs[1], &outs[2]]);
    assert_eq!((k.inputs, k.outputs), (1, 3));
    // f16 moves as bits: no shader-f16 needed.
    assert!(!k.uses_f16);
    let msl = to_msl(&k).unwrap();
    check_structure(&k, &msl, "256, 1, 1");
}
