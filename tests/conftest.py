"""Shared fixtures: a temporary nbgrader course made from this repository, and submissions.

A submission is built the way a student makes one: start from the generated exercise
notebook, write code into its solution cells. ``make_submission`` fills them with the
reference code, then applies a student's edits (a mistaken function, an extra cell).
``grade_class`` runs the README's instructor flow (collect → autograde) on such a class and
returns each student's score and the report written into every test cell.

Every chapter's test module follows one pattern (see ``tests/test_ch01_*`` … ``test_chNN_*``):
grade a class of {reference, untouched, one typical mistake per exercise} and assert full
marks, zero with "not written yet" messages, and partial credit with the mistake's own hint.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01-tokens"
NOTEBOOK = "tokens.ipynb"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
_SOLUTION = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)


def assignments() -> list[str]:
    """Every assignment of the course: the folders of solutions/."""
    return sorted(p.name for p in (ROOT / "solutions").iterdir() if any(p.glob("*.ipynb")))


def notebook_of(assignment: str) -> str:
    """The file name of an assignment's (single) notebook."""
    (path,) = (ROOT / "solutions" / assignment).glob("*.ipynb")
    return path.name


def run_cli(course: Path, *args: str, timeout: float = 900, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run an instructor command exactly as the README writes it, on ``course`` (``env``: extra
    environment variables; ``check=False`` returns a failed command instead of failing)."""
    result = subprocess.run([sys.executable, "-m", "autograder", "--course", str(course), *args],
                            capture_output=True, text=True, timeout=timeout, cwd=course,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0 or not check, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def course(tmp_path_factory) -> Path:
    """A fresh course directory: the repo's config and reference notebooks, every assignment generated."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    for assignment in assignments():
        run_cli(course, "generate", assignment)
    return course


def reference_code(course: Path, assignment: str = ASSIGNMENT) -> dict[str, str]:
    """grade_id → the reference code of each solution cell, without nbgrader's markers."""
    nb = nbformat.read(course / "solutions" / assignment / notebook_of(assignment), as_version=4)
    return {c.metadata.nbgrader["grade_id"]: _SOLUTION.sub("", c.source) for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}


def reference_namespace(course: Path, assignment: str = ASSIGNMENT) -> dict:
    """The reference's own code cells (setup and solutions, not the check cells) exec'd in this
    process: for tests of the public checks, which are about the checks, not the sandbox."""
    from IPython.core.inputtransformer2 import TransformerManager  # %pip lines -> Python

    nb = nbformat.read(course / "solutions" / assignment / notebook_of(assignment), as_version=4)
    namespace: dict = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade_id") == "setup"):
            exec(TransformerManager().transform_cell(_SOLUTION.sub("", cell.source)), namespace)
    return namespace


def make_submission(course: Path, *, replace: dict[str, str] | None = None,
                    extra_cells: list[str] = (), solved: bool = True,
                    assignment: str = ASSIGNMENT) -> nbformat.NotebookNode:
    """The exercise notebook as a student would hand it in.

    ``replace`` maps a function or class name to a student's own cell defining it (replacing
    the cell that defines it); ``extra_cells`` are code cells the student added after the
    setup cell.
    """
    nb = nbformat.read(course / "exercises" / assignment / notebook_of(assignment), as_version=4)
    code = reference_code(course, assignment)
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if solved and gid in code:
            cell.source = code[gid]
        for name, source in (replace or {}).items():
            if re.search(rf"^(def {name}\(|class {name}\b)", cell.source, re.MULTILINE):
                cell.source = source
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    for offset, source in enumerate(extra_cells, start=1):
        nb.cells.insert(first_code + offset, nbformat.v4.new_code_cell(source))
    return nb


def reports(path: Path) -> dict[str, str]:
    """grade_id → the grader's report written into that test cell of a graded notebook."""
    nb = nbformat.read(path, as_version=4)
    return {c.metadata.nbgrader["grade_id"]: "".join(o.get("text", "") for o in c.outputs)
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")
            and not c.metadata.nbgrader.get("solution")}


def observations(report: str) -> dict:
    """What an attack notebook saw: the JSON it raised as ``RuntimeError("OBS{...}SBO")``."""
    found = re.search(r"OBS(\{.*?\})SBO", report, re.DOTALL)
    assert found, f"no observations in the report:\n{report}"
    return json.loads(found.group(1))


def grade_class(course: Path, assignment: str, submissions: dict[str, nbformat.NotebookNode],
                downloads: Path, *cli_args: str, env: dict | None = None) -> dict[str, dict]:
    """collect + autograde ``submissions`` (student → notebook) through the README's commands.

    Returns student → the summary CSV's row, with ``score`` as a float and ``report`` mapping
    each test cell's grade_id to the report the grader wrote there. Only these students are
    graded, so several classes can share one course directory.
    """
    for student, nb in submissions.items():
        nbformat.write(nb, downloads / f"{student}.ipynb")
    run_cli(course, "collect", assignment, str(downloads))
    run_cli(course, "autograde", assignment, "--student", *submissions, *cli_args, env=env)
    with open(course / f"autograde-{assignment}.csv") as f:
        summary = {row["student"]: row for row in csv.DictReader(f)}
    for student, row in summary.items():
        row["score"] = float(row["score"])
        path = course / "autograded" / student / assignment / notebook_of(assignment)
        row["report"] = reports(path) if path.exists() else {}
    return summary


def grade_chapter(course: Path, assignment: str, mistakes: dict[str, tuple], downloads: Path) -> dict[str, dict]:
    """Every chapter test's class, graded by :func:`grade_class`: the reference ("correct"), the
    untouched exercise ("untouched") and one student per typical mistake (``mistakes``: student →
    (the function or class replaced, the student's code for it, …))."""
    submissions = {"correct": make_submission(course, assignment=assignment),
                   "untouched": make_submission(course, assignment=assignment, solved=False),
                   **{student: make_submission(course, assignment=assignment, replace={name: source})
                      for student, (name, source, *_) in mistakes.items()}}
    return grade_class(course, assignment, submissions, downloads)
