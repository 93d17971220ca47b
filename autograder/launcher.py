"""Start one sandbox's bubblewrap: join the kernel's cgroups, become the sandbox's user, exec.

The grader runs ``python -I -S launcher.py SPEC -- BWRAP ARGS…`` (the standard library only:
no site, no package import, so nothing on the way can be planted). SPEC is JSON:

* ``cgroups``: folders whose ``cgroup.procs`` this process joins first (root-owned files);
* ``bpf``: the seccomp filter (:mod:`autograder.syscall_filter`), handed to bubblewrap as
  ``--seccomp FD``;
* ``user``: ``[uid, gid]`` when the grader runs as root. The kernel must never be host uid 0,
  which may write ``/proc/sys`` (``kernel/core_pattern`` runs a program as root) without any
  capability. The interpreter, the environment and the course package may lie in folders the
  sandbox's user cannot enter (a pyenv build in ``/root``, mode 0700), so while still root this
  process opens each of ``routes``, makes a mount namespace of its own, mounts a small tmpfs on
  ``view`` and binds each route there; bubblewrap's arguments that name a route (or a path
  inside one) are rewritten to the view, which reaches those paths and nothing else of their
  folders. Then it drops every group, its gid and its uid, for good.

Last it execs bubblewrap with an empty environment.
"""

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
BINDS = ("--ro-bind", "--ro-bind-try")  # the bubblewrap options whose next argument is a host path
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source, target, fstype, flags: int, data=None) -> None:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    if _libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source or fstype} on {target}: {os.strerror(errno)}")


def _routed(path: str, routes: list[str], view: str) -> str:
    """``path`` as the view shows it, if it is a route or inside one."""
    for i, route in enumerate(routes):
        if path == route or path.startswith(route.rstrip("/") + "/"):
            return f"{view}/{i}{path[len(route):]}"
    return path


def _view(view: str, routes: list[str], argv: list[str]) -> list[str]:
    """Bind ``routes`` under ``view`` in a mount namespace of this process; ``argv`` rewritten."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "a mount namespace for the launcher")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # opened in this namespace (a bind's source must be), before the tmpfs covers any of them
    fds = [os.open(route, os.O_PATH | os.O_CLOEXEC) for route in routes]
    _mount("tmpfs", view, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k")
    for i, fd in enumerate(fds):
        target = f"{view}/{i}"
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        os.close(fd)
    return [_routed(arg, routes, view) if i == 0 or argv[i - 1] in BINDS else arg
            for i, arg in enumerate(argv)]


def main() -> None:
    spec, argv = json.loads(sys.argv[1]), sys.argv[3:]
    for folder in spec.get("cgroups", []):
        with open(os.path.join(folder, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    if spec.get("bpf"):
        bpf = os.open(spec["bpf"], os.O_RDONLY)
        os.set_inheritable(bpf, True)  # bubblewrap reads it
        argv[1:1] = ["--seccomp", str(bpf)]
    if spec.get("user"):
        uid, gid = spec["user"]
        argv = _view(spec["view"], spec["routes"], argv)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid,) * 3 or os.getresgid() != (gid,) * 3 or os.getgroups():
            raise OSError("could not become the sandbox's user")
    os.execve(argv[0], argv, {})


if __name__ == "__main__":
    main()
