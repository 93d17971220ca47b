"""Messages say what differs; tolerances give the same verdicts on CPU and CUDA."""

from __future__ import annotations

import pytest
import torch

from autograder.compare import TOLERANCES, describe_difference, tolerance


def test_equal_values_pass():
    x = torch.randn(3, 4)
    assert describe_difference(x, x.clone()) is None
    assert describe_difference([1, "a", (2.0,)], [1, "a", (2.0,)]) is None


@pytest.mark.parametrize("got, expected, words", [
    (torch.zeros(2, 4), torch.zeros(2, 3), "shape expected (2, 3), got (2, 4)"),
    (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3), "dtype expected torch.float32, got torch.int64"),
    (torch.eye(3), torch.eye(3).roll(1, -1), "6 of 9 values differ; first at index [0, 0]"),
    ([1, 2], [1, 2, 3], "expected 3 items, got 2"),
    (["<pad>", "b"], ["<pad>", "a"], "output[1]: expected 'a', got 'b'"),
    ("abc", torch.zeros(1), "expected a torch.Tensor, got str"),
    (torch.tensor([float("nan")]), torch.tensor([0.0]), "1 of 1 values differ"),
])
def test_messages_name_the_first_thing_to_fix(got, expected, words):
    assert words in describe_difference(got, expected)


def test_nan_matches_nan_and_integers_are_exact():
    assert describe_difference(torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 1.0])) is None
    assert describe_difference(torch.tensor([3]), torch.tensor([4])) is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_verdicts_agree_across_devices(dtype):
    """Rounding noise passes under both tables; a typical mistake fails under both."""
    g = torch.Generator().manual_seed(0)
    expected = torch.randn(64, 64, generator=g, dtype=torch.float64)
    for device in TOLERANCES:
        rtol, atol = tolerance(device, dtype)
        assert 0 < rtol < 0.05 and 0 < atol < 0.05
    cpu_rtol, _ = tolerance("cpu", dtype)
    noise = expected.to(dtype) * (1 + 0.5 * cpu_rtol)  # well inside the tighter (cpu) bound
    scaled = (expected * 8 ** -0.5).to(dtype)  # e.g. a missing or extra 1/sqrt(d_k)
    for device in TOLERANCES:
        rtol, atol = tolerance(device, dtype)
        reference = expected.to(dtype).double()
        bound = atol + rtol * reference.abs()
        assert ((noise.double() - reference).abs() <= bound).all(), device
        assert not ((scaled.double() - reference).abs() <= bound).all(), device
