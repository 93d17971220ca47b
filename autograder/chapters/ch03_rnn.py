"""Chapter 3 — recurrent networks: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook: small examples worked out by hand,
then agreement with PyTorch's own cells (``nn.RNNCell``, ``nn.RNN`` on a packed batch,
``nn.LSTMCell``, ``nn.GRUCell``), which the book shows compute the chapter's equations.
``CASES`` is what the grader runs: the same calls on random inputs, compared with the reference
notebook.

The typical mistakes and their hints are the chapter's catalogue, ``solutions/03-rnn/mistakes.yaml``:
the grader and these checks name a mistake when a result is that mistake's result. Its ``uses``
lets an ``rnn_cell`` mistake be named in the cell of ``rnn_forward`` too, which calls it. The
few hints left here recognise what no patch gives, some by running PyTorch's cell on rearranged
weights (gates read in another order is PyTorch's cell with permuted blocks).
"""

from __future__ import annotations

import itertools
import math
import sys
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..checks import (as_tensor, call, close, cpu64, expect_example, randint, randn, real_positions, seeded,
                      tensor_pair)
from ..checks import public_hints, record  # the catalogue of mistakes, as the checks read it
from ..spec import Case, CheckFailed, Hint, passed

DRAWS = 20_000  # rows drawn in a frequency test: each frequency within ~0.0035 (1 sd) of p
FREQ_TOL = 0.02  # about 6 sd; a wrong temperature moves some probability by > 0.06 in our cases


# ----------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------

def _cpu64(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [cpu64(t) for t in tensors]


def _blocks(w: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """The gate blocks of a stacked weight or bias rearranged: block k of the result is
    block ``order[k]`` of ``w``."""
    chunks = w.chunk(len(order), dim=0)
    return torch.cat([chunks[k] for k in order])


def _lstm_builtin(args: tuple, order: tuple[int, ...] = (0, 1, 2, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    x, h, c, W_ih, W_hh, b_ih, b_hh = _cpu64(*args)
    return torch.lstm_cell(x, (h, c), *(_blocks(w, order) for w in (W_ih, W_hh, b_ih, b_hh)))


# ----------------------------------------------------------------------------------------
# Hints: the typical mistakes are the catalogue's (solutions/03-rnn/mistakes.yaml), each a
# patch of the reference whose results the grader and the public checks compare with. Only a
# mistake no patch expresses keeps a hint here: a result that is not a pair, gates read in one
# of the many other orders (recognised exactly, by running PyTorch's cell on permuted blocks),
# a loss that is not one number, and draws that do not follow the seeded generator.
# ----------------------------------------------------------------------------------------

FWD_NOT_PAIR = Hint(
    "return a tuple (states, h_last): states (B, T, H) and h_last (B, H).",
    lambda got, exp, args: tensor_pair(got) is None)
RNN_FORWARD_HINTS = (FWD_NOT_PAIR,)

_LSTM_GATES = "ifgo"


def _lstm_order(got, exp, args) -> str | None:
    """The gate order (as letters) under which the student's result is PyTorch's, if not i,f,g,o."""
    g = tensor_pair(got)
    if g is None:
        return None
    for order in itertools.permutations(range(4)):
        if order != (0, 1, 2, 3) and close(g[0], _lstm_builtin(args, order)[0]):
            return ", ".join(_LSTM_GATES[k] for k in order)
    return None


LSTM_ORDER = Hint(
    "your cell reads the four blocks of the weights in another order than PyTorch stores them: "
    "rows 0:H are the input gate i, H:2H the forget gate f, 2H:3H the candidate g (tanh), "
    "3H:4H the output gate o; i, f, g, o (gates.chunk(4, dim=-1) gives them in that order).",
    lambda got, exp, args: _lstm_order(got, exp, args) is not None)
LSTM_HINTS = (LSTM_ORDER,)


def _gru_order(got, args, order, flip_z) -> bool:
    """Whether ``got`` is PyTorch's cell with its blocks read in ``order`` (z and 1 - z swapped
    too when ``flip_z``: sigmoid(-a) = 1 - sigmoid(a))."""
    x, h, W_ih, W_hh, b_ih, b_hh = _cpu64(*args)
    H = h.shape[1]
    W_ih, W_hh, b_ih, b_hh = (_blocks(w, order) for w in (W_ih, W_hh, b_ih, b_hh))
    if flip_z:
        for w in (W_ih, W_hh, b_ih, b_hh):
            w[H:2 * H] *= -1
    return close(got, torch.gru_cell(x, h, W_ih, W_hh, b_ih, b_hh))


GRU_ORDER = Hint(
    "your cell reads the three blocks of the weights in another order than PyTorch stores them: "
    "rows 0:H are the reset gate r, H:2H the update gate z, 2H:3H the candidate n.",
    lambda got, exp, args: any(_gru_order(got, args, o, f)
                               for o in itertools.permutations(range(3)) if o != (0, 1, 2)
                               for f in (False, True)))
GRU_HINTS = (GRU_ORDER,)

LOSS_NOT_SCALAR = Hint(
    "return one number, a 0-d tensor (the mean), not a loss per position or per sequence.",
    lambda got, exp, args: as_tensor(got) is not None and got.dim() > 0)
LOSS_HINTS = (LOSS_NOT_SCALAR,)


def _probs(logits: torch.Tensor, t: float) -> torch.Tensor:
    return F.softmax(logits.detach().cpu().double().reshape(-1) / t, dim=-1)


def _frequencies(got: Any, V: int) -> torch.Tensor | None:
    counts = as_tensor(got)
    if counts is None or counts.shape != (V,) or counts.dtype.is_floating_point or counts.sum() != DRAWS:
        return None
    return counts.double() / DRAWS


def frequency_check(got: Any, expected: Any, args: tuple) -> str | None:
    """Judge counts of DRAWS draws (one count per id) against softmax(logits / temperature); or,
    when ``expected`` are counts far from those (a catalogue mistake's, which the grader compares
    a student's with), against ``expected``'s frequencies."""
    logits, t, _ = args
    V = logits.shape[-1]
    freq = _frequencies(got, V)
    if freq is None:
        return (f"counting your ids over {DRAWS} rows did not give {V} counts "
                f"summing to {DRAWS}: return one int64 id in [0, V) per row, shape (B,)")
    p, source = _probs(logits, t), "softmax(logits / temperature) gives it"
    other = _frequencies(expected, V)
    if other is not None and float((other - p).abs().max()) > FREQ_TOL:
        p, source = other, "the expected draws give it"
    worst = int((freq - p).abs().argmax())
    if abs(freq[worst] - p[worst]) <= FREQ_TOL:
        return None
    return (f"with temperature {t}, id {worst} came up in {freq[worst]:.1%} of {DRAWS} draws, "
            f"but {source} {p[worst]:.1%} (allowed difference {FREQ_TOL:.0%})")


def _other_draws(got, exp, args) -> bool:
    """Valid ids of the right shape, other than the seed gives: another sampler, or the global
    generator (whose draws nobody can repeat, so no catalogue patch can give them)."""
    g, e = as_tensor(got), as_tensor(exp)
    return (args[1] != 0 and g is not None and e is not None and g.shape == e.shape
            and g.dtype == e.dtype and bool(((g >= 0) & (g < args[0].shape[-1])).all())
            and not torch.equal(g.cpu(), e.cpu()))


SAMPLE_DRAW = Hint(
    "valid ids, but not the ones the same seed gives the reference: draw with "
    "torch.multinomial(probs, 1, generator=generator) on probs = softmax(logits / temperature, "
    "dim=-1) (torch.distributions, Gumbel noise, argmax or a draw without the generator consume "
    "random numbers differently).",
    _other_draws)
SAMPLE_HINTS = (SAMPLE_DRAW,)


# ----------------------------------------------------------------------------------------
# Public checks (run in the student's notebook)
# ----------------------------------------------------------------------------------------

def _cuda_too() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def check_rnn_cell(rnn_cell: Callable) -> None:
    """The exercise's example, a zero-weight batch, then nn.RNNCell with copied weights."""
    args = (torch.tensor([[1.]]), torch.tensor([[0.5]]), torch.tensor([[2.]]),
            torch.tensor([[-1.]]), torch.tensor([0.]))
    shown = "rnn_cell([[1.]], [[0.5]], W_xh=[[2.]], W_hh=[[-1.]], b=[0.])"
    expect_example(call(rnn_cell, shown, *args), torch.tanh(torch.tensor([[1.5]])), shown,
                   "tanh(2 * 1 + (-1) * 0.5 + 0) = tanh(1.5).")
    b = torch.tensor([0.5, -1.0, 2.0])
    args = (torch.ones(2, 4), torch.ones(2, 3), torch.zeros(3, 4), torch.zeros(3, 3), b)
    shown = "rnn_cell(ones(2, 4), ones(2, 3), W_xh=zeros(3, 4), W_hh=zeros(3, 3), b=[0.5, -1, 2])"
    expect_example(call(rnn_cell, shown, *args), torch.tanh(b).expand(2, 3), shown,
                   "with zero weights every row is tanh(b); W_xh is (H, D) = (3, 4), so use x_t @ W_xh.T.")
    count = 2
    for device in _cuda_too():
        g = torch.Generator().manual_seed(3)
        with seeded(3):  # the same weights in every notebook (the catalogue's results are data)
            cell = nn.RNNCell(3, 5).double()
        x, h = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
        args = tuple(t.detach().to(device) for t in
                     (x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh))
        shown = f"rnn_cell(<(4, 3) float64 on {device}>, <(4, 5)>, weights of nn.RNNCell(3, 5))"
        expect_example(call(rnn_cell, shown, *args), cell(x, h).detach().to(device), shown,
                       "must equal nn.RNNCell(3, 5)(x, h) with W_xh = weight_ih, W_hh = weight_hh, "
                       "b = bias_ih + bias_hh, same dtype and device as the inputs.")
        count += 1
    passed("rnn_cell", count)


def _packed_rnn(x, lengths, W_xh, W_hh, b, h0=None):
    """nn.RNN on a packed batch with the given weights: (all states zero-padded, last states)."""
    rnn = nn.RNN(x.shape[-1], W_hh.shape[0], batch_first=True).to(x.device, x.dtype)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(W_xh), rnn.weight_hh_l0.copy_(W_hh)
        rnn.bias_ih_l0.copy_(b), rnn.bias_hh_l0.zero_()
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = rnn(packed, None if h0 is None else h0[None])
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, h_n[0]


def check_rnn_forward(rnn_forward: Callable) -> None:
    """The exercise's example (padding that must be ignored), then nn.RNN on a packed batch."""
    x = torch.tensor([[[1.], [2.]], [[3.], [9.]]])
    args = (x, torch.tensor([2, 1]), torch.tensor([[1.]]), torch.tensor([[0.]]), torch.tensor([0.]))
    shown = "rnn_forward(x=[[[1], [2]], [[3], [9]]], lengths=[2, 1], W_xh=[[1]], W_hh=[[0]], b=[0])"
    t = torch.tanh
    expected = (torch.tensor([[[t(torch.tensor(1.))], [t(torch.tensor(2.))]],
                              [[t(torch.tensor(3.))], [0.]]]),
                torch.tensor([[t(torch.tensor(2.))], [t(torch.tensor(3.))]]))
    expect_example(call(rnn_forward, shown, *args), expected, shown,
                   "each state is tanh(x_t); the second sequence has length 1, so its 9 is padding: "
                   "its state there is 0 and its h_last is tanh(3).", RNN_FORWARD_HINTS, args)
    count = 1
    for device in _cuda_too():
        g = torch.Generator().manual_seed(4)
        B, T, D, H = 5, 7, 3, 4
        x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
        lengths = torch.tensor([3, 7, 1, 5, 2])
        W_xh, W_hh = torch.randn(H, D, generator=g, dtype=torch.float64), 0.5 * torch.randn(H, H, generator=g, dtype=torch.float64)
        b, h0 = torch.randn(H, generator=g, dtype=torch.float64), torch.randn(B, H, generator=g, dtype=torch.float64)
        for with_h0 in (False, True):
            args = tuple(a.to(device) for a in (x, lengths, W_xh, W_hh, b, *([h0] if with_h0 else [])))
            shown = (f"rnn_forward(<(5, 7, 3) float64 on {device}>, lengths=[3, 7, 1, 5, 2], "
                     f"<random weights>{', h0=<(5, 4)>' if with_h0 else ''})")
            expect_example(call(rnn_forward, shown, *args), _packed_rnn(*args), shown,
                           "must equal nn.RNN on pack_padded_sequence(x, lengths, enforce_sorted=False) with "
                           "the same weights: its padded output and its h_n[0].", RNN_FORWARD_HINTS, args)
            count += 1
    passed("rnn_forward", count)


def check_lstm_cell(lstm_cell: Callable) -> None:
    """Zero weights (every gate 1/2), then nn.LSTMCell with copied weights."""
    c = torch.tensor([[1.0, -2.0]])
    args = (torch.ones(1, 3), torch.ones(1, 2), c, torch.zeros(8, 3), torch.zeros(8, 2),
            torch.zeros(8), torch.zeros(8))
    shown = "lstm_cell(ones(1, 3), ones(1, 2), c_prev=[[1., -2.]], all weights and biases zero)"
    expect_example(call(lstm_cell, shown, *args), (0.5 * torch.tanh(0.5 * c), 0.5 * c), shown,
                   "with zero weights i = f = o = sigmoid(0) = 0.5 and g = tanh(0) = 0, so "
                   "c_t = 0.5 * c_prev and h_t = 0.5 * tanh(c_t); return (h_t, c_t).", LSTM_HINTS, args)
    count = 1
    for device in _cuda_too():
        g = torch.Generator().manual_seed(5)
        cell = nn.LSTMCell(3, 4).double()
        with torch.no_grad():
            for p in cell.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        x, h, c = (torch.randn(2, n, generator=g, dtype=torch.float64) for n in (3, 4, 4))
        args = tuple(a.detach().to(device) for a in
                     (x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
        shown = f"lstm_cell(<(2, 3) float64 on {device}>, h, c, weights of nn.LSTMCell(3, 4))"
        expected = tuple(t.detach().to(device) for t in cell(x, (h, c)))
        expect_example(call(lstm_cell, shown, *args), expected, shown,
                       "must equal nn.LSTMCell(3, 4)(x, (h, c)) with its weight_ih, weight_hh, bias_ih, "
                       "bias_hh (gates stacked i, f, g, o).", LSTM_HINTS, args)
        count += 1
    passed("lstm_cell", count)


def check_gru_cell(gru_cell: Callable) -> None:
    """Zero weights (r = z = 1/2, n = 0), then nn.GRUCell with copied weights."""
    h = torch.tensor([[1.0, -2.0]])
    args = (torch.ones(1, 3), h, torch.zeros(6, 3), torch.zeros(6, 2), torch.zeros(6), torch.zeros(6))
    shown = "gru_cell(ones(1, 3), h_prev=[[1., -2.]], all weights and biases zero)"
    expect_example(call(gru_cell, shown, *args), 0.5 * h, shown,
                   "with zero weights r = z = 0.5 and n = tanh(0) = 0, so h_t = 0.5 * 0 + 0.5 * h_prev.",
                   GRU_HINTS, args)
    count = 1
    for device in _cuda_too():
        g = torch.Generator().manual_seed(6)
        cell = nn.GRUCell(3, 4).double()
        with torch.no_grad():
            for p in cell.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        x, h = torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)
        args = tuple(a.detach().to(device) for a in
                     (x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
        shown = f"gru_cell(<(2, 3) float64 on {device}>, h, weights of nn.GRUCell(3, 4))"
        expect_example(call(gru_cell, shown, *args), cell(x, h).detach().to(device), shown,
                       "must equal nn.GRUCell(3, 4)(x, h) with its weight_ih, weight_hh, bias_ih, bias_hh "
                       "(gates stacked r, z, n).", GRU_HINTS, args)
        count += 1
    passed("gru_cell", count)


def check_sequence_loss(sequence_loss: Callable) -> None:
    """Equal logits cost log V; then F.cross_entropy with the padding marked ignore_index."""
    args = (torch.zeros(2, 3, 5), torch.tensor([[1, 2, 3], [4, 0, 0]]), torch.tensor([3, 1]))
    shown = "sequence_loss(zeros(2, 3, 5), targets, lengths=[3, 1])"
    expect_example(call(sequence_loss, shown, *args), torch.tensor(math.log(5)), shown,
                   "with all logits equal each real position costs log 5.", LOSS_HINTS, args)
    count = 1
    for device in _cuda_too():
        g = torch.Generator().manual_seed(7)
        logits = 3 * torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
        targets = torch.randint(0, 6, (3, 4), generator=g)
        lengths = torch.tensor([4, 1, 2])
        ignored = targets.masked_fill(~real_positions(lengths, 4), -100)  # F.cross_entropy's ignore_index
        args = tuple(a.to(device) for a in (logits, targets, lengths))
        shown = f"sequence_loss(<(3, 4, 6) float64 on {device}>, targets, lengths=[4, 1, 2])"
        expect_example(call(sequence_loss, shown, *args),
                       F.cross_entropy(logits.flatten(0, 1), ignored.flatten()).to(device), shown,
                       "7 real positions out of 12: the mean over those 7, which is "
                       "F.cross_entropy with the padded targets set to ignore_index=-100.", LOSS_HINTS, args)
        count += 1
    passed("sequence_loss", count)


def check_sample_next(sample_next: Callable) -> None:
    """Temperature 0 is argmax; a certain id always comes; a seed repeats; frequencies match."""
    logits = torch.tensor([[0.0, 3.0, 1.0, -1.0], [2.0, 0.0, 5.0, 1.0], [-4.0, -3.0, -3.5, -9.0]])
    shown = "sample_next(<3 rows of logits>, temperature=0)"
    expect_example(call(sample_next, shown, logits, 0), torch.tensor([1, 2, 1]), shown,
                   "temperature 0: the id of the largest logit in each row.")
    sure = torch.tensor([[0.0, 50.0, 0.0]]).expand(20, 3)
    shown = "sample_next(<20 rows of logits [0, 50, 0]>, temperature=1, torch.Generator().manual_seed(0))"
    expect_example(call(sample_next, shown, sure, 1.0, torch.Generator().manual_seed(0)), torch.ones(20, dtype=torch.long), shown,
                   "id 1 has probability 1 - 2e-22: every row draws it; shape (B,) = (20,), int64.")
    rows = torch.tensor([[0.0, 0.0, 2.0]]).expand(50, 3)
    shown = "sample_next(<50 rows>, 1.0, torch.Generator().manual_seed(0)), twice"
    first = call(sample_next, shown, rows, 1.0, torch.Generator().manual_seed(0))
    again = call(sample_next, shown, rows, 1.0, torch.Generator().manual_seed(0))
    expect_example(again, first, shown, "the same seeded generator must give the same draws: "
                   "pass generator=generator to torch.multinomial.")
    count = 3
    for t in (1.0, 0.5, 2.0):
        logits = torch.tensor([[0.0, 0.0, 2.0]])
        gen = torch.Generator().manual_seed(1)
        shown = f"sample_next(<{DRAWS} rows [0, 0, 2]>, temperature={t})"
        ids = call(sample_next, shown, logits.expand(DRAWS, 3), t, gen)
        counts = torch.bincount(ids.cpu(), minlength=3) if as_tensor(ids) is not None and ids.dim() == 1 else ids
        args = (logits, t, 1)
        record(shown, counts)
        message = frequency_check(counts, None, args)
        if message is not None:
            hints = public_hints(sys._getframe(0), shown, counts)
            raise CheckFailed("\n".join([f"{shown}: {message}", *(f"Hint: {h}" for h in hints)]))
        count += 1
    passed("sample_next", count)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU)
# ----------------------------------------------------------------------------------------

def _rnn_cell_args(g, B, D, H, dtype=torch.float32):
    return (randn(g, B, D, dtype=dtype), randn(g, B, H, dtype=dtype).tanh(),
            randn(g, H, D, dtype=dtype, scale=0.5), randn(g, H, H, dtype=dtype, scale=0.5),
            randn(g, H, dtype=dtype, scale=0.5))


def _lengths(g, B, T):
    """B lengths in [1, T], one of them T and one 1 when B allows (unsorted); T when B = 1."""
    if B == 1:
        return torch.tensor([T])
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[randint(g, 0, B)] = T
    lengths[(int(lengths.argmax()) + 1) % B] = 1
    return lengths


def _forward_args(g, B, T, D, H, dtype=torch.float32, h0=False):
    x = randn(g, B, T, D, dtype=dtype)
    weights = (randn(g, H, D, dtype=dtype, scale=0.7), randn(g, H, H, dtype=dtype, scale=0.7 / math.sqrt(H)),
               randn(g, H, dtype=dtype, scale=0.3))
    return (x, _lengths(g, B, T), *weights, *([randn(g, B, H, dtype=dtype).tanh()] if h0 else []))


def _all_padded_args(g):
    B, T = randint(g, 2, 5), randint(g, 4, 8)
    x, _, *weights = _forward_args(g, B, T, 3, 4)
    return (x, torch.randint(1, T, (B,), generator=g), *weights)


def _lstm_args(g, B, D, H, dtype=torch.float32):
    return (randn(g, B, D, dtype=dtype), randn(g, B, H, dtype=dtype).tanh(), randn(g, B, H, dtype=dtype),
            randn(g, 4 * H, D, dtype=dtype, scale=0.8), randn(g, 4 * H, H, dtype=dtype, scale=0.8),
            randn(g, 4 * H, dtype=dtype), randn(g, 4 * H, dtype=dtype))


def _gru_args(g, B, D, H, dtype=torch.float32):
    return (randn(g, B, D, dtype=dtype), randn(g, B, H, dtype=dtype).tanh(),
            randn(g, 3 * H, D, dtype=dtype, scale=0.8), randn(g, 3 * H, H, dtype=dtype, scale=0.8),
            randn(g, 3 * H, dtype=dtype), randn(g, 3 * H, dtype=dtype))


def _loss_args(g, B, T, V, dtype=torch.float32):
    return (randn(g, B, T, V, dtype=dtype, scale=2.0), torch.randint(0, V, (B, T), generator=g),
            _lengths(g, B, T))


def _spread_logits(g, V, t):
    """(1, V) logits whose softmax moves by more than 0.06 somewhere when the temperature is
    misapplied (ignored or multiplied), so the frequency test can tell."""
    while True:
        logits = randn(g, 1, V, scale=1.5)
        p = _probs(logits, t)
        if min(float((p - _probs(logits, w)).abs().max()) for w in (1.0, 1 / t)) > 0.06:
            return logits


def _frequency_args(g, t):
    return _spread_logits(g, randint(g, 3, 8), t), t, randint(g, 0, 2**31)


def _seeded_args(g, B, V, t):
    return randn(g, B, V, scale=2.0), t, randint(g, 0, 2**31)


SEEDED = "lambda logits, t, seed: sample_next(logits, t, torch.Generator(logits.device).manual_seed(seed))"
COUNTED = (f"lambda logits, t, seed: torch.bincount(sample_next(logits.expand({DRAWS}, -1), t, "
           f"torch.Generator(logits.device).manual_seed(seed)).flatten(), minlength=logits.shape[-1])")

CASES: dict[str, list[Case]] = {
    "test_rnn_cell": [
        Case("rnn_cell", lambda g: _rnn_cell_args(g, randint(g, 2, 6), randint(g, 2, 5), randint(g, 5, 9)),
             "random float32 batch, D < H"),
        Case("rnn_cell", lambda g: _rnn_cell_args(g, randint(g, 2, 6), *[randint(g, 3, 7)] * 2),
             "square weights (D == H)"),
        Case("rnn_cell", lambda g: _rnn_cell_args(g, 1, randint(g, 6, 9), randint(g, 1, 4), torch.float64),
             "float64, batch of 1, D > H"),
        Case("rnn_cell", lambda g: _rnn_cell_args(g, randint(g, 1, 4), 1, 1),
             "D = H = 1"),
    ],
    "test_rnn_forward": [
        Case("rnn_forward", lambda g: _forward_args(g, randint(g, 3, 6), randint(g, 4, 9), 3, randint(g, 2, 6)),
             "padded float32 batch, unsorted lengths from 1 to T", RNN_FORWARD_HINTS),
        Case("rnn_forward", lambda g: _forward_args(g, randint(g, 2, 5), randint(g, 3, 7), 2, 4, torch.float64, h0=True),
             "float64 with a given h0", RNN_FORWARD_HINTS),
        Case("rnn_forward", lambda g: _forward_args(g, 4, 1, 3, 3),
             "T = 1 (every length 1)", RNN_FORWARD_HINTS),
        Case("rnn_forward", lambda g: _forward_args(g, 1, randint(g, 2, 6), 2, 3),
             "a single sequence without padding", RNN_FORWARD_HINTS),
        Case("rnn_forward", _all_padded_args, "every sequence shorter than T (padding in every row)",
             RNN_FORWARD_HINTS),
        Case("lambda x, lengths, W_xh, W_hh, b: rnn_forward(x, lengths.cpu(), W_xh, W_hh, b)",
             lambda g: _forward_args(g, 6, 10, 3, 5),
             "lengths given on the CPU while x may be on the GPU", RNN_FORWARD_HINTS),
    ],
    "test_lstm_cell": [
        Case("lstm_cell", lambda g: _lstm_args(g, randint(g, 2, 6), randint(g, 2, 6), randint(g, 2, 6)),
             "random float32 weights, all four gates active", LSTM_HINTS),
        Case("lstm_cell", lambda g: _lstm_args(g, 1, randint(g, 2, 5), randint(g, 5, 9), torch.float64),
             "float64, batch of 1, H of 5-8", LSTM_HINTS),
        Case("lstm_cell", lambda g: _lstm_args(g, randint(g, 2, 4), 1, 1), "D = H = 1", LSTM_HINTS),
    ],
    "test_gru_cell": [
        Case("gru_cell", lambda g: _gru_args(g, randint(g, 2, 6), randint(g, 2, 6), randint(g, 2, 6)),
             "random float32 weights, all three gates active", GRU_HINTS),
        Case("gru_cell", lambda g: _gru_args(g, 1, randint(g, 2, 5), randint(g, 3, 7), torch.float64),
             "float64, batch of 1", GRU_HINTS),
        Case("gru_cell", lambda g: _gru_args(g, randint(g, 2, 4), 1, 1), "D = H = 1", GRU_HINTS),
    ],
    "test_sequence_loss": [
        Case("sequence_loss", lambda g: _loss_args(g, randint(g, 2, 6), randint(g, 3, 9), randint(g, 3, 12)),
             "padded float32 batch, random ids at the padded positions", LOSS_HINTS),
        Case("sequence_loss", lambda g: _loss_args(g, randint(g, 2, 5), randint(g, 2, 6), 4, torch.float64),
             "float64", LOSS_HINTS),
        Case("sequence_loss", lambda g: (*_loss_args(g, 3, 4, 5)[:2], torch.tensor([4, 4, 4])),
             "no padding at all", LOSS_HINTS),
        Case("sequence_loss", lambda g: (*_loss_args(g, 3, 6, 5)[:2], torch.tensor([6, 1, 1])),
             "one long sequence and two of length 1 (each real token counts once)", LOSS_HINTS),
        Case("lambda logits, targets, lengths: sequence_loss(logits, targets, lengths.cpu())",
             lambda g: _loss_args(g, 4, 7, 6),
             "lengths given on the CPU while logits may be on the GPU", LOSS_HINTS),
    ],
    "test_sample_next": [
        Case(SEEDED, lambda g: _seeded_args(g, randint(g, 3, 9), randint(g, 3, 10), 1.0),
             "fixed seed, temperature 1", SAMPLE_HINTS),
        Case(SEEDED, lambda g: _seeded_args(g, randint(g, 3, 9), randint(g, 3, 10), 0.7),
             "fixed seed, temperature 0.7", SAMPLE_HINTS),
        Case(SEEDED, lambda g: _seeded_args(g, randint(g, 2, 6), randint(g, 3, 10), 0),
             "temperature 0 (argmax)", SAMPLE_HINTS),
        Case(COUNTED, lambda g: _frequency_args(g, 0.5), f"frequencies over {DRAWS} draws, temperature 0.5",
             (), frequency_check),
        Case(COUNTED, lambda g: _frequency_args(g, 2.0), f"frequencies over {DRAWS} draws, temperature 2",
             (), frequency_check),
    ],
}
