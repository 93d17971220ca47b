"""Attack class: every page and file an instructor or student opens after grading.

One class of Chapter 1 is graded: ``attach`` has a markdown image of an attachment it lacks
(nbconvert raises on it, and ``feedback`` once stopped there); ``images`` displays PNGs whose
``width``/``height`` metadata is ``1 onerror=...`` (nbconvert's template writes it unquoted into
``<img>``, where the course's HTML cleaner never looks) and one with a numeric width that must stay;
``=2+5``, ``@SUM(A1)`` and ``-1+1`` are student ids a spreadsheet would evaluate, in the summary,
report and export CSVs. The feedback and formgrader pages are opened in Chromium as in
``test_integrity_html``.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import ASSIGNMENT, grade_class, make_submission, run_cli
from test_integrity_html import _Planted, _visit, browser, formgrader_page  # noqa: F401 (browser: fixture)

MISSING_ATTACHMENT = "Here is my plot: ![my plot](attachment:nothere.png)"
IMAGES = '''
from IPython.display import display
broken = "bm90IGEgcG5n"  # not a PNG: the image fails to load, so an onerror handler would run
display({"image/png": broken}, raw=True, metadata={"image/png": {"width": "1 onerror=window.__pwned=['width']"}})
display({"image/png": broken}, raw=True, metadata={"height": "1 onerror=window.__pwned=['height']"})
display({"image/png": broken}, raw=True, metadata={"image/png": {"width": 123}})
'''
FORMULAS = ["=2+5", "@SUM(A1)", "-1+1"]


def _with_cell(nb: nbformat.NotebookNode, cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first_code + 1, cell)
    return nb


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory) -> dict:
    """The class graded, the summary CSV's text after each autograde run, then ``feedback`` run."""
    downloads = tmp_path_factory.mktemp("downloads")
    # `--student -1+1` reads as an option to argparse, so -1+1 is graded in a run of its own
    nbformat.write(make_submission(course), downloads / "-1+1.ipynb")
    class_ = {"attach": _with_cell(make_submission(course), nbformat.v4.new_markdown_cell(MISSING_ATTACHMENT)),
              "images": _with_cell(make_submission(course), nbformat.v4.new_code_cell(IMAGES)),
              **{student: make_submission(course) for student in FORMULAS[:2]}}
    summary = grade_class(course, ASSIGNMENT, class_, downloads)
    assert len(summary) == len(class_) and all(row["score"] == 10.0 for row in summary.values()), summary
    found = {"first": (course / f"autograde-{ASSIGNMENT}.csv").read_text()}
    run_cli(course, "autograde", ASSIGNMENT, "--student=-1+1")
    found["second"] = (course / f"autograde-{ASSIGNMENT}.csv").read_text()
    found["feedback"] = run_cli(course, "feedback", ASSIGNMENT, check=False)
    return found


def _feedback(course: Path, student: str) -> Path:
    return course / "feedback" / student / ASSIGNMENT / "tokens.html"


def test_a_missing_attachment_renders_as_its_alt_text(course, graded):
    assert graded["feedback"].returncode == 0, graded["feedback"].stderr
    assert "Here is my plot: my plot" in _feedback(course, "attach").read_text()
    assert _feedback(course, "=2+5").is_file()


def test_feedback_goes_on_after_a_failing_notebook_and_lists_it(course, graded):
    broken = course / "autograded" / "a-broken" / ASSIGNMENT  # sorts before images
    broken.mkdir(parents=True)
    (broken / "tokens.ipynb").write_text("not a notebook")
    later = _feedback(course, "images")
    written = later.stat().st_mtime_ns
    try:
        result = run_cli(course, "feedback", ASSIGNMENT, check=False)
    finally:
        shutil.rmtree(broken.parent)
        shutil.rmtree(course / "feedback" / "a-broken", ignore_errors=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  a-broken: nbformat.reader.NotJSONError" in result.stderr, result.stderr
    assert later.stat().st_mtime_ns > written, "the page after the broken one must be written again"


@pytest.fixture(scope="module")
def image_pages(course, graded, tmp_path_factory) -> dict[str, Path]:
    return {"feedback": _feedback(course, "images"),
            "formgrader": formgrader_page(course, "images", tmp_path_factory.mktemp("formgrade"))}


@pytest.mark.parametrize("which", ["feedback", "formgrader"])
def test_image_sizes_that_are_not_numbers_are_dropped(image_pages, browser, which):  # noqa: F811
    page = image_pages[which]
    parser = _Planted()
    parser.feed(page.read_text())
    assert parser.found == [], parser.found
    assert _visit(browser, page)["pwned"] == []
    assert re.search(r'<img[^>]* width="?123\b', page.read_text()), "a numeric width must stay"


def _cells(text: str) -> list[str]:
    return [value for row in csv.reader(io.StringIO(text, newline="")) for value in row]


def _no_formula(cells: list[str]) -> None:
    """No text cell starts a formula, each formula-like id is there as text, numbers stay numbers."""
    for value in cells:
        if value.startswith(("=", "+", "-", "@", "\t", "\r")):
            float(value)  # a negative number is fine; anything else would be evaluated
    assert {"'" + s for s in FORMULAS} <= set(cells), [c for c in cells if c.startswith("'")]
    assert "10.0" in cells or "10" in cells


def test_no_csv_cell_starts_a_formula(course, graded, tmp_path):
    run_cli(course, "report", ASSIGNMENT)
    run_cli(course, "export", "--to", str(tmp_path / "export.csv"))
    subprocess.run([str(Path(sys.executable).parent / "nbgrader"), "export", "--to", str(tmp_path / "nbgrader.csv")],
                   cwd=course, check=True, capture_output=True)
    _no_formula(_cells(graded["first"]) + _cells(graded["second"]))
    for path in (course / f"report-{ASSIGNMENT}.csv", tmp_path / "export.csv", tmp_path / "nbgrader.csv"):
        _no_formula(_cells(path.read_text()))
