"""Attack class: slow notebooks. Each cell and call has its timeout, but a notebook of many cells
that each stay just under it could hold a grading worker for as long as it likes; its cells and
hidden-test calls share one time budget per submission (``autograde --budget``, 4 × ``--timeout``
by default), across kernel restarts, and nothing runs after it is spent."""

from __future__ import annotations

import nbformat

from autograder import process, sandbox
from conftest import ASSIGNMENT, grade_class, make_submission

FULL = 10.0
TIMEOUT = 4  # --timeout: a call may run 4 s, a cell 8 s, the whole notebook 16 s
SLEEPER = "import time\ntime.sleep(7.5)  # just under the cell timeout\n"
SPENT = f"your notebook used up its {4 * TIMEOUT} s time budget (cells and checks together)"


def test_many_slow_cells_stop_at_the_budget_and_a_classmate_keeps_full_marks(course, tmp_path):
    submissions = {"sleeper": make_submission(course, extra_cells=[SLEEPER] * 5),
                   "classmate": make_submission(course)}
    summary = grade_class(course, ASSIGNMENT, submissions, tmp_path, "--timeout", str(TIMEOUT))
    sleeper = summary["sleeper"]
    assert float(sleeper["seconds"]) < 5 * 7.5  # what its cells alone would have taken
    assert sleeper["score"] == 0, sleeper["report"]
    for report in sleeper["report"].values():
        assert f"not run: {SPENT} before this check" in report, report
        assert f"was stopped: {SPENT}; the cells after it did not run" in report
    assert summary["classmate"]["score"] == FULL, summary["classmate"]["report"]


def test_the_budget_stops_a_call_too_and_says_so():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import time\ntime.sleep(1.5)\ndef slow(x):\n    time.sleep(1)\n    return x\n")])
    with process.NotebookProcess(nb, limits=sandbox.Limits(cell_timeout=5, call_timeout=5), budget=3) as proc:
        results = [proc.call("slow", (i,)) for i in range(4)]
        errors, problems = proc.cell_errors, proc.problems
    spent = "your notebook used up its 3 s time budget (cells and checks together)"
    assert [r.value for r in results[:1]] == [0] and results[0].kind is None
    assert (results[1].error, results[1].kind) == (f"did not finish: {spent}", "budget")
    assert all((r.error, r.kind) == (f"not run: {spent} before this check", "budget") for r in results[2:])
    assert errors == [f"a hidden check was stopped: {spent}"] and problems == {"budget"}
