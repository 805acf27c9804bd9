//! Typed access to a Hugging Face `config.json`, with errors that name the
//! file and the key.

use crate::ImportError;
use serde_json::{Map, Value};
use std::path::Path;

/// A parsed `config.json`: the raw object plus the file it came from.
#[derive(Clone, Debug)]
pub struct HfConfig {
    /// Where the config came from, for error messages.
    pub file: String,
    /// The JSON object.
    pub raw: Map<String, Value>,
    /// Sentence-embedding pooling, from a sentence-transformers folder's
    /// `modules.json` and `1_Pooling/config.json` (not part of config.json).
    pub pooling: Option<Pooling>,
}

/// How token states become one sentence embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pooling {
    /// Which reduction over tokens.
    pub mode: PoolingMode,
    /// L2-normalise the result.
    pub normalize: bool,
}

/// The reduction over tokens of a [`Pooling`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolingMode {
    /// Mean of the attended tokens.
    Mean,
    /// The first (`[CLS]`) token.
    Cls,
    /// Elementwise maximum over the attended tokens.
    Max,
}

impl HfConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ImportError> {
        let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Parses config JSON; `file` names it in errors.
    pub fn from_bytes(file: &str, bytes: &[u8]) -> Result<Self, ImportError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ImportError::InvalidModel {
                file: file.to_string(),
                message: format!("config.json is not valid JSON: {e}"),
            })?;
        match value {
            Value::Object(raw) => Ok(HfConfig {
                file: file.to_string(),
                raw,
                pooling: None,
            }),
            _ => Err(ImportError::InvalidModel {
                file: file.to_string(),
                message: "config.json is not a JSON object".to_string(),
            }),
        }
    }

    /// An error about `key` in this config.
    pub fn error(&self, key: &str, problem: impl std::fmt::Display) -> ImportError {
        ImportError::InvalidModel {
            file: self.file.clone(),
            message: format!("config key '{key}': {problem}"),
        }
    }

    /// A present, non-null value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key).filter(|v| !v.is_null())
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize, ImportError> {
        self.opt_usize(key)?
            .ok_or_else(|| self.error(key, "missing (expected a non-negative integer)"))
    }

    /// An optional non-negative integer.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                self.error(key, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    /// An optional number.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.error(key, format!("expected a number, found {v}"))),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.error(key, format!("expected true or false, found {v}"))),
        }
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.error(key, format!("expected a string, found {v}"))),
        }
    }

    /// The model family (`model_type`), required.
    pub fn model_type(&self) -> Result<&str, ImportError> {
        self.opt_str("model_type")?.ok_or_else(|| {
            self.error(
                "model_type",
                "missing (expected e.g. \"llama\" or \"bert\")",
            )
        })
    }

    /// The config as pretty JSON, for bundles and exports.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&Value::Object(self.raw.clone()))
            .expect("a JSON object always serializes")
    }
}
