#!/usr/bin/env python3
"""PyTorch/timm counterpart of `cargo bench -p clipkd-models --bench vision_towers`: seconds per
forward + backward of open_clip's vision tower (train mode, sum of the embeddings) and per
inference forward (eval mode, no grad), batch 8, 224 px, f32, on the CPU with the given threads
(default: torch's own), median of 3 after 1 warm-up. The timm towers are built as in
tools/make_timm_fixtures.py (MobileNetV3's head.proj from the trunk's real output).

Run: /work/venv/bin/python tools/bench_torch_towers.py [--threads 2]
"""

import argparse
import json
import os
import statistics
import sys
import time

import open_clip
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_timm_fixtures import build  # noqa: E402

PRESETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "clipkd-models", "src", "presets")
TOWERS = ["timm_resnet18", "timm_mobilenetv3_small_100", "timm-efficientnet-b0", "timm-mobilevit_s",
          "timm-swin_tiny_patch4_window7_224", "ViT-T-16"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, open_clip {open_clip.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, 224 px, f32")
    print("| tower | params | train fwd+bwd s | inference fwd s |")
    print("|---|---|---|---|")
    for name in TOWERS:
        with open(os.path.join(PRESETS, f"{name}.json")) as f:
            cfg = json.load(f)
        visual = build(cfg, 0).visual
        params = sum(p.numel() for p in visual.parameters())
        images = torch.randn(args.batch, 3, 224, 224)
        visual.train()
        train = []
        for i in range(1 + args.steps):
            start = time.perf_counter()
            visual(images).sum().backward()
            visual.zero_grad(set_to_none=True)
            if i:
                train.append(time.perf_counter() - start)
        visual.eval()
        inference = []
        with torch.no_grad():
            for i in range(1 + args.steps):
                start = time.perf_counter()
                visual(images)
                if i:
                    inference.append(time.perf_counter() - start)
        print(f"| {name} | {params / 1e6:.2f}M | {statistics.median(train):.3f} | {statistics.median(inference):.3f} |")


if __name__ == "__main__":
    main()
