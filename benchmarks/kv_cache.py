"""Tokens/s of uncached vs cached generation (Chapter 11), and Hugging Face's generate, one run.

The model is a CPU-sized GPT-2 (``--layers 4 --heads 4 --embd 128``, 1024 positions, a 256-token
vocabulary), built locally with random weights as ``transformers.GPT2LMHeadModel`` (no download);
its state_dict is given unchanged to the reference solution of ``solutions/11-kv-cache`` (the
course's ``generate``: ``use_cache=False`` and ``use_cache=True``). Hugging Face generates with
``model.generate(..., do_sample=False, use_cache=True)`` from the same weights and the same
prompt; the script checks that all three give the same greedy tokens.

Time is the CPU time of this process (``time.process_time``) on one thread, the best of
``--repeats`` runs, so that other programs on a shared machine do not distort the ratios.
Goals (issue "Chapters 9-11"): cached >= 5x uncached at 256 new tokens; the reference's cached
tokens/s >= 1.0x Hugging Face's.

    python benchmarks/kv_cache.py [--sizes 64 128 256 512] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import reference_namespace  # noqa: E402


def best_time(run, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        out = run()
        best = min(best, time.process_time() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--embd", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=1024, n_embd=args.embd, n_layer=args.layers,
                        n_head=args.heads, activation_function="gelu_new", resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                        bos_token_id=None, eos_token_id=None)
    hf = GPT2LMHeadModel(config).eval()
    params = {k: v for k, v in hf.state_dict().items() if k.startswith("transformer.")
              and not k.endswith((".attn.bias", ".attn.masked_bias"))}
    ns = reference_namespace(ROOT, "11-kv-cache")
    prompt = torch.randint(256, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    print(f"GPT-2 config: {args.layers} layers, {args.heads} heads, C = {args.embd}, "
          f"{sum(p.numel() for p in params.values()):,} parameters; prompt {args.prompt} tokens; "
          f"CPU time, 1 thread, best of {args.repeats}")
    print(f"{'new':>5s} {'uncached':>10s} {'cached':>10s} {'HF cached':>10s} "
          f"{'cached/uncached':>16s} {'cached/HF':>10s}  same tokens")
    for n in args.sizes:
        t_plain, plain = best_time(lambda: ns["generate"](params, prompt, n, args.heads, use_cache=False),
                                   args.repeats)
        t_cached, cached = best_time(lambda: ns["generate"](params, prompt, n, args.heads), args.repeats)
        t_hf, hf_ids = best_time(lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                     max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                     use_cache=True, pad_token_id=0), args.repeats)
        same = torch.equal(plain, cached) and torch.equal(cached, hf_ids)
        print(f"{n:5d} {n / t_plain:8.0f}/s {n / t_cached:8.0f}/s {n / t_hf:8.0f}/s "
              f"{t_plain / t_cached:15.1f}x {t_hf / t_cached:9.2f}x  {same}")


if __name__ == "__main__":
    main()
