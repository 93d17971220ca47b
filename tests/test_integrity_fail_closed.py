"""Attack class: a machine where the sandbox cannot run (no unprivileged user namespaces).

Simulated with ``AUTOGRADER_BWRAP`` naming a ``bwrap`` that fails as bubblewrap does there.
``autograde`` must refuse and say how to enable namespaces, probing once per run; only with
``--no-sandbox`` does it grade, and then it warns. ``doctor`` says the same and exits 1.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

from conftest import ASSIGNMENT, make_submission, run_cli

FULL = 10.0


@pytest.fixture
def no_namespaces(tmp_path) -> tuple[dict, object]:
    shared = Path(tempfile.mkdtemp(prefix="autograder-calls-"))  # bwrap runs as the sandbox's user
    shared.chmod(0o777)
    calls = shared / "calls"
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\n"
                    f"echo run >> {calls}\n"
                    "echo 'bwrap: No permissions to create a new namespace, likely because the kernel "
                    "does not allow non-privileged user namespaces.' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    yield {"AUTOGRADER_BWRAP": str(fake)}, calls
    shutil.rmtree(shared)


@pytest.fixture
def submitted(course, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    nbformat.write(make_submission(course), downloads / "unprotected.ipynb")
    run_cli(course, "collect", ASSIGNMENT, str(downloads))
    return "unprotected"


def test_grading_refuses_without_namespaces_and_says_how_to_enable_them(course, submitted, no_namespaces):
    env, calls = no_namespaces
    result = run_cli(course, "autograde", ASSIGNMENT, "--student", submitted, env=env, check=False)
    assert result.returncode != 0
    assert "refusing to grade" in result.stderr and "--no-sandbox" in result.stderr, result.stderr
    assert "sysctl" in result.stderr and "apparmor_restrict_unprivileged_userns=0" in result.stderr
    assert not (course / "autograded" / submitted).exists()
    assert calls.read_text().count("run") == 1  # one probe per grading run


def test_no_sandbox_grades_and_warns(course, submitted, no_namespaces):
    env, calls = no_namespaces
    result = run_cli(course, "autograde", ASSIGNMENT, "--student", submitted, "--no-sandbox", env=env)
    assert "WARNING: --no-sandbox" in result.stderr
    with open(course / f"autograde-{ASSIGNMENT}.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["student"] == submitted)
    assert float(row["score"]) == FULL, result.stdout
    assert calls.read_text().count("run") == 1


def test_doctor_says_the_sandbox_is_missing(course, no_namespaces):
    env, _ = no_namespaces
    result = run_cli(course, "doctor", env=env, check=False)
    assert result.returncode == 1
    assert "NOT AVAILABLE" in result.stdout and "sysctl" in result.stdout, result.stdout


def test_help_names_the_risk_of_no_sandbox(course):
    result = run_cli(course, "autograde", "--help")
    assert "--no-sandbox" in result.stdout and "DANGEROUS" in result.stdout
