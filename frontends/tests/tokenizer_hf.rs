//! The tokenizer.json path against the Python `tokenizers` package
//! (`scripts/tokenizer_reference.py hf`), on all-MiniLM-L6-v2's tokenizer.
//!
//! Needs `$KILN_CACHE/models/all-minilm-l6-v2/tokenizer.json`, the texts in
//! `$KILN_CACHE/data` and the reference venv; skips with a reason otherwise.

mod tokenizer_common;

use kiln_frontends::tokenizer::Tokenizer;
use std::ffi::OsStr;
use tokenizer_common::*;

const TOKENIZER: &str = "models/all-minilm-l6-v2/tokenizer.json";
const MOBY: &str = "data/moby_dick.txt";
const SOTU: &str = "data/sotu/2021_joseph_r_biden_d.txt";

#[test]
fn minilm_matches_hf_tokenizers_line_by_line() {
    let (python, paths) = require!(&[TOKENIZER, MOBY, SOTU]);
    let dir = tempfile::tempdir().unwrap();
    let tok = Tokenizer::from_file(&paths[0]).expect("MiniLM tokenizer.json loads");

    let moby = read_text(&paths[1]);
    let mut lines: Vec<String> = moby.split('\n').take(200).map(str::to_string).collect();
    let n_moby = lines.len();
    lines.extend(sentences(&read_text(&paths[2]), 100));
    lines.extend(TRICKY.iter().map(|s| s.to_string()));
    let input = dir.path().join("lines.json");
    let out = dir.path().join("ids.json");
    std::fs::write(&input, serde_json::to_string(&lines).unwrap()).unwrap();
    reference(
        &python,
        &[
            OsStr::new("hf"),
            paths[0].as_os_str(),
            input.as_os_str(),
            out.as_os_str(),
        ],
    );
    let want = id_lists(&read_json(&out)["texts"]);
    assert_eq!(want.len(), lines.len());

    let mut total = 0;
    for (i, (line, want)) in lines.iter().zip(&want).enumerate() {
        let got = tok.encode(line, true).unwrap();
        assert_same_ids(&format!("line {i} ({:?})", prefix(line, 40)), &got, want);
        total += got.len();
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(tok.encode_batch(&refs, true).unwrap(), want);
    eprintln!(
        "checked: MiniLM tokenizer.json vs Python tokenizers on moby_dick.txt lines 1-{n_moby}, the first 100 sentences of {SOTU} and {} short texts ({} texts, {total} tokens, special tokens added)",
        TRICKY.len(),
        lines.len()
    );
}

#[test]
fn minilm_special_tokens_come_from_the_files() {
    let (_python, paths) = require!(&[TOKENIZER]);
    let tok = Tokenizer::from_file(&paths[0]).unwrap();
    // The ids the file itself gives these tokens.
    let file: serde_json::Value =
        serde_json::from_str(&read_text(&paths[0])).expect("tokenizer.json is JSON");
    let id_of = |content: &str| -> u32 {
        file["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["content"] == content)
            .and_then(|t| t["id"].as_u64())
            .unwrap_or_else(|| panic!("{content} in added_tokens")) as u32
    };
    assert_eq!(tok.bos_id(), Some(id_of("[CLS]")));
    assert_eq!(tok.eos_id(), Some(id_of("[SEP]")));
    assert_eq!(tok.pad_id(), Some(id_of("[PAD]")));
    assert_eq!(tok.unk_id(), Some(id_of("[UNK]")));
    assert!(tok.add_bos() && tok.add_eos());
    // Padding is not applied by encode, but survives to_json.
    let ids = tok.encode("hello", true).unwrap();
    assert_eq!(ids.first(), Some(&id_of("[CLS]")));
    assert_eq!(ids.last(), Some(&id_of("[SEP]")));
    assert!(ids.len() < 10);
    let json = tok.to_json().unwrap();
    let reparsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(reparsed["padding"], file["padding"]);
    for key in ["max_length", "strategy", "stride"] {
        assert_eq!(
            reparsed["truncation"][key], file["truncation"][key],
            "truncation {key}"
        );
    }
    let back = Tokenizer::from_json_bytes(json.as_bytes()).unwrap();
    assert_eq!(back.special_tokens(), tok.special_tokens());
    assert_eq!(
        back.encode("Call me Ishmael.", true).unwrap(),
        tok.encode("Call me Ishmael.", true).unwrap()
    );
    eprintln!("checked: MiniLM CLS/SEP/PAD/UNK ids against the file's added_tokens; to_json keeps padding and truncation");
}

#[test]
fn unreadable_files_are_named() {
    let e = Tokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/tokenizer.json"), "{e}");
    let e = Tokenizer::from_json_bytes(b"{\"model\": 3}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}
