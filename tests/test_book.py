"""The book builds offline with warnings as errors, math from a local MathJax, launch buttons on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run([str(jupyter_book), "build", str(ROOT / "book"), "--path-output", str(out),
                             "-W", "-n", "--keep-going"], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return out / "_build" / "html"


def test_book_builds_under_warnings_as_errors(html):
    assert (html / "index.html").is_file()
    assert (html / "01-tokens" / "tokens.html").is_file()


def test_math_renders_from_local_mathjax(html):
    page = (html / "01-tokens" / "tokens.html").read_text()
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', page, re.IGNORECASE)
    assert scripts, "no MathJax script on the chapter page"
    assert all(not s.startswith(("http:", "https:", "//")) for s in scripts), scripts
    assert "\\(" in page or "\\[" in page or "math notranslate" in page


def test_chapter_page_is_executed_and_shows_the_embedding_figure(html):
    page = (html / "01-tokens" / "tokens.html").read_text()
    assert re.search(r'<img[^>]+src="[^"]*\.png"', page), "the learned-embedding figure is missing"


def test_launch_buttons_point_at_the_repository(html):
    page = (html / "01-tokens" / "tokens.html").read_text()
    assert "colab.research.google.com" in page and "mybinder.org" in page
