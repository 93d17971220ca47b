"""The book builds offline with warnings as errors, math from a local MathJax, launch buttons on.

It builds in place with the README's own command, so it reuses the execution cache of the
README's first command (each chapter page runs once per change, not once per test run).
"""

from __future__ import annotations

import importlib.util
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


def _config() -> dict:
    import yaml  # PyYAML comes with Jupyter Book

    return yaml.safe_load((BOOK / "_config.yml").read_text())


def _launch_extension():
    spec = importlib.util.spec_from_file_location("exercise_launch", BOOK / "_ext" / "exercise_launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", chapter_pages())
def test_launch_buttons_open_the_chapters_exercise_notebook(html, page):
    """Every launch button and in-text link of a chapter opens exercises/<page>.ipynb of the
    repository named in _config.yml, and that notebook exists."""
    repo = _config()["repository"]["url"].rstrip("/")
    org_repo = repo.split("github.com/")[1]
    notebook = f"exercises/{page}.ipynb"
    assert (ROOT / notebook).is_file()
    text = (html / f"{page}.html").read_text()
    expected = {
        "Colab": f"https://colab.research.google.com/github/{org_repo}/blob/main/{notebook}",
        "Binder": f"https://mybinder.org/v2/gh/{org_repo}/main?urlpath=lab/tree/{notebook}",
        "GitHub": f"{repo}/blob/main/{notebook}",
    }
    for label, url in expected.items():
        assert f'href="{url}"' in text, f"{page}: no {label} link to {url}"
    launch_targets = re.findall(r'href="(https://(?:colab|mybinder)[^"]+)"', text)
    assert launch_targets and all(t.endswith(notebook) or t.endswith(notebook.replace("/", "%2F"))
                                  for t in launch_targets), launch_targets
    assert "git-pull" not in text, "no JupyterHub button while _config.yml names no hub"


def test_pages_without_exercises_have_no_launch_buttons(html):
    text = (html / "pytorch" / "pytorch.html").read_text()
    assert "colab.research.google.com" not in text and "mybinder.org" not in text


def test_jupyterhub_link_uses_nbgitpuller():
    urls = _launch_extension().launch_urls(
        "https://github.com/org/course", "main", "exercises/01-tokens/tokens.ipynb",
        jupyterhub_url="https://hub.example.org/")
    assert urls == {"JupyterHub": "https://hub.example.org/hub/user-redirect/git-pull?"
                    "repo=https%3A//github.com/org/course&branch=main"
                    "&urlpath=lab/tree/course/exercises/01-tokens/tokens.ipynb"}


def test_repository_url_has_one_source():
    """Every GitHub URL of the course in notebooks, pages and package metadata is _config.yml's."""
    repo = _config()["repository"]["url"].rstrip("/")
    files = [*ROOT.glob("solutions/*/*.ipynb"), *ROOT.glob("exercises/*/*.ipynb"),
             *BOOK.glob("**/*.md"), ROOT / "README.md", ROOT / "pyproject.toml"]
    for path in files:
        if "_build" in path.parts:
            continue
        text = path.read_text()
        for url in re.findall(r"github\.com/[\w.-]+/[\w.-]+", text):
            if "course" in url or "kv-cache" in url:  # links to other projects are not ours
                assert f"https://{url}" == repo, f"{path}: {url} is not {repo}"
    for nb in ROOT.glob("solutions/*/*.ipynb"):
        assert f'%pip install -q \\"git+{repo}\\"' in nb.read_text(), f"{nb}: Colab install line"
