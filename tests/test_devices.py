"""The grader gives the same verdicts on every device this machine has (CPU always, CUDA if present).

On a CPU-only machine this runs the engine on ``cpu`` only; on a GPU machine it also grades on
``cuda`` and requires the same per-cell scores and reference results within tolerance, for every
chapter: the reference graded as a submission scores full marks on each device, every catalogue
mistake gives the same results (so the same hints), and Chapter 1's off-by-one submission scores
the same and is diagnosed the same everywhere.
"""

from __future__ import annotations

import importlib

import nbformat
import pytest
import torch

from autograder import mistakes
from autograder.grading import _inputs, _same, cell_points, grade, reference_results, to_device
from autograder.sandbox import Limits
from conftest import ASSIGNMENT, DEVICES, assignments, make_submission, notebook_of
from test_grading import OFF_BY_ONE


def _reference(course, assignment):
    nb = nbformat.read(course / "solutions" / assignment / notebook_of(assignment), as_version=4)
    return nb, importlib.import_module(nb.metadata["autograder"]["tests"])


def _results(course, assignment, device):
    nb, tests = _reference(course, assignment)
    return reference_results(nb, tests, device=device, seed=1, limits=Limits(),
                             catalogue=mistakes.load(course / "solutions" / assignment, nb))


@pytest.fixture(scope="module")
def verdicts(course) -> tuple[dict[str, tuple[dict, dict]], object]:
    """device → (reference results, per-cell scores of an off-by-one submission), and the tests."""
    reference, tests = _reference(course, ASSIGNMENT)
    points = cell_points(reference)
    out = {}
    for device in DEVICES:
        expected = _results(course, ASSIGNMENT, device)
        student = make_submission(course, replace={"one_hot": OFF_BY_ONE})
        reports = grade(student, tests, expected, points, device=device, seed=1, limits=Limits())
        out[device] = (expected, {gid: (r.score, r.mistakes) for gid, r in reports.items()})
    return out, tests


def test_scores_agree_across_devices(verdicts):
    results, _ = verdicts
    cpu_scores = results["cpu"][1]
    assert cpu_scores["test_one_hot"] == (0, [("one-hot-from-one",)]) and cpu_scores["test_cosine"] == (1, [])
    for device in DEVICES:
        assert results[device][1] == cpu_scores, device


@pytest.mark.parametrize("assignment", assignments())
def test_reference_scores_full_marks_on_every_device_and_results_agree(course, assignment):
    reference, tests = _reference(course, assignment)
    points = cell_points(reference)
    results = {}
    for device in DEVICES:
        results[device] = _results(course, assignment, device)
        reports = grade(make_submission(course, assignment=assignment), tests, results[device], points,
                        device=device, seed=1, limits=Limits())
        assert {gid: r.score for gid, r in reports.items()} == points, (device, [r.text() for r in reports.values()])
    inputs = _inputs(tests.CASES, 1)
    for device in DEVICES:
        for (gid, i), value in results[device].values.items():
            on_cpu, args = to_device(results["cpu"][gid, i], device), to_device(inputs[gid, i], device)
            assert tests.CASES[gid][i].judge(value, on_cpu, args) is None, (device, gid, i)
            if isinstance(value, torch.Tensor):
                assert value.device.type == device, (gid, i)
        for combo, outcomes in results[device].outcomes.items():  # each mistake, so each hint
            for (gid, i), value in outcomes.items():
                on_cpu = to_device(results["cpu"].outcomes[combo][gid, i], device)
                assert _same(tests.CASES[gid][i], value, on_cpu, to_device(inputs[gid, i], device)), (device, combo, gid, i)


@pytest.mark.parametrize("device", DEVICES)
def test_after_a_cuda_error_the_next_call_gets_a_fresh_kernel(device):
    """A device-side assert (an index out of range on CUDA) leaves the kernel's CUDA context
    unusable: the kernel restarts and re-runs the notebook, so one such call costs only its own
    check. On a CPU-only machine the error is raised by hand, with CUDA's words."""
    from autograder.process import NotebookProcess

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import torch\ncalls = []\n"
        "def lookup(table, i):\n"
        "    calls.append(i)\n"
        "    if not table.is_cuda and i >= len(table):\n"
        "        raise RuntimeError('CUDA error: device-side assert triggered')\n"
        "    return table[torch.tensor([i], device=table.device)].cpu()  # CUDA: an assert, seen here\n"
        "def made():\n"
        "    return len(calls)\n")])
    with NotebookProcess(nb, device=device) as proc:
        first = proc.call("lookup", (torch.arange(3.0), 7))
        count = proc.call("made", ())
        after = proc.call("lookup", (torch.arange(3.0), 1))
    assert "CUDA error" in first.error, first
    assert count.value == 0, "the kernel was not restarted: its state survived the CUDA error"
    assert float(after.value) == 1.0, after
