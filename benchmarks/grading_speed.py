"""Seconds to grade submissions: this grader vs stock ``nbgrader autograde``.

Both grade the same submissions in their own temporary course, from a cold start (a new
process per command, as an instructor runs them). Ours runs the reference notebook and each
submission in sandboxed kernels and compares outside them; stock nbgrader runs each notebook
with its test cells in one kernel, sequentially (it has no parallel mode). All figures of one
invocation come from one run on one machine, so their ratios compare like with like.

    python benchmarks/grading_speed.py [--repeat 3] [--class-size 8]
        one Chapter-1 submission (median of cold runs) and a class of identical copies
    python benchmarks/grading_speed.py --class-mode [--per-chapter 20] [--jobs 2] [ASSIGNMENT ...]
        per chapter, a class of correct, half-done and blank submissions: stock sequential vs
        ours with --jobs; throughput ratio; then one full-course submission (every chapter)
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
# the tests' way of writing a submission
from conftest import ASSIGNMENT, assignments, make_submission, notebook_of, reference_code  # noqa: E402

STOCK_CONFIG = """c = get_config()
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
"""
PYTHON = sys.executable
STOCK = str(Path(PYTHON).with_name("nbgrader"))


def _course(tmp: Path, name: str, config: str, chapters: list[str]) -> Path:
    course = tmp / name
    course.mkdir()
    (course / "nbgrader_config.py").write_text(config)
    for assignment in chapters:
        shutil.copytree(ROOT / "solutions" / assignment, course / "solutions" / assignment)
        subprocess.run([PYTHON, "-m", "autograder", "--course", str(course), "generate", assignment],
                       check=True, capture_output=True)
    return course


def _run(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def _autograde(name: str, assignment: str, *extra: str) -> list[str]:
    if name == "stock":
        return [STOCK, "autograde", assignment, "--force"]
    return [PYTHON, "-m", "autograder", "autograde", assignment, "--force", *extra]


def _submit(course: Path, assignment: str, notebooks: list[nbformat.NotebookNode]) -> None:
    """Replace the course's submissions of ``assignment`` by ``notebooks`` (student000, …)."""
    for folder in (course / "submitted").glob(f"*/{assignment}"):
        shutil.rmtree(folder)
    for k, nb in enumerate(notebooks):
        dest = course / "submitted" / f"student{k:03d}" / assignment
        dest.mkdir(parents=True)
        nbformat.write(nb, dest / notebook_of(assignment))


def _half_done(course: Path, assignment: str) -> nbformat.NotebookNode:
    """The first half of the exercises written (the reference's code), the rest untouched."""
    nb = make_submission(course, assignment=assignment, solved=False)
    code = reference_code(course, assignment)
    for gid in list(code)[: len(code) // 2]:
        cell = next(c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == gid)
        cell.source = code[gid]
    return nb


def one_chapter(args) -> None:
    """Chapter 1: one submission from cold, and a class of copies of it."""
    with tempfile.TemporaryDirectory() as tmp:
        courses = {"ours": _course(Path(tmp), "ours", (ROOT / "nbgrader_config.py").read_text(), [ASSIGNMENT]),
                   "stock": _course(Path(tmp), "stock", STOCK_CONFIG, [ASSIGNMENT])}
        submission = make_submission(courses["ours"])
        for course in courses.values():
            _submit(course, ASSIGNMENT, [submission])
        one = {name: [_run(_autograde(name, ASSIGNMENT), c) for _ in range(args.repeat)]
               for name, c in courses.items()}
        for course in courses.values():
            _submit(course, ASSIGNMENT, [submission] * args.class_size)
        per = {name: _run(_autograde(name, ASSIGNMENT), c) / args.class_size for name, c in courses.items()}

    ours_s, stock_s = statistics.median(one["ours"]), statistics.median(one["stock"])
    print(f"one Chapter-1 submission, median of {args.repeat} cold runs (process start included):")
    print(f"  this grader (sandboxed, vs live reference): {ours_s:6.2f} s   {[round(t, 2) for t in one['ours']]}")
    print(f"  stock nbgrader autograde:                   {stock_s:6.2f} s   {[round(t, 2) for t in one['stock']]}")
    print(f"  ratio ours / stock: {ours_s / stock_s:.2f}")
    print(f"class of {args.class_size} submissions, seconds per submission:")
    print(f"  this grader: {per['ours']:6.2f} s   stock: {per['stock']:6.2f} s   "
          f"ratio ours / stock: {per['ours'] / per['stock']:.2f}")


def class_mode(args) -> None:
    """Every chapter: a mixed class graded by stock (sequential) and by ours (--jobs); then one
    student's whole course graded by ours in one command."""
    chapters = args.assignments or assignments()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        courses = {"ours": _course(Path(tmp), "ours", (ROOT / "nbgrader_config.py").read_text(), chapters),
                   "stock": _course(Path(tmp), "stock", STOCK_CONFIG, chapters)}
        for assignment in chapters:
            base = courses["ours"]
            kinds = [make_submission(base, assignment=assignment), _half_done(base, assignment),
                     make_submission(base, assignment=assignment, solved=False)]
            notebooks = [kinds[k % 3] for k in range(args.per_chapter)]  # correct, half done, blank, …
            seconds = {}
            for name, course in courses.items():
                _submit(course, assignment, notebooks)
                seconds[name] = _run(_autograde(name, assignment, "--jobs", str(args.jobs)), course)
            rows.append((assignment, seconds["stock"], seconds["ours"]))
            print(f"{assignment:<18} stock {seconds['stock']:7.1f} s   ours (--jobs {args.jobs}) "
                  f"{seconds['ours']:7.1f} s   throughput × {seconds['stock'] / seconds['ours']:.2f}", flush=True)
        for assignment in chapters:  # one student, every chapter, correct
            _submit(courses["ours"], assignment, [make_submission(courses["ours"], assignment=assignment)])
        # one command for the whole course: its chapters share the workers
        full = _run([PYTHON, "-m", "autograder", "autograde", *chapters, "--force", "--jobs", str(args.jobs)],
                    courses["ours"])

    stock, ours = sum(r[1] for r in rows), sum(r[2] for r in rows)
    n = args.per_chapter * len(rows)
    print(f"\n| chapter | stock nbgrader, sequential (s) | ours, --jobs {args.jobs} (s) | throughput ours / stock |")
    print("|---|---|---|---|")
    for assignment, s, o in rows:
        print(f"| {assignment} | {s:.1f} | {o:.1f} | {s / o:.2f}× |")
    print(f"| all ({n} submissions) | {stock:.1f} ({stock / n:.2f} s each) | {ours:.1f} ({ours / n:.2f} s each) "
          f"| {stock / ours:.2f}× |")
    print(f"\none full-course submission ({len(chapters)} chapters in one `autograde` command, ours, "
          f"--jobs {args.jobs}): {full:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="cold runs of one submission")
    parser.add_argument("--class-size", type=int, default=8, help="submissions in the Chapter-1 class run")
    parser.add_argument("--class-mode", action="store_true", help="a mixed class for every chapter")
    parser.add_argument("--per-chapter", type=int, default=20, help="class mode: submissions per chapter")
    parser.add_argument("--jobs", type=int, default=2, help="class mode: our --jobs")
    parser.add_argument("assignments", nargs="*", help="class mode: these chapters only (default: all)")
    args = parser.parse_args()
    class_mode(args) if args.class_mode else one_chapter(args)


if __name__ == "__main__":
    main()
