"""Chapter 12 (sets and ranking): the grader and the public checks on typical submissions, and the
book's claims.

One class is graded once: the reference, the untouched exercise, and typical mistakes of every
exercise (the grader names them from the catalogue, solutions/12-ranking/mistakes.yaml). The
public checks are then run in this process on the reference and on the mistakes; the last tests
check what the book page says about NDCG, the data and permutation equivariance.
"""

from __future__ import annotations

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from torch import nn

from autograder.chapters import ch12_ranking as checks
from autograder.data import ranking
from autograder.spec import CheckFailed
from conftest import ROOT, grade_chapter, reference_namespace

ASSIGNMENT = "12-ranking"
FULL = 10.0

# Exercise 1: the discount 1/log2(i) with ranks from 1 (NaN), instead of 1/log2(i + 1).
NDCG_WRONG_DISCOUNT = '''
def ndcg_at_k(scores, relevance, k):
    n = scores.shape[-1]
    idx = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    gain = 2.0 ** relevance - 1
    pos = torch.arange(1, n + 1, device=scores.device, dtype=scores.dtype)
    disc = (pos <= k) / torch.log2(pos)
    dcg = (gain.gather(-1, idx) * disc).sum(-1)
    best = (gain.sort(dim=-1, descending=True).values * disc).sum(-1)
    return dcg / best.masked_fill(best == 0, 1.0)
'''
# Exercise 1: DCG@k, never divided by the ideal DCG.
NDCG_NO_IDEAL = '''
def ndcg_at_k(scores, relevance, k):
    n = scores.shape[-1]
    idx = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    pos = torch.arange(1, n + 1, device=scores.device, dtype=scores.dtype)
    disc = (pos <= k) / torch.log2(pos + 1)
    return ((2.0 ** relevance - 1).gather(-1, idx) * disc).sum(-1)
'''
# Exercise 2: the logistic loss on s_j - s_i (the sign reversed).
PAIR_SIGN = '''
def pairwise_loss(scores, relevance, mask=None):
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    d = scores[..., :, None] - scores[..., None, :]
    ok = (relevance[..., :, None] > relevance[..., None, :]) & mask[..., :, None] & mask[..., None, :]
    return F.softplus(d)[ok].sum() / ok.sum().clamp_min(1)
'''
# Exercise 3: padding left in both softmaxes.
LIST_NO_MASK = '''
def listwise_loss(scores, relevance, mask=None):
    return -(torch.softmax(relevance, -1) * torch.log_softmax(scores, -1)).sum(-1).mean()
'''
# Exercise 4: key_padding_mask given our mask (True = real), so the real candidates are ignored.
RANKER_POLARITY = '''
class SetRanker(nn.Module):
    def __init__(self, d_in, d_model, n_heads):
        super().__init__()
        self.embed = nn.Linear(d_in, d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.score = nn.Linear(d_model, 1)

    def forward(self, x, mask=None):
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        h = self.embed(x)
        h = h + self.attn(h, h, h, key_padding_mask=mask, need_weights=False)[0]
        return self.score(torch.relu(h)).squeeze(-1).masked_fill(~mask, float("-inf"))
'''
# Exercise 4: an order-dependent re-ranker (each candidate's index added to its features).
RANKER_POSITIONS = RANKER_POLARITY.replace("key_padding_mask=mask", "key_padding_mask=~mask").replace(
    "h = self.embed(x)\n",
    "h = self.embed(x) + torch.arange(x.shape[1], device=x.device, dtype=x.dtype)[:, None] / x.shape[1]\n")
# Exercise 5: the inducing points attend to the real candidates' complement.
ISA_POLARITY = '''
class InducedSetAttention(nn.Module):
    def __init__(self, d_model, n_heads, m):
        super().__init__()
        self.inducing = nn.Parameter(torch.randn(m, d_model) / math.sqrt(d_model))
        self.attn1 = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.attn2 = nn.MultiheadAttention(d_model, n_heads, batch_first=True)

    def forward(self, x, mask=None):
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        I = self.inducing.expand(x.shape[0], -1, -1)
        H = I + self.attn1(I, x, x, key_padding_mask=mask, need_weights=False)[0]
        return x + self.attn2(x, H, H, need_weights=False)[0]
'''
MISTAKES = {  # student -> (name replaced, source, graded cell, words of its hint)
    "ndcg_discount": ("ndcg_at_k", NDCG_WRONG_DISCOUNT, "test_ndcg_at_k", "1/log2(i + 1)"),
    "ndcg_no_ideal": ("ndcg_at_k", NDCG_NO_IDEAL, "test_ndcg_at_k", "divide by the ideal DCG@k"),
    "pair_sign": ("pairwise_loss", PAIR_SIGN, "test_pairwise_loss", "the sign is reversed"),
    "list_no_mask": ("listwise_loss", LIST_NO_MASK, "test_listwise_loss", "padded candidates take part"),
    "ranker_polarity": ("SetRanker", RANKER_POLARITY, "test_set_ranker", "wrong polarity"),
    "ranker_positions": ("SetRanker", RANKER_POSITIONS, "test_set_ranker", "permutation-equivariant"),
    "isa_polarity": ("InducedSetAttention", ISA_POLARITY, "test_induced_set_attention", "wrong polarity"),
}
CHECKS = {"test_ndcg_at_k": checks.check_ndcg_at_k, "test_pairwise_loss": checks.check_pairwise_loss,
          "test_listwise_loss": checks.check_listwise_loss, "test_set_ranker": checks.check_set_ranker,
          "test_induced_set_attention": checks.check_induced_set_attention}


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory) -> dict[str, dict]:
    return grade_chapter(course, ASSIGNMENT, MISTAKES, tmp_path_factory.mktemp("downloads"))


def test_reference_scores_full_marks(graded):
    assert graded["correct"]["score"] == FULL, graded["correct"]["report"]


def test_untouched_exercise_scores_zero_and_says_what_to_write(graded):
    row = graded["untouched"]
    assert row["score"] == 0
    assert set(row["report"]) == set(checks.CASES)
    for report in row["report"].values():
        assert "not written yet" in report and "NotImplementedError" in report, report


@pytest.mark.parametrize("student", MISTAKES)
def test_typical_mistake_gets_partial_credit_and_its_hint(graded, student):
    _, _, cell, words = MISTAKES[student]
    row = graded[student]
    assert 0 < row["score"] < FULL, row["report"]
    report = row["report"][cell]
    assert "Hint:" in report and words in report, report
    assert "your results are exactly those of the reference with" in report, report  # from every hidden case


@pytest.fixture(scope="module")
def reference(course) -> dict:
    return reference_namespace(course, ASSIGNMENT)


def test_reference_passes_every_public_check(reference, capsys):
    checks.check_ndcg_at_k(reference["ndcg_at_k"])
    checks.check_pairwise_loss(reference["pairwise_loss"])
    checks.check_listwise_loss(reference["listwise_loss"])
    checks.check_set_ranker(reference["SetRanker"])
    checks.check_induced_set_attention(reference["InducedSetAttention"])
    assert capsys.readouterr().out.count("✓") == 5


def _define(reference: dict, source: str, name: str):
    namespace = dict(reference)
    exec(source, namespace)
    return namespace[name]


@pytest.mark.parametrize("student", MISTAKES)
def test_public_check_explains_each_typical_mistake(reference, student):
    name, source, cell, words = MISTAKES[student]
    with pytest.raises(CheckFailed) as failure:
        CHECKS[cell](_define(reference, source, name))
    assert "Hint:" in str(failure.value) and words in str(failure.value), str(failure.value)


def test_untouched_notebook_checks_say_what_to_do():
    """Run the student version as a student would: every check cell fails with a sentence."""
    nb = nbformat.read(ROOT / "exercises" / ASSIGNMENT / "ranking.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises" / ASSIGNMENT)}}).execute()
    test_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(test_cells) == len(checks.CASES)
    for cell in test_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors and errors[0].ename == "CheckFailed", cell.source
        assert "replace `raise NotImplementedError()` with your code" in errors[0].evalue


def test_public_checks_do_not_touch_the_global_generator(reference):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    checks.check_set_ranker(reference["SetRanker"])
    checks.check_induced_set_attention(reference["InducedSetAttention"])
    assert torch.equal(torch.random.get_rng_state(), before)


# ----------------------------------------------------------------------------------------
# The book's claims
# ----------------------------------------------------------------------------------------

def test_the_worked_ndcg_numbers(reference):
    """book: grades [1, 2, 0] in the model's order give NDCG@3 = 0.7967 and NDCG@1 = 1/3; the
    exercise's worked example gives 0.9639; Question 1's answers 0.968, 0.143 and 0.486."""
    ndcg = reference["ndcg_at_k"]
    s, r = torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 0.0])
    assert abs(ndcg(s, r, 3).item() - 0.7967) < 1e-4 and abs(ndcg(s, r, 1).item() - 1 / 3) < 1e-6
    assert abs(ndcg(s, torch.tensor([2.0, 0.0, 1.0]), 3).item() - 0.9639) < 1e-4
    s5 = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    assert abs(ndcg(s5, torch.tensor([3.0, 0, 0, 0, 1]), 5).item() - 0.968) < 5e-4
    assert abs(ndcg(s5, torch.tensor([1.0, 0, 0, 0, 3]), 1).item() - 1 / 7) < 1e-6
    assert abs(ndcg(s5, torch.tensor([1.0, 0, 0, 0, 3]), 5).item() - 0.486) < 5e-4


def test_ndcg_is_a_staircase_and_listnet_is_cross_entropy(reference):
    """book: NDCG does not move between order changes; ListNet equals F.cross_entropy with soft targets."""
    ndcg, listwise = reference["ndcg_at_k"], reference["listwise_loss"]
    r = torch.tensor([0.0, 1.0, 0.0, 0.0, 2.0])
    values = {round(ndcg(torch.tensor([1.5, 1.0, 0.5, 0.0, v]), r, 5).item(), 6) for v in (-1.9, -1.5, -0.9, -0.6)}
    assert len(values) == 1  # below every other score: the same order, the same NDCG
    s = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    g = torch.randint(0, 3, (4, 6), generator=torch.Generator().manual_seed(1)).float()
    assert torch.allclose(listwise(s, g), torch.nn.functional.cross_entropy(s, torch.softmax(g, -1)))


def test_the_data_need_context_and_the_control_does_not():
    """book: in the contextual task the same features can be relevant in one list and not in
    another; in the control, the features fix the relevance."""
    for context in (True, False):
        x, rel = ranking.generate(400, n=10, seed=0, context=context)
        assert x.shape == (400, 10, ranking.FEATURES) and set(rel.unique().tolist()) <= {0.0, 1.0, 2.0}
        topic, high = x[..., :ranking.TOPICS].argmax(-1), x[..., ranking.TOPICS] > 0.5
        on_topic = rel - high.float()
        assert set(on_topic.unique().tolist()) <= {0.0, 1.0}
        wanted = {(t, bool(o)) for t, o in zip(topic.flatten().tolist(), on_topic.flatten().tolist())}
        # control: topic 0 is always wanted, others never; contextual: every topic is both
        assert (len(wanted) == 2 * ranking.TOPICS) == context, wanted
    x1, r1 = ranking.generate(50, seed=3)
    x2, r2 = ranking.generate(50, seed=3)
    assert torch.equal(x1, x2) and torch.equal(r1, r2)


def _random_reranker(reference, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return reference["SetRanker"](5, 8, 2).requires_grad_(False)


def test_attention_is_equivariant_and_an_rnn_is_not(reference):
    """book: attention without positions gives shuffled scores for a shuffled list; a GRU does not;
    the induced block is equivariant too; padding changes no real candidate's result."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, generator=g)
    perm = torch.randperm(7, generator=g)
    ranker = _random_reranker(reference)
    assert torch.allclose(ranker(x[:, perm]), ranker(x)[:, perm], atol=1e-5)
    torch.manual_seed(0)
    gru = nn.GRU(5, 4, batch_first=True)
    with torch.no_grad():
        assert not torch.allclose(gru(x[:, perm])[0], gru(x)[0][:, perm], atol=1e-3)
    torch.manual_seed(0)
    block = reference["InducedSetAttention"](8, 2, 3).requires_grad_(False)
    y = torch.randn(2, 7, 8, generator=g)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    assert torch.allclose(block(y[:, perm], mask[:, perm]), block(y, mask)[:, perm], atol=1e-5)
    assert torch.allclose(block(y, mask)[1, :4], block(y[1:, :4])[0], atol=1e-5)
    scores = ranker(x, torch.tensor([[True] * 7, [True] * 5 + [False] * 2, [True] * 2 + [False] * 5]))
    assert torch.isneginf(scores[1, 5:]).all() and torch.allclose(scores[1, :5], ranker(x[1:2, :5])[0], atol=1e-5)


def test_the_prior_order_informs_only_when_hidden_is_on():
    """book: with hidden=1 the lists arrive sorted by a signal relevance depends on (earlier
    positions are more relevant); with hidden=0 the order is random."""
    for hidden, informative in ((1.0, True), (0.0, False)):
        _, rel = ranking.generate(2000, n=10, seed=0, hidden=hidden)
        gap = (rel[:, :5].mean() - rel[:, 5:].mean()).item()
        assert (gap > 0.3) == informative and (abs(gap) < 0.05) == (not informative), (hidden, gap)
