#!/usr/bin/env python3
"""PyTorch reference for `clipkd bench`: the CLIP-KD training step with open_clip models.

Measures, on one device, the same three workloads as the Rust bench:
  kd       teacher forward (no grad) + student forward/backward with task + CRD + ICL + FD, AdamW
  teacher  teacher forward alone (no grad)
  student  student step alone (task loss only, AdamW)
for each precision asked for:
  amp-bf16 autocast to bf16 with f32 weights (CLIP-KD's recipe uses autocast)
  bf16     weights and activations in bf16 (what Burn's `Cuda<bf16>` does)
  tf32     f32 weights, TF32 matmuls
  f32      strict f32 (TF32 off)
and prints one JSON object per line: time to the first step (from the start of the first call,
model creation excluded), steady-state images/s (median over timed steps), peak memory
(torch.cuda.max_memory_reserved and max_memory_allocated), and the step's FLOPs as counted by
torch.utils.flop_counter on a small batch and scaled to the full batch (FLOPs are linear in N).

Loss math follows CLIP-KD (winycg/CLIP-KD, src/training/train.py + src/open_clip/loss.py) and
`../shared/reference/clip-kd.md`: task = CLIP InfoNCE; CRD = KL(softmax(T) || softmax(S)) both ways;
FD = MSE(normalize(P s), t) per modality (P: Linear(D_s -> D_t) when dims differ);
ICL = CE(c * s_img t_txt^T) + CE(c * s_txt t_img^T), halves; recipe: task + CRD + ICL + 2000 FD.

Requirements: torch with CUDA (or CPU for a smoke test), open_clip_torch 3.3.0.
Example: python3 tools/bench_torch_kd.py --device cuda --precisions amp-bf16,bf16,tf32
Smoke test on a CPU: python3 tools/bench_torch_kd.py --device cpu --teacher tiny-teacher --student tiny-student ...
CPU comparison with `cargo bench -p clipkd-train --bench train_step` (its default shapes):
  python3 tools/bench_torch_kd.py --device cpu --threads 2 --teacher ViT-B-16 --student ViT-T-16 \
      --image-size 64 --batch 32 --modes student,kd --precisions f32 --warmup 1 --steps 5 --no-flops
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import open_clip

TINY_CONFIGS = {
    # Small configs for a CPU smoke test of this script (not used for figures).
    "tiny-teacher": dict(embed_dim=64, vision_cfg=dict(image_size=32, layers=2, width=96, patch_size=8),
                         text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)),
    "tiny-student": dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8),
                         text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)),
}


# Model configs clipkd bundles that open_clip 3.3.0 does not (CLIP-KD's ViT-T-16).
CLIPKD_PRESETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "clipkd-models", "src", "presets")


def create(name, device, image_size=None):
    """An open_clip model by config name (open_clip's, a clipkd-bundled one, or a tiny one),
    randomly initialised; `image_size` overrides the config's (as `clipkd bench` and the CPU
    train_step bench do)."""
    # Parameters are created on the device directly (random init of ViT-L on the CPU is slow).
    with torch.device(device):
        if name in TINY_CONFIGS:
            cfg = json.loads(json.dumps(TINY_CONFIGS[name]))
        elif name not in open_clip.list_models() and os.path.isfile(os.path.join(CLIPKD_PRESETS, name + ".json")):
            with open(os.path.join(CLIPKD_PRESETS, name + ".json")) as f:
                cfg = json.load(f)
        else:
            return open_clip.create_model(name, pretrained=None, force_image_size=image_size)
        if image_size is not None:
            cfg["vision_cfg"]["image_size"] = image_size
        quick_gelu = cfg.pop("quick_gelu", False)
        cfg = {k: v for k, v in cfg.items() if k in ("embed_dim", "vision_cfg", "text_cfg")}
        return open_clip.model.CLIP(**cfg, quick_gelu=quick_gelu)


class KdLoss(torch.nn.Module):
    """task + CRD + ICL + FD (weights 1, 1, 1, 2000) as CLIP-KD computes them."""

    def __init__(self, d_s, d_t, fd_weight=2000.0):
        super().__init__()
        self.proj_img = torch.nn.Linear(d_s, d_t) if d_s != d_t else torch.nn.Identity()
        self.proj_txt = torch.nn.Linear(d_s, d_t) if d_s != d_t else torch.nn.Identity()
        self.icl_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # used raw, as released
        self.fd_weight = fd_weight

    def forward(self, s_img, s_txt, s_scale, t_img, t_txt, t_scale):
        n = s_img.shape[0]
        y = torch.arange(n, device=s_img.device)
        ui, ut = F.normalize(s_img, dim=-1), F.normalize(s_txt, dim=-1)
        logits = s_scale.exp() * ui @ ut.T
        task = 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))
        t_logits = t_scale.exp() * t_img @ t_txt.T
        crd = 0.5 * (
            F.kl_div(F.log_softmax(logits, 1), F.softmax(t_logits, 1), reduction="batchmean")
            + F.kl_div(F.log_softmax(logits.T, 1), F.softmax(t_logits.T, 1), reduction="batchmean")
        )
        pi = F.normalize(self.proj_img(s_img), dim=-1)
        pt = F.normalize(self.proj_txt(s_txt), dim=-1)
        fd = F.mse_loss(pi, t_img) + F.mse_loss(pt, t_txt)
        icl = 0.5 * (
            F.cross_entropy(self.icl_scale * pi @ t_txt.T, y)
            + F.cross_entropy(self.icl_scale * pt @ t_img.T, y)
        )
        return task + crd + icl + self.fd_weight * fd


def param_groups(model, extra, is_vit=True):
    """CLIP-KD's AdamW groups: no weight decay for ndim < 2, bn/ln/bias/logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [dict(params=no_decay, weight_decay=0.0), dict(params=decay, weight_decay=0.1)]
    if extra is not None:
        groups.append(dict(params=list(extra.parameters()), weight_decay=0.01))
    betas, eps = ((0.9, 0.98), 1e-6) if is_vit else ((0.9, 0.999), 1e-8)
    return groups, betas, eps


def synthetic_batch(n, image_size, context, vocab, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.randn(n, 3, image_size, image_size, generator=g)
    tokens = torch.randint(1, vocab - 2, (n, context), generator=g)
    lengths = torch.randint(5, context, (n,), generator=g)
    for i, length in enumerate(lengths.tolist()):
        tokens[i, 0] = vocab - 2  # <start_of_text>
        tokens[i, length] = vocab - 1  # <end_of_text>: the argmax, where the text tower pools
        tokens[i, length + 1:] = 0
    return images.to(device), tokens.to(device)


def make_step(mode, teacher, student, loss, opt, precision, device):
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "amp-bf16")

    def kd(images, tokens):
        with autocast:
            with torch.no_grad():
                t_img = F.normalize(teacher.encode_image(images), dim=-1)
                t_txt = F.normalize(teacher.encode_text(tokens), dim=-1)
            s_img = student.encode_image(images)
            s_txt = student.encode_text(tokens)
            total = loss(s_img, s_txt, student.logit_scale, t_img, t_txt, teacher.logit_scale)
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            student.logit_scale.clamp_(0, math.log(100))
        return total

    def teacher_only(images, tokens):
        with autocast, torch.no_grad():
            t_img = teacher.encode_image(images)
            t_txt = teacher.encode_text(tokens)
        return t_img.sum() + t_txt.sum()

    def student_only(images, tokens):
        with autocast:
            s_img = F.normalize(student.encode_image(images), dim=-1)
            s_txt = F.normalize(student.encode_text(tokens), dim=-1)
            logits = student.logit_scale.exp() * s_img @ s_txt.T
            y = torch.arange(logits.shape[0], device=logits.device)
            total = 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            student.logit_scale.clamp_(0, math.log(100))
        return total

    return {"kd": kd, "teacher": teacher_only, "student": student_only}[mode]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def count_flops(step, images, tokens, n_full):
    from torch.utils.flop_counter import FlopCounterMode

    n = images.shape[0]
    with FlopCounterMode(display=False) as counter:
        step(images, tokens)
    return counter.get_total_flops() * n_full / n


def run(args, mode, precision, device):
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    teacher = student = loss = opt = None
    if mode in ("kd", "teacher"):
        teacher = create(args.teacher, device, args.image_size).to(device=device, dtype=dtype).eval()
        teacher.requires_grad_(False)
    if mode in ("kd", "student"):
        student = create(args.student, device, args.image_size).to(device=device, dtype=dtype).train()
    if mode == "kd":
        d_s = student.text_projection.shape[1]
        d_t = teacher.text_projection.shape[1]
        loss = KdLoss(d_s, d_t).to(device=device, dtype=dtype)
    if student is not None:
        groups, betas, eps = param_groups(student, loss)
        opt = torch.optim.AdamW(groups, lr=1e-4, betas=betas, eps=eps)
    model = student if student is not None else teacher
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    context = model.context_length
    vocab = model.vocab_size
    images, tokens = synthetic_batch(args.batch, image_size, context, vocab, device)
    images = images.to(dtype)
    step = make_step(mode, teacher, student, loss, opt, precision, device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    step(images, tokens)
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(args.warmup):
        step(images, tokens)
    sync(device)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step(images, tokens)
        sync(device)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    result = dict(
        system="pytorch",
        torch=torch.__version__,
        open_clip=open_clip.__version__,
        device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        mode=mode,
        precision=precision,
        teacher=args.teacher if teacher is not None else None,
        student=args.student if student is not None else None,
        batch=args.batch,
        first_step_s=round(first, 4),
        median_step_s=round(median, 5),
        images_per_s=round(args.batch / median, 1),
        steps_timed=args.steps,
    )
    if device.type == "cuda":
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
        result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    if args.flops:
        small = max(2, min(8, args.batch))
        flops = count_flops(step, images[:small], tokens[:small], args.batch)
        result["step_tflop"] = round(flops / 1e12, 6)
        result["achieved_tflops"] = round(flops / median / 1e12, 1)
    del teacher, student, loss, opt, images, tokens, step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--teacher", default="ViT-L-14")
    parser.add_argument("--student", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=None,
                        help="override both models' image size (default: the configs')")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--modes", default="kd,teacher,student")
    parser.add_argument("--precisions", default="amp-bf16,bf16,tf32,f32")
    parser.add_argument("--no-flops", dest="flops", action="store_false")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for precision in args.precisions.split(","):
        for mode in args.modes.split(","):
            try:
                print(json.dumps(run(args, mode, precision, device)), flush=True)
            except Exception as e:  # keep going: one failing config must not hide the others
                print(json.dumps(dict(system="pytorch", mode=mode, precision=precision, error=repr(e))), flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
