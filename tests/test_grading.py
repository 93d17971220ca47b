"""The README's instructor flow, run once on a class of typical submissions.

One temporary course, ten students, each showing one behaviour the grader must get right:
generate → collect → autograde → feedback → export, every step through the README's command.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest

from autograder import mistakes
from autograder.sandbox import isolation_available
from conftest import ASSIGNMENT, NOTEBOOK, ROOT, make_submission, reports, run_cli

FULL = 10.0  # Chapter 1's points
_SOLUTIONS = ROOT / "solutions" / ASSIGNMENT
HINT = {m.id: m.hint for m in mistakes.load(_SOLUTIONS, nbformat.read(_SOLUTIONS / NOTEBOOK, as_version=4)).mistakes}


def _flat(text: str) -> str:
    return " ".join(text.split())
OFF_BY_ONE = '''
def one_hot(ids, num_classes):
    out = torch.zeros(*ids.shape, num_classes + 1, device=ids.device)
    return out.scatter(-1, ids.unsqueeze(-1), 1.0)[..., 1:]  # mistake: classes counted from 1
'''
BPE_MERGES_REVERSED = '''
def bpe_encode(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in reversed(list(enumerate(merges))):  # mistake: latest merge first
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
                out.append(256 + k)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return ids

def bpe_decode(ids, merges):
    vocab = {i: bytes([i]) for i in range(256)}
    for k, (a, b) in enumerate(merges):
        vocab[256 + k] = vocab[a] + vocab[b]
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
'''
NOISY = '''
import sys, warnings
print("a student's debugging print", file=sys.stderr)
warnings.warn("a harmless warning at import time")
_one_hot_impl = one_hot
def one_hot(ids, num_classes):
    warnings.warn("one_hot: still experimenting")
    print("debug:", ids.shape, file=sys.stderr)
    return _one_hot_impl(ids, num_classes)
'''
PATCH_THE_TESTS = '''
import torch, torch.testing
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
import autograder.compare, autograder.spec
autograder.compare.describe_difference = lambda *args, **kwargs: None
autograder.spec.expect = lambda *args, **kwargs: None
checks.expect = lambda *args, **kwargs: None
'''
CRASH = '''
def one_hot(ids, num_classes):
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
'''
LOOP = '''
def cosine_similarity_matrix(E, eps=1e-8):
    while True:
        pass
'''
SNOOPER = '''
import json
COURSE = {course!r}
open(COURSE + "/gradebook.db", "wb").write(b"")  # tamper with the grades

def one_hot(ids, num_classes):
    reference = json.load(open(COURSE + "/solutions/01-tokens/tokens.ipynb"))  # steal the answer
    namespace = {{"torch": torch}}
    exec(next("".join(c["source"]) for c in reference["cells"] if "def one_hot(" in "".join(c["source"])),
         namespace)
    return namespace["one_hot"](ids, num_classes)
'''
RENAMED = '''
def embedding(ids, W):
    return one_hot(ids, W.shape[0]).to(W.dtype) @ W
'''


@pytest.fixture(scope="module")
def graded(course: Path, tmp_path_factory) -> dict[str, dict]:
    downloads = tmp_path_factory.mktemp("downloads")
    submissions = {
        "correct": make_submission(course),
        "untouched": make_submission(course, solved=False),
        "offbyone": make_submission(course, replace={"one_hot": OFF_BY_ONE}),
        "bpeorder": make_submission(course, replace={"bpe_encode": BPE_MERGES_REVERSED}),
        "noisy": make_submission(course),
        "cheater": make_submission(course, replace={"one_hot": OFF_BY_ONE}, extra_cells=[PATCH_THE_TESTS]),
        "crash": make_submission(course, replace={"one_hot": CRASH}),
        "loop": make_submission(course, replace={"cosine_similarity_matrix": LOOP}),
        "renamed": make_submission(course, replace={"embed": RENAMED}),
        "snooper": make_submission(course, replace={"one_hot": SNOOPER.format(course=str(course))}),
    }
    submissions["noisy"].cells.append(nbformat.v4.new_code_cell(NOISY))
    _move_before_tests(submissions["noisy"])
    for student, nb in submissions.items():
        nbformat.write(nb, downloads / f"{student}.ipynb")
    (downloads / "badjson.ipynb").write_text('{"cells": [ this is not json')

    run_cli(course, "collect", ASSIGNMENT, str(downloads))
    run_cli(course, "autograde", ASSIGNMENT, "--timeout", "5")
    run_cli(course, "feedback", ASSIGNMENT)
    run_cli(course, "export", "--to", str(course / "grades.csv"))
    with open(course / f"autograde-{ASSIGNMENT}.csv") as f:
        summary = {row["student"]: row for row in csv.DictReader(f)}
    for student, row in summary.items():
        row["score"] = float(row["score"])
        path = course / "autograded" / student / ASSIGNMENT / NOTEBOOK
        row["report"] = reports(path) if path.exists() else {}
    return summary


def _move_before_tests(nb: nbformat.NotebookNode) -> None:
    """Put the last (student-added) cell right after the one_hot solution cell."""
    cell = nb.cells.pop()
    index = next(i for i, c in enumerate(nb.cells) if "def one_hot(" in c.source)
    nb.cells.insert(index + 1, cell)


def test_reference_solution_scores_full_marks(graded):
    assert graded["correct"]["score"] == FULL, graded["correct"]["report"]
    assert graded["correct"]["max_score"] == str(FULL)


def test_untouched_exercise_scores_zero_with_readable_reasons(graded):
    row = graded["untouched"]
    assert row["score"] == 0 and row["problem"] == ""
    assert row["report"], "every test cell gets a report"
    for report in row["report"].values():
        assert "not written yet" in report and "Traceback" not in report


def test_one_hot_off_by_one_gets_partial_credit_and_the_hint(graded):
    """Written otherwise than the catalogue's one-hot-from-one, with the same results: named."""
    row = graded["offbyone"]
    assert 0 < row["score"] < FULL
    report = row["report"]["test_one_hot"]
    assert HINT["one-hot-from-one"] in _flat(report), report
    assert "exactly those of the reference with this mistake" in _flat(report), report
    # embed calls one_hot: the same mistake is named there, as the part it uses
    assert HINT["one-hot-from-one"] in _flat(row["report"]["test_embed"]), row["report"]["test_embed"]
    assert "which this exercise uses" in row["report"]["test_embed"]
    # a failing hidden case small enough to retype shows its input (issue 10, item 9)
    assert "Arguments (small enough to try yourself): torch.tensor(" in row["report"]["test_one_hot"]


def test_bpe_merge_order_mistake_gets_partial_credit_and_the_hint(graded):
    row = graded["bpeorder"]
    assert 0 < row["score"] < FULL
    report = row["report"]["test_bpe_round_trip"]
    assert HINT["bpe-encode-reversed"] in _flat(report), report


def test_correct_code_that_prints_warnings_keeps_full_marks(graded):
    assert graded["noisy"]["score"] == FULL, graded["noisy"]["report"]


def test_patching_the_checks_gains_nothing(graded):
    assert graded["cheater"]["score"] == graded["offbyone"]["score"] < FULL


def test_invalid_json_scores_zero_with_a_reason_and_others_are_graded(graded):
    row = graded["badjson"]
    assert row["score"] == 0 and "not a valid notebook" in row["problem"]
    assert graded["correct"]["score"] == FULL


def test_kernel_crash_costs_only_the_crashing_exercise(graded):
    row = graded["crash"]
    assert row["score"] == FULL - 1 - 1  # one_hot, and embed which calls it
    assert "crashed the kernel" in row["report"]["test_one_hot"]


def test_endless_loop_times_out_and_costs_only_that_exercise(graded):
    row = graded["loop"]
    assert row["score"] == FULL - 1
    assert "did not finish" in row["report"]["test_cosine"]


def test_missing_function_is_named_in_the_feedback(graded):
    row = graded["renamed"]
    assert row["score"] == FULL - 1
    assert "'embed' is not defined" in row["report"]["test_embed"]


def test_student_code_cannot_read_the_reference_or_touch_the_gradebook(graded):
    assert isolation_available(), "this machine cannot run kernels in the bubblewrap sandbox (see doctor)"
    row = graded["snooper"]
    assert row["score"] == FULL - 1 - 1  # one_hot and embed (which calls it) earn nothing
    assert "FileNotFoundError" in row["report"]["test_one_hot"], row["report"]["test_one_hot"]


def test_feedback_and_grades_csv(graded, course):
    html = (course / "feedback" / "offbyone" / ASSIGNMENT / "tokens.html").read_text()
    assert "test_one_hot" in html and "shift" in html.lower()
    with open(course / "grades.csv") as f:
        # other chapters' tests grade their own classes in the same course: their students are
        # exported for 01-tokens too, without a submission (no timestamp)
        rows = {r["student_id"]: r for r in csv.DictReader(f)
                if r["assignment"] == ASSIGNMENT and r["timestamp"]}
    assert set(rows) == set(graded)
    for student, row in rows.items():
        assert float(row["score"]) == pytest.approx(graded[student]["score"]), student
        assert float(row["max_score"]) == FULL
