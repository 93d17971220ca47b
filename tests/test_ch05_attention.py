"""Chapter 5 (attention in the encoder–decoder): grading of typical submissions, and the public checks.

One class is graded once: the reference, the untouched exercise, and one typical mistake per
exercise. Each mistake must cost points in its own exercise (and in the decoder step, which calls
it, at most) and show that mistake's hint. The hints are the catalogue's
(solutions/05-attention/mistakes.yaml): the students' code here is written otherwise than its
patches, and must still be recognised.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from autograder.chapters import ch05_attention as checks
from autograder.spec import CheckFailed
from conftest import grade_chapter, reference_namespace

ASSIGNMENT = "05-attention"
POINTS = {"test_multiplicative": 2.0, "test_additive": 2.0, "test_attention_weights": 2.0,
          "test_context_vector": 1.0, "test_attentive_decoder_step": 3.0}
FULL = sum(POINTS.values())

# Exercise 1: h^T W_a^T hbar_s instead of h^T W_a hbar_s (invisible on symmetric W_a).
GENERAL_TRANSPOSED = '''
def dot_score(h, H):
    return torch.einsum("bd,bsd->bs", h, H)

def general_score(h, H, W_a):
    return torch.einsum("bk,bsk->bs", h @ W_a.T, H)
'''

# Exercise 2: the key concatenated before the query.
CONCAT_SWAPPED = '''
def concat_score(h, H, W_a, v_a):
    q = h[:, None, :].expand(-1, H.shape[1], -1)
    return torch.tanh(torch.cat([H, q], dim=-1) @ W_a.T) @ v_a

def additive_score(h, H, W_q, W_k, v):
    return torch.tanh((h @ W_q.T)[:, None, :] + H @ W_k.T) @ v
'''

# Exercise 3: padding zeroed after the softmax, without renormalising.
MASK_AFTER_SOFTMAX = '''
def attention_weights(scores, mask):
    return torch.softmax(scores, dim=-1) * mask
'''

# Exercise 4: (B, S) @ (B, S, d_v) broadcasts to (B, B, d_v).
CONTEXT_BROADCAST = '''
def context_vector(weights, values):
    return weights @ values
'''

# Exercise 5: the previous state scores the keys (Bahdanau's order inside Luong's decoder).
STEP_PREVIOUS_STATE = '''
def attentive_decoder_step(x_t, h_prev, H, mask, params):
    p = params
    alpha = attention_weights(general_score(h_prev, H, p["W_a"]), mask)
    h_t = torch.gru_cell(x_t, h_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    c_t = context_vector(alpha, H)
    h_tilde = torch.tanh(torch.cat([c_t, h_t], dim=-1) @ p["W_c"].T)
    return h_tilde @ p["W_o"].T + p["b_o"], h_t, alpha
'''

# Exercise 5, public check only: [h_t; c_t] instead of [c_t; h_t].
STEP_CONCAT_ORDER = '''
def attentive_decoder_step(x_t, h_prev, H, mask, params):
    p = params
    h_t = torch.gru_cell(x_t, h_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    alpha = attention_weights(general_score(h_t, H, p["W_a"]), mask)
    c_t = context_vector(alpha, H)
    logits = torch.tanh(torch.cat([h_t, c_t], dim=-1) @ p["W_c"].T) @ p["W_o"].T + p["b_o"]
    return logits, h_t, alpha
'''

# Exercise 5, public check only: the attentional state returned as the new state.
STEP_RETURNS_H_TILDE = '''
def attentive_decoder_step(x_t, h_prev, H, mask, params):
    p = params
    h_t = torch.gru_cell(x_t, h_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    alpha = attention_weights(general_score(h_t, H, p["W_a"]), mask)
    h_tilde = torch.tanh(torch.cat([context_vector(alpha, H), h_t], dim=-1) @ p["W_c"].T)
    return h_tilde @ p["W_o"].T + p["b_o"], h_tilde, alpha
'''

# Exercise 5, public check only: the padding mask forgotten.
STEP_NO_MASK = STEP_CONCAT_ORDER.replace(
    'attention_weights(general_score(h_t, H, p["W_a"]), mask)',
    'torch.softmax(general_score(h_t, H, p["W_a"]), dim=-1)').replace("[h_t, c_t]", "[c_t, h_t]")
assert "softmax" in STEP_NO_MASK and "[c_t, h_t]" in STEP_NO_MASK

MISTAKES = {  # student -> (replaced name, source, the exercise it costs, words of its hint)
    "general_transposed": ("general_score", GENERAL_TRANSPOSED, "test_multiplicative",
                           "not h @ W_a.T"),
    "concat_swapped": ("concat_score", CONCAT_SWAPPED, "test_additive", "the query comes first"),
    "mask_after_softmax": ("attention_weights", MASK_AFTER_SOFTMAX, "test_attention_weights",
                           "without renormalising"),
    "context_broadcast": ("context_vector", CONTEXT_BROADCAST, "test_context_vector",
                          "broadcasts to (B, B, d_v)"),
    "step_previous_state": ("attentive_decoder_step", STEP_PREVIOUS_STATE,
                            "test_attentive_decoder_step", "not h_prev"),
}
CALLED_BY_THE_STEP = {"test_multiplicative", "test_attention_weights", "test_context_vector"}


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


@pytest.mark.parametrize("student", list(MISTAKES))
def test_a_typical_mistake_gets_partial_credit_and_its_hint(graded, student):
    _, _, cell, words = MISTAKES[student]
    row = graded[student]
    report = row["report"][cell]
    assert 0 < row["score"] < FULL, row["report"]
    assert _cell_score(report) < POINTS[cell], report
    assert words in report, report
    for other in POINTS.keys() - {cell}:  # exercises that do not call the mistaken function
        if not (cell in CALLED_BY_THE_STEP and other == "test_attentive_decoder_step"):
            assert _cell_score(row["report"][other]) == POINTS[other], row["report"][other]


def test_a_mistake_that_is_right_on_some_inputs_keeps_those_points(graded):
    """Transposing a square W_a or scoring h_prev is wrong on most inputs, not on all of them:
    dot_score is right, and with one source position every alpha is 1."""
    for student in ("general_transposed", "step_previous_state"):
        _, _, cell, _ = MISTAKES[student]
        assert 0 < _cell_score(graded[student]["report"][cell]) < POINTS[cell]


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
    checks.check_multiplicative(ns["dot_score"], ns["general_score"])
    checks.check_additive(ns["concat_score"], ns["additive_score"])
    checks.check_attention_weights(ns["attention_weights"])
    checks.check_context_vector(ns["context_vector"])
    checks.check_attentive_decoder_step(ns["attentive_decoder_step"])


def test_reference_passes_every_public_check(reference, capsys):
    _run_checks(reference)
    assert capsys.readouterr().out.count("✓") == 5


@pytest.mark.parametrize("source, words", [
    (GENERAL_TRANSPOSED, "not h @ W_a.T"),
    ("def dot_score(h, H):\n    return H @ h[:, :, None]", "Squeeze the size-1 axis"),
    ("def dot_score(h, H):\n    return torch.einsum('bd,bsd->bs', h, H) / h.shape[-1] ** 0.5",
     "no division by sqrt(d)"),
    (CONCAT_SWAPPED, "the query comes first"),
    ("def concat_score(h, H, W_a, v_a):\n"
     "    q = h[:, None, :].expand(-1, H.shape[1], -1)\n"
     "    return (torch.cat([q, H], dim=-1) @ W_a.T) @ v_a", "concat_score has no tanh"),
    ("def additive_score(h, H, W_q, W_k, v):\n"
     "    return torch.tanh((h @ W_q.T)[:, None, :] - H @ W_k.T) @ v", "the same scores"),
    (MASK_AFTER_SOFTMAX, "without renormalising"),
    ("def attention_weights(scores, mask):\n"
     "    return torch.softmax(scores.masked_fill(~mask, float('-inf')), -1)", "NaN in a row"),
    ("def attention_weights(scores, mask):\n"
     "    return torch.softmax(scores.masked_fill(~mask, -1e9), -1)", "weights 1/S"),
    ("def attention_weights(scores, mask):\n"
     "    return torch.softmax(scores.masked_fill(mask, float('-inf')), -1).nan_to_num(0.0)",
     "non-zero at padded positions"),
    ("def attention_weights(scores, mask):\n"
     "    return torch.softmax(scores.masked_fill(~mask, float('-inf')), 0).nan_to_num(0.0)",
     "the softmax runs over the wrong axis"),
    (CONTEXT_BROADCAST, "broadcasts to (B, B, d_v)"),
    ("def context_vector(weights, values):\n    return values.mean(1)", "plain mean"),
    (STEP_PREVIOUS_STATE, "not h_prev"),
    # found by a student-eye review: each once passed its check or got a misleading hint
    ("def dot_score(h, H):\n    return h @ H.transpose(1, 2)", "its own axis, h[:, None, :]"),
    ("def dot_score(h, H):\n    return (h @ H.transpose(1, 2)).squeeze(1)", "shape (B, B, S)"),
    ("def additive_score(h, H, W_q, W_k, v):\n"
     "    return torch.tanh(h @ W_q.T + H @ W_k.T) @ v", "Give it a middle axis"),
    ("def attention_weights(scores, mask):\n"
     "    return torch.softmax(scores.masked_fill(~mask, -1e9), -1) * mask",
     "does not fit in float16"),
    ("def context_vector(weights, values):\n    return (weights * values).sum(1)",
     "lines the weights up with the last two axes"),
    (STEP_NO_MASK, "alpha puts weight on padded source positions"),
    ("def attention_weights(scores, mask):\n    return torch.softmax(scores * mask, -1)",
     "exp(0) = 1 still gives them weight"),
    ("def context_vector(weights, values):\n    return weights.unsqueeze(1) @ values",
     "drop the middle axis"),
    (STEP_CONCAT_ORDER, "with the context first"),
    (STEP_RETURNS_H_TILDE, "return the GRU cell's new state h_t"),
    (STEP_CONCAT_ORDER.replace("return logits, h_t, alpha", "return logits"), "three tensors"),
])
def test_a_typical_mistake_fails_its_public_check_with_the_hint(reference, source, words):
    ns = _with(reference, source)
    with pytest.raises(CheckFailed) as failure:
        _run_checks(ns)
    assert words in str(failure.value), str(failure.value)


def test_the_public_step_oracle_matches_an_explicit_loop():
    """The check's oracle (nn.GRUCell + scaled_dot_product_attention) equals the step written out
    position by position, so the check is about the exercise's formula, not PyTorch's layers."""
    g = torch.Generator().manual_seed(7)
    B, S, e, d, V = 2, 4, 3, 5, 6
    x_t, h_prev = torch.randn(B, e, generator=g, dtype=torch.float64), torch.randn(B, d, generator=g, dtype=torch.float64)
    H = torch.randn(B, S, d, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    p = checks._step_params(g, e, d, V, torch.float64)
    logits, h_t, alpha = checks._step_by_modules(x_t, h_prev, H, mask, p)
    for b in range(B):
        r, z, n = (p["W_ih"] @ x_t[b] + p["b_ih"]).chunk(3)
        hr, hz, hn = (p["W_hh"] @ h_prev[b] + p["b_hh"]).chunk(3)
        r, z = torch.sigmoid(r + hr), torch.sigmoid(z + hz)
        h = (1 - z) * torch.tanh(n + r * hn) + z * h_prev[b]
        scores = torch.stack([h @ p["W_a"] @ H[b, s] for s in range(S) if mask[b, s]])
        a = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
        c = sum(a[s] * H[b, s] for s in range(len(a)))
        out = p["W_o"] @ torch.tanh(p["W_c"] @ torch.cat([c, h])) + p["b_o"]
        torch.testing.assert_close(h_t[b], h)
        torch.testing.assert_close(alpha[b, :len(a)], a)
        assert not alpha[b, len(a):].any()
        torch.testing.assert_close(logits[b], out)
