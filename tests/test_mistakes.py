"""Every catalogue mistake (``solutions/*/mistakes.yaml``) is a test.

For each mistake, on the hidden cases (two seeds) and in the public check of its exercise:
it loses points in its own exercise, the grader's diagnosis names it, the public check names it,
and no other mistake is named (a part's mistake is not, where the student passed that part). The
public checks' data (``autograder/data/mistakes/``) must be what ``python -m autograder
catalogue`` computes from the solutions now.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import nbformat
import pytest
import torch
from IPython.core.inputtransformer2 import TransformerManager

from autograder import mistakes
from autograder.compare import describe_difference
from autograder.grading import (NONE_KNOWN, CellReport, Reference, _diagnose_report, cell_points, diagnose, grade,
                                reference_results)
from autograder.nbgrader_plugin import data_files
from autograder.sandbox import Limits
from autograder.spec import Case, CheckFailed
from conftest import ROOT, assignments, notebook_of

MIN_PER_EXERCISE = 4
SEEDS = (0, 1)


def _reference(assignment: str) -> tuple[nbformat.NotebookNode, mistakes.Catalogue, object]:
    folder = ROOT / "solutions" / assignment
    nb = nbformat.read(folder / notebook_of(assignment), as_version=4)
    return nb, mistakes.load(folder, nb), importlib.import_module(nb.metadata["autograder"]["tests"])


@pytest.fixture(scope="module", params=assignments())
def chapter(request):
    """(assignment, reference notebook, catalogue, tests module, {seed: Reference})."""
    assignment = request.param
    nb, catalogue, tests = _reference(assignment)
    files = data_files(ROOT / "solutions" / assignment)
    references = {seed: reference_results(nb, tests, device="cpu", seed=seed, limits=Limits(), files=files,
                                          catalogue=catalogue) for seed in SEEDS}
    return assignment, nb, catalogue, tests, references


@pytest.mark.parametrize("assignment", assignments())
def test_every_exercise_has_its_typical_mistakes(assignment):
    nb, catalogue, tests = _reference(assignment)
    counts = Counter(m.exercise for m in catalogue.mistakes)
    assert {gid: counts[gid] for gid in tests.CASES if counts[gid] < MIN_PER_EXERCISE} == {}
    assert set(counts) <= set(tests.CASES), "a mistake names a test cell the notebook does not have"
    for gid, parts in catalogue.uses.items():
        assert gid in tests.CASES and set(parts) <= set(tests.CASES), (gid, parts)


def test_the_catalogue_is_never_released(course):
    """The patches quote the reference: generating the student version leaves them out."""
    assert list((ROOT / "solutions").glob("*/" + mistakes.FILE))
    assert not list((course / "exercises").rglob(mistakes.FILE))
    assert not list((ROOT / "exercises").rglob(mistakes.FILE))


def test_hidden_cases_fail_and_name_each_mistake(chapter):
    assignment, nb, catalogue, tests, references = chapter
    problems = []
    for seed, reference in references.items():
        for mistake in catalogue.mistakes:
            combo, gid = (mistake.id,), mistake.exercise
            if not reference.shows(combo, tests, gid):
                problems.append(f"seed {seed}: {mistake.id} passes every hidden case of {gid}")
                continue
            cleared = frozenset(g for g in tests.CASES if not reference.shows(combo, tests, g))  # as a student
            found = diagnose(tests, reference, gid, reference.outcomes[combo], cleared)  # with this mistake
            if found != [combo]:
                problems.append(f"seed {seed}: {mistake.id} in {gid} is named as {found}")
    assert not problems, "\n".join(problems)


def _namespace(nb: nbformat.NotebookNode, sources: dict[int, str]) -> dict:
    """The reference's nbgrader cells but its checks (setup, solutions, given code such as a buggy
    function to fix) exec'd here, with ``sources`` in place of some."""
    namespace: dict = {}
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta and not meta.get("grade"):
            source = TransformerManager().transform_cell(sources.get(index, cell.source))
            if meta.get("solution") or meta.get("grade_id") == "setup":
                exec(source, namespace)
                continue
            try:  # given code that may use a mistaken function (a demo), or define one to fix
                exec(source, namespace)
            except Exception:
                pass
    return namespace


def _check_source(nb: nbformat.NotebookNode, gid: str) -> str:
    (source,) = [c.source for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == gid]
    return source


def test_public_checks_name_each_mistake(chapter):
    assignment, nb, catalogue, tests, references = chapter
    problems = []
    for mistake in catalogue.mistakes:
        torch.manual_seed(1234)  # the public checks must not depend on the global generator's state
        namespace = _namespace(nb, mistakes.patched(nb, [mistake]))
        try:
            exec(_check_source(nb, mistake.exercise), namespace)
        except CheckFailed as failure:
            text = str(failure)
        else:
            problems.append(f"{mistake.id}: the public check of {mistake.exercise} passes")
            continue
        if mistake.hint not in " ".join(text.split()):
            problems.append(f"{mistake.id}: the public check does not name it:\n{text}")
        for other in catalogue.mistakes:  # named as the same result on this example, at most
            if (other is not mistake and other.hint in " ".join(text.split())
                    and mistakes.ALTERNATIVES not in text):
                problems.append(f"{mistake.id}: the public check also names {other.id}")
    assert not problems, "\n".join(problems)


def _same_data(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_data(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_data(x, y) for x, y in zip(a, b))
    return describe_difference(a, b) is None


def test_public_data_is_what_the_catalogue_gives(chapter, tmp_path):
    assignment, nb, catalogue, tests, references = chapter
    subprocess.run([sys.executable, "-m", "autograder", "--course", str(ROOT), "catalogue", assignment,
                    "--out", str(tmp_path)], check=True, capture_output=True, timeout=900)
    module = nb.metadata["autograder"]["tests"]
    fresh = torch.load(tmp_path / mistakes.public_file(module).name, weights_only=True)
    assert _same_data(fresh, mistakes.load_public(module)), (
        f"autograder/data/mistakes/ is stale: run python -m autograder catalogue {assignment}")


# ----------------------------------------------------------------------------------------
# The diagnosis on whole submissions (Chapter 6): two mistakes at once, and one we do not know
# ----------------------------------------------------------------------------------------

def _graded(nb: nbformat.NotebookNode, changes: list[tuple[str, str]], tests, reference) -> dict[str, CellReport]:
    student = nbformat.from_dict(nb)
    for old, new in changes:
        (cell,) = [c for c in student.cells if old in c.source]
        cell.source = cell.source.replace(old, new)
    return grade(student, tests, reference, cell_points(nb), device="cpu", seed=0, limits=Limits())


@pytest.fixture(scope="module")
def chapter6():
    nb, catalogue, tests = _reference("06-self-attention")
    files = data_files(ROOT / "solutions" / "06-self-attention")
    return nb, catalogue, tests, reference_results(nb, tests, device="cpu", seed=0, limits=Limits(), files=files,
                                                   catalogue=catalogue)


def test_two_mistakes_at_once_are_both_named(chapter6):
    nb, catalogue, tests, reference = chapter6
    no_scale, inverted = catalogue.by_id(["attention-no-scale", "attention-mask-inverted"])
    report = _graded(nb, [*no_scale.patch, *inverted.patch], tests, reference)["test_scaled_dot_product_attention"]
    assert report.mistakes == [(no_scale.id, inverted.id)]
    assert no_scale.hint in report.text() and inverted.hint in report.text()
    assert report.score < report.points


def test_a_mistake_we_do_not_know_is_called_so(chapter6):
    nb, catalogue, tests, reference = chapter6
    report = _graded(nb, [("return softmax(scores, dim=-1) @ v", "return softmax(scores, dim=-1) @ v * 1.01")], tests,
                     reference)["test_scaled_dot_product_attention"]
    assert report.mistakes == [] and NONE_KNOWN in report.text()
    assert not any(m.hint in report.text() for m in catalogue.mistakes)
    assert report.record()["unmatched"]


def test_a_student_exception_is_shown_as_raised(chapter6):
    """The student's own exception type and message, never a wrapper's text."""
    nb, catalogue, tests, reference = chapter6
    report = _graded(nb, [("return softmax(scores, dim=-1) @ v", "raise ValueError('keys appended twice')")],
                     tests, reference)["test_scaled_dot_product_attention"]
    assert "raised ValueError: keys appended twice" in report.text()


def test_an_exception_an_adapter_reports_is_shown_as_the_students():
    """Adapters that turn an exception into a result (checks.outcome) still show its text."""
    case = Case("f", lambda g: (), "a call")
    verdict = case.judge("raised ValueError: keys appended twice", torch.zeros(2), ())
    assert str(verdict).startswith("your code raised ValueError: keys appended twice")
    assert "got str" not in str(verdict)


def _toy(student: list[float], **mistaken: list[float]) -> tuple[CellReport, Reference, SimpleNamespace]:
    """One exercise ``test_f`` of three checks (reference results 0, 1, 2), catalogue mistakes with
    the given results, and the report of a student with ``student``'s results: no kernel needed."""
    tests = SimpleNamespace(CASES={"test_f": [Case("f", lambda g, i=i: (i,), f"check {i}") for i in range(3)],
                                   "test_part": [Case("part", lambda g: (0,), "the part's check")]})
    catalogue = mistakes.Catalogue(tuple(mistakes.Mistake(m, "test_part" if m.startswith("part") else "test_f",
                                                           f"hint {m}", (("x", m),), part=m) for m in mistaken),
                                   uses={"test_f": ("test_part",)})
    values = {("test_f", i): torch.tensor(float(i)) for i in range(3)} | {("test_part", 0): torch.tensor(0.0)}
    outcomes = {(m,): {("test_f", i): torch.tensor(r) for i, r in enumerate(results)} for m, results in mistaken.items()}
    reference = Reference(values, nbformat.v4.new_notebook(), "cpu", 0, Limits(), catalogue=catalogue,
                          outcomes=outcomes)
    report = CellReport("test_f", 3, total=3)
    mine = {("test_f", i): torch.tensor(r) for i, r in enumerate(student)}
    failed = {i: (Case("f", None, "").difference(mine["test_f", i], values["test_f", i], ()), "")
              for i in range(3) if student[i] != i}
    report.passed = 3 - len(failed)
    _diagnose_report(report, tests, reference, mine, failed, frozenset({"test_part"}))
    return report, reference, tests


def test_a_mistake_is_named_on_single_checks_only_where_the_student_shows_all_it_changes():
    """A mistake that differs on checks 0 and 1: named when the student's results show both (a
    third failure has another cause), never for a student who matches it on one check only."""
    report, *_ = _toy([10.0, 11.0, 7.0], a=[10.0, 11.0, 2.0], b=[10.0, 1.0, 12.0])
    hints = {v.hints for v, _ in report.failures}
    assert report.diagnosis == "" and any("hint a" in h for hs in hints for h in hs), report.failures
    assert not any("hint b" in h for hs in hints for h in hs), report.failures  # b's check 2 is not shown
    report, *_ = _toy([10.0, 5.0, 2.0], a=[10.0, 11.0, 2.0])
    assert report.diagnosis == NONE_KNOWN and not any(v.hints for v, _ in report.failures), report.failures


def test_a_parts_mistake_is_not_named_where_the_student_passed_that_part():
    report, *_ = _toy([10.0, 1.0, 2.0], own=[10.0, 1.0, 2.0], part=[10.0, 1.0, 2.0])
    assert report.mistakes == [("own",)], report.mistakes
