"""Grading many submissions at once, and picking a killed run up where it stopped.

``autograde --jobs N`` grades N submissions at a time in worker processes, each running
nbgrader's own autograde (sandbox included) on one submission; ``--scheduler`` runs the same
tasks on a Dask cluster (:mod:`autograder.cluster`). Each reference notebook runs
once per run, as one of the pool's first tasks, and its results travel with the submissions'
tasks (:func:`grade_all`). nbgrader opens the gradebook for a few short transactions per
submission; :func:`serialise_gradebook` makes every process hold one lock for as long as it has
a gradebook open, so writes never interleave: a file lock for SQLite (which would otherwise
answer "database is locked"), a PostgreSQL advisory lock for a PostgreSQL gradebook, which
serialises graders on every machine that uses the database. A worker dies with the parent (and
its sandboxed kernels with it: bubblewrap's ``--die-with-parent``).

The journal (``.autograde-ASSIGNMENT.jsonl`` in the course directory) gets one line per
submission after its scores are committed; a later run skips what it lists for the same
submission and grading settings, unless ``--force``. The line also holds what the instructor's
report reads as data: the kind of problem and each test cell's record (failure messages, hints,
timeouts), never text parsed from the graded notebooks, which students' output shares.
"""

from __future__ import annotations

import fcntl
import json
import os
import multiprocessing
import pickle
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from pathlib import Path

from nbgrader.api import Gradebook
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from .course import grade_timed, nbgrader_api
from .nbgrader_plugin import SandboxGrade, add_references
from .zygote import die_with_parent

# nbgrader's find-or-create (the course row, students, submissions) is a read, then an insert:
# two writers at once could both insert. Every grader of a database takes this advisory lock.
ADVISORY_KEY = int.from_bytes(b"nbgrader", "big")


class _Lock:
    """Counted, so that a gradebook opened while another is open does not release the lock."""

    held = 0

    def enter(self) -> None:
        if self.held == 0:
            self.acquire()
        self.held += 1

    def exit(self) -> None:
        self.held -= 1
        if self.held == 0:
            self.release()


class _FileLock(_Lock):
    """SQLite: one writer per gradebook file, so one lock file in the course for every process."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


class _AdvisoryLock(_Lock):
    """PostgreSQL: a session-level advisory lock on a connection of its own, kept open by this
    process; the server drops the lock when the process dies, on whichever machine it ran."""

    def __init__(self, db_url: str):
        engine = create_engine(db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.connection = engine.connect()

    def acquire(self) -> None:
        self.connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_KEY})

    def release(self) -> None:
        self.connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})


_LOCKS: dict[str, _Lock] = {}  # db_url -> its lock, made on first use


def serialise_gradebook(lock_path: Path) -> None:
    """From now on, this process holds its database's lock while any gradebook is open
    (``lock_path``: the lock file used for a SQLite gradebook)."""
    if getattr(Gradebook, "serialised", False):
        return
    init, close = Gradebook.__init__, Gradebook.close

    def locked_init(self, db_url, *args, **kwargs):
        if db_url not in _LOCKS:
            postgres = make_url(db_url).get_backend_name() == "postgresql"
            _LOCKS[db_url] = _AdvisoryLock(db_url) if postgres else _FileLock(lock_path)
        self._lock = _LOCKS[db_url]
        self._lock.enter()
        try:
            init(self, db_url, *args, **kwargs)
        except BaseException:
            self._lock.exit()
            raise

    def locked_close(self):
        try:
            close(self)
        finally:
            self._lock.exit()

    Gradebook.__init__, Gradebook.close, Gradebook.serialised = locked_init, locked_close, True


_WORKER: dict = {}


def prepare_worker(course: Path, overrides: dict) -> None:
    """One nbgrader API per worker process and the gradebook lock (of one course for the
    process's life, hence the refusal to switch courses)."""
    if _WORKER.setdefault("course", course) != course:
        raise RuntimeError(f"this worker process graded {_WORKER['course']}: start new workers for {course}")
    serialise_gradebook(course / ".gradebook.lock")
    _WORKER["api"] = nbgrader_api(course, **overrides)


def init_worker(parent: int, course: Path, overrides: dict) -> None:
    """Pool initialiser: the worker dies with ``parent``, then :func:`prepare_worker`."""
    die_with_parent(parent)
    prepare_worker(course, overrides)


def reference_in_worker(assignment: str, notebook: str) -> bytes:
    """Run one reference notebook's hidden cases (and its mistakes'); {cache key: results} for the
    submissions' tasks, pickled here: a process pool would pass each tensor in a shared-memory
    file of its own, and a catalogue's thousands of them exhaust the processes' file descriptors."""
    grader = SandboxGrade(config=_WORKER["api"].config)
    return pickle.dumps({grader.reference_key(assignment, notebook): grader.reference(assignment, notebook)[1]})


def grade_in_worker(assignment: str, student: str, notebooks: list[str], references: list[bytes]) -> tuple[str, dict, float]:
    """:func:`autograder.course.grade_timed` in a worker: (student, outcome, seconds), all plain data."""
    for pickled in references:
        add_references(pickle.loads(pickled))
    return grade_timed(_WORKER["api"], assignment, student, notebooks)


def local_pool(jobs: int, course: Path, overrides: dict) -> ProcessPoolExecutor:
    """``jobs`` worker processes on this machine, each dying with this one."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that has run torch
    return ProcessPoolExecutor(jobs, mp_context=context, initializer=init_worker,
                               initargs=(os.getpid(), course, overrides))


def grade_all(pool: Executor, work: dict[str, tuple[list[str], list[str]]]):
    """Grade ``work`` (assignment → (its notebooks, the students to grade)) on ``pool``, yielding
    ``(assignment, student, outcome, seconds)`` as submissions finish (``outcome``: see
    :func:`autograder.course.grade_one`).

    Every assignment's reference notebooks run first, each once, as tasks of the pool (so the
    workers are busy from the start); an assignment's submissions are queued, with its reference
    results, as soon as those are in. A reference that fails raises here and ends the run."""
    pending = {pool.submit(reference_in_worker, assignment, notebook): (assignment, None)
               for assignment, (notebooks, students) in work.items() if students for notebook in notebooks}
    references: dict[str, list[bytes]] = {assignment: [] for assignment in work}
    missing = {assignment: len(notebooks) for assignment, (notebooks, _) in work.items()}
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            assignment, student = pending.pop(future)
            if student is not None:
                yield (assignment, *future.result())
                continue
            references[assignment].append(future.result())
            missing[assignment] -= 1
            if missing[assignment] == 0:
                for student in work[assignment][1]:
                    task = pool.submit(grade_in_worker, assignment, student, work[assignment][0],
                                       references[assignment])
                    pending[task] = (assignment, student)


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
