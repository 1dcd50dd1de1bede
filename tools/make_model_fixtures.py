#!/usr/bin/env python3
"""Parity fixtures for clipkd-models, computed with open_clip 3.3.0 (torch, CPU).

Builds small random open_clip `CLIP` models from config dicts, perturbs EVERY parameter so that
each one matters (LayerNorm / BatchNorm affine parameters, biases, embeddings, LayerScale,
logit_scale), calibrates the ModifiedResNet's BatchNorm running statistics (forward passes in
train mode on random data, then eval), and writes to `tests/fixtures/models/`:

  <case>.json              the open_clip model config (read by `ClipConfig::from_open_clip_json`)
  <case>.safetensors       the weights: `model.state_dict()` as stored by open_clip (f32,
                           int64 `num_batches_tracked`, 0-d `logit_scale`)
  <case>_io.safetensors    inputs and open_clip's outputs:
                             pixels [N,3,H,W] f32, tokens [N,C] int64 (EOT = vocab-1 at varied
                             positions), image_features / text_features (raw) and *_normalized,
                             logit_scale (0-d, log scale as stored); for ViTs also keep [N,K]
                             int64 and masked_image_features (the masked forward for those kept
                             patches)
  (fixed sin-cos positional embeddings are not perturbed: they keep open_clip's table)
  tiny*.{safetensors,pt}   one tiny ViT model saved in the formats users have: f32 safetensors
                           (reference), a torch zip .pt nested under "state_dict" with a
                           "module." prefix, a legacy (pre-1.6) .pt, an fp16 safetensors, and a
                           bf16 zip .pt with a [1]-shaped logit_scale
  state_dict_keys.json     open_clip's state-dict keys, shapes and dtypes of every fixture model
                           and of the ViT-T-16 (CLIP-KD), ViT-B-16 and RN50 presets
  meta.json                what is where

Reference outputs are computed in float64 (model.double()) and stored as float32, so they are
the exact math rounded once; the Rust side runs in float32.

Run: /work/venv/bin/python tools/make_model_fixtures.py   (deterministic: fixed seeds; every file
is byte-identical across runs except tiny_legacy.pt, whose legacy storage keys are object ids)
"""

import json
import os

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")
PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "clipkd-models",
                          "src", "presets")

VOCAB = 1000
EOT = VOCAB - 1  # the highest id, so open_clip's argmax pooling finds it
SOT = VOCAB - 2

CASES = {
    # ViT, exact GELU, ln_pre, class-token pooling, raw text projection, argmax pooling.
    "vit_gelu": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": VOCAB, "width": 32, "heads": 4, "layers": 2},
    },
    # ViT with QuickGELU, a non-square image, LayerScale, mlp_ratio 2.5, no ln_pre, average
    # pooling (LayerNorm on every token, then the mean); text with LayerScale, a biased
    # projection (nn.Linear) and eos pooling.
    "vit_quickgelu": {
        "embed_dim": 24,
        "quick_gelu": True,
        "vision_cfg": {"image_size": [32, 48], "layers": 2, "width": 32, "head_width": 8, "patch_size": 8,
                       "mlp_ratio": 2.5, "ls_init_value": 0.1, "no_ln_pre": True, "pool_type": "avg"},
        "text_cfg": {"context_length": 16, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 2,
                     "ls_init_value": 0.1, "proj_bias": True, "pool_type": "eos", "eos_id": EOT},
    },
    # ViT with fixed 2-D sin-cos positions, tanh-approximated GELU, LayerNorm eps 1e-6, average
    # pooling with ln_post after the pool; text bidirectional, last-token pooling, no projection.
    "vit_sincos": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8,
                       "pos_embed_type": "sin_cos_2d", "pool_type": "avg", "final_ln_after_pool": True,
                       "act_kwargs": {"approximate": "tanh"}, "norm_kwargs": {"eps": 1e-6}},
        "text_cfg": {"context_length": 12, "vocab_size": VOCAB, "width": 32, "heads": 4, "layers": 1,
                     "no_causal_mask": True, "pool_type": "last", "proj_type": "none",
                     "act_kwargs": {"approximate": "tanh"}, "norm_kwargs": {"eps": 1e-6}},
    },
    # ModifiedResNet (stages [1, 2, 1, 1], width 4, 4 attention-pool heads, 64 px) with calibrated
    # BatchNorm statistics.
    "rn": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 2, 1, 1], "width": 4, "head_width": 32, "patch_size": None},
        "text_cfg": {"context_length": 16, "vocab_size": VOCAB, "width": 32, "heads": 4, "layers": 1},
    },
}

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def build(cfg, seed):
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in cfg.items() if k not in ("vision_cfg", "text_cfg", "embed_dim")}
    return CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], **kwargs)


@torch.no_grad()
def perturb(model):
    """Move every parameter away from its initial value (ones, zeros, constants) so each matters."""
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue  # fixed tables (sin-cos positions) keep open_clip's values
        if name == "logit_scale":
            p.fill_(2.3)
        elif p.ndim == 1 and ("ln" in name or "bn" in name or "downsample.1" in name) and name.endswith("weight"):
            p.copy_(1.0 + 0.2 * torch.randn_like(p))
        elif name.endswith("gamma"):  # LayerScale
            p.copy_(0.5 + 0.2 * torch.randn_like(p))
        elif name.endswith("bias") or p.ndim == 1:
            p.add_(0.1 * torch.randn_like(p))
        else:
            p.add_(0.2 * p.std() * torch.randn_like(p))


@torch.no_grad()
def calibrate_batch_norm(model, image_size, seed):
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(10):
        model.encode_image(torch.randn(8, 3, image_size, image_size, generator=g))
    model.eval()


def make_tokens(n, context, vocab, eot_positions, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n, context, dtype=torch.int64)
    for i, pos in enumerate(eot_positions):
        tokens[i, 0] = vocab - 2
        if pos > 1:
            tokens[i, 1:pos] = torch.randint(1, vocab - 2, (pos - 1,), generator=g)
        tokens[i, pos] = vocab - 1
    return tokens


@torch.no_grad()
def masked_image_features(visual, images, keep):
    """open_clip's VisionTransformer forward on the kept patches only (CLIP-KD's MFD view)."""
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


def state_dict_spec(model):
    return [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]


@torch.no_grad()
def make_case(name, cfg, seed):
    model = build(cfg, seed)
    perturb(model)
    vision = cfg["vision_cfg"]
    is_vit = not isinstance(vision["layers"], list)
    size = vision["image_size"]
    h, w = (size, size) if isinstance(size, int) else size
    if not is_vit:
        calibrate_batch_norm(model, h, seed + 1)
    model.eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, f"{name}.safetensors"))
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(cfg, f, indent=4)

    g = torch.Generator().manual_seed(seed + 2)
    n = 4
    pixels = torch.randn(n, 3, h, w, generator=g)
    context = cfg["text_cfg"]["context_length"]
    tokens = make_tokens(n + 1, context, cfg["text_cfg"]["vocab_size"], [3, 7, context - 1, 1, 10], seed + 3)

    ref = build(cfg, seed)
    ref.load_state_dict(model.state_dict())
    ref = ref.double().eval()
    img = ref.encode_image(pixels.double())
    txt = ref.encode_text(tokens)
    out = {
        "pixels": pixels,
        "tokens": tokens,
        "image_features": img.float(),
        "image_features_normalized": F.normalize(img, dim=-1).float(),
        "text_features": txt.float(),
        "text_features_normalized": F.normalize(txt, dim=-1).float(),
        "logit_scale": ref.logit_scale.detach().float().clone(),
    }
    # float32 open_clip on the same inputs, for the record: how far torch's own f32 run is.
    f32_img = model.encode_image(pixels)
    f32_txt = model.encode_text(tokens)
    f32_err = {
        "image": float((f32_img.double() - img).abs().max()),
        "text": float((f32_txt.double() - txt).abs().max()),
    }
    if is_vit:
        num_patches = ref.visual.grid_size[0] * ref.visual.grid_size[1]
        k = int(num_patches * (1 - 0.75))
        keep = torch.rand(n, num_patches, generator=g).argsort(dim=1)[:, :k]
        out["keep"] = keep
        out["masked_image_features"] = masked_image_features(ref.visual, pixels.double(), keep).float()
        # Sanity: keeping every patch in order is the ordinary forward.
        everything = torch.arange(num_patches).expand(n, -1)
        assert torch.allclose(masked_image_features(ref.visual, pixels.double(), everything), img, atol=1e-10)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, f"{name}_io.safetensors"))
    return model, {
        "config": f"{name}.json",
        "weights": f"{name}.safetensors",
        "io": f"{name}_io.safetensors",
        "vit": is_vit,
        "torch_f32_max_abs_err_vs_f64": f32_err,
    }


@torch.no_grad()
def make_tiny(seed):
    model = build(TINY, seed)
    perturb(model)
    model.eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    with open(os.path.join(OUT, "tiny.json"), "w") as f:
        json.dump(TINY, f, indent=4)
    save_file(sd, os.path.join(OUT, "tiny.safetensors"))
    torch.save({"epoch": 3, "name": "tiny", "state_dict": {"module." + k: v for k, v in sd.items()}},
               os.path.join(OUT, "tiny_nested_module.pt"))
    torch.save(sd, os.path.join(OUT, "tiny_legacy.pt"), _use_new_zipfile_serialization=False)
    save_file({k: v.half() for k, v in sd.items()}, os.path.join(OUT, "tiny_fp16.safetensors"))
    bf16 = {k: v.bfloat16() for k, v in sd.items()}
    bf16["logit_scale"] = bf16["logit_scale"].reshape(1)
    torch.save(bf16, os.path.join(OUT, "tiny_bf16.pt"))
    return model


def preset_model(name):
    with open(os.path.join(PRESET_DIR, f"{name}.json")) as f:
        cfg = json.load(f)
    return build(cfg, 0)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    keys = {}
    meta = {
        "open_clip": open_clip.__version__,
        "torch": torch.__version__,
        "eot_id": EOT,
        "sot_id": SOT,
        "note": "reference outputs computed in float64 and stored as float32; keep = first "
                "int(L * 0.25) of an argsort of uniform noise per image",
        "cases": {},
    }
    for i, (name, cfg) in enumerate(CASES.items()):
        model, info = make_case(name, cfg, 100 + 10 * i)
        keys[name] = state_dict_spec(model)
        meta["cases"][name] = info
    tiny = make_tiny(7)
    keys["tiny"] = state_dict_spec(tiny)
    meta["tiny"] = {
        "config": "tiny.json",
        "reference": "tiny.safetensors",
        "variants": {
            "tiny_nested_module.pt": "torch zip, {'epoch', 'name', 'state_dict': {'module.' + key: f32}}",
            "tiny_legacy.pt": "torch legacy (_use_new_zipfile_serialization=False), bare f32 state dict",
            "tiny_fp16.safetensors": "every tensor float16",
            "tiny_bf16.pt": "torch zip, every tensor bfloat16, logit_scale shape [1]",
        },
    }
    for name in ["ViT-T-16", "ViT-B-16", "RN50"]:
        keys["preset:" + name] = state_dict_spec(preset_model(name))
    with open(os.path.join(OUT, "state_dict_keys.json"), "w") as f:
        json.dump(keys, f, indent=1)
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    total = sum(os.path.getsize(os.path.join(OUT, p)) for p in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total / 1e6:.2f} MB, to {os.path.normpath(OUT)}")
    for name, info in meta["cases"].items():
        print(name, "torch f32 vs f64 max abs err:", info["torch_f32_max_abs_err_vs_f64"])


if __name__ == "__main__":
    main()
