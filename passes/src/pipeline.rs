//! Named pipelines, declared in one place as data.

use crate::cleanup;
use crate::fusion::FuseGraph;
use crate::{Pass, PassError, RunOptions};

/// Every named pipeline: its name and the passes it runs, in order.
///
/// `import` turns a faithfully imported graph into a clean one (shape
/// subgraphs folded, dead code gone); `cpu` is what `kiln optimize --target
/// cpu` runs first, and `cpu-fuse` what it runs after weight quantization
/// (fusion sees the quantized weights, so it prices them as they will run).
pub const PIPELINES: &[(&str, &[&str])] = &[
    (
        "import",
        &[
            "fold-constants",
            "eliminate-identity",
            "dead-code",
            "infer-shapes",
        ],
    ),
    (
        "cpu",
        &[
            "fold-constants",
            "eliminate-identity",
            "dead-code",
            "infer-shapes",
        ],
    ),
    (
        "cpu-fuse",
        &["fuse", "fold-constants", "dead-code", "infer-shapes"],
    ),
    (
        "gpu",
        &[
            "fold-constants",
            "eliminate-identity",
            "dead-code",
            "infer-shapes",
        ],
    ),
    (
        "gpu-fuse",
        &["fuse-gpu", "fold-constants", "dead-code", "infer-shapes"],
    ),
];

/// Every pass that pipelines may name.
pub const PASSES: &[&str] = &[
    "fold-constants",
    "eliminate-identity",
    "dead-code",
    "infer-shapes",
    "fuse",
    "fuse-gpu",
];

/// Builds one pass by name.
pub fn pass_by_name(name: &str) -> Result<Box<dyn Pass>, PassError> {
    pass_with_options(name, &RunOptions::default())
}

/// Builds one pass by name, configured by the run's options.
pub fn pass_with_options(name: &str, options: &RunOptions) -> Result<Box<dyn Pass>, PassError> {
    Ok(match name {
        "fuse" => Box::new(FuseGraph {
            limits: options.fusion_limits.unwrap_or_default(),
            ..FuseGraph::default()
        }),
        // The same rules priced with a GPU's costs: launches dominate less,
        // arithmetic is cheap.
        "fuse-gpu" => Box::new(FuseGraph {
            limits: options.fusion_limits.unwrap_or_default(),
            profile: kiln_ir::profile::DeviceProfile::gpu(),
            pass_name: "fuse-gpu",
            ..FuseGraph::default()
        }),
        "fold-constants" => Box::new(cleanup::FoldConstants),
        "eliminate-identity" => Box::new(cleanup::EliminateIdentity),
        "dead-code" => Box::new(cleanup::DeadCode),
        "infer-shapes" => Box::new(cleanup::InferShapes),
        _ => {
            return Err(PassError::Unknown {
                kind: "pass",
                name: name.to_string(),
                known: PASSES.join(", "),
            })
        }
    })
}

/// Builds the passes of a named pipeline.
pub fn pipeline(name: &str) -> Result<Vec<Box<dyn Pass>>, PassError> {
    pipeline_with_options(name, &RunOptions::default())
}

/// Builds the passes of a named pipeline, configured by the run's options;
/// passes in `options.skip` are left out.
pub fn pipeline_with_options(
    name: &str,
    options: &RunOptions,
) -> Result<Vec<Box<dyn Pass>>, PassError> {
    let (_, passes) =
        PIPELINES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| PassError::Unknown {
                kind: "pipeline",
                name: name.to_string(),
                known: PIPELINES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
    passes
        .iter()
        .filter(|p| !options.skip.iter().any(|s| s == *p))
        .map(|p| pass_with_options(p, options))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_names_known_passes() {
        for (name, passes) in PIPELINES {
            for p in *passes {
                assert!(PASSES.contains(p), "pipeline {name} names unknown pass {p}");
                assert_eq!(pass_by_name(p).unwrap().name(), *p);
            }
        }
        assert!(pipeline("nope").is_err());
    }
}
