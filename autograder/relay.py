"""The grader's side of a kernel's sockets: a relay that bounds each whole message.

ZeroMQ caps one part (frame) of a message (``MAXMSGSIZE``) but keeps a message of many parts
whole until its last part has arrived, and the kernel, which knows the key that signs its
messages, may send as many parts as it likes: one message could hold gigabytes of the
grader's memory. So the grader's sockets connect not to the kernel's but to a relay's, which
passes the bytes on both ways and, on the kernel's side, reads the ZMTP 3 framing as it goes
(`rfc.zeromq.org/spec/23 <https://rfc.zeromq.org/spec/23/>`_): once the parts of one message
add up to more than the cap, it ends both connections before the parts reach ZeroMQ. The
grader sees a disconnection, as for a single part over the cap.

All relays of a process share one event loop in a thread of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

GREETING_BYTES = 64  # ZMTP 3: signature (10), version (2), mechanism (20), as-server (1), filler (31)
_MORE, _LONG, _COMMAND = 0x01, 0x02, 0x04  # a frame's flags
_CHUNK = 2**16
_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


class FrameCounter:
    """Follows the kernel's byte stream frame by frame and says when it breaks the rules: not ZMTP
    3 (older versions frame differently), or one message (a command, or data frames up to the
    last without MORE) of more than ``cap`` bytes."""

    def __init__(self, cap: int):
        self.cap = cap
        self._greeting = bytearray()
        self._header = bytearray()
        self._body_left = 0
        self._message = 0  # bytes of the current message's parts so far

    def feed(self, data: bytes) -> bool:
        """Count ``data``, the next bytes of the stream; False once the stream broke the rules."""
        view, i = memoryview(data), 0
        while i < len(view):
            if len(self._greeting) < GREETING_BYTES:
                take = view[i:i + GREETING_BYTES - len(self._greeting)]
                self._greeting += take
                i += len(take)
                if not self._greeting_ok():
                    return False
            elif self._body_left:
                step = min(self._body_left, len(view) - i)
                self._body_left -= step
                i += step
            else:
                self._header.append(view[i])
                i += 1
                flags = self._header[0]
                if len(self._header) < (9 if flags & _LONG else 2):
                    continue
                self._body_left = int.from_bytes(self._header[1:], "big")
                self._header.clear()
                if flags & _COMMAND:  # a command is a message of its own, even between parts
                    if self._body_left > self.cap:
                        return False
                    continue
                self._message += self._body_left
                if self._message > self.cap:
                    return False
                if not flags & _MORE:
                    self._message = 0
        return True

    def _greeting_ok(self) -> bool:
        g = self._greeting
        return ((len(g) < 1 or g[0] == 0xFF) and (len(g) < 10 or g[9] == 0x7F)
                and (len(g) < 11 or g[10] >= 3))


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, name="autograder-relay", daemon=True).start()
        return _LOOP


class Relay:
    """One kernel socket's relay: listens at ``path`` for the grader's one connection, and then
    connects to the kernel's socket ``kernel``: before any of the notebook's code runs in that
    kernel, so a socket file replaced later is never followed. (Not sooner: a kernel started
    ahead may wait longer than ZeroMQ's 30 s for a handshake before the grader comes.)"""

    def __init__(self, kernel: str, path: Path, cap: int):
        self.kernel, self.path, self.cap = kernel, path, cap
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._task: asyncio.Task | None = None

    async def _open(self) -> None:
        self._server = await asyncio.start_unix_server(self._connected, path=str(self.path))

    async def _connected(self, from_grader, to_grader) -> None:
        self._server.close()  # one connection only
        self._task = asyncio.current_task()
        self._writers.append(to_grader)
        try:
            from_kernel, to_kernel = await asyncio.open_unix_connection(self.kernel)
        except OSError:
            self._close()
            return
        self._writers.append(to_kernel)
        await asyncio.gather(self._pass(from_kernel, to_grader, FrameCounter(self.cap)),
                             self._pass(from_grader, to_kernel, None))

    async def _pass(self, reader, writer, counter: FrameCounter | None) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if counter is not None and not counter.feed(data):
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._close()

    def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def _shut(self) -> None:
        self._close()
        if self._task is not None:
            self._task.cancel()


async def open_relays(kernel_paths: dict[int, str], folder: Path, cap: int) -> list[Relay]:
    """A relay for each of the kernel's sockets (port → its path), listening at ``folder/ipc-PORT``,
    which the grader then connects to with ``ip = folder/ipc``."""
    relays = [Relay(path, folder / f"ipc-{port}", cap) for port, path in kernel_paths.items()]
    loop = _loop()
    for relay in relays:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(relay._open(), loop))
    return relays


def close_relays(relays: list[Relay]) -> None:
    """End the relays' connections (the kernel is being shut down)."""
    loop = _loop()
    for relay in relays:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(relay._shut(), loop).result(timeout=5)
