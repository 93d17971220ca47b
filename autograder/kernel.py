"""Entry point of the sandboxed kernel: apply the resource limits, then become an IPython kernel.

:mod:`autograder.process` passes the limits through the environment; bubblewrap provides the
isolation (see the README's "Security" section). A kernel forked by :mod:`autograder.zygote`
has torch imported already; one that bubblewrap starts (under systemd) binds its sockets first
and only then imports torch (every notebook of the course does, and it is most of a kernel's
start-up), so a kernel started ahead of its notebook has that done by the time it is needed.
The import leaves no name in the notebook's namespace.
"""

import logging
import os
import resource

MAX_FILE_BYTES = 256 * 2**20  # results travel through files; nothing larger is read back


def _limit(name: str, value: int) -> None:
    if value:
        resource.setrlimit(name, (value, value))


def main() -> None:
    # with a CUDA build of torch, RLIMIT_AS is 0 (its import alone maps gigabytes of libraries)
    # and RLIMIT_DATA caps the heap instead on cpu
    _limit(resource.RLIMIT_AS, int(os.environ.pop("AUTOGRADER_MEMORY_MB", "0")) * 2**20)
    _limit(resource.RLIMIT_DATA, int(os.environ.pop("AUTOGRADER_DATA_MB", "0")) * 2**20)
    _limit(resource.RLIMIT_CPU, int(os.environ.pop("AUTOGRADER_CPU_SECONDS", "0")))
    # per user namespace on Linux ≥ 5.14, so it counts this sandbox's processes and threads only
    _limit(resource.RLIMIT_NPROC, int(os.environ.pop("AUTOGRADER_PROCESSES", "0")))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _limit(resource.RLIMIT_FSIZE, MAX_FILE_BYTES)
    from ipykernel.kernelapp import launch_new_instance

    # CRITICAL: no connection banner or kernel log on the grader's terminal, for every kernel of a class
    launch_new_instance(exec_lines=["import torch as _autograder_preload", "del _autograder_preload"],
                        log_level=logging.CRITICAL)


if __name__ == "__main__":
    main()
