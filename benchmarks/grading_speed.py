"""Seconds to grade Chapter-1 submissions: this grader vs stock ``nbgrader autograde``.

Both grade the same correct submission in their own temporary course, from a cold start
(a new process each, as an instructor runs them). Ours runs the reference notebook and the
submission in two sandboxed kernels and compares outside them; stock nbgrader runs the
notebook with its test cells in one kernel. Prints seconds for one submission, seconds per
submission for a class of ``--class-size`` copies (our reference runs once per class), and
the ratios, all from one run.

    python benchmarks/grading_speed.py [--repeat 3] [--class-size 8]
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
    parser.add_argument("--repeat", type=int, default=3, help="cold runs of one submission")
    parser.add_argument("--class-size", type=int, default=8, help="submissions in the class run")
    args = parser.parse_args()
    python = sys.executable
    commands = {"ours": [python, "-m", "autograder", "autograde", ASSIGNMENT],
                "stock": [str(Path(python).with_name("nbgrader")), "autograde", ASSIGNMENT, "--force"]}
    with tempfile.TemporaryDirectory() as tmp:
        courses = {"ours": _course(Path(tmp), "ours", (ROOT / "nbgrader_config.py").read_text()),
                   "stock": _course(Path(tmp), "stock", STOCK_CONFIG)}
        for course in courses.values():
            subprocess.run([python, "-m", "autograder", "--course", str(course), "generate", ASSIGNMENT],
                           check=True, capture_output=True)
        submission = make_submission(courses["ours"])

        def submit(students: int) -> None:
            for course in courses.values():
                shutil.rmtree(course / "submitted", ignore_errors=True)
                for k in range(students):
                    dest = course / "submitted" / f"student{k:03d}" / ASSIGNMENT
                    dest.mkdir(parents=True)
                    nbformat.write(submission, dest / "tokens.ipynb")

        submit(1)
        one = {name: [_run(commands[name], courses[name]) for _ in range(args.repeat)] for name in commands}
        submit(args.class_size)
        per = {name: _run(commands[name], courses[name]) / args.class_size for name in commands}

    ours_s, stock_s = statistics.median(one["ours"]), statistics.median(one["stock"])
    print(f"one Chapter-1 submission, median of {args.repeat} cold runs (process start included):")
    print(f"  this grader (sandboxed, vs live reference): {ours_s:6.2f} s   {[round(t, 2) for t in one['ours']]}")
    print(f"  stock nbgrader autograde:                   {stock_s:6.2f} s   {[round(t, 2) for t in one['stock']]}")
    print(f"  ratio ours / stock: {ours_s / stock_s:.2f}")
    print(f"class of {args.class_size} submissions, seconds per submission:")
    print(f"  this grader: {per['ours']:6.2f} s   stock: {per['stock']:6.2f} s   "
          f"ratio ours / stock: {per['ours'] / per['stock']:.2f}")


if __name__ == "__main__":
    main()
