"""Chapter 12 — sets and ranking: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook on examples small enough to work out by
hand, on PyTorch's own equivalents where one exists (``F.cross_entropy`` with probability
targets for the listwise loss, ``nn.MultiheadAttention`` called directly for the induced
attention), and on properties any right answer has: a batch gives each list's own result, a
shuffled list gives shuffled scores (permutation equivariance), and padding a list does not
change its real candidates' results. ``CASES`` is what the grader runs. Conventions (the exercise
text states them too):

* a list's candidates run along the last dimension; ``mask`` is True at a real candidate;
* NDCG@k uses the gain 2^rel - 1, the discount 1/log2(rank + 1) with ranks from 1, breaks ties in
  the scores by position (stable sort), and is 0 for a list whose relevance is all 0;
* the pairwise loss is the mean over the batch's pairs (0 when there is none), the listwise loss
  the mean over its lists.

The typical mistakes and their hints are the chapter's catalogue,
``solutions/12-ranking/mistakes.yaml``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..checks import call, expect_example, param_shapes, randint, randn, seeded
from ..spec import Case, CheckFailed, expect, passed


def _t(values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# ----------------------------------------------------------------------------------------
# Public checks (run in the student's notebook)
# ----------------------------------------------------------------------------------------

def check_ndcg_at_k(ndcg_at_k: Callable) -> None:
    """The worked example, k = 1, k > n, ties, all-zero relevance, batches and dtypes."""
    ln3 = math.log2(3.0)
    examples = [
        (([3.0, 2.0, 1.0], [2.0, 0.0, 1.0], 3), (3 + 0.5) / (3 + 1 / ln3),
         "gains 2^rel - 1 = [3, 0, 1] in score order: DCG = 3/log2(2) + 0/log2(3) + 1/log2(4) = 3.5; "
         "the best order [3, 1, 0] gives IDCG = 3 + 1/log2(3) = 3.631; NDCG@3 = 0.9639."),
        (([3.0, 2.0, 1.0], [2.0, 0.0, 1.0], 1), 1.0,
         "k = 1 keeps rank 1 only: DCG = IDCG = 3, NDCG@1 = 1."),
        (([3.0, 2.0, 1.0], [2.0, 0.0, 1.0], 10), (3 + 0.5) / (3 + 1 / ln3),
         "k = 10 is larger than the list: all 3 ranks count, as for k = 3."),
        (([0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 3.0], 2), 1.0,
         "the highest score (3.0, last in the list) has rank 1, and it is the only relevant candidate."),
        (([1.0, 1.0, 0.0], [0.0, 2.0, 1.0], 3), (3 / ln3 + 0.5) / (3 + 1 / ln3),
         "the scores tie: the candidate first in the list ranks first, so the gains in rank order are "
         "[0, 3, 1]: DCG = 3/log2(3) + 1/2 = 2.393, IDCG = 3.631, NDCG = 0.6590."),
        (([0.5, 0.2, 0.9], [0.0, 0.0, 0.0], 3), 0.0,
         "nothing is relevant: IDCG = 0, and this exercise defines NDCG as 0 (not 0/0 = NaN)."),
        (([2.0, 1.0, 0.0], [1.0, 2.0, 3.0], 3), (1 + 3 / ln3 + 7 / 2) / (7 + 3 / ln3 + 1 / 2),
         "grades 1, 2, 3 have gains 1, 3, 7 (2^rel - 1): DCG = 1 + 3/log2(3) + 7/2, "
         "IDCG = 7 + 3/log2(3) + 1/2, NDCG = 0.7329."),
    ]
    for (scores, rel, k), expected, why in examples:
        shown = f"ndcg_at_k(torch.tensor({scores}), torch.tensor({rel}), k={k})"
        expect_example(call(ndcg_at_k, shown, _t(scores), _t(rel), k), _t(expected), shown, why)
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    rel = torch.randint(0, 4, (2, 3, 6), generator=g).double()
    rel[1, 2] = 0.0
    shown = "ndcg_at_k(<random float64 (2, 3, 6) scores and grades 0-3>, k=4)"
    got = call(ndcg_at_k, shown, scores, rel, 4)
    each = torch.stack([torch.stack([call(ndcg_at_k, shown + " list by list", scores[i, j], rel[i, j], 4)
                                     for j in range(3)]) for i in range(2)])
    expect_example(got, each, shown, "a batch of lists gives each list's own NDCG, shape (2, 3), in float64.")
    passed("ndcg_at_k", len(examples) + 1)


def check_pairwise_loss(pairwise_loss: Callable) -> None:
    """Single pairs by hand, ties, padding, large scores, a mean over several pairs and lists."""
    sp = F.softplus
    examples = [
        (([[2.0, 0.0]], [[1.0, 0.0]], None), math.log1p(math.exp(-2)),
         "one pair, the more relevant candidate scored higher by 2: log(1 + e^-2) = 0.1269."),
        (([[2.0, 0.0]], [[0.0, 1.0]], None), math.log1p(math.exp(2)),
         "one pair, the more relevant candidate scored LOWER by 2: log(1 + e^2) = 2.1269."),
        (([[2.0, 0.0]], [[1.0, 1.0]], None), 0.0, "equal relevance makes no pair: the loss is 0."),
        (([[1.0, 0.0, 0.0]], [[2.0, 1.0, 0.0]], None),
         float((sp(_t(-1.0)) * 2 + sp(_t(0.0))) / 3),
         "three pairs (0, 1), (0, 2), (1, 2) with differences 1, 1, 0: the mean of "
         "log(1 + e^-1), log(1 + e^-1) and log 2 is 0.4399."),
        (([[2.0, 0.0, 5.0]], [[1.0, 0.0, 2.0]], [[True, True, False]]), math.log1p(math.exp(-2)),
         "candidate 2 is padding: only the pair (0, 1) counts."),
        (([[100.0, -100.0]], [[0.0, 1.0]], None), 200.0,
         "log(1 + e^200) = 200 (to float precision): exp(200) overflows, softplus does not."),
        (([[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 2.0]], [[True, True], [True, True]]),
         float((sp(_t(-1.0)) + sp(_t(0.0))) / 2),
         "two lists with one pair each: the mean over the batch's 2 pairs, (log(1 + e^-1) + log 2) / 2."),
    ]
    for (scores, rel, mask), expected, why in examples:
        shown = f"pairwise_loss(torch.tensor({scores}), torch.tensor({rel})" + (
            f", mask=torch.tensor({mask}))" if mask is not None else ")")
        args = (_t(scores), _t(rel)) + ((torch.tensor(mask),) if mask is not None else ())
        expect_example(call(pairwise_loss, shown, *args), _t(expected), shown, why)
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, generator=g, dtype=torch.float64)
    r = torch.randint(0, 3, (3, 5), generator=g).double()
    shown = "pairwise_loss(<random float64 (3, 5)>, <grades 0-2>)"
    loss = call(pairwise_loss, shown, s, r)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or loss.dtype != torch.float64:
        raise CheckFailed(f"{shown}: return a 0-dimensional tensor in the scores' dtype (float64 here); got "
                          f"{type(loss).__name__} {getattr(loss, 'shape', '')} {getattr(loss, 'dtype', '')}")
    passed("pairwise_loss", len(examples) + 1)


def check_listwise_loss(listwise_loss: Callable) -> None:
    """The hand example, F.cross_entropy with probability targets, padding, large scores."""
    ln3 = math.log(3.0)
    shown = "listwise_loss(torch.tensor([[0., ln 3]]), torch.tensor([[0., 0.]]))"
    expect_example(call(listwise_loss, shown, _t([[0.0, ln3]]), _t([[0.0, 0.0]])),
                   _t(-(math.log(0.25) + math.log(0.75)) / 2), shown,
                   "P = [1/2, 1/2], Q = [1/4, 3/4]: -(ln(1/4) + ln(3/4)) / 2 = 0.8370.")
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, generator=g, dtype=torch.float64) * 2
    r = torch.randint(0, 3, (3, 5), generator=g).double()
    shown = "listwise_loss(<random float64 (3, 5) scores>, <grades 0-2>)"
    expect_example(call(listwise_loss, shown, s, r), F.cross_entropy(s, torch.softmax(r, -1)), shown,
                   "without padding this is F.cross_entropy(scores, torch.softmax(relevance, -1)): the "
                   "mean over the 3 lists of -sum_i P_i log Q_i.")
    mask = torch.tensor([[True] * 5, [True, True, True, False, False], [True, True, False, False, False]])
    expected = torch.stack([F.cross_entropy(s[i, :n], torch.softmax(r[i, :n], -1)) for i, n in enumerate((5, 3, 2))]).mean()
    shown = "listwise_loss(<the same scores and grades>, mask=<lengths 5, 3, 2>)"
    expect_example(call(listwise_loss, shown, s, r, mask), expected, shown,
                   "each list's cross-entropy over its real candidates only (as if the padding were cut "
                   "off), then the mean over the 3 lists.")
    big = _t([[100.0, -100.0, 0.0]])
    shown = "listwise_loss(torch.tensor([[100., -100., 0.]]), torch.tensor([[1., 1., 1.]]))"
    expect_example(call(listwise_loss, shown, big, _t([[1.0, 1.0, 1.0]])),
                   F.cross_entropy(big, torch.full((1, 3), 1 / 3)), shown,
                   "large scores: log Q of the score -100 is about -200, finite; log(softmax) would give "
                   "log 0 = -inf.")
    passed("listwise_loss", 4)


def _padded_vs_cut(module, x, mask, lengths, what: str, scores: bool) -> None:
    """Each list's real outputs with padding equal the outputs of the list cut to its length."""
    got = call(module, f"{what}(<random (3, 6) lists, lengths {lengths}>)", x, mask)
    for i, n in enumerate(lengths):
        alone = call(module, f"{what}(<list {i} cut to its {n} real candidates>)", x[i:i + 1, :n],
                     torch.ones(1, n, dtype=torch.bool))
        shown = f"{what}(<random (3, 6) lists, lengths {lengths}>), list {i}'s real candidates"
        expect_example(got[i, :n] if isinstance(got, torch.Tensor) else got, alone[0], shown,
                       "padding must not change a real candidate's result: compared with the same list "
                       "cut to its real candidates, with no padding at all (key_padding_mask is True "
                       "where a key is IGNORED: pass ~mask).")
        if scores and n < x.shape[1]:
            shown = f"{what}(<random (3, 6) lists, lengths {lengths}>), list {i}'s padded scores"
            expect_example(got[i, n:], torch.full((x.shape[1] - n,), -math.inf, dtype=x.dtype), shown,
                           "padded candidates get the score -inf, so that they rank last.")


def _equivariant(module, x, mask, what: str) -> None:
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    got = call(module, f"{what}(<random (3, 6) lists>)", x, mask)
    shuffled = call(module, f"{what}(<the same lists, candidates shuffled by {perm.tolist()}>)",
                    x[:, perm], mask[:, perm])
    shown = f"{what}(<the lists shuffled by {perm.tolist()}>) against {what}(<the lists>) shuffled the same way"
    expect_example(shuffled, got[:, perm] if isinstance(got, torch.Tensor) else got, shown,
                   "permutation equivariance: with no positions, shuffling the candidates only shuffles "
                   "the results the same way.")


def _random_weights(module, g) -> None:
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)


def check_set_ranker(SetRanker: Callable) -> None:
    """Parameter shapes, a hand case (attention output zero), equivariance and padding."""
    with seeded(0):
        module = call(SetRanker, "SetRanker(5, 8, 2)", 5, 8, 2)
    expect(param_shapes(module),
           {"embed.weight": (8, 5), "embed.bias": (8,), "attn.in_proj_weight": (24, 8), "attn.in_proj_bias": (24,),
            "attn.out_proj.weight": (8, 8), "attn.out_proj.bias": (8,), "score.weight": (1, 8), "score.bias": (1,)},
           "SetRanker(5, 8, 2)'s parameters (name -> shape)",
           ["embed = nn.Linear(d_in, d_model), attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True), "
            "score = nn.Linear(d_model, 1)."])
    module = module.double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 5, generator=g, dtype=torch.float64)
    lengths = (6, 4, 2)
    mask = torch.arange(6) < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        _random_weights(module, g)
        module.attn.out_proj.weight.zero_()
        module.attn.out_proj.bias.zero_()
        shown = "SetRanker(5, 8, 2) with attn.out_proj set to 0, on a full random (3, 6, 5) x"
        full = torch.ones(3, 6, dtype=torch.bool)
        expect_example(call(module, shown, x, full), module.score(torch.relu(module.embed(x))).squeeze(-1), shown,
                       "with the attention's output projection at 0, context = 0 and h = embed(x): the "
                       "scores are score(relu(embed(x))), each candidate on its own.")
        _random_weights(module, g)
        _equivariant(module, x, full, "SetRanker")
        _padded_vs_cut(module, x, mask, lengths, "SetRanker", scores=True)
        _equivariant(module, x, mask, "SetRanker")
    passed("SetRanker", 4)


def check_induced_set_attention(InducedSetAttention: Callable) -> None:
    """Parameter shapes, hand cases through nn.MultiheadAttention itself, equivariance, padding."""
    with seeded(0):
        module = call(InducedSetAttention, "InducedSetAttention(8, 2, 3)", 8, 2, 3)
    expect(param_shapes(module),
           {"inducing": (3, 8), "attn1.in_proj_weight": (24, 8), "attn1.in_proj_bias": (24,),
            "attn1.out_proj.weight": (8, 8), "attn1.out_proj.bias": (8,), "attn2.in_proj_weight": (24, 8),
            "attn2.in_proj_bias": (24,), "attn2.out_proj.weight": (8, 8), "attn2.out_proj.bias": (8,)},
           "InducedSetAttention(8, 2, 3)'s parameters (name -> shape)",
           ["inducing = nn.Parameter of shape (m, d_model); attn1 and attn2 = "
            "nn.MultiheadAttention(d_model, n_heads, batch_first=True)."])
    module = module.double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 8, generator=g, dtype=torch.float64)
    full = torch.ones(3, 6, dtype=torch.bool)
    lengths = (6, 4, 2)
    mask = torch.arange(6) < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        _random_weights(module, g)
        module.attn2.out_proj.weight.zero_()
        module.attn2.out_proj.bias.zero_()
        shown = "InducedSetAttention(8, 2, 3) with attn2.out_proj set to 0, on a random (3, 6, 8) x"
        expect_example(call(module, shown, x, full), x, shown,
                       "with the second attention's output projection at 0 the block adds nothing: the "
                       "output is x itself (the residual x + attn2(...)).")
        _random_weights(module, g)
        module.attn1.out_proj.weight.zero_()
        module.attn1.out_proj.bias.zero_()
        points = module.inducing.expand(3, -1, -1)
        shown = "InducedSetAttention(8, 2, 3) with attn1.out_proj set to 0, on a random (3, 6, 8) x"
        expect_example(call(module, shown, x, full), x + module.attn2(x, points, points, need_weights=False)[0],
                       shown, "with the first attention's output projection at 0, H = I + 0 = the inducing "
                       "points, and the output is x + attn2(x, I, I)[0], computed here by your attn2 itself.")
        _random_weights(module, g)
        _equivariant(module, x, full, "InducedSetAttention")
        _padded_vs_cut(module, x, mask, lengths, "InducedSetAttention", scores=False)
    passed("InducedSetAttention", 5)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

def _lengths(g, B: int, n: int, full_first: bool = True) -> torch.Tensor:
    """List lengths in [2, n], one full list and one padded (when B >= 2 and n > 2)."""
    lengths = torch.randint(2, n + 1, (B,), generator=g)
    if full_first:
        lengths[0] = n
    if B > 1 and n > 2:
        lengths[1] = randint(g, 2, n)
    return lengths


def _mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    return torch.arange(n) < lengths[:, None]


def _grades(g, *shape, top: int = 4, dtype=torch.float32) -> torch.Tensor:
    return torch.randint(0, top, shape, generator=g).to(dtype)


def _ndcg_random(g):
    B, n = randint(g, 2, 6), randint(g, 3, 12)
    return randn(g, B, n), _grades(g, B, n), randint(g, 2, n)


def _ndcg_batch_dims(g):
    shape = (randint(g, 2, 4), randint(g, 2, 4), randint(g, 4, 9))
    return randn(g, *shape, dtype=torch.float64), _grades(g, *shape, dtype=torch.float64), randint(g, 1, 4)


def _ndcg_k_large(g):
    B, n = randint(g, 2, 5), randint(g, 2, 7)
    return randn(g, B, n), _grades(g, B, n), n + randint(g, 1, 10)


def _ndcg_ties(g):
    B, n = randint(g, 2, 5), randint(g, 4, 10)
    scores = torch.randint(0, 3, (B, n), generator=g).float()  # many equal scores
    return scores, _grades(g, B, n), randint(g, 2, n + 1)


def _ndcg_long_ties(g):
    """Lists longer than 16 with many tied scores: torch's unstable sort reorders ties there."""
    B, n = randint(g, 2, 4), randint(g, 20, 40)
    return torch.randint(0, 3, (B, n), generator=g).float(), _grades(g, B, n), randint(g, 5, n)


def _ndcg_zero_rows(g):
    B, n = randint(g, 3, 6), randint(g, 3, 9)
    rel = _grades(g, B, n, dtype=torch.float64)
    rel[0] = 0.0  # nothing relevant
    rel[1, 0] = 3.0
    return randn(g, B, n, dtype=torch.float64), rel, randint(g, 1, n + 2)


def _ndcg_k1(g):
    B, n = randint(g, 3, 6), randint(g, 3, 9)
    return randn(g, B, n), _grades(g, B, n), 1


def _pair_args(g, scale=1.0, dtype=torch.float32, padded=True, top=4):
    B, n = randint(g, 2, 5), randint(g, 3, 9)
    scores = randn(g, B, n, dtype=dtype, scale=scale)
    rel = _grades(g, B, n, top=top, dtype=dtype)
    rel[0, 0], rel[0, 1] = 2.0, 0.0  # at least one pair
    if scale > 1:  # that pair far the wrong way round: exp(200) overflows
        scores[0, 0], scores[0, 1] = -100.0, 100.0
    mask = _mask(_lengths(g, B, n), n) if padded else None
    return scores, rel, mask


def _pair_one_pair(g):
    """Exactly one pair in the whole batch (a list of two real candidates, the others' grades all
    equal): the mean over the batch's pairs divides by 1."""
    B, n = randint(g, 2, 5), randint(g, 3, 9)
    rel = torch.full((B, n), float(randint(g, 0, 3)))
    rel[0, 1] = rel[0, 0] + randint(g, 1, 3)
    lengths = _lengths(g, B, n)
    lengths[0] = 2
    return randn(g, B, n), rel, _mask(lengths, n)


def _pair_no_pairs(g):
    B, n = randint(g, 2, 4), randint(g, 2, 6)
    return randn(g, B, n), torch.ones(B, n), None


PAIR_CASES = [
    Case("pairwise_loss", lambda g: _pair_args(g), "random (B, n) lists with padding"),
    Case("pairwise_loss", lambda g: _pair_args(g, dtype=torch.float64, top=3), "float64, grades 0-2, padding"),
    Case("pairwise_loss", lambda g: _pair_args(g, padded=False)[:2], "no mask given"),
    Case("pairwise_loss", lambda g: _pair_args(g, scale=80.0), "scores of size ~100, padding"),
    Case("pairwise_loss", _pair_no_pairs, "all relevance equal: no pair at all"),
    Case("pairwise_loss", _pair_one_pair, "one pair in the whole batch"),
]


def _list_args(g, scale=1.0, dtype=torch.float32, padded=True):
    B, n = randint(g, 2, 6), randint(g, 3, 9)
    mask = _mask(_lengths(g, B, n), n) if padded else None
    scores = randn(g, B, n, dtype=dtype, scale=scale)
    if scale > 1:  # a real candidate 200 below another: its softmax underflows to 0
        scores[0, 0], scores[0, 1] = 100.0, -100.0
    return scores, _grades(g, B, n, dtype=dtype), mask


def _list_single(g):
    n = randint(g, 2, 8)
    return randn(g, 1, n), _grades(g, 1, n)


LIST_CASES = [
    Case("listwise_loss", lambda g: _list_args(g), "random (B, n) lists with padding"),
    Case("listwise_loss", lambda g: _list_args(g, dtype=torch.float64), "float64, padding"),
    Case("listwise_loss", lambda g: _list_args(g, padded=False)[:2], "no mask given"),
    Case("listwise_loss", lambda g: _list_args(g, scale=60.0), "scores of size ~100, padding"),
    Case("listwise_loss", _list_single, "a single list, no mask"),
]


def _ranker_args(g, dtype=torch.float32, padded=True, perm=False):
    d_in, n_heads = randint(g, 2, 7), randint(g, 1, 4)
    d_model = n_heads * randint(g, 2, 5)
    B, n = randint(g, 2, 5), randint(g, 3, 9)
    sd = {"embed.weight": randn(g, d_model, d_in, dtype=dtype, scale=d_in ** -0.5),
          "embed.bias": randn(g, d_model, dtype=dtype, scale=0.1),
          "attn.in_proj_weight": randn(g, 3 * d_model, d_model, dtype=dtype, scale=d_model ** -0.5),
          "attn.in_proj_bias": randn(g, 3 * d_model, dtype=dtype, scale=0.1),
          "attn.out_proj.weight": randn(g, d_model, d_model, dtype=dtype, scale=d_model ** -0.5),
          "attn.out_proj.bias": randn(g, d_model, dtype=dtype, scale=0.1),
          "score.weight": randn(g, 1, d_model, dtype=dtype, scale=d_model ** -0.5),
          "score.bias": randn(g, 1, dtype=dtype, scale=0.1)}
    x = randn(g, B, n, d_in, dtype=dtype)
    mask = _mask(_lengths(g, B, n), n) if padded else torch.ones(B, n, dtype=torch.bool)
    if perm:
        order = torch.randperm(n, generator=g)
        x, mask = x[:, order], mask[:, order]  # padding in the middle of the lists too
    return (d_in, d_model, n_heads), sd, x, mask


RANKER_CALL = ("lambda dims, sd, x, mask: (lambda m: (m.load_state_dict(sd), m(x, mask))[1])"
               "(SetRanker(*dims).to(x.device, x.dtype).requires_grad_(False))")
RANKER_DEFAULT_CALL = ("lambda dims, sd, x, mask: (lambda m: (m.load_state_dict(sd), m(x))[1])"
                       "(SetRanker(*dims).to(x.device, x.dtype).requires_grad_(False))")


def _isa_args(g, dtype=torch.float32, padded=True, perm=False):
    n_heads = randint(g, 1, 4)
    d_model, m = n_heads * randint(g, 2, 5), randint(g, 2, 5)
    B, n = randint(g, 2, 5), randint(g, 3, 10)
    sd = {"inducing": randn(g, m, d_model, dtype=dtype)}
    for a in ("attn1", "attn2"):
        sd.update({f"{a}.in_proj_weight": randn(g, 3 * d_model, d_model, dtype=dtype, scale=d_model ** -0.5),
                   f"{a}.in_proj_bias": randn(g, 3 * d_model, dtype=dtype, scale=0.1),
                   f"{a}.out_proj.weight": randn(g, d_model, d_model, dtype=dtype, scale=d_model ** -0.5),
                   f"{a}.out_proj.bias": randn(g, d_model, dtype=dtype, scale=0.1)})
    x = randn(g, B, n, d_model, dtype=dtype)
    mask = _mask(_lengths(g, B, n), n) if padded else torch.ones(B, n, dtype=torch.bool)
    if perm:
        order = torch.randperm(n, generator=g)
        x, mask = x[:, order], mask[:, order]
    return (d_model, n_heads, m), sd, x, mask


ISA_CALL = ("lambda dims, sd, x, mask: (lambda m: (m.load_state_dict(sd), m(x, mask))[1])"
            "(InducedSetAttention(*dims).to(x.device, x.dtype).requires_grad_(False))")
ISA_DEFAULT_CALL = ("lambda dims, sd, x, mask: (lambda m: (m.load_state_dict(sd), m(x))[1])"
                    "(InducedSetAttention(*dims).to(x.device, x.dtype).requires_grad_(False))")

CASES: dict[str, list[Case]] = {
    "test_ndcg_at_k": [
        Case("ndcg_at_k", _ndcg_random, "random (B, n) scores, grades 0-3, 2 <= k < n"),
        Case("ndcg_at_k", _ndcg_batch_dims, "float64 (B1, B2, n) lists, k from 1 to 3"),
        Case("ndcg_at_k", _ndcg_k_large, "k larger than the list"),
        Case("ndcg_at_k", _ndcg_ties, "tied scores (integers 0-2)"),
        Case("ndcg_at_k", _ndcg_zero_rows, "float64, a list with relevance all 0"),
        Case("ndcg_at_k", _ndcg_k1, "k = 1"),
        Case("ndcg_at_k", _ndcg_long_ties, "lists of 20-40 with tied scores (integers 0-2)"),
    ],
    "test_pairwise_loss": PAIR_CASES,
    "test_listwise_loss": LIST_CASES,
    "test_set_ranker": [
        Case(RANKER_CALL, lambda g: _ranker_args(g), "random weights, (B, n, d_in) lists with padding"),
        Case(RANKER_CALL, lambda g: _ranker_args(g, dtype=torch.float64), "float64, padding"),
        Case(RANKER_DEFAULT_CALL, lambda g: _ranker_args(g, padded=False), "no padding, forward(x) only"),
        Case(RANKER_CALL, lambda g: _ranker_args(g, perm=True), "shuffled lists: padding anywhere in a list"),
    ],
    "test_induced_set_attention": [
        Case(ISA_CALL, lambda g: _isa_args(g), "random weights, (B, n, d_model) lists with padding"),
        Case(ISA_CALL, lambda g: _isa_args(g, dtype=torch.float64), "float64, padding"),
        Case(ISA_DEFAULT_CALL, lambda g: _isa_args(g, padded=False), "no padding, forward(x) only"),
        Case(ISA_CALL, lambda g: _isa_args(g, perm=True), "shuffled lists: padding anywhere in a list"),
    ],
}
