//! `kiln optimize` fuses operators: statistics printed with `--stats` and
//! `--json`, kept in the bundle manifest (without times, so bundles stay
//! reproducible), and `--no-fuse` to leave fusion out. (cli_end_to_end runs
//! the fused tiny model against values computed by hand.)

mod common;

use common::{json_of, kiln, tiny_model};

#[test]
fn optimize_fuses_and_reports_the_saturation() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), false);
    let (a, b, plain) = (
        dir.path().join("a.kiln"),
        dir.path().join("b.kiln"),
        dir.path().join("p.kiln"),
    );
    let m = model.to_str().unwrap();

    let out = kiln(&["optimize", m, "-o", a.to_str().unwrap(), "--stats", "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let fuse = text
        .lines()
        .find(|l| l.starts_with("fuse "))
        .unwrap_or_else(|| panic!("no fuse line in:\n{text}"));
    for field in [
        "stop=saturated",
        "enodes=",
        "eclasses=",
        "iterations=",
        "cost_before_ns=",
        "cost_after_ns=",
        "saturation_ms=",
        "extraction_ms=",
        "rule.epilogue-merge=",
    ] {
        assert!(fuse.contains(field), "{field} missing from: {fuse}");
    }

    // MatMul + Add + Relu become one product with a bias-and-ReLU epilogue.
    let j = json_of(&kiln(&["optimize", m, "-o", b.to_str().unwrap(), "--json"]));
    assert_eq!(j["nodes_after"], 1, "{j}");
    let pass = j["passes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pass"] == "fuse")
        .expect("fuse pass in --json");
    assert_eq!(pass["notes"]["stop"], "saturated");
    assert!(pass["stats"]["enodes"].as_i64().unwrap() > 0);
    assert!(pass["phase_seconds"]["saturation"].as_f64().is_some());
    assert!(pass["stats"]["cost_after_ns"].as_i64() < pass["stats"]["cost_before_ns"].as_i64());

    // The manifest keeps the statistics but no times; bundles are reproducible.
    assert_eq!(
        j["sha256"],
        json_of(&kiln(&["optimize", m, "-o", a.to_str().unwrap(), "--json"]))["sha256"]
    );
    let info = json_of(&kiln(&["inspect", b.to_str().unwrap(), "--json"]));
    let passes = info["manifest"]["options"]["passes"].as_array().unwrap();
    let fuse = passes
        .iter()
        .find(|p| p["pass"] == "fuse")
        .expect("fuse in manifest");
    assert_eq!(fuse["notes"]["stop"], "saturated");
    assert!(fuse.get("phase_seconds").is_none() && fuse["stats"].get("saturation_ms").is_none());
    assert!(
        info["ops"].to_string().contains("FusedMatMul"),
        "{}",
        info["ops"]
    );

    let j = json_of(&kiln(&[
        "optimize",
        m,
        "-o",
        plain.to_str().unwrap(),
        "--json",
        "--no-fuse",
    ]));
    assert_eq!(j["nodes_after"], 3);
    assert!(j["passes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["pass"] != "fuse"));
}
