"""Chapter 10 (GPT): the grader and the public checks on typical submissions, and parity with
Hugging Face's GPT2LMHeadModel (random weights built here, nothing downloaded).

One class is graded once: the reference, the untouched exercise, and typical mistakes (one or
two per exercise). The public checks are then run in this process on the reference and on the
mistakes. The hints are the catalogue's (``solutions/10-gpt/mistakes.yaml``); every catalogue
mistake is also tried on its own in tests/test_mistakes.py.
"""

from __future__ import annotations

import re

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from autograder import mistakes
from autograder.chapters import ch10_gpt as checks
from autograder.spec import CheckFailed
from conftest import ROOT, grade_chapter, reference_namespace

ASSIGNMENT = "10-gpt"
FULL = 10.0


def _notebook() -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "solutions" / ASSIGNMENT / "gpt.ipynb", as_version=4)


CATALOGUE = mistakes.load(ROOT / "solutions" / ASSIGNMENT, _notebook())


def hint(mistake_id: str) -> str:
    """The catalogue's hint for ``mistake_id`` (the text the student reads)."""
    (text,) = [m.hint for m in CATALOGUE.mistakes if m.id == mistake_id]
    return text


def _flat(text: str) -> str:
    return " ".join(text.split())


def _reference_cell(grade_id: str) -> str:
    nb = _notebook()
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
# Exercise 6: logits multiplied by the temperature; the temperature applied after the softmax,
# where it changes nothing (issue 18: it was once told "the samples match logits multiplied").
TEMPERATURE_MULTIPLIED = _mutated("sample_next", "logits / temperature", "logits * temperature")
TEMPERATURE_AFTER_SOFTMAX = _mutated("sample_next", "probs = torch.softmax(filter_logits(logits / temperature, "
                                     "top_k, top_p), dim=-1)", "probs = torch.softmax(filter_logits(logits, "
                                     "top_k, top_p), dim=-1)\n    probs = probs / temperature")

MISTAKES = {  # student -> (name replaced, source, graded cell, catalogue id of its hint)
    "no_mask": ("CausalSelfAttention", NO_MASK, "test_causal_self_attention", "attention-no-mask"),
    "untied": ("GPT", UNTIED, "test_GPT", "gpt-untied"),
    "no_biases": ("count_parameters", NO_BIASES, "test_count_parameters", "count-no-biases"),
    "not_transposed": ("convert_gpt2_state_dict", NOT_TRANSPOSED, "test_convert_gpt2_state_dict",
                       "convert-not-transposed"),
    "crossing_dropped": ("filter_logits", CROSSING_DROPPED, "test_filter_logits", "filter-crossing-dropped"),
    "temperature_multiplied": ("sample_next", TEMPERATURE_MULTIPLIED, "test_sample_next",
                               "sample-temperature-multiplied"),
    "temperature_after_softmax": ("sample_next", TEMPERATURE_AFTER_SOFTMAX, "test_sample_next",
                                  "sample-temperature-after-softmax"),
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
    _, _, cell, mistake_id = MISTAKES[student]
    row = graded[student]
    assert 0 < row["score"] < FULL, row["report"]
    report = _flat(row["report"][cell])
    assert "Hint:" in report and hint(mistake_id) in report, report
    others = [m.id for m in CATALOGUE.mistakes if m.id != mistake_id and m.hint in report]
    assert not others, (others, report)


def test_no_causal_mask_is_named_in_the_gpt_cell_too(graded):
    """Issue 18: GPT's logits without the mask were taken for missing position embeddings. The
    GPT cell runs CausalSelfAttention: the mistake is named there, as the attention's."""
    report = _flat(graded["no_mask"]["report"]["test_GPT"])
    assert hint("attention-no-mask") in report, report
    assert "(in `causal_self_attention`, which this exercise uses)" in report, report
    assert hint("gpt-no-positions") not in report, report


def test_temperature_after_the_softmax_is_not_taken_for_multiplied(graded):
    """Issue 18: a temperature with no effect was told "the samples match logits multiplied"."""
    report = _flat(graded["temperature_after_softmax"]["report"]["test_sample_next"])
    assert hint("sample-temperature-multiplied") not in report, report


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


def _with(reference: dict, *sources: str) -> dict:
    """A copy of the reference's namespace with ``sources`` run in it (a class defined before, such
    as GPT, still finds its globals in the reference's own namespace: run its cell again to have
    it use a replaced CausalSelfAttention)."""
    namespace = dict(reference)
    for source in sources:
        exec(source, namespace)
    return namespace


@pytest.mark.parametrize("student", MISTAKES)
def test_public_check_explains_each_typical_mistake(reference, student):
    _, source, cell, mistake_id = MISTAKES[student]
    with pytest.raises(CheckFailed) as failure:
        CHECKS[cell](_with(reference, source))
    assert "Hint:" in str(failure.value) and hint(mistake_id) in _flat(str(failure.value)), str(failure.value)


def test_public_gpt_check_names_the_attention_without_mask(reference):
    """The GPT check on a model whose attention has no mask names the attention's mistake."""
    with pytest.raises(CheckFailed) as failure:
        CHECKS["test_GPT"](_with(reference, NO_MASK, _reference_cell("GPT")))
    text = _flat(str(failure.value))
    assert hint("attention-no-mask") in text and "which this exercise uses" in text, text
    assert hint("gpt-no-positions") not in text, text


# Other code with the results of a catalogue mistake (the catalogue's own patches are tried in
# tests/test_mistakes.py): the public check names the mistake by its results.
@pytest.mark.parametrize("cell, grade_id, old, new, mistake_id", [
    ("test_causal_self_attention", "causal_self_attention", "is_causal=True", "attn_mask=None",
     "attention-no-mask"),
    ("test_GPT", "causal_self_attention", "is_causal=True", "attn_mask=None", "attention-no-mask"),
    ("test_causal_self_attention", "causal_self_attention",
     "(t.view(B, T, self.n_head, hs).transpose(1, 2) for", "(t.contiguous().view(B, self.n_head, T, hs) for",
     "attention-split-by-view"),
    ("test_GPT", "GPT", 'approximate="tanh"', 'approximate="none"', "gpt-exact-gelu"),
    ("test_filter_logits", "filter_logits", 'float("-inf"))\n    return', "0.0)\n    return",
     "filter-zero-fill"),
    ("test_sample_next", "sample_next", "logits / temperature, top_k, top_p), dim=-1)",
     "logits, top_k, top_p), dim=-1) * temperature", "sample-temperature-after-softmax"),
])
def test_public_checks_recognise_a_mistake_by_its_results(reference, cell, grade_id, old, new, mistake_id):
    with pytest.raises(CheckFailed) as failure:
        CHECKS[cell](_with(reference, _mutated(grade_id, old, new),
                           *([_reference_cell("GPT")] if grade_id == "causal_self_attention" else [])))
    assert hint(mistake_id) in _flat(str(failure.value)), str(failure.value)


def test_a_mistake_the_catalogue_lacks_fails_without_a_wrong_hint(reference):
    """q, k, v taken as v, k, q: no catalogue mistake gives these results, so none is named."""
    with pytest.raises(CheckFailed) as failure:
        CHECKS["test_causal_self_attention"](_with(reference, _mutated(
            "causal_self_attention", "split(C, dim=2)  # 3 x (B, T, C)", "split(C, dim=2)[::-1]")))
    assert "Hint:" not in str(failure.value), str(failure.value)


def test_hidden_case_hints_and_adapters(reference):
    """The predicates kept (a family of results no patch expresses), judged on one case each, the
    GPT adapter's determinism, and the statistical check (no sandbox needed)."""
    g = torch.Generator().manual_seed(0)
    args = checks._gpt_case(g)
    call = eval(checks.GPT_CALL, reference)
    expected = call(*args)
    renamed = _with(reference, _mutated("GPT", "ln_f=nn.LayerNorm(config.n_embd)", "ln_out=nn.LayerNorm("
                                        "config.n_embd)").replace("self.transformer.ln_f(x)", "self.transformer.ln_out(x)"))
    got = eval(checks.GPT_CALL, renamed)(*args)
    message = checks.CASES["test_GPT"][0].judge(got, expected, args)
    assert message is not None and "some parameter names differ" in str(message), message
    assert got[:2] == (["transformer.ln_out.bias", "transformer.ln_out.weight"],  # not loaded
                       ["transformer.ln_f.bias", "transformer.ln_f.weight"]), got[:2]  # not expected
    untied = eval(checks.GPT_CALL, _with(reference, UNTIED))  # its own head, from lm_head.weight
    first, again = untied(*args), untied(*args)
    assert first[2] - expected[2] == args[0]["vocab_size"] * args[0]["n_embd"]
    torch.testing.assert_close(first[3], again[3])
    torch.testing.assert_close(first[3], expected[3])
    args = checks._count_case(torch.Generator().manual_seed(1), True)
    exact = eval(checks.COUNT_CALL, reference)(*args)
    message = checks.CASES["test_count_parameters"][0].judge(exact / 2, exact, args)  # a float, and wrong
    assert message is not None and "return a Python int" in str(message), message
    args = checks._sample_many(torch.Generator().manual_seed(2), 0.5)
    sample = eval(checks.SAMPLE_UNSEEDED_CALL, reference)
    assert checks._statistical_check(sample(*args), sample(*args), args) is None  # two honest draws
    hot = eval(checks.SAMPLE_UNSEEDED_CALL, _with(reference, TEMPERATURE_MULTIPLIED))(*args)
    assert checks._statistical_check(hot, sample(*args), args) is not None


def test_hidden_sampling_cases_are_not_all_at_temperature_one():
    """Issue 18 §2: where the temperature is applied matters only at a temperature other than 1
    (and 0): every seed draws such temperatures, seeded and over many draws, with top-k/top-p too."""
    from autograder.grading import case_inputs

    for seed in (0, 1, 2):
        temperatures = []
        for i, case in enumerate(checks.CASES["test_sample_next"]):
            args = case_inputs(case, seed, "test_sample_next", i)
            temperatures.append((args[2], args[3] is not None or args[4] is not None, case.check is not None))
        assert any(t not in (0, 1) and not many for t, _, many in temperatures), temperatures
        assert any(t not in (0, 1) and many for t, _, many in temperatures), temperatures
        assert any(t not in (0, 1) and filtered for t, filtered, _ in temperatures), temperatures


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
