#!/usr/bin/env python3
"""End-to-end fixtures: raw image files -> open_clip preprocessing -> image embeddings.

For every real image under tests/fixtures/images/src (various formats, sizes and modes), and two
small random open_clip models, writes open_clip 3.3.0's normalized image embeddings computed from
the FILE (PIL decode, open_clip's eval transform, model in float64), so that the Rust test
`crates/clipkd-train/tests/pipeline_parity.rs` can check clipkd's whole path (decode, resize,
crop, normalize, encode) against open_clip's.

Models:
  vit_gelu  tests/fixtures/models/vit_gelu.{json,safetensors} (32 px, from make_model_fixtures.py)
  vit_224   written here: a random ViT at 224 px, patch 32 (every parameter perturbed), so that the
            real 224-pixel eval transform is exercised

Output: tests/fixtures/pipeline/{vit_224.json, vit_224.safetensors, embeddings.safetensors,
meta.json}. Deterministic (fixed seeds).
Run: /work/venv/bin/python tools/make_pipeline_fixtures.py
"""

import json
import os

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transform import image_transform
from PIL import Image
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
IMAGES = os.path.join(ROOT, "tests", "fixtures", "images", "src")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "pipeline")

VIT_224 = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def load_model(config, weights):
    model = CLIP(**config)
    model.load_state_dict(weights, strict=True)
    return model.double().eval()


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    vit_224 = CLIP(**VIT_224)
    with torch.no_grad():
        for p in vit_224.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sd = {k: v.contiguous() for k, v in vit_224.state_dict().items()}
    save_file(sd, os.path.join(OUT, "vit_224.safetensors"))
    with open(os.path.join(OUT, "vit_224.json"), "w") as f:
        json.dump(VIT_224, f, indent=4)

    with open(os.path.join(MODELS, "vit_gelu.json")) as f:
        gelu_cfg = json.load(f)
    models = {
        "vit_gelu": load_model(gelu_cfg, load_file(os.path.join(MODELS, "vit_gelu.safetensors"))),
        "vit_224": load_model(VIT_224, sd),
    }
    files = sorted(os.listdir(IMAGES))
    tensors = {}
    for name, model in models.items():
        preprocess = image_transform(model.visual.image_size, is_train=False)
        rows = []
        for file in files:
            with Image.open(os.path.join(IMAGES, file)) as img:
                pixels = preprocess(img).unsqueeze(0).double()
            with torch.no_grad():
                rows.append(F.normalize(model.encode_image(pixels), dim=-1))
        tensors[name] = torch.cat(rows).float().contiguous()
    save_file(tensors, os.path.join(OUT, "embeddings.safetensors"))
    meta = {
        "open_clip": open_clip.__version__,
        "torch": torch.__version__,
        "files": files,
        "models": {
            "vit_gelu": {"config": "../models/vit_gelu.json", "weights": "../models/vit_gelu.safetensors"},
            "vit_224": {"config": "vit_224.json", "weights": "vit_224.safetensors"},
        },
        "note": "rows of embeddings.safetensors[model] follow `files`; normalized image embeddings "
                "computed in float64 from the files with open_clip's eval transform",
    }
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {len(files)} images x {len(models)} models to {OUT}")


if __name__ == "__main__":
    main()
