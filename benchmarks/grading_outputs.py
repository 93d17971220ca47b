"""Every chapter's grading outputs as JSON, to prove a refactor leaves them byte-identical.

A pure refactor of the autograder must not change a single score or a single byte of the
feedback written into a student's notebook. This script grades, for each chapter, the class
every chapter test grades (``grade_chapter`` in tests/conftest.py): the reference ("correct"),
the untouched exercise ("untouched") and one student per typical mistake in that chapter's
test module's ``MISTAKES`` (Chapter 1: the off-by-one, BPE-order and renamed-function students
of tests/test_grading.py). It records, per chapter and student, the summary CSV's score,
max_score and problem, and the outputs of every cell that has any, by grade_id (or "cell N"),
as written into the autograded notebook. Run it before and after the refactor, then compare:

    python benchmarks/grading_outputs.py --out FILE [ASSIGNMENT ...]   (default: every chapter)
    python benchmarks/grading_outputs.py --compare BEFORE.json AFTER.json

``--compare`` prints every difference and exits 1 if there is any.

Nothing in the outputs is a temporary path. What varies from run to run is normalised:

* the CSV's ``seconds`` column (a timing) is left out;
* test cells are kept byte for byte, but for one report: 10-gpt's statistical check of
  ``sample_next`` draws unseeded on purpose, so a wrong student's "token frequencies [...] differ
  from the reference's [...] (total variation ...)" numbers become "<random>";
* the other cells with outputs are the student's own demo cells: consecutive stream outputs are
  merged (the kernel splits stdout at random, e.g. 07-multi-head's "buggy:/fixed:" cell) and
  durations such as "0.54 s" become "<t> s" (11-kv-cache's "finale" times generation).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
# the tests' own course, class and grading
from conftest import ASSIGNMENT, assignments, grade_chapter, notebook_of, run_cli  # noqa: E402

SUMMARY = ("score", "max_score", "problem")  # the CSV's columns but "student" and "seconds"
DURATION = re.compile(r"\b\d+(\.\d+)? s\b")
RANDOM = re.compile(r"(?<=token frequencies )\[[^\]]*\]|(?<=the reference's )\[[^\]]*\]"
                    r"|(?<=total variation )\d[\d.]*")  # 10-gpt's unseeded draws


def mistakes(assignment: str) -> dict[str, tuple]:
    """student → (name replaced, its code, …): the chapter test module's MISTAKES."""
    if assignment == ASSIGNMENT:  # Chapter 1's class is built inside test_grading's fixture
        from test_grading import BPE_MERGES_REVERSED, OFF_BY_ONE, RENAMED
        return {"offbyone": ("one_hot", OFF_BY_ONE), "bpeorder": ("bpe_encode", BPE_MERGES_REVERSED),
                "renamed": ("embed", RENAMED)}
    (module,) = (ROOT / "tests").glob(f"test_ch{assignment[:2]}_*.py")
    return importlib.import_module(module.stem).MISTAKES


def _steady(outputs: list[dict]) -> list[dict]:
    """A demo cell's outputs without their randomness: streams merged, durations blanked."""
    merged: list[dict] = []
    for output in outputs:
        if output["output_type"] == "stream":
            text = DURATION.sub("<t> s", "".join(output["text"]))
            if merged and merged[-1]["output_type"] == "stream" and merged[-1]["name"] == output["name"]:
                merged[-1]["text"] += text
                continue
            output = {**output, "text": text}
        merged.append(output)
    return merged


def _unrandom(outputs: list[dict]) -> list[dict]:
    """A test cell's outputs with the unseeded draws' numbers blanked."""
    return [{**o, "text": [RANDOM.sub("<random>", line) for line in o["text"]]} if "text" in o else o
            for o in outputs]


def cell_outputs(path: Path) -> dict[str, list]:
    """grade_id (or "cell N") → the cell's outputs as stored in the notebook file; the test
    cells' as they are (but unseeded draws), the other cells' made steady."""
    if not path.exists():
        return {}
    outputs = {}
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("outputs"):
            test = meta.get("grade") and not meta.get("solution")  # as conftest's ``reports``
            outputs[meta.get("grade_id", f"cell {i}")] = (_unrandom if test else _steady)(cell["outputs"])
    return outputs


def grade(chapters: list[str], out: Path) -> None:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp) / "course"  # as conftest's ``course`` fixture, for these chapters
        course.mkdir()
        shutil.copy(ROOT / "nbgrader_config.py", course)
        shutil.copytree(ROOT / "solutions", course / "solutions")
        for assignment in chapters:
            start = time.perf_counter()
            run_cli(course, "generate", assignment)
            downloads = Path(tmp) / f"downloads-{assignment}"
            downloads.mkdir()
            graded = grade_chapter(course, assignment, mistakes(assignment), downloads)
            results[assignment] = {
                student: {**{key: row[key] for key in SUMMARY},
                          "outputs": cell_outputs(course / "autograded" / student / assignment
                                                  / notebook_of(assignment))}
                for student, row in sorted(graded.items())}
            out.write_text(json.dumps(results, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
            print(f"{assignment}: {len(graded)} students, {time.perf_counter() - start:.0f} s", flush=True)


def _lines(value) -> list[str]:
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False).splitlines()


def compare(a_path: Path, b_path: Path, context: int = 30) -> int:
    """Print every difference between two outputs files; 1 if any, 0 if identical."""
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    differences = 0

    def report(where: str, x, y) -> None:
        nonlocal differences
        differences += 1
        diff = list(difflib.unified_diff(_lines(x), _lines(y), str(a_path), str(b_path), lineterm="", n=1))
        more = f"\n  … {len(diff) - context} more diff lines" if len(diff) > context else ""
        print(f"DIFFERENT {where}:\n  " + "\n  ".join(diff[:context]) + more)

    def missing(where: str, in_a: bool) -> None:
        nonlocal differences
        differences += 1
        print(f"DIFFERENT {where}: only in {a_path if in_a else b_path}")

    for chapter in sorted(a.keys() | b.keys()):
        if chapter not in a or chapter not in b:
            missing(chapter, chapter in a)
            continue
        for student in sorted(a[chapter].keys() | b[chapter].keys()):
            x, y = a[chapter].get(student), b[chapter].get(student)
            if x is None or y is None:
                missing(f"{chapter} / {student}", x is not None)
                continue
            for key in SUMMARY:
                if x[key] != y[key]:
                    report(f"{chapter} / {student} / {key}", x[key], y[key])
            for cell in sorted(x["outputs"].keys() | y["outputs"].keys()):
                if x["outputs"].get(cell) != y["outputs"].get(cell):
                    report(f"{chapter} / {student} / cell {cell}", x["outputs"].get(cell), y["outputs"].get(cell))
    print(f"{differences} difference(s)" if differences else "identical")
    return 1 if differences else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the JSON outputs file here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"),
                        help="print the differences between two outputs files; exit 1 if any")
    parser.add_argument("assignments", nargs="*", help="these chapters only (default: all)")
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if not args.out:
        parser.error("--out or --compare is required")
    grade(args.assignments or assignments(), args.out)


if __name__ == "__main__":
    main()
