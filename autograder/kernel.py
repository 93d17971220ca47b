"""Entry point of the sandboxed kernel: apply the resource limits, then become an IPython kernel.

Kept free of heavy imports (torch, nbclient) so the kernel starts as fast as a plain one;
:mod:`autograder.sandbox` passes the limits through the environment and runs this module
inside bubblewrap, which provides the isolation (see the README's "Security" section).
"""

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

    launch_new_instance()


if __name__ == "__main__":
    main()
