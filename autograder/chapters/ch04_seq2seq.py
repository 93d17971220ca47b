"""Chapter 4 — the encoder–decoder: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook on small examples that can be verified
by hand (a model whose output layer ignores its input, hand-made probability tables) and on
properties any correct answer has (padding changes nothing; a step-by-step decoder agrees with
``nn.GRU`` run over the whole sequence). ``CASES`` is what the grader runs: the same calls on
random inputs, compared with the reference notebook's results. The typical mistakes and their
hints are the catalogue's (``solutions/04-seq2seq/mistakes.yaml``, never released): a hint is
shown when a result is what one of them gives, on the hidden cases and on the examples here.

Models reach the student's code through adapters in ``call``: weights travel as a state dict of
tensors and the notebook's ``Seq2Seq.from_weights`` rebuilds the model on the grading device;
decoding exercises get a ``step`` function made from tensors by an expression (a probability
table, or a tiny random recurrent scorer).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..checks import call, expect_example, expect_shape, randint
from ..compare import describe_difference
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
    """(B, T) rows BOS y_1 .. y_n EOS PAD .. with random n in [0, T - 2], at least one full row
    and, when B > 1, one row BOS EOS (so that the rows' lengths differ)."""
    n = torch.randint(0, T - 1, (B,), generator=g)
    n[0] = T - 2
    if B > 1:
        n[-1] = 0
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
# {(before prev, prev): {next: prob}}. After 2 steps [b, a] (0.4275) leads [a, a] (0.33) and the
# parents swap rows; then what follows a depends on the token before it: [b, a, eos] (0.385) wins.
# A hypothesis continued from the other row's state ends as [b, a, a].
NEEDS_STATE = {(PAD, BOS): {A: 0.55, B_: 0.45}, (BOS, A): {A: 0.6, EOS: 0.2, B_: 0.2},
               (BOS, B_): {A: 0.95}, (A, A): {EOS: 0.3, A: 0.7}, (B_, A): {EOS: 0.9, A: 0.1}}
# After 2 steps the beam holds [a, a] (0.495) then [b, a] (0.405), parents in their old order; then
# eos after (b, a) has 0.95: [b, a, eos] (0.385) wins. From row 0's state, [b, a] would read (a, a).
STATE_KEEPS_ORDER = {(PAD, BOS): {A: 0.55, B_: 0.45}, (BOS, A): {A: 0.9}, (BOS, B_): {A: 0.9},
                     (A, A): {EOS: 0.3, A: 0.7}, (B_, A): {EOS: 0.95}}
# After b: [b, eos] has 0.95 * 0.45 = 0.4275; [b, a, eos] has 0.95 * 0.55 * 0.75 = 0.392: a length
# penalty flips the choice (both longer than one token, so lp differs for each).
SHORT_OR_LONG = {BOS: {B_: 0.95, A: 0.05}, B_: {EOS: 0.45, A: 0.55}, A: {EOS: 0.75, A: 0.15, B_: 0.1}}
# Greedy with the state passed on: (bos, a) -> b, (a, b) -> eos. A decoder that gives step the
# first state again sees (pad, a) every time: a a a a.
GREEDY_NEEDS_STATE = {(PAD, BOS): {A: 0.9}, (BOS, A): {B_: 0.9}, (A, B_): {EOS: 0.9}, (PAD, A): {A: 0.9}}


# ----------------------------------------------------------------------------------------
# Hints: the typical mistakes are the catalogue's (solutions/04-seq2seq/mistakes.yaml), each
# a patch of the reference whose results the grader and the public checks compare with. Only a
# mistake no patch expresses keeps a hint here.
# ----------------------------------------------------------------------------------------

GREEDY_TENSOR = Hint(
    "return plain Python lists of ints (.tolist()), one list per row, each as long as that row's "
    "output (rows may differ in length).",
    lambda got, exp, args: isinstance(got, torch.Tensor))
GREEDY_HINTS = (GREEDY_TENSOR,)


def _not_an_int(tokens: Any) -> str | None:
    """What the first token that is not a Python int is: a 0-d tensor has the right value (the
    comparison of values reads it with .item()) but is no token id for a dict lookup or json."""
    for token in tokens if isinstance(tokens, (list, tuple)) else ():
        if type(token) is not int:
            return f"a {type(token).__name__}" + (f" ({token!r})" if isinstance(token, torch.Tensor) else "")
    return None


def _greedy_check(got: Any, expected: Any, args: tuple) -> str | None:
    """The values as always, then plain Python ints in every row (``list[list[int]]``)."""
    message = describe_difference(got, expected)
    for b, row in enumerate(got if message is None else ()):
        odd = _not_an_int(row)
        if odd:
            return (f"output[{b}] holds {odd} where a token id should be a Python int: "
                    "take the ids with .tolist() (or int(token))")
    return message


def _beam_check(got: Any, expected: Any, args: tuple) -> str | None:
    """The values as always, then a list of Python ints and a Python float (``tuple[list[int], float]``)."""
    message = describe_difference(got, expected)
    if message is not None:
        return message
    odd = _not_an_int(got[0])
    if odd:
        return (f"output[0] holds {odd} where a token id should be a Python int: "
                "take the ids with .tolist() (or int(i))")
    if isinstance(got[1], torch.Tensor):
        return "output[1]: the score should be a Python float, not a tensor (.item() or .tolist())"
    return None


def _raise_if(message: str | None, shown: str) -> None:
    if message is not None:
        raise CheckFailed(f"{shown}: {message}")


def _lp(n: int, alpha: float) -> float:
    return ((5 + n) / 6) ** alpha


# ----------------------------------------------------------------------------------------
# Public checks
# ----------------------------------------------------------------------------------------

def _two(x: Any, shown: str) -> tuple[Any, Any]:
    if _pair(x) is None:
        raise CheckFailed(f"{shown}: expected a pair (two return values), got {type(x).__name__}")
    return _pair(x)


def check_encode(encode: Callable, Seq2Seq: type) -> None:
    """Shapes, zeros at padding, h at each own length (lengths in any order), extra padding
    ignored, agreement with nn.GRU run on each sequence alone."""
    model = _model(Seq2Seq, 0)
    src = torch.tensor([[3, 4, PAD, PAD], [5, 6, 7, 8], [8, PAD, PAD, PAD]])
    src_len = torch.tensor([2, 4, 1])
    shown = "encode(model, src=[[3, 4, 0, 0], [5, 6, 7, 8], [8, 0, 0, 0]], src_len=[2, 4, 1])"
    states, h = _two(call(encode, shown, model, src, src_len), shown)
    expect_shape(states, (3, 4, 4), f"{shown}: states")
    expect_shape(h, (3, 4), f"{shown}: h")
    with torch.no_grad():
        alone = [model.encoder(model.src_emb(src[b:b + 1, :n]))[0][0] for b, n in enumerate(src_len.tolist())]
    expected = torch.zeros(3, 4, 4)
    for b, out in enumerate(alone):
        expected[b, :len(out)] = out
    expect_example((states, h), (expected, expected[[0, 1, 2], src_len - 1]), shown,
                   "each row equals nn.GRU run on that sequence alone, without its padding; states are 0 "
                   "at padded positions and h[b] is states[b, src_len[b] - 1].")
    wide = torch.cat([src, torch.zeros(3, 3, dtype=torch.long)], 1)
    shown2 = "encode(model, <the same src with 3 more PAD columns>, src_len)"
    states2, h2 = _two(call(encode, shown2, model, wide, src_len), shown2)
    expect_example((states2, h2), (torch.cat([expected, torch.zeros(3, 3, 4)], 1), expected[[0, 1, 2], src_len - 1]),
                   shown2, "extra padding changes nothing but the number of (zero) time steps: states has "
                   "S = src.shape[1] = 7 steps.")
    count = 2
    if torch.cuda.is_available():  # the grader may run your code on a GPU
        shown3 = "encode(model.cuda(), src.cuda(), src_len.cuda())"
        got = call(encode, shown3, model.cuda(), src.cuda(), src_len.cuda())
        expect_example(got, (expected.cuda(), expected[[0, 1, 2], src_len - 1].cuda()), shown3,
                       "pack_padded_sequence needs its lengths on the CPU (src_len.cpu()).")
        count += 1
    passed("encode", count)


def check_decoder_step(decoder_step: Callable, Seq2Seq: type) -> None:
    """Log-probabilities sum to one; stepping through a sequence agrees with nn.GRU on all of it."""
    model = _model(Seq2Seq, 1)
    y = torch.tensor([[BOS, 3, 4, 5], [BOS, 6, 6, EOS]])  # (B, T)
    h0 = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    shown = "decoder_step(model, y_prev=[BOS, BOS], h=<random (2, 4)>)"
    log_probs, h1 = _two(call(decoder_step, shown, model, y[:, 0], h0), shown)
    expect_shape(log_probs, (2, 7), f"{shown}: log_probs")
    expect_shape(h1, (2, 4), f"{shown}: h_new")
    expect_example(log_probs.exp().sum(-1), torch.ones(2), f"{shown}: log_probs.exp().sum(-1)",
                   "log_probs are log-probabilities of the next character: exp of each row (a distribution "
                   "over the V = 7 characters) sums to 1.")
    with torch.no_grad():
        states, _ = model.decoder(model.tgt_emb(y), h0[None])  # (B, T, H): all steps at once
    h, got_h, got_lp = h0, [], []
    for t in range(y.shape[1]):
        lp, h = _two(call(decoder_step, f"decoder_step(model, y[:, {t}], h)", model, y[:, t], h), shown)
        got_h.append(h)
        got_lp.append(lp)
    shown = "4 calls of decoder_step feeding y = [[BOS, 3, 4, 5], [BOS, 6, 6, EOS]]"
    expected = (F.log_softmax(model.out(states), -1)[:, -1].detach(), states[:, -1])
    expect_example((got_lp[-1], got_h[-1]), expected, shown,
                   "stepping through y one character at a time gives the same states as model.decoder "
                   "run over the whole of y from h (and log_softmax(model.out(state)) at each step).")
    passed("decoder_step", 2)


def check_teacher_forced_loss(teacher_forced_loss: Callable, Seq2Seq: type) -> None:
    """A model that ignores its input (known loss by hand); padding changes nothing; the loss of
    a batch is the token-weighted mean of its rows' losses; the decoder starts from the source's
    context vector."""
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
                   "-(log .3 + log .4 + 2 log .2) / 4 = 1.3348; the PAD targets do not count.")
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
    src, src_len, tgt = torch.tensor([[5, 6, 7]]), torch.tensor([3]), torch.tensor([[BOS, 3, 4, 5, EOS]])
    with torch.no_grad():
        _, context = model.encoder(model.src_emb(src))  # (1, 1, H): no padding to skip here
        states, _ = model.decoder(model.tgt_emb(tgt[:, :-1]), context)
        expected = -F.log_softmax(model.out(states), -1)[0].gather(-1, tgt[0, 1:, None]).mean()
    shown = "teacher_forced_loss(<random model>, src=[[5, 6, 7]], src_len=[3], tgt=[[BOS, 3, 4, 5, EOS]])"
    got = call(teacher_forced_loss, shown, model, src, src_len, tgt)
    expect_example(got, expected, shown,
                   "the decoder starts from the context vector h = encode(model, src, src_len)[1], reads "
                   "BOS 3 4 5 and predicts 3 4 5 EOS: the mean of -log p over those 4 targets.")
    passed("teacher_forced_loss", 3)


def check_greedy_decode(greedy_decode: Callable) -> None:
    """Hand-made tables: a row that ends, a row that never does, max_len=1, a custom eos, and a
    model whose next token depends on the state step returned."""
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
        got = call(greedy_decode, shown, *args)
        expect_example(got, expected, shown, why, GREEDY_HINTS, args)
        _raise_if(_greedy_check(got, expected, args), shown)
    args = (_second_order_step(_second_order_table(GREEDY_NEEDS_STATE)), torch.zeros(1, 1), 4)
    shown = "greedy_decode(<step of a table of the last two tokens; the state holds the one before prev>, state=[[0.0]], max_len=4)"
    expect_example(call(greedy_decode, shown, *args), [[A, B_, EOS]], shown,
                   "after (bos, a) the best is b, after (a, b) it is eos: [3, 4, 2]. step returns the new "
                   "state (the token before the next prev), which the next call of step needs.",
                   GREEDY_HINTS, args)
    passed("greedy_decode", len(examples) + 1)


def check_beam_search(beam_search: Callable) -> None:
    """The greedy trap (beam 2 finds the better sequence, beam 1 does not), the length penalty
    flipping a choice, a model that never ends, and a model whose state matters."""
    examples = [
        (GREEDY_TRAP, (5, 2), [B_, EOS],
         "greedy picks a (0.6) then eos (0.45): 0.27. A beam of 2 also keeps b (0.4), and "
         "[b, eos] has 0.4 * 0.9 = 0.36."),
        (GREEDY_TRAP, (5, 1), [A, EOS], "a beam of one hypothesis is greedy decoding: [a, eos]."),
        (SHORT_OR_LONG, (5, 3, 0.0), [B_, EOS],
         "alpha = 0: [b, eos] (0.95 * 0.45 = 0.43) beats [b, a, eos] (0.95 * 0.55 * 0.75 = 0.39)."),
        (SHORT_OR_LONG, (5, 3, 1.0), [B_, A, EOS],
         "alpha = 1: log 0.43 / (7/6) = -0.73 loses to log 0.39 / (8/6) = -0.70."),
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
        got = call(beam_search, shown, _markov_step(table), torch.zeros(1, 1), *args)
        if _pair(got) and isinstance(got[0], torch.Tensor):
            got = (got[0].tolist(), got[1])
        expect_example(got, expected, shown, why)
        _raise_if(_beam_check(got, expected, args), shown)
    second_order = [
        (STATE_KEEPS_ORDER, "a table of the last two tokens; the state holds the one before prev",
         "after 2 steps the beam holds [a, a] (0.495) then [b, a] (0.405), each with the state its own "
         "parent's step returned; after (b, a), eos has 0.95: [b, a, eos] = 0.385."),
        (NEEDS_STATE, "another table of the last two tokens",
         "after 2 steps the beam holds [b, a] (0.4275) then [a, a] (0.33), each with the state "
         "its own parent's step returned; after [b, a], eos has 0.9: [b, a, eos] = 0.385."),
    ]
    for probs, what, why in second_order:
        table = _second_order_table(probs)
        tokens = [B_, A, EOS]
        log_p = sum(float(table[before, prev, token])
                    for before, prev, token in zip([PAD, BOS, *tokens], [BOS, *tokens], tokens))
        shown = f"beam_search(<{what}>, state, max_len=3, beam_size=2)"
        got = call(beam_search, shown, _second_order_step(table), torch.zeros(1, 1), 3, 2, 0.0)
        if _pair(got) and isinstance(got[0], torch.Tensor):
            got = (got[0].tolist(), got[1])
        expect_example(got, (tokens, log_p), shown, why)
        _raise_if(_beam_check(got, (tokens, log_p), ()), shown)
    passed("beam_search", len(examples) + len(second_order))


# ----------------------------------------------------------------------------------------
# Hidden cases
# ----------------------------------------------------------------------------------------

MODEL = "Seq2Seq.from_weights(sd)"
ENCODE = f"lambda sd, src, src_len: encode({MODEL}, src, src_len)"
STEP = f"lambda sd, y, h: decoder_step({MODEL}, y, h)"
LOSS = (f"lambda sd, src, src_len, tgt: (lambda m: (teacher_forced_loss(m, src, src_len, tgt), "
        f"teacher_forced_loss(m, src, src_len, F.pad(tgt, (0, 3), value=PAD))))({MODEL})")
LOSS_ONCE = f"lambda sd, src, src_len, tgt: teacher_forced_loss({MODEL}, src, src_len, tgt)"
# A tiny recurrent scorer from tensors: h' = tanh(E[prev] + h W), log_probs = log_softmax(h' U + c).
SCORER = ("lambda E, W, U, c: lambda prev, h: (lambda h2: (torch.log_softmax(h2 @ U + c, -1), h2))"
          "(torch.tanh(E[prev] + h @ W))")
TABLE = "lambda T: lambda prev, state: (T[prev], state)"
# The state holds the token before prev: T[before, prev] (V, V, V).
TABLE2 = "lambda T: lambda prev, state: (T[state[:, 0].long(), prev], prev[:, None].to(state.dtype))"
GREEDY_SCORER = f"lambda E, W, U, c, h, max_len: greedy_decode(({SCORER})(E, W, U, c), h, max_len)"
GREEDY_TABLE = f"lambda T, state, max_len, bos, eos: greedy_decode(({TABLE})(T), state, max_len, bos, eos)"
# One table per row: row b uses tables[state[b, 0]].
GREEDY_ROWS = ("lambda Ts, state, max_len: greedy_decode(lambda prev, s: (Ts[s[:, 0].long(), prev], s), "
               "state, max_len)")
BEAM_TABLE2 = (f"lambda T, state, max_len, beam_size, alpha: "
               f"beam_search(({TABLE2})(T), state, max_len, beam_size, alpha)")
BEAM_SCORER = (f"lambda E, W, U, c, h, max_len, beam_size, alpha: "
               f"beam_search(({SCORER})(E, W, U, c), h, max_len, beam_size, alpha)")
BEAM_TABLE = (f"lambda T, state, max_len, beam_size, alpha: "
              f"beam_search(({TABLE})(T), state, max_len, beam_size, alpha)")


def _encode_args(g, B=None, S=None, extra=0, dtype=torch.float32, lengths=None):
    """Random lengths (with B > 1: one row of full length and one shorter, in random order)."""
    B = B or randint(g, 2, 6)
    S = S or randint(g, 3, 9)
    E, H = randint(g, 2, 5), randint(g, 3, 7)
    sd = _weights(g, 11, 6, E, H, dtype)
    if lengths is None and B > 1:
        lengths = torch.randint(1, S + 1, (B,), generator=g)
        lengths[:2] = torch.tensor([S, randint(g, 1, S)])[torch.randperm(2, generator=g)]
        lengths = lengths.tolist()
    src, lens = _source(g, B, S, 11, lengths)
    return sd, torch.cat([src, torch.zeros(B, extra, dtype=torch.long)], 1), lens


def _step_args(g, dtype=torch.float32, B=None):
    B = B or randint(g, 2, 6)
    E, H, V = randint(g, 2, 5), randint(g, 3, 7), randint(g, 5, 14)
    return (_weights(g, 8, V, E, H, dtype), torch.randint(1, V, (B,), generator=g),
            torch.randn(B, H, generator=g, dtype=dtype))


def _loss_args(g, dtype=torch.float32, B=None, T=None, V=None):
    B, T = B or randint(g, 2, 6), T or randint(g, 3, 9)
    E, H, V = randint(g, 2, 5), randint(g, 3, 7), V or randint(g, 5, 12)
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
    B = randint(g, 2, 7)
    return (*_scorer(g, B, eos_bias=eos_bias, dtype=dtype), max_len or randint(g, 4, 10))


def _table(g, V, sharp=2.0):
    logits = torch.randn(V, V, generator=g) * sharp
    logits[:, PAD] = -30.0
    logits[:, BOS] = -30.0
    return logits.log_softmax(-1)


def _greedy_rows(g):
    """One table per row: row 0 ends at once, row 1 never ends, the others are random."""
    B, V = randint(g, 3, 6), randint(g, 5, 8)
    tables = torch.stack([_table(g, V) for _ in range(B)])
    tables[0, BOS] = torch.tensor([-30.0, -30.0, 0.0, *[-5.0] * (V - 3)]).log_softmax(-1)
    tables[1, :, EOS] = -30.0
    return tables, torch.arange(B, dtype=torch.float32)[torch.randperm(B, generator=g)][:, None], randint(g, 4, 8)


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
    return _tables(SHORT_OR_LONG)[0].float(), torch.zeros(1, 1), 5, randint(g, 2, 4), [1.0, 1.5, 2.0][randint(g, 0, 3)]


CASES: dict[str, list[Case]] = {
    "test_encode": [
        Case(ENCODE, _encode_args, "random lengths, float32"),
        Case(ENCODE, lambda g: _encode_args(g, extra=randint(g, 1, 4)), "extra PAD columns (max(src_len) < S)"),
        Case(ENCODE, lambda g: _encode_args(g, B=1, lengths=None), "a batch of one"),
        Case(ENCODE, lambda g: _encode_args(g, B=4, S=5, lengths=[1, 5, 1, 3]),
             "lengths 1 and full length in one batch"),
        Case(ENCODE, lambda g: _encode_args(g, B=3, S=6, lengths=[6, 4, 2]), "lengths sorted longest first"),
        Case(ENCODE, lambda g: _encode_args(g, dtype=torch.float64), "float64 weights"),
    ],
    "test_decoder_step": [
        Case(STEP, _step_args, "random model and state, float32"),
        Case(STEP, lambda g: _step_args(g, B=1), "a batch of one"),
        Case(STEP, lambda g: _step_args(g, torch.float64), "float64"),
    ],
    "test_teacher_forced_loss": [
        Case(LOSS, _loss_args, "targets of different lengths (PAD after EOS)"),
        Case(LOSS, lambda g: _loss_args(g, B=1, T=3), "one target: BOS y EOS"),
        Case(LOSS, lambda g: _loss_args(g, torch.float64, B=5, T=10), "float64, longer targets"),
        Case(LOSS_ONCE, lambda g: (lambda V: _loss_args(g, B=randint(g, 2, 5), T=V + 1, V=V))(randint(g, 5, 8)),
             "as many target positions as characters in the vocabulary (T - 1 = V)"),
    ],
    "test_greedy_decode": [
        Case(GREEDY_SCORER, _greedy_scorer, "random recurrent scorer, a few rows", GREEDY_HINTS,
             check=_greedy_check),
        Case(GREEDY_SCORER, lambda g: _greedy_scorer(g, eos_bias=4.0),
             "rows that end early (eos likely)", GREEDY_HINTS, check=_greedy_check),
        Case(GREEDY_SCORER, lambda g: _greedy_scorer(g, eos_bias=-30.0),
             "no row ever ends (max_len tokens each)", GREEDY_HINTS, check=_greedy_check),
        Case(GREEDY_SCORER, lambda g: _greedy_scorer(g, max_len=1), "max_len = 1", GREEDY_HINTS,
             check=_greedy_check),
        Case(GREEDY_SCORER, lambda g: _greedy_scorer(g, dtype=torch.float64), "float64 scorer",
             GREEDY_HINTS, check=_greedy_check),
        Case(GREEDY_TABLE, _greedy_table_custom_eos, "a probability table with another eos id",
             GREEDY_HINTS, check=_greedy_check),
        Case(GREEDY_ROWS, _greedy_rows, "one table per row: a row that ends at once, one that never ends",
             GREEDY_HINTS, check=_greedy_check),
    ],
    "test_beam_search": [
        Case(BEAM_TABLE, _beam_trap, "a table whose best sequence is not greedy's", check=_beam_check),
        Case(BEAM_TABLE, _beam_table_alpha, "a table where alpha > 0 decides between lengths",
             check=_beam_check),
        Case(BEAM_TABLE2, lambda g: (_second_order_table(NEEDS_STATE).float(), torch.zeros(1, 1), 3,
                                     randint(g, 2, 4), 0.0),
             "a model whose state matters (hypotheses reordered between steps)", check=_beam_check),
        Case(BEAM_TABLE2, lambda g: (_second_order_table(STATE_KEEPS_ORDER).float(), torch.zeros(1, 1), 3, 2, 0.0),
             "a model whose state matters (hypotheses in their old order)", check=_beam_check),
        Case(BEAM_SCORER, lambda g: _beam_scorer(g, alpha=0.0), "random scorer, alpha = 0", check=_beam_check),
        Case(BEAM_SCORER, lambda g: _beam_scorer(g, alpha=1.0, eos_bias=1.0), "random scorer, alpha = 1",
             check=_beam_check),
        Case(BEAM_SCORER, lambda g: _beam_scorer(g, eos_bias=-30.0), "no hypothesis ends within max_len",
             check=_beam_check),
        Case(BEAM_SCORER, _beam_big, "beam_size larger than the vocabulary", check=_beam_check),
        Case(BEAM_SCORER, lambda g: _beam_scorer(g, beam_size=1, alpha=0.0), "beam_size = 1",
             check=_beam_check),
        Case(BEAM_SCORER, lambda g: _beam_scorer(g, dtype=torch.float64), "float64 scorer", check=_beam_check),
    ],
}
