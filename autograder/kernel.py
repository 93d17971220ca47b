"""Entry point of the sandboxed kernel: apply the limits, then become an IPython kernel.

Kept free of heavy imports (torch, nbclient) so the kernel starts as fast as a plain one;
:mod:`autograder.sandbox` passes the limits through the environment.
"""

import os
import resource

MAX_FILE_BYTES = 256 * 2**20  # results travel through files; nothing larger is read back


def main() -> None:
    memory = int(os.environ.pop("AUTOGRADER_MEMORY_MB", "0")) * 2**20
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(os.environ.pop("AUTOGRADER_CPU_SECONDS", "0"))
    if cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    from ipykernel.kernelapp import launch_new_instance

    launch_new_instance()


if __name__ == "__main__":
    main()
