"""Chapter 7 — multi-head and cross-attention: public checks and hidden cases.

The public checks compare the student's code with PyTorch's own ``nn.MultiheadAttention``
(given the same weights, packed the way it stores them), on small inputs and on hand-checkable
examples. ``CASES`` are the grader's random inputs; the reference notebook supplies the
expected values.

The typical mistakes and their hints are the chapter's catalogue,
``solutions/07-multi-head/mistakes.yaml``: the grader and these checks name a mistake when a
result is that mistake's result (lecture note 000's module, with its two bugs, as the pair of
its first two module mistakes). Its ``uses`` lets a split or merge mistake be named in the
cells of the module and of cross-attention, which call those functions. The random cases draw
at least two heads and two positions, so that a wrong scale cannot hide behind h = 1 (where
√d_model = √d_head) or T = 1 (where every weight is 1); those sizes are extra cases of their own.
In the "readable weights" cases ``W_v`` and ``W_o`` are identities and each head's values are
one-hot rows, so the output *is* the attention matrix.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from ..checks import call, expect_example, randint, seeded
from ..compare import describe_difference
from ..spec import Case, CheckFailed, expect, passed

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
    with seeded(0):  # its initial weights are replaced below: leave the global generator as it was
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
                   "head 0 holds features 0-1 of every position, head 1 features 2-3.")
    count += 1
    shown = "merge_heads(<the two heads above>)"
    expect_example(call(merge_heads, shown, heads), x, shown,
                   "merging puts each position's head outputs side by side again.")
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
        expect_example(call(merge_heads, shown, got), x, shown, "merge_heads undoes split_heads.")
        count += 2
    x = torch.randn(2, 3, 4, 5, generator=g).transpose(2, 3)  # (B, h, T, d_head), not contiguous
    shown = "merge_heads(x) with a non-contiguous x (a transposed tensor)"
    got = call(merge_heads, shown, x)
    expect_example(got, x.transpose(1, 2).flatten(2), shown,
                   "use .reshape (which copies when it must), not .view, after a transpose.")
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
    with seeded(0):  # the initial weights are replaced below; your global generator is left as it was
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
                   "with one position every weight is 1: the output is W_o(merge(v)).")
    count += 1
    sdr = _state_dict(g, 12, torch.float64, readable=True)
    xr = _readable_x(1, 4, 12, 2, torch.float64)
    args = (sdr, xr, 2, torch.tensor([[False, False, False, True]]), False)
    shown = "readable weights: W_v = W_o = I, one-hot values, so the output spells out the weights"
    expect_example(_run_module(MultiHeadSelfAttention, *args, shown), _module_oracle(*args), shown,
                   "each row of weights is softmax(q·k / √d_head) over the non-padded keys.")
    count += 1
    sd = _state_dict(g, C, torch.float64)
    for mask, label, causal, why in (
            (None, "None", False, "plain self-attention, like nn.MultiheadAttention(x, x, x)"),
            (pad, "<right padding>", False, "key_padding_mask True = this key is padding, ignore it"),
            (None, "None", True, "is_causal: position t attends to positions 0..t only"),
            (pad, "<right padding>", True, "padding and causal masks together"),
            (left, "<left padding>", True, "left padding with is_causal: query 0 of sequence 0 has no key; "
                                           "its head outputs are zeros, so its output is W_o's bias")):
        shown = (f"MultiHeadSelfAttention({C}, {h})(x, key_padding_mask={label}, "
                 f"is_causal={causal}) vs nn.MultiheadAttention with the same weights")
        args = (sd, x, h, mask, causal)
        expect_example(_run_module(MultiHeadSelfAttention, *args, shown), _module_oracle(*args), shown, why)
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
                   "output row is memory[0] = [1, 0].")
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
        expect_example(call(cross_attention, shown, *args), _cross_oracle(*args), shown, why)
        count += 1
    passed("cross_attention", count)


def _diagnosis(d: Any) -> Any:
    """diagnose()'s answer as plain data, each pair in a fixed order (either order is right): what
    the public check compares with the catalogue mistakes' answers."""
    if not isinstance(d, dict):
        return f"a {type(d).__name__}"
    plain = {}
    for key in ("wrong_lines", "mixed_axes", "scale_used", "scale_correct"):
        value = d.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (list, tuple)):
            value = sorted(value, key=str)
        plain[key] = value if isinstance(value, (bool, int, float, str, list, type(None))) else repr(value)
    return plain


def _expect_as(message: str | None, got: Any, expected: Any, key: str) -> None:
    """Fail with ``message`` (None: the answer is right) and the hints of the catalogue mistakes
    that give ``got`` on the example ``key`` (:func:`expect`, which also records it)."""
    try:
        expect(got, expected, key)
    except CheckFailed as failure:
        raise CheckFailed("\n".join([message or str(failure).splitlines()[0],
                                      *str(failure).splitlines()[1:]])) from None
    if message:
        raise CheckFailed(message)


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
    x1 = torch.randn(B, 1, C, generator=g, dtype=torch.float64)
    shown = "fixed_multi_head_attention(x of shape (2, 1, 12), W_q, W_k, W_v, W_o, 3)"
    expect_example(call(fixed_multi_head_attention, shown, x1, *W, h), torch_mha(x1, x1, h, *W), shown,
                   "with one position every weight is 1, whatever the scale: the output is the merged "
                   "values, projected by W_o.")
    count += 1
    shown = "fixed_multi_head_attention(x, W_q, W_k, W_v, W_o, 3)"
    args = (x, *W, h)
    expect_example(call(fixed_multi_head_attention, shown, *args), oracle, shown,
                   "the fixed function equals nn.MultiheadAttention with the same weights.")
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
    got = call(diagnose, shown, 12, 3)
    message = _axes_check(got, expected, ())
    _expect_as(message and f"{shown}: {message}", _diagnosis(got), _diagnosis(expected), shown)
    count += 1
    passed("the bug fix", count)


# ----------------------------------------------------------------------------------------
# Hidden cases
# ----------------------------------------------------------------------------------------

def _sizes(g: torch.Generator, max_h: int = 4) -> tuple[int, int, int, int]:
    """B, T, n_head, d_head with d_head often not a power of two."""
    return randint(g, 1, 4), randint(g, 2, 8), randint(g, 2, max_h + 1), (3, 5, 6, 7)[randint(g, 0, 4)]


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
    T_src = T_src or randint(g, 3 if readable else 2, 9)
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


def _float_check(got: Any, expected: Any, args: tuple) -> str | None:
    """max_abs_difference(): the reference's number, and as a Python float (the exercise says so;
    the default comparison would take a 0-d tensor for its .item())."""
    message = describe_difference(got, expected)
    if message is None and not isinstance(got, (int, float)):
        return (f"max_abs_difference should return a Python float, got a {type(got).__name__}: "
                "end with .item()")
    return message


def _diagnose_args(g):
    h = randint(g, 2, 9)
    return h * randint(g, 2, 20), h


_MODULE = ("lambda sd, x, n_head, mask, causal: ((m := MultiHeadSelfAttention(x.shape[-1], n_head).to(x))"
           ".load_state_dict(sd), m(x, mask, causal).detach())[1]")

CASES: dict[str, list[Case]] = {
    "test_split_merge_heads": [
        Case("split_heads", _split_args, "split: random (B, T, C), d_head not a power of two"),
        Case("split_heads", lambda g: _split_args(g, torch.float64, h=1), "split: one head"),
        Case("split_heads", lambda g: _split_args(g, d=1), "split: d_head = 1"),
        Case("split_heads", lambda g: _split_args(g, torch.bfloat16, T=1), "split: T = 1, bfloat16"),
        Case("merge_heads", _merge_args, "merge: random (B, h, T, d_head)"),
        Case("merge_heads", lambda g: _merge_args(g, torch.float64, T=1), "merge: T = 1, float64"),
        Case("lambda x: merge_heads(x.transpose(2, 3).contiguous().transpose(2, 3))", _merge_args,
             "merge: a non-contiguous input"),
        Case("lambda x, h: merge_heads(split_heads(x, h))", _split_args, "round trip"),
    ],
    "test_multi_head_self_attention": [
        Case(_MODULE, _module_args, "random input, no mask"),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, mask="right"),
             "key padding mask (right padding), float64"),
        Case(_MODULE, lambda g: _module_args(g, causal=True), "is_causal"),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, mask="left", causal=True),
             "left padding with is_causal: some queries have no key at all"),
        Case(_MODULE, lambda g: _module_args(g, mask="empty"),
             "one sequence entirely padding"),
        Case(_MODULE, lambda g: _module_args(g, T=1, h=3), "T = 1 (every weight is 1)"),
        Case(_MODULE, lambda g: _module_args(g, flat_q=True, mask="right", h=3),
             "W_q = 0: uniform weights over the non-padded keys"),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, h=1), "one head"),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, readable=True, h=3),
             "readable weights (W_v = W_o = I), no mask"),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, readable=True, h=2, mask="right"),
             "readable weights with a key padding mask"),
        Case(_MODULE, lambda g: _module_args(g, dtype=torch.float64, readable=True, h=2, causal=True),
             "readable weights with is_causal"),
    ],
    "test_cross_attention": [
        Case("cross_attention", _cross_args, "random decoder and encoder states, no mask"),
        Case("cross_attention", lambda g: _cross_args(g, dtype=torch.float64, mask="right"),
             "source padding mask, float64"),
        Case("cross_attention", lambda g: _cross_args(g, mask="empty"),
             "a source that is all padding"),
        Case("cross_attention", lambda g: _cross_args(g, T_src=1), "one source position"),
        Case("cross_attention", lambda g: _cross_args(g, dtype=torch.float64, T_tgt=1, mask="right"),
             "one target position"),
        Case("cross_attention", lambda g: _cross_args(g, dtype=torch.float64, readable=True, mask="right"),
             "readable weights with a source padding mask"),
    ],
    "test_fix_the_bug": [
        Case("fixed_multi_head_attention", _fixed_args, "fixed: random input"),
        Case("fixed_multi_head_attention", lambda g: _fixed_args(g, dtype=torch.float64, h=4),
             "fixed: 4 heads, float64"),
        Case("fixed_multi_head_attention", lambda g: _fixed_args(g, T=1, h=3), "fixed: T = 1"),
        Case("diagnose", _diagnose_args, "diagnose: random d_model and n_head", check=_axes_check),
        Case("diagnose", _diagnose_args, "diagnose: other sizes", check=_axes_check),
        Case("lambda *a: max_abs_difference(checks.buggy_multi_head_attention, *a)",
             lambda g: _fixed_args(g, dtype=torch.float64, h=2),
             "your test on the buggy function (float64)", check=_float_check),
        Case("lambda *a: max_abs_difference(lambda x, W_q, W_k, W_v, W_o, n_head: "
             "checks.torch_mha(x, x, n_head, W_q, W_k, W_v, W_o) - 1.0, *a)",
             lambda g: _fixed_args(g, dtype=torch.float64, h=2),
             "your test on a function whose output is 1 too small everywhere (float64)",
             check=_float_check),
        Case("lambda *a: max_abs_difference(fixed_multi_head_attention, *a)",
             lambda g: _fixed_args(g, dtype=torch.float64, h=3),
             "your test on your fixed function (float64)", check=_float_check),
    ],
}
