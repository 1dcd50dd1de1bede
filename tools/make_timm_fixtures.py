#!/usr/bin/env python3
"""Parity fixtures for clipkd's timm vision towers, computed with open_clip 3.3.0 + timm (torch, CPU).

open_clip builds a timm tower as `TimmModel`: `timm.create_model(timm_model_name)`, its
classifier removed (`reset_classifier(0)`, the trunk's global pooling kept for `timm_pool: ""`),
then `head.proj` (or `head.mlp`). The fixture models are small variants of the real trunks:
their architecture keyword arguments (`timm_model_kwargs`, clipkd's config field) are passed to
`timm.create_model` here by wrapping it while open_clip builds the model, which is exactly what
`timm.create_model(name, **kwargs)` builds.

For every case, EVERY parameter is perturbed (BatchNorm weights 1 + 0.2 N(0,1), biases + 0.1
N(0,1), weights + 0.2 std N(0,1)) and the BatchNorm running statistics are calibrated (train-mode
forwards on random images), then written to `tests/fixtures/timm/`:

  <case>.json             the open_clip model config (+ `timm_model_kwargs`)
  <case>.safetensors      the weights: `model.state_dict()` (f32, int64 `num_batches_tracked`)
  <case>_io.safetensors   pixels [N,3,H,W] f32;
                          image_features_eval: the eval-mode embeddings (running statistics);
                          image_features_train: the train-mode embeddings (batch statistics);
                          grad_weights [N, embed_dim] f32 and grad.<key> for every visual
                          parameter: the gradient of sum(image_features_train * grad_weights);
                          after_train.<key>: every BatchNorm running statistic after that one
                          train-mode forward (PyTorch's update: momentum 0.1, unbiased variance)
  swin_small_legacy.safetensors  swin_small's weights in the key layout of timm < 0.9
  mobilenetv3_small_clip_kd.pt   mobilenetv3_small's weights as CLIP-KD saves a checkpoint
  meta.json               versions, what is where, and per case the relative L2 error of
                          PyTorch's own float32 gradients against the float64 reference
  state_dict_keys.json    the state-dict keys, shapes and dtypes of every case, of CLIP-KD's
                          full-size timm configs (presets), and the visual keys of every other
                          timm model name clipkd builds (`named:<name>`)

References are computed in float64 (model.double()) and stored as float32.

Run: /work/venv/bin/python tools/make_timm_fixtures.py   (deterministic: fixed seeds)
"""

import contextlib
import json
import os
import re

import open_clip
import timm
import timm.models.efficientnet
import timm.models.mobilenetv3
import torch
from open_clip.model import CLIP
from safetensors.torch import save_file

from make_model_fixtures import calibrate_batch_norm, state_dict_spec  # same helpers as the CLIP fixtures

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "timm")
PRESET_DIR = os.path.join(ROOT, "crates", "clipkd-models", "src", "presets")

TEXT = {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}

CASES = {
    # ResNet-18's BasicBlock, CLIP-KD's head settings (trunk pooling, linear projection without
    # bias), stages [1, 2, 1, 1] so that a stage has a block without a shortcut.
    "resnet_basic": {
        "embed_dim": 16,
        "vision_cfg": {"timm_model_name": "resnet18", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 64,
                       "timm_model_kwargs": {"layers": [1, 2, 1, 1], "channels": [8, 16, 24, 32]}},
        "text_cfg": TEXT,
    },
    # ResNet-50's Bottleneck, an image side that is not a multiple of 32 (48 px: 3x3 then 2x2
    # maps), max pooling and the MLP head with a biased last layer.
    "resnet_bottleneck": {
        "embed_dim": 12,
        "vision_cfg": {"timm_model_name": "resnet50", "timm_model_pretrained": False, "timm_pool": "max",
                       "timm_proj": "mlp", "timm_proj_bias": True, "image_size": 48,
                       "timm_model_kwargs": {"layers": [1, 1, 2, 1], "channels": [4, 8, 12, 16]}},
        "text_cfg": TEXT,
    },
    # EfficientNet-B0's layout at an eighth of its widths and half its depth (stages of 1 and 2
    # blocks: with and without skips), SiLU, sigmoid-gated SE, head conv + BN before the pool.
    "efficientnet_small": {
        "embed_dim": 16,
        "vision_cfg": {"timm_model_name": "efficientnet_b0", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 64,
                       "timm_model_kwargs": {"channel_multiplier": 0.125, "depth_multiplier": 0.5}},
        "text_cfg": TEXT,
    },
    # MobileNetV3-Small at an eighth of its widths (16-channel stem kept), every block: ReLU and
    # hard-swish blocks, hard-sigmoid SE, pooling then the 1024-wide head conv with bias.
    "mobilenetv3_small": {
        "embed_dim": 16,
        "vision_cfg": {"timm_model_name": "mobilenetv3_small_100", "timm_model_pretrained": False,
                       "timm_pool": "", "timm_proj": "linear", "image_size": 64,
                       "timm_model_kwargs": {"channel_multiplier": 0.125}},
        "text_cfg": TEXT,
    },
    # Swin-T's layout, small: a 10x10 patch grid with 4x4 windows (shifted blocks with masks, and
    # maps padded to whole windows: 10 -> 12, 5 -> 8), patch merging of an odd map (5 -> 3), and
    # maps no larger than a window (3, 2: one window, no shift). Stochastic depth off (timm's
    # Swin default is 0.1), so that the train-mode reference is not random.
    "swin_small": {
        "embed_dim": 16,
        "vision_cfg": {"timm_model_name": "swin_tiny_patch4_window7_224", "timm_model_pretrained": False,
                       "timm_pool": "", "timm_proj": "linear", "image_size": 40, "timm_drop_path": 0.0,
                       "timm_model_kwargs": {"img_size": 40, "window_size": 4, "embed_dim": 8,
                                             "depths": [2, 2, 2, 2], "num_heads": [1, 2, 2, 4]}},
        "text_cfg": TEXT,
    },
    # MobileViT-S's layout, narrow: inverted residuals with and without a residual, MobileViT
    # blocks at 7x7 (resized to 8x8 for the 2x2 patches and back), 4x4 and 2x2 maps (56 px).
    "mobilevit_small": {
        "embed_dim": 16,
        "vision_cfg": {"timm_model_name": "mobilevit_s", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 56,
                       "timm_model_kwargs": {
                           "stem_chs": 8, "num_features": 32, "bottle_ratio": 2.0,
                           "stages": [{"d": 1, "c": 8, "s": 1}, {"d": 2, "c": 16, "s": 2},
                                      {"d": 1, "c": 16, "s": 2, "transformer_dim": 16, "transformer_depth": 2,
                                       "patch_size": 2},
                                      {"d": 1, "c": 24, "s": 2, "transformer_dim": 24, "transformer_depth": 1,
                                       "patch_size": 2},
                                      {"d": 1, "c": 24, "s": 2, "transformer_dim": 16, "transformer_depth": 1,
                                       "patch_size": 2}]}},
        "text_cfg": TEXT,
    },
}

# CLIP-KD's configs for its timm students, as shipped in clipkd's presets.
PRESETS = ["timm_resnet18", "timm-efficientnet-b0", "timm_mobilenetv3_small_100",
           "timm-swin_tiny_patch4_window7_224", "timm-mobilevit_s"]

# Every other timm model name clipkd builds: their visual state-dict keys are checked too.
NAMED = ["resnet34", "resnet50", "resnet101", "resnet152", "efficientnet_b1", "efficientnet_b2",
         "efficientnet_b3", "mobilenetv3_small_050", "mobilenetv3_small_075", "mobilenetv3_large_075",
         "mobilenetv3_large_100", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
         "mobilevit_xs", "mobilevit_xxs"]

# timm's generator functions behind the model names, which take the channel and depth
# multipliers (the registered names fix them, so `create_model(name, channel_multiplier=...)`
# cannot pass them).
GENERATORS = {
    "efficientnet_": lambda name, cm, dm, **kw: timm.models.efficientnet._gen_efficientnet(
        name, channel_multiplier=cm, depth_multiplier=dm, **kw),
    "mobilenetv3_": lambda name, cm, dm, **kw: timm.models.mobilenetv3._gen_mobilenet_v3(
        name, cm, depth_multiplier=dm, **kw),
}


def mobilevit(kwargs, **kw):
    """timm's ByobNet for a MobileViT layout given as clipkd's timm_model_kwargs (timm's own
    ByoBlockCfg names), built with the blocks `mobilevit_s` uses."""
    from timm.models.byobnet import ByobNet, ByoModelCfg, ByoBlockCfg
    stages = []
    for st in kwargs["stages"]:
        bottle = ByoBlockCfg(type="bottle", d=st["d"], c=st["c"], s=st["s"], gs=1, br=kwargs["bottle_ratio"],
                             block_kwargs=dict(bottle_in=True, linear_out=True))
        if "transformer_dim" in st:
            stages.append((bottle, ByoBlockCfg(type="mobilevit", d=1, c=st["c"], s=1, block_kwargs=dict(
                transformer_dim=st["transformer_dim"], transformer_depth=st["transformer_depth"],
                patch_size=st["patch_size"]))))
        else:
            stages.append(bottle)
    cfg = ByoModelCfg(blocks=tuple(stages), stem_chs=kwargs["stem_chs"], stem_type="3x3", stem_pool="",
                      downsample="", act_layer="silu", num_features=kwargs["num_features"])
    net = ByobNet(cfg, **kw)
    net.default_cfg = net.pretrained_cfg = {}  # what create_model would attach; open_clip reads it
    return net


@contextlib.contextmanager
def timm_kwargs(kwargs):
    """Passes `kwargs` to every `timm.create_model` call made inside (open_clip's TimmModel)."""
    original = timm.create_model

    def create(name, *args, **kw):
        if "stages" in kwargs:
            return mobilevit(kwargs, **{k: v for k, v in kw.items() if k != "pretrained"})
        multipliers = {k: kwargs[k] for k in ("channel_multiplier", "depth_multiplier") if k in kwargs}
        if multipliers:
            prefix = next(p for p in GENERATORS if name.startswith(p))
            kw.pop("pretrained", None)
            return GENERATORS[prefix](name, multipliers.get("channel_multiplier", 1.0),
                                      multipliers.get("depth_multiplier", 1.0), **kw)
        return original(name, *args, **{**kw, **kwargs})

    timm.create_model = create
    try:
        yield
    finally:
        timm.create_model = original


def build(cfg, seed):
    torch.manual_seed(seed)
    vision = dict(cfg["vision_cfg"])
    kwargs = vision.pop("timm_model_kwargs", {})
    with timm_kwargs(kwargs):
        model = CLIP(cfg["embed_dim"], vision, cfg["text_cfg"])
    # open_clip 3.3.0 sizes head.proj from timm's `num_features`; a MobileNetV3's pooled output
    # is its `head_hidden_size` (the conv_head after the pooling), so open_clip's own forward
    # fails. CLIP-KD's checkpoints (older timm) have head.proj sized from the real output: so
    # does this reference.
    if not hasattr(model.visual, "trunk"):
        return model  # not a timm tower
    trunk, head = model.visual.trunk, model.visual.head
    hidden = getattr(trunk, "head_hidden_size", trunk.num_features)
    if hasattr(head, "proj") and head.proj.in_features != hidden:
        head.proj = torch.nn.Linear(hidden, cfg["embed_dim"], bias=head.proj.bias is not None)
    return model


@torch.no_grad()
def perturb(model):
    for name, p in model.named_parameters():
        if name == "logit_scale":
            p.fill_(2.3)
        elif p.ndim == 1 and ("bn" in name or "norm" in name or "downsample.1" in name) and name.endswith("weight"):
            p.copy_(1.0 + 0.2 * torch.randn_like(p))
        elif name.endswith("bias") or p.ndim == 1:
            p.add_(0.1 * torch.randn_like(p))
        else:
            p.add_(0.2 * p.std() * torch.randn_like(p))


def make_case(name, cfg, seed):
    model = build(cfg, seed)
    perturb(model)
    size = cfg["vision_cfg"]["image_size"]
    calibrate_batch_norm(model, size, seed + 1)
    model.eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, f"{name}.safetensors"))
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(cfg, f, indent=4)

    g = torch.Generator().manual_seed(seed + 2)
    n = 4
    pixels = torch.randn(n, 3, size, size, generator=g)
    weights = torch.randn(n, cfg["embed_dim"], generator=g)

    ref = build(cfg, seed)
    ref.load_state_dict(model.state_dict())
    ref = ref.double()
    out = {"pixels": pixels, "grad_weights": weights}
    ref.eval()
    with torch.no_grad():
        out["image_features_eval"] = ref.encode_image(pixels.double()).float()
    ref.train()
    train = ref.encode_image(pixels.double())
    out["image_features_train"] = train.detach().float()
    (train * weights.double()).sum().backward()
    for key, p in ref.visual.named_parameters():
        out[f"grad.visual.{key}"] = p.grad.float()
    for key, b in ref.visual.named_buffers():
        if key.endswith("running_mean") or key.endswith("running_var"):
            out[f"after_train.visual.{key}"] = b.float()
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, f"{name}_io.safetensors"))

    # PyTorch's own float32 run of the same step, for the tolerances: a gradient that cancels
    # heavily (a convolution feeding a train-mode BatchNorm) is as far from the float64 value
    # in torch's float32 as in clipkd's.
    f32 = build(cfg, seed)
    f32.load_state_dict(model.state_dict())
    f32.train()
    (f32.encode_image(pixels) * weights).sum().backward()
    torch_f32_grad_error = {}
    for key, p in f32.visual.named_parameters():
        ref_grad = out[f"grad.visual.{key}"].double()
        torch_f32_grad_error[f"visual.{key}"] = float((p.grad.double() - ref_grad).norm() / ref_grad.norm())
    return model, {"config": f"{name}.json", "weights": f"{name}.safetensors", "io": f"{name}_io.safetensors",
                   "torch_f32_grad_relative_l2": torch_f32_grad_error}


def write_swin_legacy(name):
    """The same weights in the layout of timm < 0.9 (CLIP-KD's checkpoints): patch merging as the
    last module of the previous stage, and the persistent buffers relative_position_index and
    attn_mask (shifted blocks) that those versions saved."""
    from safetensors.torch import load_file
    sd = load_file(os.path.join(OUT, f"{name}.safetensors"))
    with open(os.path.join(OUT, f"{name}.json")) as f:
        model = build(json.load(f), 0)
    legacy = {}
    for k, v in sd.items():
        m = re.match(r"visual\.trunk\.layers\.(\d+)\.downsample\.(.*)", k)
        if m:
            k = f"visual.trunk.layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        legacy[k] = v
    for i, stage in enumerate(model.visual.trunk.layers):
        for j, block in enumerate(stage.blocks):
            prefix = f"visual.trunk.layers.{i}.blocks.{j}."
            legacy[prefix + "attn.relative_position_index"] = block.attn.relative_position_index.clone()
            if block.attn_mask is not None:
                legacy[prefix + "attn_mask"] = block.attn_mask.clone()
    save_file({k: v.contiguous() for k, v in legacy.items()}, os.path.join(OUT, f"{name}_legacy.safetensors"))


def write_clip_kd_checkpoint(name):
    """The weights in the form CLIP-KD's (open_clip's) training code saves them under DDP."""
    from safetensors.torch import load_file
    sd = load_file(os.path.join(OUT, f"{name}.safetensors"))
    torch.save({"epoch": 32, "name": name, "state_dict": {"module." + k: v for k, v in sd.items()},
                "optimizer": {"state": {}, "param_groups": []}},
               os.path.join(OUT, f"{name}_clip_kd.pt"))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    keys = {}
    meta = {"open_clip": open_clip.__version__, "timm": timm.__version__, "torch": torch.__version__,
            "note": "references computed in float64 and stored as float32", "cases": {}}
    for i, (name, cfg) in enumerate(CASES.items()):
        model, info = make_case(name, cfg, 300 + 10 * i)
        keys[name] = state_dict_spec(model)
        meta["cases"][name] = info
    write_swin_legacy("swin_small")
    write_clip_kd_checkpoint("mobilenetv3_small")
    meta["mobilenetv3_small_clip_kd.pt"] = ("mobilenetv3_small's weights as CLIP-KD's training code saves a "
                                            "checkpoint: torch zip, {'epoch', 'name', 'state_dict': "
                                            "{'module.' + key}, 'optimizer'}")
    meta["swin_small_legacy.safetensors"] = ("swin_small's weights in timm < 0.9's layout (patch merging at the end "
                                             "of the previous stage, persistent relative_position_index and attn_mask)")
    for name in PRESETS:
        with open(os.path.join(PRESET_DIR, f"{name}.json")) as f:
            keys["preset:" + name] = state_dict_spec(build(json.load(f), 0))
    for name in NAMED:
        cfg = {"embed_dim": 512, "text_cfg": TEXT,
               "vision_cfg": {"timm_model_name": name, "timm_pool": "", "timm_proj": "linear"}}
        keys["named:" + name] = [k for k in state_dict_spec(build(cfg, 0)) if k[0].startswith("visual.")]
    with open(os.path.join(OUT, "state_dict_keys.json"), "w") as f:
        json.dump(keys, f, indent=1)
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    total = sum(os.path.getsize(os.path.join(OUT, p)) for p in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total / 1e6:.2f} MB, to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
