//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`).
//!
//! llama.cpp tokenizes with its own code; we build the `tokenizers` pipeline
//! that Hugging Face uses for the same model family, so both paths in Kiln run
//! one implementation:
//!
//! - `gpt2` (byte-level BPE): BPE over `tokens` and `merges`, the ByteLevel
//!   byte-to-character mapping, and a pre-tokenizer chosen by
//!   `tokenizer.ggml.pre` that splits text the way llama.cpp's regexes for
//!   that type do ([`SUPPORTED_PRE`]).
//! - `llama` (SentencePiece BPE): what transformers' `LlamaConverter` builds:
//!   BPE with merges derived from the piece scores, byte fallback, `▁` for
//!   spaces (and a leading `▁` unless `add_space_prefix` is false).
//!
//! Control tokens (type 3) and the unknown token (type 2, SentencePiece only)
//! become special added tokens and user-defined tokens (type 4) plain added
//! tokens; both are matched whole in the input, as llama.cpp matches
//! user-defined tokens always and control tokens when parsing specials.

use super::special::{post_processor, SpecialTokens};
use super::TokenizerError;
use std::cmp::Ordering;
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

/// The tokenizer part of a GGUF file's metadata, key by key
/// (`tokenizer.ggml.<key>`; `token_types` is `token_type`, the ids are
/// `bos_token_id`, `eos_token_id`, `unknown_token_id`, `padding_token_id`).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` or `llama` (others are rejected).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer type of a `gpt2` model.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece piece scores).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: `"left right"` pairs, highest priority first.
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece only).
    pub add_space_prefix: Option<bool>,
}

const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// GPT-2's split (llama.cpp's `gpt2` type); also what HF's ByteLevel
/// pre-tokenizer runs when `use_regex` is on.
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's split, as in its tokenizer.json (llama.cpp spells the
/// case-insensitive group out; same matches).
const LLAMA3_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: Llama 3's with single digits.
const QWEN2_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's `default` type: these run one after the other, each on the
/// pieces the previous one left.
const DEFAULT_RES: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    GPT2_RE,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// How a `gpt2`-model pre-tokenizer type splits text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SplitKind {
    /// GPT-2 regex (HF: ByteLevel with use_regex).
    Gpt2,
    /// Each digit alone, then the GPT-2 regex (HF SmolLM / StarCoder:
    /// Digits(individual_digits) + ByteLevel).
    DigitsGpt2,
    /// Llama 3 regex.
    Llama3,
    /// Qwen2 regex.
    Qwen2,
    /// llama.cpp's fallback regexes.
    Default,
}

/// One row of the pre-tokenizer table: name, split, whether whole-word
/// vocabulary hits skip the merges (llama.cpp's `ignore_merges`), and
/// llama.cpp's BOS default before `add_bos_token` is read.
struct PreType {
    name: &'static str,
    split: SplitKind,
    ignore_merges: bool,
    add_bos: bool,
}

const fn pre(name: &'static str, split: SplitKind, ignore_merges: bool, add_bos: bool) -> PreType {
    PreType {
        name,
        split,
        ignore_merges,
        add_bos,
    }
}

/// The `tokenizer.ggml.pre` names we map, following llama.cpp's
/// `llama_vocab::impl::load` (name -> type) and `llm_tokenizer_bpe` (type ->
/// regexes).
const PRE_TYPES: &[PreType] = &[
    pre("default", SplitKind::Default, false, false),
    pre("gpt2", SplitKind::Gpt2, false, false),
    pre("gpt-2", SplitKind::Gpt2, false, false),
    pre("phi-2", SplitKind::Gpt2, false, false),
    pre("mpt", SplitKind::Gpt2, false, false),
    pre("olmo", SplitKind::Gpt2, false, false),
    pre("smollm", SplitKind::DigitsGpt2, false, false),
    pre("starcoder", SplitKind::DigitsGpt2, false, false),
    pre("refact", SplitKind::DigitsGpt2, false, false),
    pre("codeshell", SplitKind::DigitsGpt2, false, false),
    pre("exaone", SplitKind::DigitsGpt2, false, false),
    pre("minerva-7b", SplitKind::DigitsGpt2, false, false),
    pre("llama3", SplitKind::Llama3, true, true),
    pre("llama-v3", SplitKind::Llama3, true, true),
    pre("llama-bpe", SplitKind::Llama3, true, true),
    pre("falcon3", SplitKind::Llama3, true, true),
    pre("dbrx", SplitKind::Llama3, false, false),
    pre("smaug-bpe", SplitKind::Llama3, false, false),
    pre("qwen2", SplitKind::Qwen2, false, false),
    pre("deepseek-r1-qwen", SplitKind::Qwen2, false, false),
    pre("megrez", SplitKind::Qwen2, false, false),
];

/// The `tokenizer.ggml.pre` names a `gpt2` model may have (plus none, which
/// llama.cpp treats as `default`).
pub const SUPPORTED_PRE: &[&str] = &[
    "default",
    "gpt2",
    "gpt-2",
    "phi-2",
    "mpt",
    "olmo",
    "smollm",
    "starcoder",
    "refact",
    "codeshell",
    "exaone",
    "minerva-7b",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "dbrx",
    "smaug-bpe",
    "qwen2",
    "deepseek-r1-qwen",
    "megrez",
];

fn invalid(msg: String) -> TokenizerError {
    TokenizerError::InvalidVocab(msg)
}

fn tk(what: &str) -> impl Fn(tokenizers::Error) -> TokenizerError + '_ {
    move |e| TokenizerError::Tokenizers(format!("{what}: {e}"))
}

/// Builds the pipeline and special-token facts `v` describes.
pub(crate) fn build(
    v: &GgufVocab,
) -> Result<(tokenizers::Tokenizer, SpecialTokens), TokenizerError> {
    check(v)?;
    match v.model.as_str() {
        "gpt2" => build_byte_level(v),
        "llama" => build_spm(v),
        other => Err(TokenizerError::UnsupportedModel(other.to_string())),
    }
}

/// Lengths agree and special ids are in range.
fn check(v: &GgufVocab) -> Result<(), TokenizerError> {
    let n = v.tokens.len();
    if n == 0 {
        return Err(invalid("tokenizer.ggml.tokens is empty".into()));
    }
    if let Some(s) = &v.scores {
        if s.len() != n {
            return Err(invalid(format!(
                "tokenizer.ggml.scores has {} entries, expected one per token ({n})",
                s.len()
            )));
        }
    }
    if let Some(t) = &v.token_types {
        if t.len() != n {
            return Err(invalid(format!(
                "tokenizer.ggml.token_type has {} entries, expected one per token ({n})",
                t.len()
            )));
        }
    }
    for (key, id) in [
        ("bos_token_id", v.bos),
        ("eos_token_id", v.eos),
        ("unknown_token_id", v.unk),
        ("padding_token_id", v.pad),
    ] {
        if let Some(id) = id {
            if id as usize >= n {
                return Err(invalid(format!(
                    "tokenizer.ggml.{key} is {id}, but there are only {n} tokens"
                )));
            }
        }
    }
    Ok(())
}

fn vocab_map(v: &GgufVocab) -> Vocab {
    // A repeated token string keeps its last id, as in llama.cpp's token_to_id.
    v.tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

fn token_type(v: &GgufVocab, id: usize) -> i32 {
    v.token_types
        .as_ref()
        .and_then(|t| t.get(id).copied())
        .unwrap_or(TYPE_NORMAL)
}

/// Registers control/unknown tokens as special and user-defined ones as
/// plain added tokens, all matched against the raw text.
fn add_tokens(tok: &mut tokenizers::Tokenizer, v: &GgufVocab, special_types: &[i32]) {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (i, t) in v.tokens.iter().enumerate() {
        let ty = token_type(v, i);
        if special_types.contains(&ty) {
            special.push(AddedToken::from(t.clone(), true).normalized(false));
        } else if ty == TYPE_USER_DEFINED {
            user.push(AddedToken::from(t.clone(), false).normalized(false));
        }
    }
    // Each takes the id the model already has for its text (with a repeated
    // text, the last one, as in llama.cpp).
    tok.add_special_tokens(&special);
    tok.add_tokens(&user);
}

fn split_regex(re: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    Split::new(
        SplitPattern::Regex(re.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map(PreTokenizerWrapper::Split)
    .map_err(tk("cannot compile pre-tokenizer regex"))
}

fn pre_tokenizer(split: SplitKind) -> Result<PreTokenizerWrapper, TokenizerError> {
    let byte_level =
        |use_regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, use_regex));
    Ok(match split {
        SplitKind::Gpt2 => byte_level(true),
        SplitKind::DigitsGpt2 => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level(true),
        ])),
        SplitKind::Llama3 => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            split_regex(LLAMA3_RE)?,
            byte_level(false),
        ])),
        SplitKind::Qwen2 => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            split_regex(QWEN2_RE)?,
            byte_level(false),
        ])),
        SplitKind::Default => {
            let mut seq = DEFAULT_RES
                .iter()
                .map(|re| split_regex(re))
                .collect::<Result<Vec<_>, _>>()?;
            seq.push(byte_level(false));
            PreTokenizerWrapper::Sequence(PreSequence::new(seq))
        }
    })
}

fn build_byte_level(
    v: &GgufVocab,
) -> Result<(tokenizers::Tokenizer, SpecialTokens), TokenizerError> {
    let pre_name = v
        .pre
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("default");
    let pre = PRE_TYPES
        .iter()
        .find(|p| p.name == pre_name)
        .ok_or_else(|| TokenizerError::UnsupportedPre(pre_name.to_string()))?;
    let raw_merges = v.merges.as_ref().ok_or_else(|| {
        invalid("tokenizer.ggml.merges is missing; a 'gpt2' tokenizer needs it".into())
    })?;
    let mut merges = Vec::with_capacity(raw_merges.len());
    for (i, m) in raw_merges.iter().enumerate() {
        let pair = m
            .split_once(' ')
            .filter(|(l, r)| !l.is_empty() && !r.is_empty() && !r.contains(' '));
        let Some((l, r)) = pair else {
            return Err(invalid(format!(
                "tokenizer.ggml.merges[{i}] is '{m}', expected two tokens and one space"
            )));
        };
        merges.push((l.to_string(), r.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(v), merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(tk(
            "cannot build the BPE model from tokenizer.ggml.tokens/merges",
        ))?;

    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer(pre.split)?));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))));
    add_tokens(&mut tok, v, &[TYPE_CONTROL]);
    let special = SpecialTokens {
        bos: v.bos,
        eos: v.eos,
        pad: v.pad,
        unk: v.unk,
        add_bos: v.add_bos.unwrap_or(pre.add_bos) && v.bos.is_some(),
        add_eos: v.add_eos.unwrap_or(false) && v.eos.is_some(),
    };
    let pp = post_processor(&tok, &special, true)?;
    tok.with_post_processor(pp);
    Ok((tok, special))
}

/// Merges in the order transformers' `SentencePieceExtractor` gives them:
/// for every piece (by id), each split into two pieces of the vocabulary
/// (ordered by the parts' ids), then all of them stably sorted by the
/// piece's score, highest first. Only normal pieces are merge results:
/// SentencePiece never forms control, byte or unknown pieces by merging.
fn spm_merges(v: &GgufVocab, scores: &[f32]) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(usize, usize, f32)> = Vec::new();
    for (i, piece) in v.tokens.iter().enumerate() {
        if token_type(v, i) != TYPE_NORMAL {
            continue;
        }
        let mut local: Vec<(usize, usize, f32)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let l = *ids.get(&piece[..at])?;
                let r = *ids.get(&piece[at..])?;
                Some((l, r, scores[i]))
            })
            .collect();
        local.sort_by_key(|&(l, r, _)| (l, r));
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(Ordering::Equal));
    merges
        .into_iter()
        .map(|(l, r, _)| (v.tokens[l].clone(), v.tokens[r].clone()))
        .collect()
}

fn build_spm(v: &GgufVocab) -> Result<(tokenizers::Tokenizer, SpecialTokens), TokenizerError> {
    let scores = v.scores.as_ref().ok_or_else(|| {
        invalid("tokenizer.ggml.scores is missing; a 'llama' tokenizer needs it".into())
    })?;
    let unk = v.unk.or_else(|| {
        (0..v.tokens.len())
            .find(|&i| token_type(v, i) == TYPE_UNKNOWN)
            .map(|i| i as u32)
    });
    let merges = spm_merges(v, scores);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_map(v), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk {
        builder = builder.unk_token(v.tokens[u as usize].clone());
    }
    let bpe = builder.build().map_err(tk(
        "cannot build the BPE model from tokenizer.ggml.tokens/scores",
    ))?;

    let space_prefix = v.add_space_prefix.unwrap_or(true);
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(tk("cannot build the space replacement"))
    };
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let spaces = NormalizerWrapper::Replace(replace(" ", "▁")?);
    tok.with_normalizer(Some(if space_prefix {
        NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new("▁".into())),
            spaces,
        ]))
    } else {
        spaces
    }));
    let mut decoders = vec![
        DecoderWrapper::Replace(replace("▁", " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tok.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    add_tokens(&mut tok, v, &[TYPE_CONTROL, TYPE_UNKNOWN]);
    let special = SpecialTokens {
        bos: v.bos,
        eos: v.eos,
        pad: v.pad,
        unk,
        add_bos: v.add_bos.unwrap_or(true) && v.bos.is_some(),
        add_eos: v.add_eos.unwrap_or(false) && v.eos.is_some(),
    };
    let pp = post_processor(&tok, &special, false)?;
    tok.with_post_processor(pp);
    Ok((tok, special))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_list_matches_table() {
        let names: Vec<&str> = PRE_TYPES.iter().map(|p| p.name).collect();
        assert_eq!(names, SUPPORTED_PRE);
    }

    #[test]
    fn pre_tokenizer_regexes_compile() {
        for p in PRE_TYPES {
            pre_tokenizer(p.split).unwrap();
        }
    }

    #[test]
    fn unsupported_model_is_named() {
        let v = GgufVocab {
            model: "t5".into(),
            tokens: vec!["a".into()],
            ..Default::default()
        };
        let e = build(&v).unwrap_err().to_string();
        assert!(e.contains("'t5'") && e.contains("gpt2"), "{e}");
    }

    #[test]
    fn unsupported_pre_is_named() {
        let v = GgufVocab {
            model: "gpt2".into(),
            pre: Some("tekken".into()),
            tokens: vec!["a".into()],
            merges: Some(vec![]),
            ..Default::default()
        };
        let e = build(&v).unwrap_err().to_string();
        assert!(e.contains("'tekken'") && e.contains("smollm"), "{e}");
    }

    #[test]
    fn bad_merge_names_its_index() {
        let v = GgufVocab {
            model: "gpt2".into(),
            pre: Some("gpt2".into()),
            tokens: vec!["a".into(), "b".into(), "ab".into()],
            merges: Some(vec!["a b".into(), "ab".into()]),
            ..Default::default()
        };
        let e = build(&v).unwrap_err().to_string();
        assert!(e.contains("merges[1]"), "{e}");
    }

    #[test]
    fn special_id_out_of_range() {
        let v = GgufVocab {
            model: "gpt2".into(),
            tokens: vec!["a".into()],
            merges: Some(vec![]),
            bos: Some(5),
            ..Default::default()
        };
        let e = build(&v).unwrap_err().to_string();
        assert!(e.contains("bos_token_id is 5"), "{e}");
    }
}
