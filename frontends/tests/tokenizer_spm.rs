//! The GGUF SentencePiece (`llama`) path against sentencepiece itself: a
//! small BPE model trained on State of the Union texts by
//! `scripts/tokenizer_reference.py spm`, exported as llama.cpp's converter
//! would, and sentencepiece's own ids for a few hundred lines.
//!
//! Needs the texts in `$KILN_CACHE/data` and the reference venv; skips with a
//! reason otherwise.

mod tokenizer_common;

use kiln_frontends::tokenizer::{GgufVocab, Tokenizer};
use std::ffi::OsStr;
use tokenizer_common::*;

const MOBY: &str = "data/moby_dick.txt";
const SOTU_DIR: &str = "data/sotu";
const SOTU: &str = "data/sotu/2021_joseph_r_biden_d.txt";

#[test]
fn spm_bpe_matches_sentencepiece() {
    let (python, paths) = require!(&[MOBY, SOTU_DIR, SOTU]);
    let dir = tempfile::tempdir().unwrap();

    let moby = read_text(&paths[0]);
    let mut lines: Vec<String> = moby.split('\n').take(300).map(str::to_string).collect();
    lines.extend(sentences(&read_text(&paths[2]), 100));
    lines.extend(TRICKY.iter().map(|s| s.replace(['\n', '\r'], " ")));
    let input = dir.path().join("lines.json");
    std::fs::write(&input, serde_json::to_string(&lines).unwrap()).unwrap();
    let out = dir.path().join("spm");
    reference(
        &python,
        &[
            OsStr::new("spm"),
            paths[1].as_os_str(),
            input.as_os_str(),
            out.as_os_str(),
        ],
    );
    let vocab: GgufVocab = serde_json::from_str(&read_text(&out.join("vocab.json")))
        .expect("vocab.json is a GgufVocab");
    let refs = read_json(&out.join("ids.json"));
    let want = id_lists(&refs["lines"]);
    let want_bos = id_lists(&refs["lines_bos"]);
    let decoded: Vec<String> = serde_json::from_value(refs["decoded"].clone()).unwrap();

    let tok = Tokenizer::from_gguf_vocab(&vocab).expect("SentencePiece vocabulary builds");
    assert!(tok.add_bos());
    assert_eq!(tok.bos_id(), vocab.bos);
    let mut total = 0;
    let mut byte_fallbacks = 0;
    for (i, line) in lines.iter().enumerate() {
        let got = tok.encode(line, false).unwrap();
        assert_same_ids(
            &format!("line {i} ({:?})", prefix(line, 40)),
            &got,
            &want[i],
        );
        assert_same_ids(
            &format!("line {i} with BOS"),
            &tok.encode(line, true).unwrap(),
            &want_bos[i],
        );
        assert_eq!(
            tok.decode_with(&got, true).unwrap(),
            decoded[i],
            "decode of line {i}"
        );
        total += got.len();
        byte_fallbacks += got
            .iter()
            .filter(|&&id| vocab.token_types.as_ref().unwrap()[id as usize] == 6)
            .count();
    }
    assert!(
        byte_fallbacks > 0,
        "the texts should exercise byte fallback"
    );

    let json = tok.to_json().unwrap();
    let back = Tokenizer::from_json_bytes(json.as_bytes()).unwrap();
    for line in &lines {
        assert_eq!(
            back.encode(line, true).unwrap(),
            tok.encode(line, true).unwrap()
        );
    }
    assert_eq!(back.add_bos(), tok.add_bos());
    assert_eq!(back.bos_id(), tok.bos_id());

    eprintln!(
        "checked: SentencePiece BPE ({} pieces, trained on the first 12 SOTU files) vs sentencepiece on moby_dick.txt lines 1-300, the first 100 sentences of {SOTU} and {} short texts: {} lines, {total} tokens ({byte_fallbacks} byte-fallback), with and without BOS, decode, and the to_json round trip",
        vocab.tokens.len(),
        TRICKY.len(),
        lines.len()
    );
}
