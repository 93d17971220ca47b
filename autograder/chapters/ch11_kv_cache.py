"""Chapter 11 — the KV cache: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook. They test properties that need no
reference generator: a cache fed in pieces equals one pass without it; cached generation equals
uncached generation; each greedy token is the argmax of one teacher-forced forward pass over the
student's own output; attention equals ``nn.MultiheadAttention`` and grouped-query attention
equals ``F.scaled_dot_product_attention(enable_gqa=True)``. ``CASES`` is what the grader runs.

The typical mistakes and their hints are the chapter's catalogue,
``solutions/11-kv-cache/mistakes.yaml``: the grader and these checks name a mistake when a
result is that mistake's result. Its ``uses`` lets a cache or attention mistake be named in the
cells of ``generate`` and ``complete`` too, which run that code.

Conventions (the exercise text states them too): tensors of heads are ``(B, H, T, d_head)``; with
a cache the queries are the *last* T of L positions (query i sits at L - T + i); a cache or a
generation that would pass the context limit raises ValueError.

The adapters (:func:`replay`, :func:`attend`, :func:`traced`) drive the student's code the same
way for the reference and the student and return plain data; :func:`traced` also records the
positions and lengths of every ``gpt_forward`` call, which the public check of ``generate`` shows.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import call, expect_example, outcome, raised, raised_kind, randint, same_error, seeded
from ..compare import describe_difference
from ..spec import Case, CheckFailed, Hint, expect, passed


# ----------------------------------------------------------------------------------------
# Exceptions reported as results (checks.outcome): hidden cases and public checks
# ----------------------------------------------------------------------------------------

def _difference(got: Any, expected: Any, name: str) -> str | None:
    """:func:`describe_difference`, except for reported exceptions: two of one type agree (the
    messages are the student's own), and a student's exception is shown as theirs."""
    if raised(got) or raised(expected):
        message = same_error(got, expected)
        return message and f"{name}: {message}"
    if isinstance(got, dict) and isinstance(expected, dict) and got.keys() == expected.keys():
        return next((m for k in expected if (m := _difference(got[k], expected[k], f"{name}[{k!r}]"))), None)
    if isinstance(got, (list, tuple)) and isinstance(expected, (list, tuple)) and len(got) == len(expected):
        return next((m for i, (g, e) in enumerate(zip(got, expected))
                     if (m := _difference(g, e, f"{name}[{i}]"))), None)
    return describe_difference(got, expected, name)


def _check(got: Any, expected: Any, args: tuple) -> str | None:
    """Values as usual; where the reference raised ValueError any ValueError passes."""
    return _difference(got, expected, "output")


def _expect_as(message: str, got: Any, expected: Any, key: str, hints: Sequence[str] = ()) -> None:
    """:func:`expect` under the example ``key`` (so that the catalogue mistakes that give ``got``
    there are named), failing with ``message`` in place of expect's first line."""
    try:
        expect(got, expected, key, hints)
    except CheckFailed as failure:
        raise CheckFailed("\n".join([message, *str(failure).splitlines()[1:]])) from None


def _expect_outcome(got: Any, shown: str, error: str | None = None, hints: Sequence[str] = (),
                    calls: list | None = None) -> None:
    """Public check of an :func:`outcome`: it returned (``error`` None) or raised ``error``. The
    student's own exception is shown; the mistakes named are those that end the same way here
    (the type of the exception, not its words, which are the student's own; with the ``calls``
    of ``gpt_forward`` made before, when given, which tell apart mistakes that raise alike)."""
    kind = f"raised {raised_kind(got)}" if raised(got) else "returned"
    want = f"raised {error}" if error else "returned"
    said = got if raised(got) else "returned a result"
    _expect_as(f"{shown} {said}: expected {'a ' + error if error else 'a result'}.",
               kind if calls is None or kind == want else (kind, calls), want, f"{shown}: raised or returned", hints)


# ----------------------------------------------------------------------------------------
# Exercise 1: the cache
# ----------------------------------------------------------------------------------------

def replay(KVCache: Callable, shape: tuple, chunks: list, dtype_of: torch.Tensor) -> dict:
    """Make ``KVCache(*shape)`` with ``dtype_of``'s dtype and device, append ``chunks`` (pairs of
    (B, H_kv, T_new, d) tensors) one by one; report buffers and every append's outcome."""
    cache = KVCache(*shape, dtype=dtype_of.dtype, device=dtype_of.device)
    report = {"k": (tuple(cache.k.shape), str(cache.k.dtype), cache.k.device.type),
              "v": (tuple(cache.v.shape), str(cache.v.dtype), cache.v.device.type),
              "length": [cache.length], "appended": []}
    for k, v in chunks:
        result = outcome(lambda: cache.append(k, v))
        if not isinstance(result, str):
            result = tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in result)
        report["appended"].append(result)
        report["length"].append(cache.length)
    return report


def check_kv_cache(KVCache: Callable) -> None:
    """The exercise's worked example, the memory formula, the context limit, dtype and device."""
    k2 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    k1 = torch.tensor([[[[5.0, 6.0]]]])  # (1, 1, 1, 2)
    cache = call(lambda: KVCache(1, 1, 4, 2), "KVCache(1, 1, 4, 2)")
    for name in ("k", "v"):
        buffer = getattr(cache, name, None)
        expect(None if buffer is None else (tuple(buffer.shape), str(buffer.dtype)),
               ((1, 1, 4, 2), "torch.float32"), f"KVCache(1, 1, 4, 2).{name} (shape, dtype)",
               ["allocate self.k and self.v at full size in __init__: (batch_size, n_kv_head, "
                "max_len, d_head), with the given dtype and device."])
    expect(getattr(cache, "length", None), 0, "KVCache(1, 1, 4, 2).length", ["start at 0."])
    expect(cache.k.nbytes + cache.v.nbytes, 2 * 1 * 1 * 4 * 2 * 4,
           "cache.k.nbytes + cache.v.nbytes",
           ["2 (keys and values) · batch 1 · 1 head · 4 positions · d_head 2 · 4 bytes (float32)."])
    shown = "KVCache(1, 1, 4, 2).append(k2, 10 * k2) with k2 = [[[[1, 2], [3, 4]]]]"
    got = call(cache.append, shown, k2, 10 * k2)
    expect(got, (k2, 10 * k2), shown, ["the cache was empty: it now holds exactly these 2 positions."])
    expect(cache.length, 2, "length after appending 2 positions", ["advance self.length by T_new."])
    shown = "then .append(k1, 10 * k1) with k1 = [[[[5, 6]]]]"
    got = call(cache.append, shown, k1, 10 * k1)
    both = torch.cat([k2, k1], dim=2)
    expect(got, (both, 10 * both), shown, ["append returns all 3 positions held so far, the old ones first."])
    expect(cache.length, 3, "length after appending 2 + 1 positions", ["advance self.length by T_new."])
    shown = "then .append(k2, k2): 3 + 2 positions in a cache of max_len = 4"
    got = call(lambda: outcome(lambda: cache.append(k2, k2)), shown)
    _expect_outcome(got, shown, "ValueError", ["3 + 2 positions do not fit max_len = 4: raise ValueError "
                                               "before writing anything."])
    if "4" not in got:
        raise CheckFailed(f"{shown} {got}: name max_len (4) in the message, so the user knows the limit.")
    expect(cache.length, 3, "length after the append that raised", ["leave the cache unchanged when raising."])
    count = 7
    g = torch.Generator().manual_seed(0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        k = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64).to(device)
        shown = f"KVCache(2, 3, 8, 4, dtype=torch.float64, device={device!r}) fed 5 + 3 positions"
        cache = call(lambda: KVCache(2, 3, 8, 4, dtype=torch.float64, device=device), shown)
        call(cache.append, shown, k, -k)
        got = call(cache.append, shown, k[:, :, :3], -k[:, :, :3])
        full = torch.cat([k, k[:, :, :3]], dim=2)
        expect(got, (full, -full), shown, ["float64 buffers on the requested device; the result is "
                                           "their first 8 positions."])
        expect(cache.k.nbytes + cache.v.nbytes, 2 * 2 * 3 * 8 * 4 * 8, shown + ": nbytes",
               ["2 · 2 · 3 · 8 · 4 values of 8 bytes (float64)."])
        count += 1
    passed("KVCache", count)


# ----------------------------------------------------------------------------------------
# Exercise 2: attention through the cache
# ----------------------------------------------------------------------------------------

def attend(attention: Callable, KVCache: Callable, x: torch.Tensor, weights: tuple, n_head: int,
           chunks: list | None) -> Any:
    """Without ``chunks``: ``attention(x, *weights, n_head)``. With ``chunks`` (sizes summing to
    T): x fed piece by piece through one ``KVCache``; returns (outputs joined along T, length)."""
    if chunks is None:
        return attention(x, *weights, n_head)
    B, T, C = x.shape
    cache = KVCache(B, n_head, 2 * T + 2, C // n_head, dtype=x.dtype, device=x.device)  # room for mistakes
    outputs, start = [], 0
    for size in chunks:
        outputs.append(attention(x[:, start:start + size], *weights, n_head, cache))
        start += size
    return torch.cat(outputs, dim=1), cache.length


def _mha(x: torch.Tensor, weights: tuple, n_head: int) -> torch.Tensor:
    """PyTorch's nn.MultiheadAttention with GPT-2's weights (transposed) and a causal mask."""
    c_attn_w, c_attn_b, c_proj_w, c_proj_b = weights
    T, C = x.shape[1], x.shape[2]
    with seeded(0):  # its initial weights, all replaced below, would draw from the student's generator
        mha = nn.MultiheadAttention(C, n_head, batch_first=True, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(c_attn_w.T)
        mha.in_proj_bias.copy_(c_attn_b)
        mha.out_proj.weight.copy_(c_proj_w.T)
        mha.out_proj.bias.copy_(c_proj_b)
        blocked = ~torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # True = blocked here
        return mha(x, x, x, attn_mask=blocked, need_weights=False)[0]


def _attention_weights(g: torch.Generator, C: int, dtype=torch.float32) -> tuple:
    def randn(*shape, scale):
        return torch.randn(*shape, generator=g, dtype=dtype) * scale
    return (randn(C, 3 * C, scale=C ** -0.5), randn(3 * C, scale=0.1),
            randn(C, C, scale=C ** -0.5), randn(C, scale=0.1))


def check_causal_self_attention(attention: Callable, KVCache: Callable) -> None:
    """No cache: equal to nn.MultiheadAttention. With one: any split into pieces gives the same."""
    g = torch.Generator().manual_seed(0)
    count = 0
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(2, 7, 8, generator=g, dtype=dtype)
        weights = _attention_weights(g, 8, dtype)
        expected = _mha(x, weights, 2)
        shown = f"causal_self_attention(<random {str(dtype)[6:]} (2, 7, 8) x>, ..., n_head=2)"
        got = call(attend, shown, attention, KVCache, x, weights, 2, None)
        expect_example(got, expected, shown, "without a cache the result equals nn.MultiheadAttention "
                       "(in_proj_weight = c_attn_weight.T, out_proj.weight = c_proj_weight.T) with a causal "
                       "mask: check the q | k | v order of the columns, how the heads are split (head h "
                       "takes features h·d_head … (h+1)·d_head - 1) and merged back, and the mask.")
        count += 1
        for chunks in ([5, 1, 1], [3, 4], [1] * 7, [7]):
            shown = f"the same x fed through one KVCache in pieces of {chunks} tokens"
            got = call(attend, shown, attention, KVCache, x, weights, 2, chunks)
            expect_example(got, (expected, 7), shown, "the outputs, joined, equal one pass over all 7 tokens "
                           "without a cache, and the cache then holds 7 positions.")
            count += 1
    passed("causal_self_attention", count)


# ----------------------------------------------------------------------------------------
# Exercise 3: prefill + decode
# ----------------------------------------------------------------------------------------

def traced(generate: Callable, *args: Any) -> dict:
    """``generate(*args)``'s tokens, and (T, positions, cached) of every ``gpt_forward`` call it
    made (the notebook's own ``gpt_forward``, wrapped while the call runs)."""
    namespace = generate.__globals__
    forward = namespace["gpt_forward"]
    calls = []

    def recording(params, idx, pos, n_head, caches=None):
        calls.append((int(idx.shape[1]), [int(p) for p in torch.as_tensor(pos).reshape(-1).tolist()],
                      caches is not None))
        return forward(params, idx, pos, n_head, caches)

    namespace["gpt_forward"] = recording
    try:
        tokens = outcome(lambda: generate(*args))
    finally:
        namespace["gpt_forward"] = forward
    return {"tokens": tokens, "calls": calls}


def _generate_check(got: Any, expected: Any, args: tuple) -> str | None:
    """Only the tokens are graded (how many forward calls a correct loop makes is its own business)."""
    if not isinstance(got, dict) or "tokens" not in got:
        return f"expected the traced result of generate, got {type(got).__name__}"
    return _difference(got["tokens"], expected["tokens"], "tokens")


GEN_NO_CACHE = ("use_cache=True but no call passed the caches: make one KVCache per layer and pass the "
                "list to gpt_forward in the prefill and in every decode step.")  # public check only


def random_params(g: torch.Generator, vocab: int, n_layer: int, C: int, block_size: int,
                  dtype=torch.float32, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A random state_dict in GPT2LMHeadModel's layout (no lm_head: it is tied to wte)."""
    def randn(*shape, std):
        return torch.randn(*shape, generator=g, dtype=dtype) * std * scale

    params = {"transformer.wte.weight": randn(vocab, C, std=1.0),
              "transformer.wpe.weight": randn(block_size, C, std=1.0),
              "transformer.ln_f.weight": 1 + randn(C, std=0.1), "transformer.ln_f.bias": randn(C, std=0.1)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        params |= {p + "ln_1.weight": 1 + randn(C, std=0.1), p + "ln_1.bias": randn(C, std=0.1),
                   p + "attn.c_attn.weight": randn(C, 3 * C, std=C ** -0.5),
                   p + "attn.c_attn.bias": randn(3 * C, std=0.1),
                   p + "attn.c_proj.weight": randn(C, C, std=C ** -0.5),
                   p + "attn.c_proj.bias": randn(C, std=0.1),
                   p + "ln_2.weight": 1 + randn(C, std=0.1), p + "ln_2.bias": randn(C, std=0.1),
                   p + "mlp.c_fc.weight": randn(C, 4 * C, std=C ** -0.5),
                   p + "mlp.c_fc.bias": randn(4 * C, std=0.1),
                   p + "mlp.c_proj.weight": randn(4 * C, C, std=(4 * C) ** -0.5),
                   p + "mlp.c_proj.bias": randn(C, std=0.1)}
    return params


def check_generate(generate: Callable) -> None:
    """Positions of every call, shape, greedy tokens against one teacher-forced pass, cached ==
    uncached (greedy and sampled), the draws of one generator seeded once, and the context limit."""
    g = torch.Generator().manual_seed(0)
    params = random_params(g, vocab=11, n_layer=2, C=8, block_size=16)
    prompt = torch.randint(11, (2, 4), generator=g)
    forward = generate.__globals__["gpt_forward"]
    want = [(4, [0, 1, 2, 3], True)] + [(1, [t], True) for t in range(4, 9)]
    count = 0
    for use_cache in (True, False):
        shown = f"generate(<random 2-layer model, block_size 16>, <(2, 4) prompt>, 6, n_head=2, use_cache={use_cache})"
        result = call(traced, shown, generate, params, prompt, 6, 2, 0.0, 0, use_cache)
        tokens, calls = result["tokens"], result["calls"]
        if use_cache:  # the calls made (all of them up to an exception), then the exception
            made = calls[:len(want)]
            _expect_as(f"{shown}: gpt_forward was called with (T, positions, caches given) = {calls}; "
                       f"expected a prefill {want[0]} then one decode call per new token {want[1:3]} … "
                       f"(the last token needs no call).", made, want[:len(made)] if raised(tokens) else want,
                       f"{shown}: gpt_forward calls", [GEN_NO_CACHE] if not any(c[2] for c in calls) else [])
            count += 1
        _expect_outcome(tokens, shown)
        expect(tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__, (2, 10),
               shown + ".shape", ["prompt (2, 4) + 6 new tokens."])
        expect(tokens[:, :4], prompt, shown + "[:, :4]", ["the result starts with the prompt."])
        with torch.no_grad():  # greedy: each new token is the argmax after the tokens before it
            best = forward(params, tokens[:, :-1], torch.arange(9), 2)[:, 3:].argmax(-1)
        if (message := describe_difference(tokens[:, 4:], best, shown + "[:, 4:]")) is not None:
            _expect_as(message, (tokens[:, 4:], best), (best, best), f"{shown}: (tokens[:, 4:], argmax after them)",
                       ["with temperature 0, token t is the argmax of the logits at position t - 1, "
                        "computed from the tokens before it (one uncached forward pass over your output "
                        "gives them all)."])
        count += 3
    for seed in (0, 1):
        runs = {}
        for use_cache in (True, False):
            shown = f"generate(..., 8, n_head=2, temperature=0.9, seed={seed}, use_cache={use_cache})"
            runs[use_cache] = call(traced, shown, generate, params, prompt, 8, 2, 0.9, seed, use_cache)["tokens"]
            _expect_outcome(runs[use_cache], shown)
        expect(runs[True], runs[False], f"sampled tokens with the cache (seed {seed}), compared with those without it",
               ["both ways the logits are the same, and with one generator seeded once and one "
                "sample_next call per step, so are the draws."])
        count += 1
    uniform = dict(params, **{"transformer.wte.weight": torch.zeros(11, 8)})  # every logit 0
    shown = "generate(<a model whose logits are all 0>, <(2, 4) prompt>, 12, n_head=2, temperature=1.0)"
    tokens = call(generate, shown, uniform, prompt, 12, 2, 1.0, 0)
    draws = torch.Generator().manual_seed(0)  # what sample_next draws from one generator, seeded once
    expected = torch.cat([prompt, *(torch.multinomial(torch.softmax(torch.zeros(2, 11), dim=-1), 1, generator=draws)
                                    for _ in range(12))], dim=1)
    expect(tokens, expected, shown, ["all 11 tokens are equally likely: one generator, made before the loop "
                                     "with manual_seed(seed), and one sample_next call per new token draw "
                                     "exactly these tokens."])
    count += 1
    for new, ok in ((12, True), (13, False)):
        shown = f"generate(<block_size 16>, <(2, 4) prompt>, {new}, n_head=2)"
        result = call(traced, shown, generate, params, prompt, new, 2)
        _expect_outcome(result["tokens"], shown, None if ok else "ValueError",
                        ["4 + 12 = 16 tokens fit block_size 16."] if ok else
                        ["4 + 13 > 16: raise ValueError naming block_size before any work."])
        count += 1
    passed("generate", count)


# ----------------------------------------------------------------------------------------
# Exercise 4: grouped-query attention
# ----------------------------------------------------------------------------------------

def check_grouped_query_attention(gqa: Callable) -> None:
    """MQA by hand, then agreement with F.scaled_dot_product_attention(enable_gqa=True)."""
    q = torch.randn(1, 3, 1, 4, generator=torch.Generator().manual_seed(0))
    k = torch.zeros(1, 1, 1, 4)
    v = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    shown = "grouped_query_attention(<(1, 3, 1, 4) q>, <(1, 1, 1, 4) k>, v = [[[[1, 2, 3, 4]]]])"
    expect_example(call(gqa, shown, q, k, v), v.expand(1, 3, 1, 4), shown,
                   "multi-query attention with one key: every query head gives weight 1 to it, so every "
                   "head's output is v.")
    g = torch.Generator().manual_seed(1)
    count = 1
    for H, H_kv, T_q, T_k, dtype in ((4, 2, 5, 5, torch.float32), (6, 3, 1, 9, torch.float64),
                                     (4, 4, 3, 7, torch.float32), (8, 1, 2, 6, torch.float64)):
        q = torch.randn(2, H, T_q, 4, generator=g, dtype=dtype)
        k = torch.randn(2, H_kv, T_k, 4, generator=g, dtype=dtype)
        v = torch.randn(2, H_kv, T_k, 4, generator=g, dtype=dtype)
        mask = torch.ones(T_q, T_k, dtype=torch.bool).tril(T_k - T_q)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        shown = f"grouped_query_attention(<H={H}, H_kv={H_kv}, T_q={T_q}, T_k={T_k}, {str(dtype)[6:]}>)"
        expect_example(call(gqa, shown, q, k, v), expected, shown,
                       "the result equals F.scaled_dot_product_attention(q, k, v, attn_mask=<the causal mask of "
                       "the last T_q of T_k positions>, enable_gqa=True).")
        count += 1
    shown = "grouped_query_attention(<H=3 query heads>, <H_kv=2>)"
    got = call(lambda: outcome(lambda: gqa(torch.zeros(1, 3, 2, 4), torch.zeros(1, 2, 2, 4),
                                           torch.zeros(1, 2, 2, 4))), shown)
    _expect_outcome(got, shown, "ValueError", ["3 query heads do not split into groups over 2 key/value heads."])
    passed("grouped_query_attention", count + 1)


# ----------------------------------------------------------------------------------------
# Exercise 5: capstone
# ----------------------------------------------------------------------------------------

def _both(result: Any) -> tuple | None:
    return result if isinstance(result, tuple) and len(result) == 2 else None


CAPSTONE_DIFFER = Hint(
    "your cached and uncached texts differ: run the checks of Exercises 1–3 again (a decode step "
    "at the wrong position, or keys appended twice, changes the cached text only).",
    lambda got, exp, args: _both(got) is not None and got[0] != got[1])
CAPSTONE_USE_CACHE = ("pass use_cache on to generate: complete(..., use_cache=False) must generate "
                      "without the cache, or the comparison of the two compares the cache with itself.")


def check_complete(complete: Callable) -> None:
    """Greedy and sampled text, with and without the cache: equal character for character."""
    count = 0
    for prompt, n, temperature, seed in (("ROMEO:\n", 60, 0.0, 0), ("To be, or not", 80, 0.8, 1)):
        texts = {}
        for use_cache in (True, False):
            shown = f"complete({prompt!r}, {n}, temperature={temperature}, seed={seed}, use_cache={use_cache})"
            result = call(traced, shown, complete, prompt, n, temperature, seed, use_cache)
            text = texts[use_cache] = result["tokens"]
            _expect_outcome(text, shown, calls=result["calls"])
            _expect_as(f"{shown} returned {text!r:.120}: expected a string of {len(prompt) + n} characters "
                       f"starting with the prompt.",
                       (len(text), text[:len(prompt)]) if isinstance(text, str) else type(text).__name__,
                       (len(prompt) + n, prompt), f"{shown}: (length, start)",
                       ["the prompt followed by the max_new_tokens new characters."])
            if any(cached for _, _, cached in result["calls"]) != use_cache:
                raise CheckFailed(f"{shown}: gpt_forward was called {'without' if use_cache else 'with'} "
                                  f"caches.\nHint: {CAPSTONE_USE_CACHE}")
        expect(texts[True], texts[False], f"complete({prompt!r}, {n}, temperature={temperature}) with "
               "the cache, compared with the same call without it", [CAPSTONE_DIFFER.text])
        print(f"--- {prompt!r}, temperature {temperature}, seed {seed} (cached == uncached):\n"
              f"{texts[True]}\n")
        count += 1
    greedy = call(complete, "complete('To be, or not', 80)", "To be, or not", 80)
    expect(texts[True] == greedy, False, "complete('To be, or not', 80, temperature=0.8, seed=1) == "
           "complete('To be, or not', 80) (greedy)", ["at temperature 0.8 the text is sampled: pass "
                                                     "temperature and seed on to generate."])
    other = call(complete, "complete('To be, or not', 80, temperature=0.8, seed=2)", "To be, or not", 80, 0.8, 2)
    expect(texts[True] == other, False, "complete('To be, or not', 80, temperature=0.8, seed=1) == the same "
           "with seed=2", ["each seed gives its own draws: pass seed on to generate."])
    shown = "complete('Hello ~ world', 5)"
    got = call(lambda: outcome(lambda: complete("Hello ~ world", 5)), shown)
    _expect_outcome(got, shown, "ValueError", ["'~' is not in the vocabulary."])
    passed("complete", count + 3)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG.
# Sizes are drawn from at least 2 (one head, one token or a batch of one hide mistakes); such
# edge cases are cases of their own.
# ----------------------------------------------------------------------------------------

def _dtype(g: torch.Generator) -> torch.dtype:
    return (torch.float32, torch.float64)[randint(g, 0, 2)]


def _cache_case(g: torch.Generator, sizes: list[int], max_len: int, dtype=torch.float32,
                dims: tuple | None = None) -> tuple:
    B, H, d = dims or (randint(g, 2, 4), randint(g, 2, 4), randint(g, 2, 6))
    chunks = [(torch.randn(B, H, s, d, generator=g, dtype=dtype), torch.randn(B, H, s, d, generator=g, dtype=dtype))
              for s in sizes]
    return (B, H, max_len, d), chunks, torch.zeros(1, dtype=dtype)


def _cache_prefill_decode(g):
    T0, n = randint(g, 2, 7), randint(g, 2, 5)
    return _cache_case(g, [T0] + [1] * n, T0 + n + randint(g, 0, 3), _dtype(g))


def _cache_overflow(g):
    max_len = randint(g, 3, 7)
    return _cache_case(g, [max_len - 1, 2, 1], max_len)  # the 2 do not fit, the 1 then does


def _cache_exact(g):
    max_len = randint(g, 2, 6)
    return _cache_case(g, [max_len, 1], max_len, torch.float64)  # full, then one too many


def _cache_limit_named(g):
    """max_len 5..9: above the batch size and the number of heads (2 or 3), and not the length that
    overflows (max_len + 1), so that a message showing one of those in max_len's place fails."""
    max_len = randint(g, 5, 10)
    return _cache_case(g, [max_len - 2, 3, 2], max_len)  # the 3 do not fit, the 2 then do


def _check_limit_named(got: Any, expected: Any, args: tuple) -> str | None:
    """:func:`_check`, and a ValueError of an append names max_len's value where the expected one
    does (the exercise asks for a message that names max_len and its value, e.g. ``max_len = 4``;
    the reference's always does, a catalogue mistake's may not)."""
    if (message := _check(got, expected, args)) is not None:
        return message
    max_len = args[0][2]

    def named(result: Any) -> bool:
        return raised(result, "ValueError") and re.search(rf"(?<!\d){max_len}(?!\d)", result) is not None

    for i, (mine, theirs) in enumerate(zip(got["appended"], expected["appended"])):
        if raised(mine, "ValueError") and named(mine) != named(theirs):
            return (f"output['appended'][{i}]: your code {mine}, a message without max_len's value "
                    f"{max_len}: name max_len and its value, e.g. max_len = {max_len}" if not named(mine) else
                    f"output['appended'][{i}]: the message names max_len's value {max_len}, the expected one does not")
    return None


CACHE_CALL = "lambda shape, chunks, like: checks.replay(KVCache, shape, chunks, like)"


def _attention_case(g: torch.Generator, chunks: list[int] | None, dtype=torch.float32, *,
                    n_head: int | None = None, T: int | None = None) -> tuple:
    n_head, d = n_head or randint(g, 2, 5), randint(g, 2, 5)
    C = n_head * d
    T = sum(chunks) if chunks else T or randint(g, 2, 9)
    x = torch.randn(randint(g, 2, 4), T, C, generator=g, dtype=dtype)
    return x, _attention_weights(g, C, dtype), n_head, chunks


ATTENTION_CALL = ("lambda x, w, n_head, chunks: "
                  "checks.attend(causal_self_attention, KVCache, x, w, n_head, chunks)")


def _generate_case(g: torch.Generator, *, use_cache: bool, temperature: float = 0.0,
                   overflow: bool = False, dtype=torch.float32, T0: int | None = None,
                   full: bool = False) -> tuple:
    n_head, d = randint(g, 2, 4), randint(g, 2, 4)
    block = randint(g, 8, 20)
    vocab = randint(g, 4, 16)
    params = random_params(g, vocab, randint(g, 1, 3), n_head * d, block, dtype)
    T0 = T0 or randint(g, 2, 6)
    new = block - T0 + 1 if overflow else block - T0 if full else randint(g, 3, block - T0 + 1)  # >= 2 decode steps
    prompt = torch.randint(vocab, (randint(g, 2, 4), T0), generator=g)
    return params, prompt, new, n_head, temperature, randint(g, 0, 1000), use_cache


GENERATE_CALL = "lambda *args: checks.traced(generate, *args)"


def _gqa_case(g: torch.Generator, T_q: int, T_k: int, dtype=torch.float32) -> tuple:
    H_kv = randint(g, 1, 4)
    H = H_kv * randint(g, 2, 4)
    B, d = randint(g, 1, 3), randint(g, 2, 9)
    return (torch.randn(B, H, T_q, d, generator=g, dtype=dtype),
            torch.randn(B, H_kv, T_k, d, generator=g, dtype=dtype),
            torch.randn(B, H_kv, T_k, d, generator=g, dtype=dtype))


def _gqa_grouped(g):
    """At least 2 key/value heads and groups of at least 2: the pairing of heads matters."""
    H_kv, n_rep, T = randint(g, 2, 5), randint(g, 2, 4), randint(g, 2, 8)
    B, d = randint(g, 1, 3), randint(g, 2, 9)
    return (torch.randn(B, H_kv * n_rep, T, d, generator=g), torch.randn(B, H_kv, T, d, generator=g),
            torch.randn(B, H_kv, T, d, generator=g))


COMPLETE_CALL = ("lambda text, n, temperature, seed: (complete(text, n, temperature, seed, True), "
                 "complete(text, n, temperature, seed, False))")
_PROMPTS = ("ROMEO:\n", "KING LEAR:\nBlow, winds", "O", "HAMLET:\nTo be", "Enter MACBETH.\n\nMACBETH.\n")


def _complete_case(g, temperature: float) -> tuple:
    return _PROMPTS[randint(g, 0, len(_PROMPTS))], randint(g, 5, 40), temperature, randint(g, 1, 1000)


_UNKNOWN = "~#*@%+=<>_\t"  # characters the course's char GPT was not trained on


def _complete_unknown(g) -> tuple:
    """A prompt with a character outside the vocabulary at a random place: ValueError."""
    prompt, n, temperature, seed = _complete_case(g, 0.0)
    at = randint(g, 0, len(prompt) + 1)
    return prompt[:at] + _UNKNOWN[randint(g, 0, len(_UNKNOWN))] + prompt[at:], n, temperature, seed


COMPLETE_OUTCOME_CALL = ("lambda text, n, temperature, seed: "
                         "checks.outcome(lambda: complete(text, n, temperature, seed))")


CASES: dict[str, list[Case]] = {
    "test_kv_cache": [
        Case(CACHE_CALL, _cache_prefill_decode, "a prompt, then one position at a time", check=_check),
        Case(CACHE_CALL, _cache_overflow, "an append past max_len (ValueError), then one that fits", check=_check),
        Case(CACHE_CALL, _cache_exact, "float64, filled to exactly max_len, then one more", check=_check),
        Case(CACHE_CALL, lambda g: _cache_case(g, [1, 1, 1], 3, dims=(1, 1, 1)),
             "batch 1, 1 head, d_head 1: length-1 appends, max_len 3", check=_check),
        Case(CACHE_CALL, _cache_limit_named, "an append past max_len: a ValueError that names max_len's value",
             check=_check_limit_named),
    ],
    "test_causal_self_attention": [
        Case(ATTENTION_CALL, lambda g: _attention_case(g, None), "no cache, (B, T, C) x"),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, None, torch.float64), "no cache, float64"),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, None, torch.float64, n_head=1, T=1),
             "no cache, one head, one token"),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, [randint(g, 2, 6)] + [1] * randint(g, 2, 5)),
             "a prompt then one token at a time through the cache"),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, [randint(g, 1, 4), randint(g, 2, 5), randint(g, 1, 3)]),
             "pieces of several tokens through the cache"),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, [1] * randint(g, 2, 6), torch.float64),
             "float64, one token at a time from the start"),
    ],
    "test_generate": [
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=True), "greedy, with the cache",
             check=_generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=False), "greedy, without the cache",
             check=_generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=True, T0=1), "greedy, with the cache, "
             "a prompt of one token", check=_generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=True, temperature=0.9),
             "sampled (temperature 0.9, fixed seed), with the cache", check=_generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=False, temperature=1.3, dtype=torch.float64),
             "sampled, float64, without the cache", check=_generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=True, temperature=0.7, dtype=torch.float64),
             "sampled, float64, with the cache", check=_generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=True, overflow=True),
             "one token more than block_size allows: ValueError", check=_generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=True, temperature=0.8, full=True),
             "exactly block_size tokens in all (no ValueError), sampled, with the cache", check=_generate_check),
    ],
    "test_grouped_query_attention": [
        Case("grouped_query_attention", _gqa_grouped, "groups of query heads, T_q = T_k"),
        Case("grouped_query_attention", lambda g: _gqa_case(g, 1, randint(g, 2, 10), torch.float64),
             "one decode query (T_q = 1), float64"),
        Case("grouped_query_attention", lambda g: _gqa_case(g, randint(g, 2, 4), randint(g, 4, 9)),
             "T_q < T_k (a chunk after a cached prefix)"),
        Case("grouped_query_attention",
             lambda g: (torch.randn(2, 6, 3, 4, generator=g), torch.randn(2, 2, 3, 4, generator=g),
                        torch.randn(2, 2, 3, 4, generator=g)), "H = 6, H_kv = 2"),
        Case("lambda q, k, v: checks.outcome(lambda: grouped_query_attention(q, k, v))",
             lambda g: (torch.randn(1, 3, 2, 4, generator=g), torch.randn(1, 2, 2, 4, generator=g),
                        torch.randn(1, 2, 2, 4, generator=g)), "H = 3, H_kv = 2: ValueError", check=_check),
    ],
    "test_complete": [
        Case(COMPLETE_CALL, lambda g: _complete_case(g, 0.0), "greedy text, cached and uncached",
             (CAPSTONE_DIFFER,)),
        Case(COMPLETE_CALL, lambda g: _complete_case(g, 0.8), "sampled text (temperature 0.8), cached and uncached",
             (CAPSTONE_DIFFER,)),
        Case(COMPLETE_OUTCOME_CALL, _complete_unknown, "a character not in the vocabulary: ValueError",
             check=_check),
    ],
}
