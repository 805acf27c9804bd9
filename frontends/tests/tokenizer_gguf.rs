//! The GGUF byte-level BPE path against an independent Python BPE
//! (`scripts/tokenizer_reference.py gguf-bpe`: the `regex` module with
//! llama.cpp's pre-tokenizer regexes, GPT-2's byte table, merge ranks from
//! the file) over SmolLM2's vocabulary.
//!
//! Needs `$KILN_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf`, the texts in
//! `$KILN_CACHE/data` and the reference venv; skips with a reason otherwise.

mod tokenizer_common;

use kiln_frontends::tokenizer::{GgufVocab, Tokenizer};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::OnceLock;
use tokenizer_common::*;

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const MOBY: &str = "data/moby_dick.txt";
const SOTU: &str = "data/sotu/2021_joseph_r_biden_d.txt";

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The file's tokenizer metadata, as the reference dumps it; dumped once
/// per test binary (the tests share it).
fn load_vocab(python: &Path, model: &Path) -> GgufVocab {
    static VOCAB: OnceLock<GgufVocab> = OnceLock::new();
    VOCAB
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("vocab.json");
            reference(
                python,
                &[os("gguf-vocab"), model.as_os_str(), out.as_os_str()],
            );
            let text = std::fs::read_to_string(&out).expect("vocab.json");
            serde_json::from_str(&text).expect("vocab.json deserialises into GgufVocab")
        })
        .clone()
}

/// Reference ids of the texts (one list per text) with pre-tokenizer `pre`
/// (None: the file's own).
fn reference_ids(
    python: &Path,
    model: &Path,
    dir: &Path,
    texts: &[&str],
    pre: Option<&str>,
) -> Vec<Vec<u32>> {
    let input = dir.join("texts.json");
    let out = dir.join("ids.json");
    std::fs::write(&input, serde_json::to_string(texts).unwrap()).unwrap();
    let mut args = vec![
        os("gguf-bpe"),
        model.as_os_str(),
        input.as_os_str(),
        out.as_os_str(),
    ];
    if let Some(p) = pre {
        args.extend([os("--pre"), os(p)]);
    }
    reference(python, &args);
    id_lists(&read_json(&out)["texts"])
}

#[test]
fn smollm2_gguf_matches_reference_bpe() {
    let (python, paths) = require!(&[MODEL, MOBY, SOTU]);
    let dir = tempfile::tempdir().unwrap();
    let vocab = load_vocab(&python, &paths[0]);
    assert_eq!(vocab.model, "gpt2");
    assert_eq!(vocab.pre.as_deref(), Some("smollm"));
    let tok = Tokenizer::from_gguf_vocab(&vocab).expect("SmolLM2 tokenizer builds");
    assert_eq!(tok.vocab_size(), vocab.tokens.len());

    let moby = read_text(&paths[1]);
    let sotu = read_text(&paths[2]);
    let moby = prefix(&moby, 100_000);
    let mut texts: Vec<&str> = vec![moby, &sotu];
    texts.extend(TRICKY);
    let want = reference_ids(&python, &paths[0], dir.path(), &texts, None);

    let mut total = 0;
    for (i, (text, want)) in texts.iter().zip(&want).enumerate() {
        let got = tok.encode(text, false).unwrap();
        assert_same_ids(&format!("text {i} ({:?}...)", prefix(text, 40)), &got, want);
        // SmolLM2's GGUF says add_bos_token = false: specials change nothing.
        assert_eq!(tok.encode(text, true).unwrap(), got);
        total += got.len();
    }
    eprintln!(
        "checked: SmolLM2 GGUF vocab (pre 'smollm') vs the Python BPE on moby_dick.txt first {} bytes ({} tokens), {} ({} bytes, {} tokens) and {} short texts; {total} tokens in all",
        moby.len(),
        want[0].len(),
        SOTU,
        sotu.len(),
        want[1].len(),
        TRICKY.len()
    );
}

#[test]
fn other_pre_types_match_reference_bpe() {
    // Same vocabulary, other split rules: checks that each mapped
    // pre-tokenizer splits as llama.cpp's regexes do (run by Python's `regex`).
    let (python, paths) = require!(&[MODEL, MOBY]);
    let dir = tempfile::tempdir().unwrap();
    let mut vocab = load_vocab(&python, &paths[0]);
    let moby = read_text(&paths[1]);
    let mut texts: Vec<&str> = vec![prefix(&moby, 30_000)];
    texts.extend(TRICKY);
    for pre in ["gpt2", "llama3", "qwen2", "default"] {
        vocab.pre = Some(pre.to_string());
        let tok = Tokenizer::from_gguf_vocab(&vocab).unwrap();
        let want = reference_ids(&python, &paths[0], dir.path(), &texts, Some(pre));
        for (i, (text, want)) in texts.iter().zip(&want).enumerate() {
            let got = tok.encode(text, false).unwrap();
            assert_same_ids(
                &format!("pre '{pre}', text {i} ({:?})", prefix(text, 40)),
                &got,
                want,
            );
        }
        eprintln!(
            "checked: pre '{pre}' on moby_dick.txt first 30000 bytes ({} tokens) and {} short texts",
            want[0].len(),
            TRICKY.len()
        );
    }
}

#[test]
fn smollm2_special_tokens_and_chat_text() {
    let (python, paths) = require!(&[MODEL]);
    let dir = tempfile::tempdir().unwrap();
    let vocab = load_vocab(&python, &paths[0]);
    let tok = Tokenizer::from_gguf_vocab(&vocab).unwrap();
    // Ids from the file's metadata.
    assert_eq!(tok.bos_id(), vocab.bos);
    assert_eq!(tok.eos_id(), vocab.eos);
    assert_eq!(tok.pad_id(), vocab.pad);
    assert_eq!(tok.add_bos(), vocab.add_bos.unwrap_or(false));

    // Control tokens are matched whole; the text between them is BPE'd as
    // the reference does.
    let start = vocab
        .tokens
        .iter()
        .position(|t| t == "<|im_start|>")
        .unwrap() as u32;
    let end = vocab.tokens.iter().position(|t| t == "<|im_end|>").unwrap() as u32;
    let parts = [
        "system\nYou are a helpful AI assistant named SmolLM",
        "\n",
        "user\nWhat is 12+30?",
    ];
    let want_parts = reference_ids(&python, &paths[0], dir.path(), &parts, None);
    let text = format!(
        "<|im_start|>{}<|im_end|>{}<|im_start|>{}<|im_end|>",
        parts[0], parts[1], parts[2]
    );
    let mut want = vec![start];
    want.extend(&want_parts[0]);
    want.push(end);
    want.extend(&want_parts[1]);
    want.push(start);
    want.extend(&want_parts[2]);
    want.push(end);
    let got = tok.encode(&text, false).unwrap();
    assert_same_ids("chat text", &got, &want);
    assert_eq!(tok.decode(&got).unwrap(), text);
    eprintln!(
        "checked: chat text with <|im_start|>/<|im_end|> ({} tokens)",
        got.len()
    );
}

#[test]
fn byte_level_decode_inverts_encode() {
    let (python, paths) = require!(&[MODEL, MOBY, SOTU]);
    let tok = Tokenizer::from_gguf_vocab(&load_vocab(&python, &paths[0])).unwrap();
    let moby = read_text(&paths[1]);
    let sotu = read_text(&paths[2]);
    let mut texts: Vec<&str> = vec![prefix(&moby, 100_000), &sotu];
    texts.extend(TRICKY);
    for text in &texts {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(&tok.decode(&ids).unwrap(), text);
    }
    let batch = tok.encode_batch(&texts, false).unwrap();
    for (text, ids) in texts.iter().zip(&batch) {
        assert_eq!(ids, &tok.encode(text, false).unwrap());
    }
    eprintln!(
        "checked: decode(encode(x)) == x and encode_batch == encode on {} texts",
        texts.len()
    );
}

#[test]
fn to_json_reloads_to_the_same_ids() {
    let (python, paths) = require!(&[MODEL, MOBY]);
    let vocab = load_vocab(&python, &paths[0]);
    let moby = read_text(&paths[1]);
    let text = prefix(&moby, 100_000);
    for pre in ["smollm", "llama3"] {
        let mut v = vocab.clone();
        v.pre = Some(pre.into());
        if pre == "llama3" {
            // llama3 adds BOS when the file does not say: the template must
            // survive the trip.
            v.add_bos = None;
        }
        let tok = Tokenizer::from_gguf_vocab(&v).unwrap();
        let json = tok.to_json().unwrap();
        let back = Tokenizer::from_json_bytes(json.as_bytes()).unwrap();
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(back.encode(text, true).unwrap(), ids, "pre {pre}");
        assert_eq!(
            back.encode(text, false).unwrap(),
            tok.encode(text, false).unwrap()
        );
        assert_eq!(back.add_bos(), tok.add_bos());
        assert_eq!(back.vocab_size(), tok.vocab_size());
        assert_eq!(back.to_json().unwrap(), json, "pre {pre}: JSON is stable");
        let with_cfg =
            Tokenizer::from_json_and_config(json.as_bytes(), Some(tok.to_config_json().as_bytes()))
                .unwrap();
        assert_eq!(with_cfg.special_tokens(), tok.special_tokens(), "pre {pre}");
        assert_eq!(with_cfg.encode(text, true).unwrap(), ids);
        if pre == "llama3" {
            assert!(tok.add_bos());
            assert_eq!(ids[0], vocab.bos.unwrap());
        }
        eprintln!(
            "checked: to_json round trip, pre '{pre}', {} tokens, {} bytes of JSON",
            ids.len(),
            json.len()
        );
    }
}

#[test]
fn config_add_bos_token_changes_encoding() {
    let (python, paths) = require!(&[MODEL]);
    let tok = Tokenizer::from_gguf_vocab(&load_vocab(&python, &paths[0])).unwrap();
    let json = tok.to_json().unwrap();
    let cfg = r#"{"bos_token": "<|im_start|>", "add_bos_token": true, "eos_token": {"content": "<|im_end|>"}}"#;
    let with = Tokenizer::from_json_and_config(json.as_bytes(), Some(cfg.as_bytes())).unwrap();
    let plain = tok.encode("Hello world", false).unwrap();
    let mut want = vec![tok.token_to_id("<|im_start|>").unwrap()];
    want.extend(&plain);
    assert_eq!(with.encode("Hello world", true).unwrap(), want);
    assert!(with.add_bos() && !with.add_eos());
    assert_eq!(with.eos_id(), tok.token_to_id("<|im_end|>"));

    let bad = r#"{"bos_token": "<no such token>"}"#;
    let e = Tokenizer::from_json_and_config(json.as_bytes(), Some(bad.as_bytes()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bos_token") && e.contains("<no such token>"),
        "{e}"
    );
}
