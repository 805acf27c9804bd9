#!/usr/bin/env python3
"""Reference token ids for Kiln's tokenizer tests (frontends/tests/tokenizer_*.rs).

Usage:
  tokenizer_reference.py gguf-vocab MODEL.gguf OUT.json
      Dumps the tokenizer.ggml.* metadata of a GGUF file as JSON with the field
      names of kiln_frontends::tokenizer::GgufVocab.
  tokenizer_reference.py gguf-bpe MODEL.gguf TEXT_FILE OUT.json [--pre NAME] [--lines]
      Token ids from an independent pure-Python byte-level BPE over the GGUF
      vocabulary: the pre-tokenizer regexes of llama.cpp (src/llama-vocab.cpp)
      for the pre-tokenizer type (default: the file's tokenizer.ggml.pre), run
      with the `regex` module; GPT-2's bytes_to_unicode; merge ranks from
      tokenizer.ggml.merges. No special tokens are added or matched.
  tokenizer_reference.py hf TOKENIZER_JSON TEXT_FILE OUT.json [--lines]
      Ids from the Python `tokenizers` package, encode(add_special_tokens=True),
      with the file's padding turned off (truncation stays as the file says).
  tokenizer_reference.py spm TRAIN_DIR TEXT_FILE OUT_DIR [--train-files N] [--vocab-size N]
      Trains a small SentencePiece BPE model (byte_fallback, LLaMA-style options)
      on the first N files (sorted) of TRAIN_DIR, then writes
        OUT_DIR/spm.model   the model
        OUT_DIR/vocab.json  its pieces as a GgufVocab, as llama.cpp's converter
                            exports them (token_type 1 normal, 2 unknown,
                            3 control, 4 user-defined, 5 unused, 6 byte)
        OUT_DIR/ids.json    {"lines": [...], "lines_bos": [...], "decoded": [...]}:
                            sentencepiece's own ids for each line of TEXT_FILE
                            (or each string of a .json TEXT_FILE), without and
                            with BOS, and its decoding of the former.

TEXT_FILE is read as UTF-8 bytes with no newline translation. Without --lines
the output is {"ids": [...]} for the whole text; with --lines it is
{"lines": [[...], ...]}, one list per line (split on "\\n" only, the newline
not included). A TEXT_FILE ending in .json holds a JSON list of strings
instead, and the output is {"texts": [[...], ...]}, one list per string.
"""
from __future__ import annotations

import json
import os
import sys
from functools import lru_cache


def read_text(path: str):
    """The text, or a list of texts for a .json file."""
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    if path.endswith(".json"):
        texts = json.loads(data)
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise SystemExit(f"{path}: expected a JSON list of strings")
        return texts
    return data


def run_on(text, encode, by_lines: bool) -> dict:
    if isinstance(text, list):
        return {"texts": [encode(t) for t in text]}
    if by_lines:
        return {"lines": [encode(line) for line in split_lines(text)]}
    return {"ids": encode(text)}


def split_lines(text: str) -> list[str]:
    return text.split("\n")


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


# ---------------------------------------------------------------- GGUF metadata


def gguf_fields(path: str) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml."):
            out[key[len("tokenizer.ggml."):]] = field.contents()
    return out


def gguf_vocab(path: str) -> dict:
    f = gguf_fields(path)

    def opt(key, conv=lambda x: x):
        return conv(f[key]) if key in f else None

    return {
        "model": str(f["model"]),
        "pre": opt("pre", str),
        "tokens": [str(t) for t in f["tokens"]],
        "scores": opt("scores", lambda s: [float(x) for x in s]),
        "token_types": opt("token_type", lambda s: [int(x) for x in s]),
        "merges": opt("merges", lambda s: [str(x) for x in s]),
        "bos": opt("bos_token_id", int),
        "eos": opt("eos_token_id", int),
        "unk": opt("unknown_token_id", int),
        "pad": opt("padding_token_id", int),
        "add_bos": opt("add_bos_token", bool),
        "add_eos": opt("add_eos_token", bool),
        "add_space_prefix": opt("add_space_prefix", bool),
    }


# ------------------------------------------------ independent byte-level BPE

# llama.cpp's regexes per pre-tokenizer type (src/llama-vocab.cpp,
# llm_tokenizer_bpe). Each is applied in turn to the pieces left by the
# previous one; text between matches stays a piece of its own.
GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_RE = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_REGEXES = {
    "smollm": [r"\p{N}", GPT2_RE],
    "gpt2": [GPT2_RE],
    "llama3": [LLAMA3_RE],
    "qwen2": [QWEN2_RE],
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2_RE, r"\p{N}+", r"[0-9][0-9][0-9]"],
}
PRE_ALIASES = {
    "starcoder": "smollm", "refact": "smollm", "codeshell": "smollm", "exaone": "smollm",
    "minerva-7b": "smollm", "gpt-2": "gpt2", "phi-2": "gpt2", "mpt": "gpt2", "olmo": "gpt2",
    "llama-bpe": "llama3", "llama-v3": "llama3", "falcon3": "llama3", "dbrx": "llama3",
    "smaug-bpe": "llama3", "deepseek-r1-qwen": "qwen2", "megrez": "qwen2",
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def regex_split(pieces: list[str], pattern) -> list[str]:
    out = []
    for piece in pieces:
        pos = 0
        for m in pattern.finditer(piece):
            if m.start() > pos:
                out.append(piece[pos:m.start()])
            if m.end() > m.start():
                out.append(m.group())
            pos = m.end()
        if pos < len(piece):
            out.append(piece[pos:])
    return out


def gguf_bpe(path: str, text, pre: str | None, by_lines: bool) -> dict:
    import regex

    f = gguf_fields(path)
    if str(f["model"]) != "gpt2":
        raise SystemExit(f"{path}: tokenizer.ggml.model is {f['model']!r}, this mode needs 'gpt2'")
    pre = pre or str(f.get("pre", "default"))
    pre = PRE_ALIASES.get(pre, pre)
    if pre not in PRE_REGEXES:
        raise SystemExit(f"pre-tokenizer {pre!r} has no reference regexes here")
    patterns = [regex.compile(r) for r in PRE_REGEXES[pre]]

    tokens = [str(t) for t in f["tokens"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    ranks = {}
    for rank, merge in enumerate(f["merges"]):
        left, right = str(merge).split(" ")
        ranks[(left, right)] = rank
    byte_map = bytes_to_unicode()
    # llama3-type vocabularies ignore the merges for words already in the vocabulary.
    ignore_merges = pre == "llama3"

    @lru_cache(maxsize=None)
    def bpe(word: str) -> tuple[int, ...]:
        if ignore_merges and word in vocab:
            return (vocab[word],)
        symbols = list(word)
        while len(symbols) > 1:
            best = None
            for i in range(len(symbols) - 1):
                r = ranks.get((symbols[i], symbols[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            pair = (symbols[best[1]], symbols[best[1] + 1])
            # GPT-2's rule: merge every occurrence of the best pair, left to right.
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == pair:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(vocab[s] for s in symbols)

    def encode(t: str) -> list[int]:
        pieces = [t] if t else []
        for p in patterns:
            pieces = regex_split(pieces, p)
        ids = []
        for piece in pieces:
            word = "".join(byte_map[b] for b in piece.encode("utf-8"))
            ids.extend(bpe(word))
        return ids

    return run_on(text, encode, by_lines)


# ------------------------------------------------------------ HF tokenizers


def hf(tokenizer_json: str, text, by_lines: bool) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_json)
    tok.no_padding()

    def encode(t: str) -> list[int]:
        return tok.encode(t, add_special_tokens=True).ids

    return run_on(text, encode, by_lines)


# ------------------------------------------------------------- SentencePiece


def spm(train_dir: str, text: str, out_dir: str, train_files: int, vocab_size: int) -> None:
    import sentencepiece as sp

    os.makedirs(out_dir, exist_ok=True)
    files = sorted(
        os.path.join(train_dir, n) for n in os.listdir(train_dir) if n.endswith(".txt")
    )[:train_files]
    if not files:
        raise SystemExit(f"{train_dir}: no .txt files to train on")
    sp.set_random_generator_seed(1234)
    prefix = os.path.join(out_dir, "spm")
    # LLaMA's trainer options, scaled down; one thread and no sampling so the
    # model is the same on every run.
    sp.SentencePieceTrainer.train(
        input=",".join(files),
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        character_coverage=0.9995,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=100000,
        num_threads=1,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    proc = sp.SentencePieceProcessor(model_file=prefix + ".model")

    tokens, scores, types = [], [], []
    for i in range(proc.get_piece_size()):
        tokens.append(proc.id_to_piece(i))
        scores.append(float(proc.get_score(i)))
        # Same order of checks as llama.cpp's convert_hf_to_gguf.py (_create_vocab_sentencepiece).
        if proc.is_unknown(i):
            t = 2
        elif proc.is_control(i):
            t = 3
        elif proc.is_unused(i):
            t = 5
        elif proc.is_byte(i):
            t = 6
        else:
            t = 1
        types.append(t)
    vocab = {
        "model": "llama",
        "pre": "default",
        "tokens": tokens,
        "scores": scores,
        "token_types": types,
        "merges": None,
        "bos": proc.bos_id(),
        "eos": proc.eos_id(),
        "unk": proc.unk_id(),
        "pad": None,
        "add_bos": True,
        "add_eos": False,
        "add_space_prefix": True,
    }
    write_json(os.path.join(out_dir, "vocab.json"), vocab)
    lines = text if isinstance(text, list) else split_lines(text)
    ids = [proc.encode(line) for line in lines]
    write_json(
        os.path.join(out_dir, "ids.json"),
        {
            "lines": ids,
            "lines_bos": [proc.encode(line, add_bos=True) for line in lines],
            "decoded": [proc.decode(i) for i in ids],
        },
    )


def main(argv: list[str]) -> None:
    flags = {}
    i = 0
    rest = argv[:]
    args = []
    while i < len(rest):
        a = rest[i]
        if a == "--lines":
            flags["lines"] = True
        elif a in ("--pre", "--train-files", "--vocab-size"):
            if i + 1 >= len(rest):
                raise SystemExit(f"{a} needs a value")
            flags[a[2:]] = rest[i + 1]
            i += 1
        elif a.startswith("--"):
            raise SystemExit(f"unknown option {a}\n{__doc__}")
        else:
            args.append(a)
        i += 1
    if not args:
        raise SystemExit(__doc__)
    mode, args = args[0], args[1:]
    if mode == "gguf-vocab" and len(args) == 2:
        write_json(args[1], gguf_vocab(args[0]))
    elif mode == "gguf-bpe" and len(args) == 3:
        write_json(args[2], gguf_bpe(args[0], read_text(args[1]), flags.get("pre"), "lines" in flags))
    elif mode == "hf" and len(args) == 3:
        write_json(args[2], hf(args[0], read_text(args[1]), "lines" in flags))
    elif mode == "spm" and len(args) == 3:
        spm(
            args[0],
            read_text(args[1]),
            args[2],
            int(flags.get("train-files", 12)),
            int(flags.get("vocab-size", 2000)),
        )
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
