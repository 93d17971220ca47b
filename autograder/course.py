"""The course directory as the graders see it: nbgrader's API for a course, one submission
graded (with a reason in words when nbgrader cannot), a zero recorded for a submission it cannot
read, and the scores and hand-ins read back.

This layer sits below the instructor commands (:mod:`autograder.cli`) and below the worker
pools that grade many submissions at once (:mod:`autograder.parallel`, :mod:`autograder.cluster`):
they all grade a submission the same way, so they all call this module, and nothing here
imports them.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.apps.api import NbGraderAPI
from nbgrader.coursedir import CourseDirectory
from sqlalchemy.exc import SAWarning
from traitlets.config import PyFileConfigLoader

from .nbgrader_plugin import RECORDS, REPAIRS


def nbgrader_api(course: Path, **overrides) -> NbGraderAPI:
    """nbgrader's API for the course directory ``course`` (its ``nbgrader_config.py``, then
    ``overrides``: section → {trait: value}), built the same way in the instructor's process and in
    every worker, so that they all grade under the same settings.

    nbgrader's own ``add_submission`` trips SQLAlchemy's autoflush warning when it adds a new
    student's submission (the rows it writes are right); each process that grades ignores just
    that warning from nbgrader, so that an instructor reads only what matters."""
    warnings.filterwarnings("ignore", category=SAWarning, module=r"nbgrader\.")
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    config.Exchange.root = str(course / ".exchange")  # no system-wide exchange needed
    for section, values in overrides.items():
        for name, value in values.items():
            setattr(config[section], name, value)
    return NbGraderAPI(CourseDirectory(config=config), config=config)


def students_in_step(api: NbGraderAPI, step_directory: str, assignment: str) -> tuple[Path, list[str]]:
    """The folder of an nbgrader step and the students who have ``assignment`` in it."""
    root = (Path(api.coursedir.root) / step_directory).resolve()
    students = sorted(p.name for p in root.iterdir() if (p / assignment).is_dir()) if root.is_dir() else []
    return root, students


def hand_in_stamp(root: Path, student: str, assignment: str) -> str:
    """What identifies a hand-in: the timestamp collect wrote and the notebooks' sizes and mtimes
    (the journal skips a submission only while this is unchanged)."""
    folder = root / student / assignment
    files = sorted(folder.glob("*.ipynb"))
    stamp = (folder / "timestamp.txt").read_text() if (folder / "timestamp.txt").exists() else ""
    return stamp + "".join(f"|{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def _unreadable(folder: Path, notebooks: list[str]) -> str | None:
    """Why nbgrader cannot read the assignment's ``notebooks`` in this submission folder, or None.
    Other files there are the student's own (a scratch notebook): nbgrader skips them, so must this."""
    paths = [folder / f"{name}.ipynb" for name in notebooks]
    if not any(path.exists() for path in paths):
        found = ", ".join(sorted(p.name for p in folder.glob("*.ipynb"))) or "no notebook"
        return (f"the submission has no {' or '.join(p.name for p in paths)} (it holds {found}); hand the "
                "notebook in under the assignment's file name")
    for path in (p for p in paths if p.exists()):
        try:
            cells = nbformat.read(path, as_version=4).cells
            broken = next((n for n, cell in enumerate(cells, start=1) if not _utf8(cell)), None)
        except (json.JSONDecodeError, nbformat.reader.NotJSONError, UnicodeDecodeError) as exc:
            return f"{path.name} is not a valid notebook file (not JSON: {exc}); was it saved or uploaded correctly?"
        except Exception as exc:
            return f"{path.name} could not be read as a notebook ({exc.__class__.__name__}: {exc})"
        if broken:
            return (f"cell {broken} of {path.name}, a {cells[broken - 1].cell_type} cell, holds text that is not "
                    "valid Unicode (a lone surrogate such as \\ud800, left by an editor that cut an emoji or "
                    "other character in half), so nbgrader cannot save the graded notebook; retype or delete "
                    "that text and hand the notebook in again")
    return None


def _utf8(cell: dict) -> bool:
    """Whether nbgrader can save this cell: all of it but its outputs (cleared first) as UTF-8."""
    try:
        json.dumps({k: v for k, v in cell.items() if k != "outputs"}, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


# nbgrader's failures, in words an instructor can act on
_EXPLAINED = {
    "SchemaTooOldError": "its cells' grading metadata is damaged (changed by an editor or by hand)",
    "SchemaTooNewError": "its cells' grading metadata comes from a newer nbgrader than this one",
    "MissingEntry": "it refers to cells or an assignment the gradebook does not have",
    "Inconsistent checksums": "a locked cell could not be restored from the assignment",
    "surrogates not allowed": "it holds text that is not valid Unicode (a lone surrogate, left by an editor "
                              "that cut a character in half), so nbgrader cannot save it",
}
# an exception line of a traceback: "RuntimeError: …", "nbgrader.api.MissingEntry: …"
_RAISED = re.compile(r"^\s*((?:\w+\.)*[A-Z]\w*(?:Error|Exception|Entry)(?::.*)?)$", re.MULTILINE)


def _raised(text: str | None) -> str | None:
    """The last exception line in ``text``, but for nbgrader's NbGraderException, which only says
    to read the traceback above it."""
    lines = [line.strip() for line in _RAISED.findall(text or "") if "NbGraderException" not in line]
    return lines[-1] if lines else None


def _failure(result: dict, changed: list[str] = ()) -> str:
    """Why an nbgrader run failed, in words, quoting the exception nbgrader's log names (its
    ``error`` holds only the generic NbGraderException when a notebook fails); ``changed``: what
    :func:`_tampered` found, which explains the exception better than it can."""
    line = _raised(result.get("log")) or _raised(result.get("error")) or "no exception in nbgrader's log"
    if changed:
        return (f"{'; '.join(changed)}, and nbgrader grades only cells that match the assignment (nbgrader: "
                f"{line}); copy the answers into a fresh copy of the assignment and hand that in, or grade "
                "it by hand")
    words = next((w for k, w in _EXPLAINED.items() if k in line), "nbgrader could not process it")
    return f"{words} (nbgrader: {line}); grade it by hand or send it to the course's developers"


def _role(meta: dict) -> tuple[str, object]:
    """What a cell is to nbgrader, in words, and its points (None where it earns none)."""
    if meta.get("solution"):
        role = "an answer cell graded by hand" if meta.get("grade") else "an answer cell"
    else:
        role = "a test cell" if meta.get("grade") else "a locked cell" if meta.get("locked") else "a plain cell"
    return role, meta.get("points") if meta.get("grade") else None


def _worth(role: tuple[str, object]) -> str:
    words, points = role
    if points is None:
        return words
    if isinstance(points, (int, float)):
        return f"{words} worth {points:g} point{'s' * (points != 1)}"
    return f"{words} worth {points!r} points"


def _grading(cell) -> dict:
    """A cell's nbgrader metadata with its grade id, or {} (also where an editor left junk there)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) and isinstance(meta.get("grade_id"), str) else {}


# what _tampered compares through _role, or what nbgrader restores by itself
_COMPARED = {"grade", "solution", "points", "grade_id", "locked", "checksum", "cell_type"}


def _tampered(folder: Path, release: Path, notebooks: list[str]) -> list[str]:
    """How the grading metadata of the submitted notebooks differs from the released ones, in
    words: nbgrader's log names only the cell it gave up on, not what was done to it."""
    found = []
    for name in notebooks:
        try:
            submitted = list(nbformat.read(folder / f"{name}.ipynb", as_version=4).cells)
        except Exception:  # missing or unreadable: _unreadable's business
            continue
        given = {m["grade_id"]: m for c in nbformat.read(release / f"{name}.ipynb", as_version=4).cells
                 if (m := _grading(c))}
        cells = {n: m for n, c in enumerate(submitted, start=1) if (m := _grading(c)).get("grade_id") in given}
        odd = {n: m for n, m in cells.items() if _role(m) != _role(given[m["grade_id"]])}
        swapped: set[int] = set()
        for n, m in odd.items():
            if n in swapped:
                continue
            was, now = _role(given[m["grade_id"]]), _role(m)
            partner = next((k for k, o in odd.items() if k > n and k not in swapped
                            and _role(o) == was and _role(given[o["grade_id"]]) == now), None)
            if partner is not None:
                swapped.add(partner)
                found.append(f"the grade ids of cells {n} and {partner} of {name}.ipynb ({m['grade_id']!r} and "
                             f"{odd[partner]['grade_id']!r}) were swapped")
            elif was[0] == now[0]:
                found.append(f"the points of cell {n} of {name}.ipynb ({m['grade_id']!r}) were changed from "
                             f"{was[1]!r} to {now[1]!r}")
            else:
                found.append(f"cell {n} of {name}.ipynb ({m['grade_id']!r}) was changed from {_worth(was)} "
                             f"into {_worth(now)}")
        for n, m in cells.items():
            released = given[m["grade_id"]]
            edited = [k for k in sorted({*m, *released} - _COMPARED) if m.get(k) != released.get(k)]
            if edited:
                found.append(f"the grading metadata of cell {n} of {name}.ipynb ({m['grade_id']!r}) was edited ("
                             + ", ".join(f"{k}: {released[k]!r} became {m[k]!r}" if k in m and k in released
                                         else f"{k} {released[k]!r} was removed" if k in released
                                         else f"{k} {m[k]!r} was added" for k in edited) + ")")
    return found


def grade_one(api: NbGraderAPI, assignment: str, student: str, notebooks: list[str]) -> dict:
    """nbgrader's autograde of one submission (``notebooks``: the assignment's), as the journal
    keeps it: ``kind`` of problem ("unreadable" and "failed" score zero; else "repaired" or ""),
    ``reason`` in words, the editor repairs and each notebook's test-cell records."""
    folder = Path(api.coursedir.format_path(api.coursedir.submitted_directory, student, assignment))
    kind, reason = "unreadable", _unreadable(folder, notebooks)
    if reason is None:
        result = api.autograde(assignment, student)
        if not result["success"]:
            release = Path(api.coursedir.format_path(api.coursedir.release_directory, ".", assignment))
            changed = _tampered(folder, release, notebooks)
            kind, reason = "failed", f"nbgrader could not grade this submission: {_failure(result, changed)}"
    repaired = [text for notes in _take(REPAIRS, assignment, student).values() for _, text in notes]
    records = _take(RECORDS, assignment, student)
    if reason is None:
        kind = "repaired" if repaired else ""
    return {"kind": kind, "reason": reason or "", "repaired": repaired, "cells": {} if reason else records}


def _take(store: dict, assignment: str, student: str) -> dict[str, list]:
    """notebook → this submission's entries of ``store`` (REPAIRS, RECORDS), removed from it: a
    worker process (a Dask worker outlives the run) must not report them for a later grading."""
    return {key[2]: store.pop(key) for key in list(store) if key[:2] == (assignment, student)}


def grade_timed(api: NbGraderAPI, assignment: str, student: str, notebooks: list[str]) -> tuple[str, dict, float]:
    """(student, :func:`grade_one`'s outcome, seconds it took): what one grading task returns, in
    this process or in a worker."""
    start = time.perf_counter()
    return student, grade_one(api, assignment, student, notebooks), time.perf_counter() - start


def record_zero(api: NbGraderAPI, assignment: str, student: str) -> None:
    """Record a submission nbgrader cannot grade as zero (nbgrader does this for missing notebooks)."""
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        gb.update_or_create_student(student)
        # handed in, even if unreadable: the submission keeps the time collect recorded
        stamp = api.coursedir.get_existing_timestamp(
            api.coursedir.format_path(api.coursedir.submitted_directory, student, assignment))
        submission = gb.update_or_create_submission(assignment, student, **({"timestamp": stamp} if stamp else {}))
        for notebook in submission.notebooks:
            for g in notebook.grades:
                g.auto_score, g.needs_manual_grade = 0, False
        gb.db.commit()


def read_score(api: NbGraderAPI, assignment: str, student: str) -> tuple[float, float]:
    """(score, max score) of a submission in the gradebook; (0, 0) where it has none."""
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        try:
            submission = gb.find_submission(assignment, student)
        except MissingEntry:
            return 0.0, 0.0
        return submission.score, submission.max_score
