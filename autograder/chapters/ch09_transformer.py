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

Hints recognise symptoms (unbiased variance, eps outside the square root, the other norm
placement, a mask left out) by comparing with PyTorch run with the mistake built in.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import call, close, cpu64, expect_example, param_shapes, randint, randn
from ..spec import Case, CheckFailed, Hint, expect, passed


# ----------------------------------------------------------------------------------------
# Exercise 1: LayerNorm
# ----------------------------------------------------------------------------------------

def _ln_variant(x, weight, bias, eps=1e-5, unbiased=False, eps_outside=False, dim=-1, affine=True):
    """LayerNorm along ``dim`` with one mistake built in (float64, CPU)."""
    x, weight, bias = cpu64(x), cpu64(weight), cpu64(bias)
    mean = x.mean(dim, keepdim=True)
    var = x.var(dim, keepdim=True, unbiased=unbiased)
    z = (x - mean) / (var.sqrt() + eps if eps_outside else (var + eps).sqrt())
    return z * weight + bias if affine else z


def _ln_args(args: tuple) -> tuple:
    x, weight, bias, *rest = args
    return x, weight, bias, (rest[0] if rest else 1e-5)


def _ln_hint(**mistake) -> Callable:
    def applies(got, exp, args):
        x, weight, bias, eps = _ln_args(args)
        return close(got, _ln_variant(x, weight, bias, eps, **mistake))
    return applies


def _ln_other_axis(got, exp, args):
    x, weight, bias, eps = _ln_args(args)
    return x.dim() > 1 and x.shape[0] == x.shape[-1] and close(
        got, _ln_variant(x.transpose(0, -1), weight, bias, eps).transpose(0, -1))


def _ln_all_axes(got, exp, args):
    x, weight, bias, eps = _ln_args(args)
    x = cpu64(x)
    mean, var = x.mean(), x.var(unbiased=False)
    return x.dim() > 1 and close(got, (x - mean) / (var + eps).sqrt() * cpu64(weight) + cpu64(bias))


LN_UNBIASED = Hint(
    "the values match the unbiased variance (dividing by d - 1). LayerNorm uses the biased "
    "variance, the mean of (x - mean)² over the d features: x.var(dim=-1, unbiased=False), "
    "or ((x - mean) ** 2).mean(dim=-1, keepdim=True).", _ln_hint(unbiased=True))
LN_EPS_OUTSIDE = Hint(
    "eps goes inside the square root: (x - mean) / sqrt(var + eps), not / (sqrt(var) + eps).",
    _ln_hint(eps_outside=True))
LN_NO_AFFINE = Hint(
    "the result is the normalised x without the learned scale and shift: multiply by weight and "
    "add bias at the end.", _ln_hint(affine=False))
LN_AXIS = Hint(
    "the statistics are taken over another axis: each vector x[..., :] is normalised over its "
    "own d features, the last axis (dim=-1, keepdim=True).", _ln_other_axis)
LN_ALL = Hint(
    "one mean and variance for the whole tensor: LayerNorm computes them per position, over the "
    "last axis only (dim=-1, keepdim=True).", _ln_all_axes)
_KEEPDIM_TEXT = ("keep the reduced axis: x.mean(dim=-1, keepdim=True) has shape (..., 1), which "
                 "broadcasts against x's (..., d); without keepdim the (...,) statistics line up "
                 "with the feature axis instead.")


def _ln_no_keepdim(got, exp, args):
    """mean and variance of shape (...,) subtracted along the last axis (only runs on (d, d) x)."""
    x, weight, bias, eps = _ln_args(args)
    if x.dim() != 2 or x.shape[0] != x.shape[1]:
        return False
    x = cpu64(x)
    mean, var = x.mean(-1), x.var(-1, unbiased=False)
    return close(got, (x - mean) / (var + eps).sqrt() * cpu64(weight) + cpu64(bias))


LN_NO_KEEPDIM = Hint(_KEEPDIM_TEXT, _ln_no_keepdim)
LN_HINTS = (LN_UNBIASED, LN_EPS_OUTSIDE, LN_NO_AFFINE, LN_AXIS, LN_ALL, LN_NO_KEEPDIM)


def _ln_call(layer_norm: Callable, shown: str, *args):
    """:func:`call`, plus the keepdim hint when the shapes do not broadcast (the usual cause here)."""
    try:
        return call(layer_norm, shown, *args)
    except CheckFailed as failure:
        if "must match the size" in str(failure):
            raise CheckFailed(f"{failure}\nHint: {_KEEPDIM_TEXT}") from failure.__cause__
        raise


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
        expect_example(_ln_call(layer_norm, shown, *args), expected, shown, why, LN_HINTS, args)
    g = torch.Generator().manual_seed(0)
    count = len(examples)
    for shape, dtype in (((2, 5, 8), torch.float64), ((3, 6), torch.float32), ((4, 4), torch.float64)):
        x = torch.randn(*shape, generator=g, dtype=dtype) * 3 + 1
        w, b = (torch.randn(shape[-1], generator=g, dtype=dtype) for _ in range(2))
        shown = f"layer_norm(<random {str(dtype)[6:]} {shape}>, weight, bias)"
        expect_example(_ln_call(layer_norm, shown, x, w, b), F.layer_norm(x, shape[-1:], w, b), shown,
                       "the result must equal F.layer_norm(x, (d,), weight, bias, eps=1e-5).",
                       LN_HINTS, (x, w, b))
        count += 1
    passed("layer_norm", count)


# ----------------------------------------------------------------------------------------
# Exercise 2: the position-wise feed-forward network
# ----------------------------------------------------------------------------------------

def _ffn_args(args: tuple) -> tuple:
    d_model, d_ff, sd, x = args
    return {k: cpu64(v) for k, v in sd.items()}, cpu64(x)


def _ffn_variant(args, act_out=False, act=F.relu):
    sd, x = _ffn_args(args)
    h = act(F.linear(x, sd["linear1.weight"], sd["linear1.bias"]))
    y = F.linear(h, sd["linear2.weight"], sd["linear2.bias"])
    return act(y) if act_out else y


FFN_RELU_OUT = Hint("the output went through a ReLU too (no negative values): the second linear "
                    "map has no activation, FFN(x) = linear2(relu(linear1(x))).",
                    lambda got, exp, args: close(got, _ffn_variant(args, act_out=True)))
FFN_NO_RELU = Hint("there is no nonlinearity: apply F.relu between linear1 and linear2 (two "
                   "linear maps in a row are just one linear map).",
                   lambda got, exp, args: close(got, _ffn_variant(args, act=lambda h: h)))
FFN_GELU = Hint("this is GELU; the original Transformer (and nn.TransformerEncoderLayer's "
                "default) uses ReLU.", lambda got, exp, args: close(got, _ffn_variant(args, act=F.gelu)))
FFN_HINTS = (FFN_RELU_OUT, FFN_NO_RELU, FFN_GELU)


def check_feed_forward(FeedForward: Callable) -> None:
    """Parameter names and shapes (4× width by default), position-wise, then F.linear/F.relu."""
    module = call(FeedForward, "FeedForward(6)", 6)
    expect(param_shapes(module), {"linear1.weight": (24, 6), "linear1.bias": (24,),
                                  "linear2.weight": (6, 24), "linear2.bias": (6,)},
           "FeedForward(6)'s parameters (name -> shape)",
           ["linear1 = nn.Linear(d_model, d_ff) and linear2 = nn.Linear(d_ff, d_model), with "
            "biases; d_ff defaults to 4 * d_model = 24."])
    expect(param_shapes(call(FeedForward, "FeedForward(6, 10)", 6, 10))["linear1.weight"], (10, 6),
           "FeedForward(6, 10).linear1.weight.shape", ["d_ff = 10 when it is given."])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, generator=g)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        args = (6, 24, dict(module.state_dict()), x)
        shown = "FeedForward(6)(<random (2, 5, 6) x>)"
        got = call(module, shown, x)
        expect_example(got, _ffn_variant(args).float(), shown,
                       "FFN(x) = linear2(relu(linear1(x))), shape (B, T, d_model) = (2, 5, 6).", FFN_HINTS, args)
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


def _torch_encoder_layer(dims, sd, norm_first) -> nn.TransformerEncoderLayer:
    d_model, n_heads, d_ff = dims
    layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True,
                                       norm_first=norm_first).double()
    layer.load_state_dict({k: cpu64(v) for k, v in sd.items()})
    return layer


def _torch_decoder_layer(dims, sd, norm_first) -> nn.TransformerDecoderLayer:
    d_model, n_heads, d_ff = dims
    layer = nn.TransformerDecoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True,
                                       norm_first=norm_first).double()
    layer.load_state_dict({k: cpu64(v) for k, v in sd.items()})
    return layer


def _mask64(mask):
    return None if mask is None else mask.detach().cpu()


def _encoder_variant(args, norm_first=None, pad="same"):
    dims, sd, x, pad_mask, nf = args
    layer = _torch_encoder_layer(dims, sd, nf if norm_first is None else norm_first)
    mask = {"same": _mask64(pad_mask), "none": None,
            "inverted": None if pad_mask is None else ~_mask64(pad_mask)}[pad]
    with torch.no_grad():
        return layer(cpu64(x), src_key_padding_mask=mask)


def _decoder_variant(args, norm_first=None, causal=True, tgt_pad=True, mem_pad=True, inverted=False,
                     diagonal_blocked=False):
    dims, sd, y, memory, tgt_mask, mem_mask, nf = args
    layer = _torch_decoder_layer(dims, sd, nf if norm_first is None else norm_first)
    mask = ~_causal(y.shape[1]) if inverted else _causal(y.shape[1]) if causal else None
    if diagonal_blocked:  # triu(0): a query may not attend to itself
        mask = torch.ones(y.shape[1], y.shape[1], dtype=torch.bool).triu(0)
    with torch.no_grad():
        return layer(cpu64(y), cpu64(memory), tgt_mask=mask,
                     tgt_key_padding_mask=_mask64(tgt_mask) if tgt_pad else None,
                     memory_key_padding_mask=_mask64(mem_mask) if mem_pad else None)


def _residual_from_normed(args, decoder: bool):
    """Pre-norm written as ``h = norm(x); x = h + sublayer(h)``: the residual adds the normalised
    x instead of x itself."""
    if decoder:
        dims, sd, x, memory, tgt_mask, mem_mask, _ = args
        layer, memory = _torch_decoder_layer(dims, sd, True), cpu64(memory)
        causal = _causal(x.shape[1])
        sublayers = [(layer.norm1, lambda h: layer.self_attn(h, h, h, attn_mask=causal,
                                                             key_padding_mask=_mask64(tgt_mask))[0]),
                     (layer.norm2, lambda h: layer.multihead_attn(h, memory, memory,
                                                                  key_padding_mask=_mask64(mem_mask))[0]),
                     (layer.norm3, lambda h: layer.linear2(F.relu(layer.linear1(h))))]
    else:
        dims, sd, x, pad_mask, _ = args
        layer = _torch_encoder_layer(dims, sd, True)
        sublayers = [(layer.norm1, lambda h: layer.self_attn(h, h, h, key_padding_mask=_mask64(pad_mask))[0]),
                     (layer.norm2, lambda h: layer.linear2(F.relu(layer.linear1(h))))]
    x = cpu64(x)
    with torch.no_grad():
        for norm, f in sublayers:
            h = norm(x)
            x = h + f(h)
    return x


_RESIDUAL_TEXT = ("in pre-norm the residual path carries x itself, not its normalised copy: "
                  "x = x + sublayer(norm(x)), not h = norm(x); x = h + sublayer(h).")


def _nan_safe_close(got, target, all_nan_ok=False) -> bool:
    """``got`` equals ``target`` wherever both are finite (a query that may attend to nothing gives
    NaN or zeros depending on PyTorch's code path); with ``all_nan_ok``, also when ``got`` is NaN
    everywhere (e.g. T = 1 and every query blocked)."""
    if not isinstance(got, torch.Tensor) or got.shape != target.shape:
        return False
    got = got.detach().cpu().double()
    if all_nan_ok and got.isnan().all():
        return True
    both = torch.isfinite(got) & torch.isfinite(target)
    return bool(both.any()) and torch.allclose(got[both], target[both], rtol=1e-4, atol=1e-5)


def _placement_text(layer: str) -> str:
    return (f"the output is {layer} with the other LayerNorm placement. norm_first=False "
            "(post-norm, the 2017 paper): x = norm(x + sublayer(x)); norm_first=True (pre-norm): "
            "x = x + sublayer(norm(x)). Read self.norm_first in forward.")


ENC_PLACEMENT = Hint(_placement_text("nn.TransformerEncoderLayer"),
                     lambda got, exp, args: close(got, _encoder_variant(args, norm_first=not args[4])))
ENC_NO_PAD = Hint("the output ignores the padding mask: pass key_padding_mask=... to self_attn, so "
                  "no position attends to padding.",
                  lambda got, exp, args: args[3] is not None and bool(args[3].any())
                  and close(got, _encoder_variant(args, pad="none")))
ENC_PAD_INVERTED = Hint("the padding mask is inverted: here True = padding (nn.MultiheadAttention's "
                        "convention, the opposite of F.scaled_dot_product_attention's attn_mask).",
                        lambda got, exp, args: args[3] is not None
                        and _nan_safe_close(got, _encoder_variant(args, pad="inverted")))
ENC_BATCH_FIRST = Hint("the output is what a layer gives when it reads x as (S, B, d_model): create "
                       "nn.MultiheadAttention(d_model, n_heads, batch_first=True), since x is "
                       "(B, S, d_model).",
                       lambda got, exp, args: args[3] is None and args[2].shape[0] > 1 and close(
                           got, _encoder_variant((*args[:2], args[2].transpose(0, 1), *args[3:]))
                           .transpose(0, 1)))
ENC_RESIDUAL_NORMED = Hint(_RESIDUAL_TEXT, lambda got, exp, args: args[4]
                           and _nan_safe_close(got, _residual_from_normed(args, decoder=False)))
ENCODER_HINTS = (ENC_PLACEMENT, ENC_NO_PAD, ENC_PAD_INVERTED, ENC_BATCH_FIRST, ENC_RESIDUAL_NORMED)

DEC_PLACEMENT = Hint(_placement_text("nn.TransformerDecoderLayer"),
                     lambda got, exp, args: close(got, _decoder_variant(args, norm_first=not args[6])))
DEC_NO_CAUSAL = Hint("the decoder's self-attention sees the future: pass a causal attn_mask to "
                     "self_attn (True above the diagonal = blocked, torch.ones(T, T).triu(1).bool()).",
                     lambda got, exp, args: args[2].shape[1] > 1
                     and close(got, _decoder_variant(args, causal=False)))
DEC_NO_MEMORY_PAD = Hint("cross-attention attends to the source's padding: pass "
                         "key_padding_mask=memory_key_padding_mask to multihead_attn.",
                         lambda got, exp, args: args[5] is not None and bool(args[5].any())
                         and close(got, _decoder_variant(args, mem_pad=False)))
DEC_NO_TGT_PAD = Hint("masked self-attention ignores the target's padding mask: pass "
                      "key_padding_mask=tgt_key_padding_mask to self_attn.",
                      lambda got, exp, args: args[4] is not None and bool(args[4].any())
                      and close(got, _decoder_variant(args, tgt_pad=False)))
DEC_CAUSAL_INVERTED = Hint("the causal mask is inverted: with nn.MultiheadAttention a boolean attn_mask "
                           "is True where attention is *blocked*, i.e. above the diagonal "
                           "(torch.ones(T, T, dtype=torch.bool).triu(1)), not the lower triangle.",
                           lambda got, exp, args: args[2].shape[1] > 1 and _nan_safe_close(
                               got, _decoder_variant(args, inverted=True)))
DEC_DIAGONAL_BLOCKED = Hint("the causal mask also blocks the diagonal, so no position attends to "
                            "itself (and position 0 attends to nothing): block only keys j > i, "
                            "torch.ones(T, T, dtype=torch.bool).triu(1), not .triu() / .triu(0).",
                            lambda got, exp, args: _nan_safe_close(
                                got, _decoder_variant(args, diagonal_blocked=True),
                                all_nan_ok=args[2].shape[1] == 1))
DEC_RESIDUAL_NORMED = Hint(_RESIDUAL_TEXT, lambda got, exp, args: args[6]
                           and _nan_safe_close(got, _residual_from_normed(args, decoder=True)))
DECODER_HINTS = (DEC_PLACEMENT, DEC_NO_CAUSAL, DEC_NO_MEMORY_PAD, DEC_NO_TGT_PAD, DEC_CAUSAL_INVERTED,
                 DEC_DIAGONAL_BLOCKED, DEC_RESIDUAL_NORMED)


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
        layer = call(EncoderLayer, shown, 8, 2, 12, norm_first)
        reference = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True,
                                               norm_first=norm_first)
        _check_names(layer, reference, shown)
        reference.load_state_dict(_random_state(reference, g))
        layer.load_state_dict(reference.state_dict())
        x = torch.randn(2, 5, 8, generator=g)
        for label, mask in (("no mask", None), ("padding mask for lengths [5, 3]", _pad_mask([5, 3], 5))):
            args = ((8, 2, 12), dict(reference.state_dict()), x, mask, norm_first)
            described = f"{shown}(<random (2, 5, 8) x>, {label})"
            with torch.no_grad():
                got = call(lambda: layer(x, mask) if mask is not None else layer(x), described)
                expected = reference(x, src_key_padding_mask=mask)
            expect_example(got, expected, described,
                           "the output must equal nn.TransformerEncoderLayer(..., dropout=0.0, "
                           f"batch_first=True, norm_first={norm_first}) with the same weights.",
                           ENCODER_HINTS, args)
            count += 1
    passed("EncoderLayer", count + 2)


def check_decoder_layer(DecoderLayer: Callable) -> None:
    """State_dict names, causality, then equality with nn.TransformerDecoderLayer."""
    g = torch.Generator().manual_seed(0)
    count = 0
    for norm_first in (False, True):
        shown = f"DecoderLayer(8, 2, 12, norm_first={norm_first})"
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
            args = ((8, 2, 12), dict(reference.state_dict()), y, memory, tgt_pad, mem_pad, norm_first)
            described = f"{shown}(<random (2, 4, 8) y>, <random (2, 6, 8) memory>, {label})"
            with torch.no_grad():
                got = call(lambda: layer(y, memory, tgt_pad, mem_pad), described)
                expected = reference(y, memory, tgt_mask=_causal(4), tgt_key_padding_mask=tgt_pad,
                                     memory_key_padding_mask=mem_pad)
            expect_example(got, expected, described,
                           "the output must equal nn.TransformerDecoderLayer(..., dropout=0.0, batch_first="
                           f"True, norm_first={norm_first}) called with tgt_mask = the causal mask and the "
                           "same padding masks.", DECODER_HINTS, args)
            count += 1
        with torch.no_grad():
            changed = y.clone()
            changed[:, 2:] += 1.0  # change the future of positions 0 and 1
            described = f"{shown}: positions 0-1 after changing positions 2-3 of y"
            expect_example(call(lambda: layer(changed, memory)[:, :2], described), layer(y, memory)[:, :2], described,
                           "position t may only depend on positions 0..t of y: changing later positions "
                           "must not change it.", DECODER_HINTS, args)
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


def _model_variant(args, mem_pad=True, final_norms=True, positions=True, tgt_pad=True, enc_pad=True,
                   src_start=0, tgt_start=0):
    cfg, sd, src, tgt, src_pad, tgt_pad_mask = args
    core, sd = _torch_model(cfg, sd)
    if not final_norms:
        core.encoder.norm = core.decoder.norm = None
    src, tgt = src.cpu(), tgt.cpu()
    pos = sd["pos_embed.weight"] if positions else torch.zeros_like(sd["pos_embed.weight"])
    x = F.embedding(src, sd["src_embed.weight"]) + pos[src_start: src_start + src.shape[1]]
    y = F.embedding(tgt, sd["tgt_embed.weight"]) + pos[tgt_start: tgt_start + tgt.shape[1]]
    src_pad, tgt_pad_mask = _mask64(src_pad), _mask64(tgt_pad_mask)
    with torch.no_grad():
        h = core(x, y, tgt_mask=_causal(tgt.shape[1]), src_key_padding_mask=src_pad if enc_pad else None,
                 tgt_key_padding_mask=tgt_pad_mask if tgt_pad else None,
                 memory_key_padding_mask=src_pad if mem_pad else None)
    return F.linear(h, sd["lm_head.weight"], sd["lm_head.bias"])


def _has(mask) -> bool:
    return mask is not None and bool(mask.any())


MODEL_NO_MEMORY_PAD = Hint("the decoder's cross-attention attends to the source's padding: pass "
                           "src_key_padding_mask to every decoder layer as its "
                           "memory_key_padding_mask.",
                           lambda got, exp, args: _has(args[4]) and close(got, _model_variant(args, mem_pad=False)))
MODEL_NO_TGT_PAD = Hint("the decoder ignores the target's padding mask: pass tgt_key_padding_mask to "
                        "every decoder layer.",
                        lambda got, exp, args: _has(args[5]) and close(got, _model_variant(args, tgt_pad=False)))
MODEL_NO_FINAL_NORM = Hint("the final LayerNorms are missing: like nn.Transformer, apply self.enc_norm "
                           "to the encoder's output (the memory) and self.dec_norm before lm_head.",
                           lambda got, exp, args: close(got, _model_variant(args, final_norms=False)))
MODEL_NO_POSITIONS = Hint("the positions are missing: add self.pos_embed(torch.arange(T)) to the "
                          "token embeddings of both the source and the target.",
                          lambda got, exp, args: close(got, _model_variant(args, positions=False)))
MODEL_NO_ENC_PAD = Hint("the encoder attends to the source's padding: pass src_key_padding_mask to "
                        "every encoder layer too (not only to the decoder's cross-attention).",
                        lambda got, exp, args: _has(args[4]) and close(got, _model_variant(args, enc_pad=False)))


def _positions_from_1(got, exp, args) -> bool:
    S, T, max_len = args[2].shape[1], args[3].shape[1], args[0][6]
    return any(close(got, _model_variant(args, src_start=s, tgt_start=1))
               for s in (0, 1) if max(S + s, T + 1) <= max_len)


MODEL_POSITIONS_FROM_1 = Hint("the positions are shifted by one: the first token is at position 0, "
                              "so add self.pos_embed(torch.arange(T)), not torch.arange(1, T + 1).",
                              _positions_from_1)
MODEL_HINTS = (MODEL_NO_MEMORY_PAD, MODEL_NO_TGT_PAD, MODEL_NO_FINAL_NORM, MODEL_NO_POSITIONS,
               MODEL_NO_ENC_PAD, MODEL_POSITIONS_FROM_1)


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
    least = 2 if padded else 1  # room for padding
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
    least = 2 if padded else 1  # room for padding
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
    least = 2 if padded else 1  # room for padding
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
             "random (N, d) float32, default eps", LN_HINTS),
        Case("layer_norm", lambda g: _ln_case(g, (randint(g, 1, 3), randint(g, 2, 6), randint(g, 3, 9)),
                                              torch.float64), "float64 (B, T, d)", LN_HINTS),
        Case("layer_norm", _ln_small_d, "d = 2 or 3 (the biased variance matters most)", LN_HINTS),
        Case("layer_norm", _ln_tiny_variance, "float64, variance ~1e-6 with eps = 1e-4", LN_HINTS),
        Case("layer_norm", _ln_constant_row, "a row whose entries are all equal", LN_HINTS),
        Case("layer_norm", lambda g: _ln_case(g, (randint(g, 2, 6),), eps=1e-3), "a single vector, eps=1e-3",
             LN_HINTS),
    ],
    "test_feed_forward": [
        Case(FFN_CALL, lambda g: _ffn_case(g, randint(g, 2, 9), randint(g, 2, 20), (randint(g, 1, 4), randint(g, 1, 8))),
             "(B, T, d_model), d_ff given", FFN_HINTS),
        Case(FFN_DEFAULT_CALL, lambda g: (lambda d: _ffn_case(g, d, 4 * d, (randint(g, 1, 6),)))(randint(g, 2, 9)),
             "d_ff left out (= 4 d_model), (N, d_model) input", FFN_HINTS),
        Case(FFN_CALL, lambda g: _ffn_case(g, randint(g, 2, 6), randint(g, 2, 12), (2, 3), torch.float64),
             "float64", FFN_HINTS),
    ],
    "test_encoder_layer": [
        Case(ENCODER_CALL, lambda g: _encoder_case(g, False, False), "post-norm, no mask", ENCODER_HINTS),
        Case(ENCODER_CALL, lambda g: _encoder_case(g, True, False), "post-norm, padding mask",
             ENCODER_HINTS),
        Case(ENCODER_CALL, lambda g: _encoder_case(g, True, True, torch.float64),
             "pre-norm, padding mask, float64", ENCODER_HINTS),
        Case(ENCODER_CALL, lambda g: _encoder_case(g, False, True), "pre-norm, no mask", ENCODER_HINTS),
        Case(ENCODER_DEFAULT_CALL, lambda g: _encoder_case(g, False, False),
             "norm_first and mask left out", ENCODER_HINTS),
    ],
    "test_decoder_layer": [
        Case(DECODER_CALL, lambda g: _decoder_case(g, False, False), "post-norm, no padding",
             DECODER_HINTS),
        Case(DECODER_CALL, lambda g: _decoder_case(g, True, False), "post-norm, padding masks",
             DECODER_HINTS),
        Case(DECODER_CALL, lambda g: _decoder_case(g, True, True, torch.float64),
             "pre-norm, padding masks, float64", DECODER_HINTS),
        Case(DECODER_DEFAULT_CALL, lambda g: _decoder_case(g, False, False),
             "norm_first and masks left out", DECODER_HINTS),
        Case(DECODER_CALL, lambda g: _decoder_case(g, False, True, T=1), "pre-norm, T = 1",
             DECODER_HINTS),
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
