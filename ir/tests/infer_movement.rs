//! Reshape, Transpose, Squeeze/Unsqueeze, Slice, Split, Concat, Gather and friends.
mod common;
use common::*;
use kiln_ir::{Op, PadMode};

const RESHAPE: Op = Op::Reshape { allowzero: false };

fn reshape(input: &str, target: &[i64]) -> Result<String, String> {
    infer(&RESHAPE, vec![a(input), k(ints(target))])
}

#[test]
fn reshape_fixed() {
    assert_eq!(reshape("f32[2,3,4]", &[4, -1]).unwrap(), "f32[4,6]");
    assert_eq!(reshape("f32[2,3,4]", &[0, 12]).unwrap(), "f32[2,12]");
    assert_eq!(reshape("f32[2,3,4]", &[-1]).unwrap(), "f32[24]");
    assert_eq!(
        err(reshape("f32[2,3,4]", &[5, -1])),
        "Reshape: cannot reshape [2,3,4] to [5, -1]: element counts differ"
    );
    assert_eq!(
        err(reshape("f32[2,3]", &[7])),
        "Reshape: cannot reshape [2,3] to [7]: element counts differ"
    );
    assert_eq!(
        err(reshape("f32[2,3]", &[-1, -1])),
        "Reshape: shape [-1, -1] has more than one -1"
    );
    assert_eq!(
        err(reshape("f32[6]", &[6, 0])),
        "Reshape: shape [6, 0] copies dimension 1 (a 0) that input [6] does not have"
    );
}

#[test]
fn reshape_symbolic_batch() {
    // 0 copies the symbolic batch.
    assert_eq!(reshape("f32[N,3,4]", &[0, 12]).unwrap(), "f32[N,12]");
    assert_eq!(
        reshape("f32[N,S,768]", &[0, 0, 12, 64]).unwrap(),
        "f32[N,S,12,64]"
    );
    // -1 after copying: N and S cancel, 12·64 / nothing = 768.
    assert_eq!(
        reshape("f32[N,S,12,64]", &[0, 0, -1]).unwrap(),
        "f32[N,S,768]"
    );
    // -1 resolves to the one remaining symbol when the fixed factors match (12 = 3·4).
    assert_eq!(reshape("f32[N,12]", &[-1, 3, 4]).unwrap(), "f32[N,3,4]");
    // Two symbols fold into -1: unknown.
    assert_eq!(reshape("f32[N,S,768]", &[-1, 768]).unwrap(), "f32[?,768]");
    // Without -1 a symbolic count cannot be checked: accepted.
    assert_eq!(reshape("f32[N,4]", &[2, 2, 2]).unwrap(), "f32[2,2,2]");
}

#[test]
fn reshape_non_constant_and_allowzero() {
    // The shape operand's static length gives the rank.
    assert_eq!(
        infer_t(&RESHAPE, &["f32[N,3]", "i64[3]"]).unwrap(),
        "f32[?,?,?]"
    );
    assert_eq!(
        err(infer_t(&RESHAPE, &["f32[N,3]", "i64[K]"])),
        "Reshape: operand 1 has a length unknown at compile time ([K]), so the result rank is unknown"
    );
    let az = Op::Reshape { allowzero: true };
    assert_eq!(
        infer(&az, vec![a("f32[0,3]"), k(ints(&[3, 0]))]).unwrap(),
        "f32[3,0]"
    );
    assert_eq!(
        err(infer(&az, vec![a("f32[0,3]"), k(ints(&[0, -1]))])),
        "Reshape: shape [0, -1] has both -1 and 0 with allowzero"
    );
}

#[test]
fn transpose() {
    // No perm reverses the axes.
    assert_eq!(
        infer_t(&Op::Transpose { perm: None }, &["f32[N,3,4]"]).unwrap(),
        "f32[4,3,N]"
    );
    assert_eq!(
        infer_t(
            &Op::Transpose {
                perm: Some(vec![0, 2, 1])
            },
            &["f32[N,3,4]"]
        )
        .unwrap(),
        "f32[N,4,3]"
    );
    assert_eq!(
        err(infer_t(
            &Op::Transpose {
                perm: Some(vec![0, 0, 1])
            },
            &["f32[N,3,4]"]
        )),
        "Transpose: perm [0, 0, 1] is not a permutation of 0..3"
    );
}

#[test]
fn squeeze_unsqueeze() {
    let sq = |axes: Option<Vec<i64>>| Op::Squeeze { axes };
    assert_eq!(
        infer_t(&sq(Some(vec![1])), &["f32[N,1,3]"]).unwrap(),
        "f32[N,3]"
    );
    assert_eq!(
        infer_t(&sq(Some(vec![-1])), &["f32[N,3,1]"]).unwrap(),
        "f32[N,3]"
    );
    // No axes: every fixed 1 goes, symbols are kept.
    assert_eq!(infer_t(&sq(None), &["f32[1,N,1,3]"]).unwrap(), "f32[N,3]");
    // Axes from a constant operand.
    assert_eq!(
        infer(&sq(None), vec![a("f32[1,N,1]"), k(ints(&[0, 2]))]).unwrap(),
        "f32[N]"
    );
    // Non-constant axes: the count is known, which axes is not.
    assert_eq!(
        infer_t(&sq(None), &["f32[1,N,1]", "i64[2]"]).unwrap(),
        "f32[?]"
    );
    assert_eq!(
        err(infer_t(&sq(Some(vec![1])), &["f32[N,3]"])),
        "Squeeze: cannot squeeze axis 1 of size 3 in [N,3]"
    );
    let un = |axes: Option<Vec<i64>>| Op::Unsqueeze { axes };
    assert_eq!(
        infer_t(&un(Some(vec![0, 3])), &["f32[N,3]"]).unwrap(),
        "f32[1,N,3,1]"
    );
    // Negative axes count from the end of the result.
    assert_eq!(
        infer_t(&un(Some(vec![-1])), &["f32[N,3]"]).unwrap(),
        "f32[N,3,1]"
    );
    assert_eq!(
        infer(&un(None), vec![a("f32[N,3]"), k(ints(&[1]))]).unwrap(),
        "f32[N,1,3]"
    );
    assert_eq!(
        infer_t(&un(None), &["f32[N,3]", "i64[2]"]).unwrap(),
        "f32[?,?,?,?]"
    );
    assert_eq!(
        err(infer_t(&un(None), &["f32[N,3]"])),
        "Unsqueeze: needs axes, from the attribute or operand 1"
    );
    assert_eq!(
        err(infer_t(&un(Some(vec![3])), &["f32[N,3]"])),
        "Unsqueeze: axis 3 is out of range for rank 3 (valid: -3 to 2)"
    );
}

fn slice(
    data: &str,
    starts: &[i64],
    ends: &[i64],
    axes: &[i64],
    steps: &[i64],
) -> Result<String, String> {
    infer(
        &Op::Slice,
        vec![
            a(data),
            k(ints(starts)),
            k(ints(ends)),
            k(ints(axes)),
            k(ints(steps)),
        ],
    )
}

#[test]
fn slice_indices() {
    // [1:-1] of 10 → 8.
    assert_eq!(
        slice("f32[10,20]", &[1], &[-1], &[0], &[1]).unwrap(),
        "f32[8,20]"
    );
    // Out of range starts/ends clamp: [100:200] of 10 → 0; [-100:3] → 3.
    assert_eq!(
        slice("f32[10,20]", &[100], &[200], &[0], &[1]).unwrap(),
        "f32[0,20]"
    );
    assert_eq!(
        slice("f32[10,20]", &[-100], &[3], &[0], &[1]).unwrap(),
        "f32[3,20]"
    );
    // Step 3 over all of 10: indices 0,3,6,9 → 4.
    assert_eq!(
        slice("f32[10,20]", &[0], &[i64::MAX], &[0], &[3]).unwrap(),
        "f32[4,20]"
    );
    // Reverse the whole axis: start -1 (= 19), end far below (clamped to -1) → 20.
    assert_eq!(
        slice("f32[10,20]", &[-1], &[i64::MIN], &[1], &[-1]).unwrap(),
        "f32[10,20]"
    );
    // 8 down to (excluding) 1 by -2: 8,6,4,2 → 4.
    assert_eq!(
        slice("f32[10,20]", &[8], &[1], &[0], &[-2]).unwrap(),
        "f32[4,20]"
    );
    // Negative axis, two axes at once: axis 1 [2:4] → 2; axis 0 [5:15] clamps to [5:10] → 5.
    assert_eq!(
        slice("f32[10,20]", &[2, 5], &[4, 15], &[-1, 0], &[1, 1]).unwrap(),
        "f32[5,2]"
    );
    assert_eq!(
        err(slice("f32[10,20]", &[0], &[1], &[0], &[0])),
        "Slice: steps must not be 0"
    );
}

#[test]
fn slice_symbolic_and_unknown() {
    // [0:INT_MAX] keeps a symbol; anything else on a symbol is unknown.
    assert_eq!(
        slice("f32[N,20]", &[0], &[i32::MAX as i64], &[0], &[1]).unwrap(),
        "f32[N,20]"
    );
    assert_eq!(
        slice("f32[N,20]", &[1], &[i64::MAX], &[0], &[1]).unwrap(),
        "f32[?,20]"
    );
    // Default axes and steps.
    assert_eq!(
        infer(
            &Op::Slice,
            vec![a("f32[10,20]"), k(ints(&[2])), k(ints(&[5]))]
        )
        .unwrap(),
        "f32[3,20]"
    );
    // Non-constant ends: the sliced axes are unknown.
    assert_eq!(
        infer(
            &Op::Slice,
            vec![a("f32[10,20]"), k(ints(&[2])), a("i64[1]"), k(ints(&[1]))]
        )
        .unwrap(),
        "f32[10,?]"
    );
    // Non-constant axes: every axis may change.
    assert_eq!(
        infer(
            &Op::Slice,
            vec![a("f32[10,20]"), k(ints(&[2])), k(ints(&[5])), a("i64[1]")]
        )
        .unwrap(),
        "f32[?,?]"
    );
}

#[test]
fn concat() {
    let c = |axis| Op::Concat { axis };
    assert_eq!(
        infer_t(&c(1), &["f32[N,3]", "f32[N,5]"]).unwrap(),
        "f32[N,8]"
    );
    assert_eq!(
        infer_t(&c(-1), &["f32[N,3]", "f32[?,5]", "f32[N,0]"]).unwrap(),
        "f32[N,8]"
    );
    // A symbol along the axis: unknown.
    assert_eq!(
        infer_t(&c(0), &["f32[N,3]", "f32[2,3]"]).unwrap(),
        "f32[?,3]"
    );
    assert_eq!(infer_t(&c(0), &["f32[N,3]"]).unwrap(), "f32[N,3]");
    assert_eq!(
        err(infer_t(&c(1), &["f32[2,3]", "f32[4,3]"])),
        "Concat: operand 1 has shape [4,3] which does not match [2,3] outside axis 1"
    );
    assert_eq!(
        err(infer_t(&c(0), &["f32[2,3]", "f16[4,3]"])),
        "Concat: operands 0 and 1 must have the same dtype, got f32 and f16"
    );
}

#[test]
fn split() {
    let attr = Op::Split {
        axis: 1,
        split: Some(vec![2, 3]),
    };
    assert_eq!(
        infer_t(&attr, &["f32[N,5]"]).unwrap(),
        "f32[N,2] ; f32[N,3]"
    );
    let plain = Op::Split {
        axis: -1,
        split: None,
    };
    assert_eq!(
        infer(&plain, vec![a("f32[N,5]"), k(ints(&[1, 4]))]).unwrap(),
        "f32[N,1] ; f32[N,4]"
    );
    // num_outputs = 3 over 10: ceil(10/3) = 4, 4, and the remainder 2 (ONNX's rule).
    assert_eq!(
        infer_n(&plain, vec![a("f32[N,10]")], 3).unwrap(),
        "f32[N,4] ; f32[N,4] ; f32[N,2]"
    );
    assert_eq!(
        infer_n(&plain, vec![a("f32[N,8]")], 2).unwrap(),
        "f32[N,4] ; f32[N,4]"
    );
    assert_eq!(
        infer_n(&plain, vec![a("f32[2,S]")], 2).unwrap(),
        "f32[2,?] ; f32[2,?]"
    );
    // Non-constant sizes: their count gives the outputs.
    assert_eq!(
        infer_t(&plain, &["f32[4,6]", "i64[2]"]).unwrap(),
        "f32[4,?] ; f32[4,?]"
    );
    assert_eq!(
        err(infer_t(&plain, &["f32[4,6]"])),
        "Split: without split sizes the output count decides the split; use infer_node_with_outputs"
    );
    assert_eq!(
        err(infer_t(&attr, &["f32[N,6]"])),
        "Split: split sizes [2, 3] sum to 5 but axis 1 of [N,6] has 6"
    );
    assert_eq!(
        err(infer_n(&attr, vec![a("f32[N,5]")], 3)),
        "Split: split sizes [2, 3] give 2 outputs but the node has 3"
    );
}

#[test]
fn gather() {
    let g = |axis| Op::Gather { axis };
    assert_eq!(
        infer_t(&g(1), &["f32[5,6,7]", "i64[N,2]"]).unwrap(),
        "f32[5,N,2,7]"
    );
    // A scalar index drops the axis.
    assert_eq!(infer_t(&g(0), &["f32[V,D]", "i32[]"]).unwrap(), "f32[D]");
    assert_eq!(
        infer_t(&g(-1), &["f32[V,D]", "i64[B,S]"]).unwrap(),
        "f32[V,B,S]"
    );
    assert_eq!(
        err(infer(&g(0), vec![a("f32[5,6]"), k(ints(&[1, 5]))])),
        "Gather: index 5 is out of range for axis 0 of size 5"
    );
    assert_eq!(
        err(infer_t(&g(0), &["f32[5,6]", "f32[2]"])),
        "Gather: operand 1 must have an integer dtype, got f32"
    );
    assert_eq!(
        err(infer_t(&g(2), &["f32[5,6]", "i64[2]"])),
        "Gather: axis 2 is out of range for rank 2 (valid: -2 to 1)"
    );
    assert_eq!(
        infer_t(&Op::GatherElements { axis: 1 }, &["f32[5,6]", "i64[5,2]"]).unwrap(),
        "f32[5,2]"
    );
    // GatherND: indices[..-1] + data[batch_dims + m..] = [N] + [4].
    assert_eq!(
        infer_t(&Op::GatherNd { batch_dims: 0 }, &["f32[2,3,4]", "i64[N,2]"]).unwrap(),
        "f32[N,4]"
    );
}

#[test]
fn flatten_expand_tile_pad_shape() {
    let f = |axis| Op::Flatten { axis };
    assert_eq!(infer_t(&f(1), &["f32[N,3,4]"]).unwrap(), "f32[N,12]");
    // N·3 is not a single factor: unknown.
    assert_eq!(infer_t(&f(2), &["f32[N,3,4]"]).unwrap(), "f32[?,4]");
    assert_eq!(infer_t(&f(2), &["f32[1,N,4]"]).unwrap(), "f32[N,4]");
    assert_eq!(infer_t(&f(0), &["f32[2,3]"]).unwrap(), "f32[1,6]");
    assert_eq!(infer_t(&f(-1), &["f32[2,3,4]"]).unwrap(), "f32[6,4]");
    assert_eq!(infer_t(&f(3), &["f32[2,3,4]"]).unwrap(), "f32[24,1]");
    assert_eq!(
        err(infer_t(&f(4), &["f32[2,3,4]"])),
        "Flatten: axis 4 is out of range for rank 3 (valid: -3 to 3)"
    );

    assert_eq!(
        infer(&Op::Expand, vec![a("f32[3,1]"), k(ints(&[2, 1, 6]))]).unwrap(),
        "f32[2,3,6]"
    );
    assert_eq!(
        infer(&Op::Expand, vec![a("f32[N,1]"), k(ints(&[1, 4]))]).unwrap(),
        "f32[N,4]"
    );
    assert_eq!(
        infer_t(&Op::Expand, &["f32[3,1]", "i64[3]"]).unwrap(),
        "f32[?,3,?]"
    );
    assert_eq!(
        infer(&Op::Tile, vec![a("f32[N,3]"), k(ints(&[1, 2]))]).unwrap(),
        "f32[N,6]"
    );

    let pad = Op::Pad {
        mode: PadMode::Constant,
    };
    assert_eq!(
        infer(&pad, vec![a("f32[N,3]"), k(ints(&[0, 1, 0, 2]))]).unwrap(),
        "f32[N,6]"
    );
    assert_eq!(
        infer(
            &pad,
            vec![a("f32[N,3]"), k(ints(&[1, -1])), none(), k(ints(&[1]))]
        )
        .unwrap(),
        "f32[N,3]"
    );
    assert_eq!(infer_t(&pad, &["f32[N,3]", "i64[4]"]).unwrap(), "f32[?,?]");
    assert_eq!(
        err(infer(&pad, vec![a("f32[N,3]"), k(ints(&[0, 1]))])),
        "Pad: pads has 2 values, expected 4 (2 per padded axis)"
    );

    assert_eq!(
        infer_t(
            &Op::Shape {
                start: 0,
                end: None
            },
            &["f32[N,3,4]"]
        )
        .unwrap(),
        "i64[3]"
    );
    assert_eq!(
        infer_t(
            &Op::Shape {
                start: -2,
                end: Some(100)
            },
            &["f32[N,3,4]"]
        )
        .unwrap(),
        "i64[2]"
    );
    assert_eq!(infer_t(&Op::Size, &["f32[N,3,4]"]).unwrap(), "i64[]");
    let d2s = Op::DepthToSpace {
        blocksize: 2,
        mode: kiln_ir::DepthToSpaceMode::Dcr,
    };
    assert_eq!(infer_t(&d2s, &["f32[N,8,3,5]"]).unwrap(), "f32[N,2,6,10]");
    assert_eq!(
        infer_t(&Op::SpaceToDepth { blocksize: 2 }, &["f32[N,2,6,10]"]).unwrap(),
        "f32[N,8,3,5]"
    );
}
