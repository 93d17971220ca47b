"""A small character-level GPT trained on the Shakespeare corpus, shipped as weights.

Chapter 11 (the KV cache) generates text with it: the student's own cache, cached attention and
prefill + decode loop run on these weights, and the grader checks that cached generation equals
uncached generation token for token. Weights are data, not answers: nothing here generates text.

Layout. The state_dict uses Hugging Face's ``GPT2LMHeadModel`` names and shapes, so the same
tensors load into ``transformers.GPT2LMHeadModel(GPT2Config(**hf_config()))`` (the benchmark does
that) and into the chapter's own forward pass::

    transformer.wte.weight               (vocab, C)     token embeddings, tied to the output layer
    transformer.wpe.weight               (block, C)     learned absolute positions
    transformer.h.{i}.ln_1.weight/bias   (C,)
    transformer.h.{i}.attn.c_attn.weight (C, 3C)        x @ W + b gives [q | k | v]  (Conv1D: in, out)
    transformer.h.{i}.attn.c_attn.bias   (3C,)
    transformer.h.{i}.attn.c_proj.weight (C, C),  .bias (C,)
    transformer.h.{i}.ln_2.weight/bias   (C,)
    transformer.h.{i}.mlp.c_fc.weight    (C, 4C), .bias (4C,)   GELU (tanh approximation) between
    transformer.h.{i}.mlp.c_proj.weight  (4C, C), .bias (C,)
    transformer.ln_f.weight/bias         (C,)

Provenance. :func:`train` trains the model from ``torch.manual_seed(SEED)`` on
:func:`autograder.data.shakespeare.splits`'s training text with AdamW, on one CPU thread, and
:func:`regenerate` writes ``char_gpt.pt`` (``python -m autograder.data.char_gpt``). The network is
built from PyTorch's own ``nn.TransformerEncoderLayer`` (pre-norm, causal mask, GELU-tanh), and its
weights are then renamed and transposed into the layout above. The checkpoint also records the
training steps and the final training and validation losses.

    >>> from autograder.data import char_gpt
    >>> model = char_gpt.load()   # dict: state_dict, config, vocabulary, losses
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import shakespeare

PATH = Path(__file__).with_name("char_gpt.pt")
CONFIG = {"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 128}
SEED, STEPS, BATCH, LR = 0, 3000, 32, 3e-3


def load(path: str | Path = PATH) -> dict:
    """The checkpoint: ``state_dict`` (float32, CPU), ``config``, ``vocabulary`` (a string),
    ``losses`` (final train / val cross-entropy in nats per character) and ``steps``."""
    return torch.load(path, map_location="cpu", weights_only=True)


def hf_config(model: dict | None = None) -> dict:
    """Keyword arguments for ``transformers.GPT2Config`` that match the checkpoint exactly."""
    cfg = (model or load())["config"]
    return dict(vocab_size=cfg["vocab_size"], n_positions=cfg["block_size"], n_embd=cfg["n_embd"],
                n_layer=cfg["n_layer"], n_head=cfg["n_head"], activation_function="gelu_new",
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                tie_word_embeddings=True)


class _Trainer(nn.Module):
    """The network used for training only: PyTorch's encoder layers with a causal mask."""

    def __init__(self, vocab_size: int, n_layer: int, n_head: int, n_embd: int, block_size: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        layer = nn.TransformerEncoderLayer(n_embd, n_head, 4 * n_embd, dropout=0.0,
                                           activation=lambda x: F.gelu(x, approximate="tanh"),
                                           batch_first=True, norm_first=True)
        self.h = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(n_embd)
        for p in self.parameters():  # GPT-2's initialisation: N(0, 0.02), zero biases, unit gains
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))  # (B, T, C)
        mask = nn.Transformer.generate_square_subsequent_mask(T)
        x = self.ln_f(self.h(x, mask=mask, is_causal=True))
        return x @ self.wte.weight.T  # (B, T, vocab): tied output layer

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights renamed and transposed into GPT2LMHeadModel's layout (module docstring)."""
        sd = {"transformer.wte.weight": self.wte.weight, "transformer.wpe.weight": self.wpe.weight,
              "transformer.ln_f.weight": self.ln_f.weight, "transformer.ln_f.bias": self.ln_f.bias}
        for i, layer in enumerate(self.h.layers):
            p = f"transformer.h.{i}."
            sd |= {p + "ln_1.weight": layer.norm1.weight, p + "ln_1.bias": layer.norm1.bias,
                   p + "attn.c_attn.weight": layer.self_attn.in_proj_weight.T,
                   p + "attn.c_attn.bias": layer.self_attn.in_proj_bias,
                   p + "attn.c_proj.weight": layer.self_attn.out_proj.weight.T,
                   p + "attn.c_proj.bias": layer.self_attn.out_proj.bias,
                   p + "ln_2.weight": layer.norm2.weight, p + "ln_2.bias": layer.norm2.bias,
                   p + "mlp.c_fc.weight": layer.linear1.weight.T, p + "mlp.c_fc.bias": layer.linear1.bias,
                   p + "mlp.c_proj.weight": layer.linear2.weight.T,
                   p + "mlp.c_proj.bias": layer.linear2.bias}
        return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def batch(data: torch.Tensor, g: torch.Generator, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BATCH random windows of ``data`` (token ids) drawn with ``g``: inputs and next-token targets.
    :func:`train` evaluates on 20 batches of the validation ids drawn from ``manual_seed(1)``."""
    starts = torch.randint(len(data) - block - 1, (BATCH,), generator=g)
    x = torch.stack([data[s:s + block] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + block + 1] for s in starts.tolist()])
    return x, y


def train(steps: int = STEPS, log=print) -> dict:
    """Train from a fixed seed on one thread; return the checkpoint :func:`load` reads."""
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    chars = shakespeare.vocabulary()
    stoi = {c: i for i, c in enumerate(chars)}
    train_text, val_text = shakespeare.splits()
    train_ids = torch.tensor([stoi[c] for c in train_text])
    val_ids = torch.tensor([stoi[c] for c in val_text])
    config = {"vocab_size": len(chars), **CONFIG}
    model = _Trainer(**config)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    g = torch.Generator().manual_seed(SEED)
    block, start = CONFIG["block_size"], time.time()
    for step in range(steps):
        lr = LR * 0.5 * (1 + math.cos(math.pi * step / steps))  # cosine decay to 0
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batch(train_ids, g, block)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - start:.0f} s")
    losses = {}
    with torch.no_grad():
        for name, ids in (("train", train_ids), ("val", val_ids)):
            eg = torch.Generator().manual_seed(1)
            losses[name] = sum(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
                               for x, y in (batch(ids, eg, block) for _ in range(20))) / 20
    log(f"final losses {losses}")
    return {"state_dict": model.hf_state_dict(), "config": config, "vocabulary": "".join(chars),
            "losses": losses, "steps": steps}


def regenerate(out: str | Path = PATH, steps: int = STEPS) -> dict:
    """Train and write ``char_gpt.pt`` (about 10 minutes on one idle CPU core)."""
    checkpoint = train(steps)
    torch.save(checkpoint, out)
    return checkpoint


if __name__ == "__main__":
    regenerate(*sys.argv[1:2])
