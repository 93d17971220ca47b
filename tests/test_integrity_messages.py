"""Attack class: kernel messages. The kernel holds the key that signs its messages, so it can send
any valid message, as large and as many as it likes, on any channel; none may stall the grader or
fill its memory, and grading goes on: the notebook's functions are still called and judged.

The grader here is this test process (:class:`autograder.sandbox.NotebookProcess` in process), so
its peak memory is ``ru_maxrss``; each flood would hold over a gigabyte where it is queued."""

from __future__ import annotations

import resource

import nbformat
import pytest

from autograder import sandbox

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
    with sandbox.NotebookProcess(_notebook(FUNCTION), limits=LIMITS) as proc:
        assert proc.call("add_one", (1,)).value == 2


def test_big_signed_messages_on_iopub_cut_the_kernel_off_and_grading_goes_on():
    before = _peak_mb()
    with sandbox.NotebookProcess(_notebook(IOPUB_FLOOD, FUNCTION), limits=LIMITS) as proc:
        result = proc.call("add_one", (41,))
        errors = proc.cell_errors
    assert _peak_mb() - before < GROWTH_MB
    assert result.value == 42, result
    assert errors == [f"cell 1 sent the grader a message of more than {sandbox.MAX_MESSAGE_BYTES // 2**20} MB "
                      "(or cut its connection), so its kernel was stopped"]


def test_a_flood_on_stdin_is_never_received_and_grading_goes_on():
    before = _peak_mb()
    with sandbox.NotebookProcess(_notebook(STDIN_FLOOD, FUNCTION), limits=LIMITS) as proc:
        result = proc.call("add_one", (41,))
        errors = proc.cell_errors
    assert _peak_mb() - before < GROWTH_MB
    assert result.value == 42, result
    assert errors == []


def test_error_outputs_stay_within_the_output_cap():
    nb = _notebook(*[BIG_ERROR] * 6, FUNCTION, "def boom():\n    " + BIG_ERROR)
    with sandbox.NotebookProcess(nb, limits=LIMITS) as proc:
        added, raised = proc.call("add_one", (1,)), proc.call("boom", ())
        errors = proc.cell_errors
    size = len(nbformat.writes(nb))
    assert size < 6 * (sandbox.MAX_OUTPUT_BYTES + 2**16), size  # it was 48 MB
    assert "characters left out]" in nbformat.writes(nb)
    assert added.value == 2
    assert raised.error.startswith("raised ValueError: xxx") and len(raised.error) < 2**12, raised.error[:200]
    assert len(errors) == 6 and all(e.startswith(f"cell {i} raised ValueError: xxx") for i, e in enumerate(errors, 1))
