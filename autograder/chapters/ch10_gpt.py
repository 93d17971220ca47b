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
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import as_tensor, call, close, cpu64, expect_example, randint
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
# PyTorch's building blocks with a course state_dict, and the typical mistakes built in
# ----------------------------------------------------------------------------------------

def _mha(sd: dict, x: torch.Tensor, n_head: int, causal: bool = True, prefix: str = "") -> torch.Tensor:
    """nn.MultiheadAttention (float64, CPU) with c_attn as its in-projection, c_proj as out."""
    C = x.shape[-1]
    mha = nn.MultiheadAttention(C, n_head, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(sd[prefix + "c_attn.weight"])
        mha.in_proj_bias.copy_(sd[prefix + "c_attn.bias"])
        mha.out_proj.weight.copy_(sd[prefix + "c_proj.weight"])
        mha.out_proj.bias.copy_(sd[prefix + "c_proj.bias"])
        T = x.shape[-2]
        blocked = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None  # True = blocked
        return mha(cpu64(x), cpu64(x), cpu64(x), attn_mask=blocked, need_weights=False)[0]


def _attention_variant(sd: dict, x: torch.Tensor, n_head: int, *, order=(0, 1, 2),
                       split_by_view: bool = False, merge_by_view: bool = False,
                       project: bool = True) -> torch.Tensor:
    """Causal attention with a mistake built in: q, k, v taken in another order, heads cut (or
    put back) by a plain view (B, nh, T, hs) instead of view + transpose, or no output projection."""
    x = cpu64(x)
    B, T, C = x.shape
    hs = C // n_head
    qkv = x @ cpu64(sd["c_attn.weight"]).T + cpu64(sd["c_attn.bias"])
    q, k, v = (qkv.split(C, -1)[i] for i in order)
    if split_by_view:
        q, k, v = (t.reshape(B, n_head, T, hs) for t in (q, k, v))
    else:
        q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
    y = y.reshape(B, T, C) if merge_by_view else y.transpose(1, 2).reshape(B, T, C)
    return y @ cpu64(sd["c_proj.weight"]).T + cpu64(sd["c_proj.bias"]) if project else y


def _attention_mistake(**variant) -> Callable:
    def applies(got, exp, args):
        cfg, sd, x = args
        return close(got, _attention_variant(sd, x, cfg["n_head"], **variant))
    return applies


def _attention_no_mask(got, exp, args):
    cfg, sd, x = args
    return close(got, _mha(sd, x, cfg["n_head"], causal=False))


ATTN_NO_MASK = Hint("the output equals attention without the causal mask: position t must not see "
                    "positions after t (is_causal=True in F.scaled_dot_product_attention).",
                    _attention_no_mask)
ATTN_ORDER = Hint("q, k and v are taken in another order: c_attn(x).split(C, dim=-1) gives q, k, v "
                  "in that order.", lambda got, exp, args: any(
                      _attention_mistake(order=o)(got, exp, args)
                      for o in ((1, 0, 2), (2, 1, 0), (0, 2, 1), (1, 2, 0), (2, 0, 1))))
ATTN_HEADS = Hint("the heads are cut wrongly: view each of q, k, v as (B, T, n_head, hs) and then "
                  "transpose(1, 2) to (B, n_head, T, hs); a plain view to (B, n_head, T, hs) mixes "
                  "positions and features. Undo it the same way: transpose(1, 2), then view (B, T, C).",
                  lambda got, exp, args: any(
                      _attention_mistake(split_by_view=a, merge_by_view=b)(got, exp, args)
                      for a, b in ((True, True), (True, False), (False, True))))
ATTN_NO_PROJ = Hint("the output projection is missing: apply self.c_proj to the concatenated heads.",
                    _attention_mistake(project=False))
ATTENTION_HINTS = (ATTN_NO_MASK, ATTN_ORDER, ATTN_HEADS, ATTN_NO_PROJ)


def builtin_gpt_logits(sd: dict, cfg: dict, idx: torch.Tensor, *, norm_first: bool = True,
                       positions: bool = True, gelu: str = "tanh", final_norm: bool = True) -> torch.Tensor:
    """GPT-2's logits computed with nn.TransformerEncoderLayer (float64, CPU) from a course
    state_dict; the keyword arguments build in a typical mistake (post-norm, no positions...)."""
    C, H = cfg["n_embd"], cfg["n_head"]
    sd = {k: cpu64(v) for k, v in sd.items()}
    idx = idx.detach().cpu()
    T = idx.shape[1]
    x = sd["transformer.wte.weight"][idx]
    if positions:
        x = x + sd["transformer.wpe.weight"][:T]
    blocked = torch.ones(T, T, dtype=torch.bool).triu(1)
    for i in range(cfg["n_layer"]):
        layer = nn.TransformerEncoderLayer(C, H, 4 * C, dropout=0.0, batch_first=True,
                                           activation=lambda h: F.gelu(h, approximate=gelu),
                                           norm_first=norm_first, dtype=torch.float64).eval()
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
    if final_norm:
        x = F.layer_norm(x, (C,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"])
    return x @ sd.get("lm_head.weight", sd["transformer.wte.weight"]).T


def _logits_of(got: Any) -> Any:
    """The logits of a GPT case's (missing keys, unexpected keys, n_params, logits) output."""
    return got[3] if isinstance(got, (tuple, list)) and len(got) == 4 else got


def _gpt_mistake(**variant) -> Callable:
    def applies(got, exp, args):
        cfg, sd, idx = args
        return close(_logits_of(got), builtin_gpt_logits(sd, cfg, idx, **variant))
    return applies


def _untied(got, exp, args):
    cfg = args[0]
    return (isinstance(got, (tuple, list)) and len(got) == 4 and isinstance(got[2], int)
            and got[2] - _n_params(exp) == cfg["vocab_size"] * cfg["n_embd"])


def _n_params(exp: Any) -> int:
    return exp[2]


def _names_differ(got, exp, args):
    return isinstance(got, (tuple, list)) and len(got) == 4 and bool(got[0] or got[1])


GPT_UNTIED = Hint("weight tying is missing: the model has vocab_size * n_embd parameters too many. "
                  "Set self.lm_head.weight = self.transformer.wte.weight, so that the output layer "
                  "and the token embedding are one nn.Parameter.", _untied)
GPT_NAMES = Hint("some parameter names differ from the exercise's table (the first two items are "
                 "the names the grader could not load, and the names it did not expect): use "
                 "transformer = nn.ModuleDict(dict(wte=..., wpe=..., h=nn.ModuleList(...), ln_f=...)), "
                 "and ln_1, attn, ln_2, mlp in each Block.", _names_differ)
GPT_POST_NORM = Hint("the blocks are post-norm (x = ln(x + f(x))): GPT-2 is pre-norm, "
                     "x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x)).",
                     _gpt_mistake(norm_first=False))
GPT_NO_POSITIONS = Hint("the position embeddings are missing: add transformer.wpe(positions 0..T-1) "
                        "to the token embeddings.", _gpt_mistake(positions=False))
GPT_EXACT_GELU = Hint("GPT-2's GELU is the tanh approximation: F.gelu(h, approximate='tanh').",
                      _gpt_mistake(gelu="none"))
GPT_NO_LN_F = Hint("the final LayerNorm ln_f is missing: apply it after the last block, before "
                   "lm_head.", _gpt_mistake(final_norm=False))
GPT_HINTS = (GPT_UNTIED, GPT_NAMES, GPT_POST_NORM, GPT_NO_POSITIONS, GPT_EXACT_GELU, GPT_NO_LN_F)


def _config_of(args: tuple) -> dict:
    return args[0]


def _count_diff(got: Any, exp: Any) -> int | None:
    return exp - got if isinstance(got, int) and not isinstance(got, bool) else None


def _count_hint(text: str, missing: Callable[[dict, bool], int | None]) -> Hint:
    def applies(got, exp, args):
        diff, target = _count_diff(got, exp), missing(args[0], args[1])
        return diff is not None and target is not None and diff == target
    return Hint(text, applies)


COUNT_HEAD_TIED = _count_hint(
    "with tied=True the output layer is the token embedding: do not count its V x C weight again.",
    lambda c, tied: -c["vocab_size"] * c["n_embd"] if tied else None)
COUNT_HEAD_UNTIED = _count_hint(
    "with tied=False the output layer is a separate V x C matrix (no bias): add it.",
    lambda c, tied: None if tied else c["vocab_size"] * c["n_embd"])
COUNT_BIASES = _count_hint(
    "the biases of the linear layers are missing: c_attn has 3C, c_proj C, c_fc 4C and the MLP's "
    "c_proj C, in every block.", lambda c, tied: c["n_layer"] * 9 * c["n_embd"])
def _layer_norms_missing(got, exp, args):
    """Some LayerNorm gains or biases not counted: a multiple of C, at most all 2 (2L + 1) C of them
    (and not the C-multiple that a missing wpe gives)."""
    c, diff = args[0], _count_diff(got, exp)
    C, L = c["n_embd"], c["n_layer"]
    return (diff is not None and 0 < diff <= 2 * C * (2 * L + 1) and diff % C == 0
            and diff != c["block_size"] * C)


COUNT_LAYER_NORMS = Hint(
    "LayerNorm parameters are missing: each LayerNorm has a gain and a bias of C numbers each "
    "(2C in all); there are two per block (ln_1, ln_2) and ln_f at the end.", _layer_norms_missing)
COUNT_POSITIONS = _count_hint(
    "the position embedding table wpe (block_size x C) is missing.",
    lambda c, tied: c["block_size"] * c["n_embd"])
COUNT_NOT_INT = Hint("return a Python int (sum of products of ints), not a float or a tensor.",
                     lambda got, exp, args: not isinstance(got, int))
COUNT_HINTS = (COUNT_HEAD_TIED, COUNT_HEAD_UNTIED, COUNT_BIASES, COUNT_LAYER_NORMS, COUNT_POSITIONS,
               COUNT_NOT_INT)


def _conv1d(name: str) -> bool:
    return name.endswith(CONV1D)


def _convert_not_transposed(got, exp, args):
    sd = args[0]
    return isinstance(got, dict) and any(
        _conv1d(k) and isinstance(got.get(k), torch.Tensor) and got[k].shape == sd[k].shape
        and sd[k].shape[0] != sd[k].shape[1] for k in sd)


def _convert_square_missed(got, exp, args):
    sd = args[0]
    return isinstance(got, dict) and any(
        k.endswith("attn.c_proj.weight") and isinstance(got.get(k), torch.Tensor)
        and torch.equal(cpu64(got[k]), cpu64(sd[k])) for k in sd)


def _convert_too_many(got, exp, args):
    sd = args[0]
    return isinstance(got, dict) and any(
        not _conv1d(k) and isinstance(got.get(k), torch.Tensor) and got[k].dim() == 2
        and got[k].shape != sd[k].shape for k in sd)


def _convert_buffers(got, exp, args):
    return isinstance(got, dict) and any(k.endswith((".attn.bias", ".attn.masked_bias")) for k in got)


CONVERT_NOT_TRANSPOSED = Hint("a Conv1D weight was not transposed: Conv1D stores W as (in, out) and "
                              "computes x @ W, nn.Linear stores (out, in) and computes x @ W.T; "
                              "use tensor.t() for attn.c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj "
                              "weights.", _convert_not_transposed)
CONVERT_SQUARE = Hint("attn.c_proj.weight is square (C x C), so its shape cannot tell you whether it "
                      "is transposed: transpose it too, like the other three Conv1D weights.",
                      _convert_square_missed)
CONVERT_TOO_MANY = Hint("only the four Conv1D weights are transposed: embeddings (wte, wpe) and "
                        "lm_head.weight are already in PyTorch's layout.", _convert_too_many)
CONVERT_BUFFERS = Hint("leave out the entries ending in .attn.bias and .attn.masked_bias: they are "
                       "the causal-mask buffers of older transformers versions, not parameters "
                       "(careful: .attn.c_attn.bias is a real parameter).", _convert_buffers)
CONVERT_HINTS = (CONVERT_NOT_TRANSPOSED, CONVERT_SQUARE, CONVERT_TOO_MANY, CONVERT_BUFFERS)


def _finite_sets(x: Any) -> list[set[int]] | None:
    t = as_tensor(x)
    if t is None or t.dim() != 2 or not t.dtype.is_floating_point:
        return None
    return [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in t]


def _crossing_dropped(got, exp, args):
    """Each differing row keeps the expected tokens minus its least likely one."""
    g, e = _finite_sets(got), _finite_sets(exp)
    if g is None or e is None or len(g) != len(e) or g == e:
        return False
    ev = cpu64(exp)
    for row, (gs, es) in enumerate(zip(g, e)):
        if gs != es:
            weakest = min(es, key=lambda j: ev[row, j].item())
            if gs != es - {weakest}:
                return False
    return True


def _zero_filled(got, exp, args):
    e = as_tensor(exp)
    return close(got, e.masked_fill(torch.isinf(e), 0.0)) and bool(torch.isinf(e).any())


def _probabilities(got, exp, args):
    return close(got, torch.softmax(cpu64(exp), -1))


def _top_p_crossing_dropped(got, exp, args):
    return args[2] is not None and _crossing_dropped(got, exp, args)


def _top_k_kth_dropped(got, exp, args):
    return args[1] is not None and args[2] is None and _crossing_dropped(got, exp, args)


def _top_k_off_by_one(got, exp, args):
    g, e = _finite_sets(got), _finite_sets(exp)
    return (g is not None and e is not None and len(g) == len(e) and g != e
            and all(abs(len(a) - len(b)) == 1 or a == b for a, b in zip(g, e)))


FILTER_CROSSING = Hint("the token whose probability makes the running total cross top_p is dropped: "
                       "keep it. A token is kept when the probability of the tokens ranked above "
                       "it is < top_p (cumsum minus its own probability), so the kept set's total "
                       "is at least top_p.", _top_p_crossing_dropped)
FILTER_KTH = Hint("the k-th largest logit itself is removed, so each row keeps k - 1 tokens: remove "
                  "only the logits strictly below the k-th largest value (logits < kth, not <=).",
                  _top_k_kth_dropped)
FILTER_ZERO = Hint("removed tokens must get -inf, not 0: a logit of 0 still has probability "
                   "exp(0) / Z > 0.", _zero_filled)
FILTER_PROBS = Hint("return logits (with -inf for removed tokens), not probabilities.", _probabilities)
FILTER_COUNT = Hint("each row keeps one token too many or too few; top-k keeps exactly the k largest "
                    "(plus ties with the k-th), and top-p keeps the crossing token.", _top_k_off_by_one)
FILTER_HINTS = (FILTER_CROSSING, FILTER_KTH, FILTER_ZERO, FILTER_PROBS, FILTER_COUNT)


def _draw(probs: torch.Tensor, seed: int) -> torch.Tensor:
    """The course's draw: torch.multinomial with a generator seeded with ``seed`` on probs' device."""
    g = torch.Generator(device=probs.device).manual_seed(seed)
    return torch.multinomial(probs, 1, generator=g).squeeze(-1)


def _temperature_multiplied(got, exp, args):
    logits, seed, t, k, p = args
    if not isinstance(got, torch.Tensor) or t == 0 or k is not None or p is not None:
        return False
    return torch.equal(got.cpu(), _draw(torch.softmax(logits * t, -1), seed).cpu())


def _kept_dim(got, exp, args):
    return isinstance(got, torch.Tensor) and got.shape == (*exp.shape, 1)


SAMPLE_TEMPERATURE = Hint("the samples match logits multiplied by the temperature: divide "
                          "(logits / temperature), so that temperature < 1 sharpens.",
                          _temperature_multiplied)
SAMPLE_SHAPE = Hint("return shape (B,): drop the last dimension of multinomial's (B, 1) result "
                    "(.squeeze(-1)), and for greedy use argmax(dim=-1) without keepdim.", _kept_dim)
SAMPLE_FILTERED = Hint("with top-k/top-p, check the order: logits / temperature (divide), then "
                       "filter_logits on those logits, then softmax, then torch.multinomial(probs, "
                       "num_samples=1, generator=generator).",
                       lambda got, exp, args: args[2] != 0 and (args[3] is not None or args[4] is not None)
                       and isinstance(got, torch.Tensor) and got.shape == exp.shape)
SAMPLE_HINTS = (SAMPLE_TEMPERATURE, SAMPLE_SHAPE, SAMPLE_FILTERED)


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


def _statistical_temperature(got, exp, args):
    logits, seed, t, k, p = args
    if not isinstance(got, torch.Tensor) or got.dtype != torch.int64:
        return False
    wrong = torch.softmax(cpu64(logits[0]) * t, -1)
    return 0.5 * float((_frequencies(got, logits.shape[-1]) - wrong).abs().sum()) <= 0.03


STAT_TEMPERATURE = Hint("the frequencies follow softmax(logits * temperature): divide by the "
                        "temperature instead.", _statistical_temperature)
STAT_FILTER_ORDER = Hint("with top-k/top-p the frequencies are off: the order is logits / temperature, "
                         "then filter_logits on those logits (not on probabilities), then softmax, "
                         "then torch.multinomial.",
                         lambda got, exp, args: args[3] is not None or args[4] is not None)


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
    module = call(CausalSelfAttention, "CausalSelfAttention(config with n_embd=8, n_head=2)", cfg)
    expect(_shapes_of(module), attention_shapes(8),
           "CausalSelfAttention(n_embd=8)'s parameters (name -> shape)",
           ["c_attn = nn.Linear(C, 3 * C) and c_proj = nn.Linear(C, C), both with biases."])
    g = torch.Generator().manual_seed(0)
    sd = _fill(module, g)
    x = torch.randn(2, 5, 8, generator=g)
    args = (TINY, sd, x)
    shown = "CausalSelfAttention(n_embd=8, n_head=2)(<random (2, 5, 8) x>)"
    with torch.no_grad():
        got = call(module, shown, x)
        expect_example(got, _mha(sd, x, 2).float(), shown,
                       "the output must equal nn.MultiheadAttention(8, 2) with in_proj = c_attn, "
                       "out_proj = c_proj and a causal mask, shape (B, T, C).", ATTENTION_HINTS, args)
        v0 = (x[:, 0] @ sd["c_attn.weight"].T + sd["c_attn.bias"])[:, 16:]
        expect_example(got[:, 0], v0 @ sd["c_proj.weight"].T + sd["c_proj.bias"], shown + "[:, 0]",
                       "position 0 sees only itself: its output is c_proj(v_0), v_0 the last third of "
                       "c_attn(x_0).", ATTENTION_HINTS, args)
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
    model = call(GPT, "GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8))", config)
    expect(_shapes_of(model), gpt_shapes(TINY), "GPT(tiny config).state_dict(): name -> shape",
           ["follow the exercise's table of names: transformer.wte, transformer.wpe, transformer.h.<i>"
            ".{ln_1, attn, ln_2, mlp}, transformer.ln_f, lm_head (no bias)."])
    tied = model.lm_head.weight is model.transformer.wte.weight
    expect(tied, True, "model.lm_head.weight is model.transformer.wte.weight", [GPT_UNTIED.text])
    expect(sum(p.numel() for p in model.parameters()), 1912,
           "sum(p.numel() for p in model.parameters()) for the tiny config",
           ["1912 = 88 + 64 (wte, wpe) + 2 x 872 (blocks) + 16 (ln_f); the tied head adds nothing."])
    g = torch.Generator().manual_seed(0)
    sd = _fill(model, g)
    idx = torch.randint(0, 11, (3, 5), generator=g)
    shown = "GPT(tiny)(<random (3, 5) ids>)"
    args = (TINY, sd, idx)
    with torch.no_grad():
        got = call(model, shown, idx)
        expect_example(got, builtin_gpt_logits(sd, TINY, idx).float(), shown,
                       "logits (B, T, V) = (3, 5, 11), equal to a stack of PyTorch's "
                       "nn.TransformerEncoderLayer(norm_first=True, GELU tanh) given your weights, then "
                       "ln_f and the tied head.", GPT_HINTS, args)
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
        cfg = dict(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768) | sizes
        expect_example(got, expected, shown, why, COUNT_HINTS, (cfg, tied))
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
    hints = [h.text for h in CONVERT_HINTS if h.matches(got, None, (sd,))]  # judged on the whole dict
    expect(sorted(got), sorted(gpt_shapes(TINY)), f"the keys of {shown}", hints or [
        "every key of GPT(config).state_dict(), lm_head.weight included, and nothing else."])
    x = torch.randn(3, 32, generator=g)
    for name in sd:
        if name not in got:
            continue
        value = got[name]
        if _conv1d(name):
            W = sd[name]  # (in, out)
            expect(tuple(value.shape) if isinstance(value, torch.Tensor) else value, tuple(W.t().shape),
                   f"result[{name!r}].shape", ["nn.Linear's weight is (out, in).", *hints])
            expect(F.linear(x[:, :W.shape[0]], value), x[:, :W.shape[0]] @ W,
                   f"F.linear(x, result[{name!r}])", ["nn.Linear with the converted weight must "
                                                      "compute what Conv1D computed, x @ W.", *hints])
        else:
            expect(value, sd[name], f"result[{name!r}]", ["entries other than the four Conv1D "
                                                          "weights are copied unchanged.", *hints])
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
                       shown, why, FILTER_HINTS, (x, kwargs.get("top_k"), kwargs.get("top_p")))
    ties = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    shown = "filter_logits([[1., 2., 2., 0.]], top_k=1)"
    expect_example(call(filter_logits, shown, ties, 1, None), torch.tensor([[inf, 2.0, 2.0, inf]]), shown,
                   "entries tied with the k-th largest value are kept.", FILTER_HINTS, (ties, 1, None))
    passed("filter_logits", len(examples) + 1)


def check_sample_next(sample_next: Callable) -> None:
    """Greedy, top-k = 1, the exact draw for a seed, and frequencies over 20 000 draws (top-k, top-p)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, generator=g) * 2
    shown = "sample_next(<random (4, 7) logits>, temperature=0)"
    expect_example(call(sample_next, shown, logits, 0), logits.argmax(-1), shown,
                   "greedy: the index of the largest logit of each row, an int64 tensor of shape (B,).",
                   SAMPLE_HINTS, (logits, 0, 0, None, None))
    shown = "sample_next(<random (4, 7) logits>, temperature=1.5, top_k=1)"
    expect_example(call(sample_next, shown, logits, 1.5, 1), logits.argmax(-1), shown,
                   "top_k=1 leaves only the most likely token to draw.", SAMPLE_HINTS, (logits, 0, 1.5, 1, None))
    for t in (0.7, 1.0, 2.0):
        shown = f"sample_next(<random (4, 7) logits>, temperature={t}, generator=<seeded with 3>)"
        got = call(sample_next, shown, logits, t, None, None, torch.Generator().manual_seed(3))
        expect_example(got, _draw(torch.softmax(logits / t, -1), 3), shown,
                       "draw with torch.multinomial(softmax(logits / temperature), num_samples=1, "
                       "generator=generator), then squeeze(-1): the same seed gives the same tokens.",
                       SAMPLE_HINTS, (logits, 3, t, None, None))
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
        freq = _frequencies(got, 4) if isinstance(got, torch.Tensor) and got.dtype == torch.int64 else got
        if "top_k" in kwargs or "top_p" in kwargs:
            hints = [STAT_FILTER_ORDER.text]
        else:
            hints = [STAT_TEMPERATURE.text] if STAT_TEMPERATURE.matches(
                got, None, (many, 1, kwargs["temperature"], None, None)) else []
        if not isinstance(freq, torch.Tensor) or float((freq - probs.double()).abs().max()) > 0.015:
            raise CheckFailed(f"{shown}: token frequencies {_show(freq) if not isinstance(freq, torch.Tensor) else [round(v, 3) for v in freq.tolist()]}"
                              f", expected about {[round(v, 3) for v in probs.tolist()]} ({why})"
                              + "".join(f"\nHint: {h}" for h in hints))
    passed("sample_next", 9)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

def _config(g: torch.Generator, *, block_size: int | None = None) -> dict:
    n_head = randint(g, 1, 4)
    return dict(block_size=block_size or randint(g, 4, 13), vocab_size=randint(g, 5, 40),
                n_layer=randint(g, 1, 4), n_head=n_head, n_embd=n_head * randint(g, 2, 7))


def _attention_case(g, dtype=torch.float32, T=None):
    cfg = _config(g)
    sd = _random_state(g, attention_shapes(cfg["n_embd"]), dtype)
    T = T or randint(g, 2, 10)
    return cfg, sd, torch.randn(randint(g, 1, 4), T, cfg["n_embd"], generator=g, dtype=dtype)


ATTENTION_CALL = ("lambda cfg, sd, x: (lambda m: (m.load_state_dict(sd), m(x))[1])"
                  "(CausalSelfAttention(GPTConfig(**cfg)).to(x.device, x.dtype).requires_grad_(False))")


def _gpt_case(g, dtype=torch.float32, T=None, B=None, full=False):
    cfg = _config(g)
    sd = _random_state(g, gpt_shapes(cfg), dtype)
    del sd["lm_head.weight"]  # a tied model gets it from wte; an untied one keeps its random init
    T = cfg["block_size"] if full else T or randint(g, 1, cfg["block_size"] + 1)
    return cfg, sd, torch.randint(0, cfg["vocab_size"], (B or randint(g, 1, 4), T), generator=g)


# (names the grader could not load except lm_head.weight, unexpected names, parameter count, logits)
GPT_CALL = ("lambda cfg, sd, idx: (lambda m: (lambda r: (sorted(set(r.missing_keys) - {'lm_head.weight'}), "
            "sorted(r.unexpected_keys), sum(p.numel() for p in m.parameters()), m(idx)))"
            "(m.load_state_dict(sd, strict=False)))"
            "(GPT(GPTConfig(**cfg)).to(idx.device, sd['transformer.wte.weight'].dtype).requires_grad_(False))")


def _count_case(g, tied):
    return _config(g) | dict(vocab_size=randint(g, 5, 60_000), block_size=randint(g, 1, 5000)), tied


def _convert_case(g, buffers=False, dtype=torch.float32):
    return (hf_layout(g, _config(g), dtype, buffers),)


def _filter_case(g, top_k=None, top_p=None, dtype=torch.float32):
    B, V = randint(g, 1, 5), randint(g, 3, 30)
    logits = torch.randn(B, V, generator=g, dtype=dtype) * float(torch.empty(1).uniform_(0.5, 3, generator=g))
    return logits, top_k, top_p


def _p(g, lo=0.3, hi=0.95) -> float:
    return round(float(torch.empty(1).uniform_(lo, hi, generator=g)), 3)


FILTER_CALL = "filter_logits"


def _sample_case(g, temperature, top_k=None, top_p=None, dtype=torch.float32):
    B, V = randint(g, 1, 9), randint(g, 2, 30)
    return torch.randn(B, V, generator=g, dtype=dtype) * 2, randint(g, 0, 10_000), temperature, top_k, top_p


def _sample_many(g, temperature, top_k=None, top_p=None):
    V = randint(g, 3, 8)
    logits = (torch.randn(1, V, generator=g) * 1.5).expand(20_000, V).contiguous()
    return logits, randint(g, 0, 10_000), temperature, top_k, top_p


SAMPLE_CALL = ("lambda logits, seed, t, k, p: sample_next(logits, t, k, p, "
               "torch.Generator(device=logits.device).manual_seed(seed))")
SAMPLE_UNSEEDED_CALL = "lambda logits, seed, t, k, p: sample_next(logits, t, k, p)"

CASES: dict[str, list[Case]] = {
    "test_causal_self_attention": [
        Case(ATTENTION_CALL, _attention_case, "random config, weights and (B, T, C) x", ATTENTION_HINTS),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, torch.float64), "float64", ATTENTION_HINTS),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, T=1), "T = 1", ATTENTION_HINTS),
        Case(ATTENTION_CALL, lambda g: _attention_case(g, T=randint(g, 12, 20)), "longer T",
             ATTENTION_HINTS),
    ],
    "test_GPT": [
        Case(GPT_CALL, _gpt_case, "random config and weights (lm_head.weight not given: tied)",
             GPT_HINTS),
        Case(GPT_CALL, lambda g: _gpt_case(g, torch.float64), "float64 weights", GPT_HINTS),
        Case(GPT_CALL, lambda g: _gpt_case(g, T=1, B=1), "one sequence of one token", GPT_HINTS),
        Case(GPT_CALL, lambda g: _gpt_case(g, full=True), "T = block_size (the whole context)",
             GPT_HINTS),
    ],
    "test_count_parameters": [
        Case("lambda cfg, tied: count_parameters(GPTConfig(**cfg), tied)", lambda g: _count_case(g, True),
             "random config, tied", COUNT_HINTS),
        Case("lambda cfg, tied: count_parameters(GPTConfig(**cfg), tied)", lambda g: _count_case(g, False),
             "random config, untied", COUNT_HINTS),
        Case("lambda cfg, tied: count_parameters(GPTConfig(**cfg))", lambda g: _count_case(g, True),
             "random config, tied left out (default True)", COUNT_HINTS),
    ],
    "test_convert_gpt2_state_dict": [
        Case("convert_gpt2_state_dict", _convert_case, "random config", CONVERT_HINTS),
        Case("convert_gpt2_state_dict", lambda g: _convert_case(g, buffers=True),
             "with .attn.bias / .attn.masked_bias buffers", CONVERT_HINTS),
        Case("convert_gpt2_state_dict", lambda g: _convert_case(g, dtype=torch.float64), "float64",
             CONVERT_HINTS),
    ],
    "test_filter_logits": [
        Case(FILTER_CALL, lambda g: _filter_case(g, top_k=randint(g, 1, 6)), "top-k", FILTER_HINTS),
        Case(FILTER_CALL, lambda g: _filter_case(g, top_p=_p(g)), "top-p", FILTER_HINTS),
        Case(FILTER_CALL, lambda g: _filter_case(g, top_p=_p(g, 0.05, 0.5), dtype=torch.float64),
             "top-p, small p, float64", FILTER_HINTS),
        Case(FILTER_CALL, lambda g: _filter_case(g, top_k=randint(g, 2, 8), top_p=_p(g)),
             "top-k then top-p", FILTER_HINTS),
        Case(FILTER_CALL, lambda g: _filter_case(g, top_k=100, top_p=1.0), "top_k >= V, top_p = 1",
             FILTER_HINTS),
        Case(FILTER_CALL, _filter_case, "no filter", FILTER_HINTS),
    ],
    "test_sample_next": [
        Case(SAMPLE_CALL, lambda g: _sample_case(g, 0), "greedy (temperature 0)", SAMPLE_HINTS),
        Case(SAMPLE_CALL, lambda g: _sample_case(g, _p(g, 0.5, 2.0)), "temperature, seeded",
             SAMPLE_HINTS),
        Case(SAMPLE_CALL, lambda g: _sample_case(g, 1.0, top_k=randint(g, 1, 5)), "top-k, seeded",
             SAMPLE_HINTS),
        Case(SAMPLE_CALL, lambda g: _sample_case(g, 0.8, top_p=_p(g), dtype=torch.float64),
             "top-p, float64, seeded", SAMPLE_HINTS),
        Case(SAMPLE_UNSEEDED_CALL, lambda g: _sample_many(g, _pick_temperature(g)),
             "frequencies over 20000 draws, temperature", (STAT_TEMPERATURE,), check=_statistical_check),
        Case(SAMPLE_UNSEEDED_CALL, lambda g: _sample_many(g, 1.0, top_k=2, top_p=0.9),
             "frequencies over 20000 draws, top-k and top-p", (STAT_FILTER_ORDER,),
             check=_statistical_check),
    ],
}


def _pick_temperature(g: torch.Generator) -> float:
    return (0.5, 0.7, 1.5, 2.0)[randint(g, 0, 4)]
