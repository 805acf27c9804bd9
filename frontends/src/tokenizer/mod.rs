//! Text tokenizers for imported language models.
//!
//! A model's tokenizer comes from one of two places:
//! - a Hugging Face `tokenizer.json` (optionally with the `tokenizer_config.json`
//!   beside it), loaded by the `tokenizers` crate as it is;
//! - the `tokenizer.ggml.*` metadata of a GGUF file ([`GgufVocab`]), from which
//!   an equivalent `tokenizers` pipeline is built (see [`gguf`] for the mapping).
//!
//! Either way the result is one [`Tokenizer`], whose [`Tokenizer::to_json`]
//! gives a `tokenizer.json` that a bundle can carry and
//! [`Tokenizer::from_json_bytes`] reloads to the same ids. See
//! `docs/tokenizers.md` for what is and is not supported.

pub mod gguf;
mod special;

pub use gguf::GgufVocab;
pub use special::SpecialTokens;

use std::path::{Path, PathBuf};
use tokenizers::PaddingParams;

/// Why a tokenizer could not be loaded, built or run.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `tokenizer.json` the `tokenizers` crate could not load.
    #[error("{origin}: not a loadable tokenizer.json: {message}")]
    Json {
        /// The file, or `tokenizer.json bytes` when loaded from memory.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A `tokenizer_config.json` that names tokens or values we cannot use.
    #[error("{origin}: {message}")]
    Config {
        /// The file, or `tokenizer_config.json bytes`.
        origin: String,
        /// What was wrong.
        message: String,
    },
    /// A GGUF `tokenizer.ggml.model` other than `gpt2` and `llama`.
    #[error(
        "GGUF tokenizer.ggml.model '{0}' is not supported (supported: 'gpt2' byte-level BPE, \
         'llama' SentencePiece BPE)"
    )]
    UnsupportedModel(String),
    /// A GGUF `tokenizer.ggml.pre` we have no pre-tokenizer for.
    #[error(
        "GGUF tokenizer.ggml.pre '{0}' is not supported (supported: {list})",
        list = gguf::SUPPORTED_PRE.join(", ")
    )]
    UnsupportedPre(String),
    /// GGUF tokenizer metadata that is inconsistent or incomplete.
    #[error("GGUF tokenizer metadata: {0}")]
    InvalidVocab(String),
    /// The `tokenizers` crate failed on an encode, decode or build step.
    #[error("tokenizer: {0}")]
    Tokenizers(String),
}

/// Turns a `tokenizers` error into ours with context.
fn tk_err(what: &str, e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Tokenizers(format!("{what}: {e}"))
}

/// A loaded tokenizer: the `tokenizers` pipeline plus the special-token
/// facts (BOS, EOS, PAD, UNK, whether BOS/EOS are added) a runtime needs.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    /// The pipeline, with padding turned off: `encode` returns only real
    /// tokens (padding is a batching decision, and ids alone carry no mask).
    inner: tokenizers::Tokenizer,
    /// The padding the `tokenizer.json` asked for, kept so `to_json` writes
    /// the file back as it was.
    padding: Option<PaddingParams>,
    special: SpecialTokens,
}

impl Tokenizer {
    /// Loads a `tokenizer.json`, and the `tokenizer_config.json` beside it if
    /// there is one (for `bos_token`, `eos_token`, `pad_token`, `unk_token`,
    /// `add_bos_token`, `add_eos_token`).
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config_path = path.with_file_name("tokenizer_config.json");
        let config = match std::fs::read(&config_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(TokenizerError::Io {
                    path: config_path,
                    source,
                })
            }
        };
        Self::load(
            &bytes,
            &path.display().to_string(),
            config
                .as_deref()
                .map(|c| (c, config_path.display().to_string())),
        )
    }

    /// Loads `tokenizer.json` text. Special tokens are read from its
    /// post-processor (see [`SpecialTokens`]) and its padding settings.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, TokenizerError> {
        Self::load(bytes, "tokenizer.json bytes", None)
    }

    /// Loads `tokenizer.json` text with an optional `tokenizer_config.json`,
    /// as written by [`Tokenizer::to_json`] and [`Tokenizer::to_config_json`].
    pub fn from_json_and_config(
        tokenizer_json: &[u8],
        config_json: Option<&[u8]>,
    ) -> Result<Self, TokenizerError> {
        Self::load(
            tokenizer_json,
            "tokenizer.json bytes",
            config_json.map(|c| (c, "tokenizer_config.json bytes".to_string())),
        )
    }

    fn load(
        bytes: &[u8],
        origin: &str,
        config: Option<(&[u8], String)>,
    ) -> Result<Self, TokenizerError> {
        let mut inner =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| TokenizerError::Json {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        let padding = inner.get_padding().cloned();
        inner.with_padding(None);
        let mut special = SpecialTokens::from_pipeline(&inner, padding.as_ref());
        if let Some((config, config_origin)) = config {
            special.apply_config(&mut inner, config, &config_origin)?;
        }
        Ok(Self {
            inner,
            padding,
            special,
        })
    }

    /// Builds the tokenizer that GGUF metadata describes (see [`gguf`]).
    pub fn from_gguf_vocab(v: &GgufVocab) -> Result<Self, TokenizerError> {
        let (inner, special) = gguf::build(v)?;
        Ok(Self {
            inner,
            padding: None,
            special,
        })
    }

    /// The pipeline as `tokenizer.json` text. [`Tokenizer::from_json_bytes`]
    /// on it encodes to the same ids; the PAD and UNK ids and a BOS/EOS the
    /// pipeline does not add travel in [`Tokenizer::to_config_json`].
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        if self.padding.is_some() {
            let mut t = self.inner.clone();
            t.with_padding(self.padding.clone());
            t.to_string(false)
        } else {
            self.inner.to_string(false)
        }
        .map_err(|e| tk_err("cannot serialise tokenizer.json", e))
    }

    /// The special tokens as `tokenizer_config.json` text (`bos_token`,
    /// `eos_token`, `pad_token`, `unk_token`, `add_bos_token`,
    /// `add_eos_token`), for [`Tokenizer::from_json_and_config`].
    pub fn to_config_json(&self) -> String {
        self.special.to_config_json(&self.inner)
    }

    /// Token ids of `text`. With `add_special`, the BOS/EOS (or CLS/SEP) the
    /// tokenizer's post-processor adds are included. Truncation set in a
    /// `tokenizer.json` applies; padding does not.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| tk_err("encode failed", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// [`Tokenizer::encode`] for several texts, in parallel; no padding.
    pub fn encode_batch(
        &self,
        texts: &[&str],
        add_special: bool,
    ) -> Result<Vec<Vec<u32>>, TokenizerError> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), add_special)
            .map_err(|e| tk_err("batch encode failed", e))?;
        Ok(encs.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Text of `ids`, special tokens included (as their text).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_with(ids, false)
    }

    /// Text of `ids`, leaving special tokens out when `skip_special`.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| tk_err("decode failed", e))
    }

    /// The beginning-of-sequence token (CLS for BERT-style tokenizers).
    pub fn bos_id(&self) -> Option<u32> {
        self.special.bos
    }

    /// The end-of-sequence token (SEP for BERT-style tokenizers).
    pub fn eos_id(&self) -> Option<u32> {
        self.special.eos
    }

    /// The padding token.
    pub fn pad_id(&self) -> Option<u32> {
        self.special.pad
    }

    /// The unknown token.
    pub fn unk_id(&self) -> Option<u32> {
        self.special.unk
    }

    /// Whether `encode(_, true)` starts with [`Tokenizer::bos_id`].
    pub fn add_bos(&self) -> bool {
        self.special.add_bos
    }

    /// Whether `encode(_, true)` ends with [`Tokenizer::eos_id`].
    pub fn add_eos(&self) -> bool {
        self.special.add_eos
    }

    /// The special-token facts together.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token given as its vocabulary string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying `tokenizers` pipeline (padding turned off).
    pub fn as_hf(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
