//! The per-layer quantization report written beside a bundle: a JSON table
//! and an SVG chart of each layer's output error.

use anyhow::{Context, Result};
use kiln_passes::quant::{LayerReport, QuantReport};
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `OUT.kiln` → (`OUT.quant.json`, `OUT.quant.svg`).
pub fn paths(bundle: &Path) -> (PathBuf, PathBuf) {
    (
        bundle.with_extension("quant.json"),
        bundle.with_extension("quant.svg"),
    )
}

/// The report as JSON.
pub fn to_json(r: &QuantReport) -> serde_json::Value {
    let layers: Vec<_> = r
        .layers
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "in": l.rows,
                "out": l.cols,
                "format": l.format,
                "method": l.method,
                "output_error": l.output_error,
                "weight_error": l.weight_error,
                "awq_alpha": l.awq_alpha,
                "folded_into": l.folded_into,
                "bytes": l.bytes,
                "bits_per_weight": 8.0 * l.bytes as f64 / (l.rows * l.cols).max(1) as f64,
                "seconds": l.seconds,
            })
        })
        .collect();
    json!({
        "spec": r.spec,
        "calibration": r.calibration.map(|(n, len)| json!({"samples": n, "tokens": len})),
        "weights_bytes_before": r.bytes_before,
        "weights_bytes_after": r.bytes_after,
        "seconds": r.seconds,
        "error_definition": "output_error = ||X (W - W_hat)||^2 / ||X W||^2 on the calibration sample; weight_error = ||W - W_hat||^2 / ||W||^2",
        "layers": layers,
    })
}

/// Writes the JSON table and the SVG chart; returns their paths.
pub fn write(bundle: &Path, r: &QuantReport) -> Result<(PathBuf, PathBuf)> {
    let (json_path, svg_path) = paths(bundle);
    let text = serde_json::to_string_pretty(&to_json(r))?;
    std::fs::write(&json_path, text + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    std::fs::write(&svg_path, svg(r))
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    Ok((json_path, svg_path))
}

/// The error a layer is charted by: output error where calibrated, weight
/// error otherwise.
fn charted(l: &LayerReport) -> f64 {
    l.output_error.unwrap_or(l.weight_error)
}

/// A colour per projection kind, so a person sees at once which kind suffers.
fn colour(name: &str) -> &'static str {
    const KINDS: [(&str, &str); 9] = [
        ("q_proj", "#4e79a7"),
        ("k_proj", "#59a14f"),
        ("v_proj", "#9c755f"),
        ("o_proj", "#f28e2b"),
        ("gate_proj", "#e15759"),
        ("up_proj", "#76b7b2"),
        ("down_proj", "#edc948"),
        ("embed", "#b07aa1"),
        ("head", "#ff9da7"),
    ];
    KINDS
        .iter()
        .find(|(k, _)| name.contains(k))
        .map_or("#bab0ac", |(_, c)| c)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar per layer on a log scale of relative error.
pub fn svg(r: &QuantReport) -> String {
    let (label_w, bar_w, row_h, top) = (330.0, 560.0, 14.0, 56.0);
    let layers: Vec<&LayerReport> = r.layers.iter().collect();
    let errors: Vec<f64> = layers
        .iter()
        .map(|l| charted(l))
        .filter(|e| *e > 0.0)
        .collect();
    let hi = errors
        .iter()
        .copied()
        .fold(1e-6f64, f64::max)
        .log10()
        .ceil();
    let lo = errors
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1e-9)
        .log10()
        .floor()
        .min(hi - 1.0);
    let x_of = |e: f64| -> f64 {
        if e <= 0.0 {
            0.0
        } else {
            ((e.log10() - lo) / (hi - lo)).clamp(0.0, 1.0) * bar_w
        }
    };
    let height = top + row_h * layers.len() as f64 + 30.0;
    let width = label_w + bar_w + 120.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="10">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="8" y="18" font-size="13">{} — relative output error per layer (log scale; weight error where uncalibrated)</text>"#,
        escape(&r.spec)
    );
    // Decade grid lines.
    let mut d = lo;
    while d <= hi + 1e-9 {
        let x = label_w + x_of(10f64.powf(d));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">1e{d}</text>"##,
            top - 6.0,
            height - 24.0,
            top - 10.0
        );
        d += 1.0;
    }
    for (i, l) in layers.iter().enumerate() {
        let y = top + row_h * i as f64;
        let e = charted(l);
        let w = x_of(e);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{label_w}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{}: {} {} error {e:.3e}</title></rect><text x="{:.1}" y="{:.1}">{e:.2e}</text>"#,
            label_w - 6.0,
            y + row_h - 4.0,
            escape(&l.name),
            y + 2.0,
            row_h - 3.0,
            colour(&l.name),
            escape(&l.name),
            escape(&l.format),
            escape(&l.method),
            label_w + w + 4.0,
            y + row_h - 4.0,
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, err: f64) -> LayerReport {
        LayerReport {
            name: name.into(),
            rows: 64,
            cols: 32,
            format: "w4g64".into(),
            method: "gptq".into(),
            output_error: Some(err),
            weight_error: err * 2.0,
            awq_alpha: None,
            folded_into: None,
            bytes: 1088,
            seconds: 0.1,
        }
    }

    #[test]
    fn chart_has_one_bar_per_layer_ordered_by_error() {
        let r = QuantReport {
            spec: "gptq:w4g64".into(),
            calibration: Some((4, 16)),
            layers: vec![layer("a.q_proj", 1e-3), layer("a.down_proj", 1e-1)],
            bytes_before: 0,
            bytes_after: 0,
            seconds: 1.0,
        };
        let s = svg(&r);
        assert_eq!(s.matches("<rect").count(), 2);
        let widths: Vec<f64> = s
            .match_indices("width=\"")
            .skip(1)
            .map(|(i, _)| {
                let rest = &s[i + 7..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert!(widths[0] < widths[1], "{widths:?}");
        let j = to_json(&r);
        assert_eq!(j["layers"][1]["output_error"], 1e-1);
        assert_eq!(j["layers"][0]["bits_per_weight"], 8.0 * 1088.0 / 2048.0);
    }
}
