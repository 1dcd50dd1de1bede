#!/usr/bin/env python3
"""Reference values and gradients for every clipkd-losses loss, computed in PyTorch.

The math follows CLIP-KD's released code (winycg/CLIP-KD, `src/open_clip/loss.py`:
`KDClipLoss`, `get_grad`, `DistillKL`) and open_clip 3.3.0's `DistillClipLoss`, with the fixes
clipkd documents (see docs/losses.md):
  * the original runs only with world size > 1 (at world size 1 `normalized_image_features` is
    undefined); here the single-process global batch is used, which is what the multi-process code
    computes with `local_loss=False`;
  * AFD projects the student first, then fuses with Linear(2*D_t -> D_t) (the original's
    Linear(D_s + D_t -> D_s) only runs when D_s == D_t, where both are the same shape);
  * MFD is FD on a really masked student view (a separate input here);
  * GD also has a `multiply` mode (logits = s * p k^T, the CLIP logits), checked against
    autograd of the CLIP loss itself, besides the released `divide` mode (logits = p k^T / s);
  * the CRD temperature option, the cosine FD option and the `exp` scale mode are clipkd options.

Every loss is computed in float64 from float32 inputs; values and gradients with respect to
every input (student embeddings, masked view, the student's log logit scale) and every learnable
parameter (projectors, ICL / AFD / cross-KD scales) are stored as float32 in
`crates/clipkd-losses/tests/fixtures/losses/<case>.safetensors`, with `meta.json` describing the cases.

Cases: `diff` (N=8, D_s=12, D_t=16: projectors present) and `same` (N=8, D_s=D_t=16: no
projector, AFD exactly as released).

Run: /work/venv/bin/python tools/make_loss_fixtures.py   (deterministic: fixed seeds)
"""

import json
import math
import os

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import DistillClipLoss
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "clipkd-losses", "tests", "fixtures", "losses")
DT = torch.float64


# ---- verbatim from CLIP-KD (src/open_clip/loss.py) -------------------------------------------
def get_grad(p, k, tau, targets):
    logits = p @ k.T / tau
    targets = F.one_hot(targets, num_classes=logits.size(1)).float()
    prob = F.softmax(logits, 1)
    grad_p = (prob - targets) @ k / tau / targets.size(0)
    embed_size = p.size(1)
    prob_targets_repeat = (prob - targets).t().repeat(1, embed_size).view(-1, embed_size, p.size(0))
    grad_k = (prob_targets_repeat * (p.t() / tau).unsqueeze(0)).sum(-1) / targets.size(0)

    return grad_p, grad_k


class DistillKL(torch.nn.Module):
    """Distilling the Knowledge in a Neural Network"""

    def __init__(self, T):
        super(DistillKL, self).__init__()
        self.T = T

    def forward(self, y_s, y_t):
        p_s = F.log_softmax(y_s / self.T, dim=1)
        p_t = F.softmax(y_t / self.T, dim=1)
        loss = F.kl_div(p_s, p_t, reduction="batchmean") * (self.T**2)
        return loss
# -----------------------------------------------------------------------------------------------


def get_grad_f64(p, k, tau, targets):
    """`get_grad` with the one-hot in float64 (the original's `.float()` would downcast)."""
    logits = p @ k.T / tau
    onehot = F.one_hot(targets, num_classes=logits.size(1)).to(p.dtype)
    prob = F.softmax(logits, 1)
    grad_p = (prob - onehot) @ k / tau / onehot.size(0)
    embed_size = p.size(1)
    rep = (prob - onehot).t().repeat(1, embed_size).view(-1, embed_size, p.size(0))
    grad_k = (rep * (p.t() / tau).unsqueeze(0)).sum(-1) / onehot.size(0)
    return grad_p, grad_k


def clip_grad_autograd(p, k, scale, labels):
    """Gradient of CE(scale * p k^T, y) (mean over rows) w.r.t. p and k, by autograd.

    This is what GD's `multiply` mode must equal: (P - Y) k * s / N and (P - Y)^T p * s / N.
    """
    logits = scale * p @ k.T
    loss = F.cross_entropy(logits, labels)
    gp, gk = torch.autograd.grad(loss, (p, k), create_graph=True)
    return gp, gk


def f32(shape, gen, scale=1.0):
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).to(DT)


def linear_init(out_dim, in_dim, gen):
    bound = 1.0 / math.sqrt(in_dim)
    w = (torch.rand(out_dim, in_dim, generator=gen, dtype=torch.float32) * 2 - 1) * bound
    b = (torch.rand(out_dim, generator=gen, dtype=torch.float32) * 2 - 1) * bound
    return w.to(DT), b.to(DT)


def make_case(n, ds, dt, seed):
    gen = torch.Generator().manual_seed(seed)
    t_img = f32((n, dt), gen)
    t_txt = t_img + f32((n, dt), gen, 1.2)  # paired: image i is closest to text i
    # the student is a noisy, differently sized view of the teacher
    mix = f32((dt, ds), gen, 1.0 / math.sqrt(dt))
    s_img = (t_img @ mix) * 3.0 + f32((n, ds), gen, 0.7)
    s_txt = (t_txt @ mix) * 3.0 + f32((n, ds), gen, 0.7)
    s_img_masked = s_img + f32((n, ds), gen, 1.0)
    tensors = {
        "input.s_img": s_img,
        "input.s_txt": s_txt,
        "input.s_img_masked": s_img_masked,
        "input.s_log_scale": torch.tensor([2.5], dtype=torch.float32).to(DT),
        "input.t_img": t_img,
        "input.t_txt": t_txt,
        "input.t_log_scale": torch.tensor([3.0], dtype=torch.float32).to(DT),
    }
    if ds != dt:
        for name in ("proj_img", "proj_txt"):
            w, b = linear_init(dt, ds, gen)
            tensors[f"param.{name}.weight"] = w
            tensors[f"param.{name}.bias"] = b
    for name in ("afd.img", "afd.txt"):
        w, b = linear_init(dt, 2 * dt, gen)
        tensors[f"param.{name}.weight"] = w
        tensors[f"param.{name}.bias"] = b
    tensors["param.icl.scale"] = torch.tensor([2.4], dtype=torch.float32).to(DT)
    tensors["param.icl_exp.scale"] = torch.tensor([2.1], dtype=torch.float32).to(DT)
    tensors["param.afd.scale"] = torch.tensor([2.7], dtype=torch.float32).to(DT)
    tensors["param.afd_exp.scale"] = torch.tensor([1.9], dtype=torch.float32).to(DT)
    tensors["param.cross_kd.scale"] = torch.tensor([2.2], dtype=torch.float32).to(DT)
    return tensors


def leaves(tensors):
    return {k: v.clone().requires_grad_(True) for k, v in tensors.items()}


def forward_all(x, ds, dt):
    """All loss terms from the leaf dict `x` (float64). Returns name -> scalar tensor."""
    n = x["input.s_img"].shape[0]
    labels = torch.arange(n)
    logit_scale = x["input.s_log_scale"][0].exp()  # what the student model's forward returns
    t_logit_scale = x["input.t_log_scale"][0].exp().detach()
    # teacher: normalized and detached (the teacher model's forward normalizes, under no_grad)
    t_img = F.normalize(x["input.t_img"], dim=1).detach()
    t_txt = F.normalize(x["input.t_txt"], dim=1).detach()

    image_features, text_features = x["input.s_img"], x["input.s_txt"]
    # --- KDClipLoss.forward, world_size > 1 branch with local_loss=False (global batch) ---
    all_image_features, all_text_features = image_features, text_features
    t_all_image_features, t_all_text_features = t_img, t_txt
    t_logits_per_image = t_logit_scale * t_all_image_features @ t_all_text_features.T
    t_logits_per_text = t_logits_per_image.T
    normalized_all_image_features = F.normalize(all_image_features, dim=1)
    normalized_all_text_features = F.normalize(all_text_features, dim=1)
    logits_per_image = logit_scale * normalized_all_image_features @ normalized_all_text_features.T
    logits_per_text = logits_per_image.T

    def project(feat, name):
        if ds != dt:
            return F.linear(feat, x[f"param.{name}.weight"], x[f"param.{name}.bias"])
        return feat

    all_image_features = project(all_image_features, "proj_img")
    all_text_features = project(all_text_features, "proj_txt")
    normalized_all_image_features = F.normalize(all_image_features, dim=1)
    normalized_all_text_features = F.normalize(all_text_features, dim=1)

    out = {}
    kl = DistillKL(T=1)
    out["task"] = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    out["crd"] = (kl(logits_per_image, t_logits_per_image.detach()) + kl(logits_per_text, t_logits_per_text.detach())) / 2
    kl2 = DistillKL(T=2.0)
    out["crd_t2"] = (kl2(logits_per_image, t_logits_per_image) + kl2(logits_per_text, t_logits_per_text)) / 2
    out["fd"] = F.mse_loss(normalized_all_image_features, t_all_image_features) + F.mse_loss(
        normalized_all_text_features, t_all_text_features
    )
    out["fd_cos"] = (1 - F.cosine_similarity(normalized_all_image_features, t_img, dim=1)).mean() + (
        1 - F.cosine_similarity(normalized_all_text_features, t_txt, dim=1)
    ).mean()
    masked = F.normalize(project(x["input.s_img_masked"], "proj_img"), dim=1)
    out["mfd"] = F.mse_loss(masked, t_img) + F.mse_loss(normalized_all_text_features, t_txt)
    out["mfd_image_only"] = F.mse_loss(masked, t_img)

    def icl(scale):
        li = scale * normalized_all_image_features @ t_all_text_features.T
        lt = scale * normalized_all_text_features @ t_all_image_features.T
        return li, lt, (F.cross_entropy(li, labels) + F.cross_entropy(lt, labels)) / 2

    _, _, out["icl"] = icl(x["param.icl.scale"][0])
    _, _, out["icl_exp"] = icl(x["param.icl_exp.scale"][0].exp())
    li, lt, _ = icl(x["param.cross_kd.scale"][0])
    out["cross_kd"] = (kl(li, t_logits_per_image.detach()) + kl(lt, t_logits_per_text.detach())) / 2

    # GD as released: tau = the exponentiated scale, used as a divisor
    with torch.no_grad():
        t_grad_p_img, t_grad_k_txt = get_grad_f64(t_all_image_features, t_all_text_features, t_logit_scale, labels)
        t_grad_p_txt, t_grad_k_img = get_grad_f64(t_all_text_features, t_all_image_features, t_logit_scale, labels)
    s_grad_p_img, s_grad_k_txt = get_grad_f64(normalized_all_image_features, normalized_all_text_features, logit_scale, labels)
    s_grad_p_txt, s_grad_k_img = get_grad_f64(normalized_all_text_features, normalized_all_image_features, logit_scale, labels)
    out["gd"] = (
        F.mse_loss(s_grad_p_img, t_grad_p_img)
        + F.mse_loss(s_grad_k_txt, t_grad_k_txt)
        + F.mse_loss(s_grad_p_txt, t_grad_p_txt)
        + F.mse_loss(s_grad_k_img, t_grad_k_img)
    )
    # GD, multiply mode: the true gradient of the CLIP loss, checked by autograd
    ti = t_img.clone().requires_grad_(True)
    tt = t_txt.clone().requires_grad_(True)
    with torch.enable_grad():
        tgp_i, tgk_t = clip_grad_autograd(ti, tt, t_logit_scale, labels)
        tgp_t, tgk_i = clip_grad_autograd(tt, ti, t_logit_scale, labels)
    tgp_i, tgk_t, tgp_t, tgk_i = (g.detach() for g in (tgp_i, tgk_t, tgp_t, tgk_i))
    sgp_i, sgk_t = clip_grad_autograd(normalized_all_image_features, normalized_all_text_features, logit_scale, labels)
    sgp_t, sgk_i = clip_grad_autograd(normalized_all_text_features, normalized_all_image_features, logit_scale, labels)
    out["gd_mul"] = (
        F.mse_loss(sgp_i, tgp_i) + F.mse_loss(sgk_t, tgk_t) + F.mse_loss(sgp_t, tgp_t) + F.mse_loss(sgk_i, tgk_i)
    )

    def afd(scale):
        img_fusion_feat = torch.cat([normalized_all_image_features, t_all_image_features], dim=1)
        txt_fusion_feat = torch.cat([normalized_all_text_features, t_all_text_features], dim=1)
        img_fusion_feat = F.linear(img_fusion_feat, x["param.afd.img.weight"], x["param.afd.img.bias"])
        txt_fusion_feat = F.linear(txt_fusion_feat, x["param.afd.txt.weight"], x["param.afd.txt.bias"])
        img_fusion_feat = F.normalize(img_fusion_feat, dim=1)
        txt_fusion_feat = F.normalize(txt_fusion_feat, dim=1)
        logits_per_fusion_image = scale * img_fusion_feat @ txt_fusion_feat.T
        logits_per_fusion_text = logits_per_fusion_image.T
        return (F.cross_entropy(logits_per_fusion_image, labels) + F.cross_entropy(logits_per_fusion_text, labels)) / 2

    out["afd"] = afd(x["param.afd.scale"][0])
    out["afd_exp"] = afd(x["param.afd_exp.scale"][0].exp())

    # open_clip 3.3.0 DistillClipLoss on the normalized student / teacher features
    ocl = DistillClipLoss()
    contrastive, distill = ocl(
        F.normalize(x["input.s_img"], dim=1),
        F.normalize(x["input.s_txt"], dim=1),
        logit_scale,
        t_img,
        t_txt,
        t_logit_scale,
    )
    out["distill"] = distill
    out["distill_contrastive"] = contrastive  # equals task: checked below

    out["recipe"] = out["task"] + 1.0 * out["crd"] + 1.0 * out["icl"] + 2000.0 * out["fd"]
    return out


def main():
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    meta = {
        "source": "tools/make_loss_fixtures.py",
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "precision": "computed in float64 from float32 inputs, stored as float32",
        "layout": "Linear weights in PyTorch layout [out, in]; scalars have shape [1]",
        "cases": {},
    }
    for case, (n, ds, dt, seed) in {"diff": (8, 12, 16, 0), "same": (8, 16, 16, 1)}.items():
        base = make_case(n, ds, dt, seed)
        x = leaves(base)
        names = list(forward_all(x, ds, dt).keys())
        store = {k: v.to(torch.float32).contiguous() for k, v in base.items()}
        losses = {}
        for name in names:
            x = leaves(base)
            value = forward_all(x, ds, dt)[name]
            assert torch.isfinite(value), name
            keys = [k for k in x if not k.startswith("input.t_")]
            grads = torch.autograd.grad(value, [x[k] for k in keys], allow_unused=True)
            stored = []
            for k, g in zip(keys, grads):
                if g is None:
                    continue
                store[f"loss.{name}.grad.{k}"] = g.to(torch.float32).contiguous()
                stored.append(k)
            store[f"loss.{name}.value"] = value.detach().reshape(1).to(torch.float32)
            losses[name] = {"value": value.item(), "grads": stored}
        assert abs(losses["task"]["value"] - losses["distill_contrastive"]["value"]) < 1e-12
        save_file(store, os.path.join(OUT, f"{case}.safetensors"))
        meta["cases"][case] = {"n": n, "student_dim": ds, "teacher_dim": dt, "seed": seed, "losses": losses}
        print(case, {k: round(v["value"], 6) for k, v in losses.items()})
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
