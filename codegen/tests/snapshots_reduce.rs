//! Snapshots of the reduce, norm and attention kernels: the WGSL of one
//! representative kernel per family and its MSL, each with structural
//! checks (bindings, workgroup size, workgroup memory, Metal buffer slots)
//! beside it.

use kiln_codegen::validate::{to_msl, to_spirv, validate};
use kiln_codegen::{DeviceCaps, Kernel, KernelSpec, NodeCtx, Schedule};
use kiln_ir::{DType, Dim, Float, Op, ReduceKind, Shape, ValueType};

fn vt(dtype: DType, dims: &[u64]) -> ValueType {
    ValueType::new(dtype, Shape::fixed(dims))
}

/// `[batch, seq, dims...]` with symbolic batch and sequence, as in a model.
fn sym(dtype: DType, dims: &[u64]) -> ValueType {
    let mut shape = vec![Dim::Sym("batch".into()), Dim::Sym("seq".into())];
    shape.extend(dims.iter().map(|&d| Dim::Fixed(d)));
    ValueType::new(dtype, Shape(shape))
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
    assert!(k.fits(&caps), "{} does not fit WebGPU", k.name);
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
    // Workgroup memory is threadgroup memory in Metal.
    assert!(msl.contains("threadgroup "), "threadgroup memory");
    validate(k).unwrap();
    assert_eq!(to_spirv(k).unwrap()[0], 0x0723_0203);
}

#[test]
fn reduce_mean_kernel() {
    // ReduceMean over the hidden axis, keepdims: the mean of a decomposed
    // LayerNorm.
    let x = sym(DType::F32, &[384]);
    let y = sym(DType::F32, &[1]);
    let op = Op::Reduce {
        kind: ReduceKind::Mean,
        axes: Some(vec![-1]),
        keepdims: true,
        noop_with_empty_axes: false,
    };
    let (spec, k) = kernel(&op, &[Some(&x)], &[&y]);
    assert!(matches!(spec, KernelSpec::Reduce(_)));
    // One tree slot per invocation.
    assert_eq!((k.inputs, k.outputs, k.workgroup_bytes), (1, 1, 256 * 4));
    // The kept axes form one run and the reduced axis another.
    assert!(k.wgsl.contains("return row * params[3u];"));
    assert!(k.wgsl.contains("return r * params[5u];"));
    assert!(k.wgsl.contains("acc / f32(n)"));
    // Only the prelude functions the kernel calls.
    assert!(k.wgsl.contains("fn kiln_max(") && !k.wgsl.contains("fn kiln_erf("));
    let msl = to_msl(&k).unwrap();
    check_structure(&k, &msl, "256, 1, 1");
    insta::assert_snapshot!("reduce_mean_wgsl", k.wgsl);
    insta::assert_snapshot!("reduce_mean_msl", msl);
}

#[test]
fn layer_norm_kernel() {
    // MiniLM's LayerNorm: hidden 384, scale and bias.
    let x = sym(DType::F32, &[384]);
    let w = vt(DType::F32, &[384]);
    let op = Op::LayerNorm {
        axis: -1,
        epsilon: Float(1e-12),
    };
    let (spec, k) = kernel(&op, &[Some(&x), Some(&w), Some(&w)], &[&x]);
    assert!(matches!(spec, KernelSpec::Norm(_)));
    assert_eq!((k.inputs, k.outputs, k.workgroup_bytes), (3, 1, 256 * 4));
    assert!(k.wgsl.contains("const EPSILON: f32 = 1e-12;"));
    assert!(k.wgsl.contains("const RMS: bool = false;"));
    assert!(k.wgsl.contains("v + f32(bias[param_offset(j, 1u)])"));
    let msl = to_msl(&k).unwrap();
    check_structure(&k, &msl, "256, 1, 1");
    insta::assert_snapshot!("layer_norm_wgsl", k.wgsl);
    insta::assert_snapshot!("layer_norm_msl", msl);
}

#[test]
fn attention_kernel() {
    // SmolLM2: 9 query heads over 3 KV heads of 64, causal, 3-d operands.
    let q = sym(DType::F32, &[576]);
    let kv = sym(DType::F32, &[192]);
    let op = Op::Attention {
        is_causal: true,
        q_num_heads: 9,
        kv_num_heads: 3,
        scale: None,
        softcap: Float(0.0),
        qk_matmul_output_mode: 0,
        softmax_precision: None,
    };
    let (spec, k) = kernel(&op, &[Some(&q), Some(&kv), Some(&kv)], &[&q]);
    let KernelSpec::Attention(a) = &spec else {
        panic!("not an attention kernel: {spec:?}");
    };
    // The head size comes from the shapes: 64, so one channel per invocation.
    assert_eq!(a.max_head, 64);
    assert!(k.wgsl.contains("const PER: u32 = 1u;"));
    // The query row, one probability and one reduction slot per invocation.
    assert_eq!(
        (k.inputs, k.outputs, k.workgroup_bytes),
        (3, 1, (64 + 2 * 256) * 4)
    );
    assert!(k.wgsl.contains("const CAUSAL: bool = true;"));
    // No mask: the accessor is the identity and no mask binding exists.
    assert!(!k.wgsl.contains("var<storage, read> mask"));
    let msl = to_msl(&k).unwrap();
    check_structure(&k, &msl, "256, 1, 1");
    insta::assert_snapshot!("attention_gqa_causal_wgsl", k.wgsl);
    insta::assert_snapshot!("attention_gqa_causal_msl", msl);
}
