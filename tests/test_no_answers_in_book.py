"""No book page holds a graded answer: the book teaches the idea, the exercise asks for the code.

Every ``### BEGIN SOLUTION`` … ``### END SOLUTION`` body of every reference notebook is searched
for inside every code cell of every book page (chapters, the PyTorch primer, the glossary, the
introduction), token by token, ignoring comments, layout and the names chosen for variables
(each variable name becomes ``V``; attribute names, keyword-argument names, keywords and
built-ins are kept). For each body we find the longest run of its tokens that appears, in
order and unbroken, inside ONE cell (``difflib.SequenceMatcher.find_longest_match``), so an
answer pasted *inside* a larger cell is caught as well as a whole cell that is the answer.

A body fails when that run is at least ``MIN_RUN`` tokens long AND covers more than
``MAX_FRACTION`` of the body. The figures behind the two numbers (``python
tests/test_no_answers_in_book.py`` prints every body's worst cell; measured on the book of
issue 18, commit 2d0914f):

* Known copies give long runs covering much of their body: Chapter 1's pair-merging loop inline
  in ``tokens.md`` 65 of 67 tokens (97 %), ``build_vocab``'s filter-and-sort in ``tokens.md`` 28
  of 64 (44 %), Chapter 4's packed ``encode`` in ``transformer.md`` 34 of 78 (44 %),
  ``merge_heads`` in ``transformer.md`` 16 of 31 (52 %), ``split_heads`` 14 of 31 (45 %).
* Innocent overlaps (idioms every page shares) are either long but a small share of a long
  body — ``V @ V.transpose(-2, -1) / V.sqrt(V)`` 22 tokens (24 % of the attention body), a
  ``for V, V in V.items():`` loop 16 tokens (27 %), decoding ``"".join(...)`` 21 tokens (22 %) —
  or a large share of a tiny body but short: the tanh RNN update 15 tokens (79 % of
  ``rnn_cell``), ``V.softmax(V, dim=-1)`` 14 tokens (41 %), ``V.ones(V, V, dtype=V.bool`` 13.
* So ``MAX_FRACTION = 1/3`` separates the shares (innocent ≤ 27 %, copies ≥ 44 %), and
  ``MIN_RUN = 16`` is the smallest floor above every short idiom seen: 16 tokens is two lines of
  code. It flags ``merge_heads`` but lets ``split_heads``' 14 through (the floor's price), and it
  flags the char-index idiom ``{c: i for i, c in enumerate(vocab)}`` (19 tokens, 51 % of
  ``encode``), the half of that answer a reader would copy. Bodies shorter than ``MIN_RUN``
  cannot fail and are not listed.

What this cannot see: an answer rewritten into different code (``count_parameters`` as one
closed-form sum, grouped-query attention as ``k[:, group_of]`` instead of
``repeat_interleave``, ``generate`` with the cache spelled out) shares only short runs with its
body; those pages are for a reader to judge, not for this test.
"""

from __future__ import annotations

import builtins
import io
import keyword
import re
import textwrap
import tokenize
from difflib import SequenceMatcher
from functools import cache

import nbformat
import pytest

from conftest import ROOT

MIN_RUN = 16         # a run shorter than this is an idiom, not an answer
MIN_TOKENS = MIN_RUN  # a shorter body cannot fail, so it is not listed
MAX_FRACTION = 1 / 3  # a longer run covering more than this share of a body is a near-copy

_BODY = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
# what a reader sees as code: executed cells and plain Python blocks
_CODE_CELL = re.compile(r"^[ \t]*```+(?:\{code-cell\}|\{code-block\} *python|\{code\} *python|python|ipython3?|py)"
                        r"[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_OPTIONS = re.compile(r"\A(?:---\n.*?\n---\n|(?::[\w-]+:[^\n]*\n)+)", re.S)  # a cell's YAML or :key: options
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENDMARKER}
_BUILTINS = set(dir(builtins))


def _tokens(code: str) -> list[tuple[int, str]]:
    """Significant (type, text) tokens of ``code``; IPython magics and broken code give what parses."""
    code = "\n".join(line for line in textwrap.dedent(code).splitlines() if not line.lstrip().startswith(("%", "!")))
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code + "\n").readline):
            if tok.type not in _SKIP:
                out.append((tok.type, tok.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def _normalised(tokens: list[tuple[int, str]]) -> list[str]:
    """Token texts with every variable name replaced by ``V`` (a run may start anywhere, so a name
    cannot be numbered by first appearance as a whole-cell comparison could)."""
    out = []
    for i, (kind, text) in enumerate(tokens):
        attribute = i > 0 and tokens[i - 1][1] == "."
        keyword_arg = i + 1 < len(tokens) and tokens[i + 1][1] == "=" and i > 0 and tokens[i - 1][1] in "(,"
        if kind == tokenize.NAME and not keyword.iskeyword(text) and not attribute and not keyword_arg \
                and text not in _BUILTINS:
            text = "V"
        out.append(text)
    return out


@cache
def solution_bodies() -> list[tuple[str, tuple[str, ...], str]]:
    """(label, normalised tokens, first line) of every solution body of at least MIN_TOKENS tokens."""
    bodies = []
    for path in sorted((ROOT / "solutions").rglob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "?")
            found = _BODY.findall(cell.source)
            for n, body in enumerate(found, 1):
                tokens = _tokens(body)
                if len(tokens) >= MIN_TOKENS:
                    label = f"{path.parent.name}/{grade_id}" + (f"#{n}" if len(found) > 1 else "")
                    bodies.append((label, tuple(_normalised(tokens)), body.strip().splitlines()[0][:60]))
    return bodies


@cache
def book_cells() -> list[tuple[str, str, tuple[str, ...]]]:
    """(page, first code line, normalised tokens) of every code cell of every book page."""
    cells = []
    for page in sorted((ROOT / "book").rglob("*.md")):
        if "_build" in page.parts:
            continue
        for code in _CODE_CELL.findall(page.read_text()):
            code = _OPTIONS.sub("", textwrap.dedent(code))
            first = next((line.strip() for line in code.splitlines()
                          if line.strip() and not line.lstrip().startswith(("#", "%"))), "")
            cells.append((str(page.relative_to(ROOT)), first[:70], tuple(_normalised(_tokens(code)))))
    return cells


def longest_run(cell: tuple[str, ...], body: tuple[str, ...]) -> int:
    """Length of the longest unbroken run of ``body``'s tokens that appears in ``cell``."""
    matcher = SequenceMatcher(None, cell, body, autojunk=False)
    return matcher.find_longest_match(0, len(cell), 0, len(body)).size


def worst_cells(body: tuple[str, ...]) -> list[tuple[float, int, str, str]]:
    """(fraction of the body, run length, page, first line) for every book cell, worst first."""
    matcher = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(body)  # the body's index is built once
    found = []
    for page, first, cell in book_cells():
        matcher.set_seq1(cell)
        run = matcher.find_longest_match(0, len(cell), 0, len(body)).size
        found.append((run / len(body), run, page, first))
    return sorted(found, reverse=True)


@cache
def _cells_by_gram() -> dict[tuple[str, ...], set[int]]:
    """Every MIN_RUN-token window of every book cell -> the cells holding it."""
    index: dict[tuple[str, ...], set[int]] = {}
    for n, (_, _, cell) in enumerate(book_cells()):
        for i in range(len(cell) - MIN_RUN + 1):
            index.setdefault(cell[i:i + MIN_RUN], set()).add(n)
    return index


def close_cells(body: tuple[str, ...]) -> list[tuple[float, int, str, str]]:
    """The cells that fail ``body``, worst first. Only a cell sharing a MIN_RUN-token window with
    the body can hold a run that long, so only those are matched (the test stays fast)."""
    index = _cells_by_gram()
    candidates = set().union(*(index.get(body[i:i + MIN_RUN], ()) for i in range(len(body) - MIN_RUN + 1)))
    cells = book_cells()
    found = []
    for n in candidates:
        page, first, cell = cells[n]
        run = longest_run(cell, body)
        if too_close(run, body):
            found.append((run / len(body), run, page, first))
    return sorted(found, reverse=True)


def too_close(run: int, body: tuple[str, ...]) -> bool:
    return run >= MIN_RUN and run / len(body) > MAX_FRACTION


def test_detector_sees_through_renaming_comments_and_surrounding_code():
    body = tuple(_normalised(_tokens(
        "U_hat = U / U.norm(dim=1, keepdim=True).clamp_min(eps)\nreturn U_hat @ U_hat.T\n")))
    inside = tuple(_normalised(_tokens(
        "x = 1\nprint(x)\n# the idea\nE_hat = E / E.norm(dim=1, keepdim=True).clamp_min(eps)  # unit rows\n"
        "return E_hat @ E_hat.T\nplt.plot(x)\n")))
    assert longest_run(inside, body) == len(body)
    other = tuple(_normalised(_tokens("E_hat = E / E.norm(dim=0, keepdim=True)\nreturn E_hat @ E_hat.T\n")))
    assert longest_run(other, body) < len(body) / 2
    # an idiom shared by many pages is too short to fail a body, however short the body
    idiom = tuple(_normalised(_tokens("s = s.masked_fill(~m, float('-inf'))\n")))
    assert not too_close(longest_run(idiom, idiom), idiom)


def test_detector_finds_an_answer_pasted_inside_a_larger_cell():
    """Chapter 1's ``merge_pair`` loop, inline in a bigger cell with other names: caught."""
    body = tuple(_normalised(_tokens(
        "out, i = [], 0\nwhile i < len(ids):\n"
        "    if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:\n"
        "        out.append(new_id)\n        i += 2\n    else:\n        out.append(ids[i])\n        i += 1\n"
        "return out\n")))
    cell = tuple(_normalised(_tokens(
        "text = 'low lower'\nseq = list(text.encode())\nfor step in range(3):\n"
        "    merged, k = [], 0\n    while k < len(seq):\n"
        "        if k + 1 < len(seq) and (seq[k], seq[k + 1]) == best:\n"
        "            merged.append(256 + step)\n            k += 2\n        else:\n"
        "            merged.append(seq[k])\n            k += 1\n    seq = merged\nprint(seq)\n")))
    assert too_close(longest_run(cell, body), body)


@pytest.mark.parametrize("label, body, first", solution_bodies(),
                         ids=[label for label, _, _ in solution_bodies()])
def test_no_reference_solution_appears_in_the_book(label, body, first):
    close = close_cells(body)
    assert not close, (
        f"the answer to '{label}' ({first!r}, {len(body)} tokens) is nearly in the book:\n"
        + "\n".join(f"  {page}, cell starting {line!r}: a run of {run} tokens, {f:.0%} of the body"
                    for f, run, page, line in close)
        + f"\n(limit: runs of >= {MIN_RUN} tokens covering more than {MAX_FRACTION:.0%}); "
        "show the idea another way")


if __name__ == "__main__":  # the figures behind the thresholds: each body's worst book cell
    for label, body, first in solution_bodies():
        f, run, page, line = worst_cells(body)[0]
        flag = "FAIL" if too_close(run, body) else "    "
        print(f"{flag} {f:5.0%} {run:4d}/{len(body):<4d} {label:<45} {page}: {line[:50]!r}")
