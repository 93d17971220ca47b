"""Grade a notebook: run each hidden case on the reference and on the student, compare here.

Both notebooks run in their own :class:`~autograder.sandbox.NotebookProcess`; this module
only builds inputs, collects results and judges them. Reference results are computed once
per (reference notebook, device, seed) and kept in memory, so grading a class runs the
reference once and no reference result is ever on disk while student code runs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import nbformat
import torch

from .sandbox import CallResult, Limits, NotebookProcess
from .spec import Case, error_hint, show_input


@dataclass
class CellReport:
    """The outcome of one nbgrader test cell: its score and what the student should read."""

    grade_id: str
    points: float
    passed: int = 0
    total: int = 0
    failures: dict[str, list[str]] = field(default_factory=dict)  # message -> labels of failed cases
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return round(self.points * self.passed / self.total, 2) if self.total else 0.0

    def text(self) -> str:
        head = (f"{self.grade_id}: {self.passed}/{self.total} hidden checks passed, "
                f"{self.score:g} of {self.points:g} points")
        lines = [f"✗ {'; '.join(labels)}: " + message.replace("\n", "\n    ")
                 for message, labels in self.failures.items()]
        return "\n".join([head, *lines, *self.notes]) + "\n"


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
    start the next notebook's kernel meanwhile, see :class:`~autograder.sandbox.NotebookProcess`)."""
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


def _explain(call_error: str) -> str:
    if call_error.startswith("raised NotImplementedError"):
        return "not written yet: it still raises NotImplementedError (replace that line with your code)"
    if call_error.startswith("raised NameError"):
        return (f"{call_error.removeprefix('raised ')} — is the function named as the exercise says, "
                "and did its cell run without errors?")
    hint = error_hint(call_error)
    return call_error + (f"\nHint: {hint}" if hint else "")


def grade(student: nbformat.NotebookNode, tests: ModuleType, expected: dict[tuple[str, int], Any],
          points: dict[str, float], *, device: str, seed: int, limits: Limits,
          files: tuple = (), prestart: bool = False) -> dict[str, CellReport]:
    """Run the hidden cases on ``student`` (executed in place, so its cells keep their outputs)."""
    inputs = _inputs(tests.CASES, seed)
    reports = {gid: CellReport(gid, points[gid]) for gid in tests.CASES if gid in points}
    hung: dict[str, CallResult] = {}  # a call that hung or crashed once is not tried again
    with NotebookProcess(student, device=device, limits=limits, skip_cell=is_test_cell, files=files,
                         prestart=prestart) as proc:
        for (gid, i), args in inputs.items():
            if gid not in reports:
                continue
            case, report = tests.CASES[gid][i], reports[gid]
            report.total += 1
            result = hung[case.call] if case.call in hung else proc.call(case.call, args)
            if result.stopped:
                hung[case.call] = result
            message = (_explain(result.error) if result.error else
                       case.judge(result.value, expected[gid, i], to_device(args, device)))
            unwritten = result.error and result.error.startswith(("raised NotImplementedError",
                                                                   "raised NameError"))
            if message is not None and not unwritten and (shown := show_input(args)) is not None:
                message += f"\nArguments (small enough to try yourself): {shown}"
            if message is None:
                report.passed += 1
            else:
                report.failures.setdefault(message, []).append(case.label)
        for report in reports.values():
            if report.passed < report.total and proc.cell_errors:
                report.notes.append("While running your notebook: " + "; ".join(proc.cell_errors[:3]))
    return reports
