"""Chapter 11 — the KV cache: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook. They test properties that need no
reference generator: a cache fed in pieces equals one pass without it; cached generation equals
uncached generation; each greedy token is the argmax of one teacher-forced forward pass over the
student's own output; attention equals ``nn.MultiheadAttention`` and grouped-query attention
equals ``F.scaled_dot_product_attention(enable_gqa=True)``. ``CASES`` is what the grader runs.

Conventions (the exercise text states them too): tensors of heads are ``(B, H, T, d_head)``; with
a cache the queries are the *last* T of L positions (query i sits at L - T + i); a cache or a
generation that would pass the context limit raises ValueError.

The adapters (:func:`replay`, :func:`attend`, :func:`traced`) drive the student's code the same
way for the reference and the student and return plain data; :func:`traced` also records the
positions and lengths of every ``gpt_forward`` call, so a hint can say *which* step went wrong.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import call, close, expect_example, outcome, raised, randint
from ..compare import describe_difference
from ..spec import Case, CheckFailed, Hint, expect, passed


def _same_error(x: Any) -> Any:
    """Any report of a raised ValueError reads the same (the messages are the student's own)."""
    if raised(x, "ValueError"):
        return "raised ValueError"
    if isinstance(x, (list, tuple)):
        return type(x)(_same_error(v) for v in x)
    if isinstance(x, dict):
        return {k: _same_error(v) for k, v in x.items()}
    return x


def _check(got: Any, expected: Any, args: tuple) -> str | None:
    """Values as usual, except that where the reference raised ValueError any ValueError passes."""
    return describe_difference(_same_error(got), _same_error(expected))


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


def _appends(got: Any) -> list:
    return got["appended"] if isinstance(got, dict) and isinstance(got.get("appended"), list) else []


def _returned_sizes(got: Any, chunks: list) -> list[tuple[int, int, int]]:
    """(length before, T_new, positions returned) of every append that returned a tensor pair."""
    lengths = got.get("length", []) if isinstance(got, dict) else []
    return [(before, k.shape[2], r[0].shape[2]) for r, (k, _), before in zip(_appends(got), chunks, lengths)
            if isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], torch.Tensor) and r[0].dim() == 4
            and isinstance(before, int)]


def _only_new_returned(got, exp, args):
    """Each append returned just its own chunk, not everything so far (seen on a non-empty cache)."""
    sizes = _returned_sizes(got, args[1])
    return any(before > 0 for before, _, _ in sizes) and all(n == t for _, t, n in sizes)


def _sliced_before_advance(got, exp, args):
    """Each append returned the positions held *before* it: sliced before advancing self.length."""
    sizes = _returned_sizes(got, args[1])
    return bool(sizes) and all(n == before for before, _, n in sizes)


def _wrong_dtype_or_device(got, exp, args):
    return isinstance(got, dict) and isinstance(exp, dict) and isinstance(got.get("k"), tuple) \
        and got["k"][1:] != exp["k"][1:]


def _length_stuck(got, exp, args):
    return isinstance(got, dict) and isinstance(got.get("length"), list) and len(set(got["length"])) == 1


def _no_limit(got, exp, args):
    return any(raised(e, "ValueError") and not raised(g, "ValueError")
               for g, e in zip(_appends(got), _appends(exp)))


def _changed_after_error(got, exp, args):
    """The overflowing append raised, but the cache was changed anyway (length or later values)."""
    if not isinstance(got, dict) or not isinstance(exp, dict):
        return False
    pairs = list(zip(_appends(got), _appends(exp)))
    raised_ok = any(raised(g, "ValueError") and raised(e, "ValueError") for g, e in pairs)
    return raised_ok and got.get("length") != exp.get("length")


def _not_preallocated(got, exp, args):
    return isinstance(got, dict) and got.get("k") != exp.get("k") and isinstance(got.get("k"), tuple) \
        and got["k"][0] != exp["k"][0]


CACHE_ONLY_NEW = Hint(
    "append returned only the keys and values it was given: return everything held so far, "
    "self.k[:, :, :self.length] and self.v[:, :, :self.length], after advancing self.length.",
    _only_new_returned)
CACHE_LENGTH_STUCK = Hint(
    "self.length never changes: advance it by T_new = k_new.shape[2] in every append, or each "
    "append overwrites the previous one.", _length_stuck)
CACHE_NO_LIMIT = Hint(
    "positions beyond max_len must raise ValueError naming max_len (check length + T_new > max_len "
    "before writing; slicing past the end of a tensor silently writes fewer positions, or fails "
    "with a cryptic RuntimeError).", _no_limit)
CACHE_CHANGED_ON_ERROR = Hint(
    "the append that raised ValueError still changed the cache: check the limit before writing "
    "anything or touching self.length.", _changed_after_error)
CACHE_NOT_PREALLOCATED = Hint(
    "self.k and self.v must be allocated once, at full size (batch_size, n_kv_head, max_len, "
    "d_head), in __init__ (torch.zeros with the given dtype and device).", _not_preallocated)
CACHE_SLICED_EARLY = Hint(
    "append returned the positions held before this append: slice self.k[:, :, :self.length] "
    "after advancing self.length by T_new, not before.", _sliced_before_advance)
CACHE_DTYPE = Hint(
    "the buffers do not have the requested dtype/device: create them with "
    "torch.zeros(..., dtype=dtype, device=device) (writing float64 keys into a float32 buffer "
    "silently rounds them).", _wrong_dtype_or_device)
CACHE_HINTS = (CACHE_ONLY_NEW, CACHE_SLICED_EARLY, CACHE_DTYPE, CACHE_LENGTH_STUCK, CACHE_NO_LIMIT, CACHE_CHANGED_ON_ERROR,
               CACHE_NOT_PREALLOCATED)


def check_kv_cache(KVCache: Callable) -> None:
    """The exercise's worked example, the memory formula, the context limit, dtype and device."""
    k2 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    k1 = torch.tensor([[[[5.0, 6.0]]]])  # (1, 1, 1, 2)
    cache = call(lambda: KVCache(1, 1, 4, 2), "KVCache(1, 1, 4, 2)")
    for name in ("k", "v"):
        buffer = getattr(cache, name, None)
        expect(None if buffer is None else (tuple(buffer.shape), str(buffer.dtype)),
               ((1, 1, 4, 2), "torch.float32"), f"KVCache(1, 1, 4, 2).{name} (shape, dtype)",
               ["allocate self.k and self.v at full size in __init__: torch.zeros((batch_size, "
                "n_kv_head, max_len, d_head), dtype=dtype, device=device)."])
    expect(getattr(cache, "length", None), 0, "KVCache(1, 1, 4, 2).length", ["start at 0."])
    expect(cache.k.nbytes + cache.v.nbytes, 2 * 1 * 1 * 4 * 2 * 4,
           "cache.k.nbytes + cache.v.nbytes",
           ["2 (keys and values) · batch 1 · 1 head · 4 positions · d_head 2 · 4 bytes (float32)."])
    shown = "KVCache(1, 1, 4, 2).append(k2, 10 * k2) with k2 = [[[[1, 2], [3, 4]]]]"
    got = call(cache.append, shown, k2, 10 * k2)
    expect(got, (k2, 10 * k2), shown, ["the cache was empty: it now holds exactly these 2 positions."]
           + ([CACHE_SLICED_EARLY.text] if isinstance(got, tuple) and len(got) == 2
              and isinstance(got[0], torch.Tensor) and got[0].dim() == 4 and got[0].shape[2] == 0 else []))
    expect(cache.length, 2, "length after appending 2 positions", CACHE_LENGTH_STUCK.text.split("\n"))
    shown = "then .append(k1, 10 * k1) with k1 = [[[[5, 6]]]]"
    got = call(cache.append, shown, k1, 10 * k1)
    both = torch.cat([k2, k1], dim=2)
    expect(got, (both, 10 * both), shown,
           ["append returns all 3 positions held so far, the old ones first.", CACHE_ONLY_NEW.text])
    expect(cache.length, 3, "length after appending 2 + 1 positions", [CACHE_LENGTH_STUCK.text])
    shown = "then .append(k2, k2): 3 + 2 positions in a cache of max_len = 4"
    got = call(lambda: outcome(lambda: cache.append(k2, k2)), shown)
    if not raised(got, "ValueError"):
        raise CheckFailed(f"{shown} {'returned a result' if not raised(got) else got}: expected "
                          f"a ValueError.\nHint: {CACHE_NO_LIMIT.text}")
    if "4" not in got:
        raise CheckFailed(f"{shown} {got}: name max_len (4) in the message, so the user knows the limit.")
    expect(cache.length, 3, "length after the append that raised", [CACHE_CHANGED_ON_ERROR.text])
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
                                           "their first 8 positions."]
               + ([CACHE_DTYPE.text] if (cache.k.dtype, cache.k.device.type) != (torch.float64, device) else []))
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


def _pair(x: Any) -> tuple | None:
    return x if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], torch.Tensor) else None


def _appended_twice(got, exp, args):
    g, e = _pair(got), _pair(exp)
    return g is not None and e is not None and g[1] == 2 * e[1]


def _first_chunk_only(got, exp, args):
    """The first piece (no earlier tokens in the cache, at least 2 of them, so that heads and
    the causal mask are exercised) is right, a later one is not."""
    g, e = _pair(got), _pair(exp)
    chunks = args[-1]
    if g is None or e is None or g[0].shape != e[0].shape or len(chunks) < 2 or chunks[0] < 2:
        return False
    first = chunks[0]
    return close(g[0][:, :first], e[0][:, :first]) and not close(g[0], e[0])


def _first_piece_wrong(got, exp, args):
    """Already the first piece (or the whole x without a cache), of 2 tokens or more, differs."""
    chunks = args[-1]
    g, e = (got, exp) if chunks is None else (_pair(got), _pair(exp))
    g, e = (g, e) if chunks is None else (g and g[0], e and e[0])
    if not (isinstance(g, torch.Tensor) and isinstance(e, torch.Tensor)) or g.shape != e.shape:
        return False
    first = e.shape[1] if chunks is None else chunks[0]
    return first >= 2 and not close(g[:, :first], e[:, :first])


ATTN_APPENDED_TWICE = Hint(
    "after T tokens the cache holds 2T positions: the keys and values were appended twice. "
    "Call cache.append(k, v) once per call and attend over what it returns.", _appended_twice)
ATTN_DECODE_MASK = Hint(
    "the first piece (an empty cache) is right, but later pieces differ: with a cache the T queries "
    "are the last T of L positions, so query i may see keys 0 … L - T + i. is_causal=True aligns "
    "the triangle top-left (a single decode query would see only key 0); use "
    "torch.ones(T, L, dtype=torch.bool).tril(L - T) as attn_mask.", _first_chunk_only)
ATTN_HEADS = Hint(
    "even ordinary causal attention over an empty cache differs: split the heads with "
    "q.view(B, T, n_head, d_head).transpose(1, 2) (not .view(B, n_head, T, d_head)), merge them "
    "back with y.transpose(1, 2).reshape(B, T, C), and keep the q | k | v column order.",
    _first_piece_wrong)
ATTN_HINTS = (ATTN_APPENDED_TWICE, ATTN_DECODE_MASK, ATTN_HEADS)


def _mha(x: torch.Tensor, weights: tuple, n_head: int) -> torch.Tensor:
    """PyTorch's nn.MultiheadAttention with GPT-2's weights (transposed) and a causal mask."""
    c_attn_w, c_attn_b, c_proj_w, c_proj_b = weights
    T, C = x.shape[1], x.shape[2]
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
                       "mask: check the q | k | v order of the columns, split the heads with .view(B, T, "
                       "n_head, d_head).transpose(1, 2) (not .view(B, n_head, T, d_head)) and merge them "
                       "back with .transpose(1, 2).reshape(B, T, C).")
        count += 1
        for chunks in ([5, 1, 1], [3, 4], [1] * 7, [7]):
            shown = f"the same x fed through one KVCache in pieces of {chunks} tokens"
            args = (attention, KVCache, x, weights, 2, chunks)
            got = call(attend, shown, *args)
            expect_example(got, (expected, 7), shown, "the outputs, joined, equal one pass over all 7 tokens "
                           "without a cache, and the cache then holds 7 positions.",
                           ATTN_HINTS, (x, weights, 2, chunks))
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
    return describe_difference(_same_error(got["tokens"]), _same_error(expected["tokens"]), "tokens")


def _decode_calls(result: Any) -> list:
    calls = result.get("calls", []) if isinstance(result, dict) else []
    return [c for c in calls[1:] if c[2]]


def _positions_stuck(got, exp, args):
    """A decode call at position 0 (decode positions start at T0 >= 1), or all at one position."""
    decode = _decode_calls(got)
    return any(c[1] == [0] for c in decode) or (len(decode) >= 2 and len({tuple(c[1]) for c in decode}) == 1)


def _positions_differ(got, exp, args):
    g, e = _decode_calls(got), _decode_calls(exp)
    return bool(g) and bool(e) and [c[1] for c in g[:len(e)]] != [c[1] for c in e[:len(g)]] \
        and not _positions_stuck(got, exp, args)


def _decode_refeeds(got, exp, args):
    return any(c[0] > 1 for c in _decode_calls(got))


def _no_cache_used(got, exp, args):
    calls = got.get("calls", []) if isinstance(got, dict) else []
    return bool(args[-1]) and bool(calls) and not any(c[2] for c in calls)


def _generate_no_limit(got, exp, args):
    return isinstance(exp, dict) and raised(exp.get("tokens"), "ValueError") and isinstance(got, dict) \
        and not raised(got.get("tokens"), "ValueError")


def _reseeded(got, exp, args):
    """Sampled: the first new token agrees, a later one not, with the reference's forward calls."""
    g, e = (got.get("tokens") if isinstance(got, dict) else None), exp.get("tokens")
    T0 = args[1].shape[1]
    return args[4] != 0 and isinstance(g, torch.Tensor) and isinstance(e, torch.Tensor) \
        and g.shape == e.shape and e.shape[1] > T0 + 1 and torch.equal(g[:, T0], e[:, T0]) \
        and not torch.equal(g, e) and got.get("calls") == exp.get("calls")


GEN_POSITIONS_STUCK = Hint(
    "the position ids are not advanced during decode: every decode call used the same positions. "
    "The token chosen at step t sits at position t (T0 for the first new token): pass "
    "pos = torch.arange(t, t + 1), not torch.arange(1).", _positions_stuck)
GEN_POSITIONS_DIFFER = Hint(
    "your decode calls use other positions than the reference: the token fed at a decode step is "
    "the one just chosen, and it sits at position T0, then T0 + 1, … (an off-by-one?).",
    _positions_differ)
GEN_REFEEDS = Hint(
    "a decode call fed more than one token: with a cache, feed only the token just chosen, shape "
    "(B, 1); feeding earlier tokens again appends their keys and values a second time.",
    _decode_refeeds)
GEN_NO_CACHE = Hint(
    "use_cache=True but no call passed the caches: make one KVCache per layer and pass the list "
    "to gpt_forward in the prefill and in every decode step.", _no_cache_used)
GEN_NO_LIMIT = Hint(
    "prompt + new tokens beyond block_size must raise ValueError (naming block_size) before any "
    "work: there are no positions (and no cache room) past block_size.", _generate_no_limit)
GEN_RESEEDED = Hint(
    "the first sampled token agrees but later ones do not: make the generator once, before the "
    "loop, and pass that same generator to every sample_next (a generator made or re-seeded at "
    "each step repeats the same random number); one sample_next call per new token.", _reseeded)
GEN_HINTS = (GEN_RESEEDED, GEN_POSITIONS_STUCK, GEN_POSITIONS_DIFFER, GEN_REFEEDS, GEN_NO_CACHE, GEN_NO_LIMIT)


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


def _generate_fails(shown: str, message: str, hints: tuple[Hint, ...], got, expected, args) -> None:
    notes = [h.text for h in hints if h.matches(got, expected, args)]
    raise CheckFailed("\n".join([f"{shown}: {message}", *(f"Hint: {n}" for n in notes)]))


def check_generate(generate: Callable) -> None:
    """Shape, greedy tokens against one teacher-forced pass, positions of every call, cached ==
    uncached (greedy and sampled), and the context limit."""
    g = torch.Generator().manual_seed(0)
    params = random_params(g, vocab=11, n_layer=2, C=8, block_size=16)
    prompt = torch.randint(11, (2, 4), generator=g)
    forward = generate.__globals__["gpt_forward"]
    count = 0
    for use_cache in (True, False):
        shown = f"generate(<random 2-layer model, block_size 16>, <(2, 4) prompt>, 6, n_head=2, use_cache={use_cache})"
        result = call(traced, shown, generate, params, prompt, 6, 2, 0.0, 0, use_cache)
        tokens = result["tokens"]
        if isinstance(tokens, str):
            raise CheckFailed(f"{shown} {tokens}")
        expect(tuple(tokens.shape), (2, 10), shown + ".shape", ["prompt (2, 4) + 6 new tokens."])
        expect(tokens[:, :4], prompt, shown + "[:, :4]", ["the result starts with the prompt."])
        if use_cache:
            calls = result["calls"]
            want = [(4, [0, 1, 2, 3], True)] + [(1, [t], True) for t in range(4, 9)]
            if calls[:1] != want[:1] or any(c[:2] != w[:2] or not c[2] for c, w in zip(calls[1:], want[1:])):
                _generate_fails(shown, f"gpt_forward was called with (T, positions, caches given) = "
                                f"{calls}; expected a prefill {want[0]} then one decode call per new "
                                f"token {want[1:3]} … (the last token needs no call).",
                                GEN_HINTS, result, {"calls": want}, (True,))
            count += 1
        with torch.no_grad():  # greedy: each new token is the argmax after the tokens before it
            logits = forward(params, tokens[:, :-1], torch.arange(9), 2)
        expect(tokens[:, 4:], logits[:, 3:].argmax(-1), shown + "[:, 4:]",
               ["with temperature 0, token t is the argmax of the logits at position t - 1, "
                "computed from the tokens before it (one uncached forward pass over your output "
                "gives them all)."] + [h.text for h in GEN_HINTS if h.matches(result, {}, (use_cache,))])
        count += 3
    for seed in (0, 1):
        runs = {}
        for use_cache in (True, False):
            shown = f"generate(..., 8, n_head=2, temperature=0.9, seed={seed}, use_cache={use_cache})"
            runs[use_cache] = call(traced, shown, generate, params, prompt, 8, 2, 0.9, seed, use_cache)
        expect(runs[True]["tokens"], runs[False]["tokens"],
               f"sampled tokens with the cache (seed {seed}), compared with those without it",
               ["both ways the logits are the same, and with one generator seeded once and one "
                "sample_next call per step, so are the draws."]
               + [h.text for h in GEN_HINTS if h.matches(runs[True], {}, (True,))])
        count += 1
    uniform = dict(params, **{"transformer.wte.weight": torch.zeros(11, 8)})  # every logit 0
    shown = "generate(<a model whose logits are all 0>, <(2, 4) prompt>, 12, n_head=2, temperature=1.0)"
    tokens = call(generate, shown, uniform, prompt, 12, 2, 1.0, 0)
    if isinstance(tokens, torch.Tensor) and tokens.shape == (2, 16) and all(
            len(set(row)) == 1 for row in tokens[:, 4:].tolist()):
        raise CheckFailed(f"{shown}: every row repeats one token 12 times, {tokens[:, 4:].tolist()}, "
                          f"although all 11 tokens are equally likely.\nHint: {GEN_RESEEDED.text}")
    count += 1
    for new, ok in ((12, True), (13, False)):
        shown = f"generate(<block_size 16>, <(2, 4) prompt>, {new}, n_head=2)"
        result = call(traced, shown, generate, params, prompt, new, 2)
        if ok and isinstance(result["tokens"], str):
            raise CheckFailed(f"{shown} {result['tokens']}: 4 + 12 = 16 tokens fit block_size 16.")
        if not ok and not raised(result["tokens"], "ValueError"):
            raise CheckFailed(f"{shown}: expected a ValueError (4 + 13 > 16).\nHint: {GEN_NO_LIMIT.text}")
        count += 1
    passed("generate", count)


# ----------------------------------------------------------------------------------------
# Exercise 4: grouped-query attention
# ----------------------------------------------------------------------------------------

def _sdpa(q, k, v, causal_top_left=False, tiled=False):
    """PyTorch's attention in float64 on the CPU, the right way or with one mistake built in."""
    q, k, v = (t.detach().cpu().double() for t in (q, k, v))
    n_rep = q.shape[1] // k.shape[1]
    if tiled:
        k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
    else:
        k, v = k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1)
    T_q, T_k = q.shape[2], k.shape[2]
    mask = torch.ones(T_q, T_k, dtype=torch.bool).tril(0 if causal_top_left else T_k - T_q)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


GQA_TILED = Hint(
    "query heads are paired with key/value heads round-robin (k.repeat): query head h reads key/"
    "value head h // n_rep, consecutive query heads share one (k.repeat_interleave(n_rep, dim=1)).",
    lambda got, exp, args: args[1].shape[1] not in (1, args[0].shape[1]) and close(got, _sdpa(*args, tiled=True)))
GQA_TOP_LEFT = Hint(
    "the causal mask is aligned top-left: the T_q queries are the last of the T_k positions, so "
    "query i sees keys 0 … T_k - T_q + i (tril(T_k - T_q), not is_causal=True).",
    lambda got, exp, args: args[0].shape[2] != args[1].shape[2] and close(got, _sdpa(*args, causal_top_left=True)))
GQA_NOT_DIVISIBLE = Hint(
    "H query heads that H_kv does not divide must raise ValueError (check H % H_kv before "
    "grouping: repeat_interleave would otherwise fail with a shape error, or group wrongly).",
    lambda got, exp, args: raised(exp, "ValueError") and not raised(got, "ValueError"))
GQA_HINTS = (GQA_TILED, GQA_TOP_LEFT, GQA_NOT_DIVISIBLE)


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
                       "the result equals F.scaled_dot_product_attention(q, k, v, attn_mask=tril(T_k - T_q), "
                       "enable_gqa=True).", GQA_HINTS, (q, k, v))
        count += 1
    shown = "grouped_query_attention(<H=3 query heads>, <H_kv=2>)"
    got = call(lambda: outcome(lambda: gqa(torch.zeros(1, 3, 2, 4), torch.zeros(1, 2, 2, 4),
                                           torch.zeros(1, 2, 2, 4))), shown)
    if not raised(got, "ValueError"):
        raise CheckFailed(f"{shown}: expected a ValueError (3 heads do not split into 2 groups), got {got!r:.80}")
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
CAPSTONE_UNCACHED = Hint(
    "even without the cache your text differs from the reference: encode with "
    "MODEL['vocabulary'].index(c), pass n_head = MODEL['config']['n_head'], the temperature and seed, "
    "and return prompt + continuation.",
    lambda got, exp, args: _both(got) is not None and _both(exp) is not None and got[1] != exp[1])
CAPSTONE_IGNORES = ("at temperature 0.8 your text is the greedy text: pass temperature and seed on "
                    "to generate (and use_cache too).")  # public check only: it knows the greedy text
CAPSTONE_USE_CACHE = ("pass use_cache on to generate: complete(..., use_cache=False) must generate "
                      "without the cache, or the comparison of the two compares the cache with itself.")
CAPSTONE_HINTS = (CAPSTONE_DIFFER, CAPSTONE_UNCACHED)


def check_complete(complete: Callable) -> None:
    """Greedy and sampled text, with and without the cache: equal character for character."""
    count = 0
    for prompt, n, temperature, seed in (("ROMEO:\n", 60, 0.0, 0), ("To be, or not", 80, 0.8, 1)):
        texts = {}
        for use_cache in (True, False):
            shown = f"complete({prompt!r}, {n}, temperature={temperature}, seed={seed}, use_cache={use_cache})"
            result = call(traced, shown, complete, prompt, n, temperature, seed, use_cache)
            texts[use_cache] = result["tokens"]
            if not isinstance(texts[use_cache], str) or len(texts[use_cache]) != len(prompt) + n \
                    or not texts[use_cache].startswith(prompt):
                raise CheckFailed(f"{shown} returned {texts[use_cache]!r:.120}: expected a string of "
                                  f"{len(prompt) + n} characters starting with the prompt.")
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
           "complete('To be, or not', 80) (greedy)", [CAPSTONE_IGNORES])
    got = call(lambda: outcome(lambda: complete("Hello ~ world", 5)), "complete('Hello ~ world', 5)")
    if not raised(got, "ValueError"):
        raise CheckFailed(f"complete('Hello ~ world', 5): '~' is not in the vocabulary; expected a "
                          f"ValueError, got {got!r:.80}")
    passed("complete", count + 1)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

def _dtype(g: torch.Generator) -> torch.dtype:
    return (torch.float32, torch.float64)[randint(g, 0, 2)]


def _cache_case(g: torch.Generator, sizes: list[int], max_len: int, dtype=torch.float32) -> tuple:
    B, H, d = randint(g, 1, 4), randint(g, 1, 4), randint(g, 1, 6)
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


CACHE_CALL = "lambda shape, chunks, like: checks.replay(KVCache, shape, chunks, like)"


def _attention_case(g: torch.Generator, chunks: list[int] | None, dtype=torch.float32) -> tuple:
    n_head, d = randint(g, 1, 4), randint(g, 1, 5)
    C = n_head * d
    T = sum(chunks) if chunks else randint(g, 1, 9)
    x = torch.randn(randint(g, 1, 4), T, C, generator=g, dtype=dtype)
    return x, _attention_weights(g, C, dtype), n_head, chunks


ATTENTION_CALL = ("lambda x, w, n_head, chunks: "
                  "checks.attend(causal_self_attention, KVCache, x, w, n_head, chunks)")


def _generate_case(g: torch.Generator, *, use_cache: bool, temperature: float = 0.0,
                   overflow: bool = False, dtype=torch.float32) -> tuple:
    n_head, d = randint(g, 1, 4), randint(g, 1, 4)
    block = randint(g, 8, 20)
    vocab = randint(g, 4, 16)
    params = random_params(g, vocab, randint(g, 1, 3), n_head * d, block, dtype)
    T0 = randint(g, 1, 5)
    new = block - T0 + 1 if overflow else randint(g, 3, block - T0 + 1)  # >= 2 decode steps
    prompt = torch.randint(vocab, (randint(g, 1, 4), T0), generator=g)
    return params, prompt, new, n_head, temperature, randint(g, 0, 1000), use_cache


GENERATE_CALL = "lambda *args: checks.traced(generate, *args)"


def _gqa_case(g: torch.Generator, T_q: int, T_k: int, dtype=torch.float32) -> tuple:
    H_kv = randint(g, 1, 4)
    H = H_kv * randint(g, 1, 4)
    B, d = randint(g, 1, 3), randint(g, 1, 9)
    return (torch.randn(B, H, T_q, d, generator=g, dtype=dtype),
            torch.randn(B, H_kv, T_k, d, generator=g, dtype=dtype),
            torch.randn(B, H_kv, T_k, d, generator=g, dtype=dtype))


def _gqa_grouped(g):
    """At least 2 key/value heads and groups of at least 2: the pairing of heads matters."""
    H_kv, n_rep, T = randint(g, 2, 5), randint(g, 2, 4), randint(g, 2, 8)
    B, d = randint(g, 1, 3), randint(g, 1, 9)
    return (torch.randn(B, H_kv * n_rep, T, d, generator=g), torch.randn(B, H_kv, T, d, generator=g),
            torch.randn(B, H_kv, T, d, generator=g))


COMPLETE_CALL = ("lambda text, n, temperature, seed: (complete(text, n, temperature, seed, True), "
                 "complete(text, n, temperature, seed, False))")
_PROMPTS = ("ROMEO:\n", "KING LEAR:\nBlow, winds", "O", "HAMLET:\nTo be", "Enter MACBETH.\n\nMACBETH.\n")


def _complete_case(g, temperature: float) -> tuple:
    return _PROMPTS[randint(g, 0, len(_PROMPTS))], randint(g, 5, 40), temperature, randint(g, 0, 1000)


CASES: dict[str, list[Case]] = {
    "test_kv_cache": [
        Case(CACHE_CALL, _cache_prefill_decode, "a prompt, then one position at a time", CACHE_HINTS, _check),
        Case(CACHE_CALL, _cache_overflow, "an append past max_len (ValueError), then one that fits",
             CACHE_HINTS, _check),
        Case(CACHE_CALL, _cache_exact, "float64, filled to exactly max_len, then one more", CACHE_HINTS, _check),
        Case(CACHE_CALL, lambda g: _cache_case(g, [1, 1, 1], 3), "length-1 appends, max_len 3",
             CACHE_HINTS, _check),
    ],
    "test_causal_self_attention": [
        Case(ATTENTION_CALL, lambda g: _attention_case(g, None), "no cache, (B, T, C) x", ATTN_HINTS),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, None, torch.float64), "no cache, float64, T may be 1",
             ATTN_HINTS),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, [randint(g, 1, 6)] + [1] * randint(g, 2, 5)),
             "a prompt then one token at a time through the cache", ATTN_HINTS),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, [randint(g, 1, 4), randint(g, 2, 5), randint(g, 1, 3)],
                                                        torch.float64),
             "float64, pieces of several tokens through the cache", ATTN_HINTS),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, [1] * randint(g, 2, 6)), "one token at a time from the start",
             ATTN_HINTS),
    ],
    "test_generate": [
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=True), "greedy, with the cache",
             GEN_HINTS, _generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=False), "greedy, without the cache",
             GEN_HINTS, _generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=True, temperature=0.9),
             "sampled (temperature 0.9, fixed seed), with the cache", GEN_HINTS, _generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=False, temperature=1.3, dtype=torch.float64),
             "sampled, float64, without the cache", GEN_HINTS, _generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=True, temperature=0.7, dtype=torch.float64),
             "sampled, float64, with the cache", GEN_HINTS, _generate_check),
        Case(GENERATE_CALL, lambda g: _generate_case(g, use_cache=True, overflow=True),
             "one token more than block_size allows: ValueError", GEN_HINTS, _generate_check),
    ],
    "test_grouped_query_attention": [
        Case("grouped_query_attention", _gqa_grouped, "groups of query heads, T_q = T_k", GQA_HINTS),
        Case("grouped_query_attention", lambda g: _gqa_case(g, 1, randint(g, 2, 10), torch.float64),
             "one decode query (T_q = 1), float64", GQA_HINTS),
        Case("grouped_query_attention", lambda g: _gqa_case(g, randint(g, 2, 4), randint(g, 4, 9)),
             "T_q < T_k (a chunk after a cached prefix)", GQA_HINTS),
        Case("grouped_query_attention",
             lambda g: (torch.randn(2, 6, 3, 4, generator=g), torch.randn(2, 2, 3, 4, generator=g),
                        torch.randn(2, 2, 3, 4, generator=g)), "H = 6, H_kv = 2", GQA_HINTS),
        Case("lambda q, k, v: checks.outcome(lambda: grouped_query_attention(q, k, v))",
             lambda g: (torch.randn(1, 3, 2, 4, generator=g), torch.randn(1, 2, 2, 4, generator=g),
                        torch.randn(1, 2, 2, 4, generator=g)), "H = 3, H_kv = 2: ValueError", GQA_HINTS,
             _check),
    ],
    "test_complete": [
        Case(COMPLETE_CALL, lambda g: _complete_case(g, 0.0), "greedy text, cached and uncached",
             CAPSTONE_HINTS),
        Case(COMPLETE_CALL, lambda g: _complete_case(g, 0.8), "sampled text (temperature 0.8), cached and uncached",
             CAPSTONE_HINTS),
    ],
}
