"""Time a PyTorch eager training step of the same model, batch and image size as jaxfundus'.

Run: python benchmarks/torch_reference.py --model resnet50 --image-size 128 --batch-size 16
Prints one JSON line with img_per_s and step_s (median over timed steps, after warm-up).
Models: resnet50 (torch_resnet50.py), ganomaly (torch_ganomaly.py). Needs torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from jaxfundus.host_memory import retain_freed_memory

# The allocator settings `invoke bench` runs the jaxfundus step with, before torch's threads start.
retain_freed_memory()

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_ganomaly  # noqa: E402
import torch_resnet50  # noqa: E402

STEP_BUILDERS = {"resnet50": torch_resnet50.make_step, "ganomaly": torch_ganomaly.make_step}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(STEP_BUILDERS), default="resnet50")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    step = STEP_BUILDERS[args.model](args.image_size, args.batch_size)
    times = []
    for index in range(args.warmup + args.steps):
        start = time.perf_counter()
        step()
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    print(json.dumps({"framework": "torch", "version": torch.__version__, "model": args.model,
                      "image_size": args.image_size, "batch_size": args.batch_size,
                      "threads": torch.get_num_threads(), "step_s": step_s,
                      "img_per_s": args.batch_size / step_s}))


if __name__ == "__main__":
    main()
