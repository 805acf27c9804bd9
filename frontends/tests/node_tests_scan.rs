//! Imports every ONNX backend node test model and reports the failures.
//!
//! Ignored by default (needs `$KILN_CACHE/onnx-node-tests`, written by
//! scripts/setup.sh); run with
//! `cargo test -p kiln-frontends --test node_tests_scan -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[test]
#[ignore]
fn import_every_node_test_model() {
    let dir = std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln")))
        .map(|c| c.join("onnx-node-tests"))
        .expect("no cache folder");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("{} not found; skipping", dir.display());
        return;
    };
    let mut ok = 0;
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in entries.flatten() {
        let model = e.path().join("model.onnx");
        if !model.exists() {
            continue;
        }
        let case = e.file_name().to_string_lossy().into_owned();
        match std::panic::catch_unwind(|| kiln_frontends::onnx::import(&model)) {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(err)) => {
                let msg = err.to_string();
                let msg = msg
                    .split_once(": ")
                    .map(|(_, m)| m.to_string())
                    .unwrap_or(msg);
                failures.entry(msg).or_default().push(case);
            }
            Err(_) => failures.entry("PANIC".into()).or_default().push(case),
        }
    }
    let failed: usize = failures.values().map(Vec::len).sum();
    for (msg, cases) in &failures {
        eprintln!("{:4} {msg}  [{}]", cases.len(), cases.join(" "));
    }
    eprintln!("imported {ok}, failed {failed}");
    assert!(!failures.contains_key("PANIC"), "the importer panicked");
}
