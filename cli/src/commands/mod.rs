//! One module per `kiln` subcommand, plus what they share.

pub mod eval;
pub mod export;
pub mod inspect;
pub mod optimize;
pub mod run;

use anyhow::{Context, Result};
use kiln_frontends::tokenizer::Tokenizer;
use kiln_ir::Graph;
use std::collections::BTreeMap;
use std::path::Path;

/// A graph loaded from a model file or from a bundle.
pub struct Loaded {
    /// The graph.
    pub graph: Graph,
    /// The bundle it came from, if it was one.
    pub bundle: Option<kiln_runtime::bundle::Bundle>,
    /// Files that travel with the model (`tokenizer.json`, `config.json`).
    pub assets: BTreeMap<String, Vec<u8>>,
}

impl Loaded {
    /// The model's tokenizer, from its `tokenizer.json` asset.
    pub fn tokenizer(&self, path: &Path) -> Result<Tokenizer> {
        let bytes = self.assets.get("tokenizer.json").with_context(|| {
            format!(
                "{}: the model carries no tokenizer (tokenizer.json); import it from a folder with \
                 tokenizer.json or from a GGUF file with tokenizer metadata",
                path.display()
            )
        })?;
        let config = self.assets.get("tokenizer_config.json").map(Vec::as_slice);
        Tokenizer::from_json_and_config(bytes, config)
            .with_context(|| format!("{}: cannot load its tokenizer", path.display()))
    }
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
        let assets = bundle
            .asset_names()
            .into_iter()
            .filter_map(|n| Some((n.to_string(), bundle.asset(n)?.to_vec())))
            .collect();
        return Ok(Loaded {
            graph,
            bundle: Some(bundle),
            assets,
        });
    }
    let model = import(path, quiet)?;
    Ok(Loaded {
        graph: model.graph,
        bundle: None,
        assets: model.assets,
    })
}

/// Imports a model file (or folder) and runs the `import` cleanup pipeline on it.
pub fn import(path: &Path, quiet: bool) -> Result<kiln_frontends::Model> {
    let sp = crate::progress::spinner(quiet, format!("importing {}", path.display()));
    let mut model = kiln_frontends::load_model(path)?;
    sp.set_message(format!("cleaning {}", path.display()));
    let mut pm = kiln_passes::PassManager::new(kiln_passes::pipeline("import")?);
    pm.run(&mut model.graph, &Default::default(), |_, _| {}, |_, _| {})
        .with_context(|| format!("{}: import pipeline", path.display()))?;
    sp.finish_and_clear();
    Ok(model)
}
