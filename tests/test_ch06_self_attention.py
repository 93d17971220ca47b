"""Chapter 6 (self-attention): the grader and the public checks on typical submissions.

One class is graded once: the reference, the untouched exercise, and one typical mistake per
exercise. The public checks are then run in this process on the reference and on the mistakes.
"""

from __future__ import annotations

import math

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from autograder.chapters import ch06_self_attention as checks
from autograder.spec import CheckFailed
from conftest import ROOT, grade_chapter, reference_namespace

ASSIGNMENT = "06-self-attention"
FULL = 10.0

# Exercise 1: exp without subtracting the maximum (overflows at 1e4, NaN on all -inf rows).
NAIVE_SOFTMAX = '''
def softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)
'''
# Exercise 2: the triangle aligned bottom-right (right for square masks only).
BOTTOM_RIGHT_MASK = '''
def causal_mask(T_q, T_k=None, device=None):
    T_k = T_q if T_k is None else T_k
    return torch.ones(T_q, T_k, dtype=torch.bool, device=device).tril(T_k - T_q)
'''
# Exercise 3: no 1/sqrt(d_k).
UNSCALED_ATTENTION = '''
def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
    scores = q @ k.transpose(-2, -1)
    if is_causal:
        attn_mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return softmax(scores, dim=-1) @ v
'''
# Exercise 4: forward forgets to pass the mask on.
MASK_DROPPED_MODULE = '''
class SelfAttention(nn.Module):
    def __init__(self, d_model, d_k, d_v=None):
        super().__init__()
        self.W_q = nn.Linear(d_model, d_k, bias=False)
        self.W_k = nn.Linear(d_model, d_k, bias=False)
        self.W_v = nn.Linear(d_model, d_k if d_v is None else d_v, bias=False)

    def forward(self, x, attn_mask=None, is_causal=False):
        return scaled_dot_product_attention(self.W_q(x), self.W_k(x), self.W_v(x))
'''
MISTAKES = {  # student -> (name replaced, source, graded cell, words of its hint)
    "naive_softmax": ("softmax", NAIVE_SOFTMAX, "test_softmax", "Subtract the maximum"),
    "bottom_right": ("causal_mask", BOTTOM_RIGHT_MASK, "test_causal_mask", "top-left"),
    "unscaled": ("scaled_dot_product_attention", UNSCALED_ATTENTION,
                 "test_scaled_dot_product_attention", "1/√d_k"),
    "mask_dropped": ("SelfAttention", MASK_DROPPED_MODULE, "test_self_attention",
                     "attention without any mask"),
}


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory) -> dict[str, dict]:
    return grade_chapter(course, ASSIGNMENT, MISTAKES, tmp_path_factory.mktemp("downloads"))


def test_reference_scores_full_marks(graded):
    assert graded["correct"]["score"] == FULL, graded["correct"]["report"]


def test_untouched_exercise_scores_zero_and_says_what_to_write(graded):
    row = graded["untouched"]
    assert row["score"] == 0
    assert set(row["report"]) == set(checks.CASES)
    for report in row["report"].values():
        assert "not written yet" in report and "NotImplementedError" in report, report


@pytest.mark.parametrize("student", MISTAKES)
def test_typical_mistake_gets_partial_credit_and_its_hint(graded, student):
    _, _, cell, words = MISTAKES[student]
    row = graded[student]
    assert 0 < row["score"] < FULL, row["report"]
    report = row["report"][cell]
    assert "Hint:" in report and words in report, report


@pytest.fixture(scope="module")
def reference(course) -> dict:
    return reference_namespace(course, ASSIGNMENT)


def test_reference_passes_every_public_check(reference, capsys):
    checks.check_softmax(reference["softmax"])
    checks.check_causal_mask(reference["causal_mask"])
    checks.check_scaled_dot_product_attention(reference["scaled_dot_product_attention"])
    checks.check_self_attention(reference["SelfAttention"])
    assert capsys.readouterr().out.count("✓") == 4


def _define(reference: dict, source: str, name: str):
    namespace = dict(reference)
    exec(source, namespace)
    return namespace[name]


@pytest.mark.parametrize("student", MISTAKES)
def test_public_check_explains_each_typical_mistake(reference, student):
    name, source, cell, words = MISTAKES[student]
    check = {"test_softmax": checks.check_softmax, "test_causal_mask": checks.check_causal_mask,
             "test_scaled_dot_product_attention": checks.check_scaled_dot_product_attention,
             "test_self_attention": checks.check_self_attention}[cell]
    with pytest.raises(CheckFailed) as failure:
        check(_define(reference, source, name))
    assert "Hint:" in str(failure.value) and words in str(failure.value), str(failure.value)


@pytest.mark.parametrize("mistake, check, words", [
    ("def causal_mask(T_q, T_k=None, device=None):\n"
     "    return ~torch.ones(T_q, T_q if T_k is None else T_k, dtype=torch.bool).tril()",
     checks.check_causal_mask, "True and False are swapped"),
    ("def causal_mask(T_q, T_k=None, device=None):\n"
     "    return torch.ones(T_q, T_q if T_k is None else T_k, device=device).tril()",
     checks.check_causal_mask, "torch.bool"),
    ("def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):\n"
     "    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
     "    if attn_mask is not None:\n"
     "        s = s.masked_fill(attn_mask, float('-inf'))\n"
     "    return softmax(s) @ v",
     checks.check_scaled_dot_product_attention, "the mask is inverted"),
    ("def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):\n"
     "    s = q @ k.transpose(-2, -1) / q.shape[-1]\n"
     "    return softmax(s) @ v",
     checks.check_scaled_dot_product_attention, "square root"),
    ("def softmax(x, dim=-1):\n"
     "    return torch.softmax(x, 0)",
     checks.check_softmax, "another dimension"),
    ("def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):\n"
     "    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
     "    if attn_mask is not None:\n"
     "        s = s.masked_fill(~attn_mask, 0.0)\n"
     "    return softmax(s, dim=-2) @ v",
     checks.check_scaled_dot_product_attention, "normalised over the queries"),
    ("def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):\n"
     "    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
     "    if attn_mask is not None:\n"
     "        s = s.masked_fill(~attn_mask, 0.0)\n"
     "    return softmax(s) @ v",
     checks.check_scaled_dot_product_attention, "exp(0) > 0"),
    ("def softmax(x, dim=-1):\n"
     "    e = torch.exp(x - x.amax(dim=dim, keepdim=True))\n"
     "    return e / e.sum(dim=dim, keepdim=True)",
     checks.check_softmax, "all -inf"),
])
def test_public_checks_recognise_other_mistakes(reference, mistake, check, words):
    name = mistake.split("(")[0].removeprefix("def ")
    with pytest.raises(CheckFailed) as failure:
        check(_define(reference, mistake, name))
    assert words in str(failure.value), str(failure.value)


def test_softmax_hints_fire_on_hidden_cases(reference):
    """A hidden case's own hint: a naive softmax overflows on 1e3 (float64) before any -inf row matters."""
    g = torch.Generator().manual_seed(0)
    args = checks._softmax_masked(g)
    expected = reference["softmax"](*args)
    naive = _define(reference, NAIVE_SOFTMAX, "softmax")(*args)
    message = checks.CASES["test_softmax"][3].judge(naive, expected, args)
    assert message is not None and "Subtract the maximum" in message
    assert not math.isnan(float(expected.sum()))


def test_untouched_notebook_checks_say_what_to_do():
    """Run the student version as a student would: every check cell fails with a sentence."""
    nb = nbformat.read(ROOT / "exercises" / ASSIGNMENT / "self_attention.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises" / ASSIGNMENT)}}).execute()
    test_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(test_cells) == len(checks.CASES)
    for cell in test_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors and errors[0].ename == "CheckFailed", cell.source
        assert "replace `raise NotImplementedError()` with your code" in errors[0].evalue


def _judge(reference, source, name, gid, index):
    """The hidden case's message for a mistaken definition of ``name``."""
    args = checks.CASES[gid][index].make_args(torch.Generator().manual_seed(index))
    call = checks.CASES[gid][index].call
    expected = eval(call, reference)(*args)
    namespace = dict(reference)
    exec(source, namespace)
    return checks.CASES[gid][index].judge(eval(call, namespace)(*args), expected, args)


STABLE_BUT_NAN = '''
def softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
'''
INVERTED_MASK = '''
def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        attn_mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    if attn_mask is not None:
        s = s.masked_fill(attn_mask, float('-inf'))
    return softmax(s) @ v
'''
KEYS_VALUES_SWAPPED = '''
class SelfAttention(SelfAttention):
    def forward(self, x, attn_mask=None, is_causal=False):
        return scaled_dot_product_attention(self.W_q(x), self.W_v(x), self.W_k(x), attn_mask, is_causal)
'''


def test_stable_softmax_with_nan_rows_gets_only_the_all_masked_hint(reference):
    message = _judge(reference, STABLE_BUT_NAN, "softmax", "test_softmax", 3)
    assert "all -inf" in message and "Subtract the maximum" not in message, message


def test_inverted_mask_is_recognised_with_is_causal(reference):
    for index in (4, 5):  # is_causal=True with T_q = T_k and T_q != T_k
        message = _judge(reference, INVERTED_MASK, "scaled_dot_product_attention",
                         "test_scaled_dot_product_attention", index)
        assert "the mask is inverted" in message, message


def test_keys_and_values_swapped(reference):
    with pytest.raises(CheckFailed) as failure:  # d_k != d_v: the batched product cannot run
        checks.check_self_attention(_define(reference, KEYS_VALUES_SWAPPED, "SelfAttention"))
    assert "shapes of a product" in str(failure.value), str(failure.value)
    message = _judge(reference, KEYS_VALUES_SWAPPED, "SelfAttention", "test_self_attention", 3)
    assert "keys and values are swapped" in message, message


def test_forgotten_transpose_of_k_on_square_inputs_gets_its_hint():
    """Issue 6's 'transpose of K forgotten on square inputs': the product runs, the hint names it."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 5, generator=g, dtype=torch.float64) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    wrong = torch.softmax(q @ k / math.sqrt(5), dim=-1) @ v
    assert checks.ATTN_K_NOT_TRANSPOSED.matches(wrong, expected, (q, k, v, None, False))
    assert not checks.ATTN_K_NOT_TRANSPOSED.matches(expected, expected, (q, k, v, None, False))
