"""Shared fixtures: a temporary nbgrader course made from this repository, and submissions.

A submission is built the way a student makes one: start from the generated exercise
notebook, write code into its solution cells. ``make_submission`` fills them with the
reference code, then applies a student's edits (a mistaken function, an extra cell).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01-tokens"
NOTEBOOK = "tokens.ipynb"
_SOLUTION = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)


def run_cli(course: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run an instructor command exactly as the README writes it, on ``course``."""
    result = subprocess.run([sys.executable, "-m", "autograder", "--course", str(course), *args],
                            capture_output=True, text=True, timeout=timeout, cwd=course)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def course(tmp_path_factory) -> Path:
    """A fresh course directory: the repo's config and reference notebooks, assignment generated."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    run_cli(course, "generate", ASSIGNMENT)
    return course


def reference_code(course: Path) -> dict[str, str]:
    """grade_id → the reference code of each solution cell, without nbgrader's markers."""
    nb = nbformat.read(course / "solutions" / ASSIGNMENT / NOTEBOOK, as_version=4)
    return {c.metadata.nbgrader["grade_id"]: _SOLUTION.sub("", c.source) for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}


def make_submission(course: Path, *, replace: dict[str, str] | None = None,
                    extra_cells: list[str] = (), solved: bool = True) -> nbformat.NotebookNode:
    """The exercise notebook as a student would hand it in.

    ``replace`` maps a function name to a student's own cell defining it (replacing the cell
    that defines it); ``extra_cells`` are code cells the student added after the setup cell.
    """
    nb = nbformat.read(course / "exercises" / ASSIGNMENT / NOTEBOOK, as_version=4)
    code = reference_code(course)
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if solved and gid in code:
            cell.source = code[gid]
        for name, source in (replace or {}).items():
            if re.search(rf"^def {name}\(", cell.source, re.MULTILINE):
                cell.source = source
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    for offset, source in enumerate(extra_cells, start=1):
        nb.cells.insert(first_code + offset, nbformat.v4.new_code_cell(source))
    return nb
