"""Grading a class at scale: options where people type them, the instructor report, parallel and
resumable grading. One small class of Chapter-1 submissions is graded a few ways."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ASSIGNMENT, ROOT, run_cli


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course with Chapter 1 only (generating every chapter would dominate these tests)."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, course / "solutions" / ASSIGNMENT)
    run_cli(course, "generate", ASSIGNMENT)
    return course


def test_course_is_accepted_after_the_command(course, tmp_path):
    out = tmp_path / "grades.csv"
    result = subprocess.run([sys.executable, "-m", "autograder", "export", "--to", str(out),
                             "--course", str(course)], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("assignment,"), out.read_text()[:200]
