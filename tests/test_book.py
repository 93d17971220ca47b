"""The book builds offline with warnings as errors, math from a local MathJax, launch buttons on.

It builds in place with the README's own command, so it reuses the execution cache of the
README's first command (each chapter page runs once per change, not once per test run).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BOOK = ROOT / "book"


def chapter_pages() -> list[str]:
    """The chapter files listed in the table of contents, e.g. '01-tokens/tokens'."""
    return re.findall(r"^\s*- file: (\d\d-[\w-]+/[\w-]+)\s*$", (BOOK / "_toc.yml").read_text(), re.M)


@pytest.fixture(scope="module")
def html() -> Path:
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run([str(jupyter_book), "build", str(BOOK), "-W", "-n", "--keep-going"],
                            capture_output=True, text=True, timeout=3600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return BOOK / "_build" / "html"


def test_book_builds_under_warnings_as_errors(html):
    assert (html / "index.html").is_file()
    assert chapter_pages()[0] == "01-tokens/tokens"
    for page in chapter_pages():
        assert (html / f"{page}.html").is_file(), page


@pytest.mark.parametrize("page", chapter_pages())
def test_math_renders_from_local_mathjax(html, page):
    text = (html / f"{page}.html").read_text()
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', text, re.IGNORECASE)
    assert scripts, "no MathJax script on the chapter page"
    assert all(not s.startswith(("http:", "https:", "//")) for s in scripts), scripts
    assert "\\(" in text or "\\[" in text or "math notranslate" in text


@pytest.mark.parametrize("page", ["pytorch/pytorch", *chapter_pages()])
def test_chapter_page_is_executed_and_shows_figures(html, page):
    text = (html / f"{page}.html").read_text()
    assert re.search(r'<img[^>]+src="[^"]*\.png"', text), f"{page}: no executed figure"
    assert "cell_output" in text, f"{page}: no executed output"


def test_launch_buttons_point_at_the_repository(html):
    page = (html / "01-tokens" / "tokens.html").read_text()
    assert "colab.research.google.com" in page and "mybinder.org" in page
