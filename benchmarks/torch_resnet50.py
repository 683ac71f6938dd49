"""PyTorch reference: one eager ResNet-50 (Keras layout, as jaxfundus.models.resnet) training step.

Run: python benchmarks/torch_resnet50.py --image-size 128 --batch-size 16 --steps 10
Prints one JSON line with img_per_s and step_s (median over timed steps, after warm-up).
Needs torch (e.g. `pip install torch==2.13.0`, CPU build); it is not a jaxfundus dependency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, in_ch: int, filters: int, stride: int) -> None:
        super().__init__()
        out_ch = filters * 4
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, filters, 1, stride, bias=False), nn.BatchNorm2d(filters), nn.ReLU(),
            nn.Conv2d(filters, filters, 3, 1, 1, bias=False), nn.BatchNorm2d(filters), nn.ReLU(),
            nn.Conv2d(filters, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.shortcut = (nn.Identity() if stride == 1 and in_ch == out_ch else nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet50(num_classes: int) -> nn.Module:
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    in_ch = 64
    for filters, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(in_ch, filters, stride if i == 0 else 1))
            in_ch = filters * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)]
    return nn.Sequential(*layers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = resnet50(5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, 5, (args.batch_size,))
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    print(json.dumps({"framework": "torch", "version": torch.__version__, "model": "resnet50",
                      "image_size": args.image_size, "batch_size": args.batch_size,
                      "threads": torch.get_num_threads(), "step_s": step_s,
                      "img_per_s": args.batch_size / step_s}))


if __name__ == "__main__":
    main()
