"""Attack class (accidental): notebooks as students' editors really hand them in.

A pasted cell keeps its nbgrader metadata; a stray cell carries test metadata the assignment
does not have; a test cell is deleted or turned into markdown; another editor strips all cell
metadata; the kernel is switched; outputs are huge. Each must score what the work deserves
(full marks for correct work; an off-by-one exactly what it scores untouched) and say what was
repaired, in the feedback and in the summary CSV, never as a bare nbgrader exception.
"""

from __future__ import annotations

import copy

import nbformat
import pytest

from conftest import ASSIGNMENT, grade_class, make_submission
from test_grading import OFF_BY_ONE

FULL = 10.0


def _index(nb, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _strip(nb):
    for cell in nb.cells:
        for key in ("nbgrader", "deletable", "editable"):
            cell.metadata.pop(key, None)
    return nb


def _submissions(course) -> dict[str, nbformat.NotebookNode]:
    subs = {name: make_submission(course) for name in
            ("pasted", "pastedtest", "extratest", "deletedtest", "markdowntest", "stripped", "kernel", "huge")}
    nb = subs["pasted"]
    nb.cells.insert(_index(nb, "one_hot") + 1, copy.deepcopy(nb.cells[_index(nb, "one_hot")]))
    nb = subs["pastedtest"]
    nb.cells.insert(_index(nb, "test_one_hot") + 1, copy.deepcopy(nb.cells[_index(nb, "test_one_hot")]))
    nb = subs["extratest"]
    stray = nbformat.v4.new_code_cell("assert 1 + 1 == 2")
    stray.metadata["nbgrader"] = {"grade": True, "grade_id": "test_mine", "locked": False, "points": 5,
                                  "schema_version": 3, "solution": False}
    nb.cells.insert(_index(nb, "test_embed") + 1, stray)
    del subs["deletedtest"].cells[_index(subs["deletedtest"], "test_embed")]
    nb = subs["markdowntest"]
    cell = nb.cells[_index(nb, "test_one_hot")]
    nb.cells[_index(nb, "test_one_hot")] = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata)
    _strip(subs["stripped"])
    subs["kernel"].metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    nb = subs["huge"]
    nb.cells[_index(nb, "one_hot")].outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * 30 * 2**20)]
    subs["offbyone"] = make_submission(course, replace={"one_hot": OFF_BY_ONE})
    subs["strippedoffbyone"] = _strip(make_submission(course, replace={"one_hot": OFF_BY_ONE}))
    return subs


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory):
    return grade_class(course, ASSIGNMENT, _submissions(course), tmp_path_factory.mktemp("downloads"))


REASONS = {
    "pasted": "copy of your answer cell 'one_hot'",
    "pastedtest": "second copy of the locked cell 'test_one_hot'",
    "extratest": "('test_mine') that this assignment does not have",
    "deletedtest": "test cell 'test_embed' was missing",
    "markdowntest": "had been turned into markdown",
    "stripped": "had lost their grading metadata",
    "kernel": "kernel had been changed to 'ir'",
}


@pytest.mark.parametrize("student", list(REASONS))
def test_correct_work_keeps_full_marks_and_the_repair_is_named(graded, student):
    row = graded[student]
    assert row["score"] == FULL and float(row["max_score"]) == FULL, row
    assert REASONS[student] in row["problem"], row["problem"]
    assert "Error" not in row["problem"] and "Exception" not in row["problem"], row["problem"]
    assert any(REASONS[student] in report for report in row["report"].values()), row["report"]


def test_huge_outputs_are_no_problem(graded):
    assert graded["huge"]["score"] == FULL


def test_stripped_metadata_grades_a_mistake_as_it_deserves(graded):
    assert 0 < graded["strippedoffbyone"]["score"] == graded["offbyone"]["score"] < FULL
    assert "shift" in graded["strippedoffbyone"]["report"]["test_one_hot"].lower()


def test_feedback_shows_the_repair(graded, course):
    from conftest import run_cli
    run_cli(course, "feedback", ASSIGNMENT)
    html = (course / "feedback" / "pasted" / ASSIGNMENT / "tokens.html").read_text()
    assert "Repaired before grading" in html and "copy of your answer cell" in html
