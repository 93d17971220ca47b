"""Attack class: exhausting resources (disk, processes, memory, time) and outliving the grader.

Each attacker's notebook is correct and runs one bomb in a cell before ``one_hot``; ``one_hot``
is kept only when the bomb met its limit, so an attacker scores full marks exactly when the
defence held (and grading went on). Every bomb is bounded, so a missing defence fails the test
without taking the machine down. A classmate graded in the same run must score full marks.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from conftest import ASSIGNMENT, grade_class, make_submission, reference_code

FULL = 10.0
TOKEN = uuid.uuid4().hex[:10]
DISK_BOMB = f'''
import errno, os
def _fill(prefix, limit_mb=2048):  # bounded: 2 GB at most
    written = 0
    try:
        for k in range(limit_mb // 64):
            with open(f"{{prefix}}-{{k}}", "wb") as f:
                for _ in range(64):
                    f.write(b"\\0" * 2**20)
                    written += 1
    except OSError as exc:
        return written, exc.errno
    return written, None
TMP = _fill("/tmp/autograder-bomb-{TOKEN}")  # left full
HERE = _fill("bomb-{TOKEN}")
for name in os.listdir("."):
    if name.startswith("bomb-"):
        os.remove(name)
LIMITED = TMP[1] == errno.ENOSPC and HERE[1] == errno.ENOSPC
'''
FORK_BOMB = '''
import errno, os, time
_children, _errno = [], None
for _ in range(1000):  # bounded: 1000 sleeping processes at most
    try:
        pid = os.fork()
    except OSError as exc:
        _errno = exc.errno
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    _children.append(pid)
for pid in _children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
LIMITED = _errno == errno.EAGAIN
'''
MEMORY_BOMB = '''
_hoard, LIMITED = [], True
try:
    for _ in range(20):  # bounded: 5 GB at most, just above the 4 GB limit
        _hoard.append(b"\\1" * (256 * 2**20))
    LIMITED = False
except MemoryError:
    pass
del _hoard
'''  # a cgroup may kill the kernel instead: the cell is then skipped on restart, LIMITED stays unset
RUNAWAY = f'''
import signal, subprocess, sys
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import signal, time\\n"
                  "for s in (1, 2, 15): signal.signal(s, signal.SIG_IGN)\\n"
                  "time.sleep(900)  # autograder-runaway-{TOKEN}"], start_new_session=True)
while True:
    pass
'''
PRINTER = """
for _ in range(64):  # 64 MB of output
    print("y" * 2**20)
"""
KEEP_IF_LIMITED = "\nif not globals().get('LIMITED', True):\n    del one_hot  # the bomb was not stopped\n"


def _runaways() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"autograder-runaway-{TOKEN}".encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory):
    one_hot = reference_code(course)["one_hot"] + KEEP_IF_LIMITED
    bombs = {"diskbomb": DISK_BOMB, "forkbomb": FORK_BOMB, "memorybomb": MEMORY_BOMB}
    submissions = {name: make_submission(course, replace={"one_hot": one_hot}, extra_cells=[bomb])
                   for name, bomb in bombs.items()}
    submissions["runaway"] = make_submission(course, extra_cells=[RUNAWAY])
    submissions["printer"] = make_submission(course, extra_cells=[PRINTER])
    submissions["classmate"] = make_submission(course)
    try:
        summary = grade_class(course, ASSIGNMENT, submissions, tmp_path_factory.mktemp("downloads"),
                              "--timeout", "10")
        survivors = _runaways()
        planted = list(Path("/tmp").glob(f"autograder-bomb-{TOKEN}-*"))
    finally:
        for pid in _runaways():
            os.kill(pid, 9)
        for path in Path("/tmp").glob(f"autograder-bomb-{TOKEN}-*"):
            path.unlink()
    return summary, survivors, planted


@pytest.mark.parametrize("student", ["diskbomb", "forkbomb", "memorybomb"])
def test_a_bomb_meets_its_limit_and_grading_goes_on(graded, student):
    summary, *_ = graded
    assert summary[student]["score"] == FULL, summary[student]["report"]


def test_the_disk_bomb_stayed_in_the_sandbox(graded):
    _, _, planted = graded
    assert planted == []


def test_an_endless_cell_that_ignores_signals_is_killed_with_everything_it_started(graded):
    summary, survivors, _ = graded
    assert survivors == []
    assert summary["runaway"]["score"] == FULL, summary["runaway"]["report"]


def test_a_flood_of_output_is_cut_and_grading_goes_on(graded, course):
    summary, *_ = graded
    assert summary["printer"]["score"] == FULL, summary["printer"]["report"]
    graded_notebook = course / "autograded" / "printer" / ASSIGNMENT / "tokens.ipynb"
    assert graded_notebook.stat().st_size < 4 * 2**20
    assert "the rest was left out" in graded_notebook.read_text()


def test_a_classmate_graded_in_the_same_run_scores_as_alone(graded):
    summary, *_ = graded
    assert summary["classmate"]["score"] == FULL, summary["classmate"]["report"]
