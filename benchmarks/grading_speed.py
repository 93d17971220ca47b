"""Seconds to grade one Chapter-1 submission: this grader vs stock ``nbgrader autograde``.

Both grade the same correct submission in their own temporary course, from a cold start
(a new process each, as an instructor runs them). Ours runs the reference notebook and the
submission in two sandboxed kernels and compares outside them; stock nbgrader runs the
notebook with its test cells in one kernel. Prints seconds and the ratio from one run.

    python benchmarks/grading_speed.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import ASSIGNMENT, make_submission  # noqa: E402  (the tests' way of writing a submission)

STOCK_CONFIG = """c = get_config()
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
"""


def _course(tmp: Path, name: str, config: str) -> Path:
    course = tmp / name
    course.mkdir()
    (course / "nbgrader_config.py").write_text(config)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    return course


def _run(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    python = sys.executable
    nbgrader = str(Path(python).with_name("nbgrader"))
    with tempfile.TemporaryDirectory() as tmp:
        ours = _course(Path(tmp), "ours", (ROOT / "nbgrader_config.py").read_text())
        stock = _course(Path(tmp), "stock", STOCK_CONFIG)
        for course in (ours, stock):
            subprocess.run([python, "-m", "autograder", "--course", str(course), "generate", ASSIGNMENT],
                           check=True, capture_output=True)
        submission = make_submission(ours)
        for course in (ours, stock):
            dest = course / "submitted" / "student" / ASSIGNMENT
            dest.mkdir(parents=True)
            nbformat.write(submission, dest / "tokens.ipynb")
        times = {"ours": [], "stock": []}
        for _ in range(args.repeat):
            times["ours"].append(_run([python, "-m", "autograder", "--course", str(ours), "autograde", ASSIGNMENT], ours))
            times["stock"].append(_run([nbgrader, "autograde", ASSIGNMENT, "--force"], stock))
    ours_s, stock_s = statistics.median(times["ours"]), statistics.median(times["stock"])
    print(f"grading one Chapter-1 submission, median of {args.repeat} cold runs:")
    print(f"  this grader (sandboxed, vs live reference): {ours_s:6.2f} s   {[round(t, 2) for t in times['ours']]}")
    print(f"  stock nbgrader autograde:                   {stock_s:6.2f} s   {[round(t, 2) for t in times['stock']]}")
    print(f"  ratio ours / stock: {ours_s / stock_s:.2f}")


if __name__ == "__main__":
    main()
