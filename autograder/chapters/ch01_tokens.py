"""Chapter 1 — tokens, one-hot vectors and embeddings: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook, on small examples that can be
verified by hand and on properties any correct answer has. ``CASES`` is what the grader
runs: the same calls on random inputs, the student's result compared with the reference
notebook's. This module holds no reference solution on purpose (students can read it):
hints only recognise the symptoms of typical mistakes.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import torch
from torch import nn

from ..checks import as_tensor, call, close, expect_example, pick, randint
from ..spec import Case, CheckFailed, Hint, expect, passed

PAD, UNK = "<pad>", "<unk>"


# ----------------------------------------------------------------------------------------
# Helpers (used by the public checks and the hidden cases alike)
# ----------------------------------------------------------------------------------------

def _ints(x: Any) -> list[int] | None:
    """``x`` as a list of Python ints, or None when it is not a sequence of ints."""
    try:
        values = x.tolist() if isinstance(x, torch.Tensor) else list(x)
        return values if all(isinstance(v, int) and not isinstance(v, bool) for v in values) else None
    except TypeError:
        return None


def _pairs(x: Any) -> list[tuple[int, int]] | None:
    """``x`` as a list of (int, int) tuples, or None when it is something else."""
    try:
        pairs = [tuple(p) for p in x]
        return pairs if all(len(p) == 2 and _ints(p) is not None for p in pairs) else None
    except TypeError:
        return None


# ----------------------------------------------------------------------------------------
# Hints: each recognises one typical mistake from (got, expected, args)
# ----------------------------------------------------------------------------------------

def _counts(args: tuple) -> Counter:
    return Counter(args[0])


def _min_freq(args: tuple) -> int:
    return args[1] if len(args) > 1 else 1


def _body(vocab: Any) -> list:
    return [t for t in vocab if t not in (PAD, UNK)]


VOCAB_SPECIALS = Hint(
    "the vocabulary starts with the special tokens: index 0 is '<pad>', index 1 is '<unk>'.",
    lambda got, exp, args: list(got[:2]) != [PAD, UNK])
VOCAB_DUPLICATES = Hint(
    "'<pad>' or '<unk>' appears twice: when the input contains a special token, do not add it "
    "again after the two reserved slots.",
    lambda got, exp, args: list(got).count(PAD) + list(got).count(UNK) > 2)
VOCAB_TIES = Hint(
    "the right tokens in the right count order, but ties are broken differently: equal counts "
    "go in Python string order (sorted() puts 'B' before 'a' before 'b'), e.g. "
    "key=lambda t: (-count[t], t).",
    lambda got, exp, args: (len(got) == len(exp) and set(got) == set(exp) and list(got) != list(exp)
                            and [_counts(args)[t] for t in _body(got)]
                            == [_counts(args)[t] for t in _body(exp)]))
VOCAB_ORDER = Hint(
    "tokens must be sorted by descending count (the most frequent token gets index 2).",
    lambda got, exp, args: (set(got) == set(exp) and any(
        a < b for a, b in zip([_counts(args)[t] for t in _body(got)],
                              [_counts(args)[t] for t in _body(got)][1:]))))
VOCAB_MIN_FREQ_STRICT = Hint(
    "tokens whose count equals min_freq are kept: the test is count >= min_freq.",
    lambda got, exp, args: (set(got) < set(exp) and all(
        _counts(args)[t] == _min_freq(args) for t in set(exp) - set(got))))
VOCAB_MIN_FREQ_IGNORED = Hint(
    "tokens seen fewer than min_freq times must be left out (they will be encoded as '<unk>').",
    lambda got, exp, args: (set(got) > set(exp) and all(
        _counts(args)[t] < _min_freq(args) for t in set(got) - set(exp))))
VOCAB_HINTS = (VOCAB_SPECIALS, VOCAB_DUPLICATES, VOCAB_TIES, VOCAB_ORDER,
               VOCAB_MIN_FREQ_STRICT, VOCAB_MIN_FREQ_IGNORED)

AS_LIST = Hint(
    "return a plain Python list, not a tensor (call .tolist() if you built a tensor).",
    lambda got, exp, args: isinstance(got, torch.Tensor))


def _unk_index(args: tuple) -> int:
    return list(args[1]).index(UNK)


ENCODE_UNK = Hint(
    "a token missing from the vocabulary is encoded as the index of '<unk>' (vocab.index('<unk>')).",
    lambda got, exp, args: (len(got) == len(exp) and all(
        g == e for g, e in zip(got, exp) if e != _unk_index(args)) and list(got) != list(exp)))
ENCODE_DROPPED = Hint(
    "keep one id per token: unknown tokens become '<unk>', they are not skipped.",
    lambda got, exp, args: len(got) < len(exp) and list(got) == [
        e for e, token in zip(exp, args[0]) if token in set(args[1])])
ROUND_TRIP_UNK = Hint(
    "only the unknown tokens come back wrong: encode them as the index of '<unk>', so that "
    "decode turns them into '<unk>'.",
    lambda got, exp, args: (len(got) == len(exp) and list(got) != list(exp)
                            and all(g == e for g, e in zip(got, exp) if e != UNK)))
DECODE_JOINED = Hint(
    "decode returns a list of tokens, one per id, not a joined string.",
    lambda got, exp, args: isinstance(got, str))
ENCODE_HINTS = (ENCODE_UNK, ENCODE_DROPPED, AS_LIST)


def _shifted(x: torch.Tensor, s: int) -> torch.Tensor:
    """``x`` moved ``s`` places along the last dim, zeros coming in."""
    out = torch.zeros_like(x)
    if s > 0:
        out[..., s:] = x[..., :-s]
    else:
        out[..., :s] = x[..., -s:]
    return out


def _off_by_one(got: Any, exp: torch.Tensor, args: tuple) -> bool:
    t, e = as_tensor(got), exp.detach().cpu().float()
    if t is None or t.shape != e.shape or e.shape[-1] < 2 or torch.equal(t.float(), e):
        return False
    candidates = [f(e, s) for s in (1, -1) for f in (_shifted, lambda x, s: x.roll(s, -1))]
    return any(torch.equal(t.float(), c) for c in candidates)


ONE_HOT_SHIFT = Hint(
    "every 1 is one column away from where it belongs: did you shift the indices by one? "
    "Id i goes to column i exactly (column 0 is token 0).",
    _off_by_one)
ONE_HOT_INT = Hint(
    "right values, wrong dtype: F.one_hot returns int64; convert with .float() so the result "
    "can be multiplied with float weights.",
    lambda got, exp, args: (got.dtype != exp.dtype and not got.dtype.is_floating_point
                            and torch.equal(as_tensor(got).float(), exp.detach().cpu().float())))
ONE_HOT_DEVICE = Hint(
    "the result must live on ids.device: create tensors with device=ids.device "
    "(torch.eye(V) or torch.zeros(...) alone are on the CPU).",
    lambda got, exp, args: got.device.type != exp.device.type)
ONE_HOT_CLASSES = Hint(
    "the last dimension must be num_classes, even when the largest id is smaller "
    "(F.one_hot(ids) without num_classes guesses max(ids) + 1).",
    lambda got, exp, args: (got.shape != exp.shape and got.shape[:-1] == exp.shape[:-1]
                            and got.shape[-1] == int(args[0].max()) + 1))
ONE_HOT_HINTS = (ONE_HOT_SHIFT, ONE_HOT_INT, ONE_HOT_DEVICE, ONE_HOT_CLASSES)

EMBED_TRANSPOSED = Hint(
    "you picked columns of W instead of rows: the one-hot (..., V) multiplies W itself, "
    "(..., V) @ (V, d) -> (..., d), not W.T.",
    lambda got, exp, args: close(got, args[1].detach().cpu().T[args[0].cpu()]))
EMBED_SHAPE = Hint(
    "the result ends in V = W.shape[0] instead of d = W.shape[1] (the one-hot itself, or a "
    "product with W.T?): one_hot(ids, V) @ W is (..., V) @ (V, d) -> (..., d).",
    lambda got, exp, args: tuple(got.shape) == (*exp.shape[:-1], args[1].shape[0]) != tuple(exp.shape))
EMBED_DTYPE = Hint(
    "the result keeps W's dtype: cast the one-hot to W.dtype (one_hot(...).to(W.dtype)) rather "
    "than casting W to float32.",
    lambda got, exp, args: got.dtype != exp.dtype and exp.dtype == args[1].dtype)
EMBED_HINTS = (EMBED_TRANSPOSED, EMBED_SHAPE, EMBED_DTYPE)


def _unit_rows(E: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    return E / E.norm(dim=dim, keepdim=True).clamp_min(eps)


COSINE_RAW = Hint(
    "these are raw dot products E @ E.T: divide each row by its norm first (or divide the dot "
    "products by the product of the two norms).",
    lambda got, exp, args: close(got, args[0].detach().cpu().double() @ args[0].detach().cpu().double().T))
COSINE_DIM = Hint(
    "normalise each row (dim=-1, one norm per vector), not each column (dim=0).",
    lambda got, exp, args: close(got, _unit_rows(args[0].detach().cpu().double(), 0)
                                 @ _unit_rows(args[0].detach().cpu().double(), 0).T))
COSINE_NAN = Hint(
    "NaN appears where a row is all zeros (0 / 0): clamp the norms from below, "
    "norm.clamp_min(eps), so a zero row gives similarity 0.",
    lambda got, exp, args: bool(as_tensor(got).isnan().any()) and not bool(exp.isnan().any()))
COSINE_GRAM_OF_COLUMNS = Hint(
    "the result must be (N, N), one entry per pair of rows: E @ E.T, not E.T @ E.",
    lambda got, exp, args: tuple(got.shape) == (args[0].shape[1],) * 2 != tuple(exp.shape))
COSINE_DTYPE = Hint(
    "right values, wrong dtype: the result keeps E's dtype; do not cast E (or the result) to "
    "float32.",
    lambda got, exp, args: got.dtype != exp.dtype and torch.allclose(
        as_tensor(got).double(), exp.detach().cpu().double(), rtol=1e-4, atol=1e-5))
COSINE_HINTS = (COSINE_RAW, COSINE_DIM, COSINE_NAN, COSINE_GRAM_OF_COLUMNS, COSINE_DTYPE)
COSINE_EPS = Hint(
    "clamp each norm separately: a row whose norm is below eps is divided by eps "
    "(E / norms.clamp_min(eps)), rather than clamping or adding eps to the product of norms.",
    lambda got, exp, args: (as_tensor(got).shape == exp.shape and not bool(as_tensor(got).isnan().any())
                            and not any(h.matches(got, exp, args) for h in (COSINE_RAW, COSINE_DIM))))


def _byte_pair_counts(text: str) -> Counter:
    data = text.encode("utf-8")
    return Counter(zip(data, data[1:]))


def _new_ids_shifted(got: Any, exp: Any, args: tuple) -> bool:
    """Same merges, but every new id differs from 256 + k by one constant."""
    g, e = _pairs(got), _pairs(exp)
    if g is None or len(g) != len(e) or g == e:
        return False
    shifts = set()
    for pg, pe in zip(g, e):
        for a, b in zip(pg, pe):
            if b < 256 and a != b:
                return False
            if b >= 256:
                shifts.add(a - b)
    return len(shifts) == 1 and 0 not in shifts


def _first_difference(got: Any, exp: Any) -> int | None:
    g, e = _pairs(got), _pairs(exp)
    if g is None or e is None or g == e:
        return None
    return next((k for k, (a, b) in enumerate(zip(g, e)) if a != b), None)


def _overlap_dropped(got: Any, exp: Any, args: tuple) -> bool:
    """At the first difference the expected merge is a repeated pair such as (97, 97), whose
    count only wins with overlapping occurrences, and a pair of two different ids was picked."""
    g, e = _pairs(got), _pairs(exp)
    i = _first_difference(got, exp)
    if i is None or sorted(g) == sorted(e):
        return False
    if i == 0 and _byte_pair_counts(args[0])[g[0]] == _byte_pair_counts(args[0])[e[0]]:
        return False  # a plain tie: BPE_TIES's case
    return e[i][0] == e[i][1] and g[i][0] != g[i][1]


def _tie_broken_differently(got: Any, exp: Any, args: tuple) -> bool:
    """The first merge differs from the expected one but has the same count in the text, or
    the first difference is two consecutive merges swapped (a tie settled the other way)."""
    g, e = _pairs(got), _pairs(exp)
    i = _first_difference(got, exp)
    if i is None or sorted(g) == sorted(e) or _overlap_dropped(got, exp, args):
        return False  # a whole permutation is BPE_ORDER's case
    if i == 0:
        counts = _byte_pair_counts(args[0])
        return counts[g[0]] == counts[e[0]]
    return g[i] in e[i + 1:]  # the reference merges the student's pick later: it was a candidate


BPE_ORDER = Hint(
    "you found the right merges in the wrong order: merges are listed in the order they are "
    "learned, merge k creating id 256 + k.",
    lambda got, exp, args: _pairs(got) != _pairs(exp) and sorted(_pairs(got)) == sorted(_pairs(exp)))
BPE_NEW_IDS = Hint(
    "new ids are numbered from 256: the first merge creates 256, merge k creates 256 + k "
    "(0..255 are the bytes).",
    _new_ids_shifted)
BPE_TIES = Hint(
    "a tie between equally frequent pairs was settled differently: take the pair whose first "
    "occurrence in the current sequence comes first (max(counts, key=counts.get) on a dict "
    "filled left to right does this), not the smallest pair or the last one seen.",
    _tie_broken_differently)
BPE_OVERLAP = Hint(
    "count pairs with overlap: in 'aaa' the pair (97, 97) occurs twice (positions 0-1 and 1-2); "
    "zip(ids, ids[1:]) sees both. Only the replacement is non-overlapping.",
    _overlap_dropped)
TRAIN_BPE_HINTS = (BPE_ORDER, BPE_NEW_IDS, BPE_TIES, BPE_OVERLAP)


def _valid_ids(got: Any, args: tuple) -> bool:
    ids = _ints(got)
    return ids is not None and all(0 <= i < 256 + len(args[1]) for i in ids)


ENCODE_RULES = Hint(
    "your ids are valid tokens but not the ones the merges produce: apply the merges one after "
    "the other in the order they were learned, merge k creating id 256 + k (a later merge can "
    "use ids made by earlier ones), each to every occurrence, left to right and without overlap "
    "('aaa' with merge (97, 97) gives [256, 97]), before moving on to the next merge.",
    lambda got, exp, args: _valid_ids(got, args) and list(got) != list(exp))
ENCODE_OUT_OF_RANGE = Hint(
    "ids must lie in [0, 256 + len(merges)): the bytes, then one id per merge, merge k being 256 + k.",
    lambda got, exp, args: _ints(got) is not None and not _valid_ids(got, args))
ENCODE_NEW_IDS = Hint(
    "merge k creates id 256 + k, counting every merge in the list, even those that never occur "
    "in this text.",
    lambda got, exp, args: (_ints(got) is not None and len(got) == len(exp) and len({
        a - b for a, b in zip(got, exp) if a != b or b >= 256}) == 1 and list(got) != list(exp)
        and all(a == b for a, b in zip(got, exp) if b < 256)))
BPE_ENCODE_HINTS = (ENCODE_NEW_IDS, ENCODE_RULES, ENCODE_OUT_OF_RANGE)

DECODE_PIECEWISE = Hint(
    "more '\ufffd' than expected: a character such as 'é' (2 bytes) or '🙂' (4 bytes) can be "
    "split across tokens, so decoding token by token breaks it. Join all the bytes first, "
    "then call .decode('utf-8', errors='replace') once.",
    lambda got, exp, args: isinstance(got, str) and got.count("\ufffd") > exp.count("\ufffd"))
DECODE_IGNORED = Hint(
    "fewer '\ufffd' than expected: invalid UTF-8 bytes must become '\ufffd' "
    "(errors='replace'), not disappear (errors='ignore').",
    lambda got, exp, args: isinstance(got, str) and got.count("\ufffd") < exp.count("\ufffd"))
DECODE_BYTES = Hint(
    "return a str: decode the joined bytes with .decode('utf-8', errors='replace').",
    lambda got, exp, args: isinstance(got, (bytes, bytearray)))
BPE_DECODE_HINTS = (DECODE_PIECEWISE, DECODE_IGNORED, DECODE_BYTES)


# ----------------------------------------------------------------------------------------
# Public checks (run in the student's notebook)
# ----------------------------------------------------------------------------------------

def check_build_vocab(build_vocab: Callable) -> None:
    """Hand-countable token lists covering order, ties, min_freq and special tokens."""
    examples = [
        ((["b", "a", "b", "c", "a", "b"],), [PAD, UNK, "b", "a", "c"],
         "counts are b: 3, a: 2, c: 1; '<pad>' and '<unk>' come first."),
        ((["z", "y", "x", "y", "z"],), [PAD, UNK, "y", "z", "x"],
         "y and z both occur twice: ties are alphabetical."),
        ((["b", "B", "a"],), [PAD, UNK, "B", "a", "b"],
         "all counts tie; in Python string order uppercase comes first ('B' < 'a' < 'b')."),
        ((["a", "b", "a", "c", "c", "a"], 2), [PAD, UNK, "a", "c"],
         "min_freq=2 keeps a (3) and c (2, equal to min_freq) and drops b (1)."),
        ((["<unk>", "a", "<unk>", "<pad>"],), [PAD, UNK, "a"],
         "special tokens found in the input keep their reserved slots and are not repeated."),
        (([], 1), [PAD, UNK], "an empty input still has the two special tokens."),
    ]
    for args, expected, why in examples:
        shown = f"build_vocab({', '.join(map(repr, args))})"
        expect_example(call(build_vocab, shown, *args), expected, shown, why, VOCAB_HINTS, args)
    passed("build_vocab", len(examples))


def check_encode_decode(encode: Callable, decode: Callable) -> None:
    """A five-word vocabulary: known words, unknown words, empty input, round trips."""
    vocab = [PAD, UNK, "the", "cat", "sat"]
    tokens = ["the", "cat", "sat", "on", "the", "mat"]
    shown = f"encode({tokens}, vocab={vocab})"
    expect_example(call(encode, shown, tokens, vocab), [2, 3, 4, 1, 2, 1], shown,
                   "'on' and 'mat' are not in the vocabulary: they become 1, the index of '<unk>'.",
                   ENCODE_HINTS, (tokens, vocab))
    expect_example(call(encode, "encode([], vocab)", [], vocab), [], "encode([], vocab)")
    ids = [2, 3, 4, 1, 0]
    shown = f"decode({ids}, vocab={vocab})"
    expect_example(call(decode, shown, ids, vocab), ["the", "cat", "sat", UNK, PAD], shown,
                   "decode looks each id up: vocab[id].", (DECODE_JOINED,), (ids, vocab))
    expect_example(call(decode, "decode([], vocab)", [], vocab), [], "decode([], vocab)")
    for tokens, expected in ((["sat", "cat", "the"], ["sat", "cat", "the"]),
                             (["the", "dog", "sat"], ["the", UNK, "sat"])):
        shown = f"decode(encode({tokens}, vocab), vocab)"
        got = call(lambda t: decode(encode(t, vocab), vocab), shown, tokens)
        expect_example(got, expected, shown,
                       "a round trip gives back the tokens, with unknown ones replaced by '<unk>'.",
                       (ROUND_TRIP_UNK, ENCODE_DROPPED, DECODE_JOINED), (tokens, vocab))
    passed("encode/decode", 6)


def check_one_hot(one_hot: Callable) -> None:
    """A 2x2 batch with V=3 written out in full, then shape, dtype and device rules."""
    count = 0
    ids = torch.tensor([[0, 2], [1, 1]])
    batch = torch.tensor([[[1., 0., 0.], [0., 0., 1.]],
                          [[0., 1., 0.], [0., 1., 0.]]])
    shown = "one_hot(torch.tensor([[0, 2], [1, 1]]), 3)"
    expect_example(call(one_hot, shown, ids, 3), batch, shown,
                   "row [b, t] is all zeros except a 1.0 in column ids[b, t].", ONE_HOT_HINTS, (ids, 3))
    count += 1
    for ids, num_classes, expected, why in (
            (torch.tensor([0, 1]), 4, torch.tensor([[1., 0., 0., 0.], [0., 1., 0., 0.]]),
             "the last dimension is num_classes (4), not max(ids) + 1."),
            (torch.tensor(1), 2, torch.tensor([0., 1.]),
             "a single id (a 0-d tensor) gives a vector of shape (num_classes,)."),
            (torch.tensor([[[2]]]), 3, torch.tensor([[[[0., 0., 1.]]]]),
             "size-1 dimensions are kept: (1, 1, 1) -> (1, 1, 1, 3).")):
        shown = f"one_hot(torch.tensor({ids.tolist()}), {num_classes})"
        expect_example(call(one_hot, shown, ids, num_classes), expected, shown, why,
                       ONE_HOT_HINTS, (ids, num_classes))
        count += 1
    ids = torch.tensor([[0, 2], [1, 1]], device="meta")  # shapes and devices only, no values
    shown = "one_hot(torch.tensor([[0, 2], [1, 1]], device='meta'), 3)"
    try:
        got = one_hot(ids, 3)
    except Exception as error:
        if isinstance(error, NotImplementedError) and "meta" not in str(error):
            call(one_hot, shown, ids, 3)  # the exercise is not written yet: say so
        raise CheckFailed(
            f"{shown} raised {type(error).__name__}: {error}\nHint: this check passes ids on "
            "PyTorch's 'meta' device (shapes, no values) to see that your result follows "
            f"ids.device without a GPU. {ONE_HOT_DEVICE.text} Avoid .cpu(), .item() and "
            ".tolist() on ids.") from error
    if not isinstance(got, torch.Tensor) or got.device.type != "meta":
        raise CheckFailed(f"{shown}: expected a tensor on device 'meta' (the device of ids), got "
                          f"{got.device if isinstance(got, torch.Tensor) else type(got).__name__}\n"
                          f"Hint: {ONE_HOT_DEVICE.text}")
    if got.shape != (2, 2, 3) or got.dtype != torch.float32:
        raise CheckFailed(f"{shown}: expected shape (2, 2, 3) and dtype float32, got "
                          f"{tuple(got.shape)} {got.dtype}")
    count += 1
    if torch.cuda.is_available():  # the grader may run your code on a GPU
        ids = torch.tensor([[0, 2], [1, 1]], device="cuda")
        shown = "one_hot(torch.tensor([[0, 2], [1, 1]], device='cuda'), 3)"
        expect_example(call(one_hot, shown, ids, 3), batch.cuda(), shown,
                       "the result lives on the same device as ids.", ONE_HOT_HINTS, (ids, 3))
        count += 1
    passed("one_hot", count)


def check_embed(embed: Callable) -> None:
    """Rows of a small integer-valued W picked by hand, then agreement with nn.Embedding."""
    W = torch.arange(12.).reshape(4, 3)  # row v is [3v, 3v + 1, 3v + 2]
    ids = torch.tensor([[3, 0], [1, 1]])
    expected = torch.tensor([[[9., 10., 11.], [0., 1., 2.]],
                             [[3., 4., 5.], [3., 4., 5.]]])
    shown = "embed(torch.tensor([[3, 0], [1, 1]]), W=torch.arange(12.).reshape(4, 3))"
    expect_example(call(embed, shown, ids, W), expected, shown,
                   "embed(ids, W)[b, t] is row ids[b, t] of W.", EMBED_HINTS, (ids, W))
    W = torch.arange(9.).reshape(3, 3)
    ids = torch.tensor([2, 0])
    shown = "embed(torch.tensor([2, 0]), W=torch.arange(9.).reshape(3, 3))"
    expect_example(call(embed, shown, ids, W), torch.tensor([[6., 7., 8.], [0., 1., 2.]]), shown,
                   "rows of W, not columns: row 2 is [6, 7, 8].", EMBED_HINTS, (ids, W))
    g = torch.Generator().manual_seed(0)
    W = torch.randn(7, 5, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 7, (2, 3, 4), generator=g)
    shown = "embed(<random ids of shape (2, 3, 4)>, <random float64 W of shape (7, 5)>)"
    expect_example(call(embed, shown, ids, W), nn.Embedding.from_pretrained(W)(ids), shown,
                   "the result must equal nn.Embedding.from_pretrained(W)(ids), shape (2, 3, 4, 5), "
                   "dtype float64 like W.", EMBED_HINTS, (ids, W))
    passed("embed", 3)


def check_cosine(cosine_similarity_matrix: Callable) -> None:
    """Four 2-D vectors whose cosines are known by heart, the eps clamp, symmetry, scale invariance."""
    s = 2 ** -0.5
    E = torch.tensor([[1., 0.], [0., 2.], [1., 1.], [0., 0.]])
    expected = torch.tensor([[1., 0., s, 0.],
                             [0., 1., s, 0.],
                             [s, s, 1., 0.],
                             [0., 0., 0., 0.]])
    shown = "cosine_similarity_matrix([[1, 0], [0, 2], [1, 1], [0, 0]])"
    expect_example(call(cosine_similarity_matrix, shown, E), expected, shown,
                   "(1, 0) and (0, 2) are orthogonal (0); (1, 1) is at 45 degrees from both (1/sqrt(2)); "
                   "length does not matter; the zero vector gives 0.", COSINE_HINTS, (E,))
    E = torch.tensor([[0.01, 0.], [0., 1.]])
    shown = "cosine_similarity_matrix([[0.01, 0], [0, 1]], eps=0.1)"
    expect_example(call(cosine_similarity_matrix, shown, E, 0.1), torch.tensor([[0.01, 0.], [0., 1.]]),
                   shown, "the norm 0.01 of row 0 is below eps = 0.1, so row 0 is divided by 0.1, not by "
                   "its norm: cos(E_0, E_0) = (0.01 / 0.1)^2 = 0.01.", COSINE_HINTS + (COSINE_EPS,), (E, 0.1))
    E = torch.tensor([[3., 4.], [4., 3.]], dtype=torch.float64)
    shown = "cosine_similarity_matrix(torch.tensor([[3, 4], [4, 3]], dtype=torch.float64))"
    expect_example(call(cosine_similarity_matrix, shown, E),
                   torch.tensor([[1., 0.96], [0.96, 1.]], dtype=torch.float64), shown,
                   "(3*4 + 4*3) / (5 * 5) = 0.96; the result keeps E's dtype (float64 here).",
                   COSINE_HINTS, (E,))
    g = torch.Generator().manual_seed(0)
    E = torch.randn(6, 4, generator=g)
    scale = torch.rand(6, 1, generator=g) * 9 + 1
    C = call(cosine_similarity_matrix, "cosine_similarity_matrix(<random (6, 4)>)", E)
    if not isinstance(C, torch.Tensor) or C.shape != (6, 6):
        raise CheckFailed(f"cosine_similarity_matrix(<random (6, 4)>): expected a (6, 6) tensor, "
                          f"got {tuple(C.shape) if isinstance(C, torch.Tensor) else type(C).__name__}")
    expect(C, C.T, "the similarity matrix of a random (6, 4) E compared with its transpose",
           ["cos(E_i, E_j) = cos(E_j, E_i): the matrix is symmetric."])
    expect(C.diagonal(), torch.ones(6), "the diagonal for a random (6, 4) E",
           ["every non-zero vector has cosine 1 with itself."])
    expect(call(cosine_similarity_matrix, "cosine_similarity_matrix(E * scale)", E * scale), C,
           "the similarity matrix after scaling each row by a positive number",
           ["cosine similarity ignores lengths: normalise each row by its own norm."])
    passed("cosine_similarity_matrix", 6)


def check_train_bpe(train_bpe: Callable) -> None:
    """Texts short enough to run BPE on paper; each targets one rule of the contract."""
    examples = [
        (("cdab cdab", 1), [(99, 100)],
         "(99, 100) 'cd', (100, 97) 'da' and (97, 98) 'ab' tie at 2: the pair that occurs first "
         "wins, not the smallest pair or the last one seen."),
        (("aaabdaaabac", 3), [(97, 97), (256, 97), (257, 98)],
         "'aa' (97, 97) occurs 4 times -> 256; then (256, 97) and (97, 98) tie at 2 and (256, 97) "
         "occurs first -> 257; then (257, 98) -> 258."),
        (("aaaaabcbcbc", 1), [(97, 97)],
         "pairs overlap: 'aaaaa' holds (97, 97) four times, beating (98, 99) with three; counted "
         "without overlap it would have only two."),
        (("aaaa", 5), [(97, 97), (256, 256)],
         "[97, 97, 97, 97] -> [256, 256] -> [257]: one id left, no pair, stop early."),
        (("é", 3), [(195, 169)], "BPE works on UTF-8 bytes: 'é' is the two bytes 195, 169."),
        (("", 3), [], "an empty text has no pairs."),
        (("abc", 0), [], "num_merges=0 learns nothing."),
    ]
    for args, expected, why in examples:
        shown = f"train_bpe({', '.join(map(repr, args))})"
        expect_example(call(train_bpe, shown, *args), expected, shown, why, TRAIN_BPE_HINTS, args)
    passed("train_bpe", len(examples))


def check_bpe(bpe_encode: Callable, bpe_decode: Callable) -> None:
    """Encoding with given merges, decoding, and round trips through multi-byte characters."""
    merges = [(97, 97), (256, 97), (257, 98)]  # 256 = 'aa', 257 = 'aaa', 258 = 'aaab'
    encodes = [
        (("aaabdaaabac", merges), [258, 100, 258, 97, 99],
         "with 256 = 'aa', 257 = 'aaa', 258 = 'aaab', the text is 'aaab' 'd' 'aaab' 'a' 'c'."),
        (("aaa", [(97, 97)]), [256, 97], "replace left to right without overlap: 'aa' then 'a'."),
        (("aab", [(97, 98), (97, 97)]), [97, 256],
         "merge 0 (97, 98) goes first and uses up the 'ab'; merge 1 (97, 97) then finds nothing."),
        (("café", [(195, 169)]), [99, 97, 102, 256], "'é' is the bytes 195, 169, merged into 256."),
        (("🙂", [(195, 169), (240, 159), (257, 153)]), [258, 130],
         "'🙂' is the bytes 240, 159, 153, 130; merge 1 makes 257, merge 2 makes 258 "
         "(merge 0 does not occur but still owns 256)."),
        (("", merges), [], "an empty text has no tokens."),
    ]
    for args, expected, why in encodes:
        shown = f"bpe_encode({', '.join(map(repr, args))})"
        expect_example(call(bpe_encode, shown, *args), expected, shown, why, BPE_ENCODE_HINTS, args)
    decodes = [
        (([258, 100, 258, 97, 99], merges), "aaabdaaabac", "258 expands to 257, 98, then to 256, 97, 98, then to the bytes of 'aaab'."),
        (([195, 169], []), "é", "'é' arrives as two tokens; decode all the bytes together."),
        (([99, 195], []), "c\ufffd", "a lone 195 is not valid UTF-8: it becomes '\ufffd' (errors='replace')."),
        (([], merges), "", "no ids, empty text."),
    ]
    for args, expected, why in decodes:
        shown = f"bpe_decode({', '.join(map(repr, args))})"
        expect_example(call(bpe_decode, shown, *args), expected, shown, why, BPE_DECODE_HINTS, args)
    text = "naïve café, 早上好 🙂"
    for merges in ([], [(195, 169), (240, 159), (257, 153), (230, 151)]):
        shown = f"bpe_decode(bpe_encode({text!r}, {merges}), {merges})"
        got = call(lambda t: bpe_decode(bpe_encode(t, merges), merges), shown, text)
        expect_example(got, text, shown, "decoding an encoding gives back the exact text.",
                       BPE_DECODE_HINTS, ([], merges))
    passed("bpe_encode/bpe_decode", len(encodes) + len(decodes) + 2)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

def _shuffled(g: torch.Generator, seq: list) -> list:
    return [seq[i] for i in torch.randperm(len(seq), generator=g).tolist()]


def _words(g: torch.Generator, n: int, alphabet: str, lo: int = 1, hi: int = 5,
           avoid: tuple[str, ...] = ()) -> list[str]:
    """``n`` distinct random words over ``alphabet`` with lengths in [lo, hi)."""
    words: list[str] = []
    while len(words) < n:
        word = "".join(pick(g, alphabet) for _ in range(randint(g, lo, hi)))
        if word not in words and word not in avoid:
            words.append(word)
    return words


def _stream(g: torch.Generator, words: list[str], lo: int, hi: int) -> list[str]:
    """Each word repeated a random number of times in [lo, hi), shuffled."""
    return _shuffled(g, [w for w in words for _ in range(randint(g, lo, hi))])


def _vocab_random(g):
    return (_stream(g, _words(g, randint(g, 10, 17), "abcdefgh"), 1, 5),)


def _vocab_min_freq(g):
    return _stream(g, _words(g, randint(g, 10, 17), "abcdefgh"), 1, 6), randint(g, 2, 4)


def _vocab_specials(g):
    tokens = _stream(g, _words(g, randint(g, 4, 8), "abcde"), 1, 4)
    tokens += [UNK] * randint(g, 5, 8) + [PAD] * randint(g, 4, 7)  # more frequent than any word
    return _shuffled(g, tokens), 1


def _vocab_all_rare(g):
    return _stream(g, _words(g, randint(g, 3, 9), "abcdef"), 1, 3), 3


def _vocab_unicode(g):
    return _stream(g, _words(g, randint(g, 10, 15), "aAbBéÉ早z", 1, 3), 1, 3), 1


def _vocab_tiny(g):
    return [pick(g, ["x", "é", "早"])] * randint(g, 0, 3), randint(g, 1, 3)


def _vocabulary(g, n, alphabet="abcdefg"):
    """A vocabulary in build_vocab's layout (specials first) and words that are not in it."""
    words = _words(g, n + 4, alphabet, 1, 4)
    return [PAD, UNK] + _shuffled(g, words[:n]), words[n:]


def _encode_args(g):
    vocab, unknown = _vocabulary(g, randint(g, 5, 12))
    tokens = [pick(g, vocab[2:] + unknown) for _ in range(randint(g, 8, 20))]
    return tokens, vocab


def _encode_specials_args(g):
    vocab, unknown = _vocabulary(g, randint(g, 1, 4), "éa早")
    return _shuffled(g, [PAD, UNK, *vocab[2:], *unknown, unknown[0]]), vocab


def _decode_args(g):
    vocab, _ = _vocabulary(g, randint(g, 4, 10))
    return torch.randint(0, len(vocab), (randint(g, 1, 15),), generator=g).tolist(), vocab


def _ids(g, shape, V, hit_ends=False):
    ids = torch.randint(0, V, shape, generator=g)
    if hit_ends and ids.numel() >= 2:
        ids.view(-1)[:2] = torch.tensor([V - 1, 0])  # both ends of the range
    return ids


def _one_hot_1d(g):
    V = randint(g, 4, 20)
    return _ids(g, (randint(g, 4, 12),), V, hit_ends=True), V


def _one_hot_2d(g):
    V = randint(g, 6, 16)
    return _ids(g, (randint(g, 2, 5), randint(g, 2, 7)), V - 3), V  # ids stay below V - 3


def _one_hot_3d(g):
    V = randint(g, 3, 9)
    return _ids(g, (randint(g, 2, 4), randint(g, 2, 4), randint(g, 2, 5)), V, hit_ends=True), V


def _one_hot_size_one(g):
    V = randint(g, 1, 4)
    return _ids(g, (1, 1, 1), V), V


def _one_hot_scalar(g):
    V = randint(g, 2, 10)
    return _ids(g, (), V), V


def _embed_args(g, ids_shape, V, d, dtype=torch.float32):
    return torch.randint(0, V, ids_shape, generator=g), torch.randn(V, d, generator=g, dtype=dtype)


def _cosine_random(g):
    N = randint(g, 3, 9)
    return (torch.randn(N, N + randint(g, 1, 4), generator=g),)  # d != N


def _cosine_zero_rows(g):
    E = torch.randn(randint(g, 4, 8), randint(g, 2, 5), generator=g)
    E[torch.randperm(E.shape[0], generator=g)[:2]] = 0
    return (E,)


def _cosine_parallel(g):
    base = torch.randn(3, randint(g, 2, 6), generator=g, dtype=torch.float64)
    factors = torch.tensor([2.0, -0.5, 3.0], dtype=torch.float64)[:, None]
    return (torch.cat([base, base * factors]),)  # rows i and i + 3 at cosine +-1


def _cosine_single_row(g):
    return (torch.randn(1, randint(g, 1, 5), generator=g),)


def _cosine_one_dim(g):
    E = torch.randn(randint(g, 4, 8), 1, generator=g)
    E[0] = 0
    return (E,)


def _cosine_large_eps(g):
    E = torch.randn(6, 3, generator=g)
    E[:3] *= 1e-3  # norms far below eps = 0.1: they are divided by eps, not their own norm
    return E, 0.1


def _text(g, alphabet, lo, hi):
    return "".join(pick(g, alphabet) for _ in range(randint(g, lo, hi)))


def _bpe_words(g):
    words = _words(g, randint(g, 4, 8), "abcde", 2, 6)
    return " ".join(pick(g, words) for _ in range(randint(g, 10, 25))), randint(g, 6, 13)


def _bpe_unicode(g):
    return _text(g, "aé早🙂 ", 15, 35), randint(g, 5, 10)


def _bpe_ties(g):
    letters = [chr(97 + i) for i in torch.randperm(8, generator=g).tolist()[:randint(g, 4, 7)]]
    if letters[0] == min(letters[:-1]):  # make "first occurring" and "smallest" disagree
        letters[0], letters[1] = letters[1], letters[0]
    return "".join(letters) * randint(g, 3, 6), randint(g, 3, 6)


def _bpe_overlap(g):
    c, x, y = (chr(97 + i) for i in torch.randperm(6, generator=g).tolist()[:3])
    r = randint(g, 6, 8)  # a run of r letters holds r - 1 overlapping pairs but only r // 2 disjoint ones
    parts = [c * r] + [x + y] * (r // 2 + 1)  # (x, y) beats the run only if overlaps are dropped
    return " ".join(_shuffled(g, parts)), randint(g, 4, 7)


def _bpe_run(g):
    return "a" * randint(g, 5, 13), 10  # merges until a single id is left, then stop early


def _bpe_one_char(g):
    return pick(g, ["a", "é", "早", "🙂"]), randint(g, 1, 6)


def _merges(g, data: bytes, n: int,
            first: tuple[tuple[int, int], ...] = ()) -> list[tuple[int, int]]:
    """``first`` then more distinct merges, up to ``n`` in all, well formed like a trained
    tokenizer's: merge k only joins ids that exist before it (bytes, or 256 .. 256 + k - 1)."""
    merges = list(first)
    pool = sorted(set(data) | {b for m in merges for b in m if b < 256}) + [
        256 + k for k in range(len(merges))]
    while len(merges) < n:
        if len(data) > 1 and randint(g, 0, 2) == 0:
            i = randint(g, 0, len(data) - 1)
            pair = (data[i], data[i + 1])  # a byte pair of the text
        else:
            pair = (pick(g, pool), pick(g, pool))  # may build on earlier merges
        if pair not in merges:
            merges.append(pair)
            pool.append(256 + len(merges) - 1)
    return merges


def _spelled_words(g):
    """Merges that build each word left to right, so every merge applies."""
    words = _words(g, randint(g, 2, 4), "abcdé早", 3, 6)
    merges: list[tuple[int, int]] = []
    for word in words:
        data = word.encode("utf-8")
        left = data[0]
        for byte in data[1:]:
            if (left, byte) not in merges:
                merges.append((left, byte))
            left = 256 + merges.index((left, byte))
    return " ".join(pick(g, words) for _ in range(randint(g, 4, 9))), merges


def _bpe_encode_runs(g):
    text = " ".join("a" * randint(g, 1, 9) for _ in range(randint(g, 3, 7))) + " b"
    return text, _merges(g, b"a ab", randint(g, 4, 7), first=((97, 97),))


def _bpe_encode_random(g):
    text = _text(g, "ab é早🙂", 20, 40)
    other = _text(g, "abc é🙂", 20, 40)  # merges "learned" on another text: some never apply
    return text, _merges(g, other.encode("utf-8"), randint(g, 6, 11))


def _bpe_decode_random(g):
    data = _text(g, "aé早🙂 ", 10, 20).encode("utf-8")
    merges = _merges(g, data, randint(g, 4, 9))
    pool = sorted(set(data)) + [256 + k for k in range(len(merges))]
    return [pick(g, pool) for _ in range(randint(g, 8, 25))], merges


def _bpe_decode_any_byte(g):
    """Every byte value can be an id, 0 and 255 too (text's UTF-8 never holds 0xFF)."""
    ids = [randint(g, 0, 256) for _ in range(randint(g, 6, 14))]
    for byte in (0, 255):
        ids.insert(randint(g, 0, len(ids) + 1), byte)
    return ids, _merges(g, bytes(ids), 3)


def _bpe_encode_no_merges(g):
    return _text(g, "ab é早🙂", 5, 15), []


def _bpe_decode_bytes(g):
    text = _text(g, "aé早🙂 ", 5, 15)
    return list(text.encode("utf-8")), _merges(g, text.encode("utf-8"), 3)


def _bpe_round_trip(g):
    text = _text(g, "héllo wörld 早上好 🙂", 15, 40)
    return text, _merges(g, text.encode("utf-8"), randint(g, 5, 12))


CASES: dict[str, list[Case]] = {
    "test_build_vocab": [
        Case("lambda tokens: build_vocab(tokens)", _vocab_random,
             "10-16 random words, counts 1-4 (many ties), default min_freq", VOCAB_HINTS),
        Case("build_vocab", _vocab_min_freq, "counts 1-5 with min_freq 2 or 3", VOCAB_HINTS),
        Case("build_vocab", _vocab_specials,
             "'<unk>' and '<pad>' in the input, more frequent than any word", VOCAB_HINTS),
        Case("build_vocab", _vocab_all_rare, "every token below min_freq=3", VOCAB_HINTS),
        Case("build_vocab", _vocab_unicode,
             "mixed-case and non-ASCII words with tied counts (Python string order)", VOCAB_HINTS),
        Case("build_vocab", _vocab_tiny, "empty input or one token repeated", VOCAB_HINTS),
    ],
    "test_encode_decode": [
        Case("encode", _encode_args, "encode: random vocabulary, some unknown tokens", ENCODE_HINTS),
        Case("encode", _encode_specials_args,
             "encode: tokens '<pad>', '<unk>', non-ASCII and unknown words", ENCODE_HINTS),
        Case("decode", _decode_args, "decode: random ids", (DECODE_JOINED,)),
        Case("lambda tokens, vocab: decode(encode(tokens, vocab), vocab)", _encode_args,
             "round trip: unknown tokens come back as '<unk>'",
             (ROUND_TRIP_UNK, ENCODE_DROPPED, DECODE_JOINED)),
    ],
    "test_one_hot": [
        Case("one_hot", _one_hot_1d, "1-D ids hitting 0 and V - 1", ONE_HOT_HINTS),
        Case("one_hot", _one_hot_2d, "2-D (B, T) ids, largest id below V - 3", ONE_HOT_HINTS),
        Case("one_hot", _one_hot_3d, "3-D ids", ONE_HOT_HINTS),
        Case("one_hot", _one_hot_size_one, "shape (1, 1, 1), V of 1 to 3", ONE_HOT_HINTS),
        Case("one_hot", _one_hot_scalar, "a 0-d id", ONE_HOT_HINTS),
    ],
    "test_embed": [
        Case("embed", lambda g: _embed_args(g, (randint(g, 2, 5), randint(g, 2, 7)), randint(g, 5, 20),
                                            randint(g, 2, 5)),
             "(B, T) ids, float32 W with V > d", EMBED_HINTS),
        Case("embed", lambda g: _embed_args(g, (randint(g, 1, 10),), randint(g, 2, 8), randint(g, 9, 12),
                                            torch.float64),
             "1-D ids, float64 W with d > V", EMBED_HINTS),
        Case("embed", lambda g: _embed_args(g, (1, randint(g, 2, 6), 1), randint(g, 3, 9), randint(g, 1, 4)),
             "ids of shape (1, T, 1), d down to 1", EMBED_HINTS),
        Case("embed", lambda g: _embed_args(g, (randint(g, 2, 6), 3), *[randint(g, 4, 8)] * 2),
             "square W (V == d)", EMBED_HINTS),
        Case("embed", lambda g: _embed_args(g, (), randint(g, 2, 8), randint(g, 2, 6)),
             "a 0-d id", EMBED_HINTS),
    ],
    "test_cosine": [
        Case("cosine_similarity_matrix", _cosine_random, "random (N, d) float32, N != d",
             COSINE_HINTS),
        Case("cosine_similarity_matrix", _cosine_zero_rows, "two zero rows", COSINE_HINTS),
        Case("cosine_similarity_matrix", _cosine_parallel,
             "float64 rows with scaled and negated copies (cosine +-1)", COSINE_HINTS),
        Case("cosine_similarity_matrix", _cosine_single_row, "a single row (N = 1)", COSINE_HINTS),
        Case("cosine_similarity_matrix", _cosine_one_dim, "d = 1 with a zero row", COSINE_HINTS),
        Case("cosine_similarity_matrix", _cosine_large_eps,
             "eps = 0.1 with rows of norm ~1e-3", (*COSINE_HINTS, COSINE_EPS)),
    ],
    "test_train_bpe": [
        Case("train_bpe", _bpe_words, "repeated random words, 6-12 merges", TRAIN_BPE_HINTS),
        Case("train_bpe", _bpe_unicode, "random text of a, é, 早, 🙂 and spaces", TRAIN_BPE_HINTS),
        Case("train_bpe", _bpe_ties,
             "a repeated word: every first choice is a tie, first occurrence != smallest pair",
             TRAIN_BPE_HINTS),
        Case("train_bpe", _bpe_overlap,
             "a run of one letter wins only when overlapping pairs are counted", TRAIN_BPE_HINTS),
        Case("train_bpe", _bpe_run, "'a' * n with 10 merges: stops early", TRAIN_BPE_HINTS),
        Case("train_bpe", _bpe_one_char, "a single character, ASCII or multi-byte",
             TRAIN_BPE_HINTS),
    ],
    "test_bpe_round_trip": [
        Case("bpe_encode", _spelled_words, "encode: merges that spell out each word",
             BPE_ENCODE_HINTS),
        Case("bpe_encode", _bpe_encode_runs, "encode: runs of 'a' (left to right, no overlap)",
             BPE_ENCODE_HINTS),
        Case("bpe_encode", _bpe_encode_random,
             "encode: multi-byte text, merges learned on another text", BPE_ENCODE_HINTS),
        Case("bpe_decode", _bpe_decode_random, "decode: random ids, merged and raw bytes",
             BPE_DECODE_HINTS),
        Case("bpe_decode", _bpe_decode_bytes, "decode: multi-byte characters split into bytes",
             BPE_DECODE_HINTS),
        Case("bpe_decode", _bpe_decode_any_byte, "decode: any byte from 0 to 255 (invalid UTF-8 becomes U+FFFD)",
             BPE_DECODE_HINTS),
        Case("bpe_encode", _bpe_encode_no_merges, "encode: no merges at all (the UTF-8 bytes, as a list)",
             BPE_ENCODE_HINTS),
        Case("lambda text, merges: bpe_decode(bpe_encode(text, merges), merges)", _bpe_round_trip,
             "round trip of text with é, ö, 早 and 🙂", BPE_DECODE_HINTS),
    ],
}
