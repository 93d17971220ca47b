"""The shipped character-level GPT: its layout, its provenance script, and that it learned something."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autograder.data import char_gpt, shakespeare
from conftest import ROOT, reference_namespace


@pytest.fixture(scope="module")
def reference() -> dict:
    return reference_namespace(ROOT, "11-kv-cache")


def test_checkpoint_is_small_and_in_gpt2_layout():
    assert char_gpt.PATH.stat().st_size < 1_000_000
    model = char_gpt.load()
    cfg, sd = model["config"], model["state_dict"]
    assert model["vocabulary"] == "".join(shakespeare.vocabulary())
    assert cfg == {"vocab_size": len(model["vocabulary"]), **char_gpt.CONFIG}
    C, V = cfg["n_embd"], cfg["vocab_size"]
    assert sd["transformer.wte.weight"].shape == (V, C)
    assert sd["transformer.wpe.weight"].shape == (cfg["block_size"], C)
    for i in range(cfg["n_layer"]):
        assert sd[f"transformer.h.{i}.attn.c_attn.weight"].shape == (C, 3 * C)  # Conv1D: (in, out)
        assert sd[f"transformer.h.{i}.mlp.c_fc.weight"].shape == (C, 4 * C)
        assert sd[f"transformer.h.{i}.mlp.c_proj.weight"].shape == (4 * C, C)
    assert len(sd) == 4 + 12 * cfg["n_layer"] and all(t.dtype == torch.float32 for t in sd.values())


def test_training_is_deterministic_and_the_renamed_weights_give_the_same_logits(reference):
    """A few steps of train() twice: equal weights; and the trainer's own forward pass equals the
    notebook's gpt_forward on the renamed weights (so the renaming and transposes are right)."""
    first, second = (char_gpt.train(steps=2, log=lambda _: None) for _ in range(2))
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    torch.manual_seed(0)
    trainer = char_gpt._Trainer(**first["config"])
    for p in trainer.parameters():  # non-trivial biases and gains too
        p.data.add_(0.05 * torch.randn_like(p))
    idx = torch.randint(first["config"]["vocab_size"], (2, 20))
    with torch.no_grad():
        expected = trainer(idx)
        got = reference["gpt_forward"](trainer.hf_state_dict(), idx, torch.arange(20),
                                       first["config"]["n_head"])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_shipped_model_predicts_shakespeare(reference):
    """The recorded validation loss, recomputed on the same windows with the notebook's forward."""
    model = char_gpt.load()
    stoi = {c: i for i, c in enumerate(model["vocabulary"])}
    val = torch.tensor([stoi[c] for c in shakespeare.splits()[1]])
    g, block = torch.Generator().manual_seed(1), model["config"]["block_size"]
    losses = []
    with torch.no_grad():
        for _ in range(20):  # the windows train() evaluated on
            x, y = char_gpt.batch(val, g, block)
            logits = reference["gpt_forward"](model["state_dict"], x, torch.arange(block),
                                              model["config"]["n_head"])
            losses.append(F.cross_entropy(logits.flatten(0, 1), y.flatten()).item())
    loss = sum(losses) / len(losses)
    assert abs(loss - model["losses"]["val"]) < 1e-3
    assert loss < 2.0 < math.log(len(stoi))  # far better than a uniform guess (4.33 nats)
