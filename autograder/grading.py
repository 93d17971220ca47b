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
from typing import Any, Sequence

import nbformat
import torch

from .mistakes import Catalogue, Mistake, Raised, named, patched, public_data, same_raise
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
    mistakes: list[tuple[str, ...]] = field(default_factory=list)  # catalogue mistakes whose results these are
    diagnosis: str = ""  # what the student reads about them, or that no known mistake matched
    blind: int = 0  # passed checks that no typical mistake fails: they add no partial credit

    @property
    def score(self) -> float:
        """Points for the share of checks passed; partial credit counts only the checks that see a
        typical mistake (a check every known mistake passes cannot tell what else works)."""
        if not self.total or self.passed == self.total:
            return float(self.points) if self.total else 0.0
        return round(self.points * (self.passed - self.blind) / (self.total - self.blind), 2)

    def text(self) -> str:
        blind = (f" ({self.blind} of them see none of the typical mistakes and add no partial credit)"
                 if self.blind and self.passed < self.total else "")
        head = (f"{self.grade_id}: {self.passed}/{self.total} hidden checks passed{blind}, "
                f"{self.score:g} of {self.points:g} points")
        lines = [f"✗ {'; '.join(labels)}: " + (str(verdict) + arguments).replace("\n", "\n    ")
                 for (verdict, arguments), labels in self.failures.items()]
        return "\n".join([head, *([self.diagnosis] if self.diagnosis else []), *lines, *self.notes]) + "\n"

    def record(self) -> dict:
        """The report as data for the instructor's report: hints apart from messages, so that no
        text of the student's (an exception's message, a printed line) can pass for a hint."""
        return {"grade_id": self.grade_id, "points": self.points, "score": self.score,
                "passed": self.passed, "total": self.total,
                "failures": [{"message": verdict.message + arguments, "hints": list(verdict.hints), "labels": list(labels)}
                             for (verdict, arguments), labels in self.failures.items()],
                "notes": list(self.notes), "problems": list(self.problems),
                "mistakes": [list(combo) for combo in self.mistakes], "diagnosis": self.diagnosis,
                "unmatched": bool(self.diagnosis) and not self.mistakes}


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


def case_inputs(case: Case, seed: int, grade_id: str, index: int) -> tuple:
    """The arguments of case ``index`` of ``grade_id`` under grading seed ``seed`` (on the CPU)."""
    return case.make_args(torch.Generator().manual_seed(case_seed(seed, grade_id, index)))


def _inputs(cases: dict[str, list[Case]], seed: int) -> dict[tuple[str, int], tuple]:
    return {(gid, i): case_inputs(case, seed, gid, i) for gid, group in cases.items() for i, case in enumerate(group)}


def is_test_cell(cell: nbformat.NotebookNode) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and meta.get("grade", False) and not meta.get("solution", False)


def cell_points(nb: nbformat.NotebookNode) -> dict[str, float]:
    """grade_id → points of each nbgrader test cell of ``nb``."""
    return {c.metadata.nbgrader["grade_id"]: float(c.metadata.nbgrader["points"])
            for c in nb.cells if is_test_cell(c)}


class ReferenceFailed(RuntimeError):
    """The reference notebook failed a case: a course bug, never the student's fault."""


Combo = tuple[str, ...]  # ids of catalogue mistakes made together
MAX_PAIRS = 28  # pairs of mistakes tried on one test cell (8 mistakes that show in it)
_PAIRS_LOCK = threading.Lock()  # Dask grades in threads that share a worker's references


@dataclass
class Reference:
    """What notebooks are graded against, computed once per (reference notebook, device, seed):
    the reference's result of every hidden case (``reference[gid, i]``), and the results of the
    catalogue's mistakes (:mod:`autograder.mistakes`) on the cases that can see them, single
    mistakes at once and pairs when first needed."""

    values: dict[tuple[str, int], Any]
    notebook: nbformat.NotebookNode
    device: str
    seed: int
    limits: Limits
    files: tuple = ()
    catalogue: Catalogue = field(default_factory=Catalogue)
    outcomes: dict[Combo, dict[tuple[str, int], Any]] = field(default_factory=dict)
    paired: set[tuple[Combo, str]] = field(default_factory=set)  # (pair, test cell) in outcomes
    known: dict = field(default_factory=dict)  # what :meth:`singles` and :meth:`blind` found

    def __getitem__(self, key: tuple[str, int]) -> Any:
        return self.values[key]

    def pairs(self, tests: ModuleType, grade_id: str, student: dict[tuple[str, int], Any]) -> list[Combo]:
        """The pairs of mistakes that may be what the ``student``'s results in ``grade_id`` are:
        those whose two mistakes alone change, between them, just the cases the student fails,
        and where only one of them changes a case, give the student's result there. Their results
        are computed on first use, in a kernel of their own, and kept for the class."""
        cases = tests.CASES[grade_id]
        args = [self.args(grade_id, i, case) for i, case in enumerate(cases)]
        singles = self.singles(tests, grade_id)
        changes = {m.id: self.changes((m.id,), tests, grade_id) for m in singles}
        failing = frozenset(i for i, case in enumerate(cases)
                            if not _same(case, student[grade_id, i], self.values[grade_id, i], args[i]))

        def plausible(a: str, b: str) -> bool:
            if changes[a] | changes[b] != failing:
                return False
            return all(_same(cases[i], student[grade_id, i], self.outcomes[(a if i in changes[a] else b),][grade_id, i],
                             args[i]) for i in changes[a] ^ changes[b])

        combos = [c for c in self.catalogue.pairs(self.notebook, singles) if plausible(*c)][:MAX_PAIRS]
        with _PAIRS_LOCK:
            todo = [c for c in combos if (c, grade_id) not in self.paired]
            if todo:
                inputs = {k: v for k, v in _inputs(tests.CASES, self.seed).items() if k[0] == grade_id}
                with NotebookProcess(self.notebook, device=self.device, limits=self.limits,
                                     skip_cell=is_test_cell, files=self.files) as proc:
                    for combo, results in _mistake_outcomes(proc, tests, self.notebook, self.catalogue,
                                                            todo, inputs).items():
                        self.outcomes.setdefault(combo, {}).update(results)
                self.paired.update((c, grade_id) for c in todo)
        return [c for c in combos if self.shows(c, tests, grade_id)]

    def singles(self, tests: ModuleType, grade_id: str) -> list[Mistake]:
        """The catalogue mistakes that show in ``grade_id`` (the same for every student: kept)."""
        if ("singles", grade_id) not in self.known:
            self.known["singles", grade_id] = [m for m in self.catalogue.of(grade_id)
                                               if self.shows((m.id,), tests, grade_id)]
        return self.known["singles", grade_id]

    def blind(self, tests: ModuleType, grade_id: str) -> set[int]:
        """The cases of ``grade_id`` that every mistake showing in it passes (none when the
        catalogue has no mistake there: then every case counts)."""
        if ("blind", grade_id) not in self.known:
            singles, cases = self.singles(tests, grade_id), tests.CASES[grade_id]
            self.known["blind", grade_id] = {
                i for i, case in enumerate(cases) if singles and all(
                    _same(case, self.outcomes[m.id,][grade_id, i], self.values[grade_id, i],
                          self.args(grade_id, i, case)) for m in singles)}
        return self.known["blind", grade_id]

    def shows(self, combo: Combo, tests: ModuleType, grade_id: str) -> bool:
        """Whether ``combo``'s results differ from the reference's on a case of ``grade_id``."""
        results = self.outcomes.get(combo, {})
        if any((grade_id, i) not in results for i in range(len(tests.CASES[grade_id]))):
            return False
        return bool(self.changes(combo, tests, grade_id))

    def changes(self, combo: Combo, tests: ModuleType, grade_id: str) -> frozenset[int]:
        """The cases of ``grade_id`` whose results ``combo`` changes (kept once all are computed)."""
        if ("changes", combo, grade_id) in self.known:
            return self.known["changes", combo, grade_id]
        results, cases = self.outcomes.get(combo, {}), tests.CASES[grade_id]
        found = frozenset(i for i, case in enumerate(cases) if (grade_id, i) in results
                          and not _same(case, results[grade_id, i], self.values[grade_id, i], self.args(grade_id, i, case)))
        if all((grade_id, i) in results for i in range(len(cases))):
            self.known["changes", combo, grade_id] = found
        return found

    def args(self, grade_id: str, index: int, case: Case) -> tuple:
        """The case's arguments on the reference's device, as its calls got them."""
        return to_device(case_inputs(case, self.seed, grade_id, index), self.device)


def _mistake_outcomes(proc: NotebookProcess, tests: ModuleType, reference: nbformat.NotebookNode,
                      catalogue: Catalogue, combos: list[Combo],
                      inputs: dict[tuple[str, int], tuple]) -> dict[Combo, dict[tuple[str, int], Any]]:
    """Each combo's results on the cases in its scope, in ``proc`` (the reference, running): its
    patched cells are run over the reference's, then the reference's are run again."""
    outcomes = {}
    for combo in combos:
        made = catalogue.by_id(combo)
        sources = patched(reference, made)
        scope = {gid for m in made for gid in catalogue.scope(m)}

        def make() -> None:
            for source in sources.values():
                if (error := proc.run(source)) is not None:
                    raise ReferenceFailed(f"the reference with mistake {'+'.join(combo)} does not run: {error}")

        make()
        results = {}
        for (gid, i), args in inputs.items():
            if gid in scope:
                result = proc.call(tests.CASES[gid][i].call, args)
                results[gid, i] = Raised(result.error) if result.error else result.value
                if result.stopped or (result.error and "CUDA error" in result.error):
                    make()  # the kernel started again (see NotebookProcess.call), from the reference
        outcomes[combo] = results
        for index in sources:
            proc.run(reference.cells[index].source)
    return outcomes


def reference_results(reference: nbformat.NotebookNode, tests: ModuleType, *, device: str,
                      seed: int, limits: Limits, files: tuple = (), prestart: bool = False,
                      catalogue: Catalogue = Catalogue()) -> Reference:
    """Run every case of ``tests.CASES`` on the reference notebook, in its own process
    (``files``: the assignment's data files, copied into its working directory; ``prestart``:
    start the next notebook's kernel meanwhile, see :class:`~autograder.process.NotebookProcess`),
    then each mistake of ``catalogue`` on the cases that can see it."""
    inputs = _inputs(tests.CASES, seed)
    values = {}
    with NotebookProcess(reference, device=device, limits=limits, skip_cell=is_test_cell, files=files,
                         prestart=prestart) as ref:
        for (gid, i), args in inputs.items():
            result = ref.call(tests.CASES[gid][i].call, args)
            if result.error:
                raise ReferenceFailed(f"reference failed {gid} case {i}: {result.error}")
            values[gid, i] = result.value
        outcomes = _mistake_outcomes(ref, tests, reference, catalogue, [(m.id,) for m in catalogue.mistakes],
                                     inputs)
    return Reference(values, reference, device, seed, limits, tuple(files), catalogue, outcomes)


def record_public(reference: nbformat.NotebookNode, catalogue: Catalogue, *, limits: Limits,
                  files: tuple = ()) -> dict:
    """The results of the reference and of each catalogue mistake on the examples of the public
    checks (the notebook's test cells, run as a student runs them), as the public checks read
    them (:func:`autograder.mistakes.load_public`)."""
    checks = {i: c.metadata.nbgrader["grade_id"] for i, c in enumerate(reference.cells) if is_test_cell(c)}
    module = "__import__('autograder.mistakes', fromlist=['RECORDING'])"
    recorded: dict[str | None, dict] = {}
    with NotebookProcess(reference, device="cpu", limits=limits, skip_cell=is_test_cell, files=files) as proc:
        for mistake in (None, *catalogue.mistakes):
            sources = patched(reference, [mistake]) if mistake else {}
            for source in sources.values():
                if (error := proc.run(source)) is not None:
                    raise ReferenceFailed(f"the reference with mistake {mistake.id} does not run: {error}")
            recorded[mistake and mistake.id] = found = {}
            for index, gid in checks.items():
                proc.run(f"{module}.RECORDING = {{}}")
                failed = proc.run(reference.cells[index].source)  # under a mistake, it should fail
                if mistake is None and failed:
                    raise ReferenceFailed(f"the reference fails its public check {gid}: {failed}")
                found[gid] = proc.call(f"lambda: {module}.RECORDING", ()).value
            proc.run(f"{module}.RECORDING = None")
            for index in sources:
                proc.run(reference.cells[index].source)
    return public_data(catalogue, recorded)


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


def _judge(case: Case, got: Any, expected: Any, args: tuple, *, hints: bool = True) -> Verdict | None:
    """``case.judge`` within :data:`JUDGE_SECONDS`, where anything raised on an odd result fails
    this case only (not the notebook); without ``hints``, only whether and how ``got`` differs."""
    try:
        with _deadline(JUDGE_SECONDS):
            return case.judge(got, expected, args) if hints else case.difference(got, expected, args)
    except _JudgeTimeout:
        return Verdict(f"the grader could not compare your result with the expected one within "
                       f"{JUDGE_SECONDS:g} s: return the kind of value the exercise asks for")
    except Exception as error:
        return Verdict(f"the grader could not compare your result with the expected one "
                       f"({type(error).__name__}): return the kind of value the exercise asks for")


def _same(case: Case, a: Any, b: Any, args: tuple) -> bool:
    """Whether two outcomes of a case agree: values within the case's tolerance, or both raised
    the same exception (:func:`~autograder.mistakes.same_raise`)."""
    if isinstance(a, Raised) or isinstance(b, Raised):
        return isinstance(a, Raised) and isinstance(b, Raised) and same_raise(a.error, b.error)
    return _judge(case, a, b, args, hints=False) is None


def diagnose(tests: ModuleType, reference: Reference, grade_id: str,
             outcomes: dict[tuple[str, int], Any], cleared: frozenset[str] = frozenset()) -> list[Combo]:
    """The catalogue mistakes (one, else two together) whose results on every case of ``grade_id``
    are the student's ``outcomes``: only these may be named, so a hint never names a mistake
    the student's code does not make. ``cleared``: the test cells the student passed whole; a
    mistake in a part whose own cell they passed is not theirs (each mistake fails its own cell)."""
    cases = tests.CASES[grade_id]
    args = [reference.args(grade_id, i, case) for i, case in enumerate(cases)]

    def explains(combo: Combo) -> bool:
        results = reference.outcomes[combo]
        return all(_same(case, outcomes[grade_id, i], results[grade_id, i], args[i])
                   for i, case in enumerate(cases))

    found = [(m.id,) for m in _possible(reference.singles(tests, grade_id), grade_id, cleared) if explains((m.id,))]
    return found or [combo for combo in reference.pairs(tests, grade_id, outcomes)
                     if len(_possible(reference.catalogue.by_id(combo), grade_id, cleared)) == len(combo)
                     and explains(combo)]


def _possible(mistakes: Sequence[Mistake], grade_id: str, cleared: frozenset[str]) -> list[Mistake]:
    """``mistakes`` but those of parts whose own test cell (not ``grade_id``) the student passed."""
    return [m for m in mistakes if m.exercise == grade_id or m.exercise not in cleared]


NONE_KNOWN = ("These results are none of the typical mistakes we know for this exercise (alone or two "
              "together): compare your code with the exercise text on the failing checks below, the one "
              "with the smallest input first.")


def _diagnose_report(report: CellReport, tests: ModuleType, reference: Reference,
                     outcomes: dict[tuple[str, int], Any], failed: dict[int, tuple[Verdict, str]],
                     cleared: frozenset[str]) -> None:
    """Fill ``report.failures`` from the ``failed`` cases (index -> verdict, arguments line), naming
    the catalogue mistakes the student's results are: on every case (their hints replace the
    cases' own), else a mistake whose every visible result the student's results show (named on
    those checks; the others fail for another reason); where none is, the cases' own hints, or an
    honest "none we know". No diagnosis for code not written or stopped. ``cleared``: see
    :func:`diagnose`."""
    gid = report.grade_id
    cases = tests.CASES[gid]
    mine = [outcomes[gid, i] for i in range(len(cases))]
    args = [reference.args(gid, i, case) for i, case in enumerate(cases)]
    singles = _possible(reference.singles(tests, gid), gid, cleared)
    if failed:
        report.blind = len(reference.blind(tests, gid) - set(failed))
    ready = (failed and reference.catalogue.of(gid)
             and not any(isinstance(o, Raised) and o.kind in (None, "NotImplementedError", "NameError") for o in mine))
    report.mistakes = diagnose(tests, reference, gid, outcomes, cleared) if ready else []
    if report.mistakes:
        texts = [named(reference.catalogue.by_id(combo), gid) for combo in report.mistakes]
        which = "this mistake" if len(texts) == 1 and len(report.mistakes[0]) == 1 else (
            "these two mistakes together" if len(texts) == 1 else "each of these (they give the same results)")
        report.diagnosis = (f"Hint: your results are exactly those of the reference with {which}, on all "
                            f"{report.total} hidden checks (it passes the ones you pass): " + " OR ".join(texts))
        failed = {i: (Verdict(verdict.message), arguments) for i, (verdict, arguments) in failed.items()}
    elif ready:
        changes = {m.id: reference.changes((m.id,), tests, gid) for m in singles}
        shown = [m for m in singles  # the student's results show every result by which m differs
                 if all(_same(cases[i], mine[i], reference.outcomes[m.id,][gid, i], args[i]) for i in changes[m.id])]
        for i, (verdict, arguments) in failed.items():
            here = [named([m], gid) for m in shown if i in changes[m.id]]
            if here:
                failed[i] = (Verdict(verdict.message, tuple(f"on this check your result is what this mistake gives: {t}"
                                                             for t in here)), arguments)
        if not any(verdict.hints for verdict, _ in failed.values()):
            report.diagnosis = NONE_KNOWN
            failed = dict(sorted(failed.items(), key=lambda item: (not item[1][1], len(item[1][1]))))
    for i, key in failed.items():
        report.failures.setdefault(key, []).append(cases[i].label)


def grade(student: nbformat.NotebookNode, tests: ModuleType, expected: Reference,
          points: dict[str, float], *, device: str, seed: int, limits: Limits,
          files: tuple = (), prestart: bool = False, budget: float | None = None) -> dict[str, CellReport]:
    """Run the hidden cases on ``student`` (executed in place, so its cells keep their outputs),
    its cells and calls within ``budget`` seconds in all (see :class:`~autograder.process.NotebookProcess`),
    then name the catalogue mistakes its failures are."""
    inputs = _inputs(tests.CASES, seed)
    reports = {gid: CellReport(gid, points[gid]) for gid in tests.CASES if gid in points}
    hung: dict[str, CallResult] = {}  # a call that hung or crashed once is not tried again
    outcomes: dict[tuple[str, int], Any] = {}
    failed: dict[str, dict[int, tuple[Verdict, str]]] = {gid: {} for gid in reports}
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
            outcomes[gid, i] = Raised(result.error) if result.error else result.value
            verdict = (_explain(result.error) if result.error else
                       _judge(case, result.value, expected[gid, i], to_device(args, device)))
            if verdict is None:
                report.passed += 1
                continue
            unwritten = result.error and result.error.startswith(("raised NotImplementedError",
                                                                   "raised NameError"))
            shown = None if unwritten else show_input(args)
            failed[gid][i] = (verdict, "" if shown is None else f"\nArguments (small enough to try yourself): {shown}")
        for report in reports.values():
            if report.passed < report.total and proc.cell_errors:
                report.notes.append("While running your notebook: " + "; ".join(proc.cell_errors[:3]))
    cleared = frozenset(gid for gid, report in reports.items() if report.passed == report.total)
    for gid, report in reports.items():
        _diagnose_report(report, tests, expected, outcomes, failed[gid], cleared)
    return reports
