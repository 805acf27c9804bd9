//! GGUF writer and quantizers.
//!
//! - Round trip: files with metadata of every value type and tensors of
//!   every quantizable type (plus raw blocks of other types) read back
//!   through Kiln's own reader unchanged.
//! - The gguf Python package (`scripts/gguf_check.py`) reads the same files:
//!   its `GGUFReader` lists the same keys, values, types and tensors, its
//!   `dequantize` equals Kiln's bit for bit, and its `GGUFWriter`, given what
//!   it read, writes byte-identical files.
//! - Kiln's quantizers produce the bytes of `gguf.quants.quantize` for
//!   seeded random rows, zeros, constant rows, extreme magnitudes and exact
//!   ties.
//! - A real model (SmolLM2-135M, when cached) copied through the writer
//!   reads back with identical metadata, tensor infos and bytes.
//! - The code packers dequantize to exactly `f16(scale) · code (+ f16(min))`
//!   as numpy computes it.
//!
//! The Python parts skip (with a message) when the reference venv is missing.

mod gguf_common;

use gguf_common::{
    check_dequantized, check_meta, check_tensor_list, kiln_cache, python, read_json,
};
use kiln_frontends::gguf::quantize::{self, f16_round};
use kiln_frontends::gguf::{dequantize_into, GgmlType, GgufFile, GgufWriter, MetaValue};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// SplitMix64: a small seeded generator, so the data is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The types Kiln quantizes from f32.
fn quantizable() -> Vec<GgmlType> {
    quantize::SUPPORTED.to_vec()
}

fn is_block(ty: GgmlType) -> bool {
    ty.block_size() != Some(1)
}

/// Metadata of every value type, `general.architecture` first.
fn every_meta() -> Vec<(String, MetaValue)> {
    use MetaValue as M;
    let strings: Vec<M> = (0..1000)
        .map(|i| M::String(format!("tok{i}_{}", "é".repeat(i % 3))))
        .chain(["", "Ġthe", "<|im_end|>", "世界"].map(|s| M::String(s.into())))
        .collect();
    let i32s = |v: &[i32]| M::Array(v.iter().map(|&x| M::I32(x)).collect());
    let strs = |v: &[&str]| M::Array(v.iter().map(|&s| M::String(s.into())).collect());
    let v = vec![
        ("general.architecture", M::String("test".into())),
        ("test.u8", M::U8(200)),
        ("test.i8", M::I8(-100)),
        ("test.u16", M::U16(u16::MAX)),
        ("test.i16", M::I16(i16::MIN)),
        ("test.u32", M::U32(u32::MAX)),
        ("test.i32", M::I32(i32::MIN)),
        ("test.u64", M::U64(u64::MAX)),
        ("test.i64", M::I64(i64::MIN)),
        ("test.f32", M::F32(1e-5)),
        ("test.f32_neg_inf", M::F32(f32::NEG_INFINITY)),
        ("test.f32_nan", M::F32(f32::from_bits(0x7fc0_1234))),
        ("test.f64", M::F64(std::f64::consts::PI)),
        ("test.f64_neg_zero", M::F64(-0.0)),
        (
            "test.f64_nan",
            M::F64(f64::from_bits(0x7ff8_0000_0000_1234)),
        ),
        ("test.bool_true", M::Bool(true)),
        ("test.bool_false", M::Bool(false)),
        ("test.string", M::String("héllo ✓ 世界\n\"quoted\"".into())),
        ("test.empty_string", M::String(String::new())),
        (
            "test.arr_u8",
            M::Array([0, 1, 127, 255].map(M::U8).to_vec()),
        ),
        ("test.arr_i8", M::Array([-128, 0, 127].map(M::I8).to_vec())),
        ("test.arr_u16", M::Array([0, 65535].map(M::U16).to_vec())),
        (
            "test.arr_i16",
            M::Array([-32768, 0, 32767].map(M::I16).to_vec()),
        ),
        ("test.arr_u32", M::Array([0, u32::MAX].map(M::U32).to_vec())),
        ("test.arr_i32", i32s(&[-5, 0, 7, i32::MAX])),
        (
            "test.arr_u64",
            M::Array([0, (1 << 53) + 1, u64::MAX].map(M::U64).to_vec()),
        ),
        (
            "test.arr_i64",
            M::Array([i64::MIN, -1, i64::MAX].map(M::I64).to_vec()),
        ),
        (
            "test.arr_f32",
            M::Array([0.5, -1.25, 1e30, f32::INFINITY].map(M::F32).to_vec()),
        ),
        (
            "test.arr_f64",
            M::Array([1e-300, -2.5].map(M::F64).to_vec()),
        ),
        (
            "test.arr_bool",
            M::Array([true, false, true].map(M::Bool).to_vec()),
        ),
        ("test.arr_str", M::Array(strings)),
        (
            "test.arr_nested",
            M::Array(vec![i32s(&[1, 2]), i32s(&[3]), i32s(&[4, 5, 6])]),
        ),
        (
            "test.arr_nested_str",
            M::Array(vec![strs(&["a"]), strs(&["b", "c"])]),
        ),
        (
            "test.arr_nested3",
            M::Array(vec![M::Array(vec![i32s(&[1]), i32s(&[2, 3])])]),
        ),
    ];
    v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// One tensor to write: name, IR dims, type, and how it is given.
struct Spec {
    name: String,
    dims: Vec<usize>,
    ty: GgmlType,
    /// f32 values to quantize, or None for `raw` bytes.
    values: Option<Vec<f32>>,
    raw: Vec<u8>,
}

/// Tensors of every quantizable type (quantized from f32, 1 to 4 dims) and
/// raw blocks of types Kiln dequantizes but does not quantize.
fn every_tensor(rng: &mut Rng) -> Vec<Spec> {
    let mut specs = Vec::new();
    for ty in quantizable() {
        let shapes: Vec<Vec<usize>> = if is_block(ty) {
            vec![vec![3, 64], vec![2, 2, 32], vec![1, 2, 1, 96], vec![32]]
        } else {
            vec![vec![5, 7], vec![3], vec![2, 3, 4], vec![1, 1, 2, 5]]
        };
        for (k, dims) in shapes.into_iter().enumerate() {
            let n: usize = dims.iter().product();
            let scale = 10f32.powi(k as i32 - 2);
            let values = (0..n).map(|_| rng.normal() * scale).collect();
            specs.push(Spec {
                name: format!("{}.{k}", ty.name().to_lowercase()),
                dims,
                ty,
                values: Some(values),
                raw: Vec::new(),
            });
        }
    }
    // Raw blocks with finite f16 scale fields at the offsets ggml's structs use.
    for (ty, f16_fields, dims) in [
        (GgmlType::Q4_K, vec![0, 2], vec![2, 256]),
        (GgmlType::Q6_K, vec![208], vec![1, 512]),
        (GgmlType::Q2_K, vec![80, 82], vec![256]),
    ] {
        let n_blocks = dims.iter().product::<usize>() / 256;
        let size = ty.type_size().unwrap() as usize;
        let mut raw: Vec<u8> = (0..n_blocks * size).map(|_| rng.next() as u8).collect();
        for b in 0..n_blocks {
            for &off in &f16_fields {
                let h = half::f16::from_f32(rng.normal() * 1e-2).to_le_bytes();
                raw[b * size + off..b * size + off + 2].copy_from_slice(&h);
            }
        }
        specs.push(Spec {
            name: format!("raw.{}", ty.name().to_lowercase()),
            dims,
            ty,
            values: None,
            raw,
        });
    }
    // A type neither side dequantizes: bytes and infos only.
    specs.push(Spec {
        name: "raw.i32".into(),
        dims: vec![2, 3],
        ty: GgmlType::I32,
        values: None,
        raw: (0..24).map(|_| rng.next() as u8).collect(),
    });
    specs
}

/// Adds `specs` to `w`; returns each tensor's stored bytes by name.
fn add_all(w: &mut GgufWriter, specs: &[Spec]) -> BTreeMap<String, Vec<u8>> {
    let mut stored = BTreeMap::new();
    for s in specs {
        let bytes = match &s.values {
            Some(v) => quantize::quantize(s.ty, v).unwrap(),
            None => s.raw.clone(),
        };
        match &s.values {
            Some(v) => w.add_f32_tensor(&s.name, &s.dims, s.ty, v).unwrap(),
            None => w.add_tensor(&s.name, &s.dims, s.ty, bytes.clone()).unwrap(),
        }
        stored.insert(s.name.clone(), bytes);
    }
    stored
}

/// A file the tests write: its path, metadata in order, tensors, and
/// whether GGUFWriter can express all of it (for the rewrite comparison).
struct Written {
    path: std::path::PathBuf,
    meta: Vec<(String, MetaValue)>,
    specs: Vec<Spec>,
    stored: BTreeMap<String, Vec<u8>>,
    rewritable: bool,
}

fn write_file(
    dir: &Path,
    name: &str,
    meta: Vec<(String, MetaValue)>,
    specs: Vec<Spec>,
    rewritable: bool,
) -> Written {
    let mut w = GgufWriter::new();
    for (k, v) in &meta {
        w.add_meta(k.clone(), v.clone()).unwrap();
    }
    let stored = add_all(&mut w, &specs);
    let path = dir.join(name);
    let size = w.write(&path).unwrap();
    assert_eq!(size, std::fs::metadata(&path).unwrap().len(), "{name}");
    // Deterministic: the same additions give the same bytes.
    let mut again = Vec::new();
    w.write_to(&mut again).unwrap();
    assert_eq!(
        again,
        std::fs::read(&path).unwrap(),
        "{name}: bytes differ between writes"
    );
    Written {
        path,
        meta,
        specs,
        stored,
        rewritable,
    }
}

/// The test files: every metadata type and tensor type; a 64-byte
/// alignment; arrays of arrays GGUFWriter cannot express; code-packed tensors.
fn write_files(dir: &Path) -> Vec<Written> {
    let mut rng = Rng(20250611);
    let mut files = Vec::new();
    let specs = every_tensor(&mut rng);
    files.push(write_file(dir, "every.gguf", every_meta(), specs, true));

    let meta = vec![
        (
            "general.architecture".to_owned(),
            MetaValue::String("llama".into()),
        ),
        (
            "general.name".to_owned(),
            MetaValue::String("aligned".into()),
        ),
        ("general.alignment".to_owned(), MetaValue::U32(64)),
    ];
    let specs = vec![
        Spec {
            name: "odd.f16".into(),
            dims: vec![3, 5],
            ty: GgmlType::F16,
            values: Some((0..15).map(|i| i as f32 * 0.3).collect()),
            raw: vec![],
        },
        Spec {
            name: "odd.q5_1".into(),
            dims: vec![1, 32],
            ty: GgmlType::Q5_1,
            values: Some((0..32).map(|i| (i as f32).sin()).collect()),
            raw: vec![],
        },
        Spec {
            name: "odd.f32".into(),
            dims: vec![1],
            ty: GgmlType::F32,
            values: Some(vec![2.5]),
            raw: vec![],
        },
    ];
    files.push(write_file(dir, "aligned.gguf", meta, specs, true));

    use MetaValue as M;
    let mut deep = M::Array(vec![M::U8(7)]);
    for _ in 0..7 {
        deep = M::Array(vec![deep]);
    }
    let meta = vec![
        ("general.architecture".to_owned(), M::String("test".into())),
        (
            "test.nested_mixed".to_owned(),
            M::Array(vec![
                M::Array(vec![M::U8(1), M::U8(2)]),
                M::Array(vec![M::F64(-0.5)]),
                M::Array(vec![M::U64(u64::MAX)]),
            ]),
        ),
        ("test.nested_deepest".to_owned(), deep),
    ];
    files.push(write_file(dir, "nested.gguf", meta, vec![], false));

    let (codes_meta, codes_specs) = codes_tensors(&mut rng);
    files.push(write_file(dir, "codes.gguf", codes_meta, codes_specs, true));
    files
}

/// Code-packed tensors (`*_from_codes`) for every packer, with their inputs
/// kept as metadata-free tensors' names `codes.TYPE`.
fn codes_tensors(rng: &mut Rng) -> (Vec<(String, MetaValue)>, Vec<Spec>) {
    let inputs = codes_inputs(rng);
    let specs = inputs
        .iter()
        .map(|c| Spec {
            name: format!("codes.{}", c.ty.name().to_lowercase()),
            dims: vec![c.scales.len(), 32],
            ty: c.ty,
            values: None,
            raw: c.pack(),
        })
        .collect();
    let meta = vec![(
        "general.architecture".to_owned(),
        MetaValue::String("test".into()),
    )];
    (meta, specs)
}

/// Codes, scales and minimums for one packer.
struct Codes {
    ty: GgmlType,
    codes: Vec<i32>,
    scales: Vec<f32>,
    mins: Option<Vec<f32>>,
}

impl Codes {
    fn pack(&self) -> Vec<u8> {
        let i8s: Vec<i8> = self.codes.iter().map(|&c| c as i8).collect();
        let u8s: Vec<u8> = self.codes.iter().map(|&c| c as u8).collect();
        let mins = self.mins.as_deref().unwrap_or(&[]);
        match self.ty {
            GgmlType::Q4_0 => quantize::q4_0_from_codes(&i8s, &self.scales),
            GgmlType::Q5_0 => quantize::q5_0_from_codes(&i8s, &self.scales),
            GgmlType::Q8_0 => quantize::q8_0_from_codes(&i8s, &self.scales),
            GgmlType::Q4_1 => quantize::q4_1_from_codes(&u8s, &self.scales, mins),
            GgmlType::Q5_1 => quantize::q5_1_from_codes(&u8s, &self.scales, mins),
            other => panic!("no packer for {other}"),
        }
        .unwrap()
    }
}

/// Scales spread over f16's range: random magnitudes of both signs, zero,
/// f16 subnormals, the largest finite f16, and exact f16 rounding ties.
fn random_scales(rng: &mut Rng, n: usize) -> Vec<f32> {
    let special = [
        0.0,
        -0.0,
        1.0 + 2f32.powi(-11),       // tie, rounds down to even 1.0
        1.0 + 3.0 * 2f32.powi(-11), // tie, rounds up to even
        6e-8,                       // f16 subnormal
        -3e-6,
        65504.0,
        65519.0, // rounds to 65504
        2f32.powi(-25),
    ];
    (0..n)
        .map(|i| match special.get(i) {
            Some(&s) => s,
            None => rng.normal() * 10f32.powf(rng.uniform() as f32 * 9.0 - 6.0),
        })
        .collect()
}

fn codes_inputs(rng: &mut Rng) -> Vec<Codes> {
    let n_blocks = 40;
    [
        (GgmlType::Q4_0, -8, 7, false),
        (GgmlType::Q5_0, -16, 15, false),
        (GgmlType::Q8_0, -128, 127, false),
        (GgmlType::Q4_1, 0, 15, true),
        (GgmlType::Q5_1, 0, 31, true),
    ]
    .into_iter()
    .map(|(ty, lo, hi, has_min)| {
        let span = (hi - lo + 1) as u64;
        // Every code appears, then random ones.
        let codes = (0..n_blocks * 32)
            .map(|i| {
                if (i as u64) < span {
                    lo + i as i32
                } else {
                    lo + rng.below(span) as i32
                }
            })
            .collect();
        let scales = random_scales(rng, n_blocks);
        let mins = has_min.then(|| {
            let mut m = random_scales(rng, n_blocks);
            m.reverse();
            m
        });
        Codes {
            ty,
            codes,
            scales,
            mins,
        }
    })
    .collect()
}

/// Metadata values equal including float bit patterns (NaN == NaN).
fn same_meta(a: &MetaValue, b: &MetaValue) -> bool {
    match (a, b) {
        (MetaValue::F32(x), MetaValue::F32(y)) => x.to_bits() == y.to_bits(),
        (MetaValue::F64(x), MetaValue::F64(y)) => x.to_bits() == y.to_bits(),
        (MetaValue::Array(x), MetaValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_meta(a, b))
        }
        _ => a == b,
    }
}

#[test]
fn written_files_read_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    for f in write_files(dir.path()) {
        let file = GgufFile::open(&f.path).unwrap_or_else(|e| panic!("{e}"));
        let ctx = f.path.display().to_string();
        assert_eq!(file.version(), 3, "{ctx}");
        let want_align = f
            .meta
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .map_or(32, |(_, v)| v.as_u64().unwrap());
        assert_eq!(file.alignment(), want_align, "{ctx}");
        assert_eq!(file.metadata().len(), f.meta.len(), "{ctx}: key count");
        for (k, v) in &f.meta {
            let got = file
                .get(k)
                .unwrap_or_else(|| panic!("{ctx}: key '{k}' missing"));
            assert!(same_meta(got, v), "{ctx}: '{k}': wrote {v:?}, read {got:?}");
        }
        assert_eq!(file.tensors().len(), f.specs.len(), "{ctx}: tensor count");
        let mut end = 0;
        for (info, spec) in file.tensors().iter().zip(&f.specs) {
            let tctx = format!("{ctx}: tensor '{}'", spec.name);
            assert_eq!(info.name, spec.name, "{tctx}: order");
            assert_eq!(info.ir_dims(), spec.dims, "{tctx}: dims");
            assert_eq!(info.ggml_type, spec.ty, "{tctx}: type");
            assert_eq!(info.offset % want_align, 0, "{tctx}: offset alignment");
            assert!(info.offset >= end, "{tctx}: overlaps the previous tensor");
            end = info.offset + info.n_bytes();
            assert_eq!(
                file.tensor_bytes(info),
                &f.stored[&spec.name][..],
                "{tctx}: bytes"
            );
            // Quantization error stays within one quantization step (a
            // layout mistake would not), independent of the Python check.
            if let Some(values) = &spec.values {
                let got = file
                    .dequantize(&spec.name)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap();
                check_error_bound(&tctx, spec.ty, values, &got);
            }
        }
        // The file ends with the last tensor's padding, nothing more.
        let len = std::fs::metadata(&f.path).unwrap().len();
        assert_eq!(
            len,
            file.data_offset() + end.div_ceil(want_align) * want_align,
            "{ctx}: file length"
        );
    }
}

/// `|x − dequantized| ≤` one step of the format (plus the f16 rounding of
/// the scale), per block.
fn check_error_bound(ctx: &str, ty: GgmlType, values: &[f32], got: &[f32]) {
    let block = ty.block_size().unwrap() as usize;
    for (b, (x, y)) in values.chunks(block).zip(got.chunks(block)).enumerate() {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let step = match ty {
            GgmlType::F32 => 0.0,
            GgmlType::F16 => amax * 2f32.powi(-11),
            GgmlType::BF16 => amax * 2f32.powi(-8),
            GgmlType::Q8_0 => amax / 127.0 / 2.0,
            GgmlType::Q4_0 => amax / 8.0,
            GgmlType::Q5_0 => amax / 16.0,
            GgmlType::Q4_1 => (hi - lo) / 15.0,
            GgmlType::Q5_1 => (hi - lo) / 31.0,
            other => panic!("no bound for {other}"),
        };
        let bound = step * 1.01 + amax * 2e-3;
        for (i, (a, b_)) in x.iter().zip(y).enumerate() {
            assert!(
                (a - b_).abs() <= bound,
                "{ctx}: block {b} element {i}: {a} became {b_} (bound {bound})"
            );
        }
    }
}

/// Runs `scripts/gguf_check.py ARGS...`; panics with its output on failure.
fn run_check(python: &Path, args: &[&std::ffi::OsStr]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gguf_check.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("cannot start the reference Python");
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks the stored element types of arrays (`"elem"`) as GGUFReader saw them.
fn check_elem_types(ctx: &str, want: &Value, got: &MetaValue) {
    if let MetaValue::Array(items) = got {
        assert_eq!(
            want["elem"].as_str(),
            Some(items[0].type_name()),
            "{ctx}: array element type"
        );
        for (i, (w, g)) in want["value"]
            .as_array()
            .unwrap()
            .iter()
            .zip(items)
            .enumerate()
        {
            check_elem_types(&format!("{ctx}[{i}]"), w, g);
        }
    }
}

#[test]
fn python_reads_kiln_files() {
    let Some(python) = python() else {
        eprintln!("reference venv not found (run scripts/setup.sh); skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for f in write_files(dir.path()) {
        let ctx = f.path.display().to_string();
        let out = dir.path().join(format!(
            "{}.check",
            f.path.file_name().unwrap().to_string_lossy()
        ));
        run_check(
            &python,
            &["read".as_ref(), f.path.as_os_str(), out.as_os_str()],
        );
        let json = read_json(&out.join("read.json"));
        let file = GgufFile::open(&f.path).unwrap();
        assert_eq!(json["version"].as_u64(), Some(3), "{ctx}");
        assert_eq!(json["alignment"].as_u64(), Some(file.alignment()), "{ctx}");
        assert_eq!(
            json["data_offset"].as_u64(),
            Some(file.data_offset()),
            "{ctx}"
        );

        // Same keys in the same (insertion) order, same types and values.
        let meta = json["metadata"].as_array().unwrap();
        let keys: Vec<&str> = meta.iter().map(|m| m["key"].as_str().unwrap()).collect();
        let want_keys: Vec<&str> = f.meta.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, want_keys, "{ctx}: metadata keys in order");
        for (m, (k, v)) in meta.iter().zip(&f.meta) {
            check_meta(&format!("{ctx}: {k}"), &m["value"], v);
            check_elem_types(&format!("{ctx}: {k}"), &m["value"], v);
        }

        check_tensor_list(&file, &json["tensors"]);
        let values_bytes = std::fs::read(out.join("read.safetensors")).unwrap();
        let values = SafeTensors::deserialize(&values_bytes).unwrap();
        let dequantized: Vec<&str> = json["dequantized"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let mut kiln_dequantizable: Vec<&str> = file
            .tensors()
            .iter()
            .filter(|t| t.ggml_type.can_dequantize())
            .map(|t| t.name.as_str())
            .collect();
        kiln_dequantizable.sort();
        assert_eq!(
            dequantized, kiln_dequantizable,
            "{ctx}: dequantized tensors"
        );
        for name in dequantized {
            compared += check_dequantized(&file, name, &values.tensor(name).unwrap());
        }

        // GGUFWriter, given what GGUFReader read, writes the same bytes.
        assert_eq!(
            json["rewritten"].as_bool(),
            Some(f.rewritable),
            "{ctx}: rewritten"
        );
        if f.rewritable {
            let theirs = std::fs::read(out.join("rewrite.gguf")).unwrap();
            let ours = std::fs::read(&f.path).unwrap();
            assert_eq!(theirs.len(), ours.len(), "{ctx}: GGUFWriter's file length");
            if let Some(i) = (0..ours.len()).find(|&i| theirs[i] != ours[i]) {
                panic!("{ctx}: GGUFWriter's file differs first at byte {i}");
            }
        }
    }
    eprintln!("{compared} dequantized elements equal gguf.quants.dequantize bit for bit");
}

/// Quantizer test inputs: name → (rows, cols, values); names start with the
/// target type, as the script expects.
fn quantizer_cases() -> BTreeMap<String, (usize, usize, Vec<f32>)> {
    let mut rng = Rng(7);
    let mut cases = BTreeMap::new();
    let mut add = |name: String, rows: usize, values: Vec<f32>| {
        let cols = values.len() / rows;
        assert_eq!(rows * cols, values.len(), "{name}");
        cases.insert(name, (rows, cols, values));
    };

    // Rows of 32: exact ties and special blocks.
    let mut special: Vec<[f32; 32]> = Vec::new();
    special.push([0.0; 32]);
    special.push([-0.0; 32]);
    special.push(std::array::from_fn(|i| if i % 2 == 0 { 0.0 } else { -0.0 }));
    special.push(std::array::from_fn(|i| if i % 3 == 0 { -0.0 } else { 0.0 }));
    special.push(std::array::from_fn(|i| {
        if i < 16 {
            -0.0
        } else {
            0.25 * i as f32
        }
    }));
    special.push([1.5; 32]);
    special.push([-3.25; 32]);
    special.push([1e-20; 32]);
    // The largest magnitude twice with opposite signs: the first one sets the sign of d.
    special.push(std::array::from_fn(|i| match i {
        3 => 5.0,
        10 => -5.0,
        _ => (i as f32 - 16.0) * 0.1,
    }));
    special.push(std::array::from_fn(|i| match i {
        3 => -5.0,
        10 => 5.0,
        _ => (i as f32 - 16.0) * 0.1,
    }));
    // d = 1 exactly for each format, and every other value on a rounding tie.
    special.push(std::array::from_fn(|i| {
        if i == 0 {
            127.0
        } else {
            i as f32 - 15.5
        }
    })); // Q8_0 roundf ties
    special.push(std::array::from_fn(|i| {
        if i == 0 {
            -127.0
        } else {
            15.5 - i as f32
        }
    }));
    special.push(std::array::from_fn(|i| -8.0 + 0.5 * i as f32)); // Q4_0: x + 8.5 integral
    special.push(std::array::from_fn(|i| {
        if i == 0 {
            -16.0
        } else {
            i as f32 - 15.5
        }
    })); // Q5_0
    special.push(std::array::from_fn(|i| match i {
        0 => 0.0,
        1 => 15.0,
        _ => (i % 15) as f32 + 0.5,
    })); // Q4_1: x + 0.5 integral
    special.push(std::array::from_fn(|i| match i {
        0 => 0.0,
        1 => 31.0,
        _ => i as f32 - 1.5,
    })); // Q5_1
         // One outlier among small values; a single non-zero value.
    special.push(std::array::from_fn(|i| {
        if i == 17 {
            -1000.0
        } else {
            1e-3 * i as f32
        }
    }));
    special.push(std::array::from_fn(|i| if i == 31 { 2.0 } else { 0.0 }));
    // Scales at and past f16's limits (finite reciprocals throughout).
    special.push(std::array::from_fn(|i| 8.3e6 * (i as f32 / 31.0 - 0.5))); // Q8_0 d near 65504
    special.push(std::array::from_fn(|i| 3e38 * ((i % 5) as f32 / 4.0))); // d overflows f16
    special.push(std::array::from_fn(|i| 1e-30 * (i as f32 - 10.0))); // d underflows f16
    special.push(std::array::from_fn(|i| 6e-5 * (i as f32 - 16.0))); // d in f16 subnormals
    let special_flat: Vec<f32> = special.iter().flatten().copied().collect();

    // Random rows over sixty decades (1e-30 ... 1e30), one magnitude per row.
    let mut magnitudes = Vec::new();
    for k in -10..=10 {
        let scale = 10f32.powi(3 * k);
        magnitudes.extend((0..64).map(|_| rng.normal() * scale));
    }
    // Typical weights: normal values, a random scale per row.
    let mut normal = Vec::new();
    for _ in 0..64 {
        let scale = 10f32.powf(rng.uniform() as f32 * 12.0 - 6.0);
        normal.extend((0..256).map(|_| rng.normal() * scale));
    }
    // Large enough for the parallel path.
    let big: Vec<f32> = (0..160 * 1024).map(|_| rng.normal() * 0.02).collect();
    // Coarse values: many exact ties of the scaled values.
    let coarse: Vec<f32> = (0..32 * 128)
        .map(|_| (rng.below(33) as f32 - 16.0) * 0.25)
        .collect();

    for ty in quantizable().into_iter().filter(|&t| is_block(t)) {
        let t = ty.name();
        add(format!("{t}/special"), special.len(), special_flat.clone());
        add(format!("{t}/magnitudes"), 21, magnitudes.clone());
        add(format!("{t}/normal"), 64, normal.clone());
        add(format!("{t}/big"), 160, big.clone());
        add(format!("{t}/coarse"), 128, coarse.clone());
        // Blocks whose scale's reciprocal overflows f32 (subnormal values)
        // or whose range overflows f32: numpy casts NaN and infinities to
        // integers there, which x86-64 defines (Kiln follows it) but other
        // CPUs need not.
        if cfg!(target_arch = "x86_64") {
            let mut extreme = Vec::new();
            extreme.extend((0..32).map(|i| 1e-40 * (i as f32 - 7.0)));
            extreme.extend((0..32).map(|i| if i == 5 { 1e-39 } else { 0.0 }));
            extreme.extend((0..32).map(|i| if i % 2 == 0 { 3e38 } else { -3e38 }));
            extreme.extend((0..32).map(|i| if i == 0 { f32::MAX } else { -f32::MAX }));
            add(format!("{t}/extreme"), 4, extreme);
        }
    }

    // Float types: bit patterns across the whole range.
    let bits = |rng: &mut Rng, n: usize, keep_nan: bool| -> Vec<f32> {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let x = f32::from_bits(rng.next() as u32);
            if keep_nan || !x.is_nan() {
                v.push(x);
            }
        }
        v
    };
    add("F32/bits".into(), 4, bits(&mut rng, 4096, true));
    add("BF16/bits".into(), 8, bits(&mut rng, 8192, true));
    // Every rounding tie of bf16: low half exactly 0x8000.
    let ties: Vec<f32> = (0..4096)
        .map(|_| f32::from_bits(((rng.next() as u32) & 0xffff_0000) | 0x8000))
        .collect();
    add("BF16/ties".into(), 4, ties);
    // F16: values over f16's whole range and past it (NaNs left out:
    // numpy's NaN conversion may differ between CPUs).
    let f16_range: Vec<f32> = (0..8192)
        .map(|_| {
            let e = rng.uniform() as f32 * 50.0 - 30.0;
            let s = if rng.below(2) == 0 { 1.0 } else { -1.0 };
            s * 2f32.powf(e)
        })
        .collect();
    add("F16/range".into(), 8, f16_range);
    let f16_ties: Vec<f32> = (0..4096)
        .map(|_| {
            // A half-precision value plus exactly half a unit in the last place.
            let h = half::f16::from_bits((rng.next() as u16) & 0x7bff);
            let x = h.to_f32();
            let ulp = if x.abs() < 6.103_515_6e-5 {
                2f32.powi(-24)
            } else {
                2f32.powi(x.abs().log2().floor() as i32 - 10)
            };
            x + ulp / 2.0
        })
        .collect();
    add("F16/ties".into(), 4, f16_ties);
    let mut f16_bits = bits(&mut rng, 4088, false);
    f16_bits.extend([
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        2f32.powi(-25),
        2f32.powi(-24),
        -0.0,
        f32::INFINITY,
    ]);
    add("F16/bits".into(), 8, f16_bits);
    cases
}

fn save_f32s(path: &Path, cases: &BTreeMap<String, (usize, usize, Vec<f32>)>) {
    let bytes: BTreeMap<&String, Vec<u8>> = cases
        .iter()
        .map(|(n, (_, _, v))| (n, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = cases.iter().map(|(n, (r, c, _))| {
        (
            n.clone(),
            TensorView::new(Dtype::F32, vec![*r, *c], &bytes[n]).unwrap(),
        )
    });
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

#[test]
fn quantizers_match_gguf_package() {
    let Some(python) = python() else {
        eprintln!("reference venv not found (run scripts/setup.sh); skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases = quantizer_cases();
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    save_f32s(&input, &cases);
    run_check(
        &python,
        &["quantize".as_ref(), input.as_os_str(), output.as_os_str()],
    );
    let out_bytes = std::fs::read(&output).unwrap();
    let reference = SafeTensors::deserialize(&out_bytes).unwrap();

    let mut blocks = BTreeMap::<&str, usize>::new();
    for (name, (rows, _, values)) in &cases {
        let ty_name = name.split('/').next().unwrap();
        let ty = *GgmlType::ALL.iter().find(|t| t.name() == ty_name).unwrap();
        let want = reference.tensor(name).unwrap();
        assert_eq!(want.dtype(), Dtype::U8, "{name}");
        assert_eq!(want.shape()[0], *rows, "{name}");
        let got = quantize::quantize(ty, values).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = want.data();
        assert_eq!(got.len(), want.len(), "{name}: byte count");
        let size = ty.type_size().unwrap() as usize;
        let block = ty.block_size().unwrap() as usize;
        for (b, (g, w)) in got.chunks(size).zip(want.chunks(size)).enumerate() {
            assert!(
                g == w,
                "{name}: block {b} differs\n  input {:?}\n  kiln  {g:02x?}\n  numpy {w:02x?}",
                &values[b * block..(b + 1) * block]
            );
        }
        *blocks.entry(ty_name).or_default() += got.len() / size;
    }
    for ty in quantizable() {
        assert!(blocks.contains_key(ty.name()), "{ty} not compared");
    }
    eprintln!("blocks equal to gguf.quants.quantize: {blocks:?}");
}

#[test]
fn code_packers_dequantize_to_scale_times_code() {
    let mut rng = Rng(99);
    let inputs = codes_inputs(&mut rng);

    // Without Python: exact in f64, where `f16(scale) · code` is exact and
    // (for the formats with a minimum) the f32 sum is rounded once.
    for c in &inputs {
        let blocks = c.pack();
        let mut got = vec![0f32; c.codes.len()];
        dequantize_into(c.ty, &blocks, &mut got).unwrap();
        for (i, (&g, &code)) in got.iter().zip(&c.codes).enumerate() {
            let product = f64::from(f16_round(c.scales[i / 32])) * f64::from(code);
            let want = match &c.mins {
                None => product,
                Some(m) => f64::from((product as f32) + f16_round(m[i / 32])),
            };
            assert_eq!(f64::from(g), want, "{}: element {i}", c.ty);
        }
    }

    let Some(python) = python() else {
        eprintln!("reference venv not found (run scripts/setup.sh); skipping the numpy comparison");
        return;
    };
    // numpy's f32(f16(scale)) * code (+ f32(f16(min))), bit for bit.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("codes.safetensors");
    let output = dir.path().join("expected.safetensors");
    let mut store: BTreeMap<String, (Dtype, usize, Vec<u8>)> = BTreeMap::new();
    for c in &inputs {
        let t = c.ty.name();
        let (dtype, codes): (Dtype, Vec<u8>) = if c.codes.iter().any(|&x| x < 0) {
            (Dtype::I8, c.codes.iter().map(|&x| x as i8 as u8).collect())
        } else {
            (Dtype::U8, c.codes.iter().map(|&x| x as u8).collect())
        };
        store.insert(format!("{t}/codes"), (dtype, c.codes.len(), codes));
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        store.insert(
            format!("{t}/scales"),
            (Dtype::F32, c.scales.len(), f32s(&c.scales)),
        );
        if let Some(m) = &c.mins {
            store.insert(format!("{t}/mins"), (Dtype::F32, m.len(), f32s(m)));
        }
    }
    let views = store
        .iter()
        .map(|(n, (dt, len, b))| (n.clone(), TensorView::new(*dt, vec![*len], b).unwrap()));
    safetensors::serialize_to_file(views, &None, &input).unwrap();
    run_check(
        &python,
        &["codes".as_ref(), input.as_os_str(), output.as_os_str()],
    );
    let out_bytes = std::fs::read(&output).unwrap();
    let reference = SafeTensors::deserialize(&out_bytes).unwrap();
    for c in &inputs {
        let want = reference
            .tensor(&format!("{}/expected", c.ty.name()))
            .unwrap();
        let mut got = vec![0f32; c.codes.len()];
        dequantize_into(c.ty, &c.pack(), &mut got).unwrap();
        let want: Vec<u32> = want
            .data()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got.len(), want.len(), "{}", c.ty);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                *w,
                "{}: element {i}: got {g}, numpy {}",
                c.ty,
                f32::from_bits(*w)
            );
        }
    }
}

#[test]
fn real_model_copies_unchanged() {
    let model = kiln_cache().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.exists() {
        eprintln!(
            "{} not found (run scripts/setup.sh); skipping",
            model.display()
        );
        return;
    }
    let src = GgufFile::open(&model).unwrap();
    let mut w = GgufWriter::new();
    // The reader keeps metadata by key; the architecture goes first by convention.
    let arch = src.get("general.architecture").unwrap().clone();
    w.add_meta("general.architecture", arch).unwrap();
    for (k, v) in src.metadata() {
        if k != "general.architecture" {
            w.add_meta(k.clone(), v.clone()).unwrap();
        }
    }
    for t in src.tensors() {
        let bytes = src.tensor_bytes(t).to_vec();
        w.add_tensor(&t.name, &t.ir_dims(), t.ggml_type, bytes)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.gguf");
    let size = w.write(&path).unwrap();
    let copy = GgufFile::open(&path).unwrap();
    assert_eq!(copy.metadata().len(), src.metadata().len());
    for (k, v) in src.metadata() {
        assert!(same_meta(copy.get(k).unwrap(), v), "key '{k}'");
    }
    assert_eq!(copy.tensors().len(), src.tensors().len());
    for (a, b) in src.tensors().iter().zip(copy.tensors()) {
        assert_eq!(
            (&a.name, &a.ggml_dims, a.ggml_type),
            (&b.name, &b.ggml_dims, b.ggml_type)
        );
        // Both files pad every tensor to 32 bytes, so the offsets agree too.
        assert_eq!(a.offset, b.offset, "tensor '{}'", a.name);
        assert!(
            src.tensor_bytes(a) == copy.tensor_bytes(b),
            "tensor '{}' bytes",
            a.name
        );
    }
    // Same header size and tensor layout, so the data sections are the same bytes.
    assert_eq!(copy.data_offset(), src.data_offset());
    assert_eq!(size, std::fs::metadata(&model).unwrap().len());
    let (a, b) = (
        std::fs::read(&model).unwrap(),
        std::fs::read(&path).unwrap(),
    );
    let start = src.data_offset() as usize;
    assert!(a[start..] == b[start..], "data sections differ");
    eprintln!(
        "copied {} keys and {} tensors: {size} bytes (source {} bytes)",
        src.metadata().len(),
        src.tensors().len(),
        std::fs::metadata(&model).unwrap().len()
    );
}
