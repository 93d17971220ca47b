"""exercises/ is exactly what nbgrader generates from solutions/, and gives nothing away."""

from __future__ import annotations

import importlib
import json

import nbformat
import pytest

from conftest import ROOT, assignments, notebook_of


@pytest.mark.parametrize("assignment", assignments())
def test_exercises_are_what_generation_produces(course, assignment):
    name = notebook_of(assignment)
    committed = json.loads((ROOT / "exercises" / assignment / name).read_text())
    generated = json.loads((course / "exercises" / assignment / name).read_text())
    assert committed == generated, (
        f"exercises/ drifted from solutions/: run `python -m autograder generate {assignment}` and commit")


@pytest.mark.parametrize("assignment", assignments())
def test_exercises_hold_no_solutions_and_no_outputs(assignment):
    nb = nbformat.read(ROOT / "exercises" / assignment / notebook_of(assignment), as_version=4)
    solution_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert solution_cells
    for cell in solution_cells:
        assert "raise NotImplementedError()" in cell.source and "SOLUTION" not in cell.source
    for cell in nb.cells:
        assert cell.cell_type != "code" or (cell.outputs == [] and cell.execution_count is None)


def test_reference_notebooks_are_committed_without_outputs():
    for path in (ROOT / "solutions").rglob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code"), path


@pytest.mark.parametrize("assignment", assignments())
def test_every_test_cell_has_hidden_cases(assignment):
    nb = nbformat.read(ROOT / "solutions" / assignment / notebook_of(assignment), as_version=4)
    tests = importlib.import_module(nb.metadata["autograder"]["tests"])
    ids = {c.metadata.nbgrader["grade_id"] for c in nb.cells
           if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata.nbgrader.get("solution")}
    assert ids and ids == set(tests.CASES), (ids, set(tests.CASES))
