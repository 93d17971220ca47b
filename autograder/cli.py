"""Instructor commands: one per step of the nbgrader workflow, with progress bars.

    python -m autograder generate  ASSIGNMENT              # solutions/ -> exercises/ (+ gradebook)
    python -m autograder catalogue ASSIGNMENT… [--out DIR] # solutions/*/mistakes.yaml -> the public
                                                          # checks' data (autograder/data/mistakes/)
    python -m autograder collect   ASSIGNMENT FOLDER       # FOLDER/<student>.ipynb -> submitted/
    python -m autograder autograde ASSIGNMENT… [--jobs N | --scheduler ADDRESS]
                                                          # submitted/ -> autograded/ + gradebook
    python -m autograder feedback  ASSIGNMENT              # autograded/ -> feedback/ (HTML)
    python -m autograder export    [--to grades.csv]       # gradebook -> CSV
    python -m autograder report    ASSIGNMENT              # gradebook + reports -> HTML page + CSV
    python -m autograder doctor    [--device D]            # can this machine grade safely?

Each step is nbgrader's own (same folders, same gradebook, same formgrader); ``autograde``
grades outside the student's kernel through :class:`autograder.nbgrader_plugin.SandboxGrade`,
and turns a submission nbgrader cannot even read into a zero with a reason instead of a crash
(:mod:`autograder.course`, which grades each submission here and in the workers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook
from nbgrader.apps.api import NbGraderAPI
from tqdm import tqdm

from . import csvsafe, parallel, process, sandbox
from .kernel import MAX_FILE_BYTES
from .course import grade_timed, hand_in_stamp, nbgrader_api, read_score, record_zero, students_in_step


def _check(result: dict, what: str) -> None:
    if not result["success"]:
        sys.exit(f"{what} failed:\n{result.get('error') or result.get('log')}")


def generate(api: NbGraderAPI, args) -> None:
    _check(api.generate_assignment(args.assignment), f"generate {args.assignment}")
    print(f"student version written to {Path(api.coursedir.root) / api.coursedir.release_directory / args.assignment}")


def catalogue(api: NbGraderAPI, args) -> None:
    """Run each assignment's catalogue of mistakes on its public checks' examples and write what
    the public checks compare with (after changing a reference or its ``mistakes.yaml``)."""
    import torch

    from . import mistakes
    from .grading import record_public
    from .nbgrader_plugin import data_files

    out = args.out or mistakes.PUBLIC
    out.mkdir(parents=True, exist_ok=True)
    for assignment in args.assignment:
        folder = Path(api.coursedir.root) / api.coursedir.source_directory / assignment
        (path,) = folder.glob("*.ipynb")
        reference = nbformat.read(path, as_version=4)
        found = mistakes.load(folder, reference)
        data = record_public(reference, found, limits=sandbox.Limits(), files=data_files(folder))
        target = out / mistakes.public_file(reference.metadata["autograder"]["tests"]).name
        torch.save(data, target)
        print(f"{assignment}: {len(found.mistakes)} mistakes on {len(data['examples'])} public examples -> {target}")


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


def _workers(args, jobs: int, course: Path, overrides: dict):
    """Where ``--jobs``'s tasks run: a local process pool, or the Dask cluster of ``--scheduler``."""
    if args.scheduler:
        from .cluster import ClusterPool  # noqa: PLC0415 (dask only for --scheduler)

        return ClusterPool(args.scheduler, course, overrides)
    return parallel.local_pool(jobs, course, overrides)


def _plan(api: NbGraderAPI, assignment: str, args, settings: dict) -> dict:
    """One assignment's submissions, its journal, and the students still to grade."""
    root, students = students_in_step(api, api.coursedir.submitted_directory, assignment)
    if args.student:
        students = [s for s in students if s in args.student]
    if not students:
        sys.exit(f"no submissions for {assignment} under {root}")
    journal = parallel.Journal(Path(api.coursedir.root) / f".autograde-{assignment}.jsonl", settings)
    stamps = {s: hand_in_stamp(root, s, assignment) for s in students}
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
            record_zero(api, assignment, student)
        reason = outcome["reason"] or ("repaired before grading: " + "; ".join(outcome["repaired"])
                                       if outcome["repaired"] else "")
        score, max_score = read_score(api, assignment, student)
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
    _, students = students_in_step(api, api.coursedir.autograded_directory, args.assignment)
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
        "cgroupfs": "writable cgroup folders (memory without swap, processes, CPU shared by kernel)",
        "rlimits": "none (no delegated cgroup; on cgroup v2 without systemd, name a delegated folder "
                   "in AUTOGRADER_CGROUP): per-process rlimits only",
    }[control])
    import torch  # noqa: PLC0415 (only this step needs it)
    mb = sandbox.Limits().memory_mb
    memory = ((f"data {mb} MB on cpu, not set on cuda (CUDA build of torch)" if torch.version.cuda
               else f"address space {mb} MB"))
    print(f"rlimits: memory {memory}, CPU {sandbox.Limits().cpu_seconds} s, "
          f"{sandbox.Limits().processes} processes, files {MAX_FILE_BYTES // 2**20} MB; "
          f"writable tmpfs {sum(sandbox.TMPFS_MB.values())} MB")
    print(f"visible read-only: system folders and {', '.join(sandbox.visible_paths())}")
    if problem is None:
        how = ("forked from a zygote that imported torch once" if sandbox.forks_kernels(sandbox.Limits())
               else "started by bubblewrap, each importing torch")
        try:
            cell = nbformat.v4.new_code_cell(sandbox.CONFINEMENT_CELL)
            with process.NotebookProcess(nbformat.v4.new_notebook(cells=[cell])) as kernel:
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
    p = steps.add_parser("catalogue", help="compute the public checks' data from each assignment's mistakes.yaml")
    p.add_argument("assignment", nargs="+")
    p.add_argument("--out", type=Path, help="folder to write to (default: the package's data/mistakes/)")
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
    api = nbgrader_api(course, **overrides)
    {"generate": generate, "catalogue": catalogue, "collect": collect, "autograde": autograde,
     "feedback": feedback, "export": export, "report": report}[args.step](api, args)
