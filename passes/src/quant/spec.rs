//! What to quantize and how: `--quant SPEC`, name patterns of tensors kept
//! in higher precision.

use kiln_ir::quant::QuantFormat;
use std::fmt;

/// A quantization method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Round to nearest: no calibration needed.
    Rtn,
    /// GPTQ: error feedback through the input Hessian.
    Gptq,
    /// AWQ: per-input-channel scales and weight clipping.
    Awq,
    /// AWQ's scales, then GPTQ on the scaled weights.
    AwqGptq,
}

impl Method {
    /// The spelling used in specs.
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::Awq => "awq",
            Method::AwqGptq => "awq+gptq",
        }
    }

    /// Whether the method needs calibration activations.
    pub fn needs_calibration(self) -> bool {
        self != Method::Rtn
    }

    /// Whether AWQ's scale search runs.
    pub fn uses_awq(self) -> bool {
        matches!(self, Method::Awq | Method::AwqGptq)
    }

    /// Whether GPTQ runs.
    pub fn uses_gptq(self) -> bool {
        matches!(self, Method::Gptq | Method::AwqGptq)
    }
}

/// `METHOD:FORMAT`, e.g. `gptq:w4g64`, `awq+gptq:w3g64`, `rtn:w8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantSpec {
    /// The method.
    pub method: Method,
    /// The packed format of quantized weights.
    pub format: QuantFormat,
}

/// A spec that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid --quant `{text}`: {reason} (expected METHOD:FORMAT with METHOD one of rtn, gptq, awq, awq+gptq and FORMAT like w8, w4g64, w3g128a; e.g. gptq:w4g64)")]
pub struct SpecError {
    /// The text as given.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

impl QuantSpec {
    /// Parses `METHOD:FORMAT`.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let err = |reason: String| SpecError {
            text: text.to_string(),
            reason,
        };
        let (method, format) = text
            .split_once(':')
            .ok_or_else(|| err("no `:` between method and format".into()))?;
        let method = match method {
            "rtn" => Method::Rtn,
            "gptq" => Method::Gptq,
            "awq" => Method::Awq,
            "awq+gptq" => Method::AwqGptq,
            other => return Err(err(format!("unknown method `{other}`"))),
        };
        let format = QuantFormat::parse(format).map_err(|e| err(e.to_string()))?;
        Ok(QuantSpec { method, format })
    }
}

impl fmt::Display for QuantSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.method.name(), self.format)
    }
}

/// Where tensors matching a keep pattern go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Stay f32.
    Float,
    /// Round to nearest in this (wider) format.
    Format(QuantFormat),
}

impl Keep {
    /// Parses `f32` or a format such as `w8`.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        if text == "f32" {
            return Ok(Keep::Float);
        }
        QuantFormat::parse(text)
            .map(Keep::Format)
            .map_err(|e| SpecError {
                text: text.to_string(),
                reason: format!("{e}; kept tensors are `f32` or a format"),
            })
    }
}

/// Name patterns kept in higher precision by default: the token embedding
/// and the output head, whose errors every token sees.
pub const DEFAULT_KEEP: &[&str] = &["*embed_tokens*", "*word_embeddings*", "lm_head*"];

/// Glob match with `*` (any run of characters) and `?` (one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer wildcard match with backtracking to the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        for text in [
            "rtn:w8",
            "gptq:w4g64",
            "awq:w4g128",
            "awq+gptq:w3g64",
            "gptq:w4g32a",
        ] {
            let spec = QuantSpec::parse(text).unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            QuantSpec::parse("awq+gptq:w3g64").unwrap().method,
            Method::AwqGptq
        );
        for bad in ["gptq", "gptq:w5", "sgd:w4g64", "gptq:w4g48", ":w4"] {
            let err = QuantSpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*embed_tokens*", "model.embed_tokens.weight"));
        assert!(glob_match("lm_head*", "lm_head.weight"));
        assert!(!glob_match("lm_head*", "model.lm_head.weight"));
        assert!(glob_match(
            "model.layers.?.mlp.*",
            "model.layers.3.mlp.up_proj.weight"
        ));
        assert!(!glob_match(
            "model.layers.?.mlp.*",
            "model.layers.13.mlp.up_proj.weight"
        ));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbd"));
    }

    #[test]
    fn keep_parses() {
        assert_eq!(Keep::parse("f32").unwrap(), Keep::Float);
        assert!(matches!(Keep::parse("w8").unwrap(), Keep::Format(_)));
        assert!(Keep::parse("f16").is_err());
    }
}
