//! Tests of the packed formats against an independent NumPy reference and
//! of the documented error bounds (docs/quant-formats.md).

use super::*;
use half::f16;
use proptest::prelude::*;

/// Row-major `[rows, cols]` sample weight, computed with the same f32
/// operations as `sample()` in `testdata/rtn_reference.py`.
fn sample(rows: usize, cols: usize) -> Vec<f32> {
    let mut w = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let k = ((r * 37 + c * 11) % 23) as f32 - 11.0;
            w.push(k / 7.0 + c as f32 * 0.75);
        }
    }
    w
}

fn fmt(text: &str) -> QuantFormat {
    QuantFormat::parse(text).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Packed bytes, scales and zero points agree bit for bit with the NumPy
/// implementation of the document (`testdata/rtn_reference.py`, whose output
/// these are), covering int8, int4 and int3, per-channel and grouped, a
/// short last group (35 rows in groups of 32) and padded int3 blocks.
#[test]
fn rtn_matches_the_numpy_reference() {
    type Case = (
        &'static str,
        &'static str,
        &'static [u16],
        Option<&'static [u8]>,
    );
    let cases: [Case; 5] = [
        ("w8", "01a33bdc740cae46e88018ba52f48c24c55dff972fd16901a33bdc740cae46e88018baa963d08af7b16ad892ffb972e09953c17ae8a15bc882efa963d08af7b16ad892ffb972ffca95e7b27dd09bedb883d6a1f3be89dca6f9c48fe2acffca95e7b27dd09bedb883d6", &[8789, 9389, 9776], None),
        ("w4g32", "a1d4275b8eb2e5396c9fc4174a7db2e5180c6a9cbfd7f97b9dc6e86a8caec6f97b9dbf07cfe98b9cbed8ea8badcfd9fa9cbec8e98d0f", &[13103, 12768, 13646, 13646, 14085, 13500], None),
        ("w4g32a", "a0d4175b8eb2f5396c9fd3074a7db1e50a0f185b8ec2f6396ca0d3174a8eb1e5286c7f009fc206396da0d4174b8eb2f5296c90d31a0f", &[12980, 12356, 12980, 12668, 12980, 12395], Some(&[8, 10, 4, 1, 0, 0])),
        ("w3", "a9cc74a6ba53de2b2f9599ce5401009df9ce7ce9ce7467be33df992f0100375dba2fdd97ee4df7a64bf7a50100", &[14384, 14896, 15384], None),
        ("w3g32a", "a8ce5467bc33de2b0fd599eac501004c75c63be3a1f2509da9ce78270000673c301e2a0fd599ea8c07c6c50100", &[14127, 13458, 14127, 13792, 14127, 13500], Some(&[4, 5, 2, 1, 0, 0])),
    ];
    let w = sample(35, 3);
    for (name, data, scales, zeros) in cases {
        let p = quantize_rtn(&w, 35, 3, fmt(name)).unwrap();
        assert_eq!(hex(p.data()), data, "{name}: data");
        let bits: Vec<u16> = p.scales().iter().map(|s| s.to_bits()).collect();
        assert_eq!(bits, scales, "{name}: scales");
        assert_eq!(p.zeros(), zeros, "{name}: zeros");
    }
}

#[test]
fn formats_print_and_parse() {
    let all = QuantFormat::all();
    assert_eq!(all.len(), 3 * 4 * 2);
    for f in all {
        assert_eq!(QuantFormat::parse(&f.to_string()), Ok(f));
        assert_eq!(f.to_string().parse::<QuantFormat>(), Ok(f));
    }
    let f = fmt("w4g64a");
    assert_eq!((f.bits(), f.group(), f.symmetric()), (4, Some(64), false));
    let f = fmt("w8");
    assert_eq!((f.bits(), f.group(), f.symmetric()), (8, None, true));
    assert_eq!(fmt("w3g128").to_string(), "w3g128");
}

#[test]
fn bad_formats_are_rejected_with_the_reason() {
    for (text, reason) in [
        ("", "start with `w`"),
        ("W4", "start with `w`"),
        ("x4g64", "start with `w`"),
        ("w", "not a bit width"),
        ("w5", "width of 5 bits"),
        ("w16", "width of 16 bits"),
        ("w300", "width of 300 bits"),
        ("w04", "not a bit width"),
        ("w4g", "not a group size"),
        ("w4g48", "group of 48 input rows"),
        ("w4g064", "not a group size"),
        ("w4g64aa", "not a group size"),
        ("w4g64b", "not a group size"),
        ("w4ag64", "not a bit width"),
        ("w4g99999999999999999999999", "not a group size"),
        ("w4 ", "not a bit width"),
    ] {
        let err = QuantFormat::parse(text).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, QuantError::Parse { .. })
                && msg.contains(reason)
                && msg.contains(&format!("`{text}`")),
            "{text:?}: {msg}"
        );
    }
    assert_eq!(
        QuantFormat::new(5, None, true),
        Err(QuantError::UnsupportedBits(5))
    );
    assert_eq!(
        QuantFormat::new(4, Some(16), true),
        Err(QuantError::UnsupportedGroup(16))
    );
}

/// Storage cost of a SmolLM2 MLP matrix (576 × 1536) in every documented
/// format, against `bits_per_weight` of `testdata/rtn_reference.py`.
#[test]
fn bits_per_weight_of_a_576_by_1536_matrix() {
    for (name, bytes, bpw) in [
        ("w8", 887808, 8.0278),
        ("w8a", 889344, 8.0417),
        ("w4g128", 457728, 4.1389),
        ("w4g128a", 465408, 4.2083),
        ("w4g64", 470016, 4.2500),
        ("w4g64a", 483840, 4.3750),
        ("w4g32", 497664, 4.5000),
        ("w4g32a", 525312, 4.7500),
        ("w3g64", 359424, 3.2500),
        ("w3g64a", 373248, 3.3750),
        ("w3g128", 347136, 3.1389),
        ("w3g128a", 354816, 3.2083),
    ] {
        assert_eq!(packed_bytes(576, 1536, fmt(name)), bytes, "{name}");
        let got = bits_per_weight(576, 1536, fmt(name));
        assert!((got - bpw).abs() < 5e-5, "{name}: {got}");
    }
    assert_eq!(bits_per_weight(0, 7, fmt("w4g32")), 0.0);
}

#[test]
fn zero_columns_quantize_to_zeros() {
    let (rows, cols) = (70, 3);
    // Column 1 is all zeros (with a negative zero), the others are not.
    let mut w = sample(rows, cols);
    for r in 0..rows {
        w[r * cols + 1] = if r == 5 { -0.0 } else { 0.0 };
    }
    for f in QuantFormat::all() {
        let p = quantize_rtn(&w, rows, cols, f).unwrap();
        let d = dequantize(&p);
        assert!(d.iter().all(|v| v.is_finite()), "{f}");
        assert!((0..rows).all(|r| d[r * cols + 1] == 0.0), "{f}");
        assert!(
            p.scales().iter().all(|s| s.to_f32() >= MIN_SCALE.to_f32()),
            "{f}"
        );
        let x = vec![1.0f32; rows];
        assert_eq!(dot_column(&p, 1, &x), 0.0, "{f}");
    }
    // A whole zero matrix, too.
    let p = quantize_rtn(&[0.0; 64], 32, 2, fmt("w3g32a")).unwrap();
    assert_eq!(dequantize(&p), vec![0.0; 64]);
}

/// 576 input rows in groups of 128: four full groups and one of 64, whose
/// scale comes from its own rows only.
#[test]
fn short_last_group_has_its_own_scale() {
    let (rows, cols) = (576, 2);
    let w: Vec<f32> = sample(rows, cols)
        .iter()
        .enumerate()
        .map(|(i, &v)| if i / cols >= 512 { v * 1e-2 } else { v })
        .collect();
    for name in ["w4g128", "w4g128a", "w3g128", "w8"] {
        let f = fmt(name);
        let p = quantize_rtn(&w, rows, cols, f).unwrap();
        assert_eq!(p.data().len(), cols * f.column_stride(rows));
        if f.group().is_some() {
            assert_eq!(p.groups_per_column(), 5);
            assert_eq!(p.group_rows(4), 512..576);
            for c in 0..cols {
                let small = p.scale(c, 4);
                assert!(small < p.scale(c, 3) / 50.0, "{name}: column {c}");
                let d = dequantize(&p);
                for r in 512..576 {
                    let err = (d[r * cols + c] - w[r * cols + c]).abs();
                    assert!(
                        err <= small * 0.51 + small * 0.02,
                        "{name}: [{r}, {c}] off by {err}"
                    );
                }
            }
        }
    }
    // Groups of 32 over 100 rows: three full groups and one of 4.
    let p = quantize_rtn(&sample(100, 1), 100, 1, fmt("w3g32")).unwrap();
    assert_eq!(p.groups_per_column(), 4);
    assert_eq!(p.group_rows(3), 96..100);
    assert_eq!(p.data().len(), 3 * 13);
}

#[test]
fn bad_inputs_are_errors() {
    let f = fmt("w4g32");
    assert_eq!(
        quantize_rtn(&[0.0; 5], 2, 3, f),
        Err(QuantError::ShapeMismatch {
            rows: 2,
            cols: 3,
            actual: 5
        })
    );
    let mut w = vec![0.5f32; 6];
    w[4] = f32::NAN;
    assert!(matches!(
        quantize_rtn(&w, 2, 3, f),
        Err(QuantError::NonFinite { row: 1, col: 1, .. })
    ));
    w[4] = f32::INFINITY;
    assert!(matches!(
        quantize_rtn(&w, 2, 3, f),
        Err(QuantError::NonFinite { .. })
    ));
    // int3: max|w| / 3 must stay within f16.
    let w = [1.0, 3.0e5, 2.0, 4.0];
    assert!(matches!(
        quantize_rtn(&w, 2, 2, fmt("w3")),
        Err(QuantError::ScaleOverflow {
            col: 1,
            group: 0,
            ..
        })
    ));
    assert!(matches!(
        quantize_rtn(&[-1.0e7, 1.0e7], 2, 1, fmt("w8a")),
        Err(QuantError::ScaleOverflow { .. })
    ));
}

#[test]
fn inconsistent_parts_are_rejected() {
    let f = fmt("w4g32a");
    let p = quantize_rtn(&sample(40, 2), 40, 2, f).unwrap();
    let parts = || {
        (
            p.data().to_vec(),
            p.scales().to_vec(),
            p.zeros().map(<[u8]>::to_vec),
        )
    };
    let (d, s, z) = parts();
    assert_eq!(PackedWeight::from_parts(f, 40, 2, d, s, z).as_ref(), Ok(&p));

    let (mut d, s, z) = parts();
    d.pop();
    assert!(matches!(
        PackedWeight::from_parts(f, 40, 2, d, s, z),
        Err(QuantError::PartLength {
            part: "data",
            expected: 40,
            actual: 39,
            ..
        })
    ));
    let (d, mut s, z) = parts();
    s.push(f16::ONE);
    assert!(matches!(
        PackedWeight::from_parts(f, 40, 2, d, s, z),
        Err(QuantError::PartLength { part: "scales", .. })
    ));
    let (d, mut s, z) = parts();
    s[3] = f16::NAN;
    assert!(matches!(
        PackedWeight::from_parts(f, 40, 2, d, s, z),
        Err(QuantError::NonFiniteScale {
            col: 1,
            group: 1,
            ..
        })
    ));
    let (d, s, _) = parts();
    assert!(matches!(
        PackedWeight::from_parts(f, 40, 2, d, s, None),
        Err(QuantError::ZerosPresence { .. })
    ));
    let (d, s, z) = parts();
    let mut z = z.unwrap();
    z[2] = 16;
    assert!(matches!(
        PackedWeight::from_parts(f, 40, 2, d, s, Some(z)),
        Err(QuantError::ZeroRange {
            col: 1,
            group: 0,
            value: 16,
            bits: 4
        })
    ));
    let (d, s, z) = parts();
    assert!(matches!(
        PackedWeight::from_parts(fmt("w4g32"), 40, 2, d, s, z),
        Err(QuantError::ZerosPresence { .. })
    ));
    let mut codes = vec![0u8; 80];
    codes[45] = 16;
    assert!(matches!(
        PackedWeight::from_codes(
            f,
            40,
            2,
            &codes,
            p.scales().to_vec(),
            p.zeros().map(<[u8]>::to_vec)
        ),
        Err(QuantError::CodeRange {
            col: 1,
            row: 5,
            value: 16,
            bits: 4
        })
    ));
}

/// A random `[rows, cols]` weight in some format: values uniform in
/// `[-1, 1]` with some exact zeros and ones, shifted (so some columns are
/// skewed or one-signed) and scaled over eleven decades (so some groups fall
/// below the smallest scale).
fn weights() -> impl Strategy<Value = (QuantFormat, usize, usize, Vec<f32>)> {
    let formats = QuantFormat::all();
    (
        0..formats.len(),
        1usize..=200,
        1usize..=4,
        -7i32..=4,
        -1.0f32..=1.0,
    )
        .prop_flat_map(move |(f, rows, cols, exp, shift)| {
            let mag = 10f32.powi(exp);
            let value = prop_oneof![8 => -1.0f32..=1.0, 1 => Just(0.0f32), 1 => Just(1.0f32)];
            (
                Just(formats[f]),
                Just(rows),
                Just(cols),
                proptest::collection::vec(value, rows * cols)
                    .prop_map(move |v| v.into_iter().map(|x| (x + shift) * mag).collect()),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Symmetric: every value is within half a step (s/2) of its original.
    /// Asymmetric: within s/2 plus the part of the group's range (widened to
    /// include 0) that `2^bits - 1` steps do not cover.
    /// Both allow relative 1e-5 of a step for the f32 division.
    #[test]
    fn rtn_error_is_within_the_documented_bound((f, rows, cols, w) in weights()) {
        let p = quantize_rtn(&w, rows, cols, f).unwrap();
        let d = dequantize(&p);
        let q = f64::from(f.max_code());
        for c in 0..cols {
            for g in 0..p.groups_per_column() {
                let s = f64::from(p.scale(c, g));
                let span = p.group_rows(g);
                let values = span.clone().map(|r| f64::from(w[r * cols + c]));
                let lo = values.clone().fold(0.0f64, f64::min);
                let hi = values.fold(0.0f64, f64::max);
                let bound = if f.symmetric() {
                    0.5 * s
                } else {
                    0.5 * s + (hi - lo - q * s).max(0.0)
                } + 1e-5 * s;
                for r in span {
                    let err = (f64::from(d[r * cols + c]) - f64::from(w[r * cols + c])).abs();
                    prop_assert!(err <= bound, "{f} [{r}, {c}]: {} -> {}, error {err} > {bound} (s {s})", w[r * cols + c], d[r * cols + c]);
                }
            }
        }
    }

    /// Re-quantizing a dequantized weight gives back the same packed weight,
    /// so dequantize ∘ quantize is a fixed point on its own output.
    #[test]
    fn requantizing_is_lossless((f, rows, cols, w) in weights()) {
        let p = quantize_rtn(&w, rows, cols, f).unwrap();
        let d = dequantize(&p);
        let again = quantize_rtn(&d, rows, cols, f).unwrap();
        prop_assert_eq!(dequantize(&again), d, "{}", f);
        prop_assert_eq!(again, p);
    }

    /// The on-the-fly dot product agrees with the dot product of the
    /// dequantized column (f64 sum) within 1e-5 of the sum of magnitudes.
    #[test]
    fn dot_column_matches_the_dequantized_dot(
        (f, rows, cols, w) in weights(),
        xs in proptest::collection::vec(-1.0f32..=1.0, 200),
    ) {
        let p = quantize_rtn(&w, rows, cols, f).unwrap();
        let d = dequantize(&p);
        let x = &xs[..rows];
        let y = matvec(&p, x);
        prop_assert_eq!(y.len(), cols);
        for c in 0..cols {
            let terms = (0..rows).map(|r| f64::from(d[r * cols + c]) * f64::from(x[r]));
            let exact: f64 = terms.clone().sum();
            let size: f64 = terms.map(f64::abs).sum();
            let got = dot_column(&p, c, x);
            prop_assert!((f64::from(got) - exact).abs() <= 1e-5 * size + 1e-30, "{f} column {c}: {got} vs {exact}");
            prop_assert_eq!(y[c], got);
        }
    }

    /// Stored sizes equal `packed_bytes`, and the parts have the documented
    /// lengths; packing the unpacked codes again gives the same weight.
    #[test]
    fn packed_sizes_match((f, rows, cols, w) in weights()) {
        let p = quantize_rtn(&w, rows, cols, f).unwrap();
        prop_assert_eq!(p.byte_len(), packed_bytes(rows, cols, f));
        let groups = rows.div_ceil(f.group().unwrap_or(rows));
        let per_block = match f.bits() { 8 => (1, 1), 4 => (2, 1), _ => (8, 3) };
        prop_assert_eq!(p.data().len(), cols * rows.div_ceil(per_block.0) * per_block.1);
        prop_assert_eq!(p.scales().len(), cols * groups);
        prop_assert_eq!(p.zeros().map(<[u8]>::len), (!f.symmetric()).then_some(cols * groups));
        let codes: Vec<u8> = (0..cols).flat_map(|c| p.column_codes(c)).collect();
        let again = PackedWeight::from_codes(f, rows, cols, &codes, p.scales().to_vec(), p.zeros().map(<[u8]>::to_vec)).unwrap();
        prop_assert_eq!(again, p);
    }
}
