//! Bundle format v1: the writer (`kiln_targets::bundle`) and the reader
//! (`kiln_runtime::bundle`) against each other, and the reader against
//! damaged files.

use kiln_ir::{text, DType, Graph, Node, Op, Shape, Tensor, ValueType};
use kiln_runtime::bundle::{is_bundle, Bundle, ALIGNMENT};
use kiln_targets::bundle::{sha256_file, write_bundle, BundleInfo, BundleWriteError, WriteReport};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A small graph with two external weights (f32 and i64) and one inline
/// constant: y = gather(x · w + b, idx, axis 1).
fn small_graph() -> Graph {
    let mut g = Graph::new("small");
    g.metadata.insert("producer".into(), "bundle test".into());
    let x = g.add_value("x", ValueType::new(DType::F32, Shape::fixed(&[2, 4])));
    g.inputs.push(x);
    let w_data: Vec<f32> = (0..20).map(|i| i as f32 * 0.25 - 2.0).collect();
    let w = g.add_constant("w", Tensor::from_vec(vec![4, 5], w_data).unwrap());
    let b = g.add_constant(
        "b",
        Tensor::from_vec(vec![5], vec![0.5f32, -1.0, 2.0, 0.0, 1.5]).unwrap(),
    );
    let idx_data: Vec<i64> = (0..20).map(|i| i % 5).collect();
    let idx = g.add_constant("idx", Tensor::from_vec(vec![20], idx_data).unwrap());
    let y = g.add_value("y", ValueType::new(DType::F32, Shape::fixed(&[2, 5])));
    let z = g.add_value("z", ValueType::new(DType::F32, Shape::fixed(&[2, 5])));
    let out = g.add_value("out", ValueType::new(DType::F32, Shape::fixed(&[2, 20])));
    g.add_node(Node {
        name: "proj".into(),
        op: Op::MatMul,
        inputs: vec![Some(x), Some(w)],
        outputs: vec![y],
    });
    g.add_node(Node {
        name: String::new(),
        op: Op::Add,
        inputs: vec![Some(y), Some(b)],
        outputs: vec![z],
    });
    g.add_node(Node {
        name: "pick".into(),
        op: Op::Gather { axis: 1 },
        inputs: vec![Some(z), Some(idx)],
        outputs: vec![out],
    });
    g.outputs.push(out);
    g
}

fn small_info() -> BundleInfo {
    let mut options = BTreeMap::new();
    options.insert("pipeline".to_string(), serde_json::json!("default"));
    options.insert("passes".to_string(), serde_json::json!(["fold", "dce"]));
    options.insert(
        "stats".to_string(),
        serde_json::json!({"nodes_before": 4, "nodes_after": 3}),
    );
    BundleInfo {
        target: "cpu".into(),
        source_name: "small.onnx".into(),
        source_sha256: "ab".repeat(32),
        options,
    }
}

fn write_small(dir: &Path, name: &str) -> (PathBuf, WriteReport) {
    let path = dir.join(name);
    let report = write_bundle(&path, &small_graph(), &small_info()).unwrap();
    (path, report)
}

/// The error message of opening `path`, which must fail.
fn open_err(path: &Path) -> String {
    match Bundle::open(path) {
        Ok(_) => panic!("opening {} should fail", path.display()),
        Err(e) => e.to_string(),
    }
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

/// Entries of `dir`, to check that nothing was left behind.
fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_keeps_graph_and_maps_weights() {
    let dir = tempfile::tempdir().unwrap();
    let g = small_graph();
    let (path, report) = write_small(dir.path(), "small.kiln");

    assert!(is_bundle(&path));
    let bundle = Bundle::open(&path).unwrap();
    assert_eq!(bundle.file_size(), std::fs::metadata(&path).unwrap().len());
    assert_eq!(report.file_size, bundle.file_size());
    assert_eq!(report.sha256, sha256_file(&path).unwrap());
    assert_eq!(report.weight_count, 2);
    assert_eq!(report.weights_bytes, 20 * 4 + 20 * 8);

    let read = bundle.graph();
    assert_eq!(text::print(read), text::print(&g));
    for (&id, t) in &g.constants {
        let name = &g.value(id).name;
        let rid = read.find_value(name).unwrap();
        let rt = read.constant(rid).unwrap();
        assert!(rt.same_as(t), "constant {name} differs");
        if t.len() > text::INLINE_LIMIT {
            assert!(rt.storage().is_mapped(), "weight {name} should be mapped");
            assert_eq!(
                rt.bytes().as_ptr() as usize % ALIGNMENT as usize,
                0,
                "weight {name} misaligned"
            );
        } else {
            assert!(
                !rt.storage().is_mapped(),
                "inline constant {name} should be owned"
            );
        }
    }
    // Zero-copy typed views work because the mapping is aligned.
    let w = read.constant(read.find_value("w").unwrap()).unwrap();
    assert!(w.as_slice::<f32>().unwrap().is_some());

    let m = bundle.manifest();
    assert_eq!(m.format_version, 1);
    assert_eq!(m.target, "cpu");
    assert_eq!(m.source.name, "small.onnx");
    assert_eq!(m.summary.node_count, 3);
    assert_eq!(m.summary.inputs[0].shape, "[2,4]");

    // The graph outlives the bundle: the weights keep the mapping alive.
    let owned = bundle.into_graph();
    assert_eq!(text::print(&owned), text::print(&g));
}

#[test]
fn writing_twice_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ra) = write_small(dir.path(), "a.kiln");
    // A second write from another thread: nothing in the layout may depend
    // on which thread or run produced it.
    let dir_b = dir.path().to_path_buf();
    let (b, rb) = std::thread::spawn(move || write_small(&dir_b, "b.kiln"))
        .join()
        .unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ra, rb);
}

#[test]
fn manifest_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_small(dir.path(), "small.kiln");
    let bundle = Bundle::open(&path).unwrap();
    let m = bundle.manifest();

    // Structure first, so a snapshot update cannot hide a layout bug.
    assert_eq!(m.weights.tensors.len(), 2);
    let names: Vec<&str> = m.weights.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["idx", "w"]);
    assert_eq!(m.graph.offset % ALIGNMENT, 0);
    assert_eq!(m.weights.offset % ALIGNMENT, 0);
    for t in &m.weights.tensors {
        assert_eq!(t.offset % ALIGNMENT, 0, "{} misaligned", t.name);
        assert!(t.offset >= m.weights.offset);
        assert!(t.offset + t.length <= m.weights.offset + m.weights.length);
    }
    assert_eq!(m.weights.offset + m.weights.length, bundle.file_size());

    // The JSON exactly as stored (length at byte 12, JSON from byte 52),
    // with the crate version masked so a version bump does not churn the
    // snapshot.
    let bytes = std::fs::read(&path).unwrap();
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    let json = String::from_utf8(bytes[52..52 + len].to_vec()).unwrap();
    assert_eq!(json, serde_json::to_string_pretty(m).unwrap());
    let json = json.replace(
        &format!(
            "\"kiln_version\": \"{}\"",
            kiln_targets::bundle::KILN_VERSION
        ),
        "\"kiln_version\": \"[version]\"",
    );
    insta::assert_snapshot!(json);
}

#[test]
fn corrupted_weights_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_small(dir.path(), "small.kiln");
    let m = Bundle::open(&path).unwrap().manifest().clone();
    let w = m.weights.tensors.iter().find(|t| t.name == "w").unwrap();
    flip_byte(&path, w.offset + 5);
    let e = open_err(&path);
    assert!(e.contains("weights") && e.contains("checksum"), "{e}");
    assert!(e.contains("corrupted"), "{e}");
    assert!(e.contains("damaged weights: w"), "{e}");
    assert!(e.contains(&path.display().to_string()), "{e}");
}

#[test]
fn corrupted_graph_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_small(dir.path(), "small.kiln");
    let m = Bundle::open(&path).unwrap().manifest().clone();
    flip_byte(&path, m.graph.offset + m.graph.length / 2);
    let e = open_err(&path);
    assert!(
        e.contains("section `graph`") && e.contains("checksum"),
        "{e}"
    );
}

#[test]
fn corrupted_manifest_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_small(dir.path(), "small.kiln");
    flip_byte(&path, 60);
    let e = open_err(&path);
    assert!(e.contains("manifest") && e.contains("checksum"), "{e}");
}

#[test]
fn truncated_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (path, report) = write_small(dir.path(), "small.kiln");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = open_err(&path);
    assert!(e.contains("truncated"), "{e}");
    assert!(
        e.contains(&format!("ends at byte {}", report.file_size))
            && e.contains(&format!("has {} bytes", report.file_size - 100)),
        "{e}"
    );
    // Cut inside the manifest, and inside the header.
    std::fs::write(&path, &bytes[..100]).unwrap();
    assert!(open_err(&path).contains("truncated: the manifest"));
    std::fs::write(&path, &bytes[..20]).unwrap();
    assert!(open_err(&path).contains("truncated: the header"));
}

#[test]
fn wrong_magic_is_not_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_small(dir.path(), "small.kiln");
    flip_byte(&path, 0);
    assert!(!is_bundle(&path));
    assert!(open_err(&path).contains("not a Kiln bundle"));

    let onnx = dir.path().join("model.onnx");
    std::fs::write(&onnx, b"\x08\x07\x12\x04kiln").unwrap();
    assert!(!is_bundle(&onnx));
    assert!(open_err(&onnx).contains("not a Kiln bundle"));
    let empty = dir.path().join("empty.kiln");
    std::fs::write(&empty, b"").unwrap();
    assert!(!is_bundle(&empty));
    assert!(open_err(&empty).contains("not a Kiln bundle"));
    assert!(!is_bundle(dir.path().join("missing.kiln")));
}

#[test]
fn future_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_small(dir.path(), "small.kiln");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = open_err(&path);
    assert!(
        e.contains("bundle format version 2 is newer than this runtime supports (1); rebuild it with a matching kiln"),
        "{e}"
    );
    // A version bump must be reported as such even if the rest of the file
    // no longer looks like v1.
    std::fs::write(&path, [&bytes[..12], b"future"].concat()).unwrap();
    assert!(open_err(&path).contains("newer than this runtime supports"));
}

#[test]
fn missing_directory_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("no")
        .join("such")
        .join("dir")
        .join("model.kiln");
    let e = write_bundle(&path, &small_graph(), &small_info()).unwrap_err();
    assert!(matches!(e, BundleWriteError::Write { .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(!path.exists());
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn failed_rename_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // A directory at the destination: everything is written, then the
    // rename fails.
    let path = dir.path().join("taken.kiln");
    std::fs::create_dir(&path).unwrap();
    let e = write_bundle(&path, &small_graph(), &small_info()).unwrap_err();
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(path.is_dir());
    assert_eq!(dir_entries(dir.path()), ["taken.kiln"]);
}

#[test]
fn rewriting_replaces_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_small(dir.path(), "model.kiln");
    let old = Bundle::open(&path).unwrap();
    let old_w = old
        .graph()
        .constant(old.graph().find_value("w").unwrap())
        .unwrap()
        .clone();
    let old_bytes = old_w.bytes().to_vec();

    let mut g = small_graph();
    let wid = g.find_value("w").unwrap();
    g.constants
        .insert(wid, Tensor::from_vec(vec![4, 5], vec![7.0f32; 20]).unwrap());
    write_bundle(&path, &g, &small_info()).unwrap();
    assert_eq!(dir_entries(dir.path()), ["model.kiln"]);

    // The open bundle still sees its own file; a new open sees the new one.
    assert_eq!(old_w.bytes(), &old_bytes[..]);
    let new = Bundle::open(&path).unwrap();
    let new_w = new
        .graph()
        .constant(new.graph().find_value("w").unwrap())
        .unwrap();
    assert_eq!(new_w.to_vec::<f32>().unwrap(), vec![7.0f32; 20]);
}

#[test]
fn graph_without_external_weights_round_trips() {
    let mut g = Graph::new("tiny");
    let x = g.add_value("x", ValueType::new(DType::F32, Shape::fixed(&[3])));
    let c = g.add_constant(
        "c",
        Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap(),
    );
    let y = g.add_value("y", ValueType::new(DType::F32, Shape::fixed(&[3])));
    g.inputs.push(x);
    g.add_node(Node {
        name: String::new(),
        op: Op::Mul,
        inputs: vec![Some(x), Some(c)],
        outputs: vec![y],
    });
    g.outputs.push(y);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.kiln");
    let report = write_bundle(&path, &g, &BundleInfo::default()).unwrap();
    assert_eq!(report.weight_count, 0);
    let bundle = Bundle::open(&path).unwrap();
    assert_eq!(text::print(bundle.graph()), text::print(&g));
    assert!(bundle.manifest().weights.tensors.is_empty());
}

#[test]
fn source_info_records_the_file_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model.onnx");
    std::fs::write(&src, b"abc").unwrap();
    let info = BundleInfo::for_source("cpu", &src).unwrap();
    assert_eq!(info.source_name, "model.onnx");
    assert_eq!(
        info.source_sha256,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    // A full path given by hand is still reduced to the file name.
    let info = BundleInfo {
        source_name: src.display().to_string(),
        ..small_info()
    };
    let path = dir.path().join("m.kiln");
    write_bundle(&path, &small_graph(), &info).unwrap();
    assert_eq!(
        Bundle::open(&path).unwrap().manifest().source.name,
        "model.onnx"
    );

    let e = sha256_file(&dir.path().join("missing.onnx")).unwrap_err();
    assert!(e.to_string().contains("missing.onnx"), "{e}");
}

/// Every single-byte corruption and every truncation is an error, never a
/// panic and never a silently different graph.
#[test]
fn every_damage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_small(dir.path(), "small.kiln");
    let bytes = std::fs::read(&path).unwrap();
    let damaged = dir.path().join("damaged.kiln");
    for at in 0..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        std::fs::write(&damaged, &b).unwrap();
        assert!(
            Bundle::open(&damaged).is_err(),
            "flipping byte {at} went unnoticed"
        );
    }
    for len in 0..bytes.len() {
        std::fs::write(&damaged, &bytes[..len]).unwrap();
        assert!(
            Bundle::open(&damaged).is_err(),
            "truncating to {len} bytes went unnoticed"
        );
    }
    std::fs::write(&damaged, [&bytes[..], b"\0"].concat()).unwrap();
    assert!(open_err(&damaged).contains("after section `weights`"));
}
