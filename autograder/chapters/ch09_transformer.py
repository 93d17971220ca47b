"""Chapter 9 — the Transformer: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook: small examples worked out by hand, then
agreement with PyTorch's own ``F.layer_norm``, ``nn.TransformerEncoderLayer``,
``nn.TransformerDecoderLayer`` and ``nn.Transformer`` given the same weights. ``CASES`` is what
the grader runs. Conventions (the exercise text states them too):

* parameter names are those of PyTorch's layers (``self_attn``, ``multihead_attn``, ``linear1``,
  ``linear2``, ``norm1`` …), so a state_dict of ``nn.TransformerEncoderLayer`` loads as it is;
* padding masks follow ``nn.MultiheadAttention``: a bool ``(B, S)`` tensor, **True = padding**
  (ignored as a key);
* no dropout anywhere, and modules are called in training mode (PyTorch's fused inference path
  zeroes padded positions, which would make the comparison depend on it).

The typical mistakes and their hints are the chapter's catalogue,
``solutions/09-transformer/mistakes.yaml`` (unbiased variance, eps outside the square root,
norm_first ignored, a mask left out …): the grader and these checks name a mistake when a result
is that mistake's result; its ``uses`` lets an encoder or decoder layer's mistake be named in the
full model's cell. The one hint left here is for positions counted from 1, which no patch of the
catalogue makes: at S = max_len it indexes past the position table, and on a GPU such an index
breaks the CUDA context of the process that computes every mistake's results.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import call, close, cpu64, expect_example, param_shapes, randint, randn, seeded
from ..spec import Case, Hint, expect, passed


# ----------------------------------------------------------------------------------------
# Exercise 1: LayerNorm
# ----------------------------------------------------------------------------------------

def check_layer_norm(layer_norm: Callable) -> None:
    """Hand examples (eps = 0), eps inside the square root, a constant vector, then F.layer_norm."""
    one, zero = torch.ones(4), torch.zeros(4)
    examples = [
        ((torch.tensor([1.0, 2.0, 3.0, 4.0]), one, zero, 0.0),
         (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / 1.25 ** 0.5,
         "layer_norm([1, 2, 3, 4], eps=0)",
         "mean 2.5, biased variance ((1.5² + 0.5²) · 2) / 4 = 1.25, so the result is "
         "(x - 2.5) / √1.25 = [-1.342, -0.447, 0.447, 1.342]."),
        ((torch.tensor([0.0, 2.0]), torch.tensor([2.0, 3.0]), torch.tensor([1.0, 1.0]), 0.0),
         torch.tensor([-1.0, 4.0]), "layer_norm([0, 2], weight=[2, 3], bias=[1, 1], eps=0)",
         "mean 1, variance 1, normalised [-1, 1]; times weight [2, 3] plus bias [1, 1] is [-1, 4]."),
        ((torch.tensor([-1e-3, 1e-3]), torch.ones(2), torch.zeros(2), 1e-5),
         torch.tensor([-1e-3, 1e-3]) / (1e-6 + 1e-5) ** 0.5,
         "layer_norm([-0.001, 0.001], eps=1e-5)",
         "variance 1e-6, so the result is ±0.001 / √(1e-6 + 1e-5) = ±0.3015: eps sits inside the "
         "square root."),
        ((torch.full((2, 3), 7.0), torch.ones(3), torch.tensor([0.5, 0.0, -0.5]), 1e-5),
         torch.tensor([0.5, 0.0, -0.5]).expand(2, 3), "layer_norm(<every entry 7>, bias=[0.5, 0, -0.5])",
         "a constant vector has variance 0: eps keeps the division finite, the normalised values "
         "are 0 and only the bias is left."),
    ]
    for args, expected, shown, why in examples:
        expect_example(call(layer_norm, shown, *args), expected, shown, why)
    g = torch.Generator().manual_seed(0)
    count = len(examples)
    for shape, dtype in (((2, 5, 8), torch.float64), ((3, 6), torch.float32), ((4, 4), torch.float64)):
        x = torch.randn(*shape, generator=g, dtype=dtype) * 3 + 1
        w, b = (torch.randn(shape[-1], generator=g, dtype=dtype) for _ in range(2))
        shown = f"layer_norm(<random {str(dtype)[6:]} {shape}>, weight, bias)"
        expect_example(call(layer_norm, shown, x, w, b), F.layer_norm(x, shape[-1:], w, b), shown,
                       "the result must equal F.layer_norm(x, (d,), weight, bias, eps=1e-5).")
        count += 1
    passed("layer_norm", count)


# ----------------------------------------------------------------------------------------
# Exercise 2: the position-wise feed-forward network
# ----------------------------------------------------------------------------------------

def _ffn(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """linear2(relu(linear1(x))) from a state_dict, in float64 on the CPU."""
    sd, x = {k: cpu64(v) for k, v in sd.items()}, cpu64(x)
    h = F.relu(F.linear(x, sd["linear1.weight"], sd["linear1.bias"]))
    return F.linear(h, sd["linear2.weight"], sd["linear2.bias"])


def check_feed_forward(FeedForward: Callable) -> None:
    """Parameter names and shapes (4× width by default), position-wise, then F.linear/F.relu."""
    with seeded(0):  # the modules' initial weights: the same in every notebook, yours left as they were
        module = call(FeedForward, "FeedForward(6)", 6)
        wide = call(FeedForward, "FeedForward(6, 10)", 6, 10)
    expect(param_shapes(module), {"linear1.weight": (24, 6), "linear1.bias": (24,),
                                  "linear2.weight": (6, 24), "linear2.bias": (6,)},
           "FeedForward(6)'s parameters (name -> shape)",
           ["linear1 = nn.Linear(d_model, d_ff) and linear2 = nn.Linear(d_ff, d_model), with "
            "biases; d_ff defaults to 4 * d_model = 24."])
    expect(param_shapes(wide).get("linear1.weight"), (10, 6),
           "FeedForward(6, 10).linear1.weight.shape", ["d_ff = 10 when it is given."])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, generator=g)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        shown = "FeedForward(6)(<random (2, 5, 6) x>)"
        got = call(module, shown, x)
        expect_example(got, _ffn(dict(module.state_dict()), x).float(), shown,
                       "FFN(x) = linear2(relu(linear1(x))), shape (B, T, d_model) = (2, 5, 6).")
        perm = torch.tensor([4, 2, 0, 1, 3])
        shown = "FeedForward(6)(x[:, perm]) compared with FeedForward(6)(x)[:, perm]"
        expect_example(call(module, shown, x[:, perm]), got[:, perm], shown,
                       "the network acts on every position on its own: shuffling the positions of the "
                       "input shuffles the output the same way.")
    passed("FeedForward", 4)


# ----------------------------------------------------------------------------------------
# Exercises 3 and 4: encoder and decoder layers, compared with PyTorch's
# ----------------------------------------------------------------------------------------

def _causal(T: int, device=None) -> torch.Tensor:
    """nn.MultiheadAttention's causal mask: True = blocked (key j > query i)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)


def _expected_names(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _check_names(module: nn.Module, reference: nn.Module, shown: str) -> None:
    expect(_expected_names(module), _expected_names(reference), f"{shown}'s state_dict (name -> shape)",
           [f"use the names of {type(reference).__name__}: nn.MultiheadAttention(d_model, n_heads, "
            "batch_first=True) for attention, nn.Linear for linear1/linear2, nn.LayerNorm for the "
            "norms; no other parameters."])


def _pad_mask(lengths: list[int], T: int) -> torch.Tensor:
    """(B, T) bool, True at padded positions (nn.MultiheadAttention's convention)."""
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]


def check_encoder_layer(EncoderLayer: Callable) -> None:
    """State_dict names, then equality with nn.TransformerEncoderLayer for both placements."""
    g = torch.Generator().manual_seed(0)
    count = 0
    for norm_first in (False, True):
        shown = f"EncoderLayer(8, 2, 12, norm_first={norm_first})"
        with seeded(0):  # initial weights (replaced below): yours left as they were
            layer = call(EncoderLayer, shown, 8, 2, 12, norm_first)
            reference = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True,
                                                   norm_first=norm_first)
        _check_names(layer, reference, shown)
        reference.load_state_dict(_random_state(reference, g))
        layer.load_state_dict(reference.state_dict())
        x = torch.randn(2, 5, 8, generator=g)
        for label, mask in (("no mask", None), ("padding mask for lengths [5, 3]", _pad_mask([5, 3], 5))):
            described = f"{shown}(<random (2, 5, 8) x>, {label})"
            with torch.no_grad():
                got = call(lambda: layer(x, mask) if mask is not None else layer(x), described)
                expected = reference(x, src_key_padding_mask=mask)
            expect_example(got, expected, described,
                           "the output must equal nn.TransformerEncoderLayer(..., dropout=0.0, "
                           f"batch_first=True, norm_first={norm_first}) with the same weights.")
            count += 1
    passed("EncoderLayer", count + 2)


def check_decoder_layer(DecoderLayer: Callable) -> None:
    """State_dict names, causality, then equality with nn.TransformerDecoderLayer."""
    g = torch.Generator().manual_seed(0)
    count = 0
    for norm_first in (False, True):
        shown = f"DecoderLayer(8, 2, 12, norm_first={norm_first})"
        with seeded(0):  # initial weights (replaced below): yours left as they were
            layer = call(DecoderLayer, shown, 8, 2, 12, norm_first)
            reference = nn.TransformerDecoderLayer(8, 2, 12, dropout=0.0, batch_first=True,
                                                   norm_first=norm_first)
        _check_names(layer, reference, shown)
        reference.load_state_dict(_random_state(reference, g))
        layer.load_state_dict(reference.state_dict())
        y, memory = torch.randn(2, 4, 8, generator=g), torch.randn(2, 6, 8, generator=g)
        for label, tgt_pad, mem_pad in (("no padding", None, None),
                                        ("target lengths [4, 2], source lengths [6, 3]",
                                         _pad_mask([4, 2], 4), _pad_mask([6, 3], 6))):
            described = f"{shown}(<random (2, 4, 8) y>, <random (2, 6, 8) memory>, {label})"
            with torch.no_grad():
                got = call(lambda: layer(y, memory, tgt_pad, mem_pad), described)
                expected = reference(y, memory, tgt_mask=_causal(4), tgt_key_padding_mask=tgt_pad,
                                     memory_key_padding_mask=mem_pad)
            expect_example(got, expected, described,
                           "the output must equal nn.TransformerDecoderLayer(..., dropout=0.0, batch_first="
                           f"True, norm_first={norm_first}) called with tgt_mask = the causal mask and the "
                           "same padding masks.")
            count += 1
        with torch.no_grad():
            changed = y.clone()
            changed[:, 2:] += 1.0  # change the future of positions 0 and 1
            described = f"{shown}: positions 0-1 after changing positions 2-3 of y"
            expect_example(call(lambda: layer(changed, memory)[:, :2], described), layer(y, memory)[:, :2], described,
                           "position t may only depend on positions 0..t of y: changing later positions "
                           "must not change it.")
        count += 1
    passed("DecoderLayer", count + 2)


# ----------------------------------------------------------------------------------------
# Exercise 5: the full model, compared with nn.Transformer plus embeddings and a head
# ----------------------------------------------------------------------------------------

_RENAME = (("encoder.layers", "encoder_layers"), ("decoder.layers", "decoder_layers"),
           ("encoder.norm", "enc_norm"), ("decoder.norm", "dec_norm"))


def _ours(name: str) -> str:
    for old, new in _RENAME:
        name = name.replace(old, new)
    return name


def _theirs(name: str) -> str:
    for old, new in _RENAME:
        name = name.replace(new, old)
    return name


def _torch_model(cfg, sd) -> tuple[nn.Transformer, dict]:
    """nn.Transformer (float64, CPU) holding the core of state_dict ``sd``, and the rest of ``sd``."""
    src_vocab, tgt_vocab, d_model, n_heads, n_layers, d_ff, max_len, norm_first = cfg
    with warnings.catch_warnings():  # "enable_nested_tensor is True, but ... norm_first was True"
        warnings.simplefilter("ignore")
        core = nn.Transformer(d_model, n_heads, n_layers, n_layers, d_ff, dropout=0.0,
                              batch_first=True, norm_first=norm_first).double()
    sd = {k: cpu64(v) for k, v in sd.items()}
    core.load_state_dict({_theirs(k): v for k, v in sd.items()
                          if k.startswith(("encoder_layers", "decoder_layers", "enc_norm", "dec_norm"))})
    return core, sd


def _model_variant(args, src_start=0, tgt_start=0):
    """Embeddings + nn.Transformer + the head with ``args``' weights (float64, CPU); with the
    source's and the target's positions starting at ``src_start`` and ``tgt_start``."""
    cfg, sd, src, tgt, src_pad, tgt_pad = args
    core, sd = _torch_model(cfg, sd)
    src, tgt, pos = src.cpu(), tgt.cpu(), sd["pos_embed.weight"]
    x = F.embedding(src, sd["src_embed.weight"]) + pos[src_start: src_start + src.shape[1]]
    y = F.embedding(tgt, sd["tgt_embed.weight"]) + pos[tgt_start: tgt_start + tgt.shape[1]]
    src_pad, tgt_pad = _mask64(src_pad), _mask64(tgt_pad)
    with torch.no_grad():
        h = core(x, y, tgt_mask=_causal(tgt.shape[1]), src_key_padding_mask=src_pad,
                 tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
    return F.linear(h, sd["lm_head.weight"], sd["lm_head.bias"])


def _mask64(mask):
    return None if mask is None else mask.detach().cpu()


def _positions_from_1(got, exp, args) -> bool:
    S, T, max_len = args[2].shape[1], args[3].shape[1], args[0][6]
    return any(close(got, _model_variant(args, src_start=s, tgt_start=1))
               for s in (0, 1) if max(S + s, T + 1) <= max_len)


MODEL_POSITIONS_FROM_1 = Hint("the positions are shifted by one: the first token is at position 0, "
                              "so add self.pos_embed(torch.arange(T)), not torch.arange(1, T + 1).",
                              _positions_from_1)
MODEL_HINTS = (MODEL_POSITIONS_FROM_1,)


def _random_state(module: nn.Module, g: torch.Generator, dtype=torch.float32) -> dict:
    """``module``'s state_dict with seeded random values (0.3 · N(0, 1); 1 + that for norm scales)."""
    sd = {}
    for k, v in module.state_dict().items():
        r = torch.randn(v.shape, generator=g, dtype=dtype) * 0.3
        sd[k] = r + 1.0 if ("norm" in k and k.endswith("weight")) else r
    return sd


def check_transformer(Transformer: Callable) -> None:
    """Equality with embeddings + nn.Transformer + a linear head, both placements, with padding."""
    g = torch.Generator().manual_seed(0)
    count = 0
    for norm_first in (False, True):
        cfg = (11, 9, 8, 2, 2, 12, 16, norm_first)
        shown = f"Transformer(11, 9, d_model=8, n_heads=2, n_layers=2, d_ff=12, max_len=16, norm_first={norm_first})"
        model = call(Transformer, shown, *cfg)
        sd = _random_state(model, g, torch.float64)
        model = model.double()
        model.load_state_dict(sd)
        src = torch.randint(3, 11, (3, 7), generator=g)
        tgt = torch.randint(3, 9, (3, 5), generator=g)
        src_pad, tgt_pad = _pad_mask([7, 4, 1], 7), _pad_mask([5, 5, 3], 5)
        src[src_pad], tgt[tgt_pad] = 0, 0
        for label, masks in (("no padding", (None, None)), ("padding masks", (src_pad, tgt_pad))):
            args = (cfg, sd, src, tgt, *masks)
            described = f"{shown}(<(3, 7) src>, <(3, 5) tgt>, {label})"
            with torch.no_grad():
                got = call(lambda: model(src, tgt, *masks), described)
            expect_example(got, _model_variant(args), described,
                           "logits (B, T, tgt_vocab) = lm_head(nn.Transformer(src_embed(src) + pos, "
                           "tgt_embed(tgt) + pos, causal tgt_mask, padding masks)) with the same weights.",
                           MODEL_HINTS, args)
            count += 1
    passed("Transformer", count)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

def _ln_case(g, shape, dtype=torch.float32, scale=3.0, eps=None):
    x = randn(g, *shape, dtype=dtype, scale=scale) + randn(g, 1, dtype=dtype, scale=2.0)
    w, b = randn(g, shape[-1], dtype=dtype), randn(g, shape[-1], dtype=dtype)
    return (x, w, b) if eps is None else (x, w, b, eps)


def _ln_small_d(g):
    return _ln_case(g, (randint(g, 2, 5), randint(g, 2, 4)))  # d = 2 or 3: d vs d - 1 matters most


def _ln_tiny_variance(g):
    x, w, b = _ln_case(g, (randint(g, 2, 4), randint(g, 3, 7)), torch.float64, scale=1e-3)
    return x, w, b, 1e-4


def _ln_constant_row(g):
    x, w, b = _ln_case(g, (randint(g, 2, 5), randint(g, 2, 9)))
    x[0] = 4.0  # variance 0: only eps keeps it finite
    return x, w, b


def _lengths(g, B, T):
    """B lengths in 1..T: the first is T (no padding), the last is shorter when B, T > 1, so a
    padded case always has padding."""
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    if B > 1 and T > 1:
        lengths[-1] = randint(g, 1, T)
    return lengths.tolist()


def _ffn_case(g, d_model, d_ff, shape, dtype=torch.float32):
    sd = {"linear1.weight": randn(g, d_ff, d_model, dtype=dtype, scale=d_model ** -0.5),
          "linear1.bias": randn(g, d_ff, dtype=dtype, scale=0.3),
          "linear2.weight": randn(g, d_model, d_ff, dtype=dtype, scale=d_ff ** -0.5),
          "linear2.bias": randn(g, d_model, dtype=dtype, scale=0.3)}
    return d_model, d_ff, sd, randn(g, *shape, d_model, dtype=dtype)


FFN_CALL = ("lambda d, f, sd, x: (lambda m: (m.load_state_dict(sd), m(x))[1])"
            "(FeedForward(d, f).to(x.device, x.dtype).requires_grad_(False))")
FFN_DEFAULT_CALL = ("lambda d, f, sd, x: (lambda m: (m.load_state_dict(sd), m(x))[1])"
                    "(FeedForward(d).to(x.device, x.dtype).requires_grad_(False))")


def _d_model(g, n_heads):
    """A multiple of n_heads, at least 4: with d_model = 1 or 2 a LayerNorm's output hardly
    depends on its input (constant, or ±1 per feature), so post-norm layers would hide mistakes."""
    least = -(-4 // n_heads)  # ceil(4 / n_heads)
    return n_heads * randint(g, least, least + 4)


def _layer_dims(g):
    n_heads = randint(g, 1, 4)
    return _d_model(g, n_heads), n_heads, randint(g, 2, 20)


def _encoder_case(g, padded, norm_first, dtype=torch.float32):
    dims = _layer_dims(g)
    layer = nn.TransformerEncoderLayer(*dims, dropout=0.0, batch_first=True, norm_first=norm_first)
    least = 2  # room for padding; B = 1 or T = 1 would hide mistakes (a batch-first mix-up)
    B, T = randint(g, least, 4), randint(g, least, 9)
    mask = _pad_mask(_lengths(g, B, T), T) if padded else None
    return dims, _random_state(layer, g, dtype), randn(g, B, T, dims[0], dtype=dtype), mask, norm_first


ENCODER_CALL = ("lambda dims, sd, x, mask, nf: (lambda m: (m.load_state_dict(sd), m(x, mask))[1])"
                "(EncoderLayer(*dims, nf).to(x.device, x.dtype))")
ENCODER_DEFAULT_CALL = ("lambda dims, sd, x, mask, nf: (lambda m: (m.load_state_dict(sd), m(x))[1])"
                        "(EncoderLayer(*dims).to(x.device, x.dtype))")


def _decoder_case(g, padded, norm_first, dtype=torch.float32, T=None):
    dims = _layer_dims(g)
    layer = nn.TransformerDecoderLayer(*dims, dropout=0.0, batch_first=True, norm_first=norm_first)
    least = 2  # room for padding; B = 1 or T = 1 would hide mistakes (a batch-first mix-up)
    B, T, S = randint(g, least, 4), T or randint(g, 2, 8), randint(g, least, 9)
    tgt_mask = _pad_mask(_lengths(g, B, T), T) if padded else None
    mem_mask = _pad_mask(_lengths(g, B, S), S) if padded else None
    return (dims, _random_state(layer, g, dtype), randn(g, B, T, dims[0], dtype=dtype),
            randn(g, B, S, dims[0], dtype=dtype), tgt_mask, mem_mask, norm_first)


DECODER_CALL = ("lambda dims, sd, y, mem, tm, mm, nf: (lambda m: (m.load_state_dict(sd), "
                "m(y, mem, tm, mm))[1])(DecoderLayer(*dims, nf).to(y.device, y.dtype))")
DECODER_DEFAULT_CALL = ("lambda dims, sd, y, mem, tm, mm, nf: (lambda m: (m.load_state_dict(sd), "
                        "m(y, mem))[1])(DecoderLayer(*dims).to(y.device, y.dtype))")


def _model_case(g, padded, norm_first, dtype=torch.float32, n_layers=None):
    n_heads = randint(g, 1, 3)
    V_s, V_t = randint(g, 4, 20), randint(g, 4, 20)
    d_model, d_ff, max_len = _d_model(g, n_heads), randint(g, 4, 24), 12
    cfg = (V_s, V_t, d_model, n_heads, n_layers or randint(g, 1, 3), d_ff, max_len, norm_first)
    with warnings.catch_warnings():  # "enable_nested_tensor is True, but ... num_heads is odd"
        warnings.simplefilter("ignore")
        core = nn.Transformer(d_model, n_heads, cfg[4], cfg[4], d_ff, dropout=0.0, batch_first=True)
    shapes = {"src_embed.weight": (V_s, d_model), "tgt_embed.weight": (V_t, d_model),
              "pos_embed.weight": (max_len, d_model), "lm_head.weight": (V_t, d_model),
              "lm_head.bias": (V_t,),
              **{_ours(k): tuple(v.shape) for k, v in core.state_dict().items()}}
    sd = {k: randn(g, *s, dtype=dtype, scale=0.3) + (1.0 if "norm" in k and k.endswith("weight") else 0.0)
          for k, s in shapes.items()}
    least = 2  # room for padding; B = 1 or T = 1 would hide mistakes (a batch-first mix-up)
    B, S, T = randint(g, least, 4), randint(g, least, max_len + 1), randint(g, least, max_len + 1)
    src, tgt = torch.randint(3, V_s, (B, S), generator=g), torch.randint(3, V_t, (B, T), generator=g)
    src_pad = _pad_mask(_lengths(g, B, S), S) if padded else None
    tgt_pad = _pad_mask(_lengths(g, B, T), T) if padded else None
    if padded:
        src[src_pad], tgt[tgt_pad] = 0, 0
    return cfg, sd, src, tgt, src_pad, tgt_pad


MODEL_CALL = ("lambda cfg, sd, src, tgt, sp, tp: (lambda m: (m.load_state_dict(sd), "
              "m(src, tgt, sp, tp))[1])(Transformer(*cfg).to(sd['lm_head.weight'].device, "
              "sd['lm_head.weight'].dtype))")
MODEL_NO_MASK_CALL = ("lambda cfg, sd, src, tgt, sp, tp: (lambda m: (m.load_state_dict(sd), "
                      "m(src, tgt))[1])(Transformer(*cfg).to(sd['lm_head.weight'].device, "
                      "sd['lm_head.weight'].dtype))")

CASES: dict[str, list[Case]] = {
    "test_layer_norm": [
        Case("layer_norm", lambda g: _ln_case(g, (randint(g, 2, 5), randint(g, 4, 17))),
             "random (N, d) float32, default eps"),
        Case("layer_norm", lambda g: _ln_case(g, (randint(g, 2, 4), randint(g, 2, 6), randint(g, 3, 9)),
                                              torch.float64), "float64 (B, T, d)"),
        Case("layer_norm", _ln_small_d, "d = 2 or 3 (the biased variance matters most)"),
        Case("layer_norm", _ln_tiny_variance, "float64, variance ~1e-6 with eps = 1e-4"),
        Case("layer_norm", _ln_constant_row, "a row whose entries are all equal"),
        Case("layer_norm", lambda g: _ln_case(g, (randint(g, 2, 6),), eps=1e-3), "a single vector, eps=1e-3"),
    ],
    "test_feed_forward": [
        Case(FFN_CALL, lambda g: _ffn_case(g, randint(g, 2, 9), randint(g, 2, 20), (randint(g, 1, 4), randint(g, 1, 8))),
             "(B, T, d_model), d_ff given"),
        Case(FFN_DEFAULT_CALL, lambda g: (lambda d: _ffn_case(g, d, 4 * d, (randint(g, 1, 6),)))(randint(g, 2, 9)),
             "d_ff left out (= 4 d_model), (N, d_model) input"),
        Case(FFN_CALL, lambda g: _ffn_case(g, randint(g, 2, 6), randint(g, 2, 12), (2, 3), torch.float64),
             "float64"),
    ],
    "test_encoder_layer": [
        Case(ENCODER_CALL, lambda g: _encoder_case(g, False, False), "post-norm, no mask"),
        Case(ENCODER_CALL, lambda g: _encoder_case(g, True, False), "post-norm, padding mask"),
        Case(ENCODER_CALL, lambda g: _encoder_case(g, True, True, torch.float64),
             "pre-norm, padding mask, float64"),
        Case(ENCODER_CALL, lambda g: _encoder_case(g, False, True), "pre-norm, no mask"),
        Case(ENCODER_DEFAULT_CALL, lambda g: _encoder_case(g, False, False),
             "norm_first and mask left out"),
    ],
    "test_decoder_layer": [
        Case(DECODER_CALL, lambda g: _decoder_case(g, False, False), "post-norm, no padding"),
        Case(DECODER_CALL, lambda g: _decoder_case(g, True, False), "post-norm, padding masks"),
        Case(DECODER_CALL, lambda g: _decoder_case(g, True, True, torch.float64),
             "pre-norm, padding masks, float64"),
        Case(DECODER_DEFAULT_CALL, lambda g: _decoder_case(g, False, False),
             "norm_first and masks left out"),
        Case(DECODER_CALL, lambda g: _decoder_case(g, False, True, T=1), "pre-norm, T = 1"),
    ],
    "test_transformer": [
        Case(MODEL_CALL, lambda g: _model_case(g, True, False), "post-norm, padding masks",
             MODEL_HINTS),
        Case(MODEL_CALL, lambda g: _model_case(g, True, True, torch.float64),
             "pre-norm, padding masks, float64", MODEL_HINTS),
        Case(MODEL_NO_MASK_CALL, lambda g: _model_case(g, False, True), "pre-norm, masks left out",
             MODEL_HINTS),
        Case(MODEL_CALL, lambda g: _model_case(g, True, False, n_layers=1), "one layer each",
             MODEL_HINTS),
    ],
}
