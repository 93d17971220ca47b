"""Chapter 7 (multi-head and cross-attention): grading of typical submissions, and the public checks.

One class is graded once: the reference, the untouched exercise, and one typical mistake per
exercise (plus the lecture note's bug rewritten as a module). Each mistake must cost points in
its own exercise only and show that mistake's hint.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from autograder.chapters import ch07_multi_head as checks
from autograder.spec import CheckFailed
from conftest import grade_chapter, reference_namespace

ASSIGNMENT = "07-multi-head"
POINTS = {"test_split_merge_heads": 2.0, "test_multi_head_self_attention": 3.0,
          "test_cross_attention": 2.0, "test_fix_the_bug": 3.0}
FULL = sum(POINTS.values())

# Exercise 1: heads dealt out in turn when merging (d_head put before h).
MERGE_INTERLEAVED = '''
def split_heads(x, n_head):
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)

def merge_heads(x):
    B, h, T, d_head = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, h * d_head)
'''

# Exercise 2, lecture note 000's bug in our own words: the per-head output is transposed once
# too often before the merge, and the scores are divided by sqrt(d_model).
SEED000_MODULE = '''
class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.n_head = n_head
        self.W_q = nn.Linear(d_model, d_model)
        self.W_k = nn.Linear(d_model, d_model)
        self.W_v = nn.Linear(d_model, d_model)
        self.W_o = nn.Linear(d_model, d_model)

    def forward(self, x, key_padding_mask=None, is_causal=False):
        B, T, C = x.shape
        shape = (B, T, self.n_head, C // self.n_head)
        q = self.W_q(x).view(shape).permute(0, 2, 1, 3)
        k = self.W_k(x).view(shape).permute(0, 2, 1, 3)
        v = self.W_v(x).view(shape).permute(0, 2, 1, 3)
        scores = q @ k.permute(0, 1, 3, 2) / math.sqrt(C)
        if is_causal:
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        out = torch.nan_to_num(scores.softmax(-1)) @ v
        out = out.transpose(-2, -1).transpose(1, 2)
        return self.W_o(out.reshape(B, T, C))
'''

# Exercise 2: divides the scores by sqrt(d_model) (merge correct).
SCALE_D_MODEL_MODULE = SEED000_MODULE.replace(
    "out = out.transpose(-2, -1).transpose(1, 2)", "out = out.transpose(1, 2)")

# Exercise 3: the padding mask handed to SDPA as if True meant "attend".
CROSS_MASK_POLARITY = '''
def cross_attention(y, memory, W_q, W_k, W_v, W_o, n_head, src_padding_mask=None):
    q = split_heads(y @ W_q.T, n_head)
    k = split_heads(memory @ W_k.T, n_head)
    v = split_heads(memory @ W_v.T, n_head)
    mask = None if src_padding_mask is None else src_padding_mask[:, None, None, :]
    heads = torch.nan_to_num(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    return merge_heads(heads) @ W_o.T
'''

# Exercise 3 (public check only): queries from memory, keys and values from y (the source
# padding mask then no longer fits the keys, and F.scaled_dot_product_attention raises).
CROSS_ROLES_SWAPPED = '''
def cross_attention(y, memory, W_q, W_k, W_v, W_o, n_head, src_padding_mask=None):
    q, k, v = split_heads(memory @ W_q.T, n_head), split_heads(y @ W_k.T, n_head), split_heads(y @ W_v.T, n_head)
    if src_padding_mask is None:
        return merge_heads(F.scaled_dot_product_attention(q, k, v)) @ W_o.T
    allowed = ~src_padding_mask[:, None, None, :]
    return merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)) @ W_o.T
'''

# Exercise 4: only the scale fixed; the extra transpose is still there.
HALF_FIXED = '''
def max_abs_difference(mha_fn, x, W_q, W_k, W_v, W_o, n_head):
    C = x.shape[-1]
    mha = nn.MultiheadAttention(C, n_head, bias=False, batch_first=True, device=x.device, dtype=x.dtype)
    mha.load_state_dict({"in_proj_weight": torch.cat([W_q, W_k, W_v]), "out_proj.weight": W_o})
    with torch.no_grad():
        return float((mha_fn(x, W_q, W_k, W_v, W_o, n_head) - mha(x, x, x)[0]).abs().max())

def fixed_multi_head_attention(x, W_q, W_k, W_v, W_o, n_head):
    B, T, C = x.shape
    d_head = C // n_head
    q, k, v = ((x @ W.T).view(B, T, n_head, d_head).transpose(1, 2) for W in (W_q, W_k, W_v))
    heads = ((q @ k.transpose(-2, -1) / math.sqrt(d_head)).softmax(-1) @ v).transpose(-2, -1)
    return heads.transpose(1, 2).reshape(B, T, C) @ W_o.T

def diagnose(d_model, n_head):
    return {"wrong_lines": [9, 8], "mixed_axes": ["d_head", "T"], "scale_used": d_model ** 0.5,
            "scale_correct": (d_model / n_head) ** 0.5}
'''

# Exercise 2: the padding mask passed to SDPA as if True meant "attend", and is_causal ignored
# (two mistakes at once: named together).
PADDING_AS_ALLOWED = '''
class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.n_head = n_head
        self.W_q, self.W_k = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.W_v, self.W_o = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, x, key_padding_mask=None, is_causal=False):
        q, k, v = (split_heads(W(x), self.n_head) for W in (self.W_q, self.W_k, self.W_v))
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.W_o(merge_heads(torch.nan_to_num(heads)))
'''

# Exercise 3: the scores divided by sqrt(d_model), written out by hand.
CROSS_SCALE_D_MODEL = '''
def cross_attention(y, memory, W_q, W_k, W_v, W_o, n_head, src_padding_mask=None):
    q, k, v = split_heads(y @ W_q.T, n_head), split_heads(memory @ W_k.T, n_head), split_heads(memory @ W_v.T, n_head)
    s = q @ k.transpose(-2, -1) / math.sqrt(y.shape[-1])
    if src_padding_mask is not None:
        s = s.masked_fill(src_padding_mask[:, None, None, :], float("-inf"))
    return merge_heads(torch.nan_to_num(s.softmax(-1)) @ v) @ W_o.T
'''

# Exercise 4: only the merge fixed; the scale sqrt(d_model) left in (the rest of the cell right).
SCALE_LEFT_IN = HALF_FIXED.split("def fixed_multi_head_attention")[0] + '''def fixed_multi_head_attention(x, W_q, W_k, W_v, W_o, n_head):
    B, T, C = x.shape
    q, k, v = (split_heads(x @ W.T, n_head) for W in (W_q, W_k, W_v))
    return merge_heads((q @ k.transpose(-2, -1) / math.sqrt(C)).softmax(-1) @ v) @ W_o.T
''' + "\ndef diagnose" + HALF_FIXED.split("def diagnose")[1]

# Exercise 4: nothing fixed, both of the lecture note's bugs still there.
UNFIXED = HALF_FIXED.split("def fixed_multi_head_attention")[0] + '''def fixed_multi_head_attention(x, W_q, W_k, W_v, W_o, n_head):
    return checks.buggy_multi_head_attention(x, W_q, W_k, W_v, W_o, n_head)
''' + "\ndef diagnose" + HALF_FIXED.split("def diagnose")[1]

MISTAKES = {  # student -> (replaced name, source, the exercise it costs, words of its hint)
    "merge_interleaved": ("split_heads", MERGE_INTERLEAVED, "test_split_merge_heads",
                          "heads merged in the wrong order"),
    "seed000": ("MultiHeadSelfAttention", SEED000_MODULE, "test_multi_head_self_attention",
                "heads merged in the wrong order"),
    "scale_d_model": ("MultiHeadSelfAttention", SCALE_D_MODEL_MODULE, "test_multi_head_self_attention",
                      "divide by √d_head"),
    "padding_as_allowed": ("MultiHeadSelfAttention", PADDING_AS_ALLOWED, "test_multi_head_self_attention",
                           "(1) padded keys received attention"),
    "cross_polarity": ("cross_attention", CROSS_MASK_POLARITY, "test_cross_attention",
                       "must be IGNORED"),
    "cross_scale_d_model": ("cross_attention", CROSS_SCALE_D_MODEL, "test_cross_attention",
                            "the scores are divided by √d_model"),
    "half_fixed": ("max_abs_difference", HALF_FIXED, "test_fix_the_bug",
                   "heads merged in the wrong order"),
    "scale_left_in": ("max_abs_difference", SCALE_LEFT_IN, "test_fix_the_bug",
                      "still divides the scores by √d_model"),
    "unfixed": ("max_abs_difference", UNFIXED, "test_fix_the_bug",
                "these two mistakes together"),
}


def _cell_score(report: str) -> float:
    return float(re.search(r"([\d.]+) of [\d.]+ points", report).group(1))


@pytest.fixture(scope="module")
def graded(course: Path, tmp_path_factory) -> dict[str, dict]:
    return grade_chapter(course, ASSIGNMENT, MISTAKES, tmp_path_factory.mktemp("downloads"))


def test_reference_scores_full_marks(graded):
    assert graded["correct"]["score"] == FULL, graded["correct"]["report"]


def test_untouched_exercise_scores_zero_and_says_what_to_write(graded):
    row = graded["untouched"]
    assert row["score"] == 0
    assert set(row["report"]) == set(POINTS)
    for report in row["report"].values():
        assert "not written yet" in report and "Traceback" not in report, report


@pytest.mark.parametrize("student", [s for s in MISTAKES if s != "seed000"])
def test_a_typical_mistake_gets_partial_credit_and_its_hint(graded, student):
    _, _, cell, words = MISTAKES[student]
    row = graded[student]
    report = row["report"][cell]
    assert 0 < _cell_score(report) < POINTS[cell], report
    assert words in report, report
    for other in POINTS.keys() - {cell}:  # exercises that do not call the mistaken function
        if student != "merge_interleaved" or other == "test_fix_the_bug":
            assert _cell_score(row["report"][other]) == POINTS[other], row["report"][other]


def test_the_lecture_notes_bug_loses_the_module_exercise_with_the_head_order_hint(graded):
    """Both of its bugs are catalogue mistakes: the grader names them as a pair."""
    row = graded["seed000"]
    report = row["report"]["test_multi_head_self_attention"]
    assert row["score"] == FULL - POINTS["test_multi_head_self_attention"], row["report"]
    assert "0 of 3 points" in report and "heads merged in the wrong order" in report, report
    assert "divided the scores by √d_model" in report and " AND (2) heads merged in the wrong order" in report, report


# ----------------------------------------------------------------------------------------
# Public checks, run on the reference's functions in this process
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(course) -> dict:
    return reference_namespace(course, ASSIGNMENT)


def _with(reference: dict, source: str) -> dict:
    namespace = dict(reference)
    exec(source, namespace)
    return namespace


def _run_checks(ns: dict) -> None:
    checks.check_split_merge_heads(ns["split_heads"], ns["merge_heads"])
    checks.check_multi_head_self_attention(ns["MultiHeadSelfAttention"])
    checks.check_cross_attention(ns["cross_attention"])
    checks.check_fix_the_bug(ns["fixed_multi_head_attention"], ns["diagnose"], ns["max_abs_difference"],
                             checks.buggy_multi_head_attention)


def test_reference_passes_every_public_check(reference, capsys):
    _run_checks(reference)
    assert capsys.readouterr().out.count("✓") == 4


def test_the_buggy_function_really_differs_from_pytorch(reference):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 12, generator=g, dtype=torch.float64)
    W = [torch.randn(12, 12, generator=g, dtype=torch.float64) for _ in range(4)]
    buggy = reference["max_abs_difference"](checks.buggy_multi_head_attention, x, *W, 4)
    fixed = reference["max_abs_difference"](reference["fixed_multi_head_attention"], x, *W, 4)
    assert buggy > 1e-1 and fixed < 1e-12, (buggy, fixed)


MODULE_WITH = '''
class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.n_head = n_head
        self.W_q, self.W_k = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.W_v, self.W_o = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, x, key_padding_mask=None, is_causal=False):
        B, T, C = x.shape
        q, k, v = (split_heads(W(x), self.n_head) for W in (self.W_q, self.W_k, self.W_v))
        blocked = torch.zeros(B, 1, T, T, dtype=torch.bool, device=x.device)
        if is_causal:
            blocked = blocked | torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        if key_padding_mask is not None:
            blocked = blocked | key_padding_mask[:, None, None, :]
        scores = q @ k.transpose(-2, -1) / SCALE
        {weights}
        return {out}
'''
_SOFTMAX = "weights = scores.masked_fill(blocked, float('-inf')).softmax(-1)"


def _module(weights: str = _SOFTMAX, out: str = "self.W_o(merge_heads(torch.nan_to_num(weights) @ v))",
            scale: str = "math.sqrt(C // self.n_head)") -> str:
    return MODULE_WITH.replace("SCALE", f"({scale})").format(weights=weights, out=out)


@pytest.mark.parametrize("source, check, words", [
    (MERGE_INTERLEAVED, "split_merge", "heads merged in the wrong order"),
    ("def merge_heads(x):\n    return x.reshape(x.shape[0], x.shape[2], -1)", "split_merge",
     "reshaped (B, h, T, d_head) straight to (B, T, C)"),
    ("def split_heads(x, n_head):\n    return x.reshape(x.shape[0], n_head, x.shape[1], -1)",
     "split_merge", "cuts the sequence into pieces"),
    (SEED000_MODULE, "module", "heads merged in the wrong order"),
    (SCALE_D_MODEL_MODULE, "module", "divided the scores by √d_model"),
    (_module(scale="1"), "module", "forget to divide the scores by √d_head"),
    (_module(scale="C // self.n_head"), "module", "not by d_head"),
    (_module(weights="weights = scores.softmax(-1)"), "module", "forward ignores its masks"),
    (_module(weights="weights = scores.softmax(-1).masked_fill(blocked, 0.0)"), "module",
     "renormalisation"),
    (_module(weights="weights = scores.masked_fill(blocked, float('-inf')).softmax(-2)"), "module",
     "sum to 1 down each column"),
    (_module(out="self.W_o(merge_heads(weights @ v))"), "module", "NaN where a query has no key"),
    (_module(out="merge_heads(torch.nan_to_num(weights) @ v)"), "module", "finish with W_o"),
    (CROSS_MASK_POLARITY, "cross", "must be IGNORED"),
    (CROSS_SCALE_D_MODEL, "cross", "the scores are divided by √d_model"),
    (SCALE_LEFT_IN, "bug", "still divides the scores by √d_model"),
    (UNFIXED, "bug", "the fixed function still transposes each head's output"),  # at T = 1 only that shows
    (CROSS_ROLES_SWAPPED, "cross", "queries must come from the decoder states y"),
    (HALF_FIXED, "bug", "heads merged in the wrong order"),
])
def test_a_typical_mistake_fails_its_public_check_with_the_hint(reference, source, check, words):
    ns = _with(reference, source)
    run = {"split_merge": lambda: checks.check_split_merge_heads(ns["split_heads"], ns["merge_heads"]),
           "module": lambda: checks.check_multi_head_self_attention(ns["MultiHeadSelfAttention"]),
           "cross": lambda: checks.check_cross_attention(ns["cross_attention"]),
           "bug": lambda: checks.check_fix_the_bug(ns["fixed_multi_head_attention"], ns["diagnose"],
                                                   ns["max_abs_difference"],
                                                   checks.buggy_multi_head_attention)}[check]
    with pytest.raises(CheckFailed) as failure:
        run()
    assert words in str(failure.value), str(failure.value)


def test_diagnosis_accepts_either_order_and_rejects_wrong_answers():
    expected = {"wrong_lines": (8, 9), "mixed_axes": ("T", "d_head"), "scale_used": 4.0,
                "scale_correct": 2.0}
    right = {"wrong_lines": [9, 8], "mixed_axes": ["d_head", "T"], "scale_used": 4.0, "scale_correct": 2.0}
    assert checks._axes_check(right, expected, ()) is None
    for key, wrong in (("wrong_lines", (9, 10)), ("mixed_axes", ("h", "T")), ("scale_used", 16),
                       ("scale_correct", 4.0)):
        assert key in checks._axes_check({**right, key: wrong}, expected, ())


def test_the_printed_line_numbers_point_at_the_two_wrong_lines():
    import inspect
    lines = inspect.getsource(checks.buggy_multi_head_attention).splitlines()
    assert "math.sqrt(C)" in lines[8 - 1]
    assert "softmax" in lines[9 - 1] and lines[9 - 1].split("#")[0].rstrip().endswith(".transpose(-2, -1)")


def test_torch_oracle_matches_a_loop_over_heads():
    """The public checks' oracle (nn.MultiheadAttention with packed weights) equals attention
    computed head by head with explicit slices: the packing is understood correctly."""
    g = torch.Generator().manual_seed(5)
    B, T_q, T_k, C, h = 2, 3, 4, 6, 3
    d = C // h
    y, mem = (torch.randn(B, n, C, generator=g, dtype=torch.float64) for n in (T_q, T_k))
    W_q, W_k, W_v, W_o = (torch.randn(C, C, generator=g, dtype=torch.float64) for _ in range(4))
    mask = torch.tensor([[False, False, True, True], [False, False, False, False]])
    heads = []
    for i in range(h):
        s = slice(i * d, (i + 1) * d)
        scores = (y @ W_q[s].T) @ (mem @ W_k[s].T).transpose(1, 2) / d ** 0.5
        heads.append(scores.masked_fill(mask[:, None, :], float("-inf")).softmax(-1) @ (mem @ W_v[s].T))
    expected = torch.cat(heads, -1) @ W_o.T
    got = checks.torch_mha(y, mem, h, W_q, W_k, W_v, W_o, key_padding_mask=mask)
    torch.testing.assert_close(got, expected)


def test_the_module_check_does_not_touch_the_global_generator(reference):
    """The public check builds the student's module under checks.seeded: their RNG state is kept."""
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    checks.check_multi_head_self_attention(reference["MultiHeadSelfAttention"])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_random_cases_never_hide_the_scale_behind_one_head_or_one_position():
    """A wrong scale vanishes with h = 1 (√d_model = √d_head) or T = 1 (each weight is 1): the
    random draws of every attention case have h >= 2 and T >= 2; those sizes are extra cases."""
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        B, T, h, d = checks._sizes(g)
        assert h >= 2 and T >= 2, (seed, B, T, h, d)
        y, memory, *_, n_head, _ = checks._cross_args(torch.Generator().manual_seed(seed))
        assert memory.shape[1] >= 2 and y.shape[1] >= 2 and n_head >= 2


def test_a_wrong_line_number_gets_a_hint():
    message = checks._axes_check({"wrong_lines": (9, 10), "mixed_axes": ("T", "d_head"),
                                  "scale_used": 1.0, "scale_correct": 1.0},
                                 {"wrong_lines": (8, 9), "mixed_axes": ("T", "d_head"),
                                  "scale_used": 1.0, "scale_correct": 1.0}, ())
    assert "Hint:" in message and "scale" in message, message
