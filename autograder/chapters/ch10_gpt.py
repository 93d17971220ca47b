"""Chapter 10 — GPT: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook. Expected values come from PyTorch's own
building blocks (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` with ``norm_first=True``,
``torch.multinomial``), from numbers worked out by hand, and from properties (causality, a tied
head counted once, a Conv1D weight acting like its transpose in ``nn.Linear``).

``CASES`` is what the grader runs. Modules are graded through adapters that build the student's
module from a config dict, load the case's weights by name and call it, so the hidden cases need
nothing but tensors (no ``transformers`` in the grading kernel). Conventions the exercise text
fixes, so that samples can be compared token for token with a seeded generator:

* ``sample_next`` draws with ``torch.multinomial(probs, 1, generator=generator)`` after dividing by
  the temperature and filtering; temperature 0 is greedy (argmax) and draws nothing;
* top-k keeps ties with the k-th largest logit; top-p runs after top-k and keeps the token whose
  probability makes the running total cross p.

The typical mistakes and their hints are the chapter's catalogue, ``solutions/10-gpt/mistakes.yaml``:
the grader and these checks name a mistake when a result is that mistake's result. Its ``uses``
lets an attention mistake be named in the cell of ``GPT``, and a ``filter_logits`` mistake in the
cell of ``sample_next``, which run that code. The public checks build the student's modules and
draw their examples from seeded generators, so that each example is the same in every notebook.
"""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import call, cpu64, expect_example, outcome, randint, raised, same_error, seeded
from ..checks import public_hints, record  # the catalogue of mistakes, as the checks read it
from ..compare import describe_difference
from ..spec import Case, CheckFailed, Hint, expect, passed

NEG_INF = float("-inf")
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TINY = dict(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8)


# ----------------------------------------------------------------------------------------
# Shapes of the parameters, as the exercise tables fix them
# ----------------------------------------------------------------------------------------

def attention_shapes(C: int, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """name -> shape of CausalSelfAttention's parameters (nn.Linear layout: (out, in))."""
    return {f"{prefix}c_attn.weight": (3 * C, C), f"{prefix}c_attn.bias": (3 * C,),
            f"{prefix}c_proj.weight": (C, C), f"{prefix}c_proj.bias": (C,)}


def gpt_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """name -> shape of every entry of GPT(config).state_dict(), lm_head.weight included."""
    C, V = cfg["n_embd"], cfg["vocab_size"]
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (cfg["block_size"], C)}
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        shapes |= {p + "ln_1.weight": (C,), p + "ln_1.bias": (C,)}
        shapes |= attention_shapes(C, p + "attn.")
        shapes |= {p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
                   p + "mlp.c_fc.weight": (4 * C, C), p + "mlp.c_fc.bias": (4 * C,),
                   p + "mlp.c_proj.weight": (C, 4 * C), p + "mlp.c_proj.bias": (C,)}
    return shapes | {"transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,),
                     "lm_head.weight": (V, C)}


def _random_state(g: torch.Generator, shapes: dict[str, tuple[int, ...]],
                  dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Random weights of GPT-2-like sizes: gains near 1, other entries ~ N(0, 0.02..0.3)."""
    sd = {}
    for name, shape in shapes.items():
        x = torch.randn(*shape, generator=g, dtype=dtype)
        if ".ln_" in name and name.endswith("weight"):
            sd[name] = 1 + 0.1 * x
        elif name.endswith("bias"):
            sd[name] = 0.1 * x
        elif "wte" in name or "wpe" in name or "lm_head" in name:
            sd[name] = 0.3 * x
        else:
            sd[name] = x / math.sqrt(shape[-1])
    return sd


# ----------------------------------------------------------------------------------------
# PyTorch's building blocks with a course state_dict
# ----------------------------------------------------------------------------------------

def _mha(sd: dict, x: torch.Tensor, n_head: int, causal: bool = True, prefix: str = "") -> torch.Tensor:
    """nn.MultiheadAttention (float64, CPU) with c_attn as its in-projection, c_proj as out."""
    C = x.shape[-1]
    with seeded(0):  # its initial weights, all replaced below, would draw from the student's generator
        mha = nn.MultiheadAttention(C, n_head, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(sd[prefix + "c_attn.weight"])
        mha.in_proj_bias.copy_(sd[prefix + "c_attn.bias"])
        mha.out_proj.weight.copy_(sd[prefix + "c_proj.weight"])
        mha.out_proj.bias.copy_(sd[prefix + "c_proj.bias"])
        T = x.shape[-2]
        blocked = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None  # True = blocked
        return mha(cpu64(x), cpu64(x), cpu64(x), attn_mask=blocked, need_weights=False)[0]


def builtin_gpt_logits(sd: dict, cfg: dict, idx: torch.Tensor) -> torch.Tensor:
    """GPT-2's logits computed with nn.TransformerEncoderLayer (pre-norm, GELU tanh; float64,
    CPU) from a course state_dict."""
    C, H = cfg["n_embd"], cfg["n_head"]
    sd = {k: cpu64(v) for k, v in sd.items()}
    idx = idx.detach().cpu()
    T = idx.shape[1]
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    blocked = torch.ones(T, T, dtype=torch.bool).triu(1)
    for i in range(cfg["n_layer"]):
        with seeded(0):  # its initial weights, all replaced below, would draw from the student's generator
            layer = nn.TransformerEncoderLayer(C, H, 4 * C, dropout=0.0, batch_first=True,
                                               activation=lambda h: F.gelu(h, approximate="tanh"),
                                               norm_first=True, dtype=torch.float64).eval()
        p = f"transformer.h.{i}."
        names = {"self_attn.in_proj_weight": "attn.c_attn.weight", "self_attn.in_proj_bias": "attn.c_attn.bias",
                 "self_attn.out_proj.weight": "attn.c_proj.weight", "self_attn.out_proj.bias": "attn.c_proj.bias",
                 "linear1.weight": "mlp.c_fc.weight", "linear1.bias": "mlp.c_fc.bias",
                 "linear2.weight": "mlp.c_proj.weight", "linear2.bias": "mlp.c_proj.bias",
                 "norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
                 "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias"}
        layer.load_state_dict({ours: sd[p + theirs] for ours, theirs in names.items()})
        with torch.no_grad():
            x = layer(x, src_mask=blocked)
    x = F.layer_norm(x, (C,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"])
    return x @ sd.get("lm_head.weight", sd["transformer.wte.weight"]).T


# ----------------------------------------------------------------------------------------
# The hints that no catalogue mistake gives: a family of results, each recognised exactly
# ----------------------------------------------------------------------------------------

def _names_differ(got, exp, args):
    return isinstance(got, (tuple, list)) and len(got) == 4 and bool(got[0] or got[1])


GPT_NAMES = Hint("some parameter names differ from the exercise's table (the first two items are "
                 "the names the grader could not load, and the names it did not expect): use "
                 "transformer = nn.ModuleDict(dict(wte=..., wpe=..., h=nn.ModuleList(...), ln_f=...)), "
                 "and ln_1, attn, ln_2, mlp in each Block.", _names_differ)
COUNT_NOT_INT = Hint("return a Python int (sum of products of ints), not a float or a tensor.",
                     lambda got, exp, args: not isinstance(got, int))


# ----------------------------------------------------------------------------------------
# Helpers of the checks and cases
# ----------------------------------------------------------------------------------------

def _conv1d(name: str) -> bool:
    return name.endswith(CONV1D)


def _draw(probs: torch.Tensor, seed: int) -> torch.Tensor:
    """The course's draw: torch.multinomial with a generator seeded with ``seed`` on probs' device."""
    g = torch.Generator(device=probs.device).manual_seed(seed)
    return torch.multinomial(probs, 1, generator=g).squeeze(-1)


def _frequencies(tokens: torch.Tensor, V: int) -> torch.Tensor:
    return torch.bincount(tokens.detach().cpu().flatten(), minlength=V).double() / tokens.numel()


def _statistical_check(got: Any, expected: Any, args: tuple) -> str | None:
    """Frequencies over many draws, not the exact tokens: any correct draw method passes."""
    logits = args[0]
    V = logits.shape[-1]
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return f"output: expected an int64 tensor of shape {tuple(expected.shape)}, got {_show(got)}"
    if got.dtype != torch.int64 or int(got.min()) < 0 or int(got.max()) >= V:
        return f"output: expected int64 token ids in [0, {V}), got dtype {got.dtype}"
    f_got, f_exp = _frequencies(got, V), _frequencies(expected, V)
    distance = 0.5 * float((f_got - f_exp).abs().sum())
    if distance <= 0.03:
        return None
    return (f"over {got.numel()} draws from one row of logits, your token frequencies "
            f"{[round(x, 3) for x in f_got.tolist()]} differ from the reference's "
            f"{[round(x, 3) for x in f_exp.tolist()]} (total variation {distance:.3f} > 0.03)")


def _show(x: Any) -> str:
    return f"a tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


# ----------------------------------------------------------------------------------------
# Public checks (run in the student's notebook)
# ----------------------------------------------------------------------------------------

def _shapes_of(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def _fill(module: nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random GPT-2-like weights copied into ``module``; returns its state_dict."""
    shapes = _shapes_of(module)
    with torch.no_grad():
        for name, value in _random_state(g, shapes).items():
            module.state_dict()[name].copy_(value)
    return dict(module.state_dict())


def check_causal_self_attention(CausalSelfAttention: Callable) -> None:
    """Parameter names, agreement with nn.MultiheadAttention, position 0 by hand, causality."""
    cfg = SimpleNamespace(**TINY)
    with seeded(0):  # its initial weights, all replaced below, would draw from the student's generator
        module = call(CausalSelfAttention, "CausalSelfAttention(config with n_embd=8, n_head=2)", cfg)
    expect(_shapes_of(module), attention_shapes(8),
           "CausalSelfAttention(n_embd=8)'s parameters (name -> shape)",
           ["c_attn = nn.Linear(C, 3 * C) and c_proj = nn.Linear(C, C), both with biases."])
    g = torch.Generator().manual_seed(0)
    sd = _fill(module, g)
    x = torch.randn(2, 5, 8, generator=g)
    shown = "CausalSelfAttention(n_embd=8, n_head=2)(<random (2, 5, 8) x>)"
    with torch.no_grad():
        got = call(module, shown, x)
        expect_example(got, _mha(sd, x, 2).float(), shown,
                       "the output must equal nn.MultiheadAttention(8, 2) with in_proj = c_attn, "
                       "out_proj = c_proj and a causal mask, shape (B, T, C).")
        v0 = (x[:, 0] @ sd["c_attn.weight"].T + sd["c_attn.bias"])[:, 16:]
        expect_example(got[:, 0], v0 @ sd["c_proj.weight"].T + sd["c_proj.bias"], shown + "[:, 0]",
                       "position 0 sees only itself: its output is c_proj(v_0), v_0 the last third of "
                       "c_attn(x_0).")
        x2 = x.clone()
        x2[:, 3:] = torch.randn(2, 2, 8, generator=g)
        expect_example(call(module, shown, x2)[:, :3], got[:, :3], shown + " with x[:, 3:] changed, [:, :3]",
                       "changing positions 3 and 4 must not change the outputs at positions 0..2 (the "
                       "causal mask).")
    passed("CausalSelfAttention", 4)


def check_gpt(GPT: Callable, GPTConfig: Callable) -> None:
    """Names and shapes, tying, the parameter count, logits equal to PyTorch's pre-norm
    TransformerEncoderLayer stack, causality, and a clear error beyond block_size."""
    config = GPTConfig(**TINY)
    with seeded(0):  # its initial weights, all replaced below, would draw from the student's generator
        model = call(GPT, "GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8))", config)
    expect(_shapes_of(model), gpt_shapes(TINY), "GPT(tiny config).state_dict(): name -> shape",
           ["follow the exercise's table of names: transformer.wte, transformer.wpe, transformer.h.<i>"
            ".{ln_1, attn, ln_2, mlp}, transformer.ln_f, lm_head (no bias)."])
    tied = model.lm_head.weight is model.transformer.wte.weight
    expect(tied, True, "model.lm_head.weight is model.transformer.wte.weight",
           ["the output layer and the token embedding must be one nn.Parameter (weight tying)."])
    expect(sum(p.numel() for p in model.parameters()), 1912,
           "sum(p.numel() for p in model.parameters()) for the tiny config",
           ["1912 = 88 + 64 (wte, wpe) + 2 x 872 (blocks) + 16 (ln_f); the tied head adds nothing."])
    g = torch.Generator().manual_seed(0)
    sd = _fill(model, g)
    idx = torch.randint(0, 11, (3, 5), generator=g)
    shown = "GPT(tiny)(<random (3, 5) ids>)"
    with torch.no_grad():
        got = call(model, shown, idx)
        expect_example(got, builtin_gpt_logits(sd, TINY, idx).float(), shown,
                       "logits (B, T, V) = (3, 5, 11), equal to a stack of PyTorch's "
                       "nn.TransformerEncoderLayer(norm_first=True, GELU tanh) given your weights, then "
                       "ln_f and the tied head.")
        idx2 = idx.clone()
        idx2[:, 2:] = (idx2[:, 2:] + 1) % 11
        expect_example(call(model, shown, idx2)[:, :2], got[:, :2], shown + " with idx[:, 2:] changed, [:, :2]",
                       "the logits at positions 0 and 1 must not depend on later tokens.")
        full = torch.randint(0, 11, (1, 8), generator=g)
        expect_example(call(model, "GPT(tiny)(<(1, 8) ids>)", full)[:, :5].shape, (1, 5, 11),
                       "GPT(tiny)(<(1, 8) ids: T = block_size>)[:, :5].shape")
    try:
        model(torch.zeros(1, 9, dtype=torch.long))
    except ValueError:
        pass
    except Exception as error:
        raise CheckFailed(f"GPT(tiny)(<(1, 9) ids>) raised {type(error).__name__}: {error}; "
                          "raise ValueError when T > block_size") from None
    else:
        raise CheckFailed("GPT(tiny)(<(1, 9) ids>) returned a result: raise ValueError when "
                          "T > config.block_size (there is no position embedding for position 8)")
    passed("GPT", 7)


def check_count_parameters(count_parameters: Callable, GPTConfig: Callable) -> None:
    """GPT-2 small and medium (compared with Hugging Face's GPT2LMHeadModel), and 88 by hand."""
    examples = [
        ({}, True, 124_439_808, "GPT-2 small, tied: sum(p.numel()) of Hugging Face's "
                                "GPT2LMHeadModel(GPT2Config())."),
        ({}, False, 163_037_184, "GPT-2 small with a separate output matrix: 50257 x 768 = "
                                 "38,597,376 more."),
        (dict(n_layer=24, n_head=16, n_embd=1024), True, 354_823_168, "GPT-2 medium, tied."),
        (dict(block_size=2, vocab_size=3, n_layer=1, n_head=1, n_embd=2), True, 88,
         "by hand: wte 3x2 = 6, wpe 2x2 = 4, ln_1 + ln_2 8, c_attn 2x6 + 6 = 18, c_proj 4 + 2 = 6, "
         "c_fc 2x8 + 8 = 24, MLP c_proj 8x2 + 2 = 18, ln_f 4: 88."),
        (dict(block_size=2, vocab_size=3, n_layer=1, n_head=1, n_embd=2), False, 94,
         "88 plus a separate 3 x 2 output matrix."),
    ]
    for sizes, tied, expected, why in examples:
        shown = f"count_parameters(GPTConfig({', '.join(f'{k}={v}' for k, v in sizes.items())}), tied={tied})"
        got = call(count_parameters, shown, GPTConfig(**sizes), tied)
        expect_example(got, expected, shown, why, (COUNT_NOT_INT,))
        if not isinstance(got, int):
            raise CheckFailed(f"{shown} returned {type(got).__name__}: {COUNT_NOT_INT.text}")
    passed("count_parameters", len(examples))


def hf_layout(g: torch.Generator, cfg: dict, dtype=torch.float32, buffers: bool = False) -> dict:
    """A random state_dict in GPT2LMHeadModel's layout (Conv1D weights (in, out)), optionally with
    the causal-mask buffers older transformers versions saved."""
    ours = _random_state(g, gpt_shapes(cfg), dtype)
    ours["lm_head.weight"] = ours["transformer.wte.weight"]
    sd = {}
    for name, value in ours.items():
        sd[name] = value.t().contiguous() if _conv1d(name) else value
        if buffers and name.endswith("attn.c_proj.bias"):
            T = cfg["block_size"]
            sd[name.replace("c_proj.bias", "bias")] = torch.ones(T, T).tril().view(1, 1, T, T)
            sd[name.replace("c_proj.bias", "masked_bias")] = torch.tensor(-1e4)
    return sd


def check_convert_gpt2_state_dict(convert: Callable) -> None:
    """Keys kept and dropped, each Conv1D weight acting in nn.Linear like before, others untouched."""
    g = torch.Generator().manual_seed(0)
    sd = hf_layout(g, TINY, buffers=True)
    before = {k: v.clone() for k, v in sd.items()}
    shown = "convert_gpt2_state_dict(<GPT2LMHeadModel-layout state_dict, tiny config, with mask buffers>)"
    got = call(convert, shown, sd)
    if not isinstance(got, dict):
        raise CheckFailed(f"{shown} returned {type(got).__name__}: return a new dict name -> tensor")
    for name, value in before.items():  # first: an input changed in place misleads every other test
        expect(sd.get(name), value, f"the input's {name!r} after the call",
               ["do not modify sd in place: build a new dict, and use tensor.t() (a new view), "
                "not tensor.t_() or del sd[...]."])
    expect(sorted(got), sorted(gpt_shapes(TINY)), f"the keys of {shown}", [
        "every key of GPT(config).state_dict(), lm_head.weight included, and nothing else."])
    x = torch.randn(3, 32, generator=g)
    for name in sd:
        if name not in got:
            continue
        value = got[name]
        if _conv1d(name):
            W = sd[name]  # (in, out)
            expect(tuple(value.shape) if isinstance(value, torch.Tensor) else value, tuple(W.t().shape),
                   f"result[{name!r}].shape", ["nn.Linear's weight is (out, in)."])
            expect(F.linear(x[:, :W.shape[0]], value), x[:, :W.shape[0]] @ W,
                   f"F.linear(x, result[{name!r}])", ["nn.Linear with the converted weight must "
                                                      "compute what Conv1D computed, x @ W."])
        else:
            expect(value, sd[name], f"result[{name!r}]", ["entries other than the four Conv1D "
                                                          "weights are copied unchanged."])
    passed("convert_gpt2_state_dict", 3)


def _log_probs(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


def check_filter_logits(filter_logits: Callable) -> None:
    """The worked example of the exercise (both orders of rows), ties, and no-op settings."""
    x = _log_probs([0.05, 0.5, 0.15, 0.3], [0.3, 0.15, 0.5, 0.05])
    inf = NEG_INF

    def keep(row: torch.Tensor, kept: list[int]) -> list[float]:
        return [v if i in kept else inf for i, v in enumerate(row.tolist())]

    examples = [
        (dict(top_p=0.6), [[1, 3], [2, 0]], "sorted: 0.5, 0.3, 0.15, 0.05; 0.5 < 0.6, so the 0.3 "
         "token is kept: it makes the total cross 0.6."),
        (dict(top_p=0.85), [[1, 3, 2], [2, 0, 1]], "running totals 0.5, 0.8, 0.95: the 0.15 token "
         "crosses 0.85 and is kept, the 0.05 token is not (0.95 >= 0.85 above it)."),
        (dict(top_p=0.3), [[1], [2]], "the most likely token alone already reaches 0.3."),
        (dict(top_k=2), [[1, 3], [2, 0]], "the two largest logits."),
        (dict(top_k=2, top_p=0.6), [[1], [2]], "after top-k the probabilities are 0.625 and 0.375: "
         "0.625 alone reaches 0.6."),
        (dict(top_k=10), [[0, 1, 2, 3], [0, 1, 2, 3]], "top_k >= V keeps every token."),
        (dict(top_p=1.0), [[0, 1, 2, 3], [0, 1, 2, 3]], "top_p = 1 keeps every token."),
        (dict(), [[0, 1, 2, 3], [0, 1, 2, 3]], "no filter: the logits unchanged."),
    ]
    for kwargs, kept, why in examples:
        shown = (f"filter_logits(log([[0.05, 0.5, 0.15, 0.3], [0.3, 0.15, 0.5, 0.05]]), "
                 f"{', '.join(f'{k}={v}' for k, v in kwargs.items())})")
        expected = torch.tensor([keep(row, k) for row, k in zip(x, kept)], dtype=torch.float64)
        expect_example(call(filter_logits, shown, x, kwargs.get("top_k"), kwargs.get("top_p")), expected,
                       shown, why)
    ties = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    shown = "filter_logits([[1., 2., 2., 0.]], top_k=1)"
    expect_example(call(filter_logits, shown, ties, 1, None), torch.tensor([[inf, 2.0, 2.0, inf]]), shown,
                   "entries tied with the k-th largest value are kept.")
    passed("filter_logits", len(examples) + 1)


def check_sample_next(sample_next: Callable) -> None:
    """Greedy, top-k = 1, the exact draw for a seed, and frequencies over 20 000 draws (top-k, top-p)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, generator=g) * 2
    shown = "sample_next(<random (4, 7) logits>, temperature=0)"
    expect_example(call(sample_next, shown, logits, 0), logits.argmax(-1), shown,
                   "greedy: the index of the largest logit of each row, an int64 tensor of shape (B,).")
    shown = "sample_next(<random (4, 7) logits>, temperature=1.5, top_k=1, generator=<seeded with 0>)"
    expect_example(call(sample_next, shown, logits, 1.5, 1, None, torch.Generator().manual_seed(0)),
                   logits.argmax(-1), shown,
                   "top_k=1 leaves only the most likely token to draw.")
    for t in (0.7, 1.0, 2.0):
        shown = f"sample_next(<random (4, 7) logits>, temperature={t}, generator=<seeded with 3>)"
        got = call(sample_next, shown, logits, t, None, None, torch.Generator().manual_seed(3))
        expect_example(got, _draw(torch.softmax(logits / t, -1), 3), shown,
                       "draw with torch.multinomial(softmax(logits / temperature), num_samples=1, "
                       "generator=generator), then squeeze(-1): the same seed gives the same tokens.")
    row = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    many = row.expand(20_000, 4)
    for kwargs, probs, why in (
            (dict(temperature=2.0), torch.softmax(row[0] / 2.0, -1), "softmax(logits / 2)"),
            (dict(temperature=0.5), torch.softmax(row[0] / 0.5, -1), "softmax(logits / 0.5)"),
            (dict(temperature=1.0, top_k=2), torch.tensor([0.0, 1.0, math.e, 0.0]) / (1 + math.e),
             "only tokens 2 and 1, in the ratio e : 1"),
            (dict(temperature=2.0, top_p=0.6), torch.tensor([0.0, 1.0, math.exp(0.5), 0.0]) / (1 + math.exp(0.5)),
             "softmax(logits / 2) is [0.167, 0.276, 0.455, 0.102]: the nucleus of 0.6 is tokens 2 "
             "and 1 (0.455 < 0.6 above token 1, 0.731 above token 0), renormalised")):
        shown = f"sample_next(<[0, 1, 2, -1] x 20000 rows>, {', '.join(f'{k}={v}' for k, v in kwargs.items())})"
        got = call(sample_next, shown, many, kwargs["temperature"], kwargs.get("top_k"),
                   kwargs.get("top_p"), torch.Generator().manual_seed(1))
        freq = _frequencies(got, 4) if isinstance(got, torch.Tensor) and got.dtype == torch.int64 else None
        seen = [round(v, 3) for v in freq.tolist()] if freq is not None else _show(got)
        record(shown, seen)  # the seeded draws are the same in every notebook: a mistake's are known
        if freq is None or float((freq - probs.double()).abs().max()) > 0.015:
            hints = public_hints(sys._getframe(0), shown, seen)
            raise CheckFailed(f"{shown}: token frequencies {seen}, expected about "
                              f"{[round(v, 3) for v in probs.tolist()]} ({why})"
                              + "".join(f"\nHint: {h}" for h in hints))
    passed("sample_next", 9)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

def _config(g: torch.Generator, *, n_head: int | None = None) -> dict:
    """A random config; at least two heads unless ``n_head`` says otherwise (one head hides how
    the heads are cut and put back, and the scale's head size)."""
    n_head = n_head or randint(g, 2, 5)
    return dict(block_size=randint(g, 4, 13), vocab_size=randint(g, 5, 40), n_layer=randint(g, 1, 4),
                n_head=n_head, n_embd=n_head * randint(g, 2, 7))


def _attention_case(g, dtype=torch.float32, T=None, n_head=None):
    cfg = _config(g, n_head=n_head)
    sd = _random_state(g, attention_shapes(cfg["n_embd"]), dtype)
    T = T or randint(g, 2, 10)
    return cfg, sd, torch.randn(randint(g, 1, 4), T, cfg["n_embd"], generator=g, dtype=dtype)


ATTENTION_CALL = ("lambda cfg, sd, x: (lambda m: (m.load_state_dict(sd), m(x))[1])"
                  "(CausalSelfAttention(GPTConfig(**cfg)).to(x.device, x.dtype).requires_grad_(False))")


def _gpt_case(g, dtype=torch.float32, T=None, B=None, full=False):
    cfg = _config(g)
    sd = _random_state(g, gpt_shapes(cfg), dtype)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied, as a converted GPT-2 checkpoint is
    T = cfg["block_size"] if full else T or randint(g, 2, cfg["block_size"] + 1)
    return cfg, sd, torch.randint(0, cfg["vocab_size"], (B or randint(g, 1, 4), T), generator=g)


def run_gpt(GPT: Callable, GPTConfig: Callable, cfg: dict, sd: dict, idx: torch.Tensor) -> tuple:
    """The hidden cases' adapter: GPT(GPTConfig(**cfg)) with ``sd`` loaded by name, as (names it
    lacks, names it did not expect, parameter count, logits). The model is built from a seeded
    generator, so that a weight ``sd`` does not set is the same in every run."""
    with seeded(0):
        model = GPT(GPTConfig(**cfg))
    model = model.to(idx.device, sd["transformer.wte.weight"].dtype).requires_grad_(False)
    loaded = model.load_state_dict(sd, strict=False)
    return (sorted(loaded.missing_keys), sorted(loaded.unexpected_keys),
            sum(p.numel() for p in model.parameters()), model(idx))


GPT_CALL = "lambda cfg, sd, idx: checks.run_gpt(GPT, GPTConfig, cfg, sd, idx)"
GPT_OUTCOME_CALL = "lambda cfg, sd, idx: checks.outcome(lambda: checks.run_gpt(GPT, GPTConfig, cfg, sd, idx))"


def _gpt_too_long(g):
    """T = block_size + 1 .. block_size + 3: past the position table, GPT.forward raises ValueError."""
    cfg, sd, _ = _gpt_case(g)
    T = cfg["block_size"] + randint(g, 1, 4)
    return cfg, sd, torch.randint(0, cfg["vocab_size"], (randint(g, 1, 4), T), generator=g)


COUNT_CALL = "lambda cfg, tied: count_parameters(GPTConfig(**cfg), tied)"


def _count_case(g, tied):
    """Sizes where no two counting mistakes miss the same number: L >= 2 (one block's 2C of
    LayerNorms is ln_f's 2C), and V, block_size >= 32 (a V x C or block_size x C table is more
    than the 9LC of the biases)."""
    return _config(g) | dict(n_layer=randint(g, 2, 6), vocab_size=randint(g, 32, 60_000),
                             block_size=randint(g, 32, 5000)), tied


def _convert_case(g, buffers=False, dtype=torch.float32):
    return (hf_layout(g, _config(g), dtype, buffers),)


def converted(convert: Callable, sd: dict) -> tuple:
    """The hidden cases' adapter: (``convert(sd)``, the names of the entries of ``sd`` the call
    changed or removed: a conversion must leave its input as it was). The tensors of a returned
    dict come back as views of one block per dtype (same shapes and values): the grader keeps
    every mistake's results, and one block is one shared-memory file where a tensor each is many."""
    before = {k: v.clone() for k, v in sd.items()}
    out = convert(sd)
    changed = sorted(k for k, v in before.items() if not (
        isinstance(sd.get(k), torch.Tensor) and sd[k].shape == v.shape and torch.equal(sd[k], v)))
    return _packed(out), changed


def _packed(x: Any) -> Any:
    """A dict of tensors as views of one contiguous block per (dtype, device); anything else as it is."""
    if not isinstance(x, dict) or not all(isinstance(v, torch.Tensor) for v in x.values()):
        return x
    out = {}
    for kind in {(v.dtype, v.device) for v in x.values()}:
        names = [k for k, v in x.items() if (v.dtype, v.device) == kind]
        block = torch.cat([x[k].detach().reshape(-1) for k in names])
        offset = 0
        for k in names:
            out[k] = block[offset:offset + x[k].numel()].view(x[k].shape)
            offset += x[k].numel()
    return {k: out[k] for k in x}


CONVERT_CALL = "lambda sd: checks.converted(convert_gpt2_state_dict, sd)"


def _filter_case(g, top_k=None, top_p=None, dtype=torch.float32):
    """(B, V) logits, V >= 8 so that a top-k of k <= 7 filters something."""
    B, V = randint(g, 1, 5), randint(g, 8, 30)
    logits = torch.randn(B, V, generator=g, dtype=dtype) * float(torch.empty(1).uniform_(0.5, 3, generator=g))
    return logits, top_k, top_p


def _p(g, lo=0.3, hi=0.95) -> float:
    return round(float(torch.empty(1).uniform_(lo, hi, generator=g)), 3)


FILTER_CALL = "filter_logits"


def _filter_peaked(g, dtype=torch.float32):
    """top_p = 1 on confident rows: one logit 50 above the others, whose probabilities are then below
    the float epsilon, so that the mass above each of them rounds to exactly 1 (top_p = 1 keeps them)."""
    logits, _, _ = _filter_case(g, dtype=dtype)
    B, V = logits.shape
    top = torch.randint(0, V, (B,), generator=g)
    logits[torch.arange(B), top] = logits.max(-1).values + 50
    return logits, None, 1.0


def _filter_tied(g):
    """top_k = n (2, 4 or 8) on rows whose n largest logits are tied at 0, then top_p = j / n: the
    probabilities after top-k are exactly 1 / n, so the mass above the (j+1)-th tied token is
    exactly top_p, and it is dropped (kept only when the mass above is *less* than top_p)."""
    n = (2, 4, 8)[randint(g, 0, 3)]
    logits, _, _ = _filter_case(g)
    B, V = logits.shape
    logits = -logits.abs() - 0.5  # every other logit below 0
    for b in range(B):
        logits[b, torch.randperm(V, generator=g)[:n]] = 0.0
    return logits, n, randint(g, 1, n) / n


def _tied_check(got: Any, expected: Any, args: tuple) -> str | None:
    """Which of tied tokens are kept is the sort's choice: every entry must be its logit or -inf,
    and each row must keep the same values as the reference's (compared sorted)."""
    if (message := describe_difference(got, expected)) is None:
        return None
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype \
            or got.device.type != expected.device.type:
        return message
    g, e, x = got.detach().cpu(), expected.detach().cpu(), args[0].detach().cpu()
    if not ((g == x) | (g == NEG_INF)).all():
        return message
    return describe_difference(g.sort(-1).values, e.sort(-1).values,
                               "the values kept in each row, sorted (any of tied tokens may be kept)")


def _sample_case(g, temperature, top_k=None, top_p=None, dtype=torch.float32):
    """(B, V) logits and a seed; many rows, so that a mistake changes some row's draw."""
    B, V = randint(g, 8, 17), randint(g, 4, 30)
    return torch.randn(B, V, generator=g, dtype=dtype) * 2, randint(g, 0, 10_000), temperature, top_k, top_p


def _sample_many(g, temperature, top_k=None, top_p=None):
    V = randint(g, 5, 9)
    logits = (torch.randn(1, V, generator=g) * 1.5).expand(20_000, V).contiguous()
    return logits, randint(g, 0, 10_000), temperature, top_k, top_p


def _pick_temperature(g: torch.Generator, sharp: bool = False) -> float:
    """A temperature far from 1 (at 1, where it is applied cannot matter); below 1 if ``sharp``."""
    return (0.5, 0.7, 1.5, 2.0)[randint(g, 0, 2 if sharp else 4)]


SAMPLE_CALL = ("lambda logits, seed, t, k, p: sample_next(logits, t, k, p, "
               "torch.Generator(device=logits.device).manual_seed(seed))")
SAMPLE_UNSEEDED_CALL = "lambda logits, seed, t, k, p: sample_next(logits, t, k, p)"

CASES: dict[str, list[Case]] = {
    "test_causal_self_attention": [
        Case(ATTENTION_CALL, _attention_case, "random config, weights and (B, T, C) x"),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, torch.float64), "float64"),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, T=1), "T = 1"),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, n_head=1), "one head"),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, T=randint(g, 12, 20)), "longer T"),
    ],
    "test_GPT": [
        Case(GPT_CALL, _gpt_case, "random config and weights (lm_head.weight = wte.weight)", (GPT_NAMES,)),
        Case(GPT_CALL, lambda g: _gpt_case(g, torch.float64), "float64 weights", (GPT_NAMES,)),
        Case(GPT_CALL, lambda g: _gpt_case(g, T=1, B=1), "one sequence of one token", (GPT_NAMES,)),
        Case(GPT_CALL, lambda g: _gpt_case(g, full=True), "T = block_size (the whole context)", (GPT_NAMES,)),
        Case(GPT_OUTCOME_CALL, _gpt_too_long, "T > block_size: ValueError", check=same_error),
    ],
    "test_count_parameters": [
        Case(COUNT_CALL, lambda g: _count_case(g, True), "random config, tied", (COUNT_NOT_INT,)),
        Case(COUNT_CALL, lambda g: _count_case(g, False), "random config, untied", (COUNT_NOT_INT,)),
        Case("lambda cfg, tied: count_parameters(GPTConfig(**cfg))", lambda g: _count_case(g, True),
             "random config, tied left out (default True)", (COUNT_NOT_INT,)),
    ],
    "test_convert_gpt2_state_dict": [
        Case(CONVERT_CALL, _convert_case, "random config"),
        Case(CONVERT_CALL, lambda g: _convert_case(g, buffers=True), "with .attn.bias / .attn.masked_bias buffers"),
        Case(CONVERT_CALL, lambda g: _convert_case(g, dtype=torch.float64), "float64"),
    ],
    "test_filter_logits": [
        Case(FILTER_CALL, lambda g: _filter_case(g, top_k=randint(g, 1, 6)), "top-k"),
        Case(FILTER_CALL, lambda g: _filter_case(g, top_p=_p(g)), "top-p"),
        Case(FILTER_CALL, lambda g: _filter_case(g, top_p=_p(g, 0.05, 0.5), dtype=torch.float64),
             "top-p, small p, float64"),
        Case(FILTER_CALL, lambda g: _filter_case(g, top_k=randint(g, 2, 8), top_p=_p(g)), "top-k then top-p"),
        Case(FILTER_CALL, lambda g: _filter_case(g, top_k=100, top_p=1.0), "top_k >= V, top_p = 1"),
        Case(FILTER_CALL, _filter_case, "no filter"),
        Case(FILTER_CALL, _filter_peaked, "top_p = 1 on confident rows (others' probabilities below float epsilon)"),
        Case(FILTER_CALL, _filter_tied, "top-k of tied logits, then top-p exactly at the mass above one of them",
             check=_tied_check),
    ],
    "test_sample_next": [
        Case(SAMPLE_CALL, lambda g: _sample_case(g, 0), "greedy (temperature 0)"),
        Case(SAMPLE_CALL, lambda g: _sample_case(g, _pick_temperature(g)), "temperature, seeded"),
        Case(SAMPLE_CALL, lambda g: _sample_case(g, 1.0), "temperature 1, seeded"),
        Case(SAMPLE_CALL, lambda g: _sample_case(g, _pick_temperature(g), top_k=randint(g, 2, 5)),
             "top-k, seeded"),
        Case(SAMPLE_CALL, lambda g: _sample_case(g, 0.8, top_p=_p(g, 0.3, 0.7), dtype=torch.float64),
             "top-p, float64, seeded"),
        Case(SAMPLE_UNSEEDED_CALL, lambda g: _sample_many(g, _pick_temperature(g)),
             "frequencies over 20000 draws, temperature", check=_statistical_check),
        Case(SAMPLE_UNSEEDED_CALL,  # sharp: few tokens reach p, unlike among probabilities taken as logits
             lambda g: _sample_many(g, _pick_temperature(g, sharp=True), top_k=randint(g, 3, 6), top_p=_p(g, 0.4, 0.6)),
             "frequencies over 20000 draws, top-k and top-p", check=_statistical_check),
    ],
}
