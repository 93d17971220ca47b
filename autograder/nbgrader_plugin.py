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

import dataclasses
import importlib
from pathlib import Path

import nbformat
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Float, Int, Unicode

from .grading import grade, is_test_cell, reference_results, cell_points
from .sandbox import Limits

_REFERENCE_CACHE: dict[tuple, dict] = {}


class SandboxGrade(NbGraderPreprocessor):
    """Grade a submission outside the student's kernel against the live reference notebook."""

    device = Unicode("cpu", help="Device the student and reference code run on: cpu, cuda, cuda:1…").tag(config=True)
    seed = Int(0, help="Seed of the hidden random inputs (the same for every submission of a run)").tag(config=True)
    cell_timeout = Float(60.0, help="Seconds one notebook cell may run").tag(config=True)
    call_timeout = Float(30.0, help="Seconds one hidden-test call may run").tag(config=True)
    memory_mb = Int(4096, help="Address-space limit of the student's process on CPU, in MB").tag(config=True)

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict):
        info = resources["nbgrader"]
        coursedir = CourseDirectory(config=self.config)
        source = Path(coursedir.format_path(coursedir.source_directory, ".", info["assignment"]))
        reference_path = source / f"{info['notebook']}.ipynb"
        reference = nbformat.read(reference_path, as_version=4)
        tests = importlib.import_module(reference.metadata["autograder"]["tests"])
        limits = Limits(cell_timeout=self.cell_timeout, call_timeout=self.call_timeout,
                        memory_mb=self.memory_mb)
        student_limits = dataclasses.replace(limits, hidden=self._private_paths(coursedir))

        key = (str(reference_path.resolve()), reference_path.stat().st_mtime_ns, self.device, self.seed)
        if key not in _REFERENCE_CACHE:
            _REFERENCE_CACHE[key] = reference_results(reference, tests, device=self.device,
                                                      seed=self.seed, limits=limits)
        test_cells = [c for c in nb.cells if is_test_cell(c)]
        missing = [c.metadata.nbgrader["grade_id"] for c in test_cells
                   if c.metadata.nbgrader["grade_id"] not in tests.CASES]
        if missing:
            raise ValueError(f"{tests.__name__} has no hidden cases for test cells {missing}")
        reports = grade(nb, tests, _REFERENCE_CACHE[key], cell_points(nb), device=self.device,
                        seed=self.seed, limits=student_limits)

        for cell in test_cells:
            report = reports[cell.metadata.nbgrader["grade_id"]]
            cell.execution_count = None
            cell.outputs = [
                nbformat.v4.new_output("stream", name="stdout", text=report.text()),
                nbformat.v4.new_output("execute_result", data={"text/plain": repr(report.score)}),
            ]
            self.log.info("%s: %s", report.grade_id, report.text().splitlines()[0])
        return nb, resources

    def _private_paths(self, coursedir: CourseDirectory) -> tuple[str, ...]:
        """What student code must not read or write: references, submissions, grades, history."""
        root = Path(coursedir.root)
        paths = [root / getattr(coursedir, f"{step}_directory")
                 for step in ("source", "submitted", "autograded", "feedback")]
        paths += [root / ".git", root / ".exchange", Path(self.config.Exchange.get("root", "/srv/nbgrader/exchange"))]
        if coursedir.db_url.startswith("sqlite:///"):
            paths.append(Path(coursedir.db_url.removeprefix("sqlite:///")))
        return tuple(str(p.resolve()) for p in paths)
