"""Attack class: the host itself, from a sandboxed kernel: its kernel settings, its keyring, its CPUs.

Grading as root, a kernel that is host uid 0 may write most of ``/proc/sys`` without any
capability (a pipe in ``kernel/core_pattern`` runs a program as root: a full escape). So a
kernel is never host root (as root the grader runs it as an unprivileged user), ``/proc/sys``
and the other global ``/proc`` files are read-only, and a seccomp filter refuses the keyring and
the other calls a notebook never needs (:data:`autograder.sandbox.CONFINEMENT_CELL` tries them).
Each is checked on forked and bubblewrap-started kernels, with the grader as root and as an
ordinary user. And the CPU: one student's 32 busy processes must leave a classmate graded
beside it its core.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import nbformat
import pytest

from autograder import process, sandbox
from conftest import ROOT

ORDINARY = 4242  # an ordinary user's uid and gid (not nobody's: 65534 is also what unmapped ids look like)


def _notebook(*sources: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def _host_uids(process: process.NotebookProcess) -> dict[int, int]:
    """Host PID → host uid of every process in the kernel's sandbox, read from outside it."""
    holder = sandbox.child_pid(process._kernel.km.provisioner.process.pid)
    namespace = os.readlink(f"/proc/{holder}/ns/pid")
    uids = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns/pid") == namespace:
                uids[int(entry.name)] = int(re.search(r"^Uid:\s+(\d+)", (entry / "status").read_text(), re.M).group(1))
        except OSError:
            pass  # exited meanwhile
    return uids


@pytest.fixture(params=["forked", "bubblewrap-started"])
def kernels(request, monkeypatch):
    if request.param == "forked":
        assert sandbox.forks_kernels(sandbox.Limits()), "kernels are not forked here"
    else:
        monkeypatch.setattr(sandbox, "forks_kernels", lambda limits: False)
    return request.param


def test_a_kernel_is_never_host_root_and_cannot_change_the_hosts_kernel(kernels):
    with process.NotebookProcess(_notebook(sandbox.CONFINEMENT_CELL)) as kernel:
        seen = kernel.call("confinement", ())
        uids = _host_uids(kernel)
    assert seen.error is None, seen.error
    assert sandbox.confinement_problems(seen.value) == [], seen.value
    assert len(uids) >= 2 and 0 not in uids.values(), uids  # the holder and the kernel at least
    if os.geteuid() == 0:
        assert set(uids.values()) == {sandbox.sandbox_user()[0]}


def test_the_grader_as_an_ordinary_user_gets_the_same_sandbox(tmp_path):
    """The grader runs as an ordinary user, who (as on our machines) cannot enter root's home where the
    interpreter may live: a mount namespace shows it just the interpreter, the environment and
    the repository, as an instructor's own machine would."""
    home = Path(tempfile.mkdtemp(prefix="autograder-ordinary-"))
    home.chmod(0o777)
    script = home / "grade.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, nbformat
        from autograder import process, sandbox
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell({sandbox.CONFINEMENT_CELL!r})])
        seen = {{}}
        for how in ("forked", "bubblewrap-started"):
            if how == "bubblewrap-started":
                sandbox.forks_kernels = lambda limits: False
            with process.NotebookProcess(nb) as kernel:
                result = kernel.call("confinement", ())
                socket = os.stat(f"/proc/self/fd/{{kernel._kernel.km.root_fd}}{{sandbox.SOCKETS}}/ipc-{{kernel._kernel.km.shell_port}}")
                seen[how] = [result.value, result.error, socket.st_uid]
        print(json.dumps({{"uid": os.getuid(), "problem": sandbox.sandbox_problem(), "seen": seen}}))
    """))
    needed = [sys.base_prefix, sys.prefix, str(ROOT), str(home)]
    hidden = sorted({str(a) for p in needed for a in Path(p).parents if not os.stat(a).st_mode & 0o001})
    hidden = [h for h in hidden if not any(h.startswith(o + "/") for o in hidden)]
    outer = [sandbox.bwrap_path(), "--bind", "/", "/", "--dev-bind", "/dev", "/dev"]
    below = sorted({str(a) for p in needed for a in Path(p).parents if any(str(a).startswith(h + "/") for h in hidden)})
    outer += [arg for h in hidden for arg in ("--tmpfs", h)]
    outer += [arg for d in below for arg in ("--perms", "0755", "--dir", d)]  # traversable, as on most machines
    outer += [arg for p in needed for arg in ("--bind", p, p)]
    command = [*outer, "--", "setpriv", f"--reuid={ORDINARY}", f"--regid={ORDINARY}",
               "--clear-groups", sys.executable, str(script)]
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "TMPDIR": "/tmp"}
    if os.geteuid() != 0:  # already an ordinary user
        command, env = [sys.executable, str(script)], {**os.environ, **env}
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=home)
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["problem"] is None and report["uid"] != 0
    for how, (seen, error, socket_uid) in report["seen"].items():
        assert error is None, (how, error)
        assert sandbox.confinement_problems(seen) == [], (how, seen)
        assert socket_uid == report["uid"], how  # the kernel runs as the grading user, not root


def test_doctor_reports_the_sandboxs_host_uid_and_fails_when_it_is_root():
    doctor = [sys.executable, "-m", "autograder", "doctor"]
    ok = subprocess.run(doctor, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    expected = sandbox.sandbox_user()[0] if os.geteuid() == 0 else os.geteuid()
    assert f"the sandbox's user: host uid {expected}" in ok.stdout
    assert "seccomp filter and read-only /proc/sys: ok" in ok.stdout
    if os.geteuid() == 0:  # a grader that kept root's uid for its kernels is refused
        as_root = [sys.executable, "-c", "import sys; from autograder import cli, sandbox; "
                   "sandbox.sandbox_user = lambda: None; cli.main(['doctor'])"]
        refused = subprocess.run(as_root, capture_output=True, text=True, timeout=600)
        assert refused.returncode == 1, refused.stdout
        assert "the sandbox's user: host uid 0" in refused.stdout and "host root" in refused.stdout


BUSY = """
import os, time
for _ in range(32):  # bounded: 32 processes busy for 30 s at most, each in a session of its own
    if os.fork() == 0:
        os.setsid()  # (the scheduler's autogroups would otherwise share out the CPU by session)
        end = time.time() + 30
        while time.time() < end:
            pass
        os._exit(0)
"""
SHARE = """
import time
def share():
    wall, cpu = time.time(), time.process_time()
    while time.time() - wall < 3:
        pass
    return (time.process_time() - cpu) / (time.time() - wall)
"""
RUN = """
import sys, nbformat
from autograder import process
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(sys.argv[1])])
with process.NotebookProcess(nb) as kernel:
    print("running", flush=True)
    for _ in sys.stdin:  # a line: measure a share of the CPU
        print(kernel.call("share", ()).value, flush=True)
"""


def test_a_kernels_busy_processes_leave_a_classmate_its_core():
    """The classmate's share of a core alone, then beside the attacker: the second must stay near
    the first (without the cpu controller it drops to a fraction: the attacker has 32 sessions)."""
    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    with subprocess.Popen([sys.executable, "-c", RUN, SHARE], **pipes) as classmate:
        assert classmate.stdout.readline() == "running\n"
        classmate.stdin.write("alone\n")
        alone = float(classmate.stdout.readline())
        with subprocess.Popen([sys.executable, "-c", RUN, BUSY], **pipes) as attacker:
            assert attacker.stdout.readline() == "running\n"
            classmate.stdin.write("beside\n")
            beside = float(classmate.stdout.readline())
            attacker.stdin.close()
        classmate.stdin.close()
    assert beside > 0.6 * alone, f"the classmate got {beside:.2f} of a core beside the attacker, {alone:.2f} alone"


def test_on_cgroup_v2_without_systemd_a_kernel_gets_its_weight_memory_and_processes(tmp_path, monkeypatch):
    """This machine has cgroup v1, so a folder stands in for a delegated v2 one (AUTOGRADER_CGROUP):
    what the grader writes there is what the kernel's cgroup holds it to."""
    delegated = tmp_path / "autograder"
    delegated.mkdir()
    (delegated / "cgroup.subtree_control").write_text("cpu memory pids\n")
    monkeypatch.setenv("AUTOGRADER_CGROUP", str(delegated))
    monkeypatch.setattr(sandbox, "_v1_cgroup_bases", dict)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)  # no systemd-run
    for cached in (sandbox._v2_cgroup_base, sandbox.resource_control):
        cached.cache_clear()
    try:
        assert sandbox.resource_control() == "cgroupfs"
        limits = sandbox.Limits(memory_mb=1024, processes=64)
        cgroup = sandbox.Cgroup(limits)
        (folder,) = cgroup.folders
        assert Path(folder).parent == delegated
        written = {f.name: f.read_text() for f in Path(folder).iterdir()}
        assert written == {"pids.max": "64", "memory.max": str(2**30), "cpu.weight": str(sandbox.CPU_WEIGHT)}
    finally:
        for cached in (sandbox._v2_cgroup_base, sandbox.resource_control):
            cached.cache_clear()
