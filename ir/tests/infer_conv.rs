//! Convolution and pooling output sizes.
//!
//! Expected sizes are computed by hand from the ONNX formulas (noted at each
//! case, `ek = (k-1)·d + 1`) and were cross-checked against the shapes the
//! onnx reference evaluator produces for the same attributes.
mod common;
use common::*;
use kiln_ir::{AutoPad, Op, PoolKind, Window};

fn win(
    kernel: &[u64],
    strides: &[u64],
    pads: &[u64],
    dilations: &[u64],
    auto_pad: AutoPad,
) -> Window {
    Window {
        kernel_shape: kernel.to_vec(),
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: dilations.to_vec(),
        auto_pad,
    }
}

fn conv(w: Window, group: u64) -> Op {
    Op::Conv { window: w, group }
}

fn pool(kind: PoolKind, w: Window, ceil_mode: bool) -> Op {
    Op::Pool {
        kind,
        window: w,
        ceil_mode,
        count_include_pad: false,
    }
}

#[test]
fn conv_explicit_pads_kernel_from_weight() {
    // ResNet stem: floor((224 + 3 + 3 - 7) / 2) + 1 = floor(223/2) + 1 = 112.
    let op = conv(win(&[], &[2, 2], &[3, 3, 3, 3], &[], AutoPad::NotSet), 1);
    assert_eq!(
        infer_t(&op, &["f32[N,3,224,224]", "f32[64,3,7,7]"]).unwrap(),
        "f32[N,64,112,112]"
    );
    // With bias.
    assert_eq!(
        infer_t(&op, &["f32[N,3,224,224]", "f32[64,3,7,7]", "f32[64]"]).unwrap(),
        "f32[N,64,112,112]"
    );
    // Dilation 2, k 3: ek = 5; floor((10 - 5) / 1) + 1 = 6.
    let op = conv(win(&[3, 3], &[], &[], &[2, 2], AutoPad::NotSet), 1);
    assert_eq!(
        infer_t(&op, &["f32[1,1,10,10]", "f32[1,1,3,3]"]).unwrap(),
        "f32[1,1,6,6]"
    );
    // 1-d conv, asymmetric pads: floor((10 + 1 + 2 - 3) / 3) + 1 = 4.
    let op = conv(win(&[], &[3], &[1, 2], &[], AutoPad::NotSet), 1);
    assert_eq!(
        infer_t(&op, &["f32[2,4,10]", "f32[8,4,3]"]).unwrap(),
        "f32[2,8,4]"
    );
}

#[test]
fn conv_auto_pad() {
    // SAME_UPPER / SAME_LOWER: ceil(5 / 2) = 3.
    for ap in [AutoPad::SameUpper, AutoPad::SameLower] {
        let op = conv(win(&[], &[2, 2], &[], &[], ap), 1);
        assert_eq!(
            infer_t(&op, &["f32[1,1,5,5]", "f32[1,1,3,3]"]).unwrap(),
            "f32[1,1,3,3]"
        );
    }
    // VALID: floor((5 - 3) / 2) + 1 = 2 (pads are ignored).
    let op = conv(win(&[], &[2, 2], &[9, 9, 9, 9], &[], AutoPad::Valid), 1);
    assert_eq!(
        infer_t(&op, &["f32[1,1,5,5]", "f32[1,1,3,3]"]).unwrap(),
        "f32[1,1,2,2]"
    );
}

#[test]
fn conv_symbolic_spatial() {
    // Stride 1 with pads summing to ek - 1 keeps the symbol; stride 2 does not.
    let same = conv(win(&[3, 3], &[], &[1, 1, 1, 1], &[], AutoPad::NotSet), 1);
    assert_eq!(
        infer_t(&same, &["f32[N,3,H,W]", "f32[8,3,3,3]"]).unwrap(),
        "f32[N,8,H,W]"
    );
    let s2 = conv(
        win(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[], AutoPad::NotSet),
        1,
    );
    assert_eq!(
        infer_t(&s2, &["f32[N,3,H,W]", "f32[8,3,3,3]"]).unwrap(),
        "f32[N,8,?,?]"
    );
    let su = conv(win(&[], &[1, 1], &[], &[], AutoPad::SameUpper), 1);
    assert_eq!(
        infer_t(&su, &["f32[N,3,H,W]", "f32[8,3,5,5]"]).unwrap(),
        "f32[N,8,H,W]"
    );
}

#[test]
fn conv_groups_and_errors() {
    // Depthwise: 32 channels, W [32, 1, 3, 3], group 32.
    let dw = conv(win(&[], &[], &[1, 1, 1, 1], &[], AutoPad::NotSet), 32);
    assert_eq!(
        infer_t(&dw, &["f32[1,32,8,8]", "f32[32,1,3,3]"]).unwrap(),
        "f32[1,32,8,8]"
    );
    let op = conv(win(&[], &[], &[], &[], AutoPad::NotSet), 1);
    assert_eq!(
        err(infer_t(&op, &["f32[1,3,8,8]", "f32[8,4,3,3]"])),
        "Conv: input has 3 channels but weight [8,4,3,3] with group 1 expects 4"
    );
    assert_eq!(
        err(infer_t(&op, &["f32[1,3,2,2]", "f32[8,3,3,3]"])),
        "Conv: window of extent 3 does not fit an input of size 2 with pads 0+0"
    );
    assert_eq!(
        err(infer_t(&op, &["f32[1,3,8,8]"])),
        "Conv: expects 2 or 3 operands, got 1"
    );
    assert_eq!(
        err(infer_t(&op, &["f32[1,3,8,8]", "f32[8,3,3,3]", "f32[4]"])),
        "Conv: bias must have shape [8], got [4]"
    );
    let bad = conv(win(&[5, 5], &[], &[], &[], AutoPad::NotSet), 1);
    assert_eq!(
        err(infer_t(&bad, &["f32[1,3,8,8]", "f32[8,3,3,3]"])),
        "Conv: kernel_shape [5, 5] disagrees with weight shape [8,3,3,3] at spatial axis 0"
    );
}

#[test]
fn conv_transpose() {
    let ct = |w: Window, output_padding: &[u64], output_shape: &[u64], group| Op::ConvTranspose {
        window: w,
        group,
        output_padding: output_padding.to_vec(),
        output_shape: output_shape.to_vec(),
    };
    // 2·(14 - 1) + 0 + 4 - 1 - 1 = 28; channels W[1]·group = 8.
    let op = ct(
        win(&[], &[2, 2], &[1, 1, 1, 1], &[], AutoPad::NotSet),
        &[],
        &[],
        1,
    );
    assert_eq!(
        infer_t(&op, &["f32[N,16,14,14]", "f32[16,8,4,4]"]).unwrap(),
        "f32[N,8,28,28]"
    );
    // output_padding: 2·13 + 1 + 3 - 2 = 28.
    let op = ct(
        win(&[], &[2, 2], &[1, 1, 1, 1], &[], AutoPad::NotSet),
        &[1, 1],
        &[],
        1,
    );
    assert_eq!(
        infer_t(&op, &["f32[N,16,14,14]", "f32[16,8,3,3]"]).unwrap(),
        "f32[N,8,28,28]"
    );
    // SAME_UPPER: in · stride = 28.
    let op = ct(win(&[], &[2, 2], &[], &[], AutoPad::SameUpper), &[], &[], 1);
    assert_eq!(
        infer_t(&op, &["f32[N,16,14,14]", "f32[16,8,3,3]"]).unwrap(),
        "f32[N,8,28,28]"
    );
    // Explicit output_shape; group 2 doubles W[1].
    let op = ct(
        win(&[], &[2, 2], &[], &[], AutoPad::NotSet),
        &[],
        &[30, 31],
        2,
    );
    assert_eq!(
        infer_t(&op, &["f32[1,16,14,14]", "f32[16,4,3,3]"]).unwrap(),
        "f32[1,8,30,31]"
    );
}

#[test]
fn pools() {
    // floor((112 + 1 + 1 - 3) / 2) + 1 = 56.
    let mp = pool(
        PoolKind::Max,
        win(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[], AutoPad::NotSet),
        false,
    );
    assert_eq!(
        infer_t(&mp, &["f32[N,64,112,112]"]).unwrap(),
        "f32[N,64,56,56]"
    );
    assert_eq!(
        infer_n(&mp, vec![a("f32[N,64,112,112]")], 2).unwrap(),
        "f32[N,64,56,56] ; i64[N,64,56,56]"
    );
    // ceil_mode: in 6, k 3, s 2: floor((6 - 3)/2) + 1 = 2, ceil(3/2) + 1 = 3.
    let floor = pool(
        PoolKind::Max,
        win(&[3, 3], &[2, 2], &[], &[], AutoPad::NotSet),
        false,
    );
    let ceil = pool(
        PoolKind::Max,
        win(&[3, 3], &[2, 2], &[], &[], AutoPad::NotSet),
        true,
    );
    assert_eq!(infer_t(&floor, &["f32[1,1,6,6]"]).unwrap(), "f32[1,1,2,2]");
    assert_eq!(infer_t(&ceil, &["f32[1,1,6,6]"]).unwrap(), "f32[1,1,3,3]");
    // ceil_mode dropping a window that starts in the end padding: in 4, k 2,
    // s 2, end pad 1: ceil((4 + 1 - 2)/2) + 1 = 3, but window 3 starts at
    // (3-1)·2 = 4 ≥ 4 + 0, so 2.
    let drop = pool(
        PoolKind::Max,
        win(&[2, 2], &[2, 2], &[0, 0, 1, 1], &[], AutoPad::NotSet),
        true,
    );
    assert_eq!(infer_t(&drop, &["f32[1,1,4,4]"]).unwrap(), "f32[1,1,2,2]");
    // SAME_LOWER: ceil(7 / 2) = 4.
    let ap = pool(
        PoolKind::Average,
        win(&[3, 3], &[2, 2], &[], &[], AutoPad::SameLower),
        false,
    );
    assert_eq!(infer_t(&ap, &["f32[1,1,7,7]"]).unwrap(), "f32[1,1,4,4]");
    // VALID with ceil_mode: ceil((7 - 3 + 1) / 2) = 3 = floor((7-3)/2) + 1.
    let valid = pool(
        PoolKind::Average,
        win(&[3, 3], &[2, 2], &[], &[], AutoPad::Valid),
        true,
    );
    assert_eq!(infer_t(&valid, &["f32[1,1,7,7]"]).unwrap(), "f32[1,1,3,3]");
    assert_eq!(
        err(infer_n(&ap, vec![a("f32[1,1,7,7]")], 2)),
        "Pool: produces 1 result, the node has 2"
    );
    let nok = pool(
        PoolKind::Max,
        win(&[], &[], &[], &[], AutoPad::NotSet),
        false,
    );
    assert_eq!(
        err(infer_t(&nok, &["f32[1,1,7,7]"])),
        "Pool: kernel_shape [] must have one size per spatial axis (2) of input [1,1,7,7]"
    );
    assert_eq!(
        infer_t(
            &Op::GlobalPool {
                kind: PoolKind::Average
            },
            &["f32[N,C,H,W]"]
        )
        .unwrap(),
        "f32[N,C,1,1]"
    );
}
