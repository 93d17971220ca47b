"""Chapter 7 — multi-head and cross-attention: public checks and hidden cases.

The public checks compare the student's code with PyTorch's own ``nn.MultiheadAttention``
(given the same weights, packed the way it stores them), on small inputs and on hand-checkable
examples. ``CASES`` are the grader's random inputs; the reference notebook supplies the
expected values. Hints recognise symptoms only, from the output and the inputs:

* a head-merge mistake (the seed-000 bug among them) permutes the values of the merged heads,
  which shows once the output projection ``W_o`` is undone (it is square and invertible);
* in the "readable weights" cases ``W_v`` and ``W_o`` are identities and each head's values
  are one-hot rows, so the output *is* the attention matrix: a wrong scale, a mask with the
  wrong polarity or a missing renormalisation can be read off it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from ..checks import as_tensor, call, expect_example, randint
from ..spec import Case, CheckFailed, Hint, passed

AXES = ("B", "h", "T", "d_head")  # the axis names of a per-head tensor (B, h, T, d_head)


# ----------------------------------------------------------------------------------------
# Exercise 4's bug: a multi-head attention in the spirit of lecture note 000's (two lines wrong)
# ----------------------------------------------------------------------------------------

def buggy_multi_head_attention(x, W_q, W_k, W_v, W_o, n_head):
    """Multi-head self-attention, (B, T, C) -> (B, T, C), weights applied as x @ W.T."""
    B, T, C = x.shape
    d_head = C // n_head
    q = (x @ W_q.T).view(B, T, n_head, d_head).transpose(1, 2)  # (B, h, T, d_head)
    k = (x @ W_k.T).view(B, T, n_head, d_head).transpose(1, 2)
    v = (x @ W_v.T).view(B, T, n_head, d_head).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C)             # (B, h, T, T)
    heads = (scores.softmax(dim=-1) @ v).transpose(-2, -1)      # (B, h, T, d_head)
    merged = heads.transpose(1, 2).reshape(B, T, C)             # (B, T, h, d_head) -> (B, T, C)
    return merged @ W_o.T


# ----------------------------------------------------------------------------------------
# PyTorch's multi-head attention with given weights (the oracle of the public checks)
# ----------------------------------------------------------------------------------------

def torch_mha(x_q: torch.Tensor, x_kv: torch.Tensor, n_head: int, W_q, W_k, W_v, W_o,
              b_q=None, b_k=None, b_v=None, b_o=None,
              key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """``nn.MultiheadAttention`` loaded with these weights (``x @ W.T + b``, like ``nn.Linear``).

    Its ``in_proj_weight`` is the packed ``[W_q; W_k; W_v]`` of shape (3C, C); its masks say
    True = *not allowed*. Rows with no allowed key (NaN in PyTorch) become the zero attention
    output, i.e. ``b_o`` (or 0) after the output projection, as the exercises define.
    """
    C = x_q.shape[-1]
    bias = b_q is not None
    mha = nn.MultiheadAttention(C, n_head, bias=bias, batch_first=True,
                                device=x_q.device, dtype=x_q.dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([W_q, W_k, W_v]))
        mha.out_proj.weight.copy_(W_o)
        if bias:
            mha.in_proj_bias.copy_(torch.cat([b_q, b_k, b_v]))
            mha.out_proj.bias.copy_(b_o)
        T_q, T_k = x_q.shape[1], x_kv.shape[1]
        blocked = torch.zeros(x_q.shape[0], T_q, T_k, dtype=torch.bool, device=x_q.device)
        if is_causal:
            blocked |= torch.ones(T_q, T_k, dtype=torch.bool, device=x_q.device).triu(1)
        if key_padding_mask is not None:
            blocked |= key_padding_mask[:, None, :]
        out, _ = mha(x_q, x_kv, x_kv, attn_mask=blocked.repeat_interleave(n_head, 0),
                     need_weights=False)
        empty = blocked.all(-1, keepdim=True)  # (B, T_q, 1): queries with nothing to attend to
        return out.masked_fill(empty, 0.0) + (empty * b_o if bias else 0.0)


def _module_oracle(sd: dict, x, n_head, mask, causal):
    w = {k: v for k, v in sd.items()}
    return torch_mha(x, x, n_head, w["W_q.weight"], w["W_k.weight"], w["W_v.weight"],
                     w["W_o.weight"], w["W_q.bias"], w["W_k.bias"], w["W_v.bias"], w["W_o.bias"],
                     key_padding_mask=mask, is_causal=causal)


# ----------------------------------------------------------------------------------------
# Symptom detectors
# ----------------------------------------------------------------------------------------

def _f64(x: Any) -> torch.Tensor | None:
    t = as_tensor(x)
    return t.double() if t is not None and t.dtype.is_floating_point else None


def _same(a: torch.Tensor | None, b: torch.Tensor | None, tol: float = 1e-4) -> bool:
    return (a is not None and b is not None and a.shape == b.shape and not a.isnan().any()
            and torch.allclose(a, b, rtol=tol, atol=tol))


def _unproject(y: Any, W_o: torch.Tensor, b_o: torch.Tensor | None = None) -> torch.Tensor | None:
    """The merged heads z with ``y = z @ W_o.T + b_o``, undone (W_o is square)."""
    y = _f64(y)
    if y is None or y.shape[-1] != W_o.shape[0]:
        return None
    if b_o is not None:
        y = y - b_o.detach().cpu().double()
    z = torch.linalg.solve(W_o.detach().cpu().double(), y.reshape(-1, y.shape[-1]).T).T
    return z.reshape(y.shape)


def _permuted(z_got: torch.Tensor | None, z_exp: torch.Tensor | None) -> bool:
    """Each batch element of z_got holds z_exp's values, rearranged (a merge-order mistake)."""
    if z_got is None or z_exp is None or z_got.shape != z_exp.shape or _same(z_got, z_exp):
        return False
    scale = float(z_exp.abs().max()) + 1e-12
    return all(torch.allclose(g.flatten().sort().values, e.flatten().sort().values,
                              rtol=1e-3, atol=1e-4 * scale) for g, e in zip(z_got, z_exp))


def _weights(out: Any, n_head: int, T_k: int) -> torch.Tensor | None:
    """In a readable-weights case: the attention matrix (B, h, T_q, T_k) the output spells out."""
    t = _f64(out)
    if t is None or t.dim() != 3:
        return None
    B, T_q, C = t.shape
    per_head = t.reshape(B, T_q, n_head, C // n_head)
    if bool((per_head[..., T_k:].abs() > 1e-6).any()):  # not the one-hot layout: scrambled
        return None
    return per_head[..., :T_k].transpose(1, 2)


def _scale_ratio(A_got: torch.Tensor | None, A_exp: torch.Tensor) -> float | None:
    """How much sharper A_got's rows are than A_exp's: the ratio of their log-weight gaps."""
    if A_got is None or A_got.shape != A_exp.shape:
        return None
    allowed = A_exp > 1e-9
    if not bool((A_got[allowed] > 0).all()):
        return None
    lg = torch.where(allowed, A_got.clamp_min(1e-300).log(), 0.0)
    le = torch.where(allowed, A_exp.clamp_min(1e-300).log(), 0.0)
    n = allowed.sum(-1, keepdim=True).clamp_min(1)
    lg = torch.where(allowed, lg - lg.sum(-1, keepdim=True) / n, 0.0)
    le = torch.where(allowed, le - le.sum(-1, keepdim=True) / n, 0.0)
    denom = float((le * le).sum())
    return float((lg * le).sum()) / denom if denom > 1e-6 else None


def _variant(args: tuple, scale: Callable[[int, int], float] | None = None,
             invert_mask: bool = False) -> torch.Tensor | None:
    """The output of a module, cross-attention or fixed-function case, in float64, computed
    with a chosen (possibly wrong) score scale ``scale(n_head, d_head)`` or with the padding
    mask's polarity inverted: what a student with that one mistake returns."""
    if isinstance(args[0], dict):  # the module: (sd, x, n_head, mask, causal)
        sd, x, n_head, mask, causal = args
        x_q = x_kv = x
        W = [sd[f"{n}.weight"] for n in ("W_q", "W_k", "W_v", "W_o")]
        b = [sd[f"{n}.bias"] for n in ("W_q", "W_k", "W_v", "W_o")]
    elif len(args) == 8:  # cross_attention(y, memory, W_q, W_k, W_v, W_o, n_head, mask)
        x_q, x_kv, *W, n_head, mask = args
        b, causal = [None] * 4, False
    elif len(args) == 6:  # fixed_multi_head_attention(x, W_q, W_k, W_v, W_o, n_head)
        x_q, *W, n_head = args
        x_kv, b, mask, causal = x_q, [None] * 4, None, False
    else:
        return None
    W = [w.detach().cpu().double() for w in W]
    b = [None if v is None else v.detach().cpu().double() for v in b]
    x_q, x_kv = x_q.detach().cpu().double(), x_kv.detach().cpu().double()

    def project(x, i):
        y = x @ W[i].T
        return y if b[i] is None else y + b[i]

    B, T_q, C = x_q.shape
    T_k, d_head = x_kv.shape[1], C // n_head
    q, k, v = (project(t, i).unflatten(-1, (n_head, d_head)).transpose(1, 2)
               for i, t in ((0, x_q), (1, x_kv), (2, x_kv)))
    factor = (scale or (lambda h, d: d ** -0.5))(n_head, d_head)
    allowed = torch.ones(B, 1, T_q, T_k, dtype=torch.bool)
    if mask is not None:
        padding = mask.detach().cpu()[:, None, None, :]
        allowed = allowed & (padding if invert_mask else ~padding)
    if causal:
        allowed = allowed & torch.ones(T_q, T_k, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-2, -1) * factor).masked_fill(~allowed, -math.inf)
    z = (torch.softmax(scores, -1).nan_to_num(0.0) @ v).transpose(1, 2).flatten(2)
    return project(z, 3)


def _ratio_is(target: Callable[[int, int], float]) -> Callable:
    """A hint condition: the weights are sharper by ``target(n_head, d_head)``; read off the
    weights in a readable case, else compared with the output of that scale."""
    def applies(got, exp, args):
        n_head, T_k = _readable(args)
        if not n_head:
            n_head = args[2] if isinstance(args[0], dict) else args[-1] if len(args) == 6 else (
                args[6] if len(args) == 8 else 0)
            if not n_head or target(n_head, exp.shape[-1] // n_head) == 1:
                return False  # that "mistake" is the right scale for these sizes
            wrong = lambda h, d: d ** -0.5 * target(h, d)
            return not _same(_f64(got), _f64(exp)) and _same(_f64(got), _variant(args, wrong))
        d_head = exp.shape[-1] // n_head
        r = _scale_ratio(_weights(got, n_head, T_k), _weights(exp, n_head, T_k))
        return r is not None and abs(r / target(n_head, d_head) - 1) < 0.05
    return applies


def _readable(args: tuple) -> tuple[int, int]:
    """(n_head, T_k) when args are a readable-weights case, else (0, 0)."""
    if isinstance(args[0], dict):  # the module: (sd, x, n_head, mask, causal)
        sd, x, n_head = args[0], args[1], args[2]
        W_v, T_k = sd["W_v.weight"], x.shape[1]
    elif len(args) == 8:  # cross_attention(y, memory, W_q, W_k, W_v, W_o, n_head, mask)
        W_v, n_head, T_k = args[4], args[6], args[1].shape[1]
    else:
        return 0, 0
    eye = torch.eye(W_v.shape[0], dtype=W_v.dtype, device=W_v.device)
    return (n_head, T_k) if torch.equal(W_v, eye) else (0, 0)


def _mask_and_causal(args: tuple) -> tuple[torch.Tensor | None, bool]:
    if isinstance(args[0], dict):
        return args[3], bool(args[4])
    return (args[7] if len(args) == 8 else None), False


def _weight_on_blocked(got, exp, args) -> bool:
    """Weight landed on padded keys (True in the mask), or nothing on the real keys."""
    n_head, T_k = _readable(args)
    mask, _ = _mask_and_causal(args)
    if mask is None or not bool(mask.any()):
        return False
    if _same(_f64(got), _variant(args, invert_mask=True)):  # True read as "may attend"
        return True
    A = _weights(got, n_head, T_k) if n_head else None
    E = _weights(exp, n_head, T_k) if A is not None else None
    if A is None or A.shape != E.shape:
        return False
    padded = mask.detach().cpu()[:, None, None, :].expand_as(A)
    on_padding = bool((A[padded].abs() > 1e-6).any())
    real_keys_ignored = bool(((A.masked_fill(padded, 0).sum(-1) < 1e-6) & (E.sum(-1) > 0.5)).any())
    return on_padding or real_keys_ignored


def _weight_on_future(got, exp, args) -> bool:
    n_head, T_k = _readable(args)
    _, causal = _mask_and_causal(args)
    A = _weights(got, n_head, T_k) if n_head and causal else None
    if A is None or A.shape[-2] != T_k:
        return False
    return bool((A.triu(1).abs() > 1e-6).any())


def _not_renormalised(got, exp, args) -> bool:
    n_head, T_k = _readable(args)
    A, E = (_weights(got, n_head, T_k), _weights(exp, n_head, T_k)) if n_head else (None, None)
    if A is None or A.shape != E.shape or _weight_on_blocked(got, exp, args):
        return False
    sums = A.sum(-1)[E.sum(-1) > 0.5]  # rows that have keys to attend to
    return bool(((sums > 1e-3) & (sums < 1 - 1e-3)).any())


def _softmax_over_queries(got, exp, args) -> bool:
    """The weights sum to 1 down each (non-padded) key column instead of along each row."""
    n_head, T_k = _readable(args)
    A, E = (_weights(got, n_head, T_k), _weights(exp, n_head, T_k)) if n_head else (None, None)
    if A is None or A.shape != E.shape or A.shape[-1] != A.shape[-2]:
        return False
    rows, cols, keys = A.sum(-1), A.sum(-2), E.sum(-2) > 1e-6
    return not _same(rows, torch.ones_like(rows)) and _same(cols[keys], torch.ones_like(cols[keys]), 1e-3)


def _nan_where_exp_finite(got, exp, args) -> bool:
    t = _f64(got)
    return t is not None and t.shape == exp.shape and bool(t.isnan().any()) and not bool(exp.isnan().any())


def _merge_mixed(got, exp, args) -> bool:
    if isinstance(args[0], dict):
        W_o, b_o = args[0]["W_o.weight"], args[0]["W_o.bias"]
    elif len(args) == 8:
        W_o, b_o = args[5], None
    else:  # (x, W_q, W_k, W_v, W_o, n_head)
        W_o, b_o = args[4], None
    return _permuted(_unproject(got, W_o, b_o), _unproject(exp, W_o, b_o))


def _no_output_projection(got, exp, args) -> bool:
    if isinstance(args[0], dict):
        W_o, b_o = args[0]["W_o.weight"], args[0]["W_o.bias"]
    else:
        W_o, b_o = args[5] if len(args) == 8 else args[4], None
    z = _unproject(exp, W_o, b_o)
    return _same(_f64(got), z)


MERGE_ORDER = Hint(
    "heads merged in the wrong order: your output holds the right numbers in the wrong places "
    "(positions and features mixed). After attention the tensor is (B, h, T, d_head); transpose "
    "only the h and T axes, .transpose(1, 2), to get (B, T, h, d_head), then reshape to "
    "(B, T, h * d_head). Do not swap T and d_head, and do not view it as (B, T, d_head, h).",
    _merge_mixed)
SCALE_D_MODEL = Hint(
    "the attention weights are too flat: you divided the scores by √d_model; each head's "
    "scores are dot products of d_head = d_model / n_head numbers, so divide by √d_head.",
    _ratio_is(lambda h, d: 1 / math.sqrt(h)))
SCALE_MISSING = Hint(
    "the attention weights are too sharp by exactly √d_head: did you forget to divide the "
    "scores by √d_head?",
    _ratio_is(lambda h, d: math.sqrt(d)))
SCALE_SQUARED = Hint(
    "the attention weights are too flat by √d_head: divide the scores by √d_head, not by d_head.",
    _ratio_is(lambda h, d: 1 / math.sqrt(d)))
MASK_POLARITY = Hint(
    "padded keys received attention: in this course, as in nn.MultiheadAttention, "
    "key_padding_mask is True where a key must be IGNORED. F.scaled_dot_product_attention's "
    "boolean attn_mask means the opposite (True = may attend), so pass ~key_padding_mask "
    "(shaped (B, 1, 1, T) to broadcast over heads and queries).",
    _weight_on_blocked)
CAUSAL_IGNORED = Hint(
    "with is_causal=True a position attended to later positions: allow keys s <= t only "
    "(a lower-triangular mask), combined with the padding mask by &.",
    _weight_on_future)
NOT_RENORMALISED = Hint(
    "the weights of a row no longer sum to 1: masking after the softmax needs a "
    "renormalisation; set masked scores to -inf before the softmax instead.",
    _not_renormalised)
SOFTMAX_AXIS = Hint(
    "the weights sum to 1 down each column instead of along each row: take the softmax over "
    "the keys, dim=-1.",
    _softmax_over_queries)
FULLY_MASKED_NAN = Hint(
    "NaN where a query has no key it may attend to (a sequence that is all padding, or left "
    "padding with is_causal): the exercise defines that head output as zeros. A softmax over "
    "a row of -inf gives NaN; zero such rows, e.g. with .masked_fill(no_key, 0.0) before W_o.",
    _nan_where_exp_finite)
NO_OUTPUT_PROJECTION = Hint(
    "this is the merged heads before the output projection: finish with W_o.",
    _no_output_projection)
CROSS_ROLES = Hint(
    "one output row per source position: the queries must come from the decoder states y "
    "(one per target position), the keys and values from memory.",
    lambda got, exp, args: (len(args) == 8 and isinstance(got, torch.Tensor)
                            and tuple(got.shape) == (exp.shape[0], args[1].shape[1], exp.shape[2])
                            != tuple(exp.shape)))
FIX_INCOMPLETE = Hint(
    "your own test says your fixed function still differs from nn.MultiheadAttention: the bug "
    "has two wrong lines; look at the fixed-function cases' messages for the one left.",
    lambda got, exp, args: isinstance(got, (int, float)) and got > 1e-6)
ATTENTION_HINTS = (MERGE_ORDER, SCALE_D_MODEL, SCALE_MISSING, SCALE_SQUARED, MASK_POLARITY,
                   CAUSAL_IGNORED, NOT_RENORMALISED, SOFTMAX_AXIS, FULLY_MASKED_NAN,
                   NO_OUTPUT_PROJECTION, CROSS_ROLES)


def _split_variants(x: torch.Tensor, n_head: int) -> dict[str, torch.Tensor]:
    B, T, C = x.shape
    return {"no_transpose": x.reshape(B, n_head, T, C // n_head),
            "interleaved": x.reshape(B, T, C // n_head, n_head).permute(0, 3, 1, 2)}


def _merge_variants(x: torch.Tensor) -> dict[str, torch.Tensor]:
    B, h, T, d = x.shape
    return {"no_transpose": x.reshape(B, T, h * d),
            "interleaved": x.permute(0, 2, 3, 1).reshape(B, T, h * d),
            "seed000": x.transpose(-2, -1).transpose(1, 2).reshape(B, T, h * d)}


def _is_variant(kind: str, split: bool) -> Callable:
    def applies(got, exp, args):
        x = _f64(args[0])
        variants = _split_variants(x, args[1]) if split else _merge_variants(x)
        return not _same(_f64(got), _f64(exp)) and _same(_f64(got), variants[kind])
    return applies


SPLIT_NO_TRANSPOSE = Hint(
    "you reshaped (B, T, C) straight to (B, h, T, d_head): that cuts the sequence into pieces "
    "instead of cutting each token's features. Reshape to (B, T, h, d_head) first, then "
    "transpose(1, 2).",
    _is_variant("no_transpose", split=True))
SPLIT_INTERLEAVED = Hint(
    "head i must get the contiguous features i*d_head ... (i+1)*d_head - 1; you dealt the "
    "features out in turn (view as (B, T, d_head, h)). View as (B, T, h, d_head).",
    _is_variant("interleaved", split=True))
MERGE_NO_TRANSPOSE = Hint(
    "you reshaped (B, h, T, d_head) straight to (B, T, C): bring the heads next to the features "
    "first, .transpose(1, 2) -> (B, T, h, d_head), then reshape (not view: the transpose is not "
    "contiguous).",
    _is_variant("no_transpose", split=False))
MERGE_INTERLEAVED = Hint(
    "heads merged in the wrong order: the features of head 0 come first, then those of head 1, "
    "... (transpose(1, 2), not a permute that puts d_head before h).",
    _is_variant("interleaved", split=False))
MERGE_SEED000 = Hint(
    "heads merged in the wrong order: you transposed T and d_head as well (the bug of the "
    "lecture note), which mixes positions and features; only h and T are swapped.",
    lambda got, exp, args: (_is_variant("seed000", split=False)(got, exp, args)
                            and not _is_variant("interleaved", split=False)(got, exp, args)))
SPLIT_HINTS = (SPLIT_NO_TRANSPOSE, SPLIT_INTERLEAVED)
MERGE_HINTS = (MERGE_NO_TRANSPOSE, MERGE_INTERLEAVED, MERGE_SEED000)


def _axes_check(got: Any, expected: Any, args: tuple) -> str | None:
    """diagnose(): the two wrong lines and the two mixed axes, each in either order, and the scales."""
    if not isinstance(got, dict):
        return ("diagnose should return a dict with keys 'wrong_lines', 'mixed_axes', 'scale_used', "
                f"'scale_correct', got {type(got).__name__}")
    missing = [k for k in expected if k not in got]
    if missing:
        return f"diagnose: missing keys {missing}"
    lines = got["wrong_lines"]
    if (not isinstance(lines, (tuple, list)) or not all(isinstance(n, int) for n in lines)
            or sorted(lines) != sorted(expected["wrong_lines"])):
        return (f"diagnose: 'wrong_lines' should be the numbers of the two wrong lines in the printed "
                f"listing of buggy_multi_head_attention, got {lines!r}\nHint: one wrong line changes "
                "the numbers without moving them (compare its scale with the width of one head's "
                "queries and keys); the other moves numbers to the wrong places (check each shape "
                "comment against the tensor's real shape).")
    axes = got["mixed_axes"]
    if not isinstance(axes, (tuple, list)) or sorted(map(str, axes)) != sorted(expected["mixed_axes"]):
        return (f"diagnose: 'mixed_axes' should name the two axes (from {list(AXES)}) that the extra "
                f"transpose swaps, got {axes!r}")
    for key in ("scale_used", "scale_correct"):
        value = got[key]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, (int, float)) or not math.isclose(value, expected[key], rel_tol=1e-6):
            return f"diagnose: {key!r} should be {expected[key]:.6g} for these sizes, got {value!r}"
    return None


# ----------------------------------------------------------------------------------------
# Public checks
# ----------------------------------------------------------------------------------------

def check_split_merge_heads(split_heads: Callable, merge_heads: Callable) -> None:
    """A (1, 3, 4) example split by hand into 2 heads, then round trips on other shapes."""
    count = 0
    x = torch.arange(12.).reshape(1, 3, 4)
    heads = torch.tensor([[[[0., 1.], [4., 5.], [8., 9.]],
                           [[2., 3.], [6., 7.], [10., 11.]]]])
    shown = "split_heads(torch.arange(12.).reshape(1, 3, 4), 2)"
    expect_example(call(split_heads, shown, x, 2), heads, shown,
                   "head 0 holds features 0-1 of every position, head 1 features 2-3.", SPLIT_HINTS, (x, 2))
    count += 1
    shown = "merge_heads(<the two heads above>)"
    expect_example(call(merge_heads, shown, heads), x, shown,
                   "merging puts each position's head outputs side by side again.", MERGE_HINTS, (heads,))
    count += 1
    g = torch.Generator().manual_seed(7)
    for B, T, C, h, dtype in ((2, 5, 6, 3, torch.float32), (1, 1, 5, 5, torch.float64),
                              (3, 4, 7, 1, torch.float32), (2, 3, 8, 4, torch.bfloat16)):
        x = torch.randn(B, T, C, generator=g).to(dtype)
        shown = f"split_heads(x of shape {(B, T, C)} and dtype {dtype}, {h})"
        got = call(split_heads, shown, x, h)
        if not isinstance(got, torch.Tensor) or got.shape != (B, h, T, C // h):
            raise CheckFailed(f"{shown}: expected shape {(B, h, T, C // h)}, got "
                              f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        shown = f"merge_heads(split_heads(x, {h})) with x of shape {(B, T, C)}"
        expect_example(call(merge_heads, shown, got), x, shown, "merge_heads undoes split_heads.",
                       MERGE_HINTS, (got,))
        count += 2
    x = torch.randn(2, 3, 4, 5, generator=g).transpose(2, 3)  # (B, h, T, d_head), not contiguous
    shown = "merge_heads(x) with a non-contiguous x (a transposed tensor)"
    got = call(merge_heads, shown, x)
    expect_example(got, x.transpose(1, 2).flatten(2), shown,
                   "use .reshape (which copies when it must), not .view, after a transpose.", MERGE_HINTS, (x,))
    count += 1
    passed("split_heads/merge_heads", count)


def _state_dict(g: torch.Generator, C: int, dtype=torch.float32, readable=False) -> dict:
    sd = {}
    for name in ("W_q", "W_k", "W_v", "W_o"):
        sd[f"{name}.weight"] = torch.randn(C, C, generator=g, dtype=dtype) / math.sqrt(C)
        sd[f"{name}.bias"] = torch.randn(C, generator=g, dtype=dtype) / 4
    if readable:
        for name in ("W_v", "W_o"):
            sd[f"{name}.weight"] = torch.eye(C, dtype=dtype)
            sd[f"{name}.bias"] = torch.zeros(C, dtype=dtype)
        for name in ("W_q", "W_k"):
            sd[f"{name}.weight"] *= 2.5  # scores large enough for the scale to matter
    return sd


def _readable_x(B: int, T: int, C: int, n_head: int, dtype=torch.float32) -> torch.Tensor:
    """Each head's slice of position s is the one-hot e_s (needs T <= d_head)."""
    d_head = C // n_head
    x = torch.zeros(B, T, n_head, d_head, dtype=dtype)
    x[:, torch.arange(T), :, torch.arange(T)] = 1.0
    return x.reshape(B, T, C)


def _run_module(cls: Callable, sd: dict, x, n_head, mask, causal, shown: str) -> Any:
    module = call(cls, f"MultiHeadSelfAttention({x.shape[-1]}, {n_head})", x.shape[-1], n_head)
    keys = set(module.state_dict())
    if keys != set(sd):
        raise CheckFailed(f"MultiHeadSelfAttention's parameters are {sorted(keys)}; the exercise fixes "
                          f"them as {sorted(sd)} (keep the given __init__)")
    module.to(x)  # dtype and device first, so that float64 weights keep their precision
    module.load_state_dict(sd)
    with torch.no_grad():
        return call(module, shown, x, mask, causal)


def check_multi_head_self_attention(MultiHeadSelfAttention: Callable) -> None:
    """Agreement with nn.MultiheadAttention (copied weights) without and with masks, plus the
    fully-masked rule and a readable-weights example that exposes the scale."""
    count = 0
    g = torch.Generator().manual_seed(0)
    B, T, C, h = 2, 4, 6, 2
    x = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    pad = torch.tensor([[False, False, False, True], [False, False, True, True]])
    left = torch.tensor([[True, False, False, False], [False, False, False, False]])
    sd1 = _state_dict(g, 8, torch.float64)
    x1 = torch.randn(1, 1, 8, generator=g, dtype=torch.float64)
    shown = "MultiHeadSelfAttention(8, 4) on a single position (T = 1)"
    expect_example(_run_module(MultiHeadSelfAttention, sd1, x1, 4, None, False, shown),
                   _module_oracle(sd1, x1, 4, None, False), shown,
                   "with one position every weight is 1: the output is W_o(merge(v)).", ATTENTION_HINTS,
                   (sd1, x1, 4, None, False))
    count += 1
    sdr = _state_dict(g, 12, torch.float64, readable=True)
    xr = _readable_x(1, 4, 12, 2, torch.float64)
    args = (sdr, xr, 2, torch.tensor([[False, False, False, True]]), False)
    shown = "readable weights: W_v = W_o = I, one-hot values, so the output spells out the weights"
    expect_example(_run_module(MultiHeadSelfAttention, *args, shown), _module_oracle(*args), shown,
                   "each row of weights is softmax(q·k / √d_head) over the non-padded keys.", ATTENTION_HINTS, args)
    count += 1
    sd = _state_dict(g, C, torch.float64)
    for mask, causal, why in (
            (None, False, "plain self-attention, like nn.MultiheadAttention(x, x, x)"),
            (pad, False, "key_padding_mask True = this key is padding, ignore it"),
            (None, True, "is_causal: position t attends to positions 0..t only"),
            (pad, True, "padding and causal masks together"),
            (left, True, "left padding with is_causal: query 0 of sequence 0 has no key; its "
                         "head outputs are zeros, so its output is W_o's bias")):
        shown = (f"MultiHeadSelfAttention({C}, {h})(x, key_padding_mask={'None' if mask is None else 'mask'}, "
                 f"is_causal={causal}) vs nn.MultiheadAttention with the same weights")
        args = (sd, x, h, mask, causal)
        expect_example(_run_module(MultiHeadSelfAttention, *args, shown), _module_oracle(*args), shown, why,
                       ATTENTION_HINTS, args)
        count += 1
    passed("MultiHeadSelfAttention", count)


def _cross_oracle(y, memory, W_q, W_k, W_v, W_o, n_head, mask=None):
    return torch_mha(y, memory, n_head, W_q, W_k, W_v, W_o, key_padding_mask=mask)


def check_cross_attention(cross_attention: Callable) -> None:
    """A hand-checkable masked example, then agreement with nn.MultiheadAttention."""
    count = 0
    I = torch.eye(2)
    y = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]]])  # 3 decoder positions
    memory = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])          # 2 encoder positions
    mask = torch.tensor([[False, True]])                       # the second one is padding
    args = (y, memory, I, I, I, I, 1, mask)
    shown = "cross_attention(y, memory, I, I, I, I, n_head=1, src_padding_mask=[[False, True]])"
    expect_example(call(cross_attention, shown, *args), memory[:, :1].expand(1, 3, 2), shown,
                   "only memory[0] is a real source token, so every query's weights are [1, 0] and every "
                   "output row is memory[0] = [1, 0].", ATTENTION_HINTS, args)
    count += 1
    g = torch.Generator().manual_seed(1)
    B, T_tgt, T_src, C, h = 3, 4, 5, 6, 3
    W = [torch.randn(C, C, generator=g, dtype=torch.float64) / math.sqrt(C) for _ in range(4)]
    y = torch.randn(B, T_tgt, C, generator=g, dtype=torch.float64)
    memory = torch.randn(B, T_src, C, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 0])
    mask = torch.arange(T_src)[None, :] >= lengths[:, None]
    for m, why in ((None, "queries from y, keys and values from memory: output (B, T_tgt, C)"),
                   (mask, "source lengths 5, 2 and 0: padded source positions get no weight; the "
                          "empty source gives zero head outputs (so zeros after W_o)")):
        args = (y, memory, *W, h, m)
        shown = (f"cross_attention(y {tuple(y.shape)}, memory {tuple(memory.shape)}, ..., n_head={h}, "
                 f"src_padding_mask={'None' if m is None else 'lengths 5, 2, 0'}) vs nn.MultiheadAttention")
        expect_example(call(cross_attention, shown, *args), _cross_oracle(*args), shown, why,
                       ATTENTION_HINTS, args)
        count += 1
    passed("cross_attention", count)


def check_fix_the_bug(fixed_multi_head_attention: Callable, diagnose: Callable,
                      max_abs_difference: Callable, buggy_multi_head_attention: Callable) -> None:
    """Your test finds the bug, your fix agrees with PyTorch, your diagnosis names it."""
    count = 0
    g = torch.Generator().manual_seed(2)
    B, T, C, h = 2, 5, 12, 3
    x = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    W = [torch.randn(C, C, generator=g, dtype=torch.float64) for _ in range(4)]
    oracle = torch_mha(x, x, h, *W)
    shown = "max_abs_difference(buggy_multi_head_attention, x, W_q, W_k, W_v, W_o, 3)"
    bug_gap = call(max_abs_difference, shown, buggy_multi_head_attention, x, *W, h)
    true_gap = float((buggy_multi_head_attention(x, *W, h) - oracle).abs().max())
    expect_example(bug_gap, true_gap, shown,
                   "compare with nn.MultiheadAttention(C, n_head, bias=False, batch_first=True) whose "
                   "in_proj_weight is torch.cat([W_q, W_k, W_v]) and out_proj.weight is W_o.")
    count += 1
    shown = "fixed_multi_head_attention(x, W_q, W_k, W_v, W_o, 3)"
    args = (x, *W, h)
    expect_example(call(fixed_multi_head_attention, shown, *args), oracle, shown,
                   "the fixed function equals nn.MultiheadAttention with the same weights.",
                   ATTENTION_HINTS, args)
    count += 1
    shown = "max_abs_difference(fixed_multi_head_attention, x, W_q, W_k, W_v, W_o, 3)"
    gap = call(max_abs_difference, shown, fixed_multi_head_attention, *args)
    if not isinstance(gap, (float, int)) or not gap < 1e-9:
        raise CheckFailed(f"{shown} = {gap!r}: in float64 a correct function differs from PyTorch by "
                          "rounding only (< 1e-9). Return a Python float (.item()).")
    count += 1
    shown = "diagnose(12, 3)"
    expected = {"wrong_lines": (8, 9), "mixed_axes": ("T", "d_head"), "scale_used": math.sqrt(12),
                "scale_correct": 2.0}
    message = _axes_check(call(diagnose, shown, 12, 3), expected, ())
    if message:
        raise CheckFailed(f"{shown}: {message}")
    count += 1
    passed("the bug fix", count)


# ----------------------------------------------------------------------------------------
# Hidden cases
# ----------------------------------------------------------------------------------------

def _sizes(g: torch.Generator, max_h: int = 4) -> tuple[int, int, int, int]:
    """B, T, n_head, d_head with d_head often not a power of two."""
    return randint(g, 1, 4), randint(g, 2, 8), randint(g, 1, max_h + 1), (3, 5, 6, 7)[randint(g, 0, 4)]


def _lengths_mask(g: torch.Generator, B: int, T: int, allow_empty: bool = False,
                  left: bool = False) -> torch.Tensor:
    """(B, T) True at padding; lengths in [1, T] (or [0, T]), padding on the right (or left)."""
    lengths = torch.randint(0 if allow_empty else 1, T + 1, (B,), generator=g)
    lengths[0] = T - 1 if T > 1 else T  # at least one padded key somewhere
    pos = torch.arange(T)[None, :]
    return pos < (T - lengths[:, None]) if left else pos >= lengths[:, None]


def _split_args(g, dtype=torch.float32, **fixed):
    B, T, h, d = _sizes(g)
    B, T, h, d = fixed.get("B", B), fixed.get("T", T), fixed.get("h", h), fixed.get("d", d)
    return torch.randn(B, T, h * d, generator=g).to(dtype), h


def _merge_args(g, dtype=torch.float32, **fixed):
    x, h = _split_args(g, dtype, **fixed)
    B, T, C = x.shape
    return (x.reshape(B, h, T, C // h),)


def _module_args(g, *, dtype=torch.float32, mask=None, causal=False, T=None, h=None,
                 readable=False, flat_q=False):
    B, T_, h_, d = _sizes(g)
    T, h = T or T_, h or h_
    if readable:
        d = max(d, T + 1)  # spare value features that stay 0 unless the merge scrambles them
    C = h * d
    sd = _state_dict(g, C, dtype, readable)
    if flat_q:  # q = 0: uniform weights over the allowed keys, whatever the scale
        sd["W_q.weight"].zero_(), sd["W_q.bias"].zero_()
    x = _readable_x(B, T, C, h, dtype) if readable else torch.randn(B, T, C, generator=g, dtype=dtype)
    m = None
    if mask == "right":
        m = _lengths_mask(g, B, T)
    elif mask == "left":
        m = _lengths_mask(g, B, T, left=True)
    elif mask == "empty":
        m = _lengths_mask(g, B, T)
        m[-1] = True  # the last sequence is all padding
    return sd, x, h, m, causal


def _cross_args(g, *, dtype=torch.float32, mask=None, T_tgt=None, T_src=None, readable=False):
    B, T, h, d = _sizes(g)
    T_tgt = T_tgt or T
    T_src = T_src or randint(g, 3 if readable else 1, 9)
    if readable:
        d = max(d, T_src + 1)
    C = h * d
    W = [torch.randn(C, C, generator=g, dtype=dtype) / math.sqrt(C) for _ in range(4)]
    y = torch.randn(B, T_tgt, C, generator=g, dtype=dtype)
    memory = torch.randn(B, T_src, C, generator=g, dtype=dtype)
    if readable:
        W[0], W[1] = W[0] * 2.5, W[1] * 2.5
        W[2], W[3] = torch.eye(C, dtype=dtype), torch.eye(C, dtype=dtype)
        memory = _readable_x(B, T_src, C, h, dtype)
    m = None
    if mask:
        m = _lengths_mask(g, B, T_src, allow_empty=(mask == "empty"))
        if mask == "empty":
            m[-1] = True
    return (y, memory, *W, h, m)


def _fixed_args(g, *, dtype=torch.float32, T=None, h=None):
    B, T_, h_, d = _sizes(g)
    T, h = T or T_, h or h_
    C = h * d
    x = torch.randn(B, T, C, generator=g, dtype=dtype)
    return (x, *[torch.randn(C, C, generator=g, dtype=dtype) / math.sqrt(C) * 2 for _ in range(4)], h)


def _diagnose_args(g):
    h = randint(g, 2, 9)
    return h * randint(g, 2, 20), h


_MODULE = ("lambda sd, x, n_head, mask, causal: ((m := MultiHeadSelfAttention(x.shape[-1], n_head).to(x))"
           ".load_state_dict(sd), m(x, mask, causal).detach())[1]")

CASES: dict[str, list[Case]] = {
    "test_split_merge_heads": [
        Case("split_heads", _split_args, "split: random (B, T, C), d_head not a power of two", SPLIT_HINTS),
        Case("split_heads", lambda g: _split_args(g, torch.float64, h=1), "split: one head", SPLIT_HINTS),
        Case("split_heads", lambda g: _split_args(g, d=1), "split: d_head = 1", SPLIT_HINTS),
        Case("split_heads", lambda g: _split_args(g, torch.bfloat16, T=1), "split: T = 1, bfloat16",
             SPLIT_HINTS),
        Case("merge_heads", _merge_args, "merge: random (B, h, T, d_head)", MERGE_HINTS),
        Case("merge_heads", lambda g: _merge_args(g, torch.float64, T=1), "merge: T = 1, float64",
             MERGE_HINTS),
        Case("lambda x: merge_heads(x.transpose(2, 3).contiguous().transpose(2, 3))", _merge_args,
             "merge: a non-contiguous input", MERGE_HINTS),
        Case("lambda x, h: merge_heads(split_heads(x, h))", _split_args, "round trip", MERGE_HINTS),
    ],
    "test_multi_head_self_attention": [
        Case(_MODULE, _module_args, "random input, no mask", ATTENTION_HINTS),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, mask="right"),
             "key padding mask (right padding), float64", ATTENTION_HINTS),
        Case(_MODULE, lambda g: _module_args(g, causal=True), "is_causal", ATTENTION_HINTS),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, mask="left", causal=True),
             "left padding with is_causal: some queries have no key at all", ATTENTION_HINTS),
        Case(_MODULE, lambda g: _module_args(g, mask="empty"),
             "one sequence entirely padding", ATTENTION_HINTS),
        Case(_MODULE, lambda g: _module_args(g, T=1, h=3), "T = 1 (every weight is 1)",
             ATTENTION_HINTS),
        Case(_MODULE, lambda g: _module_args(g, flat_q=True, mask="right", h=3),
             "W_q = 0: uniform weights over the non-padded keys", ATTENTION_HINTS),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, h=1), "one head",
             ATTENTION_HINTS),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, readable=True, h=3),
             "readable weights (W_v = W_o = I), no mask", ATTENTION_HINTS),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, readable=True, h=2, mask="right"),
             "readable weights with a key padding mask", ATTENTION_HINTS),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, readable=True, h=2, causal=True),
             "readable weights with is_causal", ATTENTION_HINTS),
    ],
    "test_cross_attention": [
        Case("cross_attention", _cross_args, "random decoder and encoder states, no mask",
             ATTENTION_HINTS),
        Case("cross_attention", lambda g: _cross_args(g, dtype=torch.float64, mask="right"),
             "source padding mask, float64", ATTENTION_HINTS),
        Case("cross_attention", lambda g: _cross_args(g, mask="empty"),
             "a source that is all padding", ATTENTION_HINTS),
        Case("cross_attention", lambda g: _cross_args(g, T_src=1), "one source position",
             ATTENTION_HINTS),
        Case("cross_attention", lambda g: _cross_args(g, dtype=torch.float64, T_tgt=1, mask="right"),
             "one target position", ATTENTION_HINTS),
        Case("cross_attention", lambda g: _cross_args(g, dtype=torch.float64, readable=True, mask="right"),
             "readable weights with a source padding mask", ATTENTION_HINTS),
    ],
    "test_fix_the_bug": [
        Case("fixed_multi_head_attention", _fixed_args, "fixed: random input", ATTENTION_HINTS),
        Case("fixed_multi_head_attention", lambda g: _fixed_args(g, dtype=torch.float64, h=4),
             "fixed: 4 heads, float64", ATTENTION_HINTS),
        Case("fixed_multi_head_attention", lambda g: _fixed_args(g, T=1, h=3), "fixed: T = 1",
             ATTENTION_HINTS),
        Case("diagnose", _diagnose_args, "diagnose: random d_model and n_head", check=_axes_check),
        Case("diagnose", _diagnose_args, "diagnose: other sizes", check=_axes_check),
        Case("lambda *a: max_abs_difference(checks.buggy_multi_head_attention, *a)",
             lambda g: _fixed_args(g, dtype=torch.float64, h=2),
             "your test on the buggy function (float64)"),
        Case("lambda *a: max_abs_difference(fixed_multi_head_attention, *a)",
             lambda g: _fixed_args(g, dtype=torch.float64, h=3),
             "your test on your fixed function (float64)", (FIX_INCOMPLETE,)),
    ],
}
