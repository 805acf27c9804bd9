//! One module per `kiln` subcommand, plus what they share.

pub mod inspect;
pub mod optimize;
pub mod run;

use anyhow::{Context, Result};
use kiln_ir::Graph;
use std::path::Path;

/// A graph loaded from a model file or from a bundle.
pub struct Loaded {
    /// The graph.
    pub graph: Graph,
    /// The bundle it came from, if it was one.
    pub bundle: Option<kiln_runtime::bundle::Bundle>,
}

/// Loads a model (imported and cleaned with the `import` pipeline) or a bundle.
pub fn load(path: &Path, quiet: bool) -> Result<Loaded> {
    if !path.exists() {
        anyhow::bail!("{}: no such file", path.display());
    }
    if kiln_runtime::bundle::is_bundle(path) {
        let sp = crate::progress::spinner(quiet, format!("loading {}", path.display()));
        let bundle = kiln_runtime::bundle::Bundle::open(path)?;
        sp.finish_and_clear();
        let graph = bundle.graph().clone();
        return Ok(Loaded {
            graph,
            bundle: Some(bundle),
        });
    }
    let graph = import(path, quiet)?;
    Ok(Loaded {
        graph,
        bundle: None,
    })
}

/// Imports a model file and runs the `import` cleanup pipeline on it.
pub fn import(path: &Path, quiet: bool) -> Result<Graph> {
    let sp = crate::progress::spinner(quiet, format!("importing {}", path.display()));
    let mut graph = kiln_frontends::load_model(path)?;
    sp.set_message(format!("cleaning {}", path.display()));
    let mut pm = kiln_passes::PassManager::new(kiln_passes::pipeline("import")?);
    pm.run(&mut graph, &Default::default(), |_, _| {}, |_, _| {})
        .with_context(|| format!("{}: import pipeline", path.display()))?;
    sp.finish_and_clear();
    Ok(graph)
}
