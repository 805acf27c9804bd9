//! The `tokenizer.ggml.*` arrays of a GGUF file, rebuilt from a
//! `tokenizer.json` (what llama.cpp's converter does from a Hugging Face
//! folder).
//!
//! Byte-level BPE (`gpt2`): tokens by id, merges in rank order, added
//! special tokens as control tokens (type 3) and other added tokens as
//! user-defined (4); the `pre` type is the llama.cpp pre-tokenizer whose
//! Kiln pipeline ([`Tokenizer::from_gguf_vocab`]) has exactly this
//! `tokenizer.json`'s pre-tokenizer, so the file re-imports to the same
//! pipeline. SentencePiece BPE (`llama`, byte fallback): tokens, types
//! (unknown 2, control 3, user-defined 4, byte 6) and scores that order the
//! pieces as the merges do, so SentencePiece-style merging by score picks
//! the merges in rank order.

use crate::tokenizer::{GgufVocab, Tokenizer};
use serde_json::Value;

/// `tokenizer.ggml.token_type` values.
pub(super) const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
/// Padding entries added to reach the model's vocabulary size.
pub(super) const TYPE_UNUSED: i32 = 5;
const TYPE_BYTE: i32 = 6;

/// Score of the padding entries of a SentencePiece vocabulary, as
/// llama.cpp's converter writes them.
pub(super) const PAD_SCORE: f32 = -1000.0;

/// The `pre` names tried, one per distinct llama.cpp split behaviour, in
/// order of preference (`smollm` and `starcoder` split alike; so do the
/// `llama3` names).
const PRE_CANDIDATES: &[&str] = &[
    "gpt2",
    "smollm",
    "llama-bpe",
    "smaug-bpe",
    "qwen2",
    "default",
];

/// The `tokenizer.ggml.*` arrays and model facts derived from a `tokenizer.json`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Derived {
    /// `gpt2` or `llama`.
    pub model: &'static str,
    /// `tokenizer.ggml.pre` (byte-level BPE only).
    pub pre: Option<String>,
    /// Tokens by id.
    pub tokens: Vec<String>,
    /// Token types by id.
    pub token_types: Vec<i32>,
    /// Merges as `"left right"` (byte-level BPE only).
    pub merges: Option<Vec<String>>,
    /// Piece scores (SentencePiece only).
    pub scores: Option<Vec<f32>>,
    /// Whether a `▁` is prepended (SentencePiece only).
    pub add_space_prefix: Option<bool>,
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Tokens by id and merges in rank order (`None` when the model has no
/// merges list), read from `tokenizer.json` as the `tokenizers` crate
/// writes it.
pub(super) fn tokens_and_merges(
    json: &Value,
) -> Result<(Vec<String>, Option<Vec<String>>), String> {
    let model = json.get("model").ok_or("tokenizer.json has no 'model'")?;
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or("tokenizer.json's model has no 'vocab' object (GGUF export needs a BPE model)")?;
    let mut by_id: Vec<Option<String>> = Vec::new();
    let mut put = |id: u64, token: &str| -> Result<(), String> {
        let id = usize::try_from(id).map_err(|_| format!("token id {id} is too large"))?;
        if id >= by_id.len() {
            by_id.resize(id + 1, None);
        }
        match &by_id[id] {
            Some(other) if other != token => Err(format!(
                "id {id} is both '{other}' and '{token}' in tokenizer.json"
            )),
            _ => {
                by_id[id] = Some(token.to_string());
                Ok(())
            }
        }
    };
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            format!("vocabulary entry '{token}' has id {id}, expected an integer")
        })?;
        put(id, token)?;
    }
    for added in json
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            added.get("id").and_then(Value::as_u64),
            str_field(added, "content"),
        ) else {
            return Err(format!("added token {added} has no id or content"));
        };
        put(id, content)?;
    }
    let tokens = by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.ok_or_else(|| format!("no token has id {i} (ids must be 0..n without gaps)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let merges = match model.get("merges").and_then(Value::as_array) {
        None => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, m)| match m {
                    Value::String(s) => Ok(s.clone()),
                    Value::Array(pair) => match pair.as_slice() {
                        [Value::String(l), Value::String(r)] => Ok(format!("{l} {r}")),
                        _ => Err(format!("merge {i} is {m}, expected two strings")),
                    },
                    _ => Err(format!("merge {i} is {m}, expected two strings")),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok((tokens, merges))
}

/// Whether a pre-tokenizer (or any step of a sequence) is `ByteLevel`.
fn has_byte_level(v: &Value) -> bool {
    match str_field(v, "type") {
        Some("ByteLevel") => true,
        Some("Sequence") => v
            .get("pretokenizers")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(has_byte_level)),
        _ => false,
    }
}

/// The pre-tokenizer JSON and `ignore_merges` flag Kiln builds for `pre`.
fn candidate(pre: &str) -> Option<(Value, bool)> {
    let v = GgufVocab {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens: vec!["a".into()],
        merges: Some(Vec::new()),
        ..Default::default()
    };
    let json: Value =
        serde_json::from_str(&Tokenizer::from_gguf_vocab(&v).ok()?.to_json().ok()?).ok()?;
    let ignore = json["model"]["ignore_merges"].as_bool().unwrap_or(false);
    Some((json.get("pre_tokenizer")?.clone(), ignore))
}

/// The llama.cpp pre-tokenizer type that splits as this byte-level
/// `tokenizer.json` does.
fn pre_type(json: &Value) -> Result<String, String> {
    let want = json.get("pre_tokenizer").cloned().unwrap_or(Value::Null);
    let ignore = json["model"]["ignore_merges"].as_bool().unwrap_or(false);
    for name in PRE_CANDIDATES {
        if candidate(name).is_some_and(|(p, i)| p == want && i == ignore) {
            return Ok((*name).to_string());
        }
    }
    Err(format!(
        "its byte-level pre-tokenizer ({}, ignore_merges {ignore}) splits text like none of \
         llama.cpp's pre-tokenizer types Kiln knows ({})",
        compact(&want),
        PRE_CANDIDATES.join(", ")
    ))
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(200).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// Whether a SentencePiece pipeline prepends `▁`: a `Prepend("▁")`
/// normalizer, or a `Metaspace` pre-tokenizer that prepends.
fn prepends_space(json: &Value) -> bool {
    fn normalizer(v: &Value) -> bool {
        match str_field(v, "type") {
            Some("Prepend") => str_field(v, "prepend") == Some("▁"),
            Some("Sequence") => v
                .get("normalizers")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(normalizer)),
            _ => false,
        }
    }
    fn pre(v: &Value) -> bool {
        match str_field(v, "type") {
            Some("Metaspace") => str_field(v, "prepend_scheme")
                .map_or(v["add_prefix_space"].as_bool().unwrap_or(true), |s| {
                    s != "never"
                }),
            Some("Sequence") => v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(pre)),
            _ => false,
        }
    }
    json.get("normalizer").is_some_and(normalizer) || json.get("pre_tokenizer").is_some_and(pre)
}

/// Whether a token is one of SentencePiece's byte pieces (`<0x41>`).
fn is_byte_piece(t: &str) -> bool {
    t.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && t[3..5].chars().all(|c| c.is_ascii_hexdigit())
}

/// Derives the GGUF tokenizer arrays from `tokenizer.json` text.
pub(super) fn derive(tokenizer_json: &str) -> Result<Derived, String> {
    let json: Value =
        serde_json::from_str(tokenizer_json).map_err(|e| format!("not valid JSON: {e}"))?;
    let model_type = json["model"]["type"].as_str().unwrap_or("(none)");
    if model_type != "BPE" {
        return Err(format!(
            "its model is {model_type}; GGUF export writes BPE tokenizers (byte-level 'gpt2' or \
             SentencePiece 'llama')"
        ));
    }
    let (tokens, merges) = tokens_and_merges(&json)?;
    let merges = merges.unwrap_or_default();
    let mut types = vec![TYPE_NORMAL; tokens.len()];
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        // `tokens_and_merges` checked every id and content.
        let id = added["id"].as_u64().unwrap_or(0) as usize;
        types[id] = if added["special"].as_bool().unwrap_or(false) {
            TYPE_CONTROL
        } else {
            TYPE_USER_DEFINED
        };
    }
    let byte_level = json.get("pre_tokenizer").is_some_and(has_byte_level);
    let byte_fallback = json["model"]["byte_fallback"].as_bool().unwrap_or(false);
    if byte_level {
        return Ok(Derived {
            model: "gpt2",
            pre: Some(pre_type(&json)?),
            tokens,
            token_types: types,
            merges: Some(merges),
            scores: None,
            add_space_prefix: None,
        });
    }
    if !byte_fallback {
        return Err(
            "it is a BPE model with neither a ByteLevel pre-tokenizer (byte-level BPE, GGUF \
             'gpt2') nor byte fallback (SentencePiece BPE, GGUF 'llama')"
                .into(),
        );
    }
    // SentencePiece: a piece's score ranks the merge that forms it (the
    // first one, when several do); pieces no merge forms rank below all.
    let ids: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let floor = -(merges.len() as f32) - 1.0;
    let mut scores = vec![floor; tokens.len()];
    let mut scored = vec![false; tokens.len()];
    for (rank, m) in merges.iter().enumerate() {
        let piece: String = m.split(' ').collect();
        if let Some(&id) = ids.get(piece.as_str()) {
            if !scored[id] {
                scored[id] = true;
                scores[id] = -(rank as f32);
            }
        }
    }
    let unk = str_field(&json["model"], "unk_token").and_then(|t| ids.get(t).copied());
    for (i, t) in tokens.iter().enumerate() {
        if Some(i) == unk {
            types[i] = TYPE_UNKNOWN;
        } else if types[i] == TYPE_NORMAL && is_byte_piece(t) {
            types[i] = TYPE_BYTE;
        }
        if types[i] != TYPE_NORMAL {
            scores[i] = 0.0;
        }
    }
    Ok(Derived {
        model: "llama",
        pre: None,
        tokens,
        token_types: types,
        merges: None,
        scores: Some(scores),
        add_space_prefix: Some(prepends_space(&json)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: &GgufVocab, texts: &[&str]) -> Derived {
        let tok = Tokenizer::from_gguf_vocab(v).unwrap();
        let d = derive(&tok.to_json().unwrap()).unwrap();
        let back = GgufVocab {
            model: d.model.into(),
            pre: d.pre.clone(),
            tokens: d.tokens.clone(),
            scores: d.scores.clone(),
            token_types: Some(d.token_types.clone()),
            merges: d.merges.clone(),
            bos: v.bos,
            eos: v.eos,
            unk: v.unk,
            pad: v.pad,
            add_bos: v.add_bos,
            add_eos: v.add_eos,
            add_space_prefix: d.add_space_prefix,
        };
        let tok2 = Tokenizer::from_gguf_vocab(&back).unwrap();
        for t in texts {
            assert_eq!(
                tok.encode(t, true).unwrap(),
                tok2.encode(t, true).unwrap(),
                "{t:?}"
            );
        }
        d
    }

    #[test]
    fn byte_level_vocab_comes_back_with_its_pre_type() {
        let tokens: Vec<String> = [
            "<s>", "a", "b", "c", "Ġ", "1", "2", "ab", "Ġa", "Ġab", "abc", "<u>",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let merges = vec![
            "a b".to_string(),
            "Ġ a".into(),
            "Ġa b".into(),
            "ab c".into(),
        ];
        let mut types = vec![1; tokens.len()];
        types[0] = 3;
        types[11] = 4;
        for pre in [
            "smollm",
            "gpt2",
            "llama-bpe",
            "qwen2",
            "default",
            "smaug-bpe",
        ] {
            let v = GgufVocab {
                model: "gpt2".into(),
                pre: Some(pre.into()),
                tokens: tokens.clone(),
                token_types: Some(types.clone()),
                merges: Some(merges.clone()),
                bos: Some(0),
                add_bos: Some(true),
                ..Default::default()
            };
            let d = roundtrip(&v, &["abc ab a12 <s>ab<u>", " abcab  12"]);
            assert_eq!(d.model, "gpt2");
            assert_eq!(d.pre.as_deref(), Some(pre));
            assert_eq!(d.tokens, tokens);
            assert_eq!(d.token_types, types);
            assert_eq!(d.merges.as_ref(), Some(&merges));
        }
        // Other names that split alike are written as the preferred one.
        let v = GgufVocab {
            model: "gpt2".into(),
            pre: Some("starcoder".into()),
            tokens,
            merges: Some(merges),
            ..Default::default()
        };
        assert_eq!(roundtrip(&v, &["a1"]).pre.as_deref(), Some("smollm"));
    }

    #[test]
    fn sentencepiece_vocab_comes_back_with_scores_that_rank_its_merges() {
        let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        let pieces = [
            "▁", "a", "b", "c", "ab", "▁a", "▁ab", "bc", "abc", "▁abc", "ca",
        ];
        let scores_of = [
            -1.0f32, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0, -11.0,
        ];
        tokens.extend(pieces.iter().map(|s| s.to_string()));
        let mut types = vec![3, 3, 3];
        types[0] = 2;
        types.extend(std::iter::repeat_n(6, 256));
        types.extend(std::iter::repeat_n(1, pieces.len()));
        let mut scores = vec![0.0f32; 259];
        scores.extend(scores_of);
        let v = GgufVocab {
            model: "llama".into(),
            tokens: tokens.clone(),
            scores: Some(scores),
            token_types: Some(types.clone()),
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            ..Default::default()
        };
        let d = roundtrip(&v, &["abc cab abcabc", " a b c", "é ü abca", "bcbcab ab"]);
        assert_eq!(d.model, "llama");
        assert_eq!(d.tokens, tokens);
        assert_eq!(d.token_types, types);
        assert_eq!(d.add_space_prefix, Some(true));
    }

    #[test]
    fn non_bpe_models_are_refused_with_the_reason() {
        let json = r#"{"model": {"type": "WordPiece", "vocab": {"a": 0}}}"#;
        let e = derive(json).unwrap_err();
        assert!(e.contains("WordPiece"), "{e}");
    }
}
