//! kiln-runtime is what an app embeds: it must not pull in the compiler side
//! (egg, tract, the passes, the importers, the bundle writer).

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "egg",
    "tract",
    "kiln-passes",
    "kiln-frontends",
    "kiln-targets",
];

#[test]
fn runtime_does_not_depend_on_compiler_crates() {
    let root = kiln_tests::workspace_root();
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "kiln-runtime",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(&root)
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: std::collections::BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains("kiln-runtime"),
        "unexpected cargo tree output:\n{stdout}"
    );
    let bad: Vec<&str> = crates
        .iter()
        .copied()
        .filter(|c| FORBIDDEN.contains(c) || c.starts_with("tract-") || c.starts_with("egg-"))
        .collect();
    assert!(bad.is_empty(), "kiln-runtime depends on {bad:?}:\n{stdout}");
}
