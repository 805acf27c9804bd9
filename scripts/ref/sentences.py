"""Picks 100 real English sentences from Moby-Dick, deterministically.

Usage: sentences.py CACHE OUT.txt

CACHE is the Kiln cache dir (reads CACHE/data/moby_dick.txt). Definition:
  1. read the file as UTF-8 and drop every chapter heading line (a line that
     matches ^CHAPTER <n>. ...);
  2. join what is left and collapse every whitespace run to one space;
  3. split after '.', '!' or '?' when whitespace follows (the regex
     (?<=[.!?])\\s+), strip each piece;
  4. keep pieces of 40..400 characters (Unicode code points, inclusive);
  5. write the first 100, one per line, UTF-8, '\\n' line ends.
"""
import re
import sys
from pathlib import Path

COUNT = 100
MIN_CHARS = 40
MAX_CHARS = 400
HEADING = re.compile(r"^CHAPTER \d+\.")


def sentences(text: str) -> list[str]:
    """Returns the sentences of `text` that pass the length filter, in order."""
    body = "\n".join(line for line in text.splitlines() if not HEADING.match(line))
    body = re.sub(r"\s+", " ", body).strip()
    pieces = (s.strip() for s in re.split(r"(?<=[.!?])\s+", body))
    return [s for s in pieces if MIN_CHARS <= len(s) <= MAX_CHARS]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: sentences.py CACHE OUT.txt")
    src = Path(sys.argv[1]) / "data" / "moby_dick.txt"
    try:
        text = src.read_text(encoding="utf-8")
    except OSError as e:
        sys.exit(f"sentences.py: cannot read {src}: {e}")
    picked = sentences(text)[:COUNT]
    if len(picked) < COUNT:
        sys.exit(f"sentences.py: {src} gave only {len(picked)} sentences, expected {COUNT}")
    out = Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(s + "\n" for s in picked), encoding="utf-8")
    print(f"wrote {len(picked)} sentences to {out}")


if __name__ == "__main__":
    main()
