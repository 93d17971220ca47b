"""Training throughput: the course's reference GPT vs Hugging Face's GPT2LMHeadModel.

Both models have the same config and start from the same weights (Hugging Face's random
initialisation, converted with the reference's ``convert_gpt2_state_dict``); both are trained in
the same loop on the same character batches of the Shakespeare corpus (AdamW, no dropout), and
the script prints training tokens per second for each and their ratio. The reference GPT is not
copied here: it is exec'd from the solution notebook, like ``tests/conftest.py`` does.

    python benchmarks/train_gpt.py [--device cpu|cuda] [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import reference_namespace  # noqa: E402

from autograder.data import shakespeare  # noqa: E402


def batches(ids: torch.Tensor, n: int, batch_size: int, block_size: int, device: str) -> list:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        start = torch.randint(0, len(ids) - block_size - 1, (batch_size,), generator=g)
        x = torch.stack([ids[s:s + block_size] for s in start])
        y = torch.stack([ids[s + 1:s + block_size + 1] for s in start])
        out.append((x.to(device), y.to(device)))
    return out


def tokens_per_second(forward, params, data, warmup: int, device: str) -> tuple[float, float]:
    """Train on ``data`` (the first ``warmup`` batches untimed); (tokens/s, last loss)."""
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    for i, (x, y) in enumerate(data):
        if i == warmup:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = F.cross_entropy(forward(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(x.numel() for x, _ in data[warmup:])
    return tokens / seconds, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    ref = reference_namespace(ROOT, "10-gpt")
    chars = shakespeare.vocabulary()
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in shakespeare.splits()[0]])
    V = len(chars)

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=args.block_size, n_embd=args.n_embd,
                                    n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=0.0,
                                    embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0))
    ours = ref["GPT"](ref["GPTConfig"](block_size=args.block_size, vocab_size=V, n_layer=args.n_layer,
                                       n_head=args.n_head, n_embd=args.n_embd))
    ours.load_state_dict(ref["convert_gpt2_state_dict"](hf.state_dict()))
    hf.to(args.device).train()
    ours.to(args.device).train()
    data = batches(ids, args.warmup + args.steps, args.batch_size, args.block_size, args.device)

    n_params = sum(p.numel() for p in ours.parameters())
    print(f"device {args.device}, threads {torch.get_num_threads()}, config: L={args.n_layer} "
          f"C={args.n_embd} H={args.n_head} T={args.block_size} B={args.batch_size} V={V}, "
          f"{n_params:,} parameters, {args.steps} timed steps after {args.warmup} warm-up steps")
    results = {}
    for name, model, forward in (("course GPT (reference)", ours, ours),
                                 ("HF GPT2LMHeadModel", hf, lambda x: hf(x).logits)):
        results[name] = tokens_per_second(forward, list(model.parameters()), data, args.warmup, args.device)
    print(f"{'model':26s} {'tokens/s':>12s} {'last loss':>10s}")
    for name, (tps, loss) in results.items():
        print(f"{name:26s} {tps:12,.0f} {loss:10.3f}")
    (ours_tps, _), (hf_tps, _) = results.values()
    print(f"ratio course / Hugging Face: {ours_tps / hf_tps:.2f}x")


if __name__ == "__main__":
    main()
