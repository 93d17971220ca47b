"""Grade a notebook: run each hidden case on the reference and on the student, compare here.

Both notebooks run in their own :class:`~autograder.process.NotebookProcess`; this module
only builds inputs, collects results and judges them. Reference results are computed once
per (reference notebook, device, seed) and kept in memory, so grading a class runs the
reference once and no reference result is ever on disk while student code runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import zlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import nbformat
import torch

from .process import CallResult, NotebookProcess
from .sandbox import Limits
from .spec import Case, Verdict, error_hint, show_input


@dataclass
class CellReport:
    """The outcome of one nbgrader test cell: its score and what the student should read."""

    grade_id: str
    points: float
    passed: int = 0
    total: int = 0
    # (verdict, its arguments' line or "") -> labels of the cases that failed with it
    failures: dict[tuple[Verdict, str], list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the kinds of the calls that hung, crashed …

    @property
    def score(self) -> float:
        return round(self.points * self.passed / self.total, 2) if self.total else 0.0

    def text(self) -> str:
        head = (f"{self.grade_id}: {self.passed}/{self.total} hidden checks passed, "
                f"{self.score:g} of {self.points:g} points")
        lines = [f"✗ {'; '.join(labels)}: " + (str(verdict) + arguments).replace("\n", "\n    ")
                 for (verdict, arguments), labels in self.failures.items()]
        return "\n".join([head, *lines, *self.notes]) + "\n"

    def record(self) -> dict:
        """The report as data for the instructor's report: hints apart from messages, so that no
        text of the student's (an exception's message, a printed line) can pass for a hint."""
        return {"grade_id": self.grade_id, "points": self.points, "score": self.score,
                "passed": self.passed, "total": self.total,
                "failures": [{"message": verdict.message + arguments, "hints": list(verdict.hints), "labels": list(labels)}
                             for (verdict, arguments), labels in self.failures.items()],
                "notes": list(self.notes), "problems": list(self.problems)}


def case_seed(seed: int, grade_id: str, index: int) -> int:
    """A stable per-case seed, so every submission sees the same inputs within one grading run."""
    return zlib.crc32(f"{seed}:{grade_id}:{index}".encode())


def to_device(value: Any, device: str) -> Any:
    """Tensors inside (nested) lists, tuples and dicts moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def _inputs(cases: dict[str, list[Case]], seed: int) -> dict[tuple[str, int], tuple]:
    return {(gid, i): case.make_args(torch.Generator().manual_seed(case_seed(seed, gid, i)))
            for gid, group in cases.items() for i, case in enumerate(group)}


def is_test_cell(cell: nbformat.NotebookNode) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and meta.get("grade", False) and not meta.get("solution", False)


def cell_points(nb: nbformat.NotebookNode) -> dict[str, float]:
    """grade_id → points of each nbgrader test cell of ``nb``."""
    return {c.metadata.nbgrader["grade_id"]: float(c.metadata.nbgrader["points"])
            for c in nb.cells if is_test_cell(c)}


class ReferenceFailed(RuntimeError):
    """The reference notebook failed a case: a course bug, never the student's fault."""


def reference_results(reference: nbformat.NotebookNode, tests: ModuleType, *, device: str,
                      seed: int, limits: Limits, files: tuple = (), prestart: bool = False) -> dict[tuple[str, int], Any]:
    """Run every case of ``tests.CASES`` on the reference notebook, in its own process
    (``files``: the assignment's data files, copied into its working directory; ``prestart``:
    start the next notebook's kernel meanwhile, see :class:`~autograder.process.NotebookProcess`)."""
    inputs = _inputs(tests.CASES, seed)
    results = {}
    with NotebookProcess(reference, device=device, limits=limits, skip_cell=is_test_cell, files=files,
                         prestart=prestart) as ref:
        for (gid, i), args in inputs.items():
            result = ref.call(tests.CASES[gid][i].call, args)
            if result.error:
                raise ReferenceFailed(f"reference failed {gid} case {i}: {result.error}")
            results[gid, i] = result.value
    return results


def _explain(call_error: str) -> Verdict:
    if call_error.startswith("raised NotImplementedError"):
        return Verdict("not written yet: it still raises NotImplementedError (replace that line with your code)")
    if call_error.startswith("raised NameError"):
        return Verdict(f"{call_error.removeprefix('raised ')} — is the function named as the exercise says, "
                       "and did its cell run without errors?")
    hint = error_hint(call_error)
    return Verdict(call_error, (hint,) if hint else ())


JUDGE_SECONDS = 10.0  # to judge one result; the reference's own takes milliseconds


class _JudgeTimeout(BaseException):
    """Raised in the judging thread when judging one result ran out of time (not an Exception,
    which a hint's own guard would catch)."""


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raise :class:`_JudgeTimeout` in this thread at the first Python step after ``seconds``.

    Not a signal, which reaches the main thread only (Dask judges in worker threads). A
    single torch operation is not interrupted, but what judging is given is bounded in size
    first (:mod:`autograder.results`), which bounds such an operation too."""
    thread, lock, state = ctypes.c_ulong(threading.get_ident()), threading.Lock(), {"done": False, "fired": False}

    def fire():
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(thread, ctypes.py_object(_JudgeTimeout))

    timer = threading.Timer(seconds, fire)
    timer.start()
    try:
        yield
    finally:
        with lock:
            state["done"] = True
            if state["fired"]:  # not raised yet, or raised and caught inside: no longer pending
                ctypes.pythonapi.PyThreadState_SetAsyncExc(thread, None)
        timer.cancel()


def _judge(case: Case, got: Any, expected: Any, args: tuple) -> Verdict | None:
    """``case.judge`` within :data:`JUDGE_SECONDS`, where anything raised on an odd result fails
    this case only (not the notebook)."""
    try:
        with _deadline(JUDGE_SECONDS):
            return case.judge(got, expected, args)
    except _JudgeTimeout:
        return Verdict(f"the grader could not compare your result with the expected one within "
                       f"{JUDGE_SECONDS:g} s: return the kind of value the exercise asks for")
    except Exception as error:
        return Verdict(f"the grader could not compare your result with the expected one "
                       f"({type(error).__name__}): return the kind of value the exercise asks for")


def grade(student: nbformat.NotebookNode, tests: ModuleType, expected: dict[tuple[str, int], Any],
          points: dict[str, float], *, device: str, seed: int, limits: Limits,
          files: tuple = (), prestart: bool = False, budget: float | None = None) -> dict[str, CellReport]:
    """Run the hidden cases on ``student`` (executed in place, so its cells keep their outputs),
    its cells and calls within ``budget`` seconds in all (see :class:`~autograder.process.NotebookProcess`)."""
    inputs = _inputs(tests.CASES, seed)
    reports = {gid: CellReport(gid, points[gid]) for gid in tests.CASES if gid in points}
    hung: dict[str, CallResult] = {}  # a call that hung or crashed once is not tried again
    with NotebookProcess(student, device=device, limits=limits, skip_cell=is_test_cell, files=files,
                         prestart=prestart, budget=budget) as proc:
        for (gid, i), args in inputs.items():
            if gid not in reports:
                continue
            case, report = tests.CASES[gid][i], reports[gid]
            report.total += 1
            result = (hung[case.call] if case.call in hung else
                      proc.call(case.call, args, expected=expected[gid, i]))
            if result.stopped:
                hung[case.call] = result
            if result.kind and result.kind not in report.problems:
                report.problems.append(result.kind)
            verdict = (_explain(result.error) if result.error else
                       _judge(case, result.value, expected[gid, i], to_device(args, device)))
            if verdict is None:
                report.passed += 1
                continue
            unwritten = result.error and result.error.startswith(("raised NotImplementedError",
                                                                   "raised NameError"))
            shown = None if unwritten else show_input(args)
            arguments = "" if shown is None else f"\nArguments (small enough to try yourself): {shown}"
            report.failures.setdefault((verdict, arguments), []).append(case.label)
        for report in reports.values():
            if report.passed < report.total and proc.cell_errors:
                report.notes.append("While running your notebook: " + "; ".join(proc.cell_errors[:3]))
    return reports
