"""Instructor commands: one per step of the nbgrader workflow, with progress bars.

    python -m autograder generate  ASSIGNMENT              # solutions/ -> exercises/ (+ gradebook)
    python -m autograder collect   ASSIGNMENT FOLDER       # FOLDER/<student>.ipynb -> submitted/
    python -m autograder autograde ASSIGNMENT… [--jobs N | --scheduler ADDRESS]
                                                          # submitted/ -> autograded/ + gradebook
    python -m autograder feedback  ASSIGNMENT              # autograded/ -> feedback/ (HTML)
    python -m autograder export    [--to grades.csv]       # gradebook -> CSV
    python -m autograder report    ASSIGNMENT              # gradebook + reports -> HTML page + CSV
    python -m autograder doctor    [--device D]            # can this machine grade safely?

Each step is nbgrader's own (same folders, same gradebook, same formgrader); ``autograde``
grades outside the student's kernel through :class:`autograder.nbgrader_plugin.SandboxGrade`,
and turns a submission nbgrader cannot even read into a zero with a reason instead of a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.apps.api import NbGraderAPI
from nbgrader.coursedir import CourseDirectory
from sqlalchemy.exc import SAWarning
from tqdm import tqdm
from traitlets.config import PyFileConfigLoader

from . import csvsafe, parallel, sandbox
from .nbgrader_plugin import RECORDS, REPAIRS


def _api(course: Path, **overrides) -> NbGraderAPI:
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    config.Exchange.root = str(course / ".exchange")  # no system-wide exchange needed
    for section, values in overrides.items():
        for name, value in values.items():
            setattr(config[section], name, value)
    return NbGraderAPI(CourseDirectory(config=config), config=config)


def _check(result: dict, what: str) -> None:
    if not result["success"]:
        sys.exit(f"{what} failed:\n{result.get('error') or result.get('log')}")


def generate(api: NbGraderAPI, args) -> None:
    _check(api.generate_assignment(args.assignment), f"generate {args.assignment}")
    print(f"student version written to {Path(api.coursedir.root) / api.coursedir.release_directory / args.assignment}")


def collect(api: NbGraderAPI, args) -> None:
    """Copy ``FOLDER/<student>.ipynb`` (or ``FOLDER/<student>/*.ipynb``) into nbgrader's submitted/."""
    notebooks = [nb.name for nb in api.gradebook.find_assignment(args.assignment).notebooks]
    folder = Path(args.folder)
    entries = sorted(folder.glob("*.ipynb")) + sorted(p for p in folder.iterdir() if p.is_dir())
    for entry in tqdm(entries, desc="collect", unit="student"):
        student = entry.stem if entry.is_file() else entry.name
        dest = Path(api.coursedir.format_path(api.coursedir.submitted_directory, student, args.assignment))
        dest.mkdir(parents=True, exist_ok=True)
        files = [entry] if entry.is_file() else sorted(entry.glob("*.ipynb"))
        if entry.is_file() and len(notebooks) != 1:
            sys.exit(f"{entry}: assignment {args.assignment} has {len(notebooks)} notebooks; "
                     "give each student a folder of notebooks instead")
        for file in files:
            name = f"{notebooks[0]}.ipynb" if entry.is_file() else file.name
            shutil.copyfile(file, dest / name)
        stamp = datetime.fromtimestamp(max(f.stat().st_mtime for f in files), timezone.utc)
        (dest / "timestamp.txt").write_text(stamp.strftime("%Y-%m-%d %H:%M:%S.%f %Z"))
    print(f"{len(entries)} submissions in {api.coursedir.format_path(api.coursedir.submitted_directory, '*', args.assignment)}")


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


def _zero(api: NbGraderAPI, assignment: str, student: str) -> None:
    """Record a submission nbgrader cannot grade as zero (nbgrader does this for missing notebooks)."""
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb, warnings.catch_warnings():
        # nbgrader's own add_submission trips SQLAlchemy's autoflush warning; the rows are right
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_student(student)
        # handed in, even if unreadable: the submission keeps the time collect recorded
        stamp = api.coursedir.get_existing_timestamp(
            api.coursedir.format_path(api.coursedir.submitted_directory, student, assignment))
        submission = gb.update_or_create_submission(assignment, student, **({"timestamp": stamp} if stamp else {}))
        for notebook in submission.notebooks:
            for g in notebook.grades:
                g.auto_score, g.needs_manual_grade = 0, False
        gb.db.commit()


def _score(api: NbGraderAPI, assignment: str, student: str) -> tuple[float, float]:
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        try:
            submission = gb.find_submission(assignment, student)
        except MissingEntry:
            return 0.0, 0.0
        return submission.score, submission.max_score


def _students(api: NbGraderAPI, step_directory: str, assignment: str) -> tuple[Path, list[str]]:
    """The folder of an nbgrader step and the students who have ``assignment`` in it."""
    root = (Path(api.coursedir.root) / step_directory).resolve()
    students = sorted(p.name for p in root.iterdir() if (p / assignment).is_dir()) if root.is_dir() else []
    return root, students


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
    start = time.perf_counter()
    return student, grade_one(api, assignment, student, notebooks), time.perf_counter() - start


def _workers(args, jobs: int, course: Path, overrides: dict):
    """Where ``--jobs``'s tasks run: a local process pool, or the Dask cluster of ``--scheduler``."""
    if args.scheduler:
        from .cluster import ClusterPool  # noqa: PLC0415 (dask only for --scheduler)

        return ClusterPool(args.scheduler, course, overrides)
    return parallel.local_pool(jobs, course, overrides)


def _stamp(root: Path, student: str, assignment: str) -> str:
    """What identifies a hand-in: the timestamp collect wrote and the notebooks' sizes and mtimes."""
    folder = root / student / assignment
    files = sorted(folder.glob("*.ipynb"))
    stamp = (folder / "timestamp.txt").read_text() if (folder / "timestamp.txt").exists() else ""
    return stamp + "".join(f"|{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def _plan(api: NbGraderAPI, assignment: str, args, settings: dict) -> dict:
    """One assignment's submissions, its journal, and the students still to grade."""
    root, students = _students(api, api.coursedir.submitted_directory, assignment)
    if args.student:
        students = [s for s in students if s in args.student]
    if not students:
        sys.exit(f"no submissions for {assignment} under {root}")
    journal = parallel.Journal(Path(api.coursedir.root) / f".autograde-{assignment}.jsonl", settings)
    stamps = {s: _stamp(root, s, assignment) for s in students}
    todo = [s for s in students if args.force or not journal.graded(s, stamps[s])]
    if args.force:
        journal.forget(todo)
    if len(todo) < len(students):
        print(f"{assignment}: {len(students) - len(todo)} submissions already graded with these settings: "
              "skipped (--force regrades them)")
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        notebooks = [nb.name for nb in gb.find_assignment(assignment).notebooks]
    return {"students": students, "todo": todo, "journal": journal, "stamps": stamps, "notebooks": notebooks}


def autograde(api: NbGraderAPI, args) -> None:
    problem = sandbox.sandbox_problem(args.device.split(":")[0])  # probed once for the whole run
    if problem and not args.no_sandbox:
        sys.exit(f"refusing to grade: {problem}.\nOr pass --no-sandbox to grade without it "
                 "(student code can then read and change every file your user can).")
    if args.no_sandbox:
        print("WARNING: --no-sandbox: student code runs with resource limits only and can read and "
              "change every file this user can (the reference, the gradebook, the course's config).",
              file=sys.stderr)
    course = Path(api.coursedir.root)
    settings = {"device": args.device, "seed": args.seed, "timeout": args.timeout,
                "budget": api.config.SandboxGrade.budget, "sandbox": not args.no_sandbox}
    plans = {assignment: _plan(api, assignment, args, settings) for assignment in dict.fromkeys(args.assignment)}
    total = sum(len(plan["todo"]) for plan in plans.values())
    jobs = min(args.jobs or os.cpu_count() or 1, total) or 1
    # kernels started ahead pay off where a core would idle; with every core grading they only compete
    api.config.SandboxGrade.prestart = not args.scheduler and jobs < (os.cpu_count() or 1)
    parallel.serialise_gradebook(course / ".gradebook.lock")

    def record(assignment: str, student: str, outcome: dict, seconds: float) -> None:
        """The journal line the summary and the report read: the reason in words (``problem``),
        and as data its ``kind``, the repairs and the test cells' records."""
        if outcome["kind"] in ("unreadable", "failed"):
            _zero(api, assignment, student)
        reason = outcome["reason"] or ("repaired before grading: " + "; ".join(outcome["repaired"])
                                       if outcome["repaired"] else "")
        score, max_score = _score(api, assignment, student)
        plans[assignment]["journal"].record(student, plans[assignment]["stamps"][student], score=score,
                                            max_score=max_score, problem=reason, seconds=round(seconds, 2),
                                            kind=outcome["kind"], repaired=outcome["repaired"],
                                            cells=outcome["cells"])

    names = " ".join(plans) if len(plans) <= 2 else f"{len(plans)} assignments"
    where = f"the Dask cluster at {args.scheduler}" if args.scheduler else f"{jobs} at once"
    bar = tqdm(total=total, desc=f"autograde {names} on {args.device} ({where})", unit="submission")
    if jobs == 1 and not args.scheduler:
        for assignment, plan in plans.items():
            for student in plan["todo"]:
                record(assignment, *grade_timed(api, assignment, student, plan["notebooks"]))
                bar.update()
    elif total:
        overrides = {"SandboxGrade": {k: getattr(api.config.SandboxGrade, k) for k in
                                      ("device", "seed", "call_timeout", "cell_timeout", "budget", "sandbox", "prestart")}}
        work = {assignment: (plan["notebooks"], plan["todo"]) for assignment, plan in plans.items()}
        with _workers(args, jobs, course, overrides) as pool:
            for assignment, *result in parallel.grade_all(pool, work):
                record(assignment, *result)
                bar.update()
    bar.close()
    for assignment, plan in plans.items():
        _summary(course, assignment, [(s, e["score"], e["max_score"], e["problem"], e["seconds"])
                                      for s in plan["students"] for e in [plan["journal"].done[s]]])


def _summary(course: Path, assignment: str, rows: list[tuple]) -> None:
    """``autograde-ASSIGNMENT.csv`` (student, score, max_score, problem, seconds), and the same on screen."""
    summary = course / f"autograde-{assignment}.csv"
    with summary.open("w", newline="") as f:
        csvsafe.writer(f).writerows([("student", "score", "max_score", "problem", "seconds"), *rows])
    width = max(len(s) for s, *_ in rows)
    for student, score, max_score, reason, _ in rows:
        print(f"{student:<{width}}  {score:6.2f} / {max_score:g}  {reason}")
    print(f"summary written to {summary}")


def feedback(api: NbGraderAPI, args) -> None:
    """Every student's page, even when some fail (one bad notebook must not cost the class its
    feedback); the failures are listed at the end and the exit status is 1."""
    _, students = _students(api, api.coursedir.autograded_directory, args.assignment)
    failed = {}
    for student in tqdm(students, desc=f"feedback {args.assignment}", unit="submission"):
        result = api.generate_feedback(args.assignment, student)
        if not result["success"]:  # the reason: the last line of the traceback nbgrader logged
            log = result.get("log") or ""
            trace = (log.rpartition("[ERROR] Traceback")[2].split("\n[", 1)[0] if "[ERROR] Traceback" in log
                     else result.get("error") or "")
            failed[student] = next((line.strip() for line in reversed(trace.splitlines()) if line.strip()),
                                   "no reason in nbgrader's log")
    print(f"HTML feedback in {api.coursedir.format_path(api.coursedir.feedback_directory, '*', args.assignment)}")
    if failed:
        sys.exit(f"no feedback for {len(failed)} of {len(students)} submissions (the others have theirs):\n"
                 + "\n".join(f"  {student}: {reason}" for student, reason in failed.items()))


def export(api: NbGraderAPI, args) -> None:
    plugin = csvsafe.CsvExport(parent=api)
    plugin.to = str(Path(args.to).resolve())
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        plugin.export(gb)
    print(f"grades written to {plugin.to}")


def report(api: NbGraderAPI, args) -> None:
    from .report import build  # noqa: PLC0415 (matplotlib only for this step)

    page, table = build(Path(api.coursedir.root), api.coursedir.db_url, api.coursedir.course_id, args.assignment)
    print(f"report written to {page} and {table}")


def doctor(args) -> None:
    """Say what protects grading on this machine; exit 1 when grading would be refused."""
    device = args.device.split(":")[0]
    print(f"bwrap: {sandbox.bwrap_path()}")
    problem = sandbox.sandbox_problem("cpu")
    print(f"sandbox (user namespaces, bwrap): {'ok' if problem is None else 'NOT AVAILABLE: ' + problem}")
    if device == "cuda" and problem is None:
        gpu = sandbox.sandbox_problem("cuda")
        print(f"GPU visible inside the sandbox: {'ok' if gpu is None else 'NO: ' + gpu}")
        problem = problem or gpu
    uid = sandbox.probe("cpu")[1]
    print(f"the sandbox's user: host uid {uid}" if uid is not None else "the sandbox's user: unknown (no sandbox)")
    control = sandbox.resource_control()
    print("limits on the kernel's whole process tree: " + {
        "systemd": "cgroup v2 through `systemd-run --user --scope` (memory without swap, processes, CPU)",
        "cgroupfs": "writable cgroup v1 folders (memory without swap, processes, CPU shared by kernel)",
        "rlimits": "none (no delegated cgroup): per-process rlimits only",
    }[control])
    import torch  # noqa: PLC0415 (only this step needs it)
    mb = sandbox.Limits().memory_mb
    memory = ((f"data {mb} MB on cpu, not set on cuda (CUDA build of torch)" if torch.version.cuda
               else f"address space {mb} MB"))
    print(f"rlimits: memory {memory}, CPU {sandbox.Limits().cpu_seconds} s, "
          f"{sandbox.Limits().processes} processes, files {sandbox.MAX_FILE_BYTES // 2**20} MB; "
          f"writable tmpfs {sum(sandbox.TMPFS_MB.values())} MB")
    print(f"visible read-only: system folders and {', '.join(sandbox.visible_paths())}")
    if problem is None:
        how = ("forked from a zygote that imported torch once" if sandbox.forks_kernels(sandbox.Limits())
               else "started by bubblewrap, each importing torch")
        try:
            cell = nbformat.v4.new_code_cell(sandbox.CONFINEMENT_CELL)
            with sandbox.NotebookProcess(nbformat.v4.new_notebook(cells=[cell])) as kernel:
                seen = kernel.call("confinement", ())
            print(f"kernels: {how}: ok")
            found = sandbox.confinement_problems(seen.value) if seen.error is None else [f"the check {seen.error}"]
            print(f"seccomp filter and read-only /proc/sys: {'; '.join(found) or 'ok'}")
            problem = "; ".join(found) or None
        except RuntimeError as exc:
            problem = str(exc)
            print(f"kernels: {how}: FAILED: {problem}")
    if problem:
        sys.exit("grading would be refused here (see above); `autograde --no-sandbox` grades unprotected")
    print("ok: autograde runs every kernel in the sandbox")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", type=Path, default=Path.cwd(),
                        help="course directory holding nbgrader_config.py (default: current directory)")
    steps = parser.add_subparsers(dest="step", required=True)
    p = steps.add_parser("generate", help="generate the student version of an assignment")
    p.add_argument("assignment")
    p = steps.add_parser("collect", help="copy submissions named <student>.ipynb into submitted/")
    p.add_argument("assignment")
    p.add_argument("folder")
    p = steps.add_parser("autograde", help="grade every submission of one or more assignments")
    p.add_argument("assignment", nargs="+", help="one or more assignments (their submissions share the workers)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the hidden random inputs")
    p.add_argument("--student", nargs="*", help="grade only these students")
    p.add_argument("--jobs", type=int, default=0,
                   help="submissions graded at once on this machine (default: one per CPU core)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="grade on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786) "
                        "instead; its workers need this Python environment and the course directory "
                        "at the same path (a shared file system), one thread each (--nthreads 1)")
    p.add_argument("--force", action="store_true",
                   help="regrade submissions this run's journal lists as already graded")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds one hidden-test call may run (a notebook cell gets twice that)")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="seconds all of a submission's cells and hidden-test calls may take together "
                        "(default: 4 × --timeout, 120 s); what is left when it runs out scores nothing")
    p.add_argument("--no-sandbox", action="store_true",
                   help="DANGEROUS: grade even where the sandbox cannot run; student code can then read "
                        "the reference and gradebook and change any file your user can")
    p = steps.add_parser("feedback", help="write HTML feedback for every graded submission")
    p.add_argument("assignment")
    p = steps.add_parser("export", help="export all grades to CSV")
    p.add_argument("--to", default="grades.csv")
    p = steps.add_parser("report", help="write an HTML report (and a CSV) on a graded assignment")
    p.add_argument("assignment")
    p = steps.add_parser("doctor", help="check that this machine can grade safely (sandbox, limits, GPU)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: also check the GPU inside the sandbox")
    for sub in steps.choices.values():  # `autograde 01-tokens --course DIR` works too
        sub.add_argument("--course", type=Path, default=argparse.SUPPRESS,
                         help="course directory (also accepted before the command)")
    args = parser.parse_args(argv)
    if args.step == "doctor":
        return doctor(args)

    # nbgrader runs its database migrations with the `alembic` script of this environment
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    course = args.course.resolve()
    if not (course / "nbgrader_config.py").is_file():
        sys.exit(f"{course} has no nbgrader_config.py: pass --course DIR")
    overrides = ({"SandboxGrade": {"device": args.device, "seed": args.seed, "call_timeout": args.timeout,
                                  "cell_timeout": 2 * args.timeout, "sandbox": not args.no_sandbox,
                                  "budget": 4 * args.timeout if args.budget is None else args.budget}}
                 if args.step == "autograde" else {})
    api = _api(course, **overrides)
    {"generate": generate, "collect": collect, "autograde": autograde,
     "feedback": feedback, "export": export, "report": report}[args.step](api, args)
