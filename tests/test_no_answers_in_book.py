"""No book page holds a graded answer: the book teaches the idea, the exercise asks for the code.

Every ``### BEGIN SOLUTION`` … ``### END SOLUTION`` body of every reference notebook is compared
with every code cell of every book page, token by token, ignoring comments, layout and the names
chosen for variables (a body with its variables renamed is still the answer). Bodies of fewer than
``MIN_TOKENS`` tokens (``return x @ W``) are too short to give an exercise away and are skipped.
"""

from __future__ import annotations

import io
import keyword
import re
import textwrap
import tokenize

import nbformat
import pytest

from conftest import ROOT

MIN_TOKENS = 12
_BODY = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENDMARKER}


def _tokens(code: str) -> list[tuple[int, str]]:
    """Significant (type, text) tokens of ``code``; IPython magics and broken code give what parses."""
    code = "\n".join(line for line in textwrap.dedent(code).splitlines() if not line.lstrip().startswith(("%", "!")))
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code + "\n").readline):
            if tok.type not in _SKIP:
                out.append((tok.type, tok.string))
    except (tokenize.TokenError, IndentationError):
        pass
    return out


def _renamed(tokens: list[tuple[int, str]]) -> list[str]:
    """Token texts with each variable name replaced by its order of first appearance."""
    names: dict[str, str] = {}
    out = []
    for i, (kind, text) in enumerate(tokens):
        attribute = i > 0 and tokens[i - 1][1] == "."
        keyword_arg = i + 1 < len(tokens) and tokens[i + 1][1] == "=" and i > 0 and tokens[i - 1][1] in "(,"
        if kind == tokenize.NAME and not keyword.iskeyword(text) and not attribute and not keyword_arg \
                and text not in __builtins__:
            text = names.setdefault(text, f"v{len(names)}")
        out.append(text)
    return out


def solution_bodies() -> list[tuple[str, list[tuple[int, str]]]]:
    bodies = []
    for path in sorted((ROOT / "solutions").rglob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            for body in _BODY.findall(cell.source):
                tokens = _tokens(body)
                if len(tokens) >= MIN_TOKENS:
                    bodies.append((f"{path.parent.name}: {body.strip().splitlines()[0][:60]}", tokens))
    return bodies


def book_cells() -> list[tuple[str, list[tuple[int, str]]]]:
    return [(str(page.relative_to(ROOT)), _tokens(code)) for page in sorted((ROOT / "book").rglob("*.md"))
            for code in _CODE_CELL.findall(page.read_text())]


def _contains(cell: list[tuple[int, str]], body: list[tuple[int, str]]) -> bool:
    target = _renamed(body)
    return any(_renamed(cell[i:i + len(body)]) == target for i in range(len(cell) - len(body) + 1))


def test_detector_sees_through_renaming_and_comments():
    body = _tokens("U_hat = U / U.norm(dim=1, keepdim=True).clamp_min(eps)\nreturn U_hat @ U_hat.T\n")
    cell = _tokens("x = 1\n# the idea\nE_hat = E / E.norm(dim=1, keepdim=True).clamp_min(eps)  # unit rows\n"
                   "return E_hat @ E_hat.T\n")
    assert _contains(cell, body)
    assert not _contains(_tokens("E_hat = E / E.norm(dim=0, keepdim=True)\nreturn E_hat @ E_hat.T\n"), body)


@pytest.mark.parametrize("where, body", solution_bodies(), ids=lambda x: x if isinstance(x, str) else "")
def test_no_reference_solution_appears_in_the_book(where, body):
    pages = [page for page, cell in book_cells() if _contains(cell, body)]
    assert not pages, f"the answer to '{where}' appears in {pages}: show the idea another way"
