"""Seconds to grade submissions: this grader vs stock ``nbgrader autograde``.

Both grade the same submissions in their own temporary course, from a cold start (a new
process per command, as an instructor runs them). Ours runs the reference notebook and each
submission in sandboxed kernels and compares outside them; stock nbgrader runs each notebook
with its test cells in one kernel, sequentially (it has no parallel mode). All figures of one
invocation come from one run on one machine, so their ratios compare like with like.

    python benchmarks/grading_speed.py [--repeat 3] [--class-size 8]
        one Chapter-1 submission (median of cold runs) and a class of identical copies
    python benchmarks/grading_speed.py --class-mode [--per-chapter 20] [--jobs 2] [ASSIGNMENT ...]
        per chapter, a class of correct, half-done, blank and mistaken submissions (typical
        mistakes from the chapter's catalogue, one per exercise or two in one): stock sequential vs
        ours with --jobs; throughput ratio; then one full-course submission (every chapter)
    ... --class-mode --plain
        the class without typical students (correct, half-done and blank only)
    ... --class-mode --anchor OTHER/.venv/bin/python [--no-stock]
        also this grader as another checkout has it (a git worktree with its own environment,
        whose ``autograder`` is that checkout's), in the same run: a change's cost in speed
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

from autograder import mistakes  # noqa: E402

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


def _autograde(name: str, assignment: str, *extra: str, anchor: str | None = None) -> list[str]:
    if name == "stock":
        return [STOCK, "autograde", assignment, "--force"]
    return [anchor if name == "anchor" else PYTHON, "-m", "autograder", "autograde", assignment, "--force", *extra]


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


def _mistaken(course: Path, assignment: str, pair: bool) -> nbformat.NotebookNode:
    """A typical student: the reference's code with the catalogue's first mistake of every
    exercise made, or (``pair``) two mistakes at once in the first exercise that has two, which
    the grader tells apart only by trying pairs."""
    reference = nbformat.read(ROOT / "solutions" / assignment / notebook_of(assignment), as_version=4)
    catalogue = mistakes.load(ROOT / "solutions" / assignment, reference)
    if pair:
        exercises = dict.fromkeys(m.exercise for m in catalogue.mistakes)
        chosen = next((catalogue.by_id(p) for gid in exercises
                       for p in catalogue.pairs(reference, [m for m in catalogue.mistakes if m.exercise == gid])), ())
    else:
        chosen = list({m.exercise: m for m in reversed(catalogue.mistakes)}.values())
    code = reference_code(course, assignment)
    for mistake in chosen:
        for old, new in mistake.patch:
            gid = next(g for g, source in code.items() if old in source)
            code[gid] = code[gid].replace(old, new, 1)
    nb = make_submission(course, assignment=assignment, solved=False)
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in code:
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
        ours_config = (ROOT / "nbgrader_config.py").read_text()
        courses = {"ours": _course(Path(tmp), "ours", ours_config, chapters)}
        if args.anchor:
            courses["anchor"] = _course(Path(tmp), "anchor", ours_config, chapters)
        if not args.no_stock:
            courses["stock"] = _course(Path(tmp), "stock", STOCK_CONFIG, chapters)
        for assignment in chapters:
            base = courses["ours"]
            kinds = [make_submission(base, assignment=assignment), _half_done(base, assignment),
                     make_submission(base, assignment=assignment, solved=False)]
            if not args.plain:
                kinds += [_mistaken(base, assignment, pair=False), _mistaken(base, assignment, pair=True)]
            notebooks = [kinds[k % len(kinds)] for k in range(args.per_chapter)]  # correct, half done, …
            seconds = {}
            for name, course in courses.items():
                _submit(course, assignment, notebooks)
                seconds[name] = _run(_autograde(name, assignment, "--jobs", str(args.jobs), anchor=args.anchor), course)
            rows.append((assignment, seconds))
            print(f"{assignment:<18} " + "   ".join(f"{name} {t:7.1f} s" for name, t in seconds.items())
                  + "".join(f"   throughput ours / {name} × {t / seconds['ours']:.2f}"
                            for name, t in seconds.items() if name != "ours"), flush=True)
        for assignment in chapters:  # one student, every chapter, correct
            _submit(courses["ours"], assignment, [make_submission(courses["ours"], assignment=assignment)])
        # one command for the whole course: its chapters share the workers
        full = _run([PYTHON, "-m", "autograder", "autograde", *chapters, "--force", "--jobs", str(args.jobs)],
                    courses["ours"])

    n = args.per_chapter * len(rows)
    names = list(rows[0][1])
    others = [name for name in names if name != "ours"]
    label = {"stock": "stock nbgrader, sequential", "ours": f"ours, --jobs {args.jobs}", "anchor": f"anchor, --jobs {args.jobs}"}
    print("\n| chapter | " + " | ".join(f"{label[name]} (s)" for name in names) + " | "
          + " | ".join(f"throughput ours / {name}" for name in others) + " |")
    print("|---" * (1 + len(names) + len(others)) + "|")
    total = {name: sum(seconds[name] for _, seconds in rows) for name in names}
    for assignment, seconds in [*rows, (f"all ({n} submissions)", total)]:
        print(f"| {assignment} | " + " | ".join(f"{seconds[name]:.1f}" for name in names) + " | "
              + " | ".join(f"{seconds[name] / seconds['ours']:.2f}×" for name in others) + " |")
    print(f"\none full-course submission ({len(chapters)} chapters in one `autograde` command, ours, "
          f"--jobs {args.jobs}): {full:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="cold runs of one submission")
    parser.add_argument("--class-size", type=int, default=8, help="submissions in the Chapter-1 class run")
    parser.add_argument("--class-mode", action="store_true", help="a mixed class for every chapter")
    parser.add_argument("--per-chapter", type=int, default=20, help="class mode: submissions per chapter")
    parser.add_argument("--jobs", type=int, default=2, help="class mode: our --jobs")
    parser.add_argument("--anchor", help="class mode: also grade with this interpreter's autograder (another checkout)")
    parser.add_argument("--no-stock", action="store_true", help="class mode: leave stock nbgrader out")
    parser.add_argument("--plain", action="store_true", help="class mode: no students with typical mistakes")
    parser.add_argument("assignments", nargs="*", help="class mode: these chapters only (default: all)")
    args = parser.parse_args()
    class_mode(args) if args.class_mode else one_chapter(args)


if __name__ == "__main__":
    main()
