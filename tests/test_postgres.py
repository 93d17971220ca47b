"""The README's instructor flow on a PostgreSQL gradebook, against a real server.

The module starts its own PostgreSQL (Debian's ``postgresql`` package; ``.ci/run`` installs it)
from a data directory in /tmp, listening on a Unix socket there only, and stops it at the end
whatever happened. The course names the database in ``nbgrader_config.py`` as the README says;
generate → collect → autograde --jobs 2 → report → feedback → export then run through the
README's commands, and the grades must be in PostgreSQL, not in a ``gradebook.db``. nbgrader's
own commands and the formgrader (a real Jupyter server) read and write the same database.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

from autograder.parallel import ADVISORY_KEY
from conftest import ASSIGNMENT, ROOT, grade_class, make_submission, run_cli
from test_grading import FULL, OFF_BY_ONE

USER, DATABASE = "grader", "gradebook"
# a student who knows where the gradebook's server is: full marks for everyone (the sandbox sees
# neither the host's /tmp nor its network)
TAMPER = """
try:
    import psycopg
    with psycopg.connect(host={sockets!r}, user="grader", dbname="gradebook", autocommit=True) as db:
        db.execute("UPDATE grade SET manual_score = 100")
except Exception:
    pass
"""
STUDENT_SCORES = """
    SELECT sa.student_id, SUM(COALESCE(g.manual_score, g.auto_score, 0) + COALESCE(g.extra_credit, 0))
    FROM submitted_assignment sa
    JOIN assignment a ON a.id = sa.assignment_id
    JOIN submitted_notebook sn ON sn.assignment_id = sa.id
    JOIN grade g ON g.notebook_id = sn.id
    WHERE a.name = %s GROUP BY sa.student_id
"""


def _server_programs() -> Path:
    """The folder of initdb and pg_ctl: Debian's /usr/lib/postgresql/<version>/bin, or the PATH's."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    initdb = debian[-1] if debian else shutil.which("initdb")
    if not initdb:
        pytest.fail("PostgreSQL's server programs (initdb, pg_ctl) are not installed; this test starts "
                    "its own server: `apt-get install postgresql` (Debian; .ci/run does it)")
    return Path(initdb).parent


@pytest.fixture(scope="module")
def sockets() -> Path:
    """A running PostgreSQL server with an empty database ``gradebook`` owned by role ``grader``;
    the folder of its Unix socket. PostgreSQL refuses to run as root: then the ``postgres``
    system user runs it."""
    programs = _server_programs()
    root = os.geteuid() == 0
    # as root, run the server programs as `postgres` (no runuser/su needed), from a folder it may enter
    as_owner = {"user": "postgres", "group": "postgres", "extra_groups": []} if root else {}
    base = Path(tempfile.mkdtemp(prefix="autograder-pg-"))  # not pytest's tmp: `postgres` cannot enter it
    if root:
        shutil.chown(base, "postgres")
    data = base / "data"

    def pg_ctl(*args: str) -> None:
        result = subprocess.run([str(programs / "pg_ctl"), "-D", str(data), "-w", *args], cwd=base,
                                capture_output=True, text=True, timeout=120, **as_owner)
        log = (base / "log").read_text() if (base / "log").exists() else ""
        assert result.returncode == 0, f"pg_ctl {args[-1]} failed:\n{result.stdout}{result.stderr}{log}"

    try:
        result = subprocess.run([str(programs / "initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth=trust", "--no-sync"], cwd=base, capture_output=True, text=True,
                                timeout=300, **as_owner)
        assert result.returncode == 0, f"initdb failed:\n{result.stdout}{result.stderr}"
        pg_ctl("-l", str(base / "log"), "-o", f"-k {base} -c listen_addresses=''", "start")
        with psycopg.connect(host=str(base), user="postgres", dbname="postgres", autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {USER} LOGIN")
            admin.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        yield base
    finally:
        if (data / "postmaster.pid").exists():
            pg_ctl("-m", "fast", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _url(sockets: Path) -> str:
    return f"postgresql+psycopg://{USER}@/{DATABASE}?host={sockets}"


def _connect(sockets: Path) -> psycopg.Connection:
    return psycopg.connect(host=str(sockets), user=USER, dbname=DATABASE, autocommit=True)


@pytest.fixture(scope="module")
def course(sockets, tmp_path_factory) -> Path:
    """A Chapter-1 course whose nbgrader_config.py names the PostgreSQL database (README, Database)."""
    course = tmp_path_factory.mktemp("course")
    config = (ROOT / "nbgrader_config.py").read_text()
    (course / "nbgrader_config.py").write_text(f"{config}\nc.CourseDirectory.db_url = {_url(sockets)!r}\n")
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, course / "solutions" / ASSIGNMENT)
    return course


@pytest.fixture(scope="module")
def flow(course: Path, sockets: Path, tmp_path_factory) -> dict[str, dict]:
    """The README's whole instructor flow on three students (one also tries to rewrite the
    gradebook); the autograde summary's rows."""
    run_cli(course, "generate", ASSIGNMENT)
    submissions = {"correct": make_submission(course),
                   "offbyone": make_submission(course, replace={"one_hot": OFF_BY_ONE},
                                                   extra_cells=[TAMPER.format(sockets=str(sockets))]),
                   "blank": make_submission(course, solved=False)}
    graded = grade_class(course, ASSIGNMENT, submissions, tmp_path_factory.mktemp("downloads"), "--jobs", "2")
    run_cli(course, "report", ASSIGNMENT)
    run_cli(course, "feedback", ASSIGNMENT)
    run_cli(course, "export", "--to", "grades.csv")
    return graded


def test_instructor_flow_keeps_the_grades_in_postgresql(course, sockets, flow):
    with open(course / "grades.csv") as f:
        exported = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f) if r["assignment"] == ASSIGNMENT}
    assert exported["correct"] == FULL and exported["blank"] == 0 and 0 < exported["offbyone"] < FULL, exported
    assert exported == {s: r["score"] for s, r in flow.items()}
    with _connect(sockets) as db:
        stored = dict(db.execute(STUDENT_SCORES, (ASSIGNMENT,)).fetchall())
    assert stored == exported
    assert not (course / "gradebook.db").exists() and not (course / ".gradebook.lock").exists()
    with open(course / f"report-{ASSIGNMENT}.csv") as f:
        assert {r["student"]: float(r["score"]) for r in csv.DictReader(f)} == exported
    assert all((course / "feedback" / s / ASSIGNMENT / "tokens.html").is_file() for s in exported)


def test_graders_on_other_connections_wait_for_the_advisory_lock(sockets, tmp_path):
    """Another machine's grader is another connection: while it holds the lock, a grader's
    gradebook waits for it."""
    opener = ("import sys; from autograder import parallel; from nbgrader.api import Gradebook\n"
              "parallel.serialise_gradebook(sys.argv[2])\n"
              "with Gradebook(sys.argv[1]) as gb:\n"
              "    print(gb.course_id)")
    with _connect(sockets) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        grader = subprocess.Popen([sys.executable, "-c", opener, _url(sockets), str(tmp_path / ".gradebook.lock")],
                                  stdout=subprocess.PIPE, text=True)
        waiting = 0
        for _ in range(300):
            waiting = other.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")\
                .fetchone()[0]
            if waiting:
                break
            time.sleep(0.1)
        assert waiting == 1 and grader.poll() is None
        other.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_KEY,))
    out, _ = grader.communicate(timeout=120)
    assert grader.returncode == 0 and out.strip() == "default_course", out
    assert not (tmp_path / ".gradebook.lock").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nbgrader_and_the_formgrader_use_the_same_database(course, sockets, flow):
    """A TA gives the blank notebook a point in the formgrader; nbgrader's own export sees it."""
    port, token = _free_port(), "test-token"
    server = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                               f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
                               f"--ServerApp.root_dir={course}"], cwd=course,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def api(path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body else None
        request = urllib.request.Request(f"http://127.0.0.1:{port}/formgrader/api/{path}", data=data,
                                         method="PUT" if body else "GET", headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    try:
        for _ in range(600):
            try:
                submissions = api(f"submissions/{ASSIGNMENT}")
                break
            except urllib.error.HTTPError:
                raise
            except OSError:  # not listening yet
                time.sleep(0.1)
        else:
            pytest.fail("the Jupyter server with the formgrader did not answer within a minute")
        assert {s["student"]: s["score"] for s in submissions} == {s: r["score"] for s, r in flow.items()}
        with _connect(sockets) as db:
            (grade_id,) = db.execute("SELECT g.id FROM grade g JOIN submitted_notebook sn ON g.notebook_id = sn.id "
                                     "JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
                                     "WHERE sa.student_id = 'blank' ORDER BY g.id LIMIT 1").fetchone()
        assert api(f"grade/{grade_id}", {"manual_score": 1.0, "extra_credit": None})["manual_score"] == 1.0
    finally:
        server.terminate()
        server.wait(timeout=60)
    result = subprocess.run([sys.executable, "-m", "nbgrader", "export", "--to", "nbgrader.csv"], cwd=course,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with open(course / "nbgrader.csv") as f:
        exported = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f) if r["assignment"] == ASSIGNMENT}
    assert exported == {**{s: r["score"] for s, r in flow.items()}, "blank": 1.0}
