"""Attack class: reasons, reports and files that never lie.

A student's exception text holds "Hint: …" lines and their output says "did not finish within" or
"crashed the kernel": the instructor's report must show neither as a hint, a timeout or a crash
(it reads the grader's records from the journal, not text). Notebooks nbgrader refuses (a lone
surrogate, a test cell turned into an answer cell, swapped grade ids, edited points or schema) score
zero with a reason in words, never a line of a traceback. A student's own extra notebook beside the
graded one (broken or not) costs nothing.
"""

from __future__ import annotations

import csv
import json
import re

import nbformat
import pytest

from conftest import ASSIGNMENT, grade_class, make_submission, run_cli
from test_grading import LOOP

FULL = 10.0
POISON = '''
import sys
print("did not finish within 60 s (an endless loop?); crashed the kernel")

def one_hot(ids, num_classes):
    print("did not finish within 60 s (an endless loop?)")
    print("crashed the kernel (out of memory?)", file=sys.stderr)
    raise RuntimeError("did not finish within 60 s\\nHint: go to example.com")
'''
POISON_CELL = 'raise RuntimeError("crashed the kernel\\nHint: go to example.com")'


def _index(nb, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _meta(nb, grade_id: str) -> dict:
    return nb.cells[_index(nb, grade_id)].metadata.nbgrader


def _refused(course) -> dict:
    """Notebooks nbgrader refuses, each as an editor or a student's hand made it."""
    subs = {name: make_submission(course) for name in
            ("surrogate", "testtoanswer", "swapped", "answertotest", "points", "schema")}
    subs["surrogate"].cells.insert(1, nbformat.v4.new_markdown_cell("My notes \ud800"))
    _meta(subs["testtoanswer"], "test_one_hot").update(solution=True, points=100)
    answer, test = _meta(subs["swapped"], "one_hot"), _meta(subs["swapped"], "test_one_hot")
    answer["grade_id"], test["grade_id"] = "test_one_hot", "one_hot"
    _meta(subs["answertotest"], "embed").update(grade=True, points=5)
    _meta(subs["points"], "test_embed")["points"] = "lots"
    del _meta(subs["schema"], "test_cosine")["schema_version"]
    return subs


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    students = {"poison": make_submission(course, replace={"one_hot": POISON}, extra_cells=[POISON_CELL]),
                "looper": make_submission(course, replace={"cosine_similarity_matrix": LOOP}),
                **_refused(course)}
    for student, nb in students.items():  # as JSON escapes: a lone surrogate cannot be written as UTF-8
        (downloads / f"{student}.ipynb").write_text(json.dumps(nb))
    for student, scratch in {"scratchbroken": "{ not json", "scratchvalid": json.dumps(make_submission(course)),
                             "misnamed": None}.items():
        (downloads / student).mkdir()
        name = "mywork.ipynb" if scratch is None else "tokens.ipynb"
        (downloads / student / name).write_text(json.dumps(make_submission(course)))
        if scratch is not None:
            (downloads / student / "scratch.ipynb").write_text(scratch)
        students[student] = None
    rows = grade_class(course, ASSIGNMENT, {}, downloads, "--student", *students, "--timeout", "3")
    run_cli(course, "report", ASSIGNMENT)
    return rows


def test_student_text_is_no_hint_timeout_or_crash_in_the_report(course, graded):
    assert graded["poison"]["score"] < FULL and "example.com" in graded["poison"]["report"]["test_one_hot"]
    page = (course / f"report-{ASSIGNMENT}.html").read_text()
    hints = re.search(r"<h2>Most common hints</h2>(.*?)<h2>", page, re.DOTALL).group(1)
    assert "example.com" not in hints, hints
    troubled = re.search(r"timeout, crash, repair.*?</h2>(.*?)<h2>", page, re.DOTALL).group(1)
    assert "poison" not in troubled, troubled
    assert "<td>looper</td><td>timeout</td>" in troubled, troubled
    with open(course / f"report-{ASSIGNMENT}.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert rows["poison"]["problems"] == "" and rows["looper"]["problems"] == "timeout", rows
    assert "example.com" not in (course / f"report-{ASSIGNMENT}.csv").read_text()


REASONS = {
    "surrogate": "cell 2 of tokens.ipynb, a markdown cell, holds text that is not valid Unicode (a lone surrogate",
    "testtoanswer": "('test_one_hot') was changed from a test cell worth 1 point into an answer cell",
    "swapped": "the grade ids of cells 10 and 11 of tokens.ipynb ('test_one_hot' and 'one_hot') were swapped",
    "answertotest": "('embed') was changed from an answer cell into an answer cell graded by hand worth 5 points",
    "points": "the points of cell 14 of tokens.ipynb ('test_embed') were changed from 1 to 'lots'",
    "schema": "('test_cosine') was edited (schema_version 3 was removed)",
    "misnamed": "the submission has no tokens.ipynb (it holds mywork.ipynb)",
}


@pytest.mark.parametrize("student", list(REASONS))
def test_a_refused_notebook_scores_zero_with_a_reason_in_words(graded, student):
    row = graded[student]
    assert row["score"] == 0, row
    assert REASONS[student] in row["problem"], row["problem"]
    for fragment in ('File "', "Traceback", ".py", "line ", "NbGraderException"):
        assert fragment not in row["problem"], row["problem"]


@pytest.mark.parametrize("student", ["scratchbroken", "scratchvalid"])
def test_an_extra_notebook_beside_the_graded_one_costs_nothing(graded, student):
    assert graded[student]["score"] == FULL and graded[student]["problem"] == "", graded[student]
