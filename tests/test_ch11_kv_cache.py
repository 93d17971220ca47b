"""Chapter 11 (the KV cache): the grader and the public checks on typical submissions.

One class is graded once: the reference, the untouched exercise, and typical mistakes written
as a student writes them (not the catalogue's patches, ``solutions/11-kv-cache/mistakes.yaml``,
which ``tests/test_mistakes.py`` tests one by one). The public checks are then run in this
process on the reference and on the mistakes.
"""

from __future__ import annotations

import types

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from autograder.chapters import ch11_kv_cache as checks
from autograder.spec import CheckFailed
from conftest import ROOT, grade_chapter, reference_namespace

ASSIGNMENT = "11-kv-cache"
FULL = 10.0

# Exercise 1: no context-limit check (slicing past max_len fails with a shape RuntimeError).
NO_LIMIT_CACHE = '''
class KVCache:
    def __init__(self, batch_size, n_kv_head, max_len, d_head, dtype=torch.float32, device=None):
        self.k = torch.zeros(batch_size, n_kv_head, max_len, d_head, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k_new, v_new):
        end = self.length + k_new.shape[2]
        self.k[:, :, self.length:end] = k_new
        self.v[:, :, self.length:end] = v_new
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]
'''
# Exercise 2: the keys and values appended twice (once "to store", once "to read").
APPENDED_TWICE = '''
def causal_self_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_head, cache=None):
    B, T, C = x.shape
    q, k, v = (x @ c_attn_weight + c_attn_bias).split(C, dim=-1)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
    if cache is not None:
        cache.append(k, v)
        k, v = cache.append(k, v)
    L = k.shape[2]
    mask = torch.ones(T, L, dtype=torch.bool, device=x.device).tril(L - T)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.transpose(1, 2).reshape(B, T, C) @ c_proj_weight + c_proj_bias
'''
# Exercise 3: every decode step fed at position 0 (position ids not advanced).
POSITIONS_STUCK = '''
def generate(params, prompt, max_new_tokens, n_head, temperature=0.0, seed=0, use_cache=True):
    wte = params["transformer.wte.weight"]
    B, T0 = prompt.shape
    block_size = params["transformer.wpe.weight"].shape[0]
    if T0 + max_new_tokens > block_size:
        raise ValueError(f"block_size = {block_size} exceeded")
    generator = torch.Generator(device=prompt.device).manual_seed(seed)
    n_layer = sum(1 for name in params if name.endswith(".ln_1.weight"))
    idx = prompt
    if use_cache:
        caches = [KVCache(B, n_head, block_size, wte.shape[1] // n_head, wte.dtype, wte.device)
                  for _ in range(n_layer)]
        logits = gpt_forward(params, prompt, torch.arange(T0, device=prompt.device), n_head, caches)
    for t in range(T0, T0 + max_new_tokens):
        if not use_cache:
            logits = gpt_forward(params, idx, torch.arange(t, device=prompt.device), n_head)
        next_id = sample_next(logits[:, -1], temperature, generator)
        idx = torch.cat([idx, next_id], dim=1)
        if use_cache and t + 1 < T0 + max_new_tokens:
            logits = gpt_forward(params, next_id, torch.arange(1, device=prompt.device), n_head, caches)
    return idx
'''
# Exercise 4: query heads paired with key/value heads round-robin (repeat instead of repeat_interleave).
TILED_GQA = '''
def grouped_query_attention(q, k, v):
    H, H_kv = q.shape[1], k.shape[1]
    if H % H_kv:
        raise ValueError("H must be a multiple of H_kv")
    k, v = k.repeat(1, H // H_kv, 1, 1), v.repeat(1, H // H_kv, 1, 1)
    T_q, T_k = q.shape[2], k.shape[2]
    mask = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(T_k - T_q)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
'''
# Exercise 5: temperature and seed not passed on (greedy text right, sampled text wrong).
DEFAULTS_ONLY = '''
def complete(text, max_new_tokens, temperature=0.0, seed=0, use_cache=True):
    vocabulary = MODEL["vocabulary"]
    if set(text) - set(vocabulary):
        raise ValueError("unknown character")
    prompt = torch.tensor([[vocabulary.index(c) for c in text]])
    ids = generate(MODEL["state_dict"], prompt, max_new_tokens, MODEL["config"]["n_head"],
                   use_cache=use_cache)
    return "".join(vocabulary[i] for i in ids[0].tolist())
'''
MISTAKES = {  # student -> (name replaced, source, graded cell, words of its hint: hidden, public)
    "no_limit": ("KVCache", NO_LIMIT_CACHE, "test_kv_cache", ("must raise ValueError naming max_len",) * 2),
    "appended_twice": ("causal_self_attention", APPENDED_TWICE, "test_causal_self_attention",
                       ("appended twice",) * 2),
    "positions_stuck": ("generate", POSITIONS_STUCK, "test_generate", ("not advanced during decode",) * 2),
    "tiled_gqa": ("grouped_query_attention", TILED_GQA, "test_grouped_query_attention", ("round-robin",) * 2),
    "defaults_only": ("complete", DEFAULTS_ONLY, "test_complete", ("temperature and seed are not passed on",) * 2),
}

# Mistakes found by a student-eye review and in issue 18, written other ways than the catalogue's
# patches: graded with the class, each named in its own cell and, through the catalogue's `uses`,
# in a cell whose code runs it, by the hidden cases and by the public check, with no other
# mistake's hint.
LIMITED_CACHE = NO_LIMIT_CACHE.replace("        end = self.length + k_new.shape[2]\n", (
    "        end = self.length + k_new.shape[2]\n        if end > self.k.shape[2]:\n"
    "            raise ValueError(f'max_len = {self.k.shape[2]} exceeded')\n"))
NO_DTYPE_CACHE = LIMITED_CACHE.replace(", dtype=dtype, device=device)", ")")
SLICED_EARLY_CACHE = LIMITED_CACHE.replace(
    "        self.length = end\n        return self.k[:, :, :end], self.v[:, :, :end]",
    "        old = self.k[:, :, :self.length], self.v[:, :, :self.length]\n        self.length = end\n"
    "        return old")
HEADS_MISSPLIT = APPENDED_TWICE.replace("        cache.append(k, v)\n", "").replace(
    "t.view(B, T, n_head, C // n_head).transpose(1, 2)", "t.reshape(B, n_head, T, C // n_head)")
TOP_LEFT_ATTENTION = APPENDED_TWICE.replace("        cache.append(k, v)\n", "").replace(
    "mask = torch.ones(T, L, dtype=torch.bool, device=x.device).tril(L - T)\n    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)",
    "y = F.scaled_dot_product_attention(q, k, v, is_causal=True)")
DECODE_AT_T = POSITIONS_STUCK.replace("torch.arange(1, device=prompt.device)",
                                      "torch.arange(t, t + 1, device=prompt.device)")
RESEEDED = DECODE_AT_T.replace("sample_next(logits[:, -1], temperature, generator)",
                               "sample_next(logits[:, -1], temperature, torch.Generator().manual_seed(seed))")
PREFILL_SHORT = DECODE_AT_T.replace(  # the prefill on the prompt less its last token
    "gpt_forward(params, prompt, torch.arange(T0, device=prompt.device), n_head, caches)",
    "gpt_forward(params, prompt[:, :-1], torch.arange(T0 - 1, device=prompt.device), n_head, caches)")
GQA_NO_ERROR = TILED_GQA.replace('    if H % H_kv:\n        raise ValueError("H must be a multiple of H_kv")\n', "").replace(
    "k.repeat(1, H // H_kv, 1, 1), v.repeat(1, H // H_kv, 1, 1)",
    "k.repeat_interleave(H // H_kv, 1), v.repeat_interleave(H // H_kv, 1)")
REVIEWED = {  # student -> (name replaced, source, {graded cell, its own first: (words of its hint,
    #                                                   a hint that must not show)})
    "no_dtype": ("KVCache", NO_DTYPE_CACHE,
                 {"test_kv_cache": ("dtype=dtype, device=device", "returned only the keys")}),
    "sliced_early": ("KVCache", SLICED_EARLY_CACHE,
                     {"test_kv_cache": ("after advancing self.length", "returned only the keys")}),
    "heads": ("causal_self_attention", HEADS_MISSPLIT,
              {"test_causal_self_attention": ("mixes positions into heads", "aligned top-left"),
               "test_generate": ("mixes positions into heads", "make the generator once")}),
    "top_left": ("causal_self_attention", TOP_LEFT_ATTENTION,
                 {"test_causal_self_attention": ("aligned top-left", "mixes positions into heads"),
                  "test_generate": ("aligned top-left", "make the generator once")}),
    "reseeded": ("generate", RESEEDED, {"test_generate": ("make the generator once", "off-by-one")}),
    "prefill_short": ("generate", PREFILL_SHORT, {"test_generate": ("one token too few", "make the generator once")}),
    "gqa_error": ("grouped_query_attention", GQA_NO_ERROR,
                  {"test_grouped_query_attention": ("H_kv does not divide", "round-robin")}),
}
CHECKS = {"test_kv_cache": lambda ns: checks.check_kv_cache(ns["KVCache"]),
          "test_causal_self_attention": lambda ns: checks.check_causal_self_attention(
              ns["causal_self_attention"], ns["KVCache"]),
          "test_generate": lambda ns: checks.check_generate(ns["generate"]),
          "test_grouped_query_attention": lambda ns: checks.check_grouped_query_attention(
              ns["grouped_query_attention"]),
          "test_complete": lambda ns: checks.check_complete(ns["complete"])}


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory) -> dict[str, dict]:
    return grade_chapter(course, ASSIGNMENT, {**MISTAKES, **REVIEWED}, tmp_path_factory.mktemp("downloads"))


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
    _, _, cell, (words, _) = MISTAKES[student]
    row = graded[student]
    assert 0 < row["score"] < FULL, row["report"]
    report = row["report"][cell]
    assert "Hint:" in report and words in report, report


@pytest.fixture(scope="module")
def reference(course) -> dict:
    return reference_namespace(course, ASSIGNMENT)


def test_reference_passes_every_public_check(reference, capsys):
    for check in CHECKS.values():
        check(reference)
    assert capsys.readouterr().out.count("✓") == len(CHECKS)


def _with(reference: dict, source: str) -> dict:
    """The reference namespace with one definition replaced, as in a notebook: the reference's
    other functions are re-bound to the new namespace, so they call the replacement."""
    namespace = dict(reference)
    exec(source, namespace)
    for name, fn in reference.items():
        if isinstance(fn, types.FunctionType) and fn.__globals__ is reference and namespace[name] is fn:
            namespace[name] = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__,
                                                 fn.__closure__)
    return namespace


@pytest.mark.parametrize("student", MISTAKES)
def test_public_check_explains_each_typical_mistake(reference, student):
    name, source, cell, (_, words) = MISTAKES[student]
    with pytest.raises(CheckFailed) as failure:
        CHECKS[cell](_with(reference, source))
    message = str(failure.value)
    assert "Hint:" in message and words in message, message


ONLY_NEW_CACHE = NO_LIMIT_CACHE.replace("return self.k[:, :, :end], self.v[:, :, :end]", "return k_new, v_new")


@pytest.mark.parametrize("source, cell, words", [
    (ONLY_NEW_CACHE, "test_kv_cache", "returned only the keys and values it was given"),
    (POSITIONS_STUCK.replace("torch.arange(1, device=prompt.device)",
                             "torch.arange(t + 1, t + 2, device=prompt.device)"),
     "test_generate", "off-by-one"),
    (TILED_GQA.replace(".tril(T_k - T_q)", ".tril()").replace("k.repeat(1, H // H_kv, 1, 1), v.repeat(1, H // H_kv, 1, 1)",
                                                           "k.repeat_interleave(H // H_kv, 1), v.repeat_interleave(H // H_kv, 1)"),
     "test_grouped_query_attention", "aligned top-left"),
])
def test_public_checks_recognise_other_mistakes(reference, source, cell, words):
    assert source not in (APPENDED_TWICE, NO_LIMIT_CACHE, POSITIONS_STUCK, TILED_GQA)
    with pytest.raises(CheckFailed) as failure:
        CHECKS[cell](_with(reference, source))
    assert words in str(failure.value), str(failure.value)


@pytest.mark.parametrize("student", REVIEWED)
def test_reviewed_mistakes_are_named_where_their_code_runs(graded, reference, student):
    name, source, cells = REVIEWED[student]
    assert source not in (NO_LIMIT_CACHE, LIMITED_CACHE, APPENDED_TWICE, POSITIONS_STUCK, DECODE_AT_T, TILED_GQA)
    assert 0 < graded[student]["score"] < FULL, graded[student]["report"]
    for n, (cell, (words, wrong)) in enumerate(cells.items()):
        used = [] if n == 0 else ["which this exercise uses"]  # named from the cell it was made in
        with pytest.raises(CheckFailed) as failure:
            CHECKS[cell](_with(reference, source))
        public, hidden = str(failure.value), graded[student]["report"][cell]
        for text in (public, hidden):
            assert "Hint:" in text and all(w in text for w in [words, *used]) and wrong not in text, (cell, text)


def test_keys_appended_twice_are_named_in_generate_with_the_students_exception(graded, reference):
    """The cache overflows in generate: the report shows the exception the student's code raised
    (not a comparison with the text of it) and names the mistake of the attention it uses."""
    hidden = graded["appended_twice"]["report"]["test_generate"]
    assert "your code raised ValueError: context limit reached" in hidden and "got str" not in hidden, hidden
    assert "appended twice" in hidden and "which this exercise uses" in hidden, hidden
    with pytest.raises(CheckFailed) as failure:
        CHECKS["test_generate"](_with(reference, APPENDED_TWICE))
    public = str(failure.value)
    assert "raised ValueError: context limit reached" in public and "appended twice" in public, public


def test_complete_that_ignores_use_cache_is_told(reference):
    ignores = DEFAULTS_ONLY.replace("use_cache=use_cache)", "temperature=temperature, seed=seed)")
    assert ignores != DEFAULTS_ONLY
    with pytest.raises(CheckFailed) as failure:
        CHECKS["test_complete"](_with(reference, ignores))
    assert "pass use_cache on to generate" in str(failure.value), str(failure.value)


def test_memory_formula_matches_the_cache_buffers(reference):
    """2 · layers · kv_heads · d_head · tokens · bytes, against the nbytes of real caches."""
    layers, kv_heads, d_head, tokens = 3, 2, 16, 40
    for dtype, size in ((torch.float32, 4), (torch.float64, 8), (torch.bfloat16, 2)):
        caches = [reference["KVCache"](1, kv_heads, tokens, d_head, dtype=dtype) for _ in range(layers)]
        measured = sum(c.k.nbytes + c.v.nbytes for c in caches)
        assert measured == 2 * layers * kv_heads * d_head * tokens * size


def test_untouched_notebook_checks_say_what_to_do():
    """Run the student version as a student would: every check cell fails with a sentence."""
    nb = nbformat.read(ROOT / "exercises" / ASSIGNMENT / "kv_cache.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises" / ASSIGNMENT)}}).execute()
    test_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(test_cells) == len(checks.CASES)
    for cell in test_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors and errors[0].ename == "CheckFailed", cell.source
        assert "replace `raise NotImplementedError()` with your code" in errors[0].evalue
