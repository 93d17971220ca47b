"""Say in words how a result differs from the expected one.

One code path serves both sides of the course: the public checks a student runs in
their notebook, and the hidden comparison the grader makes outside it. Messages name
the first thing a student should fix (type, then shape, then dtype and device, then
values) instead of a bare ``AssertionError``.

Device-aware tolerances
-----------------------
Floating-point results are compared with ``|got - expected| <= atol + rtol * |expected|``
element-wise, with ``(rtol, atol)`` taken from :data:`TOLERANCES` by the device type the
values live on and their dtype. Integer, boolean and string results must match exactly.

========  =========  ===========  ===========  ==================================================
device    dtype      rtol         atol         why
========  =========  ===========  ===========  ==================================================
cpu       float64    1e-7         1e-9         exact IEEE arithmetic; only summation order differs
cpu       float32    1e-5         1e-6         a different but correct formula (gather vs matmul,
                                               normalise-then-dot vs dot-then-divide) moves a few ulps
cpu       float16    1e-3         1e-4         10-bit mantissa
cpu       bfloat16   1.6e-2       1e-3         7-bit mantissa
cuda      float64    1e-7         1e-8         as on cpu, plus atomics in reductions
cuda      float32    1e-4         1e-5         cuBLAS picks kernels by shape; split-K and atomics
                                               reorder sums; cuDNN may use TF32
cuda      float16    2e-3         1e-3         fused kernels accumulate in other orders
cuda      bfloat16   1.6e-2       1e-2         as float16, coarser mantissa
========  =========  ===========  ===========  ==================================================

A verdict must not depend on the device: tolerances are wide enough for any correct
implementation and far tighter than the typical mistakes the chapters hint at (a missing
1/sqrt(d_k), an off-by-one index), which change values by orders of magnitude more.
"""

from __future__ import annotations

import itertools
import math
import reprlib
from typing import Any

import torch

TOLERANCES: dict[str, dict[torch.dtype, tuple[float, float]]] = {
    "cpu": {
        torch.float64: (1e-7, 1e-9),
        torch.float32: (1e-5, 1e-6),
        torch.float16: (1e-3, 1e-4),
        torch.bfloat16: (1.6e-2, 1e-3),
    },
    "cuda": {
        torch.float64: (1e-7, 1e-8),
        torch.float32: (1e-4, 1e-5),
        torch.float16: (2e-3, 1e-3),
        torch.bfloat16: (1.6e-2, 1e-2),
    },
}


def tolerance(device_type: str, dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for values of ``dtype`` computed on ``device_type`` (exact for non-floats)."""
    if not dtype.is_floating_point:
        return 0.0, 0.0
    table = TOLERANCES.get(device_type, TOLERANCES["cuda"])  # other accelerators: the looser table
    return table.get(dtype, table[torch.float32])


def _kind(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of length {len(x)}"
    return f"{type(x).__name__} {_short(x)}" if isinstance(x, (int, float, str, bool, type(None))) else type(x).__name__


class _ShortRepr(reprlib.Repr):
    """``repr`` that looks at no more of a value than it shows: a few items per level, a few
    levels, the start of a string and the first values of a tensor (whatever its size, or a
    student's list that holds itself a million times)."""

    def __init__(self, limit: int):
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = limit
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdict = limit // 3

    def repr_str(self, x: str, level: int) -> str:
        return repr(x[:self.maxstring])  # the start, which the caller cuts: what a student recognises

    repr_bytes = repr_str

    def repr_dict(self, x: dict, level: int) -> str:  # reprlib's sorts every key
        shown = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                 for k, v in itertools.islice(x.items(), self.maxdict)]
        return "{" + ", ".join(shown + [self.fillvalue] * (len(x) > self.maxdict)) + "}"

    repr_OrderedDict = repr_Counter = repr_dict

    def repr_Tensor(self, x: torch.Tensor, level: int) -> str:
        if x.numel() <= self.maxlist:
            return self.repr1(x.tolist(), level)
        first = x.detach().flatten()[:self.maxlist].tolist()  # a view of a contiguous tensor
        return f"tensor of shape {tuple(x.shape)}: {self.repr1(first, level)[:-1]}, ...]"

    repr_Parameter = repr_Tensor


def _short(x: Any, limit: int = 60) -> str:
    text = _ShortRepr(limit).repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_difference(got: Any, expected: Any, name: str = "output") -> str | None:
    """``None`` when ``got`` matches ``expected``; otherwise one sentence saying what differs."""
    if isinstance(expected, torch.Tensor):
        return _tensor_difference(got, expected, name)
    if isinstance(expected, bool) or expected is None or isinstance(expected, (str, bytes)):
        if type(got) is not type(expected) or got != expected:
            return f"{name}: expected {_short(expected)}, got {_short(got)}"
        return None
    if isinstance(expected, (int, float)):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return f"{name}: expected a number, got {_kind(got)}"
        if isinstance(expected, int) and isinstance(got, int):
            return None if got == expected else f"{name}: expected {expected}, got {got}"
        if math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-6):
            return None
        return f"{name}: expected {expected:.6g}, got {got:.6g}"
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"{name}: expected {_kind(expected)}, got {_kind(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            message = describe_difference(g, e, f"{name}[{i}]")
            if message:
                return message
        if len(got) != len(expected):
            return (f"{name}: expected {len(expected)} items, got {len(got)} "
                    f"(the first {min(len(got), len(expected))} agree)")
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{name}: expected a dict, got {_kind(got)}"
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        if missing or extra:
            return (f"{name}: keys differ; missing {_short(missing)}, unexpected {_short(extra)}")
        for key in expected:
            message = describe_difference(got[key], expected[key], f"{name}[{key!r}]")
            if message:
                return message
        return None
    raise TypeError(f"cannot compare expected values of type {type(expected).__name__}")


def _tensor_difference(got: Any, expected: torch.Tensor, name: str) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"{name}: expected a torch.Tensor, got {_kind(got)}"
    if got.shape != expected.shape:
        return f"{name}: shape expected {tuple(expected.shape)}, got {tuple(got.shape)}"
    if got.dtype != expected.dtype:
        return f"{name}: dtype expected {expected.dtype}, got {got.dtype}"
    if got.device.type != expected.device.type:
        return (f"{name}: device expected {expected.device.type}, got {got.device.type} "
                f"(create new tensors with device=<input>.device)")
    g, e = got.detach(), expected.detach().to(got.device)
    rtol, atol = tolerance(e.device.type, e.dtype)
    if e.dtype.is_floating_point:
        g64, e64 = g.double(), e.double()
        bad = ~((g64 - e64).abs() <= atol + rtol * e64.abs())
        bad |= (g64.isinf() | e64.isinf()) & (g64 != e64)  # rtol * |inf| would accept anything
        bad |= g64.isnan() != e64.isnan()
        bad &= ~(g64.isnan() & e64.isnan())
        both_inf = g64.isinf() & e64.isinf() & (g64 == e64)
        bad &= ~both_inf
    else:
        bad = g != e
    count = int(bad.sum())
    if count == 0:
        return None
    where = bad.nonzero()[:3].tolist()
    first = tuple(where[0])
    message = (f"{name}: {count} of {e.numel()} values differ; first at index {list(first)}: "
               f"expected {e[first].item():.6g}, got {g[first].item():.6g}")
    if e.dtype.is_floating_point:
        worst = float((g.double() - e.double()).abs().nan_to_num(math.inf).max())
        message += f" (largest difference {worst:.3g}, allowed {atol:g} + {rtol:g}·|expected|)"
    return message
