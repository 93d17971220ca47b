"""The README's Quickstart is exactly two commands, and CI runs the same ones."""

from __future__ import annotations

import re

from conftest import ROOT


def quickstart() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart -->\s*```bash\n(.*?)```\s*<!-- /quickstart -->", readme, re.S)
    assert block, "README has no quickstart block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_is_two_commands_setup_then_tests():
    setup, tests = quickstart()
    assert "requirements.txt" in setup and "jupyter-book build book" in setup
    assert "pytest" in tests


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "quickstart" in ci, ".ci/run must take its commands from the README's quickstart block"
