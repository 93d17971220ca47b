"""Grading many submissions at once, and picking a killed run up where it stopped.

``autograde --jobs N`` grades N submissions at a time in worker processes, each running
nbgrader's own autograde (sandbox included) on one submission; ``--scheduler`` runs the same
worker code on a Dask cluster (:mod:`autograder.cluster`). The reference results are computed
once by the parent and handed to every worker. nbgrader opens the gradebook for a
few short transactions per submission; :func:`serialise_gradebook` makes every process take
one file lock for as long as it holds a gradebook open, so writes never interleave (SQLite
would otherwise answer "database is locked"). A worker dies with the parent (and its sandboxed
kernels with it: bubblewrap's ``--die-with-parent``).

The journal (``.autograde-ASSIGNMENT.jsonl`` in the course directory) gets one line per
submission after its scores are committed; a later run skips what it lists for the same
submission and grading settings, unless ``--force``.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from nbgrader.api import Gradebook

_LOCK = {"fd": None, "held": 0}


def serialise_gradebook(lock_path: Path) -> None:
    """From now on, this process holds ``lock_path`` exclusively while any gradebook is open."""
    if _LOCK["fd"] is not None:
        return
    _LOCK["fd"] = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    init, close = Gradebook.__init__, Gradebook.close

    def locked_init(self, *args, **kwargs):
        if _LOCK["held"] == 0:
            fcntl.flock(_LOCK["fd"], fcntl.LOCK_EX)
        _LOCK["held"] += 1
        try:
            init(self, *args, **kwargs)
        except BaseException:
            _release()
            raise

    def locked_close(self):
        try:
            close(self)
        finally:
            _release()

    Gradebook.__init__, Gradebook.close = locked_init, locked_close


def _release() -> None:
    _LOCK["held"] -= 1
    if _LOCK["held"] == 0:
        fcntl.flock(_LOCK["fd"], fcntl.LOCK_UN)


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)


_WORKER: dict = {}


def prepare_worker(course: Path, overrides: dict, reference_cache: dict) -> None:
    """One nbgrader API per worker process, the parent's reference results, the gradebook lock
    (of one course for the process's life, hence the refusal to switch courses)."""
    from .cli import _api  # noqa: PLC0415 (cli imports this module)
    from .nbgrader_plugin import _REFERENCE_CACHE  # noqa: PLC0415

    if _WORKER.setdefault("course", course) != course:
        raise RuntimeError(f"this worker process graded {_WORKER['course']}: start new workers for {course}")
    serialise_gradebook(course / ".gradebook.lock")
    _REFERENCE_CACHE.update(reference_cache)
    _WORKER["api"] = _api(course, **overrides)


def init_worker(course: Path, overrides: dict, reference_cache: dict) -> None:
    """Pool initialiser: the worker dies with the parent, then :func:`prepare_worker`."""
    die_with_parent()
    prepare_worker(course, overrides, reference_cache)


def grade_in_worker(assignment: str, student: str) -> tuple[str, str | None, list[str], float]:
    from .cli import grade_timed  # noqa: PLC0415

    return grade_timed(_WORKER["api"], assignment, student)


def grade_in_pool(jobs: int, course: Path, overrides: dict, reference_cache: dict, assignment: str,
                  students: list[str]):
    """Grade ``students`` in ``jobs`` local worker processes; yield each result as it comes."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that has run torch
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=init_worker,
                             initargs=(course, overrides, reference_cache)) as pool:
        for future in as_completed([pool.submit(grade_in_worker, assignment, s) for s in students]):
            yield future.result()


class Journal:
    """Submissions whose scores are in the gradebook, with the settings they were graded under."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = path, settings
        self.done: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                self.done[entry["student"]] = entry

    def graded(self, student: str, stamp: str) -> dict | None:
        entry = self.done.get(student)
        return entry if entry and entry["stamp"] == stamp and entry["settings"] == self.settings else None

    def forget(self, students: list[str]) -> None:
        """Drop these students (``--force``), so that a run killed now regrades them when resumed."""
        for student in students:
            self.done.pop(student, None)
        partial = self.path.with_suffix(".tmp")
        partial.write_text("".join(json.dumps(e) + "\n" for e in self.done.values()))
        partial.replace(self.path)

    def record(self, student: str, stamp: str, **row) -> None:
        entry = {"student": student, "stamp": stamp, "settings": self.settings, **row}
        self.done[student] = entry
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
