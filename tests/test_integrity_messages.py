"""Attack class: kernel messages. The kernel holds the key that signs its messages, so it can send
any valid message, as large and as many as it likes, on any channel; none may stall the grader or
fill its memory, and grading goes on: the notebook's functions are still called and judged.

The grader here is this test process (:class:`autograder.process.NotebookProcess` in process), so
its peak memory is ``ru_maxrss``; each flood would hold over a gigabyte where it is queued."""

from __future__ import annotations

import resource

import nbformat
import pytest

from autograder import process, relay, sandbox

LIMITS = sandbox.Limits(cell_timeout=60, call_timeout=20)
GROWTH_MB = 200  # what the grader's peak memory may grow by while it runs a flood

FUNCTION = "def add_one(x):\n    return x + 1\n"
# 30 signed messages of 40 MB, sent with the kernel's own session as the parent cell's output
IOPUB_FLOOD = '''
kernel = get_ipython().kernel
for _ in range(30):
    kernel.session.send(kernel.iopub_socket, "stream", {"name": "stdout", "text": "x" * (40 * 2**20)},
                        parent=kernel.get_parent())
'''
# one message of 50 parts of 7 MB (binary buffers, sent without copying), each part under the cap
MANY_PARTS = '''
kernel = get_ipython().kernel
part = b"x" * (7 * 2**20)
kernel.session.send(kernel.iopub_socket, "display_data", {"data": {}, "metadata": {}},
                    parent=kernel.get_parent(), buffers=[part] * 50, track=True)
'''
# the same on stdin, where the grader never asked for input
STDIN_FLOOD = '''
kernel = get_ipython().kernel
for _ in range(30):
    kernel.session.send(kernel.stdin_socket, "input_request", {"prompt": "x" * (40 * 2**20), "password": False},
                        parent=kernel.get_parent(), ident=kernel._parent_ident["shell"])
'''
# a 4 MB message (the text, and again in the traceback); six of them made a graded notebook of tens of MB
BIG_ERROR = 'raise ValueError("x" * (2 * 2**20))\n'


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _notebook(*sources: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


@pytest.fixture(scope="module", autouse=True)
def warm():
    """A kernel run first, so that the zygote and the grader's own start-up are in the baseline."""
    with process.NotebookProcess(_notebook(FUNCTION), limits=LIMITS) as proc:
        assert proc.call("add_one", (1,)).value == 2


CUT_OFF = [f"cell 1 sent the grader a message of more than {process.MAX_MESSAGE_BYTES // 2**20} MB "
           "(or cut its connection), so its kernel was stopped"]


@pytest.mark.parametrize("flood, errors", [(IOPUB_FLOOD, CUT_OFF), (MANY_PARTS, CUT_OFF), (STDIN_FLOOD, [])],
                         ids=["big messages on IOPub", "a message of many parts", "stdin, never received"])
def test_a_flood_of_signed_messages_holds_no_memory_and_grading_goes_on(flood, errors):
    """Messages of 40 MB on IOPub cut the kernel off, and so does one of 350 MB in parts each
    under the cap (ZeroMQ caps each part only, and holds a message whole until its last part);
    on stdin, which the grader never connects, nothing arrives at all."""
    before = _peak_mb()
    with process.NotebookProcess(_notebook(flood, FUNCTION), limits=LIMITS) as proc:
        result = proc.call("add_one", (41,))
        seen = proc.cell_errors
    assert _peak_mb() - before < GROWTH_MB
    assert result.value == 42, result
    assert seen == errors


def test_error_outputs_stay_within_the_output_cap():
    nb = _notebook(*[BIG_ERROR] * 6, FUNCTION, "def boom():\n    " + BIG_ERROR)
    with process.NotebookProcess(nb, limits=LIMITS) as proc:
        added, raised = proc.call("add_one", (1,)), proc.call("boom", ())
        errors = proc.cell_errors
    size = len(nbformat.writes(nb))
    assert size < 6 * (process.MAX_OUTPUT_BYTES + 2**16), size  # it was 48 MB
    assert "characters left out]" in nbformat.writes(nb)
    assert added.value == 2
    assert raised.error.startswith("raised ValueError: xxx") and len(raised.error) < 2**12, raised.error[:200]
    assert len(errors) == 6 and all(e.startswith(f"cell {i} raised ValueError: xxx") for i, e in enumerate(errors, 1))


def _frame(flags: int, body: bytes) -> bytes:
    return bytes([flags | 0x02]) + len(body).to_bytes(8, "big") + body


def test_the_relay_adds_up_the_parts_of_a_message_even_with_commands_between_them():
    greeting = b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"NULL".ljust(20, b"\0") + bytes(32)
    part, ping = b"x" * (5 * 2**20), _frame(0x04, b"\x04PING\0\0")
    one_message = relay.FrameCounter(process.MAX_MESSAGE_BYTES)
    assert not one_message.feed(greeting + _frame(0x01, part) + ping + _frame(0x00, part))
    two_messages = relay.FrameCounter(process.MAX_MESSAGE_BYTES)
    assert two_messages.feed(greeting + _frame(0x00, part) + ping + _frame(0x00, part))
    zmtp_2 = relay.FrameCounter(process.MAX_MESSAGE_BYTES)  # framed differently: refused
    assert not zmtp_2.feed(greeting[:10] + b"\x01" + greeting[11:])
