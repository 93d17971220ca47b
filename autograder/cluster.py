"""Grading on a Dask distributed cluster: ``autograde --scheduler tcp://host:8786``.

The cluster runs the same tasks as ``--jobs`` (:func:`autograder.parallel.grade_all`: each
reference notebook once, then one task per submission running nbgrader's own autograde,
sandbox included). Workers need the grader's Python environment and the course directory at
the same path (a shared file system): they read the submissions there and write the graded
notebooks and the gradebook there, under the same gradebook lock as ``--jobs``. The run's
settings reach every worker in a worker plugin (workers that join later get it too); a
worker's first task checks its sandbox and sets it up. A worker grades one notebook at a time,
whatever its thread count: nbgrader's API, the editor repairs and the gradebook lock are per
process.
"""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path

from distributed import Client, WorkerPlugin, get_worker

from . import parallel, process, sandbox


class NoSandbox(RuntimeError):
    """A worker where the sandbox cannot run: it grades nothing, and the run stops."""


class _Grading(WorkerPlugin):
    """One run's settings, on every worker of the cluster."""

    name = "autograder"

    def __init__(self, course: Path, overrides: dict):
        self.course, self.overrides = course, overrides

    def setup(self, worker) -> None:
        self.ready = False
        self.one_at_a_time = threading.Lock()

    def run(self, task, *args):
        with self.one_at_a_time:
            if not self.ready:
                settings = self.overrides["SandboxGrade"]
                problem = settings["sandbox"] and sandbox.sandbox_problem(settings["device"].split(":")[0])
                if problem:
                    raise NoSandbox(f"worker {get_worker().address} on {socket.gethostname()}: {problem}")
                parallel.prepare_worker(self.course, self.overrides)
                self.ready = True
            return task(*args)


def _on_worker(task, *args):
    return get_worker().plugins[_Grading.name].run(task, *args)


class ClusterPool:
    """The cluster at ``address`` as the executor :func:`autograder.parallel.grade_all` submits
    to; a worker without the sandbox ends the run with one line saying which."""

    def __init__(self, address: str, course: Path, overrides: dict):
        self.client = Client(address)
        self.client.register_plugin(_Grading(course, overrides))
        self.executor = self.client.get_executor(pure=False)

    def submit(self, task, *args):
        return self.executor.submit(_on_worker, task, *args, key=f"{task.__name__}-{uuid.uuid4().hex}")

    def __enter__(self) -> "ClusterPool":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.client.run(process.close_spares)  # workers outlive the run; their spare kernels do not
        self.client.close()
        if isinstance(error, NoSandbox):
            raise SystemExit(f"refusing to grade: {error}.\nRun `python -m autograder doctor` there, or "
                             "grade without that worker.") from None
