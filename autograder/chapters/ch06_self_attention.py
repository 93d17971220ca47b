"""Chapter 6 — self-attention: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook on examples small enough to work out
by hand, and compare with PyTorch's own ``F.scaled_dot_product_attention`` on random inputs.
``CASES`` is what the grader runs. Conventions (the exercise text states them too):

* a boolean mask means what it means for ``F.scaled_dot_product_attention``: True = attend;
* a softmax slice whose entries are all ``-inf`` (a query that may attend to nothing) gives
  weights 0, so that query's attention output is the zero vector, as PyTorch's returns;
* ``is_causal`` aligns the triangle top-left like PyTorch: query ``i`` sees keys ``0..i``.

The typical mistakes and their hints are the chapter's catalogue,
``solutions/06-self-attention/mistakes.yaml``: the grader and these checks name a mistake when a
result is that mistake's result. Its ``uses`` lets a softmax, mask or attention mistake be named
in the cells of the exercises that call that code. The one hint left here is for a mistake the
CPU cases cannot show (a mask made on the wrong device).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..checks import call, expect_example, param_shapes, randint, randn, seeded
from ..spec import Case, CheckFailed, Hint, expect, passed

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------------------
# Hints: a mistake that no patch of the catalogue shows on the grader's CPU cases
# ----------------------------------------------------------------------------------------

CAUSAL_DEVICE = Hint(
    "create the mask on the requested device: torch.ones(..., device=device).",
    lambda got, exp, args: isinstance(got, torch.Tensor) and got.device.type != exp.device.type)
CAUSAL_HINTS = (CAUSAL_DEVICE,)


def _attention_args(args: tuple) -> tuple:
    """(q, k, v, mask, is_causal) of a scaled_dot_product_attention case."""
    q, k, v, *rest = args
    mask = rest[0] if rest else None
    causal = bool(rest[1]) if len(rest) > 1 else False
    return q, k, v, mask, causal


# ----------------------------------------------------------------------------------------
# Public checks (run in the student's notebook)
# ----------------------------------------------------------------------------------------

def check_softmax(softmax: Callable) -> None:
    """Ratios known by heart, ±1e4 without overflow, -inf entries and rows, other dims."""
    ln3, inf = math.log(3.0), math.inf
    examples = [
        ((torch.tensor([0.0, ln3]),), torch.tensor([0.25, 0.75]),
         "e^0 : e^(ln 3) = 1 : 3, so the weights are 1/4 and 3/4."),
        ((torch.tensor([1e4, 0.0, -1e4]),), torch.tensor([1.0, 0.0, 0.0]),
         "exp(1e4) overflows float32: compute exp(x - max x) instead (the result is the same)."),
        ((torch.tensor([-1e4, -1e4]),), torch.tensor([0.5, 0.5]),
         "exp(-1e4) underflows to 0 and 0 / 0 is NaN; after subtracting the maximum both are exp(0)."),
        ((torch.tensor([[0.0, -inf, 0.0], [-inf, -inf, -inf]]),),
         torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]),
         "a -inf entry gets weight exp(-inf) = 0; a row that is all -inf is defined as all zeros "
         "(a query allowed to see nothing takes nothing)."),
        ((torch.tensor([[0.0, 0.0], [ln3, 0.0]]), 0), torch.tensor([[0.25, 0.5], [0.75, 0.5]]),
         "dim=0: each column sums to 1."),
        ((torch.tensor([[1e4, 0.0], [0.0, ln3]]),), torch.tensor([[1.0, 0.0], [0.25, 0.75]]),
         "each row is its own softmax: row 1 is 1/4, 3/4 however large the entries of row 0 are."),
    ]
    for args, expected, why in examples:
        shown = f"softmax({_show(args[0])}{', dim=%d' % args[1] if len(args) > 1 else ''})"
        expect_example(call(softmax, shown, *args), expected, shown, why)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64) * 3
    for dim in (-1, 1, 0):
        shown = f"softmax(<random float64 (2, 3, 5)>, dim={dim})"
        expect_example(call(softmax, shown, x, dim), torch.softmax(x, dim), shown,
                       "the result must equal torch.softmax(x, dim) on finite inputs, in x's dtype.")
    count = len(examples) + 3
    if torch.cuda.is_available():  # the grader may run your code on a GPU
        x = torch.tensor([[1e4, 0.0, -inf], [-inf, -inf, -inf]], device="cuda")
        shown = "softmax(<[[1e4, 0, -inf], [-inf, -inf, -inf]] on cuda>)"
        expect_example(call(softmax, shown, x), torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], device="cuda"),
                       shown, "the result lives on x's device.")
        count += 1
    passed("softmax", count)


def _show(x: torch.Tensor) -> str:
    return f"torch.tensor({x.tolist()})"


def check_causal_mask(causal_mask: Callable) -> None:
    """Masks small enough to write out, rectangular ones, and agreement with PyTorch's is_causal."""
    T, F_ = True, False
    examples = [
        ((3,), [[T, F_, F_], [T, T, F_], [T, T, T]],
         "row i is query i: it may attend to keys 0..i, itself included (True = attend)."),
        ((2, 4), [[T, F_, F_, F_], [T, T, F_, F_]],
         "T_q=2, T_k=4: as in PyTorch's is_causal, query i sees keys 0..i (top-left triangle)."),
        ((4, 2), [[T, F_], [T, T], [T, T], [T, T]], "T_q=4, T_k=2: queries 1-3 see both keys."),
        ((1,), [[T]], "a single token attends to itself."),
    ]
    for args, expected, why in examples:
        shown = f"causal_mask({', '.join(map(str, args))})"
        expect_example(call(causal_mask, shown, *args), torch.tensor(expected), shown, why,
                       CAUSAL_HINTS, args)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 4, generator=g, dtype=torch.float64) for n in (3, 5, 5))
    mask = call(causal_mask, "causal_mask(3, 5)", 3, 5)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise CheckFailed("causal_mask(3, 5) must return a torch.bool tensor; "
                          f"got {type(mask).__name__} {getattr(mask, 'dtype', '')}")
    expect(F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
           F.scaled_dot_product_attention(q, k, v, is_causal=True),
           "F.scaled_dot_product_attention with attn_mask=causal_mask(3, 5), compared with is_causal=True",
           ["your mask must give PyTorch's attention the same result as is_causal=True."])
    count = len(examples) + 1
    if torch.cuda.is_available():
        shown = "causal_mask(3, device='cuda')"
        expect_example(call(lambda: causal_mask(3, device="cuda"), shown), torch.ones(3, 3, dtype=torch.bool,
                                                                  device="cuda").tril(),
                       shown, "the mask is created on the requested device.", CAUSAL_HINTS, (3, 3))
        count += 1
    passed("causal_mask", count)


def _hand_attention() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One query, two keys, d_k = 4 (√d_k = 2): scaled scores 0 and ln 3, so weights 1/4, 3/4."""
    q = torch.tensor([[2 * math.log(3.0), 0.0, 0.0, 0.0]])  # (1, 4)
    k = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # (2, 4)
    v = torch.tensor([[4.0, 0.0], [0.0, 4.0]])  # (2, 2)
    return q, k, v


def check_scaled_dot_product_attention(attention: Callable) -> None:
    """A hand-computed example, masks, then agreement with F.scaled_dot_product_attention."""
    q, k, v = _hand_attention()
    shown = "scaled_dot_product_attention(q=[[2 ln 3, 0, 0, 0]], k=[[0, 0, 0, 0], [1, 0, 0, 0]], v=[[4, 0], [0, 4]])"
    expect_example(call(attention, shown, q, k, v), torch.tensor([[1.0, 3.0]]), shown,
                   "the scores q·k are 0 and 2 ln 3; divided by √d_k = 2 they are 0 and ln 3, the weights "
                   "1/4 and 3/4, and the output 1/4·[4, 0] + 3/4·[0, 4] = [1, 3].")
    mask = torch.tensor([[True, False]])
    expect_example(call(attention, shown + " with attn_mask=[[True, False]]", q, k, v, mask),
                   torch.tensor([[4.0, 0.0]]), shown + " with attn_mask=[[True, False]]",
                   "the query may only attend to key 0 (True = attend): all its weight goes to v_0.")
    count = 2
    g = torch.Generator().manual_seed(0)

    def randn64(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    pad = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, :]  # (2, 1, 5)
    some = torch.rand(5, 5, generator=g) < 0.5
    some |= torch.eye(5, dtype=torch.bool)
    dead = torch.ones(3, 5, dtype=torch.bool)
    dead[1] = False  # query 1 may attend to nothing
    examples = [
        ("(2, 5, 8) q, k and (2, 5, 3) v, no mask", (randn64(2, 5, 8), randn64(2, 5, 8), randn64(2, 5, 3))),
        ("a (5, 5) boolean mask shared by the batch", (randn64(2, 5, 8), randn64(2, 5, 8), randn64(2, 5, 3), some)),
        ("a (2, 1, 5) padding mask (sequence 1 has 2 padded keys)",
         (randn64(2, 5, 8), randn64(2, 5, 8), randn64(2, 5, 3), pad)),
        ("is_causal=True, 4-D (2, 3, 5, 4) inputs", (randn64(2, 3, 5, 4), randn64(2, 3, 5, 4),
                                                     randn64(2, 3, 5, 4), None, True)),
        ("is_causal=True with T_q=3, T_k=6", (randn64(3, 4), randn64(6, 4), randn64(6, 2), None, True)),
        ("a (3, 5) mask whose row 1 is all False", (randn64(3, 4), randn64(5, 4), randn64(5, 2), dead)),
        ("scores of size ~1e3 (float32)", (randn64(4, 16).float() * 30, randn64(6, 16).float() * 30,
                                           randn64(6, 3).float())),
    ]
    for label, args in examples:
        shown = f"scaled_dot_product_attention(<{label}>)"
        q, k, v, mask, causal = _attention_args(args)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        why = "the result must equal F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal=...)"
        if label.startswith("a (3, 5) mask"):
            why += "; the query that may attend to nothing gets a zero output, as PyTorch's"
        expect_example(call(attention, shown, *args), expected, shown, why + ".")
        count += 1
    passed("scaled_dot_product_attention", count)


def check_self_attention(SelfAttention: Callable) -> None:
    """Parameter names and shapes, a hand example (W_q = 0), then agreement with PyTorch."""
    with seeded(0):  # the modules' initial weights: the same in every notebook, yours left as they were
        module = call(SelfAttention, "SelfAttention(6, 4, 3)", 6, 4, 3)
        expect(param_shapes(module), {"W_q.weight": (4, 6), "W_k.weight": (4, 6), "W_v.weight": (3, 6)},
               "SelfAttention(6, 4, 3)'s parameters (name -> shape)",
               ["W_q, W_k, W_v are nn.Linear(d_model, d_k or d_v, bias=False): a weight of shape "
                "(out, in) and no bias."])
        expect(param_shapes(call(SelfAttention, "SelfAttention(6, 4)", 6, 4))["W_v.weight"], (4, 6),
               "SelfAttention(6, 4).W_v.weight.shape", ["d_v defaults to d_k."])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, generator=g)
    with torch.no_grad():
        params = dict(module.named_parameters())
        for name in sorted(params):
            params[name].copy_(torch.randn(params[name].shape, generator=g))
        module.W_q.weight.zero_()  # every score is 0: each output is the mean of the values
        shown = "SelfAttention(6, 4, 3) with W_q = 0, on a random (2, 5, 6) x"
        expect_example(call(module, shown, x), module.W_v(x).mean(1, keepdim=True).expand(2, 5, 3), shown,
                       "with W_q = 0 every score is 0, the weights are all 1/5, and every output is the "
                       "mean of the 5 value vectors W_v(x).")
        for name in sorted(params):
            params[name].copy_(torch.randn(params[name].shape, generator=g))
        pad = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, :]
        for label, mask, causal in (("no mask", None, False), ("a (2, 1, 5) padding mask", pad, False),
                                    ("is_causal=True", None, True)):
            shown = f"SelfAttention(6, 4, 3)(<random (2, 5, 6) x>, {label})"
            expected = F.scaled_dot_product_attention(module.W_q(x), module.W_k(x), module.W_v(x),
                                                      attn_mask=mask, is_causal=causal)
            got = call(module, shown, x, mask, causal)
            expect_example(got, expected, shown,
                           "the output is F.scaled_dot_product_attention(W_q(x), W_k(x), W_v(x), ...), "
                           "shape (B, T, d_v) = (2, 5, 3).")
        expect_example(got[:, 0], module.W_v(x)[:, 0], shown + ", position 0",
                       "with a causal mask the first token sees only itself: its output is its own "
                       "value vector W_v(x_0).")
    passed("SelfAttention", 7)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

def _softmax_random(g):
    return randn(g, randint(g, 2, 5), randint(g, 3, 9), scale=3.0), -1


def _softmax_dims(g):
    return randn(g, randint(g, 2, 4), randint(g, 2, 5), randint(g, 2, 6), dtype=torch.float64), randint(g, 0, 2)


def _softmax_huge(g):
    x = randn(g, randint(g, 2, 5), randint(g, 3, 8), scale=1e4)
    x[0] = torch.full_like(x[0], -1e4)  # a row of equal, very negative scores
    return (x,)


def _softmax_masked(g):
    x = randn(g, randint(g, 3, 6), randint(g, 3, 8), dtype=torch.float64, scale=5.0)
    x[torch.rand(x.shape, generator=g) < 0.4] = NEG_INF
    x[:, 0] = 1e3  # large but finite
    x[1] = NEG_INF  # fully masked row
    return x, -1


def _softmax_masked_dim0(g):
    x = randn(g, randint(g, 3, 6), randint(g, 3, 6), scale=2.0)
    x[torch.rand(x.shape, generator=g) < 0.3] = NEG_INF
    x[:, -1] = NEG_INF  # a fully masked column
    return x, 0


def _softmax_tiny(g):
    return randn(g, randint(g, 1, 4), 1), -1  # one entry per slice: weight 1


def _causal_args(g, T_q, T_k=None):
    ref = torch.zeros(1)  # its device tells causal_mask where to build the mask
    return ref, T_q, T_k


CAUSAL_CALL = "lambda ref, T_q, T_k: causal_mask(T_q, T_k, device=ref.device)"
CAUSAL_DEFAULT_CALL = "lambda ref, T_q, T_k: causal_mask(T_q, device=ref.device)"


def _other(g, lo: int, hi: int, avoid: int) -> int:
    """A random int in [lo, hi) other than ``avoid`` (sizes that must differ, e.g. d_v and d_k)."""
    n = randint(g, lo, hi - 1) if lo <= avoid < hi else randint(g, lo, hi)
    return n + 1 if lo <= avoid <= n else n


def _attn(g, q_shape, T_k, d_v, dtype=torch.float32, scale=1.0):
    *batch, T_q, d_k = q_shape
    q = randn(g, *batch, T_q, d_k, dtype=dtype, scale=scale)
    k = randn(g, *batch, T_k, d_k, dtype=dtype, scale=scale)
    return q, k, randn(g, *batch, T_k, d_v, dtype=dtype)


def _attn_plain(g):
    B, T_q, d_k = randint(g, 2, 4), randint(g, 2, 9), randint(g, 2, 17)
    return _attn(g, (B, T_q, d_k), _other(g, 2, 9, T_q), _other(g, 1, 7, d_k))


def _attn_4d(g):
    B, H, T, d = randint(g, 1, 3), randint(g, 2, 4), randint(g, 2, 7), randint(g, 2, 9)
    return _attn(g, (B, H, T, d), T, _other(g, 2, 6, d), dtype=torch.float64)


def _attn_mask(g):
    T_q, T_k = randint(g, 2, 7), randint(g, 2, 7)
    d_k = randint(g, 2, 9)
    q, k, v = _attn(g, (randint(g, 1, 4), T_q, d_k), T_k, _other(g, 1, 5, d_k))
    mask = torch.rand(T_q, T_k, generator=g) < 0.6
    mask[:, 0] = True  # every query keeps at least one key
    return q, k, v, mask, False


def _attn_padding(g):
    B, T = randint(g, 2, 5), randint(g, 3, 9)
    q, k, v = _attn(g, (B, T, randint(g, 2, 9)), T, randint(g, 2, 5))
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[1] = T, randint(g, 1, T)  # one full sequence, one padded
    mask = (torch.arange(T)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, T): keys kept
    return q, k, v, mask, False


def _attn_causal(g):
    T, d_k = randint(g, 2, 9), randint(g, 2, 9)
    return (*_attn(g, (randint(g, 1, 4), T, d_k), T, _other(g, 1, 6, d_k)), None, True)


def _attn_causal_rect(g):
    T_q, T_k = randint(g, 2, 5), randint(g, 5, 9)
    if randint(g, 0, 2):
        T_q, T_k = T_k, T_q
    return (*_attn(g, (randint(g, 1, 3), T_q, randint(g, 2, 9)), T_k, randint(g, 1, 6)), None, True)


def _attn_dead_rows(g):
    T_q, T_k = randint(g, 3, 7), randint(g, 2, 7)
    q, k, v = _attn(g, (randint(g, 1, 3), T_q, randint(g, 2, 9)), T_k, randint(g, 2, 5), dtype=torch.float64)
    mask = torch.rand(T_q, T_k, generator=g) < 0.5
    mask[:, 0] = True
    mask[randint(g, 0, T_q)] = False  # a query that may attend to nothing: zero output
    return q, k, v, mask, False


def _attn_large(g):
    return _attn(g, (randint(g, 1, 3), randint(g, 2, 7), 64), randint(g, 2, 7), randint(g, 2, 5), scale=6.0)


def _attn_square(g):
    n = randint(g, 3, 9)  # T_q = T_k = d_k = d_v: q @ k runs without its transpose
    return _attn(g, (randint(g, 1, 3), n, n), n, n, dtype=torch.float64)


def _attn_single(g):
    return (*_attn(g, (1, 1, randint(g, 1, 9)), 1, randint(g, 1, 5)), None, True)


def _module_args(g, B, T, dims, mask=None, causal=False, dtype=torch.float32):
    d_model, d_k, d_v = dims
    sd = {"W_q.weight": randn(g, d_k, d_model, dtype=dtype, scale=d_model ** -0.5),
          "W_k.weight": randn(g, d_k, d_model, dtype=dtype, scale=d_model ** -0.5),
          "W_v.weight": randn(g, d_v, d_model, dtype=dtype, scale=d_model ** -0.5)}
    return dims, sd, randn(g, B, T, d_model, dtype=dtype), mask, causal


def _dims(g):
    d_k = randint(g, 2, 9)
    return randint(g, 2, 17), d_k, _other(g, 1, 7, d_k)


def _module_plain(g):
    return _module_args(g, randint(g, 1, 4), randint(g, 2, 9), _dims(g))


def _module_padding(g):
    B, T = randint(g, 2, 4), randint(g, 3, 8)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[1] = T, randint(g, 1, T)  # one full sequence, one padded
    mask = (torch.arange(T)[None, :] < lengths[:, None])[:, None, :]
    return _module_args(g, B, T, _dims(g), mask)


def _module_causal(g):
    return _module_args(g, randint(g, 1, 4), randint(g, 2, 9), _dims(g), None, True, torch.float64)


def _module_default_dv(g):
    d_model, d_k = randint(g, 2, 12), randint(g, 2, 8)
    return _module_args(g, randint(g, 1, 3), randint(g, 2, 6), (d_model, d_k, d_k))


MODULE_CALL = ("lambda dims, sd, x, mask, causal: (lambda m: (m.load_state_dict(sd), "
               "m(x, mask, causal))[1])(SelfAttention(*dims).to(x.device, x.dtype).requires_grad_(False))")
MODULE_DEFAULT_CALL = ("lambda dims, sd, x, mask, causal: (lambda m: (m.load_state_dict(sd), "
                       "m(x))[1])(SelfAttention(dims[0], dims[1]).to(x.device, x.dtype)"
                       ".requires_grad_(False))")

CASES: dict[str, list[Case]] = {
    "test_softmax": [
        Case("softmax", _softmax_random, "random (N, T) float32 scores, dim=-1"),
        Case("softmax", _softmax_dims, "random float64 3-D input, dim 0 or 1"),
        Case("softmax", _softmax_huge, "scores of size ±1e4, one row all -1e4 (default dim)"),
        Case("softmax", _softmax_masked, "float64 with -inf entries, a fully -inf row, and 1e3"),
        Case("softmax", _softmax_masked_dim0, "-inf entries and a fully -inf column, dim=0"),
        Case("softmax", _softmax_tiny, "slices of length 1"),
    ],
    "test_causal_mask": [
        Case(CAUSAL_CALL, lambda g: _causal_args(g, *[randint(g, 2, 10)] * 2), "square T x T",
             CAUSAL_HINTS),
        Case(CAUSAL_DEFAULT_CALL, lambda g: _causal_args(g, randint(g, 2, 10)),
             "square, T_k left out", CAUSAL_HINTS),
        Case(CAUSAL_CALL, lambda g: _causal_args(g, randint(g, 2, 5), randint(g, 5, 10)), "T_q < T_k",
             CAUSAL_HINTS),
        Case(CAUSAL_CALL, lambda g: _causal_args(g, randint(g, 5, 10), randint(g, 2, 5)), "T_q > T_k",
             CAUSAL_HINTS),
        Case(CAUSAL_DEFAULT_CALL, lambda g: _causal_args(g, 1), "T = 1", CAUSAL_HINTS),
    ],
    "test_scaled_dot_product_attention": [
        Case("scaled_dot_product_attention", _attn_plain,
             "(B, T_q, d_k) q with T_k != T_q and d_v != d_k, no mask"),
        Case("scaled_dot_product_attention", _attn_4d, "float64 (B, H, T, d) inputs, no mask"),
        Case("scaled_dot_product_attention", _attn_mask, "a random (T_q, T_k) boolean mask"),
        Case("scaled_dot_product_attention", _attn_padding, "a (B, 1, T) key-padding mask"),
        Case("scaled_dot_product_attention", _attn_causal, "is_causal=True, T_q = T_k"),
        Case("scaled_dot_product_attention", _attn_causal_rect, "is_causal=True, T_q != T_k"),
        Case("scaled_dot_product_attention", _attn_dead_rows,
             "float64, a mask with a query that may attend to nothing"),
        Case("scaled_dot_product_attention", _attn_large, "d_k = 64, large scores"),
        Case("scaled_dot_product_attention", _attn_square, "float64, square inputs: T_q = T_k = d_k = d_v"),
        Case("scaled_dot_product_attention", _attn_single, "T = 1, is_causal=True"),
    ],
    "test_self_attention": [
        Case(MODULE_CALL, _module_plain, "random weights and (B, T, d_model) x, no mask"),
        Case(MODULE_CALL, _module_padding, "a (B, 1, T) key-padding mask"),
        Case(MODULE_CALL, _module_causal, "float64, is_causal=True"),
        Case(MODULE_DEFAULT_CALL, _module_default_dv, "d_v left out (= d_k), forward(x) only"),
    ],
}
