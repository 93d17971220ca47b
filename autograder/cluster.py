"""Grading on a Dask distributed cluster: ``autograde --scheduler tcp://host:8786``.

Each submission is one Dask task running the worker code of ``--jobs``
(:mod:`autograder.parallel`): nbgrader's own autograde, sandbox included. Workers need the
grader's Python environment and the course directory at the same path (a shared file system):
they read the submissions there and write the graded notebooks and the gradebook there, under
the same file lock as ``--jobs``. The parent's reference results travel once to each worker,
inside a worker plugin (workers that join later get it too); a worker's first task checks its
sandbox and sets it up. A worker grades one submission at a time, whatever its thread count:
nbgrader's API, the editor repairs and the gradebook lock are per process.
"""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

from distributed import Client, WorkerPlugin, as_completed, get_worker

from . import parallel, sandbox


class _NoSandbox(RuntimeError):
    """A worker where the sandbox cannot run: it grades nothing, and the run stops."""


class _Grading(WorkerPlugin):
    """One run's settings and reference results, on every worker of the cluster."""

    name = "autograder"

    def __init__(self, course: Path, overrides: dict, reference_cache: dict):
        self.course, self.overrides, self.reference_cache = course, overrides, reference_cache

    def setup(self, worker) -> None:
        self.ready = False
        self.one_at_a_time = threading.Lock()

    def grade(self, assignment: str, student: str) -> tuple[str, str | None, list[str], float]:
        with self.one_at_a_time:
            if not self.ready:
                settings = self.overrides["SandboxGrade"]
                problem = settings["sandbox"] and sandbox.sandbox_problem(settings["device"].split(":")[0])
                if problem:
                    raise _NoSandbox(f"worker {get_worker().address} on {socket.gethostname()}: {problem}")
                parallel.prepare_worker(self.course, self.overrides, self.reference_cache)
                self.ready = True
            return parallel.grade_in_worker(assignment, student)


def _grade(assignment: str, student: str) -> tuple[str, str | None, list[str], float]:
    return get_worker().plugins[_Grading.name].grade(assignment, student)


def grade_on_cluster(address: str, course: Path, overrides: dict, reference_cache: dict,
                     assignment: str, students: list[str]):
    """Grade ``students`` on the cluster at ``address``; yield each result as it comes."""
    with Client(address) as client:
        client.register_plugin(_Grading(course, overrides, reference_cache))
        try:
            for future in as_completed([client.submit(_grade, assignment, s, pure=False) for s in students]):
                yield future.result()
        except _NoSandbox as exc:
            sys.exit(f"refusing to grade: {exc}.\nRun `python -m autograder doctor` there, or grade "
                     "without that worker.")
