"""Entry point of the sandboxed kernel: apply the limits, hide files, then become an IPython kernel.

Kept free of heavy imports (torch, nbclient) so the kernel starts as fast as a plain one;
:mod:`autograder.sandbox` passes the limits through the environment. When the sandbox runs
the kernel inside fresh Linux namespaces (``unshare``: user, mount, network, PID), this
module is root of its own mount namespace and lays an empty tmpfs over every folder in
``AUTOGRADER_HIDE`` (``/dev/null`` over files), so student code cannot read the reference
notebooks, other submissions or the gradebook, and cannot write to them.
"""

import os
import resource
import signal
import subprocess

MAX_FILE_BYTES = 256 * 2**20  # results travel through files; nothing larger is read back


def hide(paths: list[str]) -> None:
    """Cover each path in this mount namespace; fail loudly rather than grade unprotected."""
    for path in paths:
        if os.path.isdir(path):
            command = ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0555", "tmpfs", path]
        elif os.path.exists(path):
            command = ["mount", "--bind", "/dev/null", path]
        else:
            continue
        subprocess.run(command, check=True, capture_output=True)


def run_below_init() -> None:
    """In a new PID namespace this process is PID 1, which ignores signals it sends itself (a
    student's ``os.kill(os.getpid(), SIGKILL)`` would do nothing). Fork: the child goes on to
    become the kernel, this process stays as a minimal init that forwards signals, reaps
    orphans and exits with the kernel's status."""
    child = os.fork()
    if child == 0:
        os.environ["JPY_PARENT_PID"] = "1"  # ipykernel would take parent PID 1 as "parent gone"
        return
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda number, frame: os.kill(child, number))
    while True:
        pid, status = os.wait()
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


def main() -> None:
    hidden = os.environ.pop("AUTOGRADER_HIDE", "")
    if hidden:
        hide(hidden.split(os.pathsep))
    memory = int(os.environ.pop("AUTOGRADER_MEMORY_MB", "0")) * 2**20
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(os.environ.pop("AUTOGRADER_CPU_SECONDS", "0"))
    if cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    if os.getpid() == 1:
        run_below_init()
    from ipykernel.kernelapp import launch_new_instance

    launch_new_instance()


if __name__ == "__main__":
    main()
