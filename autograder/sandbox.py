"""Run a notebook in its own limited kernel process and call its functions from outside.

The grader never imports student code. A :class:`NotebookProcess` starts an IPython kernel
through :mod:`autograder.kernel` (memory, CPU-time, file-size and core-dump limits, a
scratch working directory, a scrubbed environment), executes the notebook's code cells, and
then answers :meth:`NotebookProcess.call`: arguments go in through ``torch.save``, the result
comes back through ``torch.load(weights_only=True)``, so nothing but tensors and plain Python
data crosses the boundary. Whatever a student patches inside their kernel (``torch.allclose``,
the check helpers, ``torch.save`` itself) can only change the values they hand back, never the
comparison, which the grader makes in its own process.

Infinite loops hit a per-cell timeout; a kernel that stops answering or dies is restarted and
the notebook re-run without the cell that hung, so one bad cell costs only what depends on it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import torch
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from .kernel import MAX_FILE_BYTES

KERNEL_NAME = "autograder-sandbox"
log = logging.getLogger(__name__)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Variables the kernel keeps from the grader's environment; everything else (tokens, keys) is dropped.
_KEPT_ENV = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES",
             "CUDA_HOME", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Limits:
    """What one notebook process may use and see. ``memory_mb`` (an address-space limit) is
    skipped with a CUDA build of torch, on any device: importing it maps gigabytes of address
    space it never uses, so the limit would kill even the reference on a GPU machine.
    ``hidden`` paths (reference notebooks, submissions, gradebook) are covered inside the
    kernel when namespaces are available."""

    cell_timeout: float = 60.0
    call_timeout: float = 30.0
    memory_mb: int = 4096
    cpu_seconds: int = 900
    max_restarts: int = 8
    hidden: tuple[str, ...] = ()


# New user, mount, network and PID namespaces: the kernel sees its own /proc (not the grader's
# processes), has no network, and may cover files without privileges. ZMQ's ipc transport uses
# socket files, which cross network namespaces.
_UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "--net", "--pid", "--fork",
            "--mount-proc", "--kill-child", "--"]


@functools.cache
def isolation_available(device_type: str = "cpu") -> bool:
    """Whether kernels can run in fresh namespaces here (and still reach the GPU on CUDA)."""
    probe = "import torch; torch.zeros(1, device='cuda')" if device_type == "cuda" else "pass"
    with tempfile.TemporaryDirectory() as folder:
        hide = f"from autograder.kernel import hide; hide([{folder!r}]); {probe}"
        try:
            result = subprocess.run([*_UNSHARE, sys.executable, "-c", hide], capture_output=True, timeout=120)
            problem = result.stderr.decode(errors="replace").strip() if result.returncode else None
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = str(exc)
    if problem is not None:
        log.warning("student kernels run WITHOUT namespace isolation (unshare failed: %s): student "
                    "code can read any file this user can", problem)
    return problem is None


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
    return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".rstrip(": ") + where


class NotebookProcess:
    """A notebook executed in a limited kernel; use as a context manager."""

    def __init__(self, nb: nbformat.NotebookNode, *, device: str = "cpu",
                 limits: Limits = Limits(), skip_cell=lambda cell: False):
        self.nb = nb
        self.device = device
        self.limits = limits
        self.skip_cell = skip_cell
        self._cell_problems: dict[int, str] = {}
        self._hung: set[int] = set()  # cells that timed out: not run again after a restart
        self._restarts = 0
        self._client: NotebookClient | None = None
        self._context = None
        self._tmp = Path(tempfile.mkdtemp(prefix="autograder-"))

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "NotebookProcess":
        self._start()
        self._run_cells()
        return self

    def __exit__(self, *exc) -> None:
        self._stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _start(self) -> None:
        kernels = self._tmp / "kernels" / KERNEL_NAME
        kernels.mkdir(parents=True, exist_ok=True)
        env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
        work = self._tmp / "work"
        work.mkdir(exist_ok=True)
        isolated = bool(self.limits.hidden) and isolation_available(self.device.split(":")[0])
        env.update(HOME=str(work), MPLBACKEND="Agg", PYTHONUNBUFFERED="1",
                   AUTOGRADER_HIDE=os.pathsep.join(self.limits.hidden) if isolated else "",
                   AUTOGRADER_MEMORY_MB="0" if torch.version.cuda else str(self.limits.memory_mb),
                   AUTOGRADER_CPU_SECONDS=str(self.limits.cpu_seconds))
        (kernels / "kernel.json").write_text(json.dumps({
            "argv": [*(_UNSHARE if isolated else []), sys.executable, "-m", "autograder.kernel",
                     "-f", "{connection_file}"],
            "display_name": "autograder sandbox", "language": "python", "env": env,
        }))
        specs = KernelSpecManager(kernel_dirs=[str(kernels.parent)], ensure_native_kernel=False)
        km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs, transport="ipc",
                                ip=str(self._tmp / "ipc"))
        self._client = NotebookClient(
            self.nb, km=km, kernel_name=KERNEL_NAME, timeout=int(self.limits.cell_timeout),
            allow_errors=True, interrupt_on_timeout=False, iopub_timeout=10, shutdown_kernel="immediate",
            resources={"metadata": {"path": str(work)}})
        self._context = self._client.setup_kernel(cwd=str(work), cleanup_kc=True)  # we own km: shut it down
        self._context.__enter__()

    def _stop(self) -> None:
        if self._context is not None:
            try:
                self._context.__exit__(None, None, None)
            except Exception:
                pass  # a dead or hung kernel still gets killed by its manager's cleanup
            self._context = None

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
        path_in, path_out = self._tmp / f"{token}.in.pt", self._tmp / f"{token}.out.pt"
        torch.save(args, path_in)
        code = (f"def _autograder_call():\n"
                f"    import torch\n"
                f"    args = torch.load({str(path_in)!r}, map_location={self.device!r}, weights_only=True)\n"
                f"    torch.save(({expression})(*args), {str(path_out)!r})\n"
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
            path_in.unlink(missing_ok=True)
        if failure:
            self._restart()
            return CallResult(error=failure, stopped=True)
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            return CallResult(error=f"raised {_error_text(errors[0])}")
        try:
            if path_out.stat().st_size > MAX_FILE_BYTES:
                return CallResult(error=f"returned more than {MAX_FILE_BYTES // 2**20} MB of data")
            return CallResult(value=torch.load(path_out, weights_only=True))
        except FileNotFoundError:
            return CallResult(error="returned nothing the grader could read")
        except Exception as exc:  # an object torch.load refuses: not a tensor or plain data
            return CallResult(error=f"returned something that is not a tensor or plain Python data ({exc.__class__.__name__})")
        finally:
            path_out.unlink(missing_ok=True)
