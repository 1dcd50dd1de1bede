#!/usr/bin/env python3
"""Check that a clipkd-exported .safetensors file is an open_clip 3.3.0 state dict.

Loads FILE into open_clip's `CLIP` built from `--config` with `load_state_dict(strict=True)`
(any missing or unexpected key, or a wrong shape, raises), checks the element types (float32,
int64 `num_batches_tracked`), then, given inputs, prints max abs differences:

  --io IO.safetensors         pixels / tokens (and optionally keep + reference outputs
                              image_features / text_features / masked_image_features, as in
                              tests/fixtures/models/*_io.safetensors): open_clip on the exported
                              weights vs those reference outputs
  --no-reference              with --io: use only its inputs (for weights that are not the ones the
                              reference outputs were computed with, e.g. a fresh Rust init)
  --rust-io RUST.safetensors  the Rust model's outputs on the same inputs (written by
                              `cargo run -p clipkd-models --example export_open_clip -- ... --io IO`):
                              open_clip on the exported weights vs Rust

Exit status 1 if the strict load fails or any difference exceeds --tol (default 1e-4).

Example:
  cargo run -p clipkd-models --example export_open_clip -- --config tests/fixtures/models/vit_gelu.json \\
      --weights tests/fixtures/models/vit_gelu.safetensors --out /tmp/vit_gelu.safetensors \\
      --io tests/fixtures/models/vit_gelu_io.safetensors
  /work/venv/bin/python tools/check_export.py /tmp/vit_gelu.safetensors \\
      --config tests/fixtures/models/vit_gelu.json --io tests/fixtures/models/vit_gelu_io.safetensors \\
      --rust-io /tmp/vit_gelu.rust_io.safetensors
"""

import argparse
import json
import os
import sys

import open_clip
import torch
from open_clip.model import CLIP
from safetensors.torch import load_file


def build(config_path):
    if not os.path.isfile(config_path):
        # a preset name: the bundled copy of open_clip's config
        return open_clip.create_model(config_path, pretrained=None)
    with open(config_path) as f:
        cfg = json.load(f)
    cfg = cfg.get("model_cfg", cfg)
    if "timm_model_name" in cfg["vision_cfg"]:
        # timm towers: clipkd's timm_model_kwargs and the MobileNetV3 head width, as the fixtures
        from make_timm_fixtures import build as build_timm
        return build_timm(cfg, 0)
    kwargs = {k: v for k, v in cfg.items() if k not in ("vision_cfg", "text_cfg", "embed_dim")}
    return CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], **kwargs)


@torch.no_grad()
def masked_image_features(visual, images, keep):
    x = visual.conv1(images)
    n, w = x.shape[0], x.shape[1]
    x = x.reshape(n, w, -1).permute(0, 2, 1)
    x = x + visual.positional_embedding[1:].to(x.dtype)
    x = torch.gather(x, 1, keep[..., None].expand(-1, -1, w))
    cls = (visual.class_embedding + visual.positional_embedding[0]).to(x.dtype)
    x = torch.cat([cls.expand(n, 1, w), x], dim=1)
    x = visual.ln_pre(x)
    x = visual.transformer(x)
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--config", required=True, help="open_clip model-config JSON or model name")
    parser.add_argument("--io")
    parser.add_argument("--rust-io")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args()

    model = build(args.config).eval()
    sd = load_file(args.file)
    model.load_state_dict(sd, strict=True)  # raises on any missing/unexpected key or shape
    print(f"strict load OK: {len(sd)} tensors, open_clip {open_clip.__version__}, torch {torch.__version__}")
    bad = [k for k, v in sd.items()
           if v.dtype != (torch.int64 if k.endswith("num_batches_tracked") else torch.float32)]
    if bad:
        print(f"unexpected dtypes: {[(k, str(sd[k].dtype)) for k in bad]}")
        return 1

    worst = 0.0
    if args.io:
        io = load_file(args.io)
        with torch.no_grad():
            ours = {
                "image_features": model.encode_image(io["pixels"]),
                "text_features": model.encode_text(io["tokens"]),
            }
            if "keep" in io and hasattr(model.visual, "class_embedding"):
                ours["masked_image_features"] = masked_image_features(model.visual, io["pixels"], io["keep"])
        references = {} if args.no_reference else io
        for other_name, other in [("reference", references), ("rust", load_file(args.rust_io) if args.rust_io else {})]:
            for key, value in ours.items():
                if key in other:
                    diff = float((value - other[key]).abs().max())
                    worst = max(worst, diff)
                    print(f"open_clip(exported) vs {other_name}: {key}: max abs diff {diff:.3e}")
    if worst > args.tol:
        print(f"FAILED: max abs diff {worst:.3e} > {args.tol:.1e}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
