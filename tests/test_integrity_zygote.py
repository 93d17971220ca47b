"""Attack class: the zygote. Every kernel is forked from one warm interpreter per grading process
(:mod:`autograder.zygote`), so kernels share an origin: none may keep a privilege of it, reach
it, or find a trace of the kernel forked before it. The other ``test_integrity_*`` files run
their attacks on forked kernels too (the first test here makes sure of that)."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest

from autograder import process, sandbox
from autograder.zygote import Zygote

LIMITS = sandbox.Limits()

LITTER = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
    "import os, subprocess\n"
    "open('/tmp/litter', 'w').write('x'); open('litter', 'w').write('x'); open('/dev/shm/litter', 'w').write('x')\n"
    "os.environ['PLANTED'] = '1'\n"
    "lurker = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
    "def lurker_pid(): return lurker.pid")])

PROBE = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
    "import ctypes, os, re, stat\n"
    "def _try(attempt):\n"
    "    try:\n"
    "        attempt()\n"
    "        return 'ok'\n"
    "    except OSError as exc:\n"
    "        return exc.__class__.__name__\n"
    "def _seize_pid_1():\n"
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    if libc.ptrace(0x4206, 1, 0, 0) != 0:  # PTRACE_SEIZE\n"
    "        raise OSError(ctypes.get_errno(), 'ptrace')\n"
    "def _pid_1_environ():\n"
    "    try:\n"
    "        return open('/proc/1/environ', 'rb').read().decode(errors='replace')\n"
    "    except OSError as exc:\n"
    "        return exc.__class__.__name__\n"
    "def seen():\n"
    "    status = open('/proc/self/status').read()\n"
    "    fds = {}\n"
    "    for fd in os.listdir('/proc/self/fd'):\n"
    "        try:\n"
    "            fds[fd] = os.readlink(f'/proc/self/fd/{fd}')\n"
    "        except OSError:\n"
    "            pass\n"
    "    return {'pid': os.getpid(), 'ppid': os.getppid(),\n"
    "            'caps': re.findall(r'Cap(?:Inh|Prm|Eff|Bnd|Amb):\\t(\\w+)', status),\n"
    "            'no_new_privs': re.search(r'NoNewPrivs:\\t(\\d)', status).group(1),\n"
    "            'processes': [int(p) for p in os.listdir('/proc') if p.isdigit()],\n"
    "            'fds': list(fds.values()),\n"
    "            'litter': [os.path.exists(p) for p in ('/tmp/litter', 'litter', '/dev/shm/litter')],\n"
    "            'planted': 'PLANTED' in os.environ, 'cwd': os.getcwd(),\n"
    "            'change the interpreter': _try(lambda: os.chmod('/proc/self/exe', stat.S_IMODE(os.stat('/proc/self/exe').st_mode))),\n"
    "            'trace PID 1': _try(_seize_pid_1), 'write PID 1': _try(lambda: open('/proc/1/mem', 'r+b')),\n"
    "            'PID 1 environment': _pid_1_environ()}")])
CANARY = "AUTOGRADER_TEST_GRADER_SECRET"


@pytest.fixture(scope="module")
def zygote():
    """The zygote of this test process (started by the first kernel), or a failure saying why not."""
    assert sandbox.forks_kernels(LIMITS), "kernels are not forked here: the integrity suite tests bubblewrap's kernels only"
    with process.NotebookProcess(PROBE):
        pass
    return process._ZYGOTES["cpu", LIMITS]


def _pipes(zygote: Zygote) -> set[str]:
    return {f"pipe:[{os.fstat(f.fileno()).st_ino}]" for f in (zygote.process.stdin, zygote.process.stdout)}


def test_a_forked_kernel_keeps_no_privilege_and_nothing_of_the_zygote(zygote, monkeypatch):
    monkeypatch.setenv(CANARY, "hunter2")
    with process.NotebookProcess(PROBE) as kernel:
        seen = kernel.call("seen", ()).value
    assert seen["caps"] == ["0000000000000000"] * 5 and seen["no_new_privs"] == "1"
    assert seen["pid"] == 2 and seen["ppid"] == 0  # its parent is outside its PID namespace
    assert sorted(seen["processes"]) == [1, 2]  # the holder and itself: not the zygote, no classmate
    assert not set(seen["fds"]) & _pipes(zygote), "the kernel holds the zygote's pipes"
    assert seen["cwd"] == sandbox.SCRATCH
    # its /proc/self/exe is the host's interpreter file, seen through a read-only bind
    assert seen["change the interpreter"] in ("PermissionError", "OSError"), seen["change the interpreter"]
    assert seen["trace PID 1"] == "PermissionError" and seen["write PID 1"] == "PermissionError"
    assert CANARY not in seen["PID 1 environment"]


def test_the_next_kernel_finds_no_trace_of_the_previous_one(zygote):
    with process.NotebookProcess(LITTER) as first:
        assert first.call("lurker_pid", ()).error is None
        assert first.cell_errors == []
    with process.NotebookProcess(PROBE) as second:
        seen = second.call("seen", ()).value
    assert seen["litter"] == [False, False, False] and not seen["planted"]
    assert sorted(seen["processes"]) == [1, 2]  # the previous kernel's lurker is not there


def test_no_kernel_or_holder_outlives_its_notebook(zygote):
    with process.NotebookProcess(LITTER) as kernel:
        bwrap = kernel._kernel.km.provisioner.process.pid
    children = open(f"/proc/{zygote.process.pid}/task/{zygote.process.pid}/children").read().split()
    assert children == [], f"the zygote still has {children}"  # the kernel and the lurker it started are gone
    assert not os.path.exists(f"/proc/{bwrap}") or open(f"/proc/{bwrap}/stat").read().split()[2] == "Z"


def test_the_zygote_refuses_a_process_that_is_not_in_a_sandbox(zygote):
    outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(RuntimeError, match="shares this process's"):
            zygote.fork_into(outside.pid, [], sandbox.sandbox_user(), sandbox.SCRATCH, sandbox.CONNECTION)
    finally:
        outside.kill()
        outside.wait()
    with process.NotebookProcess(PROBE) as kernel:  # and goes on serving
        assert kernel.call("seen", ()).value["pid"] == 2


def test_without_the_zygote_bubblewrap_starts_the_kernel(monkeypatch):
    """Under systemd (whose scopes a forked process cannot join) the holder starts the kernel; it
    takes over a second to answer (it imports torch), which the grader waits for."""
    monkeypatch.setattr(sandbox, "forks_kernels", lambda limits: False)
    monkeypatch.setenv(CANARY, "hunter2")
    with process.NotebookProcess(PROBE) as kernel:
        assert kernel._kernel.km.zygote is None
        seen = kernel.call("seen", ()).value
    assert seen["caps"] == ["0000000000000000"] * 5 and seen["litter"] == [False, False, False]
    assert seen["pid"] == 2 and seen["change the interpreter"] == "OSError"  # read-only file system
    assert seen["trace PID 1"] == "PermissionError" and CANARY not in seen["PID 1 environment"]
