"""Grading a class at scale: options where people type them, the instructor report, parallel,
distributed (Dask) and resumable grading, several assignments in one run, kernels started
ahead. One small class of Chapter-1 submissions is graded a few ways."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from distributed import Client, LocalCluster, get_task_stream
from nbgrader.api import Gradebook

from autograder import process, sandbox
from conftest import ASSIGNMENT, ROOT, grade_class, make_submission, run_cli
from test_grading import LOOP, OFF_BY_ONE


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course with Chapter 1 only (generating every chapter would dominate these tests)."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, course / "solutions" / ASSIGNMENT)
    run_cli(course, "generate", ASSIGNMENT)
    return course


def test_course_is_accepted_after_the_command(course, tmp_path):
    out = tmp_path / "grades.csv"
    result = subprocess.run([sys.executable, "-m", "autograder", "export", "--to", str(out),
                             "--course", str(course)], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("assignment,"), out.read_text()[:200]


UNKNOWN_ONE_HOT = '''
def one_hot(ids, num_classes):
    return 2 * F.one_hot(ids, num_classes).float()  # no typical mistake: twos
'''


@pytest.fixture(scope="module")
def graded(course: Path, tmp_path_factory) -> dict[str, dict]:
    """Five students: the reference, an untouched notebook, the off-by-one one-hot mistake
    twice (once with an endless loop in another exercise): the class's planted common mistake,
    and a one-hot mistake the catalogue does not know."""
    submissions = {
        "ada": make_submission(course),
        "blank": make_submission(course, solved=False),
        "offbyone": make_submission(course, replace={"one_hot": OFF_BY_ONE}),
        "offloop": make_submission(course, replace={"one_hot": OFF_BY_ONE, "cosine_similarity_matrix": LOOP}),
        "doubled": make_submission(course, replace={"one_hot": UNKNOWN_ONE_HOT}),
    }
    return grade_class(course, ASSIGNMENT, submissions, tmp_path_factory.mktemp("downloads"),
                       "--timeout", "3", "--jobs", "1")


def test_report_counts_scores_common_mistakes_and_problems(course, graded):
    assert graded["ada"]["score"] == 10.0 and graded["blank"]["score"] == 0.0
    run_cli(course, "report", ASSIGNMENT)
    page = (course / f"report-{ASSIGNMENT}.html").read_text()
    counts = re.search(r'<p id="counts">(.*?)</p>', page, re.DOTALL).group(1)
    assert counts.startswith("5 submissions;") and "1 with full marks" in counts, counts
    assert page.count('src="data:image/png;base64,') == 2
    hints = re.search(r"<h2>Most common hints</h2>\s*<table>.*?</tr>(.*?)</table>", page, re.DOTALL).group(1)
    top = re.findall(r"<tr><td>(\w+)</td><td>([^<]*)</td><td>(\d+)</td></tr>", hints)
    assert any(g == "test_one_hot" and "numbered from 1" in t and c == "2" for g, t, c in top[:2]), hints
    found = re.search(r"<h2>Typical mistakes found</h2>.*?<table>.*?</tr>(.*?)</table>", page, re.DOTALL).group(1)
    assert "<tr><td>test_one_hot</td><td>one-hot-from-one</td><td>2</td></tr>" in found, found
    unknown = re.search(r"matched no known mistake</h2>.*?<table>.*?</tr>(.*?)</table>", page, re.DOTALL).group(1)
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\d+)</td>", unknown)
    assert rows == [("test_embed", "1"), ("test_one_hot", "1")], unknown  # embed uses one_hot
    troubled = re.search(r"timeout, crash, repair.*?</h2>(.*?)<h2>", page, re.DOTALL).group(1)
    assert "<td>offloop</td><td>timeout</td>" in troubled and "ada" not in troubled, troubled
    with open(course / f"report-{ASSIGNMENT}.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert {s: float(r["score"]) for s, r in rows.items()} == {s: r["score"] for s, r in graded.items()}
    assert float(rows["offbyone"]["test_one_hot"]) < float(rows["ada"]["test_one_hot"])


def test_two_jobs_give_exactly_the_scores_and_reports_of_one(course, graded, tmp_path):
    again = grade_class(course, ASSIGNMENT, {}, tmp_path, "--student", *graded, "--timeout", "3",
                        "--jobs", "2", "--force")
    assert {s: (r["score"], r["problem"], r["report"]) for s, r in again.items()} == \
           {s: (r["score"], r["problem"], r["report"]) for s, r in graded.items()}
    assert all(float(r["seconds"]) > 0 for r in again.values())


def test_two_workers_print_no_warning_for_new_students(course, graded, tmp_path):
    """Students the gradebook has not seen (nbgrader adds their submissions in the workers), in a
    copy of the course, whose gradebook the other tests count on."""
    copy = shutil.copytree(course, tmp_path / "course")
    for k in range(3):
        shutil.copytree(copy / "submitted" / "ada", copy / "submitted" / f"newcomer{k}")
    result = run_cli(copy, "autograde", ASSIGNMENT, "--student", *[f"newcomer{k}" for k in range(3)],
                     "--timeout", "3", "--jobs", "2")
    shown = [line for line in (result.stdout + result.stderr).splitlines() if "Warning" in line]
    assert shown == [], shown


def test_a_killed_run_resumes_without_losing_or_duplicating_scores(course, graded):
    journal = course / f".autograde-{ASSIGNMENT}.jsonl"
    command = [sys.executable, "-m", "autograder", "autograde", ASSIGNMENT, "--course", str(course),
               "--student", *graded, "--timeout", "3", "--jobs", "2", "--force"]
    journal.unlink()
    run = subprocess.Popen(command, cwd=course, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (journal.exists() and journal.read_text().strip()):
        time.sleep(0.2)
    assert run.poll() is None, "the run finished before it could be killed"
    processes = psutil.Process(run.pid).children(recursive=True)  # workers, bwrap, kernels
    assert len(processes) >= 2
    run.kill()
    run.wait()
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, f"outlived the run: {[p.cmdline() for p in alive]}"
    recorded = {json.loads(line)["student"] for line in journal.read_text().splitlines()}
    assert 1 <= len(recorded) < len(graded), recorded

    result = run_cli(course, "autograde", ASSIGNMENT, "--student", *graded, "--timeout", "3", "--jobs", "2")
    assert f"{len(recorded)} submissions already graded" in result.stdout, result.stdout
    with open(course / f"autograde-{ASSIGNMENT}.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["student"] for r in rows) == sorted(graded)
    assert {r["student"]: float(r["score"]) for r in rows} == {s: r["score"] for s, r in graded.items()}
    entries = [json.loads(line)["student"] for line in journal.read_text().splitlines()]
    assert sorted(entries) == sorted(graded), entries  # each graded once after the kill
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "one-hot-to-kv-cache") as gb:
        submissions = gb.assignment_submissions(ASSIGNMENT)
        assert sorted(s.student.id for s in submissions) == sorted(graded)
        assert {s.student.id: s.score for s in submissions} == {s: r["score"] for s, r in graded.items()}


ORPHAN = """
import ctypes, os
from autograder.zygote import die_with_parent
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, as a CI harness or init system may be
dead, alive = os.pipe()
middle = os.fork()
if middle == 0:
    parent = os.getpid()
    if os.fork() == 0:  # a worker still starting up...
        os.close(alive)
        os.read(dead, 1)  # ...when its parent dies
        die_with_parent(parent)
        os._exit(0)
    os._exit(0)
os.waitpid(middle, 0)
os.close(alive)
print(os.waitstatus_to_exitcode(os.wait()[1]))
"""


def test_a_worker_whose_parent_died_as_it_started_exits_though_a_subreaper_adopted_it():
    """The race a killed run can hit: the orphan's parent is then a living subreaper, not PID 1."""
    result = subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.strip() == "1", result.stdout + result.stderr


def test_several_assignments_share_one_run_and_score_as_alone(course, graded, tmp_path):
    other = "02-sequences"
    shutil.copytree(ROOT / "solutions" / other, course / "solutions" / other)
    run_cli(course, "generate", other)
    for student, solved in (("ada", True), ("blank", False)):
        nbformat.write(make_submission(course, assignment=other, solved=solved), tmp_path / f"{student}.ipynb")
    run_cli(course, "collect", other, str(tmp_path))
    result = run_cli(course, "autograde", ASSIGNMENT, other, "--student", *graded, "--timeout", "3",
                     "--jobs", "2", "--force")
    assert set(re.findall(r"\| *\d+/(\d+) \[", result.stderr)) == {str(len(graded) + 2)}, result.stderr[-500:]  # one bar, both
    summaries = {}
    for assignment in (ASSIGNMENT, other):
        with open(course / f"autograde-{assignment}.csv") as f:
            summaries[assignment] = {row["student"]: float(row["score"]) for row in csv.DictReader(f)}
    assert summaries[ASSIGNMENT] == {s: r["score"] for s, r in graded.items()}
    assert summaries[other] == {"ada": 10.0, "blank": 0.0}


def test_a_kernel_started_ahead_is_fresh_and_used_once():
    """A notebook's kernel starts the next one's; what the first notebook did is not there."""
    litter = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import builtins, os\n"
        "open('/tmp/litter', 'w').write('x'); open('litter', 'w').write('x')\n"
        "builtins.planted = 1; os.environ['PLANTED'] = '1'\n"
        "def pid(): return os.getpid()")])
    probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import builtins, os\n"
        "def traces(): return [os.path.exists('/tmp/litter'), os.path.exists('litter'),\n"
        "                      hasattr(builtins, 'planted'), 'PLANTED' in os.environ,\n"
        "                      'torch' in globals() or '_autograder_preload' in globals()]")])
    key = ("cpu", sandbox.Limits())
    with process.NotebookProcess(litter, prestart=True) as first:
        assert first.call("pid", ()).error is None
        spare = process._SPARE[key]
        assert spare is not first._kernel and spare.km.has_kernel
    with process.NotebookProcess(probe) as second:
        assert second._kernel is spare and key not in process._SPARE  # taken, not shared
        assert second.call("traces", ()).value == [False, False, False, False, False]
    assert not spare.km.has_kernel  # shut down with its notebook


def test_a_kernel_started_ahead_still_answers_after_a_long_wait():
    """A spare kernel may wait longer than ZeroMQ's 30 s handshake time before its notebook comes
    (here the first notebook's call hangs until its timeout): the grader still reaches it."""
    hangs = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("def hang():\n    while True: pass")])
    answers = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("def one(): return 1")])
    with process.NotebookProcess(hangs, limits=sandbox.Limits(call_timeout=35), prestart=True) as first:
        assert first.call("hang", ()).kind == "timeout"  # and its kernel restarted on the spare
        assert first.alive
    with process.NotebookProcess(answers) as second:
        assert second.call("one", ()).value == 1


@pytest.fixture(scope="module")
def dask_cluster():
    """A local Dask cluster of two worker processes; none of them outlives it."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        workers = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
        yield cluster, client, workers
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"outlived the cluster: {[p.cmdline() for p in alive]}"


def test_a_dask_cluster_gives_exactly_the_scores_and_reports_of_one_process(course, graded, dask_cluster, tmp_path):
    cluster, client, workers = dask_cluster
    with get_task_stream(client) as tasks:
        again = grade_class(course, ASSIGNMENT, {}, tmp_path, "--student", *graded, "--timeout", "3",
                            "--scheduler", cluster.scheduler_address, "--force")
    assert {s: (r["score"], r["problem"], r["report"]) for s, r in again.items()} == \
           {s: (r["score"], r["problem"], r["report"]) for s, r in graded.items()}
    graded_by = [t["worker"] for t in tasks.data if t["key"].startswith("grade_in_worker")]
    assert len(graded_by) == len(graded) and len(set(graded_by)) == 2, graded_by
    leftover = [p.cmdline() for w in workers for p in w.children(recursive=True)]
    assert not leftover, f"outlived their submissions: {leftover}"  # bwrap, kernels


def test_a_dask_worker_without_the_sandbox_refuses_to_grade(course, graded, dask_cluster, tmp_path):
    cluster, client, _ = dask_cluster
    fake = tmp_path / "bwrap"  # fails as bubblewrap does without unprivileged user namespaces
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)

    def use_bwrap(path: str | None) -> None:
        """Every worker probes the sandbox afresh with this ``bwrap`` (None: the real one)."""
        def there():
            os.environ.pop("AUTOGRADER_BWRAP", None)
            os.environ.update({"AUTOGRADER_BWRAP": path} if path else {})
            sandbox.probe.cache_clear()
        client.run(there)

    use_bwrap(str(fake))
    try:
        result = run_cli(course, "autograde", ASSIGNMENT, "--student", "ada", "--timeout", "3", "--force",
                         "--scheduler", cluster.scheduler_address, check=False)
    finally:
        use_bwrap(None)
    assert result.returncode == 1, result.stdout
    assert "refusing to grade: worker tcp://" in result.stderr and "sysctl" in result.stderr, result.stderr
    journal = (course / f".autograde-{ASSIGNMENT}.jsonl").read_text()
    assert '"ada"' not in journal, journal
