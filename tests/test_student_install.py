"""A student's install (issue 20 §2): a fresh environment with nothing but the notebooks' own
install line runs every exercise notebook, reference answers filled in, and every public check
passes; the grader's dependencies stay out of it."""

from __future__ import annotations

import re
import shutil
import subprocess
import venv
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from conftest import ROOT, assignments, notebook_of

INSTALL = re.compile(r'^\s*%pip install (?P<options>.*?)"(?P<url>[^"]+)"\s*$', re.MULTILINE)


def _install_line() -> re.Match:
    """The one install line every exercise notebook's setup cell holds."""
    setups = [c.source for a in assignments() for c in nbformat.read(ROOT / "exercises" / a / notebook_of(a), 4).cells
              if c.metadata.get("nbgrader", {}).get("grade_id") == "setup"]
    assert len(setups) == len(assignments())
    found = {m[0].strip() for source in setups for m in INSTALL.finditer(source)}
    assert len(found) == 1, found
    return INSTALL.search(found.pop())


def _entries(path: Path) -> set[str]:
    """A requirements file's requirements (no options, no comments)."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("-")}


def _torch_pin(path: Path) -> list[str]:
    pins = [line for line in _entries(path) if line.startswith("torch==")]
    assert len(pins) == 1, pins
    return pins


@pytest.fixture(scope="module")
def student_python(tmp_path_factory) -> Path:
    """A new venv where the notebooks' install line ran, pointed at a copy of this checkout's
    package (the repository URL is not reachable here)."""
    where = tmp_path_factory.mktemp("student")
    package = where / "package"
    package.mkdir()
    shutil.copy(ROOT / "pyproject.toml", package)
    shutil.copytree(ROOT / "autograder", package / "autograder", ignore=shutil.ignore_patterns("__pycache__"))
    venv.EnvBuilder(with_pip=True).create(where / "venv")
    python = where / "venv" / "bin" / "python"
    options = _install_line()["options"].split()
    pins = where / "constraints.txt"  # the course's torch, which pip finds locally where CI keeps it
    pins.write_text("".join(line + "\n" for line in _torch_pin(ROOT / "requirements.txt")))
    subprocess.run([python, "-m", "pip", "install", *options, "-c", pins, str(package)], check=True, timeout=900)
    return python


def test_the_student_environment_holds_no_grader(student_python):
    for module in ("nbgrader", "nbclient", "tqdm", "seccomp"):
        found = subprocess.run([student_python, "-c", f"import {module}"], capture_output=True)
        assert found.returncode != 0, f"{module} is installed for students"
    grader = subprocess.run([student_python, "-m", "autograder", "--help"], capture_output=True, text=True)
    assert grader.returncode != 0 and "[grader]" in grader.stderr, grader.stderr


@pytest.mark.parametrize("assignment", assignments())
def test_every_public_check_passes_with_the_reference_answers(student_python, assignment, tmp_path):
    nb = nbformat.read(ROOT / "solutions" / assignment / notebook_of(assignment), 4)
    code = [TransformerManager().transform_cell(c.source) for c in nb.cells if c.cell_type == "code"]
    checks = sum(c.metadata.get("nbgrader", {}).get("grade", False) for c in nb.cells)
    script = tmp_path / "notebook.py"
    script.write_text("\n".join(code))
    result = subprocess.run([student_python, script], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.count("✓") >= checks > 0, result.stdout


def test_binder_installs_the_student_set_at_the_course_pins():
    """Binder's requirements: torch at requirements.txt's pin and the package, nothing of the grader."""
    assert _entries(ROOT / "binder" / "requirements.txt") == {*_torch_pin(ROOT / "requirements.txt"), "."}
