"""Chapter 10 (GPT): the grader and the public checks on typical submissions, and parity with
Hugging Face's GPT2LMHeadModel (random weights built here, nothing downloaded).

One class is graded once: the reference, the untouched exercise, and one typical mistake per
exercise. The public checks are then run in this process on the reference and on the mistakes.
"""

from __future__ import annotations

import re

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from autograder.chapters import ch10_gpt as checks
from autograder.spec import CheckFailed
from conftest import ROOT, grade_chapter, reference_namespace

ASSIGNMENT = "10-gpt"
FULL = 10.0


def _reference_cell(grade_id: str) -> str:
    nb = nbformat.read(ROOT / "solutions" / ASSIGNMENT / "gpt.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", "", cell.source, flags=re.M)


def _mutated(grade_id: str, old: str, new: str) -> str:
    source = _reference_cell(grade_id)
    assert old in source, old
    return source.replace(old, new)


# Exercise 1: no causal mask (every position sees the future).
NO_MASK = _mutated("causal_self_attention", "is_causal=True", "is_causal=False")
# Exercise 2: weight tying forgotten (the head is a separate, randomly initialised matrix).
UNTIED = _mutated("GPT", "        self.lm_head.weight = self.transformer.wte.weight", "")
# Exercise 3: the biases of the four linear layers not counted.
NO_BIASES = '''
def count_parameters(config, tied=True):
    C, V, L = config.n_embd, config.vocab_size, config.n_layer
    per_block = C * 3 * C + C * C + C * 4 * C + 4 * C * C + 4 * C
    head = 0 if tied else V * C
    return V * C + config.block_size * C + L * per_block + 2 * C + head
'''
# Exercise 4: Conv1D weights copied as they are.
NOT_TRANSPOSED = '''
def convert_gpt2_state_dict(sd):
    return {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
'''
# Exercise 5: top-p drops the token that crosses p (cumulative sum including itself).
CROSSING_DROPPED = _mutated("filter_logits", "above = torch.cumsum(probs, dim=-1) - probs",
                            "above = torch.cumsum(probs, dim=-1)")
# Exercise 6: logits multiplied by the temperature.
TEMPERATURE_MULTIPLIED = _mutated("sample_next", "logits / temperature", "logits * temperature")

MISTAKES = {  # student -> (name replaced, source, graded cell, words of its hint)
    "no_mask": ("CausalSelfAttention", NO_MASK, "test_causal_self_attention", "without the causal mask"),
    "untied": ("GPT", UNTIED, "test_GPT", "weight tying is missing"),
    "no_biases": ("count_parameters", NO_BIASES, "test_count_parameters", "biases of the linear layers"),
    "not_transposed": ("convert_gpt2_state_dict", NOT_TRANSPOSED, "test_convert_gpt2_state_dict",
                       "was not transposed"),
    "crossing_dropped": ("filter_logits", CROSSING_DROPPED, "test_filter_logits",
                         "cross top_p is dropped"),
    "temperature_multiplied": ("sample_next", TEMPERATURE_MULTIPLIED, "test_sample_next", "divide"),
}


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


CHECKS = {"test_causal_self_attention": lambda ns: checks.check_causal_self_attention(ns["CausalSelfAttention"]),
          "test_GPT": lambda ns: checks.check_gpt(ns["GPT"], ns["GPTConfig"]),
          "test_count_parameters": lambda ns: checks.check_count_parameters(ns["count_parameters"],
                                                                            ns["GPTConfig"]),
          "test_convert_gpt2_state_dict": lambda ns: checks.check_convert_gpt2_state_dict(
              ns["convert_gpt2_state_dict"]),
          "test_filter_logits": lambda ns: checks.check_filter_logits(ns["filter_logits"]),
          "test_sample_next": lambda ns: checks.check_sample_next(ns["sample_next"])}


def test_reference_passes_every_public_check(reference, capsys):
    for check in CHECKS.values():
        check(reference)
    assert capsys.readouterr().out.count("✓") == len(CHECKS)


def _with(reference: dict, source: str) -> dict:
    namespace = dict(reference)
    exec(source, namespace)
    return namespace


@pytest.mark.parametrize("student", MISTAKES)
def test_public_check_explains_each_typical_mistake(reference, student):
    _, source, cell, words = MISTAKES[student]
    with pytest.raises(CheckFailed) as failure:
        CHECKS[cell](_with(reference, source))
    assert "Hint:" in str(failure.value) and words in str(failure.value), str(failure.value)


@pytest.mark.parametrize("cell, grade_id, old, new, words", [
    ("test_causal_self_attention", "causal_self_attention", "split(C, dim=2)  # 3 x (B, T, C)",
     "split(C, dim=2)[::-1]", "another order"),
    ("test_causal_self_attention", "causal_self_attention",
     "(t.view(B, T, self.n_head, hs).transpose(1, 2) for", "(t.reshape(B, self.n_head, T, hs) for",
     "heads are cut wrongly"),
    ("test_GPT", "GPT", "x = x + self.attn(self.ln_1(x))\n        return x + self.mlp(self.ln_2(x))",
     "x = self.ln_1(x + self.attn(x))\n        return self.ln_2(x + self.mlp(x))", "post-norm"),
    ("test_GPT", "GPT", "+ self.transformer.wpe(pos)", "", "position embeddings are missing"),
    ("test_GPT", "GPT", 'approximate="tanh"', 'approximate="none"', "tanh approximation"),
    ("test_count_parameters", "count_parameters", "head = 0 if tied else V * C", "head = V * C",
     "do not count its V x C weight again"),
    ("test_count_parameters", "count_parameters", "+ 2 * C + head", "+ head", "LayerNorm parameters"),
    ("test_convert_gpt2_state_dict", "convert_gpt2_state_dict", "continue  #", "pass  #",
     "leave out the entries ending in .attn.bias"),
    ("test_convert_gpt2_state_dict", "convert_gpt2_state_dict", '"attn.c_attn.weight", "attn.c_proj.weight", ',
     '"attn.c_attn.weight", ', "attn.c_proj.weight is square"),
    ("test_filter_logits", "filter_logits", 'float("-inf"))\n    return', "0.0)\n    return",
     "not 0"),
    ("test_sample_next", "sample_next", ".squeeze(-1)", "", "drop the last dimension"),
    ("test_sample_next", "sample_next", "argmax(dim=-1)", "argmax(dim=-1, keepdim=True)",
     "argmax(dim=-1) without keepdim"),
    ("test_sample_next", "sample_next",
     "torch.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)",
     "filter_logits(torch.softmax(logits / temperature, dim=-1), top_k, top_p).clamp(min=0)",
     "not on probabilities"),
    ("test_count_parameters", "count_parameters", "layer_norms = 2 * (C + C)", "layer_norms = 2 * C",
     "LayerNorm parameters"),
    ("test_convert_gpt2_state_dict", "convert_gpt2_state_dict", "tensor.t() if", "tensor.t_() if",
     "do not modify sd in place"),
    ("test_filter_logits", "filter_logits", "logits < kth", "logits <= kth",
     "the k-th largest logit itself is removed"),
])
def test_public_checks_recognise_other_mistakes(reference, cell, grade_id, old, new, words):
    with pytest.raises(CheckFailed) as failure:
        CHECKS[cell](_with(reference, _mutated(grade_id, old, new)))
    assert words in str(failure.value), str(failure.value)


def test_hidden_case_hints_recognise_mistakes(reference):
    """The hints of hidden cases, judged here on one case each (no sandbox needed)."""
    g = torch.Generator().manual_seed(0)
    args = checks._gpt_case(g)
    call = eval(checks.GPT_CALL, reference)
    expected = call(*args)
    untied = eval(checks.GPT_CALL, _with(reference, UNTIED))(*args)
    message = checks.CASES["test_GPT"][0].judge(untied, expected, args)
    assert message is not None and "weight tying is missing" in message, message
    args = checks._filter_case(torch.Generator().manual_seed(1), top_p=0.7)
    expected = reference["filter_logits"](*args)
    dropped = _with(reference, CROSSING_DROPPED)["filter_logits"](*args)
    message = checks.CASES["test_filter_logits"][1].judge(dropped, expected, args)
    assert message is not None and "cross top_p is dropped" in message, message
    args = checks._filter_case(torch.Generator().manual_seed(1), top_k=3)
    expected = reference["filter_logits"](*args)
    strict = _with(reference, _mutated("filter_logits", "logits < kth", "logits <= kth"))["filter_logits"](*args)
    message = checks.CASES["test_filter_logits"][0].judge(strict, expected, args)
    assert message is not None and "k-th largest logit itself" in message, message
    assert "cross top_p is dropped" not in message, message  # no top-p hint for a top-k-only call
    args = checks._sample_many(torch.Generator().manual_seed(2), 0.5)
    sample = eval(checks.SAMPLE_UNSEEDED_CALL, reference)
    assert checks._statistical_check(sample(*args), sample(*args), args) is None  # two honest draws
    hot = eval(checks.SAMPLE_UNSEEDED_CALL, _with(reference, TEMPERATURE_MULTIPLIED))(*args)
    message = checks.CASES["test_sample_next"][4].judge(hot, sample(*args), args)
    assert message is not None and "divide by the temperature" in message, message


def test_loads_a_hugging_face_gpt2_and_gives_its_logits(reference):
    """A random GPT2LMHeadModel built here (no download): same logits after conversion, and the
    parameter counts of GPT-2 small agree with count_parameters, tied and untied."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=24, n_embd=48, n_layer=3, n_head=4)).eval()
    config = reference["GPTConfig"](block_size=24, vocab_size=97, n_layer=3, n_head=4, n_embd=48)
    model = reference["GPT"](config).eval()
    model.load_state_dict(reference["convert_gpt2_state_dict"](hf.state_dict()))
    idx = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, rtol=1e-5, atol=1e-5)
    assert model.lm_head.weight is model.transformer.wte.weight
    count = reference["count_parameters"]
    small = reference["GPTConfig"]()
    assert count(small) == sum(p.numel() for p in GPT2LMHeadModel(GPT2Config()).parameters()) == 124_439_808
    untied = GPT2LMHeadModel(GPT2Config(tie_word_embeddings=False))
    assert count(small, tied=False) == sum(p.numel() for p in untied.parameters()) == 163_037_184


def test_untouched_notebook_checks_say_what_to_do():
    """Run the student version as a student would: every check cell fails with a sentence."""
    nb = nbformat.read(ROOT / "exercises" / ASSIGNMENT / "gpt.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises" / ASSIGNMENT)}}).execute()
    test_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(test_cells) == len(checks.CASES)
    for cell in test_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors and errors[0].ename == "CheckFailed", cell.source
        assert "replace `raise NotImplementedError()` with your code" in errors[0].evalue
