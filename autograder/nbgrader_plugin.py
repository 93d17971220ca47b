"""The one place nbgrader meets our grader.

``nbgrader autograde`` normally runs the hidden tests *inside* the student's kernel, where a
student can patch whatever the tests rely on, and it scores a test cell 0 when it prints
anything to stderr (so a harmless warning costs marks). :class:`SandboxGrade` takes the
place of nbgrader's ``Execute`` preprocessor (see ``nbgrader_config.py``): it grades the
submission with :mod:`autograder.grading` and writes each test cell's verdict as that cell's
output — the report on stdout, then the score as the cell's result, which nbgrader reads as
partial credit. Every later nbgrader step (``SaveAutoGrades`` into the gradebook, the
formgrader, ``generate_feedback``, ``export``) works unchanged.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import nbformat
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Float, Int, Unicode, default

from . import mistakes
from .grading import grade, is_test_cell, reference_results, cell_points
from .repair import repair
from .sandbox import Limits, sandbox_problem

# SandboxGrade.reference_key → that reference notebook's results, in this process: see add_references
_REFERENCE_CACHE: dict[tuple, dict] = {}
# (assignment, student, notebook) → what RepairSubmission changed, for the reports and the CSV
REPAIRS: dict[tuple[str, str, str], list[tuple[str | None, str]]] = {}
# (assignment, student, notebook) → each test cell's CellReport.record(): what the instructor's
# report reads, as data, so that nothing a student prints can pass for a hint or a timeout
RECORDS: dict[tuple[str, str, str], list[dict]] = {}


def add_references(results: dict[tuple, dict]) -> None:
    """Take reference results computed in another process (keyed by :meth:`SandboxGrade.reference_key`,
    as :func:`autograder.parallel.grade_all` hands them to each worker), so that this process does not
    run those reference notebooks again. A reference already here is kept: it may hold pairs of
    mistakes computed since (:meth:`autograder.grading.Reference.pairs`)."""
    for key, reference in results.items():
        _REFERENCE_CACHE.setdefault(key, reference)


def _key(resources: dict) -> tuple[str, str, str]:
    info = resources["nbgrader"]
    return info["assignment"], info["student"], info["notebook"]


class RepairSubmission(NbGraderPreprocessor):
    """Undo editor accidents (see :mod:`autograder.repair`) before nbgrader's own checks."""

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict):
        info = resources["nbgrader"]
        coursedir = CourseDirectory(config=self.config)
        release = Path(coursedir.format_path(coursedir.release_directory, ".", info["assignment"]))
        path = release / f"{info['notebook']}.ipynb"
        notes = repair(nb, nbformat.read(path, as_version=4)) if path.exists() else []
        REPAIRS[_key(resources)] = notes
        for _, text in notes:
            self.log.warning("repaired: %s", text)
        return nb, resources


class SandboxGrade(NbGraderPreprocessor):
    """Grade a submission outside the student's kernel against the live reference notebook."""

    device = Unicode("cpu", help="Device the student and reference code run on: cpu, cuda, cuda:1…").tag(config=True)
    seed = Int(0, help="Seed of the hidden random inputs (the same for every submission of a run)").tag(config=True)
    cell_timeout = Float(60.0, help="Seconds one notebook cell may run").tag(config=True)
    call_timeout = Float(30.0, help="Seconds one hidden-test call may run").tag(config=True)
    budget = Float(help="Seconds a submission's cells and hidden-test calls may take in all "
                        "(default: 4 × call_timeout); the reference has none").tag(config=True)
    memory_mb = Int(4096, help="Memory limit of each notebook's kernel, in MB").tag(config=True)
    prestart = Bool(True, help="Start the next notebook's kernel while this one is graded: faster where a "
                               "CPU core would otherwise idle (autograde keeps it on only when --jobs < cores)").tag(config=True)
    sandbox = Bool(True, help="Run kernels in the bubblewrap sandbox; False (--no-sandbox) lets student "
                              "code read and write every file the grader's user can").tag(config=True)

    @default("budget")
    def _budget_default(self) -> float:
        return 4 * self.call_timeout

    def limits(self) -> Limits:
        return Limits(cell_timeout=self.cell_timeout, call_timeout=self.call_timeout,
                      memory_mb=self.memory_mb, sandbox=self.sandbox)

    def reference_key(self, assignment: str, notebook: str) -> tuple:
        """What a reference result depends on: the reference file and its catalogue of mistakes
        (and their versions), device, seed."""
        coursedir = CourseDirectory(config=self.config)
        path = Path(coursedir.format_path(coursedir.source_directory, ".", assignment)) / f"{notebook}.ipynb"
        catalogue = path.parent / mistakes.FILE
        return (str(path.resolve()), path.stat().st_mtime_ns,
                catalogue.stat().st_mtime_ns if catalogue.is_file() else None, self.device, self.seed)

    def reference(self, assignment: str, notebook: str) -> tuple:
        """(checks module, reference results) of one notebook: computed once per process, or
        handed in by ``autograde --jobs`` through :func:`add_references`."""
        key = self.reference_key(assignment, notebook)
        path = Path(key[0])
        reference = nbformat.read(path, as_version=4)
        tests = importlib.import_module(reference.metadata["autograder"]["tests"])
        if key not in _REFERENCE_CACHE:
            _REFERENCE_CACHE[key] = reference_results(reference, tests, device=self.device, seed=self.seed,
                                                      limits=self.limits(), files=data_files(path.parent),
                                                      prestart=self.prestart,
                                                      catalogue=mistakes.load(path.parent, reference))
        return tests, _REFERENCE_CACHE[key]

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict):
        info = resources["nbgrader"]
        coursedir = CourseDirectory(config=self.config)
        if self.sandbox and (problem := sandbox_problem(self.device.split(":")[0])):
            raise RuntimeError(f"refusing to grade without the sandbox: {problem}")
        tests, expected = self.reference(info["assignment"], info["notebook"])
        limits = self.limits()
        release = Path(coursedir.format_path(coursedir.release_directory, ".", info["assignment"]))

        test_cells = [c for c in nb.cells if is_test_cell(c)]
        missing = [c.metadata.nbgrader["grade_id"] for c in test_cells
                   if c.metadata.nbgrader["grade_id"] not in tests.CASES]
        if missing:
            raise ValueError(f"{tests.__name__} has no hidden cases for test cells {missing}")
        reports = grade(nb, tests, expected, cell_points(nb), device=self.device,
                        seed=self.seed, limits=limits, files=data_files(release), prestart=self.prestart,
                        budget=self.budget)

        notes = REPAIRS.get(_key(resources), [])
        for i, report in enumerate(reports.values()):
            for gid, text in notes:  # other notes go where points were lost (or on the first test cell)
                general = gid not in reports
                if gid == report.grade_id or (general and (report.score < report.points or i == 0)):
                    report.notes.append(f"Repaired before grading: {text}.")
        for cell in test_cells:
            report = reports[cell.metadata.nbgrader["grade_id"]]
            cell.execution_count = None
            cell.outputs = [
                nbformat.v4.new_output("stream", name="stdout", text=report.text()),
                nbformat.v4.new_output("execute_result", data={"text/plain": repr(report.score)}),
            ]
            self.log.info("%s: %s", report.grade_id, report.text().splitlines()[0])
        RECORDS[_key(resources)] = [report.record() for report in reports.values()]
        return nb, resources


def data_files(folder: Path) -> tuple[Path, ...]:
    """The assignment's own data files (what students received beside the notebook)."""
    return tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".ipynb"
                        and not p.name.startswith(".") and p.name != mistakes.FILE)) if folder.is_dir() else ()
