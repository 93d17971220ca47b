"""Chapter 9 (the Transformer): the grader and the public checks on typical submissions.

One class is graded once: the reference, the untouched exercise, and one typical mistake per
exercise. The public checks are then run in this process on the reference and on the mistakes.
"""

from __future__ import annotations

import nbformat
import pytest
import torch

from autograder import mistakes
from autograder.chapters import ch09_transformer as checks
from autograder.spec import CheckFailed
from conftest import ROOT, grade_chapter, reference_namespace

ASSIGNMENT = "09-transformer"
FULL = 10.0

# Exercise 1: torch.var's default, the unbiased variance (divides by d - 1).
UNBIASED_LAYER_NORM = '''
def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias
'''
# Exercise 2: a ReLU after the second linear map too.
RELU_OUT_FFN = '''
class FeedForward(nn.Module):
    def __init__(self, d_model, d_ff=None):
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return F.relu(self.linear2(F.relu(self.linear1(x))))
'''
# Exercise 3: norm_first ignored, always post-norm.
ALWAYS_POST_NORM = '''
class EncoderLayer(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, norm_first=False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x, key_padding_mask=None):
        a = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]
        x = self.norm1(x + a)
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))
'''
# Exercise 4: the decoder's self-attention without the causal mask.
NOT_CAUSAL_DECODER = '''
class DecoderLayer(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, norm_first=False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, y, memory, tgt_key_padding_mask=None, memory_key_padding_mask=None):
        sa = lambda h: self.self_attn(h, h, h, key_padding_mask=tgt_key_padding_mask)[0]
        ca = lambda h: self.multihead_attn(h, memory, memory,
                                           key_padding_mask=memory_key_padding_mask)[0]
        ff = lambda h: self.linear2(F.relu(self.linear1(h)))
        if self.norm_first:
            y = y + sa(self.norm1(y))
            y = y + ca(self.norm2(y))
            return y + ff(self.norm3(y))
        y = self.norm1(y + sa(y))
        y = self.norm2(y + ca(y))
        return self.norm3(y + ff(y))
'''
# Exercise 5: the decoder layers are not told where the source is padded.
NO_MEMORY_MASK_MODEL = '''
class Transformer(nn.Module):
    def __init__(self, src_vocab, tgt_vocab, d_model=32, n_heads=4, n_layers=2, d_ff=128,
                 max_len=64, norm_first=False):
        super().__init__()
        self.src_embed = nn.Embedding(src_vocab, d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab, d_model)
        self.pos_embed = nn.Embedding(max_len, d_model)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, norm_first) for _ in range(n_layers))
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, d_ff, norm_first) for _ in range(n_layers))
        self.enc_norm = nn.LayerNorm(d_model)
        self.dec_norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, tgt_vocab)

    def forward(self, src, tgt, src_key_padding_mask=None, tgt_key_padding_mask=None):
        x = self.src_embed(src) + self.pos_embed.weight[: src.shape[1]]
        for layer in self.encoder_layers:
            x = layer(x, src_key_padding_mask)
        memory = self.enc_norm(x)
        y = self.tgt_embed(tgt) + self.pos_embed.weight[: tgt.shape[1]]
        for layer in self.decoder_layers:
            y = layer(y, memory, tgt_key_padding_mask)
        return self.lm_head(self.dec_norm(y))
'''
MISTAKES = {  # student -> (name replaced, source, graded cell, words of its hint)
    "unbiased": ("layer_norm", UNBIASED_LAYER_NORM, "test_layer_norm", "unbiased variance"),
    "relu_out": ("FeedForward", RELU_OUT_FFN, "test_feed_forward", "went through a ReLU too"),
    "post_only": ("EncoderLayer", ALWAYS_POST_NORM, "test_encoder_layer",
                  "norm_first=True gives the post-norm output"),
    "not_causal": ("DecoderLayer", NOT_CAUSAL_DECODER, "test_decoder_layer", "sees the future"),
    "no_memory_mask": ("Transformer", NO_MEMORY_MASK_MODEL, "test_transformer",
                       "attends to the source's padding"),
}
CHECKS = {"test_layer_norm": ("check_layer_norm", "layer_norm"),
          "test_feed_forward": ("check_feed_forward", "FeedForward"),
          "test_encoder_layer": ("check_encoder_layer", "EncoderLayer"),
          "test_decoder_layer": ("check_decoder_layer", "DecoderLayer"),
          "test_transformer": ("check_transformer", "Transformer")}


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


@pytest.fixture(scope="module")
def reference(course) -> dict:
    return reference_namespace(course, ASSIGNMENT)


def test_reference_passes_every_public_check(reference, capsys):
    for check, name in CHECKS.values():
        getattr(checks, check)(reference[name])
    assert capsys.readouterr().out.count("✓") == len(CHECKS)


def _define(reference: dict, source: str, name: str):
    namespace = dict(reference)
    exec(source, namespace)
    return namespace[name]


@pytest.mark.parametrize("student", MISTAKES)
def test_public_check_explains_each_typical_mistake(reference, student):
    name, source, cell, words = MISTAKES[student]
    check = getattr(checks, CHECKS[cell][0])
    with pytest.raises(CheckFailed) as failure:
        check(_define(reference, source, name))
    assert "Hint:" in str(failure.value) and words in str(failure.value), str(failure.value)


# Exercise 4: .triu() blocks the diagonal too (a position may not attend to itself).
DIAGONAL_BLOCKED_DECODER = NOT_CAUSAL_DECODER.replace(
    "key_padding_mask=tgt_key_padding_mask)[0]",
    "attn_mask=torch.ones(h.shape[1], h.shape[1], dtype=torch.bool).triu(),\n"
    "                                      key_padding_mask=tgt_key_padding_mask)[0]")
# Exercises 3-4: pre-norm written as h = norm(x); x = h + sublayer(h).
RESIDUAL_FROM_NORMED_ENCODER = ALWAYS_POST_NORM.replace(
    "        x = self.norm1(x + a)\n        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))",
    "        if not self.norm_first:\n"
    "            x = self.norm1(x + a)\n"
    "            return self.norm2(x + self.linear2(F.relu(self.linear1(x))))\n"
    "        h = self.norm1(x)\n"
    "        x = h + self.self_attn(h, h, h, key_padding_mask=key_padding_mask)[0]\n"
    "        h = self.norm2(x)\n"
    "        return h + self.linear2(F.relu(self.linear1(h)))").replace(
    "        self.norm2 = nn.LayerNorm(d_model)\n",
    "        self.norm2 = nn.LayerNorm(d_model)\n        self.norm_first = norm_first\n")
RESIDUAL_FROM_NORMED_DECODER = DIAGONAL_BLOCKED_DECODER.replace(".triu()", ".triu(1)").replace(
    "            y = y + sa(self.norm1(y))\n            y = y + ca(self.norm2(y))\n"
    "            return y + ff(self.norm3(y))",
    "            h = self.norm1(y)\n            y = h + sa(h)\n            h = self.norm2(y)\n"
    "            y = h + ca(h)\n            h = self.norm3(y)\n            return h + ff(h)")
# Exercise 5: the encoder layers are not told where the source is padded.
NO_ENCODER_MASK_MODEL = NO_MEMORY_MASK_MODEL.replace(
    "x = layer(x, src_key_padding_mask)", "x = layer(x)").replace(
    "y = layer(y, memory, tgt_key_padding_mask)",
    "y = layer(y, memory, tgt_key_padding_mask, src_key_padding_mask)")
# Exercise 5: positions counted from 1.
POSITIONS_FROM_1_MODEL = NO_MEMORY_MASK_MODEL.replace(
    "y = layer(y, memory, tgt_key_padding_mask)",
    "y = layer(y, memory, tgt_key_padding_mask, src_key_padding_mask)").replace(
    "[: src.shape[1]]", "[1: src.shape[1] + 1]").replace("[: tgt.shape[1]]", "[1: tgt.shape[1] + 1]")
assert RESIDUAL_FROM_NORMED_ENCODER.count("h = self.norm") == 2
assert RESIDUAL_FROM_NORMED_DECODER.count("h = self.norm") == 3 and ".triu(1)" in RESIDUAL_FROM_NORMED_DECODER
assert "x = layer(x)" in NO_ENCODER_MASK_MODEL and "[1: tgt" in POSITIONS_FROM_1_MODEL


@pytest.mark.parametrize("mistake, name, words", [
    ("def layer_norm(x, weight, bias, eps=1e-5):\n"
     "    m = x.mean(-1, keepdim=True)\n"
     "    v = x.var(-1, keepdim=True, unbiased=False)\n"
     "    return (x - m) / (v.sqrt() + eps) * weight + bias",
     "layer_norm", "inside the square root"),
    ("def layer_norm(x, weight, bias, eps=1e-5):\n"
     "    m = x.mean(-1, keepdim=True)\n"
     "    v = x.var(-1, keepdim=True, unbiased=False)\n"
     "    return (x - m) / torch.sqrt(v + eps)",
     "layer_norm", "scale and shift"),
    ("def layer_norm(x, weight, bias, eps=1e-5):\n"
     "    m = x.mean(-1)\n"
     "    v = ((x - m) ** 2).mean(-1)\n"
     "    return (x - m) / torch.sqrt(v + eps) * weight + bias",
     "layer_norm", "keep the reduced axis"),
    ("class FeedForward(nn.Module):\n"
     "    def __init__(self, d_model, d_ff=None):\n"
     "        super().__init__()\n"
     "        self.linear1 = nn.Linear(d_model, d_ff or 2 * d_model)\n"
     "        self.linear2 = nn.Linear(d_ff or 2 * d_model, d_model)\n"
     "    def forward(self, x):\n"
     "        return self.linear2(F.relu(self.linear1(x)))",
     "FeedForward", "4 * d_model"),
    ("class EncoderLayer(EncoderLayer):\n"
     "    def __init__(self, d_model, n_heads, d_ff, norm_first=False):\n"
     "        super().__init__(d_model, n_heads, d_ff, norm_first)\n"
     "        self.self_attn = nn.MultiheadAttention(d_model, n_heads)",
     "EncoderLayer", "batch_first=True"),
    (NOT_CAUSAL_DECODER.replace(
        "key_padding_mask=tgt_key_padding_mask)[0]",
        "attn_mask=torch.ones(h.shape[1], h.shape[1], dtype=torch.bool).tril(),\n"
        "                                      key_padding_mask=tgt_key_padding_mask)[0]"),
     "DecoderLayer", "causal mask is inverted"),
    (DIAGONAL_BLOCKED_DECODER, "DecoderLayer", "also blocks the diagonal"),
    (RESIDUAL_FROM_NORMED_ENCODER, "EncoderLayer", "residual path carries x itself"),
    (RESIDUAL_FROM_NORMED_DECODER, "DecoderLayer", "residual path carries y itself"),
    (NO_ENCODER_MASK_MODEL, "Transformer", "pass src_key_padding_mask to every encoder layer"),
    (POSITIONS_FROM_1_MODEL, "Transformer", "shifted by one"),
])
def test_public_checks_recognise_other_mistakes(reference, mistake, name, words):
    check = getattr(checks, next(c for c, n in CHECKS.values() if n == name))
    with pytest.raises(CheckFailed) as failure:
        check(_define(reference, mistake, name))
    assert words in str(failure.value), str(failure.value)


def _catalogued(reference: dict, mistake_id: str) -> dict:
    """The reference's namespace with the catalogue's mistake ``mistake_id`` made."""
    folder = ROOT / "solutions" / ASSIGNMENT
    nb = nbformat.read(folder / "transformer.ipynb", as_version=4)
    namespace = dict(reference)
    for source in mistakes.patched(nb, mistakes.load(folder, nb).by_id([mistake_id])).values():
        exec(source, namespace)
    return namespace


def test_the_catalogued_missing_memory_mask_is_the_mask_left_out(reference):
    """dec-no-memory-mask gives what the reference gives with no memory mask, and a padded hidden
    case tells it apart."""
    case = checks.CASES["test_decoder_layer"][1]
    args = next(a for a in (case.make_args(torch.Generator().manual_seed(s)) for s in range(50))
                if a[5].any())  # the first seed whose source has padding
    expected = eval(case.call, reference)(*args)
    dims, sd, y, memory, tgt_mask, mem_mask, nf = args
    wrong = eval(case.call, reference)(dims, sd, y, memory, tgt_mask, None, nf)
    assert case.judge(wrong, expected, args) is not None
    made = eval(case.call, _catalogued(reference, "dec-no-memory-mask"))(*args)
    assert case.difference(made, wrong, args) is None


@pytest.mark.parametrize("mistake, name, cell, mistake_id", [
    (DIAGONAL_BLOCKED_DECODER, "DecoderLayer", "test_decoder_layer", "dec-diagonal-blocked-nan"),
    (NO_ENCODER_MASK_MODEL, "Transformer", "test_transformer", "model-no-encoder-mask"),
])
def test_hidden_cases_catch_mistakes_and_name_them(reference, mistake, name, cell, mistake_id):
    """Every hidden case that can tell the mistake apart fails, and the student's results are the
    catalogue mistake's on every case, so the grader names it (with d_model = 2 a post-norm
    layer's output hardly depends on its input, and a 'padded' case without padding tests no
    mask: both once let these mistakes through)."""
    namespace = dict(reference)
    exec(mistake, namespace)
    made = _catalogued(reference, mistake_id)
    for i, case in enumerate(checks.CASES[cell]):
        args = case.make_args(torch.Generator().manual_seed(i))
        got = eval(case.call, namespace)(*args)
        assert case.difference(got, eval(case.call, made)(*args), args) is None, case.label
        if "masks left out" in case.label and name == "Transformer":
            continue  # no mask given: nothing to forget
        assert case.judge(got, eval(case.call, reference)(*args), args) is not None, case.label


def test_padded_hidden_cases_have_padding():
    for cell in ("test_encoder_layer", "test_decoder_layer", "test_transformer"):
        for case in checks.CASES[cell]:
            if "padding" in case.label and "no padding" not in case.label:
                for seed in range(20):
                    args = case.make_args(torch.Generator().manual_seed(seed))
                    masks = [a for a in args if isinstance(a, torch.Tensor) and a.dtype == torch.bool]
                    assert masks and all(m.any() for m in masks), (cell, case.label, seed)
