"""JAX step vs PyTorch step, interleaved in one process, for a ratio that survives noisy load.

Run: python benchmarks/interleaved.py --image-size 128 --batch-size 16 --rounds 8
Needs torch (not a jaxfundus dependency). Prints both img/s and the median per-round ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_resnet50  # noqa: E402

from jaxfundus.bench import prepare_train_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    size, batch = args.image_size, args.batch_size
    jax_step, info = prepare_train_step("resnet50", size, batch)
    torch.manual_seed(0)
    model = torch_resnet50.resnet50(5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 5, (batch,))

    def torch_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(2):
        torch_step()
        jax_step()
    times = {"torch": [], "jax": []}
    for _ in range(args.rounds):
        for name, step in (("torch", torch_step), ("jax", jax_step)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    ratios = [t / j for t, j in zip(times["torch"], times["jax"], strict=True)]
    torch_rate = batch / statistics.median(times["torch"])
    jax_rate = batch / statistics.median(times["jax"])
    print(f"compile {info['compile_s']:.1f} s; torch {torch_rate:.2f} img/s, jaxfundus "
          f"{jax_rate:.2f} img/s, ratio "
          f"{statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
