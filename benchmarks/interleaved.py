"""jaxfundus step vs PyTorch step, interleaved in one process, for a ratio that survives load.

Run: python benchmarks/interleaved.py --model resnet50 --image-size 128 --batch-size 16
     python benchmarks/interleaved.py --model ganomaly --image-size 64 --batch-size 32
Needs torch (not a jaxfundus dependency). Prints both img/s and the median per-round ratio.
Both steps run in this process, so both get the same allocator settings (jaxfundus.host_memory).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from jaxfundus.host_memory import retain_freed_memory

retain_freed_memory()  # before torch or jax start their threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_reference import STEP_BUILDERS  # noqa: E402

from jaxfundus.bench import prepare_train_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(STEP_BUILDERS), default="resnet50")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    size, batch = args.image_size, args.batch_size
    jax_step, info = prepare_train_step(args.model, size, batch)
    torch_step = STEP_BUILDERS[args.model](size, batch)
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
    print(f"{args.model} {size} px, batch {batch}: compile {info['compile_s']:.1f} s; torch "
          f"{torch_rate:.2f} img/s, jaxfundus {jax_rate:.2f} img/s, ratio "
          f"{statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
