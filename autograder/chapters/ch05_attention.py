"""Chapter 5 — attention in the encoder–decoder: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook, on examples small enough to verify by
hand and on properties every correct answer has (the general score with ``W_a = I`` is the dot
score; concat with ``W_a = [W_q W_k]`` is Bahdanau's additive score; weights that pick one
position give that position's value). ``CASES`` is what the grader runs on random inputs. The
typical mistakes and their hints are the catalogue's (``solutions/05-attention/mistakes.yaml``,
never released): a hint is shown when a result is what one of them gives, on the hidden cases
and on the examples here.

Shapes follow the exercise: query ``h`` (B, d_q), encoder states ``H`` (B, S, d_k), ``mask``
(B, S) boolean with ``True`` at real source positions.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import call, expect_example, expect_shape, randint, randn, real_positions
from ..spec import Case, CheckFailed, Hint, passed

# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------
# Hints: the typical mistakes are the catalogue's (solutions/05-attention/mistakes.yaml), each a
# patch of the reference whose results the grader and the public checks compare with. Only a
# mistake no patch expresses keeps a hint here.
# ----------------------------------------------------------------------------------------

def _parts(got: Any) -> tuple | None:
    return tuple(got) if isinstance(got, (tuple, list)) and len(got) == 3 else None


STEP_TUPLE = Hint(
    "return a tuple of three tensors in this order: (logits (B, V), h_t (B, d), alpha (B, S)).",
    lambda got, exp, args: _parts(got) is None)
STEP_HINTS = (STEP_TUPLE,)


# ----------------------------------------------------------------------------------------
# Public checks (run in the student's notebook)
# ----------------------------------------------------------------------------------------

def _cuda_copy(args: tuple) -> tuple | None:
    """The same arguments on the GPU, or None on a machine without one."""
    if not torch.cuda.is_available():
        return None
    return tuple({k: v.cuda() for k, v in a.items()} if isinstance(a, dict) else a.cuda() for a in args)


def check_multiplicative(dot_score: Callable, general_score: Callable) -> None:
    """A 2-D example worked by hand, float64 with B > 1, then W_a = I (general = dot) and a
    non-square W_a."""
    h = torch.tensor([[1., 2.]])
    H = torch.tensor([[[1., 0.], [0., 1.], [1., 1.]]])
    shown = "dot_score(h=[[1, 2]], H=[[[1, 0], [0, 1], [1, 1]]])"
    expect_example(call(dot_score, shown, h, H), torch.tensor([[1., 2., 3.]]), shown,
                   "h·(1, 0) = 1, h·(0, 1) = 2, h·(1, 1) = 3.")
    W_a = torch.tensor([[1., 2.], [0., 1.]])
    shown = "general_score(h=[[1, 2]], H=[[[1, 0], [0, 1], [1, 1]]], W_a=[[1, 2], [0, 1]])"
    expect_example(call(general_score, shown, h, H, W_a), torch.tensor([[1., 4., 5.]]), shown,
                   "h^T W_a = [1, 4]; its dot products with the keys are 1, 4, 5.")
    g = torch.Generator().manual_seed(0)
    h64 = torch.randn(3, 6, generator=g, dtype=torch.float64)
    H64 = torch.randn(3, 2, 6, generator=g, dtype=torch.float64)
    shown = "dot_score(<float64 h (3, 6)>, <float64 H (3, 2, 6)>)"
    expect_example(call(dot_score, shown, h64, H64), torch.einsum("bd,bsd->bs", h64, H64), shown,
                   "float64 in, float64 out, (B, S) = (3, 2).")
    h, H = torch.randn(2, 5, generator=g), torch.randn(2, 4, 5, generator=g)
    shown = "general_score(<random h (2, 5)>, <random H (2, 4, 5)>, W_a=torch.eye(5))"
    expect_example(call(general_score, shown, h, H, torch.eye(5)),
                   call(dot_score, "dot_score(<random h (2, 5)>, <random H (2, 4, 5)>)", h, H), shown,
                   "with W_a = I the general score is the dot score.")
    h, H = torch.tensor([[1., 0., 2.]]), torch.tensor([[[1., 1., 1., 1., 1.]]])
    W_a = torch.arange(15.).reshape(3, 5)
    shown = "general_score(h=[[1, 0, 2]], H=[[[1, 1, 1, 1, 1]]], W_a=torch.arange(15.).reshape(3, 5))"
    expect_example(call(general_score, shown, h, H, W_a), torch.tensor([[130.]]), shown,
                   "d_q = 3 and d_k = 5 differ: h^T W_a = row 0 + 2 * row 2 = [20, 23, 26, 29, 32], "
                   "whose dot product with a key of ones is 130; B = S = 1 keeps shape (1, 1).")
    count = 5
    if (on_gpu := _cuda_copy((h64, H64))) is not None:  # the grader may run your code on a GPU
        shown = "dot_score(<h on cuda>, <H on cuda>)"
        expect_example(call(dot_score, shown, *on_gpu), torch.einsum("bd,bsd->bs", *on_gpu), shown,
                       "the scores live on the device of the inputs.")
        count += 1
    passed("dot_score/general_score", count)


def check_additive(concat_score: Callable, additive_score: Callable) -> None:
    """The 1-D example worked by hand, then concat with W_a = [W_q W_k] equals additive."""
    h, H = torch.tensor([[0.5]]), torch.tensor([[[0.5], [0.]]])
    W_a, v_a = torch.tensor([[1., -1.]]), torch.tensor([2.])
    expected = torch.tensor([[0., 2 * torch.tanh(torch.tensor(0.5)).item()]])
    shown = "concat_score(h=[[0.5]], H=[[[0.5], [0.]]], W_a=[[1, -1]], v_a=[2])"
    expect_example(call(concat_score, shown, h, H, W_a, v_a), expected, shown,
                   "W_a [h; hbar_s] = h - hbar_s, so the scores are 2 tanh(0) = 0 and 2 tanh(0.5) = 0.9242.")
    W_q, W_k, v = torch.tensor([[1.]]), torch.tensor([[-1.]]), torch.tensor([2.])
    shown = "additive_score(h=[[0.5]], H=[[[0.5], [0.]]], W_q=[[1]], W_k=[[-1]], v=[2])"
    expect_example(call(additive_score, shown, h, H, W_q, W_k, v), expected, shown,
                   "W_q h + W_k hbar_s = h - hbar_s: the same scores, 0 and 0.9242.")
    h, H = torch.tensor([[0.5], [0.]]), torch.tensor([[[0.5], [0.]], [[1.], [0.5]]])
    expected = 2 * torch.tanh(torch.tensor([[0., 0.5], [-1., -0.5]]))
    for name, fn, weights in (("concat_score", concat_score, (W_a, v_a)),
                              ("additive_score", additive_score, (W_q, W_k, v))):
        shown = f"{name}(h=[[0.5], [0.]], H=[[[0.5], [0.]], [[1.], [0.5]]], <weights as above>)"
        expect_example(call(fn, shown, h, H, *weights), expected, shown,
                       "two batch rows, each scored with its own query: row 0 as above, row 1 "
                       "2 tanh(0 - 1) = -1.5232 and 2 tanh(0 - 0.5) = -0.9242.")
    g = torch.Generator().manual_seed(0)
    B, S, d_q, d_k, d_a = 2, 5, 3, 4, 6
    h, H = torch.randn(B, d_q, generator=g), torch.randn(B, S, d_k, generator=g)
    W_q, W_k, v = (torch.randn(d_a, d_q, generator=g), torch.randn(d_a, d_k, generator=g),
                   torch.randn(d_a, generator=g))
    args = (h, H, W_q, W_k, v)
    shown = "additive_score(<random h (2, 3)>, <random H (2, 5, 4)>, W_q (6, 3), W_k (6, 4), v (6,))"
    got = call(additive_score, shown, *args)
    expect_shape(got, (B, S), shown)
    args = (h, H, torch.cat([W_q, W_k], dim=1), v)
    shown = "concat_score(h, H, W_a=torch.cat([W_q, W_k], dim=1), v_a=v) on the same random input"
    expect_example(call(concat_score, shown, *args), got, shown,
                   "W_a [h; hbar_s] = W_q h + W_k hbar_s when W_a = [W_q W_k]: the two scores agree.")
    count = 5
    if (on_gpu := _cuda_copy(args)) is not None:
        shown = "concat_score(<inputs on cuda>)"
        expect_example(call(concat_score, shown, *on_gpu), got.cuda(), shown,
                       "the scores live on the device of the inputs.")
        count += 1
    passed("concat_score/additive_score", count)


def check_attention_weights(attention_weights: Callable) -> None:
    """A row worked by hand, an empty row, huge scores, (B, T, S) with a (B, 1, S) mask."""
    examples = [
        (torch.tensor([[1., 2., 3.]]), torch.tensor([[True, True, False]]),
         torch.tensor([[0.2689414, 0.7310586, 0.]]),
         "the softmax of [1, 2] is [0.2689, 0.7311]; the padded position gets 0."),
        (torch.tensor([[0., 0.], [5., -5.]]), torch.tensor([[False, False], [True, True]]),
         torch.tensor([[0., 0.], [0.9999546, 0.0000454]]),
         "row 0 has no real position (an empty source): all zeros, not NaN and not [0.5, 0.5]."),
        (torch.tensor([[1e4, -1e4, 1e4]]), torch.tensor([[True, True, True]]),
         torch.tensor([[0.5, 0., 0.5]]),
         "scores of +-1e4 must not overflow: softmax subtracts the row maximum first "
         "(torch.softmax does)."),
        (torch.tensor([[[3., 1., 0.]], [[2., 2., 7.]]]).expand(2, 2, 3),
         torch.tensor([[[True, True, True]], [[True, True, False]]]),
         torch.tensor([[[0.8437947, 0.1141952, 0.0420101]] * 2, [[0.5, 0.5, 0.]] * 2]),
         "scores (B, T, S) = (2, 2, 3) with a mask (B, 1, S) that broadcasts over T."),
    ]
    for scores, mask, expected, why in examples:
        shown = f"attention_weights({scores.tolist()}, mask={mask.tolist()})"
        expect_example(call(attention_weights, shown, scores, mask), expected, shown, why)
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 7, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    shown = "attention_weights(<random float64 (3, 7)>, mask=all True)"
    expect_example(call(attention_weights, shown, scores, mask), torch.softmax(scores, -1), shown,
                   "without padding this is torch.softmax(scores, dim=-1), dtype float64.")
    half = torch.tensor([[1., 2., 3.], [0., 0., 0.]], dtype=torch.float16)
    empty = torch.tensor([[True, True, False], [False, False, False]])
    shown = ("attention_weights(<float16 scores [[1, 2, 3], [0, 0, 0]]>, "
             "mask=[[True, True, False], [False, False, False]])")
    got = call(attention_weights, shown, half, empty)
    expect_example(got, torch.tensor([[0.2689414, 0.7310586, 0.], [0., 0., 0.]]).half(), shown,
                   "float16 in, float16 out: the first example again, and an empty row.")
    count = len(examples) + 2
    if (on_gpu := _cuda_copy((scores, mask))) is not None:
        shown = "attention_weights(<scores on cuda>, <mask on cuda>)"
        expect_example(call(attention_weights, shown, *on_gpu), torch.softmax(on_gpu[0], -1), shown,
                       "the weights live on the device of the scores.")
        count += 1
    passed("attention_weights", count)


def check_context_vector(context_vector: Callable) -> None:
    """A weighted sum by hand, then weights that pick one position, and uniform weights."""
    weights = torch.tensor([[0.25, 0.75], [1., 0.]])
    values = torch.tensor([[[4., 2.], [0., 8.]], [[1., 3.], [5., 5.]]])
    shown = "context_vector([[0.25, 0.75], [1, 0]], [[[4, 2], [0, 8]], [[1, 3], [5, 5]]])"
    expect_example(call(context_vector, shown, weights, values), torch.tensor([[1., 6.5], [1., 3.]]), shown,
                   "row 0: 0.25 * (4, 2) + 0.75 * (0, 8) = (1, 6.5); row 1: all the weight on (1, 3).")
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    pick = torch.tensor([4, 0, 2])
    weights = F.one_hot(pick, 5).double()
    shown = "context_vector(<one-hot weights at positions [4, 0, 2]>, <float64 values (3, 5, 4)>)"
    expect_example(call(context_vector, shown, weights, values), values[torch.arange(3), pick], shown,
                   "weights that put all their mass on position s return the value at s.")
    weights = torch.full((3, 5), 0.2, dtype=torch.float64)
    shown = "context_vector(<uniform weights 0.2>, <float64 values (3, 5, 4)>)"
    expect_example(call(context_vector, shown, weights, values), values.mean(1), shown,
                   "uniform weights give the mean of the values.")
    count = 3
    if (on_gpu := _cuda_copy((weights, values))) is not None:
        shown = "context_vector(<weights on cuda>, <values on cuda>)"
        expect_example(call(context_vector, shown, *on_gpu), on_gpu[1].mean(1), shown,
                       "the context lives on the device of the inputs.")
        count += 1
    passed("context_vector", count)


def _step_params(g: torch.Generator, e: int, d: int, V: int, dtype: torch.dtype = torch.float32
                 ) -> dict[str, torch.Tensor]:
    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype) / shape[-1] ** 0.5
    return {"W_ih": w(3 * d, e), "W_hh": w(3 * d, d), "b_ih": w(3 * d), "b_hh": w(3 * d),
            "W_a": w(d, d), "W_c": w(d, 2 * d), "W_o": w(V, d), "b_o": w(V)}


def _step_by_modules(x_t, h_prev, H, mask, p):
    """The step assembled from PyTorch's own layers: nn.GRUCell, scaled_dot_product_attention
    (with scale=1 and the query h_t W_a, it computes the general score and its softmax), F.linear."""
    cell = nn.GRUCell(x_t.shape[-1], h_prev.shape[-1], dtype=x_t.dtype)
    with torch.no_grad():
        for name, key in (("weight_ih", "W_ih"), ("weight_hh", "W_hh"), ("bias_ih", "b_ih"),
                          ("bias_hh", "b_hh")):
            getattr(cell, name).copy_(p[key])
        h_t = cell(x_t, h_prev)
        q = (h_t @ p["W_a"])[:, None, None]                      # (B, 1, 1, d)
        c = F.scaled_dot_product_attention(q, H[:, None], H[:, None], attn_mask=mask[:, None, None],
                                           scale=1.0)[:, 0, 0]   # (B, d)
        alpha = torch.softmax((H @ q[:, 0, 0, :, None])[..., 0].masked_fill(~mask, -torch.inf), -1)
        logits = F.linear(torch.tanh(F.linear(torch.cat([c, h_t], -1), p["W_c"])), p["W_o"], p["b_o"])
    return logits, h_t, alpha


def check_attentive_decoder_step(attentive_decoder_step: Callable) -> None:
    """The whole step against PyTorch's own layers on random float64 inputs; then W_a = 0, which
    gives uniform weights over the real positions."""
    g = torch.Generator().manual_seed(0)
    B, S, e, d, V = 2, 3, 4, 5, 7
    x_t, h_prev = torch.randn(B, e, generator=g), torch.randn(B, d, generator=g)
    H = torch.randn(B, S, d, generator=g)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    p = _step_params(g, e, d, V)
    p["W_a"] = torch.zeros(d, d)
    uniform = (x_t, h_prev, H, mask, p)
    for shapes in ((3, 4, 6, 5, 9), (1, 1, 3, 2, 4)):
        B, S, e, d, V = shapes
        x_t = torch.randn(B, e, generator=g, dtype=torch.float64)
        h_prev = torch.randn(B, d, generator=g, dtype=torch.float64)
        H = torch.randn(B, S, d, generator=g, dtype=torch.float64)
        mask = real_positions(torch.randint(1, S + 1, (B,), generator=g), S)
        p = _step_params(g, e, d, V, torch.float64)
        args = (x_t, h_prev, H, mask, p)
        shown = f"attentive_decoder_step(<random float64 input, B={B}, S={S}, e={e}, d={d}, V={V}>)"
        expected = _step_by_modules(*args)
        got = call(attentive_decoder_step, shown, *args)
        expect_example(got, expected, shown,
                       "compared with nn.GRUCell, F.scaled_dot_product_attention and F.linear given the "
                       "same weights; the output is (logits, h_t, alpha).", STEP_HINTS, args)
    shown = "attentive_decoder_step(x_t (2, 4), h_prev (2, 5), H (2, 3, 5), mask, params with W_a = 0)"
    got = call(attentive_decoder_step, shown, *uniform)
    parts = _parts(got)
    if parts is None:
        raise CheckFailed(f"{shown}: got {type(got).__name__}\nHint: {STEP_TUPLE.text}")
    expect_example(parts[2], torch.tensor([[0.5, 0.5, 0.], [1 / 3, 1 / 3, 1 / 3]]), f"alpha of {shown}",
                   "with W_a = 0 every score is 0, so the weights are uniform over the real positions "
                   "(row 0 has 2, row 1 has 3).")
    passed("attentive_decoder_step", 3)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

def _dims(g: torch.Generator, S: int | None = None, B: int | None = None) -> tuple[int, int]:
    return (B if B is not None else randint(g, 2, 6)), (S if S is not None else randint(g, 2, 12))


def _dot_args(g, dtype=torch.float32, S=None, B=None):
    B, S = _dims(g, S, B)
    d = randint(g, 3, 14)
    return randn(g, B, d, dtype=dtype), randn(g, B, S, d, dtype=dtype)


def _general_args(g, square, dtype=torch.float32, S=None, B=None):
    B, S = _dims(g, S, B)
    d_q = randint(g, 3, 12)
    d_k = d_q if square else d_q + randint(g, 1, 5)
    return (randn(g, B, d_q, dtype=dtype), randn(g, B, S, d_k, dtype=dtype),
            randn(g, d_q, d_k, dtype=dtype, scale=d_q ** -0.5))


def _concat_args(g, square, dtype=torch.float32, S=None, B=None):
    B, S = _dims(g, S, B)
    d_q, d_a = randint(g, 3, 10), randint(g, 3, 11)
    d_k = d_q if square else d_q + randint(g, 1, 5)
    return (randn(g, B, d_q, dtype=dtype), randn(g, B, S, d_k, dtype=dtype),
            randn(g, d_a, d_q + d_k, dtype=dtype, scale=(d_q + d_k) ** -0.5),
            randn(g, d_a, dtype=dtype))


def _additive_args(g, square, dtype=torch.float32, S=None, B=None):
    B, S = _dims(g, S, B)
    d_q, d_a = randint(g, 3, 10), randint(g, 3, 11)
    d_k = d_q if square else d_q + randint(g, 1, 5)
    return (randn(g, B, d_q, dtype=dtype), randn(g, B, S, d_k, dtype=dtype),
            randn(g, d_a, d_q, dtype=dtype, scale=d_q ** -0.5),
            randn(g, d_a, d_k, dtype=dtype, scale=d_k ** -0.5), randn(g, d_a, dtype=dtype))


def _mask(g: torch.Generator, B: int, S: int, empty_rows: int = 0) -> torch.Tensor:
    """(B, S) padding mask with lengths in [1, S], the first ``empty_rows`` rows of length 0."""
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    lengths[0] = S  # one full row
    if empty_rows:
        lengths[torch.randperm(B, generator=g)[:empty_rows]] = 0
    return real_positions(lengths, S)


def _weights_args(g, dtype=torch.float32, empty_rows=0, S=None, scale=2.0):
    B, S = _dims(g, S)
    B = max(B, empty_rows + 1)
    return randn(g, B, S, dtype=dtype, scale=scale), _mask(g, B, S, empty_rows)


def _weights_3d_args(g, dtype=torch.float32):
    B, S = _dims(g)
    T = randint(g, 2, 6)
    return randn(g, B, T, S, dtype=dtype, scale=2.0), _mask(g, B, S, empty_rows=1)[:, None, :]


def _weights_huge_args(g):
    scores, mask = _weights_args(g)
    return scores.sign() * 1e4 + scores, mask


def _context_args(g, dtype=torch.float32, S=None, B=None):
    B, S = _dims(g, S, B)
    d_v = randint(g, 2, 14)
    weights = torch.softmax(randn(g, B, S, dtype=dtype), -1) * _mask(g, B, S)
    return weights, randn(g, B, S, d_v, dtype=dtype)


def _step_args(g, dtype=torch.float32, S=None, B=None, empty_rows=0, square=False):
    B, S = _dims(g, S, B)
    B = max(B, empty_rows + 1)
    e, d, V = randint(g, 3, 10), randint(g, 3, 14), randint(g, 5, 16)
    e = d if square else e
    return (randn(g, B, e, dtype=dtype), randn(g, B, d, dtype=dtype).tanh(),
            randn(g, B, S, d, dtype=dtype).tanh(), _mask(g, B, S, empty_rows),
            _step_params(g, e, d, V, dtype))


CASES: dict[str, list[Case]] = {
    "test_multiplicative": [
        Case("dot_score", _dot_args, "dot: random float32, d not a power of two"),
        Case("dot_score", lambda g: _dot_args(g, torch.float64), "dot: float64"),
        Case("dot_score", lambda g: _dot_args(g, S=1, B=1), "dot: B = S = 1"),
        Case("general_score", lambda g: _general_args(g, True), "general: square W_a"),
        Case("general_score", lambda g: _general_args(g, False, torch.float64),
             "general: d_q != d_k, float64"),
        Case("general_score", lambda g: _general_args(g, True, S=1), "general: S = 1"),
    ],
    "test_additive": [
        Case("concat_score", lambda g: _concat_args(g, True), "concat: d_q == d_k"),
        Case("concat_score", lambda g: _concat_args(g, False, torch.float64),
             "concat: d_q != d_k, float64"),
        Case("concat_score", lambda g: _concat_args(g, True, S=1, B=1), "concat: B = S = 1"),
        Case("additive_score", lambda g: _additive_args(g, True), "additive: d_q == d_k"),
        Case("additive_score", lambda g: _additive_args(g, False, torch.float64),
             "additive: d_q != d_k, float64"),
        Case("additive_score", lambda g: _additive_args(g, False, S=1), "additive: S = 1"),
    ],
    "test_attention_weights": [
        Case("attention_weights", _weights_args, "(B, S) scores, padded rows"),
        Case("attention_weights", lambda g: _weights_args(g, torch.float64, empty_rows=2),
             "float64, two rows with no real position"),
        Case("attention_weights", _weights_3d_args, "(B, T, S) scores with a (B, 1, S) mask"),
        Case("attention_weights", _weights_huge_args, "scores of about +-1e4"),
        Case("attention_weights", lambda g: _weights_args(g, S=1), "S = 1"),
        Case("attention_weights", lambda g: _weights_3d_args(g, torch.bfloat16),
             "bfloat16 (B, T, S) scores with an empty row"),
        Case("attention_weights", lambda g: _weights_args(g, torch.float16, empty_rows=1),
             "float16 scores with an empty row"),
    ],
    "test_context_vector": [
        Case("context_vector", _context_args, "random masked weights, float32"),
        Case("context_vector", lambda g: _context_args(g, torch.float64), "float64"),
        Case("context_vector", lambda g: _context_args(g, S=1), "S = 1"),
        Case("context_vector", lambda g: _context_args(g, B=1), "B = 1"),
    ],
    "test_attentive_decoder_step": [
        Case("attentive_decoder_step", _step_args, "random float32 step with padding", STEP_HINTS),
        Case("attentive_decoder_step", lambda g: _step_args(g, torch.float64), "float64",
             STEP_HINTS),
        Case("attentive_decoder_step", lambda g: _step_args(g, S=1, B=1), "B = S = 1", STEP_HINTS),
        Case("attentive_decoder_step", lambda g: _step_args(g, empty_rows=1),
             "a batch row with an empty source (alpha and c_t all zero)", STEP_HINTS),
        Case("attentive_decoder_step", lambda g: _step_args(g, square=True),
             "embedding size e equal to the hidden size d", STEP_HINTS),
    ],
}
