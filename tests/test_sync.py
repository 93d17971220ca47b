"""exercises/ is exactly what nbgrader generates from solutions/, and gives nothing away."""

from __future__ import annotations

import json

import nbformat

from conftest import ASSIGNMENT, NOTEBOOK, ROOT


def test_exercises_are_what_generation_produces(course):
    committed = json.loads((ROOT / "exercises" / ASSIGNMENT / NOTEBOOK).read_text())
    generated = json.loads((course / "exercises" / ASSIGNMENT / NOTEBOOK).read_text())
    assert committed == generated, (
        "exercises/ drifted from solutions/: run `python -m autograder generate 01-tokens` and commit")


def test_exercises_hold_no_solutions_and_no_outputs():
    nb = nbformat.read(ROOT / "exercises" / ASSIGNMENT / NOTEBOOK, as_version=4)
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
