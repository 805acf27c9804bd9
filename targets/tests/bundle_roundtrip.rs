//! Bundle format version 2: the writer (`kiln_targets::bundle`) and the
//! reader (`kiln_runtime::bundle`) against each other, the reader against
//! damaged files and version 1 files, and the source hash.

use kiln_ir::{text, DType, Graph, Node, Op, Shape, Tensor, ValueType};
use kiln_runtime::bundle::{is_bundle, Bundle, ALIGNMENT};
use kiln_targets::bundle::{
    sha256_file, sha256_source, write_bundle, BundleInfo, BundleWriteError, WriteReport,
};
use sha2::{Digest, Sha256};
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
        assets: BTreeMap::new(),
    }
}

fn write_small(dir: &Path, name: &str) -> (PathBuf, WriteReport) {
    let path = dir.join(name);
    let report = write_bundle(&path, &small_graph(), &small_info()).unwrap();
    (path, report)
}

/// Two assets of lengths that are not multiples of 64, so the padding
/// between and after them is exercised; the nested one sorts first.
fn two_assets() -> BTreeMap<String, Vec<u8>> {
    let mut assets = BTreeMap::new();
    assets.insert(
        "tokenizer.json".to_string(),
        br#"{"version":"1.0","model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2}}}"#.to_vec(),
    );
    assets.insert(
        "1_Pooling/config.json".to_string(),
        br#"{"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}"#.to_vec(),
    );
    assets
}

fn assets_info() -> BundleInfo {
    BundleInfo {
        assets: two_assets(),
        ..small_info()
    }
}

fn write_with_assets(dir: &Path, name: &str) -> (PathBuf, WriteReport) {
    let path = dir.join(name);
    let report = write_bundle(&path, &small_graph(), &assets_info()).unwrap();
    (path, report)
}

/// Rewrites the manifest of the bundle at `path` with `edit` (which must
/// keep its length, so no offset moves) and fixes the header's checksum:
/// a file that is well-formed except for what the edit changed.
fn patch_manifest(path: &Path, edit: impl FnOnce(&str) -> String) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    let json = std::str::from_utf8(&bytes[52..52 + len]).unwrap();
    let edited = edit(json);
    assert_eq!(
        edited.len(),
        len,
        "the edit must keep the manifest's length"
    );
    assert_ne!(edited, json, "the edit changed nothing");
    bytes[52..52 + len].copy_from_slice(edited.as_bytes());
    let sha = Sha256::digest(edited.as_bytes());
    bytes[20..52].copy_from_slice(&sha);
    std::fs::write(path, bytes).unwrap();
}

/// Makes the bundle at `path` a version 1 file: header and manifest.
fn set_version_1(path: &Path) {
    patch_manifest(path, |j| {
        j.replacen("\"format_version\": 2,", "\"format_version\": 1,", 1)
    });
    let mut bytes = std::fs::read(path).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
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
    assert_eq!(m.format_version, 2);
    assert!(m.assets.is_none());
    assert!(bundle.asset_names().is_empty());
    assert_eq!(report.assets_bytes, 0);
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
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = open_err(&path);
    assert!(
        e.contains("bundle format version 3 is newer than this runtime supports (2); rebuild it with a matching kiln"),
        "{e}"
    );
    // A version bump must be reported as such even if the rest of the file
    // no longer looks like version 2.
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

    // Without weights the assets follow the graph section directly.
    let info = BundleInfo {
        assets: two_assets(),
        ..BundleInfo::default()
    };
    let report = write_bundle(&path, &g, &info).unwrap();
    let bundle = Bundle::open(&path).unwrap();
    let m = bundle.manifest();
    let a = m.assets.as_ref().unwrap();
    assert_eq!(m.weights.length, 0);
    assert_eq!(a.offset, m.weights.offset);
    assert_eq!(a.offset + a.length, report.file_size);
    for (name, bytes) in two_assets() {
        assert_eq!(bundle.asset(&name), Some(&bytes[..]), "{name}");
    }
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
/// panic and never a silently different graph or asset.
#[test]
fn every_damage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_small(dir.path(), "small.kiln");
    every_damage_is_an_error_in(&path, "weights");
    let (path, _) = write_with_assets(dir.path(), "assets.kiln");
    every_damage_is_an_error_in(&path, "assets");
    // A version 1 file is checked just as fully.
    let (path, _) = write_small(dir.path(), "v1.kiln");
    set_version_1(&path);
    every_damage_is_an_error_in(&path, "weights");
}

/// Flips each byte of the bundle at `path`, truncates it at each length and
/// appends a byte, checking that every result is refused; `last` is the
/// section the file ends with.
fn every_damage_is_an_error_in(path: &Path, last: &str) {
    Bundle::open(path).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let damaged = path.with_extension("damaged");
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
    let e = open_err(&damaged);
    assert!(e.contains(&format!("after section `{last}`")), "{e}");
}

#[test]
fn assets_round_trip_as_slices_of_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let (path, report) = write_with_assets(dir.path(), "assets.kiln");
    let bundle = Bundle::open(&path).unwrap();
    let assets = two_assets();

    assert_eq!(
        bundle.asset_names(),
        ["1_Pooling/config.json", "tokenizer.json"]
    );
    for (name, bytes) in &assets {
        let got = bundle.asset(name).unwrap();
        assert_eq!(got, &bytes[..], "{name}");
        assert_eq!(got.as_ptr() as usize % ALIGNMENT as usize, 0, "{name}");
    }
    assert_eq!(bundle.asset("config.json"), None);
    assert_eq!(bundle.asset(""), None);
    assert_eq!(
        report.assets_bytes,
        assets.values().map(|b| b.len() as u64).sum::<u64>()
    );
    assert_eq!(report.file_size, bundle.file_size());
    assert_eq!(report.sha256, sha256_file(&path).unwrap());

    // Layout: after the weights at the next multiple of 64, sorted by name,
    // aligned, and the file ends with the last asset.
    let m = bundle.manifest();
    assert_eq!(m.format_version, 2);
    let a = m.assets.as_ref().unwrap();
    let weights_end = m.weights.offset + m.weights.length;
    assert_eq!(a.offset, weights_end.div_ceil(ALIGNMENT) * ALIGNMENT);
    assert_eq!(a.files[0].offset, a.offset);
    let last = a.files.last().unwrap();
    assert_eq!(last.offset + last.length, a.offset + a.length);
    assert_eq!(a.offset + a.length, bundle.file_size());
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes[weights_end as usize..a.offset as usize]
        .iter()
        .all(|&b| b == 0));
    for f in &a.files {
        assert_eq!(f.offset % ALIGNMENT, 0, "{} misaligned", f.name);
        let data = &bytes[f.offset as usize..(f.offset + f.length) as usize];
        assert_eq!(data, &assets[&f.name][..]);
        // Checked against an independent hash of the original bytes.
        assert_eq!(f.sha256, format!("{:x}", Sha256::digest(&assets[&f.name])));
    }

    // The graph is unaffected, and the assets outlive nothing they need:
    // dropping the bundle after copying an asset is fine, and the graph
    // still owns its mapping.
    assert_eq!(text::print(bundle.graph()), text::print(&small_graph()));
    let tokenizer = bundle.asset("tokenizer.json").unwrap().to_vec();
    let graph = bundle.into_graph();
    assert_eq!(text::print(&graph), text::print(&small_graph()));
    assert_eq!(tokenizer, assets["tokenizer.json"]);
}

/// The layout before the assets is the same with and without them: only
/// the manifest (which lists the assets) moves the data start.
#[test]
fn assets_leave_graph_and_weights_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, _) = write_small(dir.path(), "plain.kiln");
    let (with, _) = write_with_assets(dir.path(), "with.kiln");
    let p = Bundle::open(&plain).unwrap().manifest().clone();
    let w = Bundle::open(&with).unwrap().manifest().clone();
    assert_eq!(p.graph.sha256, w.graph.sha256);
    assert_eq!(p.weights.sha256, w.weights.sha256);
    let shift = w.graph.offset - p.graph.offset;
    assert_eq!(shift % ALIGNMENT, 0);
    assert_eq!(w.weights.offset, p.weights.offset + shift);
    let (pb, wb) = (
        std::fs::read(&plain).unwrap(),
        std::fs::read(&with).unwrap(),
    );
    let p_data = &pb[p.graph.offset as usize..];
    let w_data = &wb[w.graph.offset as usize..w.assets.as_ref().unwrap().offset as usize];
    assert_eq!(&w_data[..p_data.len()], p_data);
}

#[test]
fn writing_assets_twice_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ra) = write_with_assets(dir.path(), "a.kiln");
    let dir_b = dir.path().to_path_buf();
    let (b, rb) = std::thread::spawn(move || write_with_assets(&dir_b, "b.kiln"))
        .join()
        .unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ra, rb);
    // Insertion order does not matter: the map sorts the names.
    let mut reversed = BTreeMap::new();
    for (k, v) in two_assets().into_iter().rev() {
        reversed.insert(k, v);
    }
    let c = dir.path().join("c.kiln");
    let info = BundleInfo {
        assets: reversed,
        ..small_info()
    };
    write_bundle(&c, &small_graph(), &info).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
}

#[test]
fn manifest_snapshot_with_assets() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_with_assets(dir.path(), "assets.kiln");
    let bundle = Bundle::open(&path).unwrap();
    let a = bundle.manifest().assets.as_ref().unwrap();
    let names: Vec<&str> = a.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["1_Pooling/config.json", "tokenizer.json"]);

    let bytes = std::fs::read(&path).unwrap();
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    let json = String::from_utf8(bytes[52..52 + len].to_vec()).unwrap();
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
fn corrupted_asset_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_with_assets(dir.path(), "assets.kiln");
    let m = Bundle::open(&path).unwrap().manifest().clone();
    let a = m.assets.unwrap();
    let tok = a.files.iter().find(|f| f.name == "tokenizer.json").unwrap();
    flip_byte(&path, tok.offset + 3);
    let e = open_err(&path);
    assert!(
        e.contains("section `assets` is corrupted: sha256 checksum mismatch"),
        "{e}"
    );
    assert!(e.ends_with("(damaged assets: tokenizer.json)"), "{e}");
    assert!(e.contains(&path.display().to_string()), "{e}");

    // Damage in the padding between assets fails the section checksum but
    // no single asset's.
    let (path, _) = write_with_assets(dir.path(), "pad.kiln");
    let first = &a.files[0];
    flip_byte(&path, first.offset + first.length);
    let e = open_err(&path);
    assert!(e.contains("section `assets` is corrupted"), "{e}");
    assert!(!e.contains("damaged assets"), "{e}");

    // And in the padding between the weights and the assets.
    let (path, _) = write_with_assets(dir.path(), "gap.kiln");
    flip_byte(&path, a.offset - 1);
    let e = open_err(&path);
    assert!(
        e.contains("padding between section `weights` and section `assets`"),
        "{e}"
    );
}

#[test]
fn truncated_assets_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (path, report) = write_with_assets(dir.path(), "assets.kiln");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let e = open_err(&path);
    assert!(
        e.contains(&format!(
            "truncated: section `assets` ends at byte {} but the file has {} bytes",
            report.file_size,
            report.file_size - 10
        )),
        "{e}"
    );
}

#[test]
fn bad_asset_names_are_refused_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.kiln");
    for (name, why) in [
        ("", "empty"),
        ("a\0b", "NUL"),
        ("/etc/passwd", "starts with `/`"),
        ("../tokenizer.json", "`..`"),
        ("models/../../x", "`..`"),
        ("a/..", "`..`"),
    ] {
        let mut assets = two_assets();
        assets.insert(name.to_string(), b"x".to_vec());
        let info = BundleInfo {
            assets,
            ..small_info()
        };
        let e = write_bundle(&path, &small_graph(), &info).unwrap_err();
        assert!(matches!(e, BundleWriteError::Invalid { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(why), "{name:?}: {msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        if !name.is_empty() {
            assert!(msg.contains(&format!("{name:?}")), "{msg}");
        }
        assert!(dir_entries(dir.path()).is_empty());
    }
}

#[test]
fn bad_asset_tables_are_refused_by_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    // Same-length renames keep every offset, so only the name is wrong.
    for (from, to, expected) in [
        (
            "\"tokenizer.json\"",
            "\"../enizer.json\"",
            "asset \"../enizer.json\" of section `assets`: asset name \"../enizer.json\" has a `..` component",
        ),
        (
            "\"tokenizer.json\"",
            "\"/okenizer.json\"",
            "starts with `/`",
        ),
        (
            "\"1_Pooling/config.json\"",
            "\"1_Pooling\\u0000.json\"",
            "NUL",
        ),
        (
            "\"1_Pooling/config.json\"",
            "\"tokenizer.json\"",
            "the assets table lists \"tokenizer.json\" twice",
        ),
    ] {
        let (path, _) = write_with_assets(dir.path(), "assets.kiln");
        if to.len() == from.len() {
            patch_manifest(&path, |j| j.replacen(from, to, 1));
        } else {
            // Pad with spaces after the value (valid JSON whitespace) to
            // keep the manifest's length.
            assert!(to.len() < from.len(), "{to} must not be longer than {from}");
            let pad = from.len() - to.len();
            patch_manifest(&path, |j| j.replacen(from, &format!("{to}{}", " ".repeat(pad)), 1));
        }
        let e = open_err(&path);
        assert!(e.contains(expected), "{e}");
    }

    // Out of order.
    let (path, _) = write_with_assets(dir.path(), "assets.kiln");
    patch_manifest(&path, |j| {
        j.replacen("\"1_Pooling/config.json\"", "\"u_Pooling/config.json\"", 1)
    });
    assert!(open_err(&path).contains("not sorted by name"));
}

#[test]
fn version_1_files_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_small(dir.path(), "v1.kiln");
    let bytes = std::fs::read(&path).unwrap();
    set_version_1(&path);
    let v1 = std::fs::read(&path).unwrap();
    // Only the two version fields differ from the version 2 file.
    let diff: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != v1[i]).collect();
    assert!(diff.contains(&8) && diff.len() <= 1 + 32 + 1, "{diff:?}");

    let bundle = Bundle::open(&path).unwrap();
    assert_eq!(bundle.manifest().format_version, 1);
    assert!(bundle.asset_names().is_empty());
    assert_eq!(text::print(bundle.graph()), text::print(&small_graph()));
    let w = bundle
        .graph()
        .constant(bundle.graph().find_value("w").unwrap())
        .unwrap();
    assert!(w.storage().is_mapped());

    // Version 1 had no assets section.
    let (path, _) = write_with_assets(dir.path(), "v1-assets.kiln");
    set_version_1(&path);
    let e = open_err(&path);
    assert!(
        e.contains("the manifest has an `assets` section, which format version 1 does not have"),
        "{e}"
    );

    // Header and manifest must agree.
    let (path, _) = write_small(dir.path(), "mixed.kiln");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    assert!(open_err(&path).contains("the manifest says format version 2 but the header says 1"));

    // Version 0 never existed.
    let (path, _) = write_small(dir.path(), "v0.kiln");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    assert!(open_err(&path).contains("version 0 is not one this runtime reads (it reads 1 to 2)"));
}

/// A real tokenizer and config, when the model cache has them.
#[test]
fn real_model_files_round_trip() {
    let cache = std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/kiln")));
    let Some(model) = cache.map(|c| c.join("models/all-minilm-l6-v2")) else {
        eprintln!("skipped: neither KILN_CACHE nor HOME is set");
        return;
    };
    if !model.join("tokenizer.json").is_file() {
        eprintln!(
            "skipped: {} is missing",
            model.join("tokenizer.json").display()
        );
        return;
    }
    let mut assets = BTreeMap::new();
    for name in ["tokenizer.json", "config.json", "1_Pooling/config.json"] {
        assets.insert(name.to_string(), std::fs::read(model.join(name)).unwrap());
    }
    let info = BundleInfo {
        assets: assets.clone(),
        ..BundleInfo::for_source("cpu", &model).unwrap()
    };
    assert_eq!(info.source_name, "all-minilm-l6-v2");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("minilm.kiln");
    write_bundle(&path, &small_graph(), &info).unwrap();
    let bundle = Bundle::open(&path).unwrap();
    for (name, bytes) in &assets {
        assert_eq!(bundle.asset(name), Some(&bytes[..]), "{name}");
        assert_eq!(
            bundle
                .manifest()
                .assets
                .as_ref()
                .unwrap()
                .files
                .iter()
                .find(|f| &f.name == name)
                .unwrap()
                .sha256,
            sha256_file(&model.join(name)).unwrap()
        );
    }
}

fn touch(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, contents).unwrap();
}

#[test]
fn sha256_source_of_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("my-model");
    touch(&model.join("config.json"), b"{}\n");
    touch(&model.join("1_Pooling/config.json"), b"{\"pooling\": 1}\n");
    touch(&model.join("tokenizer.json"), b"abc");
    // Hidden files and folders (git and hub metadata) do not count.
    touch(&model.join(".gitattributes"), b"*.bin lfs\n");
    touch(
        &model.join(".cache/huggingface/download/x.metadata"),
        b"etag",
    );

    // Checked with coreutils:
    //   cd my-model && sha256sum 1_Pooling/config.json config.json tokenizer.json | sha256sum
    let expected = "13a3c256b3f1cb98530d11a7a95a55387583b25493d898ed0d2e156edc45f40f";
    let h0 = sha256_source(&model).unwrap();
    // The listing, rebuilt here from the files' own hashes.
    let listing = format!(
        "{}  1_Pooling/config.json\n{}  config.json\n{}  tokenizer.json\n",
        sha256_file(&model.join("1_Pooling/config.json")).unwrap(),
        sha256_file(&model.join("config.json")).unwrap(),
        sha256_file(&model.join("tokenizer.json")).unwrap(),
    );
    assert_eq!(h0, format!("{:x}", Sha256::digest(listing.as_bytes())));
    assert_eq!(h0, expected);

    // Hidden files change nothing; neither do timestamps.
    touch(&model.join(".gitattributes"), b"changed");
    assert_eq!(sha256_source(&model).unwrap(), h0);
    let f = std::fs::File::options()
        .write(true)
        .open(model.join("config.json"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    drop(f);
    assert_eq!(sha256_source(&model).unwrap(), h0);

    // A content change does.
    touch(&model.join("1_Pooling/config.json"), b"{\"pooling\": 2}\n");
    let h1 = sha256_source(&model).unwrap();
    assert_ne!(h1, h0);
    // So does a rename, with the same contents.
    std::fs::rename(model.join("tokenizer.json"), model.join("tokenizer2.json")).unwrap();
    let h2 = sha256_source(&model).unwrap();
    assert_ne!(h2, h1);
    // And a new file.
    touch(&model.join("sub/new.txt"), b"");
    assert_ne!(sha256_source(&model).unwrap(), h2);

    // A file is hashed as a file.
    assert_eq!(
        sha256_source(&model.join("tokenizer2.json")).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // Folders work as sources; the name is the folder's.
    let info = BundleInfo::for_source("cpu", &model).unwrap();
    assert_eq!(info.source_name, "my-model");
    assert_eq!(info.source_sha256, sha256_source(&model).unwrap());
    assert!(info.assets.is_empty());

    let e = sha256_source(&dir.path().join("missing")).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

/// Hugging Face caches link snapshot files to blobs: a link counts as the
/// file it points to.
#[cfg(unix)]
#[test]
fn sha256_source_follows_file_links() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    touch(&plain.join("config.json"), b"{}\n");
    let linked = dir.path().join("linked");
    touch(&dir.path().join("blobs/0123"), b"{}\n");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(dir.path().join("blobs/0123"), linked.join("config.json")).unwrap();
    // A dangling link and a link to a folder are skipped.
    std::os::unix::fs::symlink(dir.path().join("nowhere"), linked.join("dangling")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("blobs"), linked.join("blobs")).unwrap();
    assert_eq!(
        sha256_source(&linked).unwrap(),
        sha256_source(&plain).unwrap()
    );
}
