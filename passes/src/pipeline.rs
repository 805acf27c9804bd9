//! Named pipelines, declared in one place as data.

use crate::cleanup;
use crate::{Pass, PassError};

/// Every named pipeline: its name and the passes it runs, in order.
///
/// `import` turns a faithfully imported graph into a clean one (shape
/// subgraphs folded, dead code gone); `cpu` is what `kiln optimize --target
/// cpu` runs.
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
];

/// Every pass that pipelines may name.
pub const PASSES: &[&str] = &[
    "fold-constants",
    "eliminate-identity",
    "dead-code",
    "infer-shapes",
];

/// Builds one pass by name.
pub fn pass_by_name(name: &str) -> Result<Box<dyn Pass>, PassError> {
    Ok(match name {
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
    passes.iter().map(|p| pass_by_name(p)).collect()
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
