//! Special-token facts (BOS, EOS, PAD, UNK and whether BOS/EOS are added).
//!
//! `tokenizer.json` has no field for "the BOS token": the post-processor's
//! template says which special tokens go around the text, the padding section
//! names the pad token, and the model names its unknown token. We read those,
//! then let a `tokenizer_config.json` override them, as transformers does.

use super::TokenizerError;
use serde_json::Value;
use tokenizers::{ModelWrapper, PaddingParams, PostProcessorWrapper};

/// Which ids play the special roles, and whether encoding adds BOS/EOS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence: the first special token the post-processor puts
    /// before the text (CLS for BERT), else the configured one.
    pub bos: Option<u32>,
    /// End of sequence: the first special token after the text (SEP for BERT),
    /// else the configured one.
    pub eos: Option<u32>,
    /// Padding token.
    pub pad: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Whether `encode(_, true)` starts with `bos`.
    pub add_bos: bool,
    /// Whether `encode(_, true)` ends with `eos`.
    pub add_eos: bool,
}

/// Special tokens a post-processor puts before and after a single text.
#[derive(Default)]
struct Around {
    before: Option<u32>,
    after: Option<u32>,
    byte_level: bool,
}

impl SpecialTokens {
    /// Reads what a loaded pipeline says (post-processor, padding, model).
    pub(crate) fn from_pipeline(
        tok: &tokenizers::Tokenizer,
        padding: Option<&PaddingParams>,
    ) -> Self {
        let around = tok
            .get_post_processor()
            .map(processor_around)
            .unwrap_or_default();
        SpecialTokens {
            bos: around.before,
            eos: around.after,
            pad: padding.map(|p| p.pad_id),
            unk: model_unk(tok),
            add_bos: around.before.is_some(),
            add_eos: around.after.is_some(),
        }
    }

    /// Applies a `tokenizer_config.json`: its `*_token` entries name the
    /// special ids, and `add_bos_token`/`add_eos_token`, when present and
    /// different from what the post-processor does, replace the
    /// post-processor with one that does what they say (transformers' Llama
    /// tokenizers behave this way).
    pub(crate) fn apply_config(
        &mut self,
        tok: &mut tokenizers::Tokenizer,
        bytes: &[u8],
        origin: &str,
    ) -> Result<(), TokenizerError> {
        let err = |message: String| TokenizerError::Config {
            origin: origin.to_string(),
            message,
        };
        let cfg: Value =
            serde_json::from_slice(bytes).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let Value::Object(cfg) = cfg else {
            return Err(err("expected a JSON object".into()));
        };
        let token_id = |key: &str| -> Result<Option<u32>, TokenizerError> {
            let content = match cfg.get(key) {
                None | Some(Value::Null) => return Ok(None),
                Some(Value::String(s)) => s.as_str(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => {
                        return Err(err(format!(
                            "'{key}' is an object without a 'content' string"
                        )))
                    }
                },
                Some(other) => {
                    return Err(err(format!(
                        "'{key}' should be a token string, found {other}"
                    )))
                }
            };
            tok.token_to_id(content).map(Some).ok_or_else(|| {
                err(format!(
                    "'{key}' is '{content}', which is not in the tokenizer's vocabulary"
                ))
            })
        };
        let flag = |key: &str| -> Result<Option<bool>, TokenizerError> {
            match cfg.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(err(format!(
                    "'{key}' should be true or false, found {other}"
                ))),
            }
        };
        let bos = token_id("bos_token")?;
        let eos = token_id("eos_token")?;
        let pad = token_id("pad_token")?;
        let unk = token_id("unk_token")?;
        let add_bos = flag("add_bos_token")?;
        let add_eos = flag("add_eos_token")?;

        let mut want = self.clone();
        want.bos = bos.or(self.bos);
        want.eos = eos.or(self.eos);
        want.pad = pad.or(self.pad);
        want.unk = unk.or(self.unk);
        want.add_bos = add_bos.unwrap_or(self.add_bos);
        want.add_eos = add_eos.unwrap_or(self.add_eos);
        if want.add_bos && want.bos.is_none() {
            return Err(err("add_bos_token is true but no bos_token is known".into()));
        }
        if want.add_eos && want.eos.is_none() {
            return Err(err("add_eos_token is true but no eos_token is known".into()));
        }
        let added_differs = (want.add_bos, want.add_bos.then_some(want.bos).flatten())
            != (self.add_bos, self.add_bos.then_some(self.bos).flatten())
            || (want.add_eos, want.add_eos.then_some(want.eos).flatten())
                != (self.add_eos, self.add_eos.then_some(self.eos).flatten());
        if (add_bos.is_some() || add_eos.is_some()) && added_differs {
            let byte_level = tok
                .get_post_processor()
                .map(processor_around)
                .unwrap_or_default()
                .byte_level;
            let pp = post_processor(tok, &want, byte_level)?;
            tok.with_post_processor(pp);
        }
        *self = want;
        Ok(())
    }

    /// `tokenizer_config.json` text stating these facts.
    pub(crate) fn to_config_json(&self, tok: &tokenizers::Tokenizer) -> String {
        let name = |id: Option<u32>| -> Value {
            id.and_then(|i| tok.id_to_token(i))
                .map_or(Value::Null, Value::String)
        };
        let obj = serde_json::json!({
            "bos_token": name(self.bos),
            "eos_token": name(self.eos),
            "pad_token": name(self.pad),
            "unk_token": name(self.unk),
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
        });
        obj.to_string()
    }
}

/// The post-processor that adds `s.bos`/`s.eos` as `s.add_bos`/`s.add_eos`
/// say, after a byte-level offset fix-up when `byte_level`. `None` when it
/// would do nothing.
pub(crate) fn post_processor(
    tok: &tokenizers::Tokenizer,
    s: &SpecialTokens,
    byte_level: bool,
) -> Result<Option<PostProcessorWrapper>, TokenizerError> {
    let named = |id: u32| -> Result<String, TokenizerError> {
        tok.id_to_token(id).ok_or_else(|| {
            TokenizerError::InvalidVocab(format!("special token id {id} is not in the vocabulary"))
        })
    };
    let bos = match (s.add_bos, s.bos) {
        (true, Some(id)) => Some((named(id)?, id)),
        _ => None,
    };
    let eos = match (s.add_eos, s.eos) {
        (true, Some(id)) => Some((named(id)?, id)),
        _ => None,
    };
    let byte_level_pp = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    if bos.is_none() && eos.is_none() {
        if !byte_level {
            return Ok(None);
        }
        return wrapper(byte_level_pp).map(Some);
    }
    // Built as JSON: the template types only have string parsers that
    // split on ' ' and ':', which token texts may contain. Same layout as
    // transformers' Llama tokenizer: each text of a pair gets its own BOS/EOS.
    let special = |name: &str, type_id: u32| serde_json::json!({"SpecialToken": {"id": name, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (seq, type_id) in [("A", 0u32), ("B", 1)] {
        let mut part = Vec::new();
        if let Some((b, _)) = &bos {
            part.push(special(b, type_id));
        }
        part.push(serde_json::json!({"Sequence": {"id": seq, "type_id": type_id}}));
        if let Some((e, _)) = &eos {
            part.push(special(e, type_id));
        }
        if type_id == 0 {
            single.clone_from(&part);
        }
        pair.extend(part);
    }
    let mut tokens = serde_json::Map::new();
    for (name, id) in bos.iter().chain(eos.iter()) {
        tokens.insert(
            name.clone(),
            serde_json::json!({"id": name, "ids": [id], "tokens": [name]}),
        );
    }
    let template = serde_json::json!({
        "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": tokens
    });
    wrapper(if byte_level {
        serde_json::json!({"type": "Sequence", "processors": [byte_level_pp, template]})
    } else {
        template
    })
    .map(Some)
}

fn wrapper(v: Value) -> Result<PostProcessorWrapper, TokenizerError> {
    serde_json::from_value(v).map_err(|e| {
        TokenizerError::Tokenizers(format!("cannot build the BOS/EOS post-processor: {e}"))
    })
}

/// What a post-processor adds around a single text, read from its JSON form
/// (the template types keep their fields private).
fn processor_around(pp: &PostProcessorWrapper) -> Around {
    let Ok(v) = serde_json::to_value(pp) else {
        return Around::default();
    };
    around_value(&v)
}

fn around_value(v: &Value) -> Around {
    let id_of = |pair: &Value| pair.get(1).and_then(Value::as_u64).map(|i| i as u32);
    match v.get("type").and_then(Value::as_str) {
        Some("BertProcessing") | Some("RobertaProcessing") => Around {
            before: v.get("cls").and_then(id_of),
            after: v.get("sep").and_then(id_of),
            byte_level: false,
        },
        Some("ByteLevel") => Around {
            byte_level: true,
            ..Around::default()
        },
        Some("TemplateProcessing") => {
            let special_id = |name: &str| -> Option<u32> {
                let ids = v.get("special_tokens")?.get(name)?.get("ids")?.as_array()?;
                match ids.as_slice() {
                    [one] => one.as_u64().map(|i| i as u32),
                    _ => None,
                }
            };
            let mut out = Around::default();
            let mut seen_sequence = false;
            for piece in v
                .get("single")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if piece.get("Sequence").is_some() {
                    seen_sequence = true;
                } else if let Some(name) = piece
                    .get("SpecialToken")
                    .and_then(|s| s.get("id"))
                    .and_then(Value::as_str)
                {
                    let slot = if seen_sequence {
                        &mut out.after
                    } else {
                        &mut out.before
                    };
                    if slot.is_none() {
                        *slot = special_id(name);
                    }
                }
            }
            out
        }
        Some("Sequence") => {
            let mut out = Around::default();
            for p in v
                .get("processors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let a = around_value(p);
                out.before = out.before.or(a.before);
                out.after = out.after.or(a.after);
                out.byte_level |= a.byte_level;
            }
            out
        }
        _ => Around::default(),
    }
}

/// The model's unknown token, if it has one.
fn model_unk(tok: &tokenizers::Tokenizer) -> Option<u32> {
    match tok.get_model() {
        ModelWrapper::BPE(m) => m
            .get_unk_token()
            .as_deref()
            .and_then(|t| tok.token_to_id(t)),
        ModelWrapper::WordPiece(m) => tok.token_to_id(&m.unk_token),
        ModelWrapper::WordLevel(m) => tok.token_to_id(&m.unk_token),
        ModelWrapper::Unigram(m) => serde_json::to_value(m)
            .ok()?
            .get("unk_id")?
            .as_u64()
            .map(|i| i as u32),
    }
}
