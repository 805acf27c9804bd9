//! Constant-like ops, Resize, indexing odds and ends.
mod common;
use common::*;
use kiln_ir::*;

fn resize_attrs(keep: KeepAspectRatio, axes: Vec<i64>) -> ResizeAttrs {
    ResizeAttrs {
        mode: ResizeMode::Linear,
        coordinate_transform: CoordinateTransform::HalfPixel,
        nearest_mode: NearestMode::Floor,
        cubic_coeff_a: Float(-0.75),
        exclude_outside: false,
        extrapolation_value: Float(0.0),
        axes,
        keep_aspect_ratio: keep,
        antialias: false,
    }
}

#[test]
fn constant_like() {
    let cos = Op::ConstantOfShape {
        value: Literal::float(0.0),
        dtype: DType::F16,
    };
    assert_eq!(infer(&cos, vec![k(ints(&[2, 3]))]).unwrap(), "f16[2,3]");
    assert_eq!(infer_t(&cos, &["i64[3]"]).unwrap(), "f16[?,?,?]");
    assert_eq!(infer(&cos, vec![k(ints(&[]))]).unwrap(), "f16[]");
    // Range: ceil((10 - 1) / 2) = 5; ceil((0 - 5) / -2) = 3; empty when the sign is wrong.
    let r = |s: i64, l: i64, d: i64| {
        infer(
            &Op::Range,
            vec![
                k(Tensor::scalar(s)),
                k(Tensor::scalar(l)),
                k(Tensor::scalar(d)),
            ],
        )
    };
    assert_eq!(r(1, 10, 2).unwrap(), "i64[5]");
    assert_eq!(r(0, -5, -2).unwrap(), "i64[3]");
    assert_eq!(r(0, 5, -1).unwrap(), "i64[0]");
    let rf = infer(
        &Op::Range,
        vec![
            k(Tensor::scalar(0.0f32)),
            k(Tensor::scalar(1.0f32)),
            k(Tensor::scalar(0.3f32)),
        ],
    );
    assert_eq!(rf.unwrap(), "f32[4]");
    assert_eq!(
        infer_t(&Op::Range, &["i64[]", "i64[]", "i64[]"]).unwrap(),
        "i64[?]"
    );
    assert_eq!(err(r(0, 5, 0)), "Range: delta must not be 0");
    assert_eq!(
        infer_t(&Op::EyeLike { dtype: None, k: 0 }, &["f32[3,4]"]).unwrap(),
        "f32[3,4]"
    );
    assert_eq!(
        infer_t(
            &Op::EyeLike {
                dtype: Some(DType::I32),
                k: 1
            },
            &["f32[3,4]"]
        )
        .unwrap(),
        "i32[3,4]"
    );
}

#[test]
fn indexing_odds() {
    assert_eq!(infer_t(&Op::NonZero, &["f32[N,3]"]).unwrap(), "i64[2,?]");
    let t = Tensor::from_vec(vec![2, 2], vec![0.0f32, 1.0, 2.0, 0.0]).unwrap();
    assert_eq!(infer(&Op::NonZero, vec![k(t)]).unwrap(), "i64[2,2]");
    let oh = Op::OneHot { axis: -1 };
    assert_eq!(
        infer(&oh, vec![a("i64[N,S]"), k(ints(&[10])), a("f32[2]")]).unwrap(),
        "f32[N,S,10]"
    );
    assert_eq!(
        infer(
            &Op::OneHot { axis: 0 },
            vec![a("i64[N]"), a("i64[]"), a("f32[2]")]
        )
        .unwrap(),
        "f32[?,N]"
    );
    let cond = Tensor::from_bools(vec![3], &[true, false, true]).unwrap();
    assert_eq!(
        infer(
            &Op::Compress { axis: Some(1) },
            vec![a("f32[N,3]"), k(cond)]
        )
        .unwrap(),
        "f32[N,2]"
    );
    assert_eq!(
        infer_t(&Op::Compress { axis: None }, &["f32[N,3]", "bool[3]"]).unwrap(),
        "f32[?]"
    );
    assert_eq!(
        infer_t(&Op::Trilu { upper: true }, &["f32[N,4,4]"]).unwrap(),
        "f32[N,4,4]"
    );
    let se = Op::ScatterElements {
        axis: 0,
        reduction: ScatterReduction::Add,
    };
    assert_eq!(
        infer_t(&se, &["f32[5,3]", "i64[2,3]", "f32[2,3]"]).unwrap(),
        "f32[5,3]"
    );
    let sn = Op::ScatterNd {
        reduction: ScatterReduction::None,
    };
    assert_eq!(
        infer_t(&sn, &["f32[5,3]", "i64[2,1]", "f32[2,3]"]).unwrap(),
        "f32[5,3]"
    );
    assert_eq!(
        err(infer_t(&sn, &["f32[5,3]", "i64[2,1]", "f32[2]"])),
        "ScatterNd: updates [2] do not match indices [2,1] and data [5,3]"
    );
}

#[test]
fn resize() {
    let op = Op::Resize(resize_attrs(KeepAspectRatio::Stretch, vec![]));
    // scales: floor(in · scale): floor(7 · 1.5) = 10.
    assert_eq!(
        infer(
            &op,
            vec![a("f32[N,3,7,8]"), none(), k(floats(&[1.0, 1.0, 1.5, 2.0]))]
        )
        .unwrap(),
        "f32[N,3,10,16]"
    );
    // sizes win; an empty scales placeholder is ignored.
    assert_eq!(
        infer(
            &op,
            vec![
                a("f32[N,3,7,8]"),
                none(),
                k(floats(&[])),
                k(ints(&[1, 3, 14, 16]))
            ]
        )
        .unwrap(),
        "f32[1,3,14,16]"
    );
    assert_eq!(
        infer_t(&op, &["f32[N,3,7,8]", "f32[0]", "f32[4]"]).unwrap(),
        "f32[?,?,?,?]"
    );
    // With axes, only those axes change.
    let ax = Op::Resize(resize_attrs(KeepAspectRatio::Stretch, vec![2, 3]));
    assert_eq!(
        infer(&ax, vec![a("f32[N,3,7,8]"), none(), k(floats(&[2.0, 2.0]))]).unwrap(),
        "f32[N,3,14,16]"
    );
    // not_larger: scale = min(20/10, 30/20) = 1.5 → round(10·1.5) = 15, round(20·1.5) = 30.
    let nl = Op::Resize(resize_attrs(KeepAspectRatio::NotLarger, vec![2, 3]));
    assert_eq!(
        infer(
            &nl,
            vec![a("f32[1,3,10,20]"), none(), none(), k(ints(&[20, 30]))]
        )
        .unwrap(),
        "f32[1,3,15,30]"
    );
    assert_eq!(
        err(infer_t(&op, &["f32[1,3,10,20]"])),
        "Resize: needs scales (operand 2) or sizes (operand 3)"
    );
}
