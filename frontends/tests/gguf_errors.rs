//! GGUF reader on broken files: truncation at every length, bad magic and
//! versions, bad types, misaligned and out-of-bounds data, malformed
//! metadata, and random corruption. Every case must be an error whose
//! message names the file and the problem; none may panic.
//!
//! Files are assembled byte by byte here (format as in ggml's gguf.cpp), so
//! these tests need no Python.

mod gguf_common;

use kiln_frontends::gguf::{dequantize_into, GgmlType, GgufError, GgufFile};
use std::path::{Path, PathBuf};

/// Builds GGUF files field by field.
struct Builder {
    version: u32,
    alignment: usize,
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

fn gguf_str(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

impl Builder {
    fn new() -> Self {
        Builder {
            version: 3,
            alignment: 32,
            kv: Vec::new(),
            n_kv: 0,
            infos: Vec::new(),
            n_tensors: 0,
            data: Vec::new(),
        }
    }

    /// Adds a key with GGUF value type `ty` and the encoded value bytes.
    fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        self.kv.extend(gguf_str(key.as_bytes()));
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.n_kv += 1;
        self
    }

    /// Adds a tensor info with an explicit offset (no data is added).
    fn info(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        self.infos.extend(gguf_str(name.as_bytes()));
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }

    /// Adds a tensor and its data at the next aligned offset.
    fn tensor(self, name: &str, dims: &[u64], ty: GgmlType, data: &[u8]) -> Self {
        let offset = self.data.len().next_multiple_of(self.alignment);
        let mut b = self.info(name, dims, ty.id(), offset as u64);
        b.data.resize(offset, 0);
        b.data.extend_from_slice(data);
        b
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend(self.version.to_le_bytes());
        v.extend(self.n_tensors.to_le_bytes());
        v.extend(self.n_kv.to_le_bytes());
        v.extend_from_slice(&self.kv);
        v.extend_from_slice(&self.infos);
        v.resize(v.len().next_multiple_of(self.alignment), 0);
        v.extend_from_slice(&self.data);
        v
    }
}

/// A small valid file: metadata of several types (a string array among
/// them) and Q8_0, F16 and F32 tensors.
fn valid() -> Builder {
    let mut q8 = vec![0u8; 2 * 34];
    for (i, b) in q8.iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    // Scale 1.0 (f16 0x3c00) in both blocks.
    q8[0..2].copy_from_slice(&0x3c00u16.to_le_bytes());
    q8[34..36].copy_from_slice(&0x3c00u16.to_le_bytes());
    let mut tokens = 8u32.to_le_bytes().to_vec();
    tokens.extend(3u64.to_le_bytes());
    for t in ["a", "bc", "<s>"] {
        tokens.extend(gguf_str(t.as_bytes()));
    }
    Builder::new()
        .kv("general.architecture", 8, &gguf_str(b"llama"))
        .kv("llama.block_count", 4, &2u32.to_le_bytes())
        .kv("llama.rope.freq_base", 6, &10000f32.to_le_bytes())
        .kv("tokenizer.ggml.tokens", 9, &tokens)
        .tensor("q8", &[32, 2], GgmlType::Q8_0, &q8)
        .tensor("h", &[3], GgmlType::F16, &[0, 0x3c, 0, 0xc0, 0, 0x7c])
        .tensor("f", &[2], GgmlType::F32, &[0, 0, 0x80, 0x3f, 0, 0, 0, 0x40])
}

struct Tmp {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn write(bytes: &[u8]) -> Tmp {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    Tmp { _dir: dir, path }
}

/// Opens `bytes` as a file; returns the error and its message.
fn open_err(bytes: &[u8]) -> (GgufError, String) {
    let tmp = write(bytes);
    match GgufFile::open(&tmp.path) {
        Ok(_) => panic!("opening succeeded; expected an error"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&tmp.path.display().to_string()),
                "message does not name the file: {msg}"
            );
            (e, msg)
        }
    }
}

fn open_ok(bytes: &[u8]) -> (Tmp, GgufFile) {
    let tmp = write(bytes);
    let f = GgufFile::open(&tmp.path).unwrap_or_else(|e| panic!("{e}"));
    (tmp, f)
}

#[test]
fn the_valid_file_reads() {
    let (_tmp, f) = open_ok(&valid().bytes());
    assert_eq!(f.version(), 3);
    assert_eq!(f.require_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.require_u64("llama.block_count").unwrap(), 2);
    assert_eq!(f.require_f64("llama.rope.freq_base").unwrap(), 10000.0);
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["q8", "h", "f"]);
    assert_eq!(f.tensor_info("q8").unwrap().ir_dims(), vec![2, 32]);
    // Values follow from the bytes written above: q · 1.0, and f16/f32 constants.
    let q8 = f.dequantize("q8").unwrap().to_vec::<f32>().unwrap();
    let want: Vec<f32> = (0..64)
        .map(|i| {
            let (block, j) = (i / 32, i % 32);
            f32::from(((block * 34 + 2 + j) * 7) as u8 as i8)
        })
        .collect();
    assert_eq!(q8, want);
    let h = f.dequantize("h").unwrap().to_vec::<f32>().unwrap();
    assert_eq!(h, [1.0, -2.0, f32::INFINITY]);
    assert_eq!(
        f.dequantize("f").unwrap().to_vec::<f32>().unwrap(),
        [1.0, 2.0]
    );
}

#[test]
fn every_truncation_is_an_error() {
    let full = valid().bytes();
    let header_end = full.len() - valid().data.len();
    for len in 0..full.len() {
        let (e, msg) = open_err(&full[..len]);
        match e {
            GgufError::BadMagic { .. } => assert!(len < 4, "{len}: {msg}"),
            GgufError::Truncated { .. } => {
                assert!(len < header_end, "{len}: {msg}");
                assert!(msg.contains("file is truncated"), "{msg}");
            }
            GgufError::OutOfBounds { .. } => {
                assert!(len >= header_end - 32, "{len}: {msg}");
                assert!(msg.contains("lies outside the file"), "{msg}");
            }
            other => panic!("truncated at {len}: unexpected error {other}"),
        }
    }
    // The messages name what was being read.
    let (_, msg) = open_err(&full[..60]);
    assert!(msg.contains("metadata key 'general.architecture'"), "{msg}");
    let (_, msg) = open_err(&full[..full.len() - 1]);
    assert!(msg.contains("tensor 'f'"), "{msg}");
}

#[test]
fn real_model_truncated_is_an_error() {
    let model = gguf_common::kiln_cache().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let Ok(bytes) = std::fs::read(&model) else {
        eprintln!("{} not found; skipping", model.display());
        return;
    };
    for len in [
        3,
        10,
        23,
        24,
        1000,
        100_000,
        1_000_000,
        1_785_000,
        1_785_700,
        50_000_000,
        bytes.len() - 1,
    ] {
        let (e, msg) = open_err(&bytes[..len]);
        assert!(
            matches!(
                e,
                GgufError::BadMagic { .. }
                    | GgufError::Truncated { .. }
                    | GgufError::OutOfBounds { .. }
            ),
            "{len}: {msg}"
        );
        eprintln!("{len}: {msg}");
    }
}

#[test]
fn bad_magic_and_versions() {
    let (e, msg) = open_err(b"");
    assert!(matches!(e, GgufError::BadMagic { .. }), "{msg}");
    let mut bytes = valid().bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let (_, msg) = open_err(&bytes);
    assert!(
        msg.contains("not a GGUF file (expected magic \"GGUF\", found [47, 47, 4d, 4c])"),
        "{msg}"
    );

    let mut b = valid();
    b.version = 1;
    let (_, msg) = open_err(&b.bytes());
    assert!(msg.contains("unsupported GGUF version 1"), "{msg}");
    b.version = 4;
    let (_, msg) = open_err(&b.bytes());
    assert!(
        msg.contains("unsupported GGUF version 4 (Kiln reads little-endian versions 2 and 3)"),
        "{msg}"
    );
    b.version = 3u32.swap_bytes();
    let (_, msg) = open_err(&b.bytes());
    assert!(msg.contains("big-endian"), "{msg}");
}

#[test]
fn tensor_types() {
    // Known but not dequantizable: opens, and dequantize names tensor and type.
    let (tmp, f) = open_ok(
        &Builder::new()
            .tensor("iq", &[256], GgmlType::IQ2_XXS, &[0; 66])
            .bytes(),
    );
    let msg = f.dequantize("iq").unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: tensor 'iq' has type IQ2_XXS, which Kiln cannot dequantize (supported: \
             F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
            tmp.path.display()
        )
    );
    let msg = f.dequantize("nope").unwrap_err().to_string();
    assert!(msg.ends_with("no tensor named 'nope'"), "{msg}");

    // Unknown and retired ids fail at open.
    for id in [99u32, 4] {
        let (e, msg) = open_err(&Builder::new().info("w", &[32], id, 0).bytes());
        assert!(matches!(e, GgufError::UnknownType { .. }), "{msg}");
        assert!(
            msg.contains(&format!("tensor 'w': unknown ggml type id {id}")),
            "{msg}"
        );
    }

    // Row length not a whole number of blocks.
    let (_, msg) = open_err(
        &Builder::new()
            .tensor("w", &[33, 1], GgmlType::Q4_0, &[0; 36])
            .bytes(),
    );
    assert!(
        msg.contains("tensor 'w': row length 33 is not a multiple of the Q4_0 block size 32"),
        "{msg}"
    );
}

#[test]
fn placement_of_tensor_data() {
    let (e, msg) = open_err(
        &Builder::new()
            .info("w", &[4], GgmlType::F32.id(), 8)
            .bytes(),
    );
    assert!(matches!(e, GgufError::Misaligned { .. }), "{msg}");
    assert!(
        msg.contains("tensor 'w': data offset 8 is not a multiple of the alignment 32"),
        "{msg}"
    );

    let (_, msg) = open_err(
        &Builder::new()
            .info("w", &[4], GgmlType::F32.id(), 64)
            .bytes(),
    );
    assert!(
        msg.contains("tensor 'w': data [") && msg.contains("lies outside the file"),
        "{msg}"
    );

    // An offset near u64::MAX must not wrap around.
    let (e, msg) = open_err(
        &Builder::new()
            .info("w", &[4], GgmlType::F32.id(), u64::MAX - 31)
            .bytes(),
    );
    assert!(matches!(e, GgufError::OutOfBounds { .. }), "{msg}");

    // Dimensions whose product overflows.
    let (_, msg) = open_err(&Builder::new().info("w", &[1 << 40, 1 << 40], 0, 0).bytes());
    assert!(
        msg.contains("tensor 'w'") && msg.contains("more elements"),
        "{msg}"
    );

    let (_, msg) = open_err(&Builder::new().info("w", &[1, 1, 1, 1, 1], 0, 0).bytes());
    assert!(
        msg.contains("5 dimensions (GGUF allows at most 4)"),
        "{msg}"
    );

    let dup = Builder::new()
        .tensor("w", &[1], GgmlType::F32, &[0; 4])
        .tensor("w", &[1], GgmlType::F32, &[0; 4]);
    let (_, msg) = open_err(&dup.bytes());
    assert!(msg.contains("tensor 'w': the name appears twice"), "{msg}");
}

#[test]
fn alignment_key() {
    let mut b = Builder::new().kv("general.alignment", 4, &64u32.to_le_bytes());
    b.alignment = 64;
    let b = b.tensor("a", &[1], GgmlType::F32, &[0; 4]).tensor(
        "b",
        &[1],
        GgmlType::F32,
        &[0, 0, 0x80, 0x3f],
    );
    let (_tmp, f) = open_ok(&b.bytes());
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.tensor_info("b").unwrap().offset, 64);
    assert_eq!(f.dequantize("b").unwrap().to_vec::<f32>().unwrap(), [1.0]);

    let (e, msg) = open_err(
        &Builder::new()
            .kv("general.alignment", 4, &48u32.to_le_bytes())
            .bytes(),
    );
    assert!(matches!(e, GgufError::BadAlignment { .. }), "{msg}");
    assert!(msg.contains("48 is not a power of two"), "{msg}");
    let (_, msg) = open_err(
        &Builder::new()
            .kv("general.alignment", 10, &64u64.to_le_bytes())
            .bytes(),
    );
    assert!(
        msg.contains("'general.alignment': holds a u64 (expected a u32 power of two)"),
        "{msg}"
    );
}

#[test]
fn malformed_metadata() {
    let (_, msg) = open_err(&Builder::new().kv("k", 13, &[0; 8]).bytes());
    assert!(
        msg.contains("metadata key 'k'") && msg.contains("unknown value type 13"),
        "{msg}"
    );

    let (_, msg) = open_err(&Builder::new().kv("k", 8, &gguf_str(&[0xff, 0xfe])).bytes());
    assert!(
        msg.contains("metadata key 'k'") && msg.contains("not valid UTF-8"),
        "{msg}"
    );

    let dup = Builder::new().kv("k", 0, &[1]).kv("k", 0, &[2]);
    let (_, msg) = open_err(&dup.bytes());
    assert!(
        msg.contains("metadata key 'k': the key appears twice"),
        "{msg}"
    );

    // An array claiming 2^60 strings fails before allocating for them.
    let mut arr = 8u32.to_le_bytes().to_vec();
    arr.extend((1u64 << 60).to_le_bytes());
    let (e, msg) = open_err(&Builder::new().kv("k", 9, &arr).bytes());
    assert!(matches!(e, GgufError::Truncated { .. }), "{msg}");

    // A bad element deep inside an array is located.
    let mut arr = 8u32.to_le_bytes().to_vec();
    arr.extend(3u64.to_le_bytes());
    arr.extend(gguf_str(b"ok"));
    arr.extend(gguf_str(b"ok"));
    arr.extend(gguf_str(&[0xc3]));
    let (_, msg) = open_err(&Builder::new().kv("toks", 9, &arr).bytes());
    assert!(
        msg.contains("metadata key 'toks' (array element 2)"),
        "{msg}"
    );

    // Arrays of arrays nested without end are cut off, not recursed into.
    let mut nested = Vec::new();
    for _ in 0..10_000 {
        nested.extend(9u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
    }
    let (_, msg) = open_err(&Builder::new().kv("deep", 9, &nested).bytes());
    assert!(msg.contains("arrays nested more than 8 deep"), "{msg}");
}

#[test]
fn metadata_accessor_errors() {
    let (tmp, f) = open_ok(&valid().bytes());
    let msg = f.require_u64("missing.key").unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: metadata key 'missing.key' is missing",
            tmp.path.display()
        )
    );
    let msg = f
        .require_u64("general.architecture")
        .unwrap_err()
        .to_string();
    assert!(
        msg.ends_with("'general.architecture' holds string, expected a non-negative integer"),
        "{msg}"
    );
}

#[test]
fn dequantize_into_checks_sizes() {
    let mut out = [0f32; 32];
    let e = dequantize_into(GgmlType::Q4_0, &[0; 17], &mut out).unwrap_err();
    assert!(
        e.to_string()
            .contains("32 elements need 18 bytes (1 blocks of 18), got 17"),
        "{e}"
    );
    let e = dequantize_into(GgmlType::Q4_0, &[0; 18], &mut out[..31]).unwrap_err();
    assert!(
        e.to_string()
            .contains("not a whole number of 32-element blocks"),
        "{e}"
    );
    let e = dequantize_into(GgmlType::IQ2_XXS, &[0; 66], &mut [0f32; 256]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot dequantize type IQ2_XXS (supported: F32,"),
        "{e}"
    );
    let e = dequantize_into(GgmlType::Unknown(77), &[], &mut []).unwrap_err();
    assert!(e.to_string().contains("unknown type 77"), "{e}");
}

/// Deterministic xorshift, so a failure reproduces.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_corruption_never_panics() {
    let full = valid().bytes();
    let header_end = full.len() - valid().data.len();
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("fuzz.gguf");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let (mut ok, mut err) = (0, 0);
    for _ in 0..3000 {
        let mut bytes = full.clone();
        for _ in 0..1 + xorshift(&mut state) % 4 {
            let i = (xorshift(&mut state) % header_end as u64) as usize;
            bytes[i] = xorshift(&mut state) as u8;
        }
        std::fs::write(path, &bytes).unwrap();
        match GgufFile::open(path) {
            Ok(f) => {
                ok += 1;
                for t in f.tensors() {
                    let _ = f.dequantize(&t.name);
                }
            }
            Err(e) => {
                err += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    eprintln!("corrupted headers: {ok} still valid, {err} rejected");
    assert!(err > 0 && ok > 0);
}
