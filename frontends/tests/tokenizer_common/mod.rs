//! Shared helpers of the tokenizer tests: where the cache and the reference
//! venv are, running `scripts/tokenizer_reference.py`, and comparing ids.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `$KILN_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/kiln` (as in scripts/setup.sh).
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("kiln");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/kiln")
}

/// The reference venv's python and the cache files a test needs, or the
/// reason the test cannot run.
pub fn requirements(files: &[&str]) -> Result<(PathBuf, Vec<PathBuf>), String> {
    let cache = cache_dir();
    let python = cache.join("venv/bin/python");
    if !python.exists() {
        return Err(format!(
            "reference venv not found at {} (run scripts/setup.sh)",
            python.display()
        ));
    }
    let mut paths = Vec::new();
    for f in files {
        let p = cache.join(f);
        if !p.exists() {
            return Err(format!("{} not found (run scripts/setup.sh)", p.display()));
        }
        paths.push(p);
    }
    Ok((python, paths))
}

/// Returns from the test with a printed reason when a requirement is missing.
#[macro_export]
macro_rules! require {
    ($files:expr) => {
        match tokenizer_common::requirements($files) {
            Ok(found) => found,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

/// Runs the reference script with `args`; panics with its stderr on failure.
pub fn reference(python: &Path, args: &[&std::ffi::OsStr]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tokenizer_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{} {:?} failed:\n{}",
        script.display(),
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a JSON file the reference wrote.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: bad JSON: {e}", path.display()))
}

/// A JSON list of id lists.
pub fn id_lists(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).expect("a list of id lists")
}

/// Reads a UTF-8 text file from the cache.
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The first `max` bytes of `text`, cut back to a character boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The first `n` sentences of `text` (split after ". "), for files that
/// hold a whole speech on one line.
pub fn sentences(text: &str, n: usize) -> Vec<String> {
    text.split_inclusive(". ")
        .map(|s| s.trim_end().to_string())
        .filter(|s| !s.is_empty())
        .take(n)
        .collect()
}

/// Text that exercises the pre-tokenizers: digits, contractions, runs of
/// spaces and newlines, tabs, punctuation, accents, CJK, emoji.
pub const TRICKY: &[&str] = &[
    "Hello world! 123",
    "  multiple   spaces",
    "Café déjà vu.",
    "The capital of France is",
    "I'm sure you've heard they'll say it's John's.",
    "I'M SURE YOU'VE HEARD THEY'LL SAY IT'S JOHN'S",
    "Numbers: 1234567, 3.14159, 1,000,000 and 42nd; ½ ² ٣.",
    "tabs\tand\t\ttabs, line\nbreaks\r\nand\n\n\nblank lines   \n  trailing",
    "emoji 🙂👍🏽 and CJK 東京は日本の首都です。 한국어 текст",
    "code: fn main() { let x = a[i] + b->c; } // ~!@#$%^&*()_+-=|\\",
    "   leading spaces and trailing spaces   ",
    "a",
    " ",
    "\u{00a0}non-breaking\u{2009}thin\u{3000}ideographic spaces",
    "mixed123numbers456and789letters0",
    "“Curly quotes” — em dash – en dash … ellipsis",
];

/// Compares id lists, printing where the first difference is.
pub fn assert_same_ids(what: &str, got: &[u32], want: &[u32]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(5);
    panic!(
        "{what}: ids differ at position {at} (got {} ids, reference {}):\n  got       {:?}\n  reference {:?}",
        got.len(),
        want.len(),
        &got[from..(at + 10).min(got.len())],
        &want[from..(at + 10).min(want.len())],
    );
}
