"""Run a notebook in a sandboxed kernel and call its functions from outside: the grader's side.

The grader never imports student code. A :class:`NotebookProcess` starts an IPython kernel
(:mod:`autograder.kernel`, forked from a zygote that imported torch once: :mod:`autograder.zygote`)
inside a fresh sandbox (:mod:`autograder.sandbox`), executes the notebook's code cells, and then
answers :meth:`NotebookProcess.call`: arguments go in through ``torch.save``, the result comes
back through ``torch.load(weights_only=True)`` within a size allowance
(:mod:`autograder.results`), so nothing but tensors and plain Python data crosses the boundary.
Whatever a student patches inside their kernel (``torch.allclose``, the check helpers,
``torch.save`` itself) can only change the values they hand back, never the comparison, which
the grader makes in its own process.

The grader talks to the kernel over two channels only, through a relay that bounds each message
(:mod:`autograder.relay`), and keeps at most a megabyte of each cell's outputs. Infinite loops
hit a per-cell timeout and the notebook a time budget; a kernel that stops answering or dies is
restarted and the notebook re-run without the cell that hung, so one bad cell costs only what
depends on it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import json
import os
import re
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
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from traitlets import default

from . import relay, results, sandbox
from .kernel import MAX_FILE_BYTES
from .sandbox import CONNECTION, SCRATCH, SOCKETS, Limits
from .zygote import HOLD, READY, Zygote

KERNEL_NAME = "autograder-sandbox"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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
        child = sandbox.child_pid(process.pid)
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
    exist, a relay (:mod:`autograder.relay`) connects to the same files through the sandbox's
    root, and the grader's side to the relay, which ends the connection on a message over
    :data:`MAX_MESSAGE_BYTES` in all its parts. Neither ever reconnects, so a socket the
    student replaces later is never followed.

    With a ``zygote``, bubblewrap starts the zygote's holder, and once the sandbox is ready the
    zygote forks the kernel into it (:mod:`autograder.zygote`)."""

    root_fd: int | None = None
    zygote: Zygote | None = None
    cgroups: list[str] = []  # the kernel's cgroup folders, which a forked kernel joins
    relay_dir: Path  # where the relays listen (host side, the grader's only)
    relays: list[relay.Relay] = []

    async def _async_launch_kernel(self, kernel_cmd, **kw) -> None:
        await super()._async_launch_kernel(kernel_cmd, **kw)
        process = self.provisioner.process
        if self.zygote is not None:
            holder, root = await _sandbox_root(process, lambda fd: _is(stat.S_ISREG, fd, READY[1:]))
            os.close(root)
            self.zygote.fork_into(holder, self.cgroups, sandbox.sandbox_user(), SCRATCH, CONNECTION)
        sockets = [f"{SOCKETS[1:]}/ipc-{port}" for port in self.ports]
        _, self.root_fd = await _sandbox_root(process, lambda fd: all(_is(stat.S_ISSOCK, fd, s) for s in sockets))
        if any(os.stat(s, dir_fd=self.root_fd, follow_symlinks=False).st_uid == 0 for s in sockets):
            raise RuntimeError("the kernel runs as host root, who may write the host's kernel settings: refused")
        self.relay_dir.mkdir()
        self.relays = await relay.open_relays(
            {port: f"/proc/self/fd/{self.root_fd}/{s}" for port, s in zip(self.ports, sockets)},
            self.relay_dir, MAX_MESSAGE_BYTES)
        self.ip = str(self.relay_dir / "ipc")

    def write_connection_file(self, **kwargs) -> None:
        """Jupyter's connection file (mode 0600), owned by the kernel's user, who must read it."""
        super().write_connection_file(**kwargs)
        if (user := sandbox.sandbox_user()) is not None:
            os.chown(self.connection_file, *user)

    def cleanup_ipc_files(self) -> None:
        """Nothing to remove: the sockets lived in the sandbox's own tmpfs."""

    def close_root(self) -> None:
        """Let go of the sandbox: the relays to its sockets, the descriptor of its root."""
        relay.close_relays(self.relays)
        self.relays = []
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None


class ReadyClient(AsyncKernelClient):
    """A kernel client that is ready when the kernel has answered ``kernel_info`` on the shell
    channel and gone idle on IOPub. jupyter_client's own waits 0.2 s for IOPub to stay quiet,
    a tenth of a submission's grading once kernels are forked.

    The kernel knows the messages' signing key, so it can send anything on any channel. Only
    shell and IOPub, which the grader reads, are connected (a channel nobody reads would queue
    whatever the kernel sends there; the kernel manager, not the heartbeat, says whether the
    kernel lives); their messages are capped in size and in number queued (a flood is dropped
    by the kernel's side), and the relay (a whole message) or ZeroMQ (one part) ends a
    connection that brings a message over the cap, never to reconnect: the kernel then counts
    as dead (:attr:`cut_off`)."""

    _monitors: list = []

    @default("context")
    def _capped_context(self) -> zmq.asyncio.Context:
        self._created_context = True
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        context.setsockopt(zmq.RCVHWM, MAX_QUEUED_MESSAGES)
        context.setsockopt(zmq.RECONNECT_IVL, -1)
        return context

    def start_channels(self, *args, **kwargs) -> None:
        """Shell and IOPub only, whatever nbclient asks for."""
        super().start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        self._monitors = [channel.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
                          for channel in (self.shell_channel, self.iopub_channel)]

    def stop_channels(self) -> None:
        """Close the two channels (jupyter_client's would connect the others, to stop them)."""
        for channel in (self._shell_channel, self._iopub_channel):
            if channel is not None:
                channel.stop()
        if not self.context.closed:
            self.context.destroy(linger=0)  # and the monitors

    @property
    def cut_off(self) -> bool:
        """Whether the kernel's side ended a connection (a message over the cap, a closed socket)."""
        return any(monitor.get(zmq.EVENTS) & zmq.POLLIN for monitor in self._monitors)

    async def is_alive(self) -> bool:
        return not self.cut_off and await self._async_is_alive()

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
    kind: str | None = None  # what stopped it, for reports: None, "timeout", "crash" or "budget"


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
# One message from the kernel, all its parts (a plot, or a print, which the kernel sends in
# pieces of at most a megabyte: see _STREAMS_IN_PIECES); a larger one ends the connection.
MAX_MESSAGE_BYTES = 8 * 2**20
MAX_QUEUED_MESSAGES = 8  # per channel, unread by the grader; the kernel's side drops the rest
# Run in every kernel before the notebook: ipykernel sends what was printed in 0.2 s as one
# message, which a print loop makes larger than MAX_MESSAGE_BYTES; this sends it in pieces. It
# wraps the streams' ``write`` as each cell starts (IPython sets it back after each cell).
_STREAMS_IN_PIECES = """
def _autograder_in_pieces(info, limit=2**20):
    import sys
    for stream in (sys.stdout, sys.stderr):
        def write_in_pieces(text, stream=stream, write=stream.write, pending=[0]):
            for start in range(0, len(text), limit):
                piece = text[start:start + limit]
                if pending[0] + len(piece) > limit:
                    stream.flush()
                    pending[0] = 0
                write(piece)
                pending[0] += len(piece)
            return len(text)
        stream.write = write_in_pieces
get_ipython().events.register("pre_run_cell", _autograder_in_pieces)
del _autograder_in_pieces
"""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"[… {len(text) - limit} characters left out]"


def _shortened_error(content: dict, room: int) -> dict:
    """An error's name, message and traceback in about ``room`` characters (4 KB at least), with
    visible notes where something was left out: the grader reads the message (:func:`_error_text`),
    the student the last frames."""
    room = max(room, 4096)
    frames, left = [], room // 2
    traceback = content.get("traceback") or []
    for frame in reversed(traceback):
        frame = _cut(str(frame), room // 8)
        left -= len(frame) + 4  # as str() of the list counts it
        if left < 0:
            frames.append(f"[… {len(traceback) - len(frames)} earlier parts of the traceback left out]")
            break
        frames.append(frame)
    return {"ename": _cut(str(content.get("ename", "Error")), 200),
            "evalue": _cut(str(content.get("evalue", "")), room // 2), "traceback": frames[::-1]}


class _LimitedClient(NotebookClient):
    """Keeps the first :data:`MAX_OUTPUT_BYTES` of each cell's outputs and drops the rest, so a
    print loop can fill neither the grader's memory nor the graded notebook. An error is kept
    (the grader reads it), shortened to the room left; one past the cap only if it is the cell's
    first (a kernel can send any number of them)."""

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        self.__dict__.setdefault("_output_bytes", {})[cell_index] = 0  # call cells reuse an index
        return await super().async_execute_cell(cell, cell_index, *args, **kwargs)

    execute_cell = run_sync(async_execute_cell)

    def output(self, outs, msg, display_id, cell_index):
        sizes = self.__dict__.setdefault("_output_bytes", {})
        before = sizes.get(cell_index, 0)
        if msg["msg_type"] == "error":
            if before > MAX_OUTPUT_BYTES and any(o.output_type == "error" for o in outs):
                return None
            msg = {**msg, "content": _shortened_error(msg["content"], MAX_OUTPUT_BYTES - before)}
        sizes[cell_index] = before + len(str(msg.get("content", "")))
        if sizes[cell_index] <= MAX_OUTPUT_BYTES or msg["msg_type"] == "error":
            return super().output(outs, msg, display_id, cell_index)
        if before <= MAX_OUTPUT_BYTES:
            outs.append(nbformat.v4.new_output("stream", name="stdout", text=(
                f"\n[more than {MAX_OUTPUT_BYTES // 2**20} MB of output: the rest was left out]\n")))
        return None


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
        self.cgroup: sandbox.Cgroup | None = None
        # the kernel's working directory as the kernel sees it
        self.scratch = SCRATCH if limits.sandbox else str(self.tmp / "work")
        kernels = self.tmp / "kernels" / KERNEL_NAME
        kernels.mkdir(parents=True)
        env = {k: os.environ[k] for k in sandbox.KEPT_ENV if k in os.environ}
        env.update(HOME=self.scratch, MPLBACKEND="module://matplotlib_inline.backend_inline", PYTHONUNBUFFERED="1",
                   AUTOGRADER_MEMORY_MB="0" if torch.version.cuda else str(limits.memory_mb),
                   # a CUDA build on CPU: cap the data (heap) instead, which its library mappings do not count in
                   AUTOGRADER_DATA_MB=str(limits.memory_mb) if torch.version.cuda and device == "cpu" else "0",
                   AUTOGRADER_CPU_SECONDS=str(limits.cpu_seconds),
                   # outside a user namespace RLIMIT_NPROC would count all of this user's processes
                   AUTOGRADER_PROCESSES=str(limits.processes) if limits.sandbox else "0")
        command = [sys.executable, "-m", "autograder.kernel", "-f"]
        if limits.sandbox:
            env.update(TMPDIR="/tmp", PYTHONPATH=str(Path(sandbox.package_dir()).parent))
            connection = self.tmp / "connection.json"
            self.cgroup = sandbox.Cgroup(limits)
            zygote = None
            if sandbox.forks_kernels(limits):
                if (device, limits) not in _ZYGOTES or _ZYGOTES[device, limits].process.poll() is not None:
                    _ZYGOTES[device, limits] = Zygote(env)  # the first, or one that died (killed, out of memory)
                zygote = _ZYGOTES[device, limits]
                command = []  # the zygote forks the kernel into the holder's sandbox
            else:
                command.append(CONNECTION)  # the holder starts it
            bwrap = sandbox.bwrap_command(device.split(":")[0], str(connection), env, as_pid_1=True)
            command = [*self.cgroup.prefix,
                       *sandbox.launch_command([*bwrap, sys.executable, "-I", "-S", "-c", HOLD, *command], self.tmp,
                                       self.cgroup.folders, routes=[connection])]
            km = SandboxKernelManager(kernel_name=KERNEL_NAME, transport="ipc", ip=f"{SOCKETS}/ipc",
                                      connection_file=str(connection))
            km.zygote, km.cgroups, km.relay_dir = zygote, self.cgroup.folders, self.tmp / "relay"
            km.client_class = f"{__name__}.ReadyClient"  # connects once the sockets exist: never again
            km.context.setsockopt(zmq.RECONNECT_IVL, -1)  # the manager's own control socket
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


class _BudgetSpent(Exception):
    """The notebook's time budget ran out before or during a cell or call."""


class NotebookProcess:
    """A notebook executed in a sandboxed, limited kernel; use as a context manager.

    ``files`` (host paths: the assignment's data files) are copied into the kernel's
    working directory before its cells run. With ``prestart`` (the grader's choice), once this
    notebook's kernel runs, the next notebook's kernel is started in a sandbox of its own, so
    that its start-up (mostly ``import torch``) overlaps with this notebook's work.

    ``budget``: seconds the notebook's cells and calls may take in all, across restarts (each
    also has its timeout), so that many slow cells cannot hold the grader; what still runs when
    it ends is stopped, and nothing runs after. None (the trusted reference): no budget."""

    def __init__(self, nb: nbformat.NotebookNode, *, device: str = "cpu", limits: Limits = Limits(),
                 skip_cell=lambda cell: False, files: tuple = (), prestart: bool = False,
                 budget: float | None = None):
        self.nb = nb
        self.budget = budget
        self._used = 0.0  # seconds of the budget
        self.problems: set[str] = set()  # what its cells hit: "timeout", "crash"; "budget" (cells or calls)
        self._dead_by: str | None = None  # the kind of the last timeout or crash
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
            sandbox.write_new(self._scratch_fd, path.name, path.read_bytes())
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
        with self._appended(_STREAMS_IN_PIECES) as (setup, setup_index):
            self._client.execute_cell(setup, setup_index, store_history=False)
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type != "code" or index in self._hung or self.skip_cell(cell):
                continue
            try:
                self._execute(cell, index, self.limits.cell_timeout)
            except _BudgetSpent:
                self._spent(index)
                return
            except (CellTimeoutError, DeadKernelError) as exc:
                self._hung.add(index)
                self._dead_by = "timeout" if isinstance(exc, CellTimeoutError) else "crash"
                self.problems.add(self._dead_by)
                self._note(index, f"did not finish within {self.limits.cell_timeout:g} s (an endless loop?)"
                           if isinstance(exc, CellTimeoutError) else self._crash())
                self._restart()  # re-runs every cell but the hung ones
                return
            for output in cell.outputs:
                if output.output_type == "error":
                    self._note(index, f"raised {_error_text(output)}")

    @contextlib.contextmanager
    def _appended(self, code: str):
        """A cell of the grader's, at the end of the notebook while it runs (nbclient runs only
        cells of its notebook): (the cell, its index)."""
        cell = nbformat.v4.new_code_cell(code)
        self.nb.cells.append(cell)
        try:
            yield cell, len(self.nb.cells) - 1
        finally:
            self.nb.cells.pop()

    def _left(self) -> float:
        """Seconds left of the time budget."""
        return float("inf") if self.budget is None else self.budget - self._used

    def _execute(self, cell, index: int, timeout: float) -> None:
        """Run one cell within ``timeout`` and what is left of the budget, which pays its time;
        :class:`_BudgetSpent` when the budget cut it (or was spent before)."""
        left = self._left()
        if left <= 0:
            raise _BudgetSpent
        self._client.timeout_func = lambda _cell: min(timeout, left)
        start = time.monotonic()
        try:
            self._client.execute_cell(cell, index)
        except CellTimeoutError:
            if left < timeout:
                raise _BudgetSpent from None
            raise
        finally:
            self._used += time.monotonic() - start
        if getattr(self._client.kc, "cut_off", False):  # cut off after its reply came
            raise DeadKernelError("the kernel ended its connection")

    def _crash(self) -> str:
        """Why the kernel died, in words: a kernel that crashed ends its connections too, and its
        sandbox exits with it; one cut off for a message over the cap lives on."""
        if getattr(self._client.kc, "cut_off", False) and not self._exits(within=1):
            return (f"sent the grader a message of more than {MAX_MESSAGE_BYTES // 2**20} MB "
                    "(or cut its connection), so its kernel was stopped")
        return f"crashed the kernel (out of memory? the limit is {self.limits.memory_mb} MB)"

    def _exits(self, within: float) -> bool:
        try:
            self._kernel.km.provisioner.process.wait(timeout=within)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _budget_spent(self) -> str:
        return f"your notebook used up its {self.budget:g} s time budget (cells and checks together)"

    def _spent(self, index: int | None) -> None:
        """The budget ran out during cell ``index`` (None: a call): note it, stop the kernel."""
        self.problems.add("budget")
        if index is None:  # after the notebook's cells, in notebook order
            self._cell_problems.setdefault(len(self.nb.cells), f"a hidden check was stopped: {self._budget_spent()}")
        else:
            self._note(index, f"was stopped: {self._budget_spent()}; the cells after it did not run")
        self._stop()

    def _note(self, index: int, problem: str) -> None:
        self._cell_problems.setdefault(index, f"cell {index + 1} {problem}")

    @property
    def cell_errors(self) -> list[str]:
        """What went wrong in the notebook's own cells, in notebook order, for feedback."""
        return [self._cell_problems[i] for i in sorted(self._cell_problems)]

    @property
    def alive(self) -> bool:
        return self._context is not None

    def run(self, source: str) -> str | None:
        """Run ``source`` as a cell of a trusted notebook (e.g. a reference cell with a catalogue
        mistake patched in, see :mod:`autograder.mistakes`): None, or why it failed."""
        with self._appended(source) as (cell, index):
            try:
                self._execute(cell, index, self.limits.cell_timeout)
            except (CellTimeoutError, DeadKernelError, _BudgetSpent) as exc:
                self._restart()
                return f"did not finish ({type(exc).__name__})"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        return f"raised {_error_text(errors[0])}" if errors else None

    def call(self, expression: str, args: tuple, expected: Any = results.TRUSTED) -> CallResult:
        """Evaluate ``expression`` in the notebook and call the result with ``args``. A student's
        call passes the reference's result as ``expected``: its result may then hold only a
        multiple of that (:class:`~autograder.results.Allowance`); a trusted notebook's, up to
        ``MAX_FILE_BYTES``."""
        if self._left() <= 0:
            return CallResult(error=f"not run: {self._budget_spent()} before this check", stopped=True,
                              kind="budget")
        if not self.alive:
            return CallResult(error="not run: your kernel had already crashed or hung too often", stopped=True,
                              kind=self._dead_by)
        token = uuid.uuid4().hex
        name_in, name_out = f"{token}.in.pt", f"{token}.out.pt"
        buffer = io.BytesIO()
        torch.save(args, buffer)
        try:
            sandbox.write_new(self._scratch_fd, name_in, buffer.getvalue())
        except OSError as exc:  # the student filled their scratch folder
            return CallResult(error=f"could not receive its inputs: your working folder is full or broken "
                                    f"({exc.strerror})")
        code = (f"def _autograder_call():\n"
                f"    import torch\n"
                f"    args = torch.load({self._scratch + '/' + name_in!r}, map_location={self.device!r}, weights_only=True)\n"
                f"    torch.save(({expression})(*args), {self._scratch + '/' + name_out!r})\n"
                f"_autograder_call()\n"
                f"del _autograder_call")
        failure = kind = None
        with self._appended(code) as (cell, index):
            try:
                self._execute(cell, index, self.limits.call_timeout)
            except _BudgetSpent:
                failure, kind = f"did not finish: {self._budget_spent()}", "budget"
            except CellTimeoutError:
                failure, kind = (f"did not finish within {self.limits.call_timeout:g} s (an endless loop, "
                                 "or far too slow?)"), "timeout"
            except DeadKernelError:
                failure, kind = self._crash(), "crash"
        if failure:
            if kind == "budget":
                self._spent(None)
            else:
                self._dead_by = kind
                self._restart()
            return CallResult(error=failure, stopped=True, kind=kind)
        self._unlink(name_in)
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            self._unlink(name_out)
            error = f"raised {_error_text(errors[0])}"
            if "CUDA error" in error:  # a device-side assert poisons the kernel's CUDA context...
                self._restart()  # ...so the calls after this one get a fresh kernel
            return CallResult(error=error)
        allowance = None if expected is results.TRUSTED else results.Allowance.of(expected)
        limit = MAX_FILE_BYTES if allowance is None else min(MAX_FILE_BYTES, allowance.bytes)
        try:
            return CallResult(value=results.load(sandbox.read_regular(self._scratch_fd, name_out, limit), allowance))
        except FileNotFoundError:
            return CallResult(error="returned nothing the grader could read")
        except OverflowError:
            return CallResult(error=str(allowance.exceeded(limit)) if allowance else
                              f"returned more than {MAX_FILE_BYTES // 2**20} MB of data")
        except results.Refused as refusal:
            return CallResult(error=str(refusal))
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
