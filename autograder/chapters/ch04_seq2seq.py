"""Chapter 4 — the encoder–decoder: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook on small examples that can be verified
by hand (a model whose output layer ignores its input, hand-made probability tables) and on
properties any correct answer has (padding changes nothing; a step-by-step decoder agrees with
``nn.GRU`` run over the whole sequence). ``CASES`` is what the grader runs: the same calls on
random inputs, compared with the reference notebook's results. As in every chapter module, no
reference solution is written here: hints only recognise the symptoms of typical mistakes.

Models reach the student's code through adapters in ``call``: weights travel as a state dict of
tensors and the notebook's ``Seq2Seq.from_weights`` rebuilds the model on the grading device;
decoding exercises get a ``step`` function made from tensors by an expression (a probability
table, or a tiny random recurrent scorer).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..checks import as_tensor, call, expect_example, randint, real_positions, tensor_pair
from ..data.dates import BOS, EOS, PAD
from ..spec import Case, CheckFailed, Hint, passed

# ----------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------


def _model(Seq2Seq: type, seed: int, sizes=(9, 7, 3, 4), dtype=torch.float32):
    """A small model with seeded random weights (biases too, so nothing is trivially zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # leave the student's random state alone
        model = Seq2Seq(*sizes).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.8, 0.8, generator=g)
    return model


def _weights(g: torch.Generator, src_vocab: int, tgt_vocab: int, d_emb: int, d_hidden: int,
             dtype=torch.float32) -> dict[str, torch.Tensor]:
    """A state dict in ``Seq2Seq``'s layout, drawn from ``g`` (rows PAD of both embeddings zero)."""
    def u(*shape):
        return (torch.rand(*shape, generator=g, dtype=torch.float64) * 1.6 - 0.8).to(dtype)

    sd = {"src_emb.weight": u(src_vocab, d_emb), "tgt_emb.weight": u(tgt_vocab, d_emb)}
    for name, d_in in (("encoder", d_emb), ("decoder", d_emb)):
        sd |= {f"{name}.weight_ih_l0": u(3 * d_hidden, d_in), f"{name}.weight_hh_l0": u(3 * d_hidden, d_hidden),
               f"{name}.bias_ih_l0": u(3 * d_hidden), f"{name}.bias_hh_l0": u(3 * d_hidden)}
    sd["src_emb.weight"][PAD] = 0
    sd["tgt_emb.weight"][PAD] = 0
    return sd | {"out.weight": u(tgt_vocab, d_hidden), "out.bias": u(tgt_vocab)}


def _source(g: torch.Generator, B: int, S: int, V: int, lengths: list[int] | None = None):
    """(B, S) random ids in [3, V) padded after each row's length, and the (B,) lengths."""
    lens = torch.tensor(lengths) if lengths is not None else torch.randint(1, S + 1, (B,), generator=g)
    src = torch.randint(3, V, (B, S), generator=g)
    src[torch.arange(S)[None, :] >= lens[:, None]] = PAD
    return src, lens


def _target(g: torch.Generator, B: int, T: int, V: int):
    """(B, T) rows BOS y_1 .. y_n EOS PAD .. with random n in [0, T - 2], at least one full row."""
    n = torch.randint(0, T - 1, (B,), generator=g)
    n[0] = T - 2
    tgt = torch.randint(3, V, (B, T), generator=g)
    t = torch.arange(T)[None, :]
    tgt[:, 0] = BOS
    tgt[t == n[:, None] + 1] = EOS
    tgt[t > n[:, None] + 1] = PAD
    return tgt


def _pair(x: Any) -> tuple[Any, Any] | None:
    return tuple(x) if isinstance(x, (tuple, list)) and len(x) == 2 else None


def _second_order_step(table: torch.Tensor) -> Callable:
    """``step`` whose next token depends on the last two: the state (B, 1) holds the one before
    ``prev``, so a hypothesis continued from another row's state gets other probabilities."""
    return lambda prev, state: (table[state[:, 0].long(), prev], prev[:, None].to(state.dtype))


def _markov_step(tables: torch.Tensor) -> Callable:
    """``step`` of a hand-made model: row b uses table ``state[b, 0]``, next token | previous."""
    return lambda prev, state: (tables[state[:, 0].long(), prev], state)


def _tables(*rows: dict[int, dict[int, float]], V: int = 5) -> torch.Tensor:
    """(len(rows), V, V) log-probability tables from {prev: {next: prob}} (the rest gets 1e-3)."""
    out = torch.full((len(rows), V, V), 1e-3, dtype=torch.float64)
    for k, table in enumerate(rows):
        for prev, probs in table.items():
            for token, p in probs.items():
                out[k, prev, token] = p
    return (out / out.sum(-1, keepdim=True)).log()


def _second_order_table(probs: dict[tuple[int, int], dict[int, float]], V: int = 5) -> torch.Tensor:
    """(V, V, V) log-probabilities table[before, prev, next] (the rest gets 1e-3)."""
    out = torch.full((V, V, V), 1e-3, dtype=torch.float64)
    for (before, prev), row in probs.items():
        for token, p in row.items():
            out[before, prev, token] = p
    return (out / out.sum(-1, keepdim=True)).log()


A, B_ = 3, 4  # the tokens 'a' and 'b' of the hand-made tables (V = 5: pad, bos, eos, a, b)
# Greedy says [a, eos] (0.6 * 0.45 = 0.27); the best sequence is [b, eos] (0.4 * 0.9 = 0.36).
GREEDY_TRAP = {BOS: {A: 0.6, B_: 0.4}, A: {EOS: 0.45, A: 0.3, B_: 0.25}, B_: {EOS: 0.9, A: 0.05, B_: 0.05}}
# Never ends: a b a b ...
NO_END = {BOS: {A: 0.9}, A: {B_: 0.9}, B_: {A: 0.9}}
# [eos] alone has 0.45; [a, eos] has 0.55 * 0.75 = 0.4125: a length penalty flips the choice.
# {(before prev, prev): {next: prob}}. After 2 steps [b, a] (0.4275) leads [a, a] (0.33) and the
# parents swap rows; then what follows a depends on the token before it: [b, a, eos] (0.385) wins.
# A hypothesis continued from the other row's state ends as [b, a, a].
NEEDS_STATE = {(PAD, BOS): {A: 0.55, B_: 0.45}, (BOS, A): {A: 0.6, EOS: 0.2, B_: 0.2},
               (BOS, B_): {A: 0.95}, (A, A): {EOS: 0.3, A: 0.7}, (B_, A): {EOS: 0.9, A: 0.1}}
STATE_MIXUP = [B_, A, A]  # what beam search returns on NEEDS_STATE when states follow the wrong row
SHORT_OR_LONG = {BOS: {EOS: 0.45, A: 0.55}, A: {EOS: 0.75, A: 0.15, B_: 0.1}, B_: {EOS: 0.9}}


# ----------------------------------------------------------------------------------------
# Hints
# ----------------------------------------------------------------------------------------

def _encode_parts(got, exp, args):
    g, e = tensor_pair(got), tensor_pair(exp)
    if g is None or e is None:
        return None
    return as_tensor(g[0]), as_tensor(g[1]), as_tensor(e[0]), as_tensor(e[1]), args[-1].cpu()


def _h_after_padding(got, exp, args) -> bool:
    """Right states at the real positions, but h is the state after the padding."""
    gs, gh, es, eh, lens = _encode_parts(got, exp, args)
    real = real_positions(lens, es.shape[1])
    return (gs.shape == es.shape and torch.allclose(gs[real], es[real], rtol=1e-4, atol=1e-5)
            and gh.shape == eh.shape and not torch.allclose(gh, eh, rtol=1e-4, atol=1e-5))


def _pad_states_nonzero(got, exp, args) -> bool:
    gs, _, es, _, lens = _encode_parts(got, exp, args)
    return gs.shape == es.shape and bool(gs[~real_positions(lens, es.shape[1])].abs().gt(0).any())


ENCODE_LAST_PADDED = Hint(
    "the states at the real positions are right but h is not: h must be the state after each "
    "sequence's last real character, states[b, src_len[b] - 1]. nn.GRU's final state over a padded "
    "batch has also read the padding; pack the batch (pack_padded_sequence) or pick the state at "
    "src_len - 1 yourself.", _h_after_padding)
ENCODE_PAD_NONZERO = Hint(
    "states at padded positions (t >= src_len[b]) must be exactly 0 (pad_packed_sequence gives "
    "zeros there; if you run the GRU on the padded batch, zero them with a mask).", _pad_states_nonzero)
ENCODE_TOTAL_LENGTH = Hint(
    "states must have S = src.shape[1] time steps even when every sequence is shorter: pass "
    "total_length=src.shape[1] to pad_packed_sequence.",
    lambda got, exp, args: (as_tensor(got[0]).shape[:1] + as_tensor(got[0]).shape[2:] == exp[0].shape[:1] + exp[0].shape[2:]
                            and as_tensor(got[0]).shape[1] == int(args[-1].max()) < exp[0].shape[1]))
ENCODE_LAYER_DIM = Hint(
    "h must be (B, H): nn.GRU returns its final state as (num_layers, B, H), take h_n[0].",
    lambda got, exp, args: tuple(as_tensor(got[1]).shape) == (1, *exp[1].shape))
ENCODE_HINTS = (ENCODE_LAST_PADDED, ENCODE_PAD_NONZERO, ENCODE_TOTAL_LENGTH, ENCODE_LAYER_DIM)


def _row_constant_shift(got, exp, args) -> bool:
    g, e = tensor_pair(got), tensor_pair(exp)
    if g is None or e is None or g[0].shape != e[0].shape:
        return False
    d = (as_tensor(g[0]) - as_tensor(e[0])).double()
    return d.abs().max() > 1e-4 and torch.allclose(d, d[..., :1].expand_as(d), atol=1e-4)


STEP_LOGITS = Hint(
    "each row of your log_probs differs from the expected one by a constant: these are logits. "
    "Apply F.log_softmax(..., dim=-1) to model.out(h_new).", _row_constant_shift)
STEP_PROBS = Hint(
    "log_probs must be log-probabilities (every value <= 0), not probabilities: use "
    "F.log_softmax, not F.softmax.",
    lambda got, exp, args: bool((as_tensor(got[0]) >= 0).all()) and torch.allclose(
        as_tensor(got[0]).double(), as_tensor(exp[0]).double().exp(), rtol=1e-4, atol=1e-5))
def _softmax_over_batch(log_probs: Any) -> bool:
    """exp(log_probs) sums to 1 down each column (over the batch), not along each row."""
    t = as_tensor(log_probs)
    if t is None or t.dim() != 2 or not t.dtype.is_floating_point:
        return False
    p = t.double().exp()
    one = torch.ones((), dtype=torch.float64)
    return (torch.allclose(p.sum(0), one.expand(t.shape[1]), atol=1e-4)
            and not torch.allclose(p.sum(1), one.expand(t.shape[0]), atol=1e-4))


STEP_AXIS = Hint(
    "your log-softmax ran over the wrong dimension: each column of log_probs sums to 1 over the "
    "batch. The distribution is over the vocabulary, the last dimension: "
    "F.log_softmax(model.out(h_new), dim=-1).",
    lambda got, exp, args: _softmax_over_batch(_pair(got)[0]))
STEP_LAYER_DIM = Hint(
    "h_new must be (B, H): nn.GRU returns its state as (1, B, H), squeeze the first dimension.",
    lambda got, exp, args: tuple(as_tensor(got[1]).shape) == (1, *exp[1].shape))
STEP_HINTS = (STEP_LOGITS, STEP_PROBS, STEP_AXIS, STEP_LAYER_DIM)


def _counts(tgt: torch.Tensor) -> tuple[int, int]:
    """(real target tokens, all target positions) of a (B, T) target batch."""
    y = tgt[:, 1:].cpu()
    return int((y != PAD).sum()), y.numel()


def _number(x: Any) -> float | None:
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return float(x.detach())
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _scaled(got: Any, exp: Any, factor: float) -> bool:
    g, e = _number(got), _number(exp)
    return g is not None and e is not None and math.isclose(g, e * factor, rel_tol=1e-4) and factor != 1


LOSS_PADDING = Hint(
    "the loss changes when PAD columns are appended to tgt: positions whose target is PAD must "
    "not count, neither in the sum nor in the number you divide by (F.cross_entropy(..., "
    "ignore_index=PAD), or a mask, dividing by the number of real targets).",
    lambda got, exp, args: _number(got[0]) is not None and _number(got[1]) is not None
    and not math.isclose(_number(got[0]), _number(got[1]), rel_tol=1e-4))
LOSS_SUM = Hint(
    "your loss is the sum over the real target tokens: divide by their number to get the mean.",
    lambda got, exp, args: _scaled(got[0], exp[0], _counts(args[-1])[0]))
LOSS_SHIFT = Hint(
    "the decoder reads tgt[:, :-1] and must predict tgt[:, 1:] (the next character), not the "
    "character it was given.",
    lambda got, exp, args: _number(got[0]) is not None and _number(got[0]) > 3 * _number(exp[0]))
LOSS_HINTS = (LOSS_PADDING, LOSS_SUM)


def _lists(x: Any) -> list[list[int]] | None:
    try:
        rows = [r.tolist() if isinstance(r, torch.Tensor) else list(r) for r in x]
        return rows if all(isinstance(v, int) for r in rows for v in r) else None
    except TypeError:
        return None


def _eos(args: tuple) -> int:
    """The eos id of a greedy call: its last argument when bos and eos are passed, else EOS."""
    return args[-1] if len(args) == 5 and isinstance(args[-1], int) else EOS


def _stopped_early(got, exp, args) -> bool:
    """Every row stopped at the step where the first row produced eos (any, not all)."""
    rows, eos = _lists(got), _eos(args)
    return (len({len(g) for g in rows}) == 1 and any(g and g[-1] == eos for g in rows)
            and any(len(g) < len(e) and g == e[:len(g)] for g, e in zip(rows, exp)))


GREEDY_STOPPED_EARLY = Hint(
    "every row stopped as soon as one row produced eos: a finished row stops growing, but keep "
    "calling step until every row has finished (all, not any) or max_len steps are done.",
    _stopped_early)
GREEDY_PAST_EOS = Hint(
    "a row goes on after its eos: stop adding tokens to a row once it has produced eos "
    "(keep that eos, and nothing after it).",
    lambda got, exp, args: any(len(g) > len(e) and g[:len(e)] == e and e and e[-1] == _eos(args)
                               for g, e in zip(_lists(got), exp)))
GREEDY_NO_EOS = Hint(
    "keep the eos at the end of each finished row: it tells the caller the row ended on its own.",
    lambda got, exp, args: not _stopped_early(got, exp, args)
    and any(e and e[-1] == _eos(args) and g == e[:-1] for g, e in zip(_lists(got), exp)))
GREEDY_MAX_LEN = Hint(
    "a row that never produces eos has exactly max_len tokens: loop at most max_len times "
    "(range(max_len)), one token per step.",
    lambda got, exp, args: not _stopped_early(got, exp, args)
    and any(_eos(args) not in e and len(g) != len(e) and g[:len(e)] == e[:len(g)]
            for g, e in zip(_lists(got), exp)))
GREEDY_BOS = Hint(
    "leave bos out of the result: it is the first input, not an output.",
    lambda got, exp, args: any(g[:1] == [BOS] and g[1:] == e for g, e in zip(_lists(got), exp)))
GREEDY_TENSOR = Hint(
    "return plain Python lists of ints (.tolist()), one list per row, each as long as that row's "
    "output (rows may differ in length).",
    lambda got, exp, args: isinstance(got, torch.Tensor))
GREEDY_HINTS = (GREEDY_STOPPED_EARLY, GREEDY_PAST_EOS, GREEDY_NO_EOS, GREEDY_MAX_LEN, GREEDY_BOS, GREEDY_TENSOR)


def _beam_parts(got):
    p = _pair(got)
    if p is None:
        return None, None
    tokens = p[0].tolist() if isinstance(p[0], torch.Tensor) else p[0]
    return tokens, _number(p[1])


def _lp(n: int, alpha: float) -> float:
    return ((5 + n) / 6) ** alpha


def _alpha(args) -> float:
    return args[-1]


def _state_mixup(got, exp, args) -> bool:
    return isinstance(args[0], torch.Tensor) and args[0].dim() == 3 and _beam_parts(got)[0] == STATE_MIXUP


def _len_without_eos(got, exp, args) -> bool:
    """The right tokens, scored with |Y| - 1 (eos not counted) in the length penalty."""
    tokens, score = _beam_parts(got)
    log_p = exp[1] * _lp(len(exp[0]), _alpha(args))
    return (tokens == list(exp[0]) and score is not None and _alpha(args) > 0
            and math.isclose(score, log_p / _lp(len(tokens) - 1, _alpha(args)), rel_tol=1e-4, abs_tol=1e-6))


BEAM_STATE = Hint(
    "each kept extension must continue from the state that step returned for its own parent "
    "(new_state[parent]), not from another row's: after the extensions are sorted, the kept ones "
    "come from parents in a new order.", _state_mixup)
BEAM_ONE = Hint(
    "your result scores lower than the best hypothesis a beam of this size finds: keep beam_size "
    "hypotheses at every step and choose among all hypotheses × tokens, not only the best token of "
    "the best hypothesis (with beam_size hypotheses, greedy's first choice can be overtaken).",
    lambda got, exp, args: _beam_parts(got)[1] is not None and _beam_parts(got)[1] < exp[1] - 1e-4
    and _beam_parts(got)[0] != list(exp[0]) and not _state_mixup(got, exp, args))
BEAM_LP = Hint(
    "right tokens, wrong score: the score is log P(Y) / ((5 + |Y|) / 6) ** alpha with |Y| the "
    "number of tokens including eos (and without bos). If your formula is right, the "
    "log-probabilities you summed came from another hypothesis' state (use new_state[parent]).",
    lambda got, exp, args: _beam_parts(got)[0] == list(exp[0]) and _beam_parts(got)[1] is not None
    and not _len_without_eos(got, exp, args) and not math.isclose(_beam_parts(got)[1], exp[1], rel_tol=1e-4, abs_tol=1e-6))
BEAM_LP_EOS = Hint(
    "right tokens, but the length penalty used |Y| without eos: |Y| counts every output token, "
    "eos included (not bos).", _len_without_eos)
BEAM_LP_IGNORED = Hint(
    "with alpha > 0 a longer hypothesis should have won: compare the finished hypotheses by the "
    "normalised score log P(Y) / lp(Y), not by log P(Y) alone.",
    lambda got, exp, args: _alpha(args) > 0 and isinstance(_beam_parts(got)[0], list)
    and len(_beam_parts(got)[0]) < len(exp[0]))
BEAM_HINTS = (BEAM_STATE, BEAM_ONE, BEAM_LP, BEAM_LP_EOS, BEAM_LP_IGNORED)


# ----------------------------------------------------------------------------------------
# Public checks
# ----------------------------------------------------------------------------------------

def _shape(x: Any, shape: tuple, shown: str) -> None:
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise CheckFailed(f"{shown}: expected a tensor of shape {shape}, got {got}")


def _two(x: Any, shown: str) -> tuple[Any, Any]:
    if _pair(x) is None:
        raise CheckFailed(f"{shown}: expected a pair (two return values), got {type(x).__name__}")
    return _pair(x)


def check_encode(encode: Callable, Seq2Seq: type) -> None:
    """Shapes, zeros at padding, h at each own length, extra padding ignored, agreement with
    nn.GRU run on each sequence alone."""
    model = _model(Seq2Seq, 0)
    src = torch.tensor([[5, 6, 7, 8], [3, 4, PAD, PAD], [8, PAD, PAD, PAD]])
    src_len = torch.tensor([4, 2, 1])
    shown = "encode(model, src=[[5, 6, 7, 8], [3, 4, 0, 0], [8, 0, 0, 0]], src_len=[4, 2, 1])"
    states, h = _two(call(encode, shown, model, src, src_len), shown)
    _shape(states, (3, 4, 4), f"{shown}: states")
    _shape(h, (3, 4), f"{shown}: h")
    args = (model, src, src_len)
    alone = [model.encoder(model.src_emb(src[b:b + 1, :n]))[0][0] for b, n in enumerate(src_len.tolist())]
    expected = torch.zeros(3, 4, 4)
    for b, out in enumerate(alone):
        expected[b, :len(out)] = out
    expect_example((states, h), (expected, expected[[0, 1, 2], src_len - 1]), shown,
                   "each row equals nn.GRU run on that sequence alone, without its padding; states are 0 "
                   "at padded positions and h[b] is states[b, src_len[b] - 1].", ENCODE_HINTS, args)
    wide = torch.cat([src, torch.zeros(3, 3, dtype=torch.long)], 1)
    shown2 = "encode(model, <the same src with 3 more PAD columns>, src_len)"
    states2, h2 = _two(call(encode, shown2, model, wide, src_len), shown2)
    expect_example((states2, h2), (torch.cat([expected, torch.zeros(3, 3, 4)], 1), h), shown2,
                   "extra padding changes nothing but the number of (zero) time steps: states has "
                   "S = src.shape[1] = 7 steps.", ENCODE_HINTS, (model, wide, src_len))
    count = 2
    if torch.cuda.is_available():  # the grader may run your code on a GPU
        shown3 = "encode(model.cuda(), src.cuda(), src_len.cuda())"
        got = call(encode, shown3, model.cuda(), src.cuda(), src_len.cuda())
        expect_example(got, (expected.cuda(), h.detach().cuda()), shown3,
                       "pack_padded_sequence needs its lengths on the CPU (src_len.cpu()).", ENCODE_HINTS, args)
        count += 1
    passed("encode", count)


def check_decoder_step(decoder_step: Callable, Seq2Seq: type) -> None:
    """Log-probabilities sum to one; stepping through a sequence agrees with nn.GRU on all of it."""
    model = _model(Seq2Seq, 1)
    y = torch.tensor([[BOS, 3, 4, 5], [BOS, 6, 6, EOS]])  # (B, T)
    h0 = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    shown = "decoder_step(model, y_prev=[BOS, BOS], h=<random (2, 4)>)"
    log_probs, h1 = _two(call(decoder_step, shown, model, y[:, 0], h0), shown)
    _shape(log_probs, (2, 7), f"{shown}: log_probs")
    _shape(h1, (2, 4), f"{shown}: h_new")
    expect_example(log_probs.exp().sum(-1), torch.ones(2), f"{shown}: log_probs.exp().sum(-1)",
                   STEP_AXIS.text if _softmax_over_batch(log_probs) else
                   "log_probs are log-probabilities: exp of each row sums to 1. If these are logits, "
                   "apply F.log_softmax(..., dim=-1) to model.out(h_new).")
    states, _ = model.decoder(model.tgt_emb(y), h0[None])  # (B, T, H): all steps at once
    h, got_h, got_lp = h0, [], []
    for t in range(y.shape[1]):
        lp, h = _two(call(decoder_step, f"decoder_step(model, y[:, {t}], h)", model, y[:, t], h), shown)
        got_h.append(h)
        got_lp.append(lp)
    shown = "4 calls of decoder_step feeding y = [[BOS, 3, 4, 5], [BOS, 6, 6, EOS]]"
    expected = (F.log_softmax(model.out(states), -1)[:, -1], states[:, -1])
    expect_example((got_lp[-1], got_h[-1]), expected, shown,
                   "stepping through y one character at a time gives the same states as model.decoder "
                   "run over the whole of y from h (and log_softmax(model.out(state)) at each step).",
                   STEP_HINTS, ())
    passed("decoder_step", 2)


def check_teacher_forced_loss(teacher_forced_loss: Callable, Seq2Seq: type) -> None:
    """A model that ignores its input (known loss by hand); padding changes nothing; the loss of
    a batch is the token-weighted mean of its rows' losses."""
    model = _model(Seq2Seq, 2, sizes=(9, 5, 3, 4))
    p = torch.tensor([0.05, 0.05, 0.2, 0.3, 0.4])  # pad, bos, eos, 3, 4
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.copy_(p.log())  # log_softmax(bias) = log p whatever the state
    src, src_len = torch.tensor([[5, 6, 7], [8, 3, PAD]]), torch.tensor([3, 2])
    tgt = torch.tensor([[BOS, 3, 4, EOS], [BOS, EOS, PAD, PAD]])
    shown = "teacher_forced_loss(<model that always predicts p = [.05, .05, .2, .3, .4]>, src, src_len, tgt=[[BOS, 3, 4, EOS], [BOS, EOS, PAD, PAD]])"
    expected = -(p[3].log() + p[4].log() + 2 * p[EOS].log()) / 4
    wide = torch.cat([tgt, torch.zeros(2, 2, dtype=torch.long)], 1)
    got = call(teacher_forced_loss, shown, model, src, src_len, tgt)
    got_wide = call(teacher_forced_loss, shown, model, src, src_len, wide)
    expect_example((got, got_wide), (expected, expected), shown + " (and with 2 more PAD columns)",
                   "four real targets: 3, 4, EOS in row 0 and EOS in row 1, so the loss is "
                   "-(log .3 + log .4 + 2 log .2) / 4 = 1.3348; the PAD targets do not count.",
                   (*LOSS_HINTS, LOSS_SHIFT), (model, src, src_len, tgt))
    model = _model(Seq2Seq, 3, sizes=(9, 7, 3, 4))
    g = torch.Generator().manual_seed(3)
    src, src_len = _source(g, 4, 6, 9)
    tgt = _target(g, 4, 6, 7)
    shown = "teacher_forced_loss(<random model>, <4 sources>, src_len, <4 targets of different lengths>)"
    got = call(teacher_forced_loss, shown, model, src, src_len, tgt)
    n = (tgt[:, 1:] != PAD).sum(1)
    rows = [call(teacher_forced_loss, "teacher_forced_loss on one row", model, src[b:b + 1],
                 src_len[b:b + 1], tgt[b:b + 1]) for b in range(4)]
    weighted = sum(float(r.detach()) * int(k) for r, k in zip(rows, n)) / int(n.sum())
    expect_example(got.detach().item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got,
                   weighted, shown, "the batch loss is the mean over all real target tokens: the mean of "
                   "each row's loss weighted by its number of real targets (not the plain mean of rows).")
    if not (isinstance(got, torch.Tensor) and got.dim() == 0 and got.requires_grad):
        raise CheckFailed(f"{shown}: expected a 0-d tensor that training can backpropagate through")
    passed("teacher_forced_loss", 2)


def check_greedy_decode(greedy_decode: Callable) -> None:
    """Hand-made tables: a row that ends, a row that never does, max_len=1, a custom eos."""
    step = _markov_step(_tables(GREEDY_TRAP, NO_END))
    state = torch.tensor([[0.], [1.]])  # row 0 uses the first table, row 1 the second
    examples = [
        ((step, state, 5), [[A, EOS], [A, B_, A, B_, A]],
         "row 0: after bos the best is a (0.6), after a it is eos (0.45): [3, 2]. Row 1 never "
         "produces eos and stops after max_len = 5 tokens."),
        ((step, state, 1), [[A], [A]], "max_len = 1: one token per row."),
        ((step, state[:1], 3), [[A, EOS]], "a single row that finishes after 2 of its 3 tokens."),
        ((step, state[1:], 4, BOS, B_), [[A, B_]], "with eos = 4 ('b'), row [a, b] is finished."),
    ]
    for args, expected, why in examples:
        shown = f"greedy_decode(step, state={args[1].tolist()}, max_len={args[2]}" + \
                (f", bos={args[3]}, eos={args[4]})" if len(args) > 3 else ")")
        expect_example(call(greedy_decode, shown, *args), expected, shown, why, GREEDY_HINTS, args)
    passed("greedy_decode", len(examples))


def check_beam_search(beam_search: Callable) -> None:
    """The greedy trap (beam 2 finds the better sequence, beam 1 does not), the length penalty
    flipping a choice, and a model that never ends."""
    examples = [
        (GREEDY_TRAP, (5, 2), [B_, EOS],
         "greedy picks a (0.6) then eos (0.45): 0.27. A beam of 2 also keeps b (0.4), and "
         "[b, eos] has 0.4 * 0.9 = 0.36."),
        (GREEDY_TRAP, (5, 1), [A, EOS], "a beam of one hypothesis is greedy decoding: [a, eos]."),
        (SHORT_OR_LONG, (5, 3, 0.0), [EOS], "alpha = 0: [eos] (0.45) beats [a, eos] (0.4125)."),
        (SHORT_OR_LONG, (5, 3, 1.0), [A, EOS],
         "alpha = 1: log 0.45 / 1 = -0.80 loses to log 0.4125 / (7/6) = -0.76."),
        (NO_END, (3, 2), [A, B_, A],
         "no hypothesis reaches eos within max_len = 3: the unfinished ones count, [a, b, a] wins."),
    ]
    names = {id(GREEDY_TRAP): "greedy trap", id(SHORT_OR_LONG): "short or long", id(NO_END): "never ends"}
    for probs, args, tokens, why in examples:
        table = _tables(probs)
        log_p = sum(float(table[0, prev, token]) for prev, token in zip([BOS, *tokens], tokens))
        alpha = args[2] if len(args) > 2 else 0.0
        expected = (tokens, log_p / _lp(len(tokens), alpha))  # log P(Y) / lp(Y), read off the table
        shown = (f"beam_search(<{names[id(probs)]} table>, state, max_len={args[0]}, beam_size={args[1]}"
                 + (f", alpha={alpha})" if len(args) > 2 else ")"))
        call_args = (_markov_step(table), torch.zeros(1, 1), *args)
        got = call(beam_search, shown, *call_args)
        if _pair(got) and isinstance(got[0], torch.Tensor):
            got = (got[0].tolist(), got[1])
        expect_example(got, expected, shown, why, BEAM_HINTS, call_args if len(args) > 2 else (*call_args, 0.0))
    table = _second_order_table(NEEDS_STATE)
    tokens = [B_, A, EOS]
    log_p = sum(float(table[before, prev, token])
                for before, prev, token in zip([PAD, BOS, *tokens], [BOS, *tokens], tokens))
    shown = "beam_search(<table of the last two tokens; the state holds the one before prev>, state, max_len=3, beam_size=2)"
    call_args = (table, torch.zeros(1, 1), 3, 2, 0.0)
    got = call(beam_search, shown, _second_order_step(table), *call_args[1:])
    if _pair(got) and isinstance(got[0], torch.Tensor):
        got = (got[0].tolist(), got[1])
    expect_example(got, (tokens, log_p), shown,
                   "after 2 steps the beam holds [b, a] (0.4275) then [a, a] (0.33), each with the state "
                   "its own parent's step returned; after [b, a], eos has 0.9: [b, a, eos] = 0.385.",
                   BEAM_HINTS, call_args)
    passed("beam_search", len(examples) + 1)


# ----------------------------------------------------------------------------------------
# Hidden cases
# ----------------------------------------------------------------------------------------

MODEL = "Seq2Seq.from_weights(sd)"
ENCODE = f"lambda sd, src, src_len: encode({MODEL}, src, src_len)"
STEP = f"lambda sd, y, h: decoder_step({MODEL}, y, h)"
LOSS = (f"lambda sd, src, src_len, tgt: (lambda m: (teacher_forced_loss(m, src, src_len, tgt), "
        f"teacher_forced_loss(m, src, src_len, F.pad(tgt, (0, 3), value=PAD))))({MODEL})")
# A tiny recurrent scorer from tensors: h' = tanh(E[prev] + h W), log_probs = log_softmax(h' U + c).
SCORER = ("lambda E, W, U, c: lambda prev, h: (lambda h2: (torch.log_softmax(h2 @ U + c, -1), h2))"
          "(torch.tanh(E[prev] + h @ W))")
TABLE = "lambda T: lambda prev, state: (T[prev], state)"
# The state holds the token before prev: T[before, prev] (V, V, V).
TABLE2 = "lambda T: lambda prev, state: (T[state[:, 0].long(), prev], prev[:, None].to(state.dtype))"
GREEDY_SCORER = f"lambda E, W, U, c, h, max_len: greedy_decode(({SCORER})(E, W, U, c), h, max_len)"
GREEDY_TABLE = f"lambda T, state, max_len, bos, eos: greedy_decode(({TABLE})(T), state, max_len, bos, eos)"
BEAM_TABLE2 = (f"lambda T, state, max_len, beam_size, alpha: "
               f"beam_search(({TABLE2})(T), state, max_len, beam_size, alpha)")
BEAM_SCORER = (f"lambda E, W, U, c, h, max_len, beam_size, alpha: "
               f"beam_search(({SCORER})(E, W, U, c), h, max_len, beam_size, alpha)")
BEAM_TABLE = (f"lambda T, state, max_len, beam_size, alpha: "
              f"beam_search(({TABLE})(T), state, max_len, beam_size, alpha)")


def _encode_args(g, B=None, S=None, extra=0, dtype=torch.float32, lengths=None):
    B = B or randint(g, 2, 6)
    S = S or randint(g, 3, 9)
    E, H = randint(g, 2, 5), randint(g, 3, 7)
    sd = _weights(g, 11, 6, E, H, dtype)
    src, lens = _source(g, B, S, 11, lengths)
    return sd, torch.cat([src, torch.zeros(B, extra, dtype=torch.long)], 1), lens


def _step_args(g, dtype=torch.float32, B=None):
    B = B or randint(g, 1, 6)
    E, H, V = randint(g, 2, 5), randint(g, 3, 7), randint(g, 5, 14)
    return (_weights(g, 8, V, E, H, dtype), torch.randint(1, V, (B,), generator=g),
            torch.randn(B, H, generator=g, dtype=dtype))


def _loss_args(g, dtype=torch.float32, B=None, T=None):
    B, T = B or randint(g, 2, 6), T or randint(g, 3, 9)
    E, H, V = randint(g, 2, 5), randint(g, 3, 7), randint(g, 5, 12)
    src, lens = _source(g, B, randint(g, 2, 8), 10)
    return _weights(g, 10, V, E, H, dtype), src, lens, _target(g, B, T, V)


def _scorer(g, B, V=None, H=None, eos_bias=-1.0, dtype=torch.float32):
    V, H = V or randint(g, 5, 9), H or randint(g, 3, 6)
    E = torch.randn(V, H, generator=g, dtype=dtype)
    W = torch.randn(H, H, generator=g, dtype=dtype) * 0.8
    U = torch.randn(H, V, generator=g, dtype=dtype) * 2.0
    c = torch.zeros(V, dtype=dtype)
    c[[PAD, BOS]] = -30.0  # never emit pad or bos
    c[EOS] = eos_bias  # a nudge toward (> 0) or away from (< 0) ending
    return E, W, U, c, torch.randn(B, H, generator=g, dtype=dtype).tanh()


def _greedy_scorer(g, eos_bias=-1.0, max_len=None, dtype=torch.float32):
    B = randint(g, 1, 7)
    return (*_scorer(g, B, eos_bias=eos_bias, dtype=dtype), max_len or randint(g, 4, 10))


def _table(g, V, sharp=2.0):
    logits = torch.randn(V, V, generator=g) * sharp
    logits[:, PAD] = -30.0
    logits[:, BOS] = -30.0
    return logits.log_softmax(-1)


def _greedy_table_custom_eos(g):
    V = randint(g, 5, 8)
    eos = randint(g, 3, V)
    return _table(g, V), torch.zeros(randint(g, 2, 5), 1), randint(g, 3, 7), BOS, eos


def _beam_scorer(g, beam_size=None, alpha=None, max_len=None, eos_bias=-1.0, dtype=torch.float32):
    E, W, U, c, h = _scorer(g, 1, eos_bias=eos_bias, dtype=dtype)
    return (E, W, U, c, h, max_len or randint(g, 3, 7), beam_size or randint(g, 2, 5),
            _pick_alpha(g) if alpha is None else alpha)


def _pick_alpha(g) -> float:
    return [0.0, 0.6, 1.0, 2.0][randint(g, 0, 4)]


def _beam_trap(g):
    """A table where greedy's first token leads nowhere good (the GREEDY_TRAP shape, relabelled)."""
    probs = {BOS: {A: 0.55 + 0.1 * float(torch.rand(1, generator=g)), B_: 0.3},
             A: {EOS: 0.4, A: 0.3, B_: 0.3}, B_: {EOS: 0.95}}
    return _tables(probs)[0].float(), torch.zeros(1, 1), randint(g, 3, 7), 2, 0.0


def _beam_big(g):
    """beam_size larger than V at the first step (fewer extensions than beam_size)."""
    return _beam_scorer(g, beam_size=randint(g, 10, 16), max_len=randint(g, 3, 5))


def _beam_table_alpha(g):
    return _tables(SHORT_OR_LONG)[0].float(), torch.zeros(1, 1), 5, randint(g, 2, 4), [0.0, 1.0, 1.5][randint(g, 0, 3)]


CASES: dict[str, list[Case]] = {
    "test_encode": [
        Case(ENCODE, _encode_args, "random lengths, float32", ENCODE_HINTS),
        Case(ENCODE, lambda g: _encode_args(g, extra=randint(g, 1, 4)),
             "extra PAD columns (max(src_len) < S)", ENCODE_HINTS),
        Case(ENCODE, lambda g: _encode_args(g, B=1, lengths=None), "a batch of one", ENCODE_HINTS),
        Case(ENCODE, lambda g: _encode_args(g, B=4, S=5, lengths=[1, 5, 1, 3]),
             "lengths 1 and full length in one batch", ENCODE_HINTS),
        Case(ENCODE, lambda g: _encode_args(g, dtype=torch.float64), "float64 weights", ENCODE_HINTS),
    ],
    "test_decoder_step": [
        Case(STEP, _step_args, "random model and state, float32", STEP_HINTS),
        Case(STEP, lambda g: _step_args(g, B=1), "a batch of one", STEP_HINTS),
        Case(STEP, lambda g: _step_args(g, torch.float64), "float64", STEP_HINTS),
    ],
    "test_teacher_forced_loss": [
        Case(LOSS, _loss_args, "targets of different lengths (PAD after EOS)", LOSS_HINTS),
        Case(LOSS, lambda g: _loss_args(g, B=1, T=3), "one target: BOS y EOS", LOSS_HINTS),
        Case(LOSS, lambda g: _loss_args(g, torch.float64, B=5, T=10), "float64, longer targets",
             LOSS_HINTS),
    ],
    "test_greedy_decode": [
        Case(GREEDY_SCORER, _greedy_scorer, "random recurrent scorer, a few rows", GREEDY_HINTS),
        Case(GREEDY_SCORER, lambda g: _greedy_scorer(g, eos_bias=4.0),
             "rows that end early (eos likely)", GREEDY_HINTS),
        Case(GREEDY_SCORER, lambda g: _greedy_scorer(g, eos_bias=-30.0),
             "no row ever ends (max_len tokens each)", GREEDY_HINTS),
        Case(GREEDY_SCORER, lambda g: _greedy_scorer(g, max_len=1), "max_len = 1", GREEDY_HINTS),
        Case(GREEDY_SCORER, lambda g: _greedy_scorer(g, dtype=torch.float64), "float64 scorer",
             GREEDY_HINTS),
        Case(GREEDY_TABLE, _greedy_table_custom_eos, "a probability table with another eos id",
             GREEDY_HINTS),
    ],
    "test_beam_search": [
        Case(BEAM_TABLE, _beam_trap, "a table whose best sequence is not greedy's", BEAM_HINTS),
        Case(BEAM_TABLE, _beam_table_alpha, "a table where alpha decides between lengths", BEAM_HINTS),
        Case(BEAM_TABLE2, lambda g: (_second_order_table(NEEDS_STATE).float(), torch.zeros(1, 1), 3,
                                     randint(g, 2, 4), 0.0),
             "a model whose state matters (hypotheses reordered between steps)", BEAM_HINTS),
        Case(BEAM_SCORER, lambda g: _beam_scorer(g, alpha=0.0), "random scorer, alpha = 0", BEAM_HINTS),
        Case(BEAM_SCORER, lambda g: _beam_scorer(g, alpha=1.0, eos_bias=1.0),
             "random scorer, alpha = 1", BEAM_HINTS),
        Case(BEAM_SCORER, lambda g: _beam_scorer(g, eos_bias=-30.0),
             "no hypothesis ends within max_len", BEAM_HINTS),
        Case(BEAM_SCORER, _beam_big, "beam_size larger than the vocabulary", BEAM_HINTS),
        Case(BEAM_SCORER, lambda g: _beam_scorer(g, beam_size=1, alpha=0.0), "beam_size = 1",
             BEAM_HINTS),
        Case(BEAM_SCORER, lambda g: _beam_scorer(g, dtype=torch.float64), "float64 scorer",
             BEAM_HINTS),
    ],
}
