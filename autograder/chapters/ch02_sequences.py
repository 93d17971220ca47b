"""Chapter 2 — sequences, windows, padding and masks: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook on small examples that can be checked
by hand and on properties every correct answer has (a sentence gets the same result alone or
padded in a batch). ``CASES`` is what the grader runs: the same calls on random inputs, compared
with the reference notebook's results. As in Chapter 1, this module holds no reference solution.

The typical mistakes and their hints are the chapter's catalogue,
``solutions/02-sequences/mistakes.yaml``: the grader and these checks name a mistake when a
result is that mistake's result. Its ``uses`` lets a ``window_features`` mistake be named in the
cell of ``window_tagger`` too, which calls it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..checks import call, expect_example, randint
from ..spec import Case, Hint, passed


# ----------------------------------------------------------------------------------------
# Hints: the typical mistakes are the catalogue's (solutions/02-sequences/mistakes.yaml), each
# a patch of the reference whose results the grader and the public checks compare with. Only a
# mistake no patch expresses keeps a hint here: a result on another device, which grading on
# the CPU cannot show.
# ----------------------------------------------------------------------------------------

def _wrong_device(got: Any, exp: Any, args: tuple) -> bool:
    items = got if isinstance(got, (tuple, list)) else [got]
    wanted = exp if isinstance(exp, (tuple, list)) else [exp]
    return any(isinstance(g, torch.Tensor) and isinstance(e, torch.Tensor) and g.device.type != e.device.type
               for g, e in zip(items, wanted))


DEVICE = Hint(
    "create new tensors on the inputs' device: x.new_zeros(...), seqs[0].new_full(...) or "
    "device=x.device (a bare torch.zeros(...) lives on the CPU).",
    _wrong_device)
HINTS = (DEVICE,)


# ----------------------------------------------------------------------------------------
# Public checks (run in the student's notebook)
# ----------------------------------------------------------------------------------------

def _t(values: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def check_pad_sequences(pad_sequences: Callable) -> None:
    """Hand-checkable batches, a pad value, vectors per position and an empty sequence."""
    T, Fa = True, False
    examples = [
        (([_t([5, 6, 7]), _t([8]), _t([9, 4])],),
         (_t([[5, 6, 7], [8, 0, 0], [9, 4, 0]]), _t([[T, T, T], [T, Fa, Fa], [T, T, Fa]])),
         "each row starts with its sequence and is padded at the end; the mask is True where "
         "the row holds a real value."),
        (([_t([1.5]), _t([2.5, 3.5])], -1.0),
         (_t([[1.5, -1.0], [2.5, 3.5]]), _t([[T, Fa], [T, T]])),
         "padding holds pad_value (here -1.0) and keeps the inputs' dtype (float32)."),
        (([_t([[1., 2.], [3., 4.]]), _t([[5., 6.]])],),
         (_t([[[1., 2.], [3., 4.]], [[5., 6.], [0., 0.]]]), _t([[T, T], [T, Fa]])),
         "sequences of vectors (L, C): a whole zero vector per padded position; the mask stays (B, T)."),
        (([_t([3, 1]), torch.zeros(0, dtype=torch.long)],),
         (_t([[3, 1], [0, 0]]), _t([[T, T], [Fa, Fa]])),
         "an empty sequence is a row of padding with a mask of all False."),
        (([_t([7, 7, 7])],), (_t([[7, 7, 7]]), _t([[T, T, T]])),
         "a single sequence needs no padding: a (1, T) batch."),
        (([_t([0, 3]), _t([4])],), (_t([[0, 3], [4, 0]]), _t([[T, T], [T, Fa]])),
         "a real token may equal pad_value (id 0 here): the mask comes from the lengths, not the values."),
    ]
    for args, expected, why in examples:
        shown = f"pad_sequences({', '.join(_show(a) for a in args)})"
        expect_example(call(pad_sequences, shown, *args), expected, shown, why, HINTS, args)
    passed("pad_sequences", len(examples))


def _show(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor({x.tolist()})"
    if isinstance(x, list):
        return "[" + ", ".join(_show(v) for v in x) + "]"
    return repr(x)


def check_window_features(window_features: Callable) -> None:
    """The worked example, k = 0, vectors of size 2, a window wider than the sequence, a batch."""
    x = _t([[[1.], [2.], [3.], [4.]]])
    pair = _t([[[1., 10.], [2., 20.], [3., 30.]]])
    examples = [
        ((x, 1), _t([[[0., 1., 2.], [1., 2., 3.], [2., 3., 4.], [3., 4., 0.]]]),
         "position t holds x[t-1], x[t], x[t+1], with zeros beyond both ends."),
        ((x, 0), x, "k = 0: each position alone, the input itself."),
        ((pair, 1), _t([[[0., 0., 1., 10., 2., 20.], [1., 10., 2., 20., 3., 30.],
                         [2., 20., 3., 30., 0., 0.]]]),
         "whole vectors side by side: [x[t-1]; x[t]; x[t+1]], each of C = 2 numbers."),
        ((_t([[[1.], [2.]]]), 2), _t([[[0., 0., 1., 2., 0.], [0., 1., 2., 0., 0.]]]),
         "k = 2 with T = 2: the window reaches past both ends; never wrap around."),
        ((torch.stack([x[0], -x[0]]), 1),
         torch.stack([_t([[0., 1., 2.], [1., 2., 3.], [2., 3., 4.], [3., 4., 0.]]),
                      -_t([[0., 1., 2.], [1., 2., 3.], [2., 3., 4.], [3., 4., 0.]])]),
         "two sequences in a batch: each one's windows use only its own positions."),
    ]
    for args, expected, why in examples:
        shown = f"window_features({_show(args[0])}, k={args[1]})"
        expect_example(call(window_features, shown, *args), expected, shown, why, HINTS, args)
    x64 = torch.arange(1, 25, dtype=torch.float64).reshape(2, 4, 3)
    shown = "y = window_features(x, k=1) for a float64 x of shape (2, 4, 3)"
    y = call(window_features, shown, x64, 1)
    expect_example(tuple(y.shape) if isinstance(y, torch.Tensor) else y, (2, 4, 9), shown + "; y.shape",
                   "(2k + 1)·C = 9 features per position.", HINTS, (x64, 1))
    blocks = [(y[:, :, 3:6], x64, "the middle block is the position itself, in x's dtype"),
              (y[:, 1:, 0:3], x64[:, :-1], "the first block is the left neighbour"),
              (y[:, :-1, 6:9], x64[:, 1:], "the last block is the right neighbour"),
              (y[:, 0, 0:3], torch.zeros(2, 3, dtype=torch.float64), "position 0 has zeros on its left")]
    for got, expected, why in blocks:
        expect_example(got, expected, "a block of y", why + ".")
    passed("window_features", len(examples) + 1)


def _identity_tagger() -> tuple:
    """d = 1, E = [[0], [1], [2]], identity layers: logits = tanh(window of the ids' values)."""
    E = _t([[0.], [1.], [2.]])
    eye = torch.eye(3)
    return E, eye, torch.zeros(3), eye, torch.zeros(3), 1


def check_window_tagger(window_tagger: Callable) -> None:
    """The worked example, k = 0 as a per-token classifier, and padding that changes nothing."""
    E, W1, b1, W2, b2, k = _identity_tagger()
    ids = _t([[1, 2]])
    args = (ids, E, W1, b1, W2, b2, k)
    shown = "window_tagger([[1, 2]], E=[[0.], [1.], [2.]], identity W1 and W2, zero biases, k=1)"
    expect_example(call(window_tagger, shown, *args), torch.tanh(_t([[[0., 1., 2.], [1., 2., 0.]]])),
                   shown, "the windows are [0, 1, 2] and [1, 2, 0]; the logits are their tanh.",
                   HINTS, args)

    g = torch.Generator().manual_seed(0)
    V, d, H, n = 6, 3, 5, 4
    E = torch.randn(V, d, generator=g)
    E[0] = 0  # the <pad> row, as nn.Embedding(V, d, padding_idx=0) keeps it
    W1, b1 = torch.randn(3 * d, H, generator=g), torch.randn(H, generator=g)
    W2, b2 = torch.randn(H, n, generator=g), torch.randn(n, generator=g)
    ids = _t([[3, 1, 4, 5, 2]])
    args = (ids, E, W1[d:2 * d], b1, W2, b2, 0)
    shown = "window_tagger(ids, E, W1, b1, W2, b2, k=0)"
    expect_example(call(window_tagger, shown, *args), torch.tanh(E[ids] @ W1[d:2 * d] + b1) @ W2 + b2,
                   shown, "with k = 0 the window is the word alone: a per-token classifier "
                   "tanh(E[ids] @ W1 + b1) @ W2 + b2.", HINTS, args)

    shown = "window_tagger(ids, E, W1, b1, W2, b2, k=1)"
    alone = call(window_tagger, shown, ids, E, W1, b1, W2, b2, 1)
    batch = _t([[3, 1, 4, 5, 2, 0, 0], [2, 2, 0, 0, 0, 0, 0]])
    shown_batch = "window_tagger(the same sentence padded to T=7 in a batch of 2, ..., k=1)"
    together = call(window_tagger, shown_batch, batch, E, W1, b1, W2, b2, 1)
    expect_example(together[:1, :5] if isinstance(together, torch.Tensor) and together.dim() == 3
                   else together, alone, shown_batch + "[:1, :5]",
                   "with a zero <pad> row, padding a sentence in a batch does not change its logits "
                   "(nor does the other sentence).", HINTS, (batch, E, W1, b1, W2, b2, 1))

    E, W1, b1, W2, b2, k = _identity_tagger()
    E = _t([[5.], [1.], [2.]])
    args = (_t([[1, 0]]), E, W1, b1, W2, b2, k)
    shown = "window_tagger([[1, 0]], E=[[5.], [1.], [2.]], identity W1 and W2, zero biases, k=1)"
    expect_example(call(window_tagger, shown, *args), torch.tanh(_t([[[0., 1., 5.], [1., 5., 0.]]])),
                   shown, "the padded position (id 0) is embedded with row 0 of E like any other id, "
                   "here 5: the windows are [0, 1, 5] and [1, 5, 0].", HINTS, args)
    passed("window_tagger", 4)


def check_masked_mean(masked_mean: Callable) -> None:
    """The worked example, an empty sequence, and more padding that changes nothing."""
    T, Fa = True, False
    examples = [
        ((_t([[[1., 2.], [3., 4.], [100., 100.]]]), _t([[T, T, Fa]])), _t([[2., 3.]]),
         "mean of the two real vectors [1, 2] and [3, 4]; the padded [100, 100] is left out."),
        ((_t([[[1.], [5.]], [[2.], [4.]]]), _t([[T, Fa], [T, T]])), _t([[1.], [3.]]),
         "each sequence is averaged over its own real positions: 1 alone, (2 + 4) / 2."),
        ((_t([[[7., -7.]], [[3., 3.]]]), _t([[Fa], [T]])), _t([[0., 0.], [3., 3.]]),
         "a sequence with no real position gives zeros, not nan (divide by max(1, count))."),
        ((_t([[[1.], [2.], [6.], [0.], [0.]]], torch.float64), _t([[T, T, T, Fa, Fa]])),
         _t([[3.]], torch.float64), "extra padding changes nothing; the dtype stays float64."),
        ((_t([[[1.], [2.], [4.]]]), _t([[Fa, T, T]])), _t([[3.]]),
         "the mask may have holes anywhere: the real positions are 1 and 2, (2 + 4) / 2."),
    ]
    for args, expected, why in examples:
        shown = f"masked_mean({_show(args[0])}, {_show(args[1])})"
        expect_example(call(masked_mean, shown, *args), expected, shown, why, HINTS, args)
    passed("masked_mean", len(examples))


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

def _lengths(g: torch.Generator, B: int, lo: int, hi: int) -> list[int]:
    return [randint(g, lo, hi) for _ in range(B)]


def _pad_ints(g):
    return ([torch.randint(0, 50, (L,), generator=g) for L in _lengths(g, randint(g, 2, 6), 1, 9)],)


def _pad_vectors(g):
    C = randint(g, 1, 5)
    return [torch.randn(L, C, generator=g) for L in _lengths(g, randint(g, 2, 6), 1, 8)], 0.0


def _pad_value_f64(g):
    seqs = [torch.randn(L, generator=g, dtype=torch.float64) for L in _lengths(g, 4, 1, 7)]
    seqs[randint(g, 0, 4)] = seqs[0][:1].clone()  # one sequence of length 1 somewhere
    return seqs, -1.5


def _pad_empty(g):
    seqs = [torch.randint(1, 9, (L,), generator=g) for L in _lengths(g, 3, 2, 6)]
    seqs.insert(randint(g, 0, 4), torch.zeros(0, dtype=torch.long))
    return seqs, randint(g, 1, 5)


def _pad_single(g):
    return [torch.randn(randint(g, 1, 6), 2, 2, generator=g)], 7.0


def _x(g, B, T, C, dtype=torch.float32):
    return torch.randn(B, T, C, generator=g, dtype=dtype)


def _window_random(g):
    return _x(g, randint(g, 1, 4), randint(g, 5, 12), randint(g, 2, 5)), randint(g, 1, 4)  # C > 1: the order shows


def _window_c1(g):
    return _x(g, 2, randint(g, 4, 9), 1), 1


def _window_k0(g):
    return _x(g, 2, randint(g, 2, 7), 3), 0


def _window_wide(g):
    T = randint(g, 1, 4)
    return _x(g, 2, T, 2, torch.float64), T + randint(g, 0, 3)  # k >= T: past both ends


def _window_t1(g):
    return _x(g, 3, 1, randint(g, 1, 4)), randint(g, 1, 3)


def _tagger_args(g, B, T, V, d, H, n, k, dtype=torch.float32, zero_pad=True):
    lengths = _lengths(g, B, 1, T + 1)
    lengths[0] = T
    ids = torch.randint(1, V, (B, T), generator=g)
    for b, L in enumerate(lengths):
        ids[b, L:] = 0
    E = torch.randn(V, d, generator=g, dtype=dtype)
    if zero_pad:
        E[0] = 0
    W1 = torch.randn((2 * k + 1) * d, H, generator=g, dtype=dtype) / ((2 * k + 1) * d) ** 0.5
    return (ids, E, W1, torch.randn(H, generator=g, dtype=dtype) * 0.1,
            torch.randn(H, n, generator=g, dtype=dtype), torch.randn(n, generator=g, dtype=dtype), k)


def _tagger_random(g):
    return _tagger_args(g, randint(g, 2, 5), randint(g, 4, 10), randint(g, 5, 20), randint(g, 2, 6),
                        randint(g, 3, 9), randint(g, 2, 8), randint(g, 1, 3))


def _tagger_pad_row(g):
    return _tagger_args(g, 3, randint(g, 3, 8), 8, 3, 4, 5, 1, zero_pad=False)


def _tagger_k0(g):
    return _tagger_args(g, 2, randint(g, 2, 6), 7, 4, 6, 3, 0)


def _tagger_f64(g):
    return _tagger_args(g, 2, randint(g, 3, 7), 9, 3, 5, 4, 2, torch.float64)


def _tagger_tiny(g):
    return _tagger_args(g, 1, 1, 4, 2, 3, 2, randint(g, 1, 3))


def _mask(g, B, T, lo=1):
    lengths = torch.tensor(_lengths(g, B, lo, T + 1))
    lengths[0] = T
    return torch.arange(T) < lengths[:, None]  # (B, T)


def _mean_random(g):
    B, T = randint(g, 2, 6), randint(g, 3, 10)
    return _x(g, B, T, randint(g, 1, 6)), _mask(g, B, T)


def _mean_empty(g):
    B, T = 4, randint(g, 2, 6)
    mask = _mask(g, B, T, lo=0)
    mask[randint(g, 1, B)] = False
    return _x(g, B, T, 3) * 10, mask


def _mean_f64(g):
    B, T = 3, randint(g, 2, 8)
    return _x(g, B, T, 2, torch.float64), _mask(g, B, T)


def _mean_full(g):
    B, T = 2, randint(g, 1, 5)
    return _x(g, B, T, randint(g, 1, 4)), torch.ones(B, T, dtype=torch.bool)


def _mean_one(g):
    """Rows with exactly one real position, anywhere (count 1: the divisor is clamped only at 0)."""
    B, T = randint(g, 3, 6), randint(g, 2, 8)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[torch.arange(B), torch.randint(0, T, (B,), generator=g)] = True
    mask[0] = True  # and one full row
    return _x(g, B, T, randint(g, 1, 4)) * 3, mask


def _mean_holes(g):
    B, T = 3, 6
    mask = torch.rand(B, T, generator=g) < 0.5  # any pattern, not only a prefix
    mask[0, :2] = torch.tensor([False, True])  # at least one row that is not a prefix
    return _x(g, B, T, 2), mask


CASES: dict[str, list[Case]] = {
    "test_pad_sequences": [
        Case("pad_sequences", _pad_ints, "2-5 int64 sequences of lengths 1-8, default pad_value",
             HINTS),
        Case("pad_sequences", _pad_vectors, "float32 sequences of vectors (L, C)", HINTS),
        Case("pad_sequences", _pad_value_f64, "float64 with pad_value -1.5 and a length-1 sequence",
             HINTS),
        Case("pad_sequences", _pad_empty, "an empty sequence in the batch, integer pad_value",
             HINTS),
        Case("pad_sequences", _pad_single, "a single sequence of shape (L, 2, 2)", HINTS),
    ],
    "test_window_features": [
        Case("window_features", _window_random, "random (B, T, C) float32 with C of 2-4, k of 1-3",
             HINTS),
        Case("window_features", _window_c1, "C = 1, k = 1", HINTS),
        Case("window_features", _window_k0, "k = 0", HINTS),
        Case("window_features", _window_wide, "float64 with k >= T (window wider than the sequence)",
             HINTS),
        Case("window_features", _window_t1, "T = 1", HINTS),
    ],
    "test_window_tagger": [
        Case("window_tagger", _tagger_random, "random sizes, padded batch, k of 1-2", HINTS),
        Case("window_tagger", _tagger_pad_row, "a non-zero <pad> row in E", HINTS),
        Case("window_tagger", _tagger_k0, "k = 0 (a per-token classifier)", HINTS),
        Case("window_tagger", _tagger_f64, "float64 weights, k = 2", HINTS),
        Case("window_tagger", _tagger_tiny, "one sentence of one word, k of 1-2", HINTS),
    ],
    "test_masked_mean": [
        Case("masked_mean", _mean_random, "random lengths, float32", HINTS),
        Case("masked_mean", _mean_empty, "a sequence with no real position", HINTS),
        Case("masked_mean", _mean_f64, "float64", HINTS),
        Case("masked_mean", _mean_full, "no padding at all", HINTS),
        Case("masked_mean", _mean_holes, "a mask with holes, not only a prefix", HINTS),
        Case("masked_mean", _mean_one, "sequences with a single real position", HINTS),
    ],
}
