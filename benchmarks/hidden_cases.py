"""Compute time of each chapter's hidden cases on the reference (the issue's "≤ 10 s" budget).

Runs the reference notebook's setup and solution cells in this process (no kernel start-up,
no sandbox: this measures the cases themselves), then every ``Case`` of the chapter once with
the grader's seeded inputs, and prints seconds per test cell and per chapter.

    python benchmarks/hidden_cases.py [--device cpu] [--seed 0] [ASSIGNMENT ...]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import nbformat
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import assignments, notebook_of, reference_namespace  # noqa: E402

from autograder.grading import _inputs, to_device  # noqa: E402


def time_chapter(assignment: str, device: str, seed: int) -> dict[str, float]:
    """grade_id → seconds for all its cases on the reference."""
    nb = nbformat.read(ROOT / "solutions" / assignment / notebook_of(assignment), as_version=4)
    tests = importlib.import_module(nb.metadata["autograder"]["tests"])
    namespace = reference_namespace(ROOT, assignment)
    seconds: dict[str, float] = {}
    for (gid, i), args in _inputs(tests.CASES, seed).items():
        args = to_device(args, device)
        start = time.perf_counter()
        result = eval(tests.CASES[gid][i].call, namespace)(*args)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds[gid] = seconds.get(gid, 0.0) + time.perf_counter() - start
        del result
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'assignment':<22} {'test cell':<28} {'seconds':>8}")
    for assignment in args.assignments or assignments():
        seconds = time_chapter(assignment, args.device, args.seed)
        for gid, s in seconds.items():
            print(f"{assignment:<22} {gid:<28} {s:8.3f}")
        print(f"{assignment:<22} {'TOTAL':<28} {sum(seconds.values()):8.3f}")


if __name__ == "__main__":
    main()
