"""Kernels forked from an interpreter that has already imported torch, each in a fresh sandbox.

Every notebook of the course imports torch, and a fresh interpreter spends about 1.5 s of CPU
on it: most of what grading one submission costs. A zygote is a clean interpreter that the
grading process starts with the kernels' environment; it imports torch and ipykernel once,
never runs notebook code, and forks one kernel per notebook.

The sandbox is still bubblewrap's, made fresh for every kernel (:func:`autograder.sandbox.bwrap_command`
with ``--as-pid-1``): bubblewrap builds it around a holder (:data:`HOLD`), which becomes PID 1
of the sandbox and writes ``ready`` once bubblewrap's setup is complete. The zygote's child
then enters it before anything of the notebook runs (:func:`_enter`):

1. it joins the holder's cgroups (the kernel's memory and process limits) and checks that its
   cgroups are now exactly the holder's;
2. it enters the parent of the holder's user namespace, the holder's mount, PID, network, IPC,
   UTS and cgroup namespaces, and last the holder's own user namespace, the one in which
   bubblewrap's ``--disable-userns`` forbids new user namespaces; it refuses if any of them is
   its own (a holder that had not entered its sandbox), and checks that its root is the holder's;
3. a zygote run by root has the child become the sandbox's user (:func:`autograder.sandbox.sandbox_user`,
   the holder's own; no groups), so that no kernel is host root; it drops every capability
   (bounding, ambient, effective, permitted, inheritable), sets ``no_new_privs``, as bubblewrap
   does, and loads the seccomp filter bubblewrap gave the holder (:mod:`autograder.syscall_filter`);
4. it forks the kernel, PID 2 of the sandbox, which starts a new session, keeps no descriptor
   of the zygote's, and becomes :mod:`autograder.kernel`; the child itself exits.

The kernel thus runs in the same namespaces, mounts, cgroups and limits as a kernel that
bubblewrap started itself, with no privilege the zygote had. Two things it keeps from the
zygote are the host's: its parent, outside the sandbox and invisible from it, and its
``/proc/self/exe``, the host's interpreter rather than the sandbox's read-only view of it; so a
zygote run by root re-executes itself from a read-only bind of the interpreter in a mount
namespace of its own, elsewhere kernels are forked only where the grading user does not own
the interpreter, and each kernel checks this before running anything. Its memory is the
zygote's, copied on write: the imported modules, its own request (the holder's host PID and
cgroup folder names), and what a fork shares by nature (hash seed, address layout); nothing of
a notebook, a grader or another student was ever in the zygote, which only reads the grader's
requests. The holder is not dumpable, so the kernel cannot trace it; it exits when the kernel
does, so the grader sees a dead kernel as before, and killing the sandbox (bubblewrap, then its
PID 1) kills the kernel and all it started.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import signal
import subprocess
import sys

from . import syscall_filter

# PID 1 of every sandbox until its kernel (PID 2) exits; reaps what the kernel orphans, cannot
# be traced. With a command (kernels that bubblewrap starts) it starts that as the kernel;
# without, it writes READY and waits for the zygote's kernel.
READY = "/run/kernel/ready"
HOLD = ("import ctypes, os, select, signal, sys, time\n"
        "ctypes.CDLL(None).prctl(4, 0)\n"  # PR_SET_DUMPABLE 0: the kernel cannot ptrace its PID 1
        "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
        "if sys.argv[1:]:\n"
        "    os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, setsigdef=[signal.SIGCHLD])\n"
        "else:\n"
        f"    open({READY!r}, 'x').close()\n"
        "while True:\n"
        "    try:\n"
        "        kernel = os.pidfd_open(2)\n"
        "        break\n"
        "    except ProcessLookupError:\n"
        "        time.sleep(0.005)\n"
        "select.select([kernel], [], [])\n")

_CLONE = {"user": 0x10000000, "mnt": 0x00020000, "pid": 0x20000000, "net": 0x40000000,
          "ipc": 0x08000000, "uts": 0x04000000, "cgroup": 0x02000000}
_NS_GET_PARENT = 0xB702
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 36, 38, 47
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when ``parent``, the process that started it, dies. A
    parent already dead is not seen as PID 1 where a subreaper adopted us, hence its pid."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def _same(fd: int, path: str) -> bool:
    a, b = os.fstat(fd), os.stat(path)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _drop_privileges(last_cap: int, user: list[int] | None) -> None:
    for cap in range(last_cap + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "dropping the bounding set")
    _check(_libc.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0), "clearing ambient capabilities")  # CLEAR_ALL
    if user is not None:  # still CAP_SETUID/SETGID in the sandbox's user namespace
        uid, gid = user
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    _check(_libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "dropping capabilities")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "setting no_new_privs")
    syscall_filter.load()


def _host_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of process ``pid``, as this process's user namespace sees them."""
    status = open(f"/proc/{pid}/status").read()
    return tuple(int(line.split()[1]) for line in status.splitlines() if line.startswith(("Uid:", "Gid:")))


def _enter(holder: int, cgroups: list[str], user: list[int] | None) -> None:
    """Move this process into the sandbox whose PID 1 is ``holder`` (a host PID), unprivileged:
    as ``user`` ([uid, gid], the holder's), when given."""
    ns = {name: os.open(f"/proc/{holder}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in _CLONE}
    root = os.open(f"/proc/{holder}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())
    for name, fd in ns.items():
        if name != "cgroup" and _same(fd, f"/proc/self/ns/{name}"):  # cgroup: unshared where possible
            raise OSError(f"the holder shares this process's {name} namespace")
    if user is not None:
        if list(_host_ids(holder)) != list(user):
            raise OSError("the holder does not run as the sandbox's user")
        os.setgroups([])  # as root, in the host's user namespace: none of root's groups goes along
    outer = fcntl.ioctl(ns["user"], _NS_GET_PARENT)
    if _same(outer, "/proc/self/ns/user"):
        raise OSError("the holder's user namespace is not bubblewrap's inner one")
    for folder in cgroups:
        with open(os.path.join(folder, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    if open("/proc/self/cgroup").read() != open(f"/proc/{holder}/cgroup").read():
        raise OSError("could not join the holder's cgroups")
    _check(_libc.setns(outer, _CLONE["user"]), "entering the sandbox's user namespace")
    for name in ("mnt", "pid", "net", "ipc", "uts", "cgroup"):
        _check(_libc.setns(ns[name], _CLONE[name]), f"entering the sandbox's {name} namespace")
    _check(_libc.setns(ns["user"], _CLONE["user"]), "entering the sandbox's inner user namespace")
    if not _same(root, "/"):
        raise OSError("the root is not the sandbox's")
    for fd in [*ns.values(), outer, root]:
        os.close(fd)
    _drop_privileges(last_cap, user)


def _interpreter_is_safe() -> bool:
    """Whether this process's ``/proc/self/exe`` (the host's interpreter, not the sandbox's view
    of it) is on a read-only mount or not this user's to change."""
    return bool(os.statvfs("/proc/self/exe").f_flag & os.ST_RDONLY) or os.stat("/proc/self/exe").st_uid != os.getuid()


def _read_only_interpreter() -> None:
    """As root: re-execute the zygote from a read-only bind of its interpreter, in a mount
    namespace of its own, so that no kernel can change the host's interpreter through
    ``/proc/self/exe``."""
    exe = os.path.realpath("/proc/self/exe").encode()
    _check(_libc.unshare(_CLONE["mnt"]), "a mount namespace for the zygote")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making its mounts private")
    _check(_libc.mount(exe, exe, None, MS_BIND, None), "binding the interpreter")
    _check(_libc.mount(None, exe, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None), "making it read-only")
    os.execv(sys.executable, [sys.executable, "-m", "autograder.zygote", *sys.argv[1:]])  # the venv's link to it


def _become_kernel(scratch: str, connection: str) -> None:
    """In the forked kernel: a session and descriptors of its own, then :mod:`autograder.kernel`."""
    code = 1
    try:
        os.setsid()
        if os.getpid() != 2:  # the holder waits for PID 2
            raise OSError(f"the kernel is PID {os.getpid()} of its sandbox")
        status = open("/proc/self/status").read()
        if any(f"{field}:\t0000000000000000" not in status for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")) \
                or "NoNewPrivs:\t1" not in status or "Seccomp:\t2" not in status:
            raise OSError("a privilege is left")
        if not _interpreter_is_safe():
            raise OSError("the kernel could change the host's interpreter")
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir(scratch)
        sys.path[0] = scratch  # as `python -m autograder.kernel` run there would have it
        sys.argv = ["autograder.kernel", "-f", connection]
        from . import kernel

        kernel.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os._exit(code)


def serve() -> None:
    """The zygote: import, then fork a kernel for each request on stdin; answer each on stdout.
    Its one argument: the grader's pid."""
    die_with_parent(int(sys.argv[1]))
    if not _interpreter_is_safe():
        _read_only_interpreter()  # as root; elsewhere the grader forks no kernel (sandbox.forks_kernels)
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # the kernels, once their parent exits
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # ...are reaped without a wait
    import ipykernel.kernelapp  # noqa: F401
    import torch  # noqa: F401

    syscall_filter.build()  # libseccomp loaded before any request

    for line in sys.stdin.buffer:
        holder, cgroups, user, scratch, connection = json.loads(line)
        if os.fork():
            continue
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            _enter(holder, cgroups, user)
            if os.fork() == 0:
                _become_kernel(scratch, connection)
            answer = "ok"
        except Exception as exc:  # noqa: BLE001 (told to the grader, which refuses the kernel)
            answer = f"{exc.__class__.__name__}: {exc}"
        os.write(1, answer.encode() + b"\n")
        os._exit(0)


class Zygote:
    """The grader's handle on one zygote process (started with ``env``, the kernels' environment)."""

    def __init__(self, env: dict[str, str]):
        self.process = subprocess.Popen([sys.executable, "-m", "autograder.zygote", str(os.getpid())], env=env,
                                        cwd="/", stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def fork_into(self, holder: int, cgroups: list[str], user: tuple[int, int] | None, scratch: str,
                  connection: str, timeout: float = 120) -> None:
        """Fork a kernel into the sandbox whose PID 1 is ``holder``, as ``user`` (uid, gid) where
        given; raises when it could not."""
        try:
            self.process.stdin.write(json.dumps([holder, cgroups, user, scratch, connection]).encode() + b"\n")
            self.process.stdin.flush()
            ready, _, _ = select.select([self.process.stdout], [], [], timeout)
            answer = self.process.stdout.readline().decode().strip() if ready else "no answer"
        except BrokenPipeError:
            answer = ""
        if answer != "ok":
            raise RuntimeError(f"could not start a kernel in its sandbox ({answer or 'the zygote exited'})")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except BrokenPipeError:
                pass


if __name__ == "__main__":
    serve()
