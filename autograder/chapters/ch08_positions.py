"""Chapter 8 — positions: public checks, hidden cases and the layers the equivariance test judges.

The ``check_*`` functions run in the student's notebook, on small examples that can be
verified by hand and on properties any correct answer has (a rotation keeps norms; a RoPE
score depends only on the offset). ``CASES`` is what the grader runs: the same calls on
random inputs, compared with the reference notebook's results. This module holds no
reference solution.

The typical mistakes and their hints are the chapter's catalogue,
``solutions/08-positions/mistakes.yaml``: the grader and these checks name a mistake when a
result is that mistake's result (columns swapped, pairs rotated the other way, a test of
invariance instead of equivariance), so the public checks' examples are deterministic: a
module's initial weights and the layers' seeds come from :func:`~autograder.checks.seeded`.

``make_layer`` builds the small layers, with and without positions, on which a student's
permutation-equivariance test is graded. They are ordinary PyTorch layers; none of them
computes a sinusoidal table or RoPE.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import as_tensor, call, expect_example, outcome, pick, raised, raised_kind, randint, seeded
from ..compare import describe_difference
from ..spec import Case, CheckFailed, passed

BASE = 10000.0


# ----------------------------------------------------------------------------------------
# Helpers shared by the public checks and the hidden cases
# ----------------------------------------------------------------------------------------

def _angle_check(max_position: Callable[[tuple], float], scale: Callable[[tuple], float]):
    """A check that also allows the rounding of angles t·ω: a few float32 ulps of the largest
    angle (float64 ones for float64), plus two ulps of the output dtype, times the size of the
    rotated values. Correct formulas differ by that much (in float32, ~1e-5 at position 50);
    the mistakes the hints name differ by order 1."""
    def check(got: Any, expected: Any, args: tuple) -> str | None:
        message = describe_difference(got, expected)
        if message is None or not isinstance(got, torch.Tensor) or got.shape != expected.shape \
                or got.dtype != expected.dtype or got.device.type != expected.device.type:
            return message
        eps = torch.finfo(expected.dtype).eps
        eps_angle = eps if expected.dtype == torch.float64 else torch.finfo(torch.float32).eps
        slack = (8 * eps_angle * (1 + max_position(args)) + 2 * eps) * scale(args)
        diff = (got.double() - expected.double()).abs()
        if bool((diff <= slack).all()):
            return None
        return message
    return check


# ----------------------------------------------------------------------------------------
# Exercise 1: the sinusoidal table
# ----------------------------------------------------------------------------------------

def check_sinusoidal_table(sinusoidal_table: Callable) -> None:
    """A 3 × 4 table by hand, then shape, dtype, range and the d = 2 case."""
    s1, c1, s2, c2 = math.sin(1), math.cos(1), math.sin(2), math.cos(2)
    expected = torch.tensor([[0.0, 1.0, 0.0, 1.0],
                             [s1, c1, math.sin(0.01), math.cos(0.01)],
                             [s2, c2, math.sin(0.02), math.cos(0.02)]], dtype=torch.float64)
    shown = "sinusoidal_table(3, 4, dtype=torch.float64)"
    got = call(lambda: sinusoidal_table(3, 4, dtype=torch.float64), shown)
    expect_example(got, expected, shown,
                   "with d = 4 the two frequencies are 1 and 1/10000^(2/4) = 1/100: row t is "
                   "[sin t, cos t, sin(t/100), cos(t/100)].")
    shown = "sinusoidal_table(2, 2)"
    got = call(lambda: sinusoidal_table(2, 2), shown)
    expect_example(got, torch.tensor([[0.0, 1.0], [s1, c1]]), shown,
                   "the default dtype is float32; with d = 2 there is one pair, frequency 1.")
    shown = "sinusoidal_table(50, 10)"
    got = call(lambda: sinusoidal_table(50, 10), shown)
    t = as_tensor(got)
    if t is None or t.shape != (50, 10) or t.dtype != torch.float32:
        expect_example(got, torch.zeros(50, 10), shown, "a float32 tensor of shape (T, d).")
    row0 = torch.tensor([0.0, 1.0] * 5)
    expect_example(t[0], row0, shown + "[0]", "position 0 is [0, 1, 0, 1, ...]: sin 0 = 0, cos 0 = 1.")
    pairs = t[:, 0::2] ** 2 + t[:, 1::2] ** 2
    expect_example(pairs, torch.ones(50, 5), f"{shown}: sin² + cos² of each column pair",
                   "columns 2i and 2i+1 must be sin and cos of the same angle.")
    count = 4
    if torch.cuda.is_available():
        shown = "sinusoidal_table(3, 4, device='cuda')"
        got = call(lambda: sinusoidal_table(3, 4, device="cuda"), shown)
        expect_example(got, expected.float().cuda(), shown, "the table is created on the device asked for.")
        count += 1
    passed("sinusoidal_table", count)


# ----------------------------------------------------------------------------------------
# Exercise 2: learned position embeddings
# ----------------------------------------------------------------------------------------

def _learned_check(got: Any, expected: Any, args: tuple) -> str | None:
    """Tensors as usual; where the reference raised (ValueError: T > max_len), any exception of
    the same type passes, whatever its message."""
    if raised(expected):
        kind = raised_kind(expected)
        if raised(got, kind):
            return None
        return f"expected a {kind} for T = {args[0].shape[-2]} > max_len = {args[1].shape[0]}, " + (
            f"but your module {got}" if raised(got) else "but your module returned a result")
    if raised(got):
        return f"your module {got}"
    return describe_difference(got, expected)


# The grader's adapter: the reference's table W is loaded into the student's module by name.
LEARNED_CALL = ("lambda x, W: (lambda m: checks.outcome(lambda: m(x)))"
                "(checks.loaded(LearnedPositionalEmbedding, W))")


def loaded(cls: Callable, W: torch.Tensor) -> nn.Module:
    """``cls(max_len, d)`` on W's device and dtype, with ``W`` loaded as its ``pos.weight``."""
    module = cls(*W.shape).to(W.device, W.dtype)
    names = sorted(name for name, _ in module.named_parameters())
    if names != ["pos.weight"]:
        raise CheckFailed(f"LearnedPositionalEmbedding{tuple(W.shape)} has parameters {names}: "
                          "it must have exactly one, self.pos = nn.Embedding(max_len, d), "
                          "so that its table is pos.weight of shape (max_len, d).")
    if tuple(module.pos.weight.shape) != tuple(W.shape):
        raise CheckFailed(f"pos.weight has shape {tuple(module.pos.weight.shape)}, expected "
                          f"{tuple(W.shape)} = (max_len, d).")
    module.load_state_dict({"pos.weight": W})
    return module


def check_learned_positions(LearnedPositionalEmbedding: Callable) -> None:
    """Integer tables added by hand, the length limit, and gradients reaching the table."""
    W = torch.arange(12.0).reshape(4, 3)  # position t is [3t, 3t + 1, 3t + 2]
    with seeded(0):  # the module's initial table (replaced by W): yours left as it was
        module = loaded(lambda *shape: call(LearnedPositionalEmbedding,
                                              f"LearnedPositionalEmbedding{shape}", *shape), W)
    x = torch.tensor([[[100.0, 0, 0], [100, 0, 0]], [[0, 0, 0], [0, 0, 200]]])  # (B=2, T=2, d=3)
    expected = torch.tensor([[[100.0, 1, 2], [103, 4, 5]], [[0, 1, 2], [3, 4, 205]]])
    shown = ("LearnedPositionalEmbedding(4, 3) with pos.weight = arange(12).reshape(4, 3), "
             "on x of shape (2, 2, 3)")
    expect_example(call(module, shown, x), expected, shown,
                   "position t adds row t of pos.weight to every sequence of the batch.")
    lengths = ((torch.zeros(1, 4, 3), W[None], "T == max_len is the longest allowed sequence."),
               (torch.zeros(2, 5, 3), "raised ValueError", "5 positions do not fit a table of 4."))
    for x, expected, why in lengths:
        shown = f"the same module on zeros of shape {tuple(x.shape)}"
        got = outcome(lambda: module(x))
        # an exception is compared by its type: what it says is the student's own
        expect_example(f"raised {raised_kind(got)}" if raised(got) else got, expected, shown, why)
    if "4" not in got or "5" not in got:
        raise CheckFailed(f"{shown} {got}: name max_len (4) and T (5) in the message, so the "
                          "user knows what to change.")
    with seeded(0):
        fresh = call(lambda: LearnedPositionalEmbedding(8, 5), "LearnedPositionalEmbedding(8, 5)")
        x = torch.randn(3, 6, 5, requires_grad=True)
    out = call(fresh, "LearnedPositionalEmbedding(8, 5)(x)", x)
    out.sum().backward()
    grad = fresh.pos.weight.grad
    if grad is None:
        raise CheckFailed("no gradient reached pos.weight: look the positions up with self.pos(...) "
                          "so that the table is learned.")
    expect_example(grad, torch.cat([torch.full((6, 5), 3.0), torch.zeros(2, 5)]),
                   "pos.weight.grad after out.sum().backward() on x of shape (3, 6, 5)",
                   "rows 0..5 are used once per sequence (3 sequences), rows 6 and 7 not at all.")
    passed("LearnedPositionalEmbedding", 5)


# ----------------------------------------------------------------------------------------
# Exercise 3: the layers an equivariance test is graded on, and its hints
# ----------------------------------------------------------------------------------------

class _Attention(nn.Module):
    """One-head self-attention, (B, T, C) → (B, T, C); optionally causal, with an added
    position table, or with a score bias that falls with the distance |i - j|."""

    def __init__(self, C: int, causal: bool = False, table: bool = False, distance: bool = False,
                 max_len: int = 64):
        super().__init__()
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.causal, self.distance = causal, distance
        self.table = nn.Parameter(torch.randn(max_len, C)) if table else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if self.table is not None:
            x = x + self.table[:T]
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, T, C) each
        bias = None
        if self.distance:
            t = torch.arange(T, device=x.device)
            bias = -0.5 * (t[:, None] - t[None, :]).abs().to(x.dtype)  # (T, T)
        return self.proj(F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=self.causal))


class _Lambda(nn.Module):
    """A parameter-light layer given by a function of (self, x)."""

    def __init__(self, C: int, fn: Callable):
        super().__init__()
        self.lin, self.fn = nn.Linear(C, C), fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


class _EncoderLayer(nn.Module):
    """nn.TransformerEncoderLayer (one head, no dropout), optionally with a causal mask."""

    def __init__(self, C: int, causal: bool):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(C, 1, 2 * C, dropout=0.0, batch_first=True)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.causal:
            return self.layer(x)
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device, dtype=x.dtype)
        return self.layer(x, src_mask=mask, is_causal=True)


def _conv(C: int) -> nn.Module:
    conv = nn.Conv1d(C, C, kernel_size=3, padding=1)
    return _Lambda(C, lambda self, x: conv.to(x.device, x.dtype)(x.transpose(1, 2)).transpose(1, 2))


LAYERS: dict[str, tuple[Callable[[int], nn.Module], str]] = {
    "identity": (lambda C: nn.Identity(), "returns x unchanged"),
    "mlp": (lambda C: nn.Sequential(nn.Linear(C, 2 * C), nn.GELU(), nn.Linear(2 * C, C)),
            "the same MLP applied at every position"),
    "attention": (lambda C: _Attention(C), "self-attention without positions"),
    "encoder": (lambda C: _EncoderLayer(C, causal=False), "nn.TransformerEncoderLayer, no mask"),
    "mean_mix": (lambda C: _Lambda(C, lambda self, x: x + self.lin(x.mean(1, keepdim=True))),
                 "adds a projection of the sequence mean to every position"),
    "causal": (lambda C: _Attention(C, causal=True), "causal self-attention"),
    "causal_encoder": (lambda C: _EncoderLayer(C, causal=True),
                       "nn.TransformerEncoderLayer with a causal mask"),
    "table": (lambda C: _Attention(C, table=True), "self-attention after adding a position table"),
    "distance": (lambda C: _Attention(C, distance=True),
                 "self-attention with a score bias -|i - j|/2 (relative positions only)"),
    "conv": (_conv, "a width-3 convolution along time"),
    "cumsum": (lambda C: _Lambda(C, lambda self, x: self.lin(x).cumsum(1)), "a running sum over time"),
    "first_token": (lambda C: _Lambda(C, lambda self, x: x + self.lin.bias * (
        torch.arange(x.shape[1], device=x.device) == 0).to(x.dtype)[:, None]),
        "adds a vector to position 0 only"),
    "sort": (lambda C: _Lambda(C, lambda self, x: x.sort(dim=1).values),
             "sorts each feature over time (permutation-invariant, not equivariant)"),
    "last_step": (lambda C: _Lambda(C, lambda self, x: x + self.lin(x[:, -1:] - x[:, -2:-1])),
                  "adds a projection of the last step x[:, -1] - x[:, -2] to every position"),
}


def make_layer(kind: str, C: int, seed: int) -> nn.Module:
    """The test layer ``kind`` (a key of :data:`LAYERS`) for width ``C``, weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return LAYERS[kind][0](C).eval()


EQUIV_CALL = ("lambda x, kind, seed: is_permutation_equivariant("
              "checks.make_layer(kind, x.shape[-1], seed).to(x.device, x.dtype), x)")

EQUIV_REPEATED_CALL = ("lambda x, kind, seed: [is_permutation_equivariant(checks.make_layer("
                       "kind, x.shape[-1], seed + i).to(x.device, x.dtype), x) for i in range(8)]")


def check_is_permutation_equivariant(is_permutation_equivariant: Callable) -> None:
    """Layers with a known answer, including a causal one, a sorter, a distance bias and length 1."""
    g = torch.Generator().manual_seed(8)
    examples = [("identity", 5, True), ("mlp", 6, True), ("attention", 6, True),
                ("causal", 5, False), ("table", 4, False), ("first_token", 6, False),
                ("sort", 5, False), ("distance", 5, False), ("causal", 1, True), ("causal", 2, False)]
    with seeded(0):  # make_layer seeds the global generator: yours is left as it was
        for kind, T, expected in examples:
            x = torch.randn(2, T, 8, generator=g)
            layer = make_layer(kind, 8, seed=T)
            shown = f"is_permutation_equivariant(<{LAYERS[kind][1]}>, x of shape (2, {T}, 8))"
            why = ("with one position there is nothing to permute: every layer is equivariant." if T == 1
                   else f"{LAYERS[kind][1]}: " + ("equivariant." if expected else "not equivariant."))
            expect_example(call(is_permutation_equivariant, shown, layer, x), expected, shown, why)
        x = torch.randn(2, 2, 8, generator=g)
        shown = "[is_permutation_equivariant(<causal self-attention no. i>, x of shape (2, 2, 8)) for i in range(8)]"
        answers = [call(is_permutation_equivariant, shown, make_layer("causal", 8, seed=100 + i), x)
                   for i in range(8)]
        expect_example(answers, [False] * 8, shown, "causal self-attention is never equivariant, whichever "
                       "weights it draws.")
    passed("is_permutation_equivariant", len(examples) + 1)


# ----------------------------------------------------------------------------------------
# Exercise 4: RoPE (adjacent pairs (2i, 2i+1), as in RoFormer)
# ----------------------------------------------------------------------------------------

def check_apply_rope(apply_rope: Callable) -> None:
    """Hand rotations with d = 2 and d = 4, then norms, dtype and the relative-offset property."""
    s, c = math.sin, math.cos
    x = torch.tensor([[1.0, 0.0]] * 3, dtype=torch.float64)
    expected = torch.tensor([[1.0, 0.0], [c(1), s(1)], [c(2), s(2)]], dtype=torch.float64)
    shown = "apply_rope([[1., 0.]] * 3) (T = 3, d = 2, float64)"
    expect_example(call(apply_rope, shown, x), expected, shown,
                   "with d = 2 there is one pair, θ_0 = 1: position t turns (1, 0) to (cos t, sin t).")
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    positions = torch.tensor([1])
    expected = torch.tensor([[-s(1), c(1), -s(0.01), c(0.01)]], dtype=torch.float64)
    shown = "apply_rope([[0., 1., 0., 1.]], positions=torch.tensor([1]))"
    expect_example(call(apply_rope, shown, x, positions), expected, shown,
                   "pairs (0, 1) and (2, 3) turn by 1·θ_0 = 1 and 1·θ_1 = 1/100: (0, 1) ↦ (−sin, cos).")
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 7, 10, generator=g)  # (B, H, T, d)
    shown = "apply_rope(<random float32 x of shape (2, 3, 7, 10)>)"
    got = call(apply_rope, shown, x)
    t = as_tensor(got)
    if t is None or t.shape != x.shape or t.dtype != x.dtype:
        expect_example(got, x, shown, "the result has x's shape and dtype.")
    expect_example(t[..., 0, :], x[..., 0, :], shown + "[..., 0, :]", "position 0 is not rotated.")
    expect_example(t.norm(dim=-1), x.norm(dim=-1), shown + ": norms of each vector",
                   "a rotation keeps lengths.")
    q, k = torch.randn(2, 8, generator=g, dtype=torch.float64)
    scores = []
    for m, n in ((3, 1), (10, 8), (102, 100), (2, 0)):
        rq = call(apply_rope, "apply_rope(q[None], positions)", q[None], torch.tensor([m]))
        rk = call(apply_rope, "apply_rope(k[None], positions)", k[None], torch.tensor([n]))
        scores.append(float((rq * rk).sum()))
    expect_example(torch.tensor(scores, dtype=torch.float64), torch.full((4,), scores[-1], dtype=torch.float64),
                   "q·k scores of RoPE-rotated q at m and k at n for (m, n) = (3, 1), (10, 8), (102, 100), (2, 0)",
                   "the score must depend on the offset m − n = 2 only: rotate q and k by the same rule.")
    xb, positions = torch.randn(2, 6, 16, generator=g).to(torch.bfloat16), torch.arange(150, 156)
    shown = "apply_rope(<random bfloat16 x of shape (2, 6, 16)>, positions=torch.arange(150, 156))"
    wide = call(apply_rope, "apply_rope(x.float(), positions)", xb.float(), positions)
    expect_example(call(apply_rope, shown, xb, positions), as_tensor(wide).to(torch.bfloat16), shown,
                   "the same as rotating x.float() and casting the result to bfloat16: in bfloat16 "
                   "(8 significant bits) an angle such as 150·θ would be off by a large fraction of a radian.")
    count = 6
    if torch.cuda.is_available():
        xc = x.cuda()
        shown = "apply_rope(x.cuda())"
        expect_example(call(apply_rope, shown, xc), t.cuda(), shown, "the result lives on x's device; "
                       "create positions with device=x.device.")
        count += 1
    passed("apply_rope", count)


# ----------------------------------------------------------------------------------------
# Hidden cases
# ----------------------------------------------------------------------------------------

def _like(dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor whose device and dtype the adapter passes on (the grader moves it)."""
    return torch.empty(0, dtype=dtype)


def _table(T_range: tuple[int, int], d_choices: tuple[int, ...], dtype=torch.float32):
    return lambda g: (_like(dtype), randint(g, *T_range), pick(g, d_choices))


TABLE_CALL = "lambda like, T, d: sinusoidal_table(T, d, dtype=like.dtype, device=like.device)"
TABLE_CHECK = _angle_check(lambda args: args[1], lambda args: 1.0)


def _learned(g, B=None, T=None, extra=None, dtype=torch.float32):
    max_len, d = randint(g, 4, 12), randint(g, 3, 9)
    T = T if T is not None else randint(g, 2, max_len)
    T = max_len + extra if extra is not None else T
    B = B if B is not None else randint(g, 2, 5)
    return torch.randn(B, T, d, generator=g, dtype=dtype), torch.randn(max_len, d, generator=g, dtype=dtype)


def _equiv(kind: str, T_range: tuple[int, int], dtype=torch.float32):
    def make(g):
        T, C = randint(g, *T_range), pick(g, (6, 8, 10))
        return torch.randn(randint(g, 1, 4), T, C, generator=g, dtype=dtype), kind, randint(g, 0, 10**6)
    return make


def _equiv_repeats(g):
    """The "last_step" layer on a sequence a, b, …, b, b, a (tokens repeat, T >= 4): reversing it
    and swapping any neighbours but the last two changes neither x[:, -1] - x[:, -2] nor, up to the
    permutation, the output; only the swap of the last two positions shows that the layer is not
    equivariant, so a test must include it (or another permutation that moves the last step)."""
    x, kind, seed = _equiv("last_step", (4, 9))(g)
    x[:, -1] = x[:, 0]
    x[:, -3] = x[:, -2] = x[:, 1]
    return x, kind, seed


def _rope(shape_of: Callable, dtype=torch.float32, positions: str = "none", start=(0, 1)):
    def make(g):
        shape = shape_of(g)
        x = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
        T = shape[-2]
        if positions == "none":
            return (x,)
        first = randint(g, *start)
        if positions == "offset":
            return x, torch.arange(first, first + T)
        return x, torch.randint(0, 200, (T,), generator=g)  # "random": any order, repeats allowed
    return make


def _rope_max_position(args: tuple) -> float:
    return float(args[1].max()) if len(args) > 1 and args[1].numel() else float(args[0].shape[-2])


ROPE_CALL = "apply_rope"
ROPE_CHECK = _angle_check(_rope_max_position, lambda args: float(args[0].detach().abs().max()) + 1)


def _bhtd(g):
    return randint(g, 1, 3), randint(g, 1, 4), randint(g, 2, 9), 2 * randint(g, 2, 8)  # d = 2: its own case


CASES: dict[str, list[Case]] = {
    "test_sinusoidal_table": [
        Case(TABLE_CALL, _table((5, 40), (6, 10, 14)), "float32, d not a power of two",
             check=TABLE_CHECK),
        Case(TABLE_CALL, _table((20, 60), (16, 32, 64), torch.float64), "float64, d up to 64",
             check=TABLE_CHECK),
        Case(TABLE_CALL, _table((1, 2), (4, 8)), "T = 1", check=TABLE_CHECK),
        Case(TABLE_CALL, _table((3, 10), (2,)), "d = 2 (one pair)", check=TABLE_CHECK),
        Case(TABLE_CALL, _table((100, 129), (128,)), "T up to 128, d = 128", check=TABLE_CHECK),
    ],
    "test_is_permutation_equivariant": [
        Case(EQUIV_CALL, _equiv("mlp", (3, 8)), "a position-wise MLP"),
        Case(EQUIV_CALL, _equiv("attention", (3, 10)), "self-attention without positions"),
        Case(EQUIV_CALL, _equiv("encoder", (4, 9), torch.float64),
             "a float64 Transformer encoder layer without mask"),
        Case(EQUIV_CALL, _equiv("mean_mix", (3, 8)), "a layer mixing in the sequence mean"),
        Case(EQUIV_CALL, _equiv("causal", (4, 10)), "causal self-attention"),
        Case(EQUIV_CALL, _equiv("causal", (2, 3)), "causal self-attention, T = 2"),
        Case(EQUIV_CALL, _equiv("causal", (1, 2)), "causal self-attention, T = 1"),
        Case(EQUIV_REPEATED_CALL, _equiv("causal", (2, 3)),
             "8 causal self-attention layers, T = 2 (a single random permutation misses some)"),
        Case(EQUIV_CALL, _equiv("table", (2, 3)), "a position table, T = 2"),
        Case(EQUIV_CALL, _equiv("first_token", (2, 3)), "a vector at position 0, T = 2"),
        Case(EQUIV_CALL, _equiv("causal_encoder", (3, 8)), "an encoder layer with a causal mask"),
        Case(EQUIV_CALL, _equiv("table", (3, 9)), "attention after adding a position table"),
        Case(EQUIV_CALL, _equiv("distance", (3, 9)), "attention with a relative-distance bias"),
        Case(EQUIV_CALL, _equiv("conv", (3, 9)), "a convolution along time"),
        Case(EQUIV_CALL, _equiv("cumsum", (3, 9), torch.float64), "a running sum over time"),
        Case(EQUIV_CALL, _equiv("first_token", (5, 12)), "a vector added at position 0 only"),
        Case(EQUIV_CALL, _equiv("sort", (3, 9)), "sorting over time (invariant, not equivariant)"),
        Case(EQUIV_CALL, _equiv_repeats,
             "repeated tokens a, b, …, b, b, a: only swapping the last two positions shows the layer "
             "uses positions"),
    ],
    "test_apply_rope": [
        Case(ROPE_CALL, _rope(_bhtd), "(B, H, T, d) float32, default positions", check=ROPE_CHECK),
        Case(ROPE_CALL, _rope(lambda g: (randint(g, 2, 12), pick(g, (6, 10, 18))), torch.float64),
             "(T, d) float64, d not a power of two", check=ROPE_CHECK),
        Case(ROPE_CALL, _rope(lambda g: (randint(g, 1, 3), 1, pick(g, (2, 8)))), "T = 1", check=ROPE_CHECK),
        Case(ROPE_CALL, _rope(lambda g: (randint(g, 2, 9), 2)), "d = 2 (one pair)", check=ROPE_CHECK),
        Case(ROPE_CALL, _rope(_bhtd, positions="offset", start=(20, 90)),
             "positions start at an offset (as when decoding with a cache)", check=ROPE_CHECK),
        Case(ROPE_CALL, _rope(lambda g: (2, randint(g, 3, 9), 8), torch.float64, positions="random"),
             "positions in any order, with repeats", check=ROPE_CHECK),
        Case(ROPE_CALL, _rope(lambda g: (2, randint(g, 3, 9), 16), torch.bfloat16, positions="offset",
                              start=(150, 200)),
             "bfloat16 x at positions 150 and up", check=ROPE_CHECK),
    ],
    # Last on purpose: the final case asks for a too-long sequence, and a module that does not
    # check the length sends an out-of-range index to nn.Embedding, which on a GPU poisons the
    # kernel for every later call.
    "test_learned_positions": [
        Case(LEARNED_CALL, lambda g: _learned(g), "(B, T, d) float32, T < max_len", check=_learned_check),
        Case(LEARNED_CALL, lambda g: _learned(g, dtype=torch.float64), "float64", check=_learned_check),
        Case(LEARNED_CALL, lambda g: _learned(g, T=1), "T = 1", check=_learned_check),
        Case(LEARNED_CALL, lambda g: _learned(g, B=1), "batch of one", check=_learned_check),
        Case(LEARNED_CALL, lambda g: _learned(g, extra=0), "T == max_len", check=_learned_check),
        Case(LEARNED_CALL, lambda g: _learned(g, extra=randint(g, 1, 4)),
             "T > max_len: ValueError expected", check=_learned_check),
    ],
}
