"""Chapter 6 (self-attention): the grader and the public checks on typical submissions.

One class is graded once: the reference, the untouched exercise, and typical mistakes of every
exercise (the grader names them from the catalogue, solutions/06-self-attention/mistakes.yaml).
The public checks are then run in this process on the reference and on the mistakes.
"""

from __future__ import annotations


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
# Exercise 1: a stable softmax that forgets the all -inf slice (NaN there).
STABLE_BUT_NAN = '''
def softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
'''
# Exercise 3: the mask read the other way round, is_causal included.
INVERTED_MASK = '''
def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        attn_mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    if attn_mask is not None:
        s = s.masked_fill(attn_mask, float('-inf'))
    return softmax(s) @ v
'''
# Exercise 3 (public check only): K not transposed (fails unless T_k = d_k; runs, wrongly, on
# square inputs). The grader compares a RuntimeError's whole text, which ends with the student's
# own failing line, so it names this mistake only for code that fails on the reference's line.
K_NOT_TRANSPOSED = '''
def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
    scores = q @ k / math.sqrt(q.shape[-1])
    if is_causal:
        attn_mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return softmax(scores) @ v
'''
# Exercise 4: keys made with W_v, values with W_k.
KEYS_VALUES_SWAPPED = MASK_DROPPED_MODULE.replace(
    "scaled_dot_product_attention(self.W_q(x), self.W_k(x), self.W_v(x))",
    "scaled_dot_product_attention(self.W_q(x), self.W_v(x), self.W_k(x), attn_mask, is_causal)")
MISTAKES = {  # student -> (name replaced, source, graded cell, words of its hint)
    "naive_softmax": ("softmax", NAIVE_SOFTMAX, "test_softmax", "Subtract the maximum"),
    "stable_but_nan": ("softmax", STABLE_BUT_NAN, "test_softmax", "NaN in a slice whose entries are all -inf"),
    "bottom_right": ("causal_mask", BOTTOM_RIGHT_MASK, "test_causal_mask", "top-left"),
    "unscaled": ("scaled_dot_product_attention", UNSCALED_ATTENTION,
                 "test_scaled_dot_product_attention", "1/√d_k"),
    "inverted_mask": ("scaled_dot_product_attention", INVERTED_MASK,
                      "test_scaled_dot_product_attention", "the mask is inverted"),
    "mask_dropped": ("SelfAttention", MASK_DROPPED_MODULE, "test_self_attention",
                     "attention without any mask"),
    "keys_values_swapped": ("SelfAttention", KEYS_VALUES_SWAPPED, "test_self_attention",
                            "keys and values are swapped"),
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
    assert "your results are exactly those of the reference with" in report, report  # from every hidden case


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
    ("def softmax(x, dim=-1):\n"  # a stable softmax that always normalises the last dimension
     "    m = x.amax(dim=-1, keepdim=True)\n"
     "    e = torch.exp(x - torch.where(torch.isinf(m), torch.zeros_like(m), m))\n"
     "    s = e.sum(dim=-1, keepdim=True)\n"
     "    return e / torch.where(s == 0, torch.ones_like(s), s)",
     checks.check_softmax, "a softmax along another dimension"),
    ("def softmax(x, dim=-1):\n"  # the maximum of the whole tensor
     "    e = torch.exp(x - x.max())\n"
     "    s = e.sum(dim=dim, keepdim=True)\n"
     "    return e / torch.where(s == 0, torch.ones_like(s), s)",
     checks.check_softmax, "the maximum of the whole tensor"),
    ("def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):\n"
     "    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
     "    if attn_mask is not None:\n"
     "        s = s.masked_fill(~attn_mask, float('-inf'))\n"
     "    return softmax(s) @ v",
     checks.check_scaled_dot_product_attention, "is_causal=True has no effect"),
    (K_NOT_TRANSPOSED.strip(), checks.check_scaled_dot_product_attention, "the scores are Q @ K, not Q @ K^T"),
    ("def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):\n"
     "    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
     "    if is_causal:\n"
     "        attn_mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)\n"
     "    if attn_mask is not None:\n"
     "        s = s.masked_fill(~attn_mask, float('-inf'))\n"
     "    return torch.softmax(s, dim=-1) @ v",
     checks.check_scaled_dot_product_attention, "NaN where the answer is 0"),
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


def test_public_checks_do_not_touch_the_global_generator(reference):
    """The module check builds SelfAttention under checks.seeded: the student's RNG state is kept."""
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    checks.check_self_attention(reference["SelfAttention"])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_only_the_catalogue_mistake_is_named(reference):
    """A stable softmax with NaN rows gets the all -inf hint, not the overflow one; keys and values
    swapped (d_k != d_v: the product cannot run) get their own hint, not the generic shapes one."""
    with pytest.raises(CheckFailed) as failure:
        checks.check_softmax(_define(reference, STABLE_BUT_NAN, "softmax"))
    text = str(failure.value)
    assert "NaN in a slice whose entries are all -inf" in text and "Subtract the maximum" not in text, text
    with pytest.raises(CheckFailed) as failure:
        checks.check_self_attention(_define(reference, KEYS_VALUES_SWAPPED, "SelfAttention"))
    text = str(failure.value)
    assert "raised RuntimeError" in text and "keys and values are swapped" in text, text
    assert "shapes of a product" not in text, text


def test_a_mask_on_the_wrong_device_keeps_its_own_hint():
    """The one hint the CPU cases cannot show as a catalogue mistake: a mask made on the CPU
    while the grader asked for another device (meta stands in for a GPU)."""
    expected = torch.ones(3, 3, dtype=torch.bool, device="meta")
    got = torch.ones(3, 3, dtype=torch.bool).tril()
    assert checks.CAUSAL_DEVICE.matches(got, expected, ())
    assert not checks.CAUSAL_DEVICE.matches(got, got, ())
