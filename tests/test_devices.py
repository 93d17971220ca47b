"""The grader gives the same verdicts on every device this machine has (CPU always, CUDA if present).

On a CPU-only machine this runs the engine on ``cpu`` only; on a GPU machine it also grades on
``cuda`` and requires the same per-cell scores and reference results within tolerance.
"""

from __future__ import annotations

import importlib

import nbformat
import pytest
import torch

from autograder.grading import grade, reference_results, cell_points, to_device
from autograder.sandbox import Limits
from conftest import ASSIGNMENT, NOTEBOOK, make_submission
from test_grading import OFF_BY_ONE

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def verdicts(course) -> tuple[dict[str, tuple[dict, dict]], object]:
    """device → (reference results, per-cell scores of an off-by-one submission), and the tests."""
    reference = nbformat.read(course / "solutions" / ASSIGNMENT / NOTEBOOK, as_version=4)
    tests = importlib.import_module(reference.metadata["autograder"]["tests"])
    points = cell_points(reference)
    out = {}
    for device in DEVICES:
        expected = reference_results(reference, tests, device=device, seed=1, limits=Limits())
        student = make_submission(course, replace={"one_hot": OFF_BY_ONE})
        reports = grade(student, tests, expected, points, device=device, seed=1, limits=Limits())
        out[device] = (expected, {gid: r.score for gid, r in reports.items()})
    return out, tests


def test_scores_agree_across_devices(verdicts):
    results, _ = verdicts
    cpu_scores = results["cpu"][1]
    assert cpu_scores["test_one_hot"] == 0 and cpu_scores["test_cosine"] == 1
    for device in DEVICES:
        assert results[device][1] == cpu_scores, device


def test_reference_results_agree_across_devices_within_tolerance(verdicts):
    results, tests = verdicts
    for device in DEVICES:
        for (gid, i), value in results[device][0].items():
            on_cpu = results["cpu"][0][gid, i]
            assert tests.CASES[gid][i].judge(value, to_device(on_cpu, device), ()) is None, (device, gid, i)
            if isinstance(value, torch.Tensor):
                assert value.device.type == device, (gid, i)
