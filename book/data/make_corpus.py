"""Regenerate ``corpus.txt``, the small English corpus used by the book.

The text is taken from ``pydoc_data.topics``, a module that ships inside
CPython and holds the reference-manual pages that ``help()`` shows
(the Python documentation, (c) Python Software Foundation, PSF License 2).

Recipe (deterministic for a given Python version):

1. take the topics named in ``TOPICS``, in that order, until the corpus would
   exceed ``TARGET_MAX_BYTES`` (with 3.11.7 the cap is reached inside
   "function", so the later topics in the list are not used);
2. split each topic into blank-line separated blocks;
3. keep only prose paragraphs: drop section titles (underlined with
   ``*``, ``=`` or ``-``), indented code / grammar blocks, bullet lists,
   interactive ``>>>`` examples and very short fragments;
4. normalise whitespace (one paragraph per line) and map typographic
   quotes/dashes to ASCII; paragraphs still containing non-ASCII are dropped.

The committed ``corpus.txt`` was produced with CPython 3.11.7.  Other Python
versions ship slightly different documentation text, so running this script
under another version may give a slightly different file.

Usage (from anywhere)::

    python book/data/make_corpus.py            # writes book/data/corpus.txt
    python book/data/make_corpus.py --check    # exit 1 if the file differs
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from pydoc_data.topics import topics

# Fixed, ordered list of prose-heavy reference topics.
TOPICS = [
    "execmodel",
    "naming",
    "objects",
    "types",
    "truth",
    "booleans",
    "exceptions",
    "import",
    "assignment",
    "class",
    "function",
    "try",
    "with",
    "context-managers",
    "dynamic-features",
    "comparisons",
    "calls",
    "customization",
]

MIN_WORDS = 12  # shorter blocks are usually captions or fragments
TARGET_MAX_BYTES = 52_000  # stop adding paragraphs past this size

_ASCII_MAP = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
        "\u00a0": " ",
    }
)
_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}\s*$")
# reST emphasis such as *block* or **PEP 8** -> plain words
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}(\w[^*]*?)\*{1,2}(?![\w*])")
_NOTES = ("Changed in version", "New in version", "Added in version",
          "Deprecated since", "See also", "See section", "See the")


def prose_paragraphs(text: str) -> list[str]:
    """Return the prose paragraphs of one pydoc topic, one string each."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if not block.strip():
            continue
        if any(_UNDERLINE.match(line) for line in lines):
            continue  # section title
        if any(line.startswith((" ", "\t")) for line in lines):
            continue  # code, grammar or nested list
        first = lines[0].lstrip()
        if first.startswith(("* ", "+ ", "- ", ">>>", "...")) or first[:2].rstrip(".").isdigit():
            continue  # list item or interactive example
        para = " ".join(line.strip() for line in lines)
        para = re.sub(r"\s+", " ", para.translate(_ASCII_MAP)).strip()
        if not para.isascii() or len(para.split()) < MIN_WORDS:
            continue
        if not para[0].isupper() or not para.endswith((".", ")")):
            continue  # fragment continuing a dropped code block, or a lead-in
        if para.startswith(_NOTES):
            continue  # version notes and cross references
        para = _EMPHASIS.sub(r"\1", para)
        paragraphs.append(para)
    return paragraphs


def build_corpus() -> str:
    out: list[str] = []
    size = 0
    for key in TOPICS:
        for para in prose_paragraphs(topics[key]):
            if size + len(para) + 1 > TARGET_MAX_BYTES:
                return "\n".join(out) + "\n"
            out.append(para)
            size += len(para) + 1
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "corpus.txt",
        help="where to write the corpus (default: next to this script)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the existing file differs",
    )
    args = parser.parse_args()
    text = build_corpus()
    if args.check:
        same = args.output.exists() and args.output.read_text(encoding="utf-8") == text
        print(("up to date: " if same else "DIFFERS: ") + str(args.output))
        return 0 if same else 1
    args.output.write_text(text, encoding="utf-8")
    print(
        f"wrote {args.output} ({len(text.encode('utf-8'))} bytes, "
        f"{len(text.splitlines())} paragraphs, {len(text.split())} words) "
        f"with Python {sys.version.split()[0]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
