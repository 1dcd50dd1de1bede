#!/usr/bin/env python3
"""Image fixtures for `clipkd-data`'s preprocessing parity tests.

Writes to `tests/fixtures/images/`:
  src/<name>.<ext>      real photos (scikit-image's bundled CC0 / public-domain samples), saved in
                        the formats and PIL modes that datasets contain: RGB JPEG (4:4:4, 4:2:0,
                        4:2:2 progressive), grayscale JPEG, CMYK JPEG, grayscale / RGBA / palette /
                        gray+alpha / 1-bit / 16-bit PNG, lossy WebP; landscape, portrait, odd sizes
                        and images smaller than 224.
  ref/<name>.safetensors  what open_clip 3.3.0 (torchvision on PIL) makes of each file:
      eval_224        image_transform(224, is_train=False), the default (shortest, bicubic)
      eval_64x96      image_transform((64, 96), ...): non-square, open_clip's ResizeKeepRatio path
      eval_64_bilinear, eval_64_longest, eval_64_squash   other preprocess_cfg choices (some files)
      crop_<box>      F.resized_crop(img, top, left, h, w, size, BICUBIC) + convert("RGB"): the
                      train transform's crop-then-resize step with a fixed box (some files)
      decoded         np.asarray(Image.open(f).convert("RGB")) (HWC), or a window of it
    Transform outputs are stored as the uint8 CHW image *before* ToTensor/Normalize: the script
    checks that ToTensor + Normalize(OPENAI mean/std) of it equals open_clip's float32 output bit
    for bit, so nothing is lost, and the files stay small. One float32 output is also stored
    (`normalized_64x96` in chelsea.safetensors) to check the normalization itself.
  manifest.json        per file: PIL format/mode/size, every reference key with its shape, crop box
                       or window, and the versions that produced it.

Deterministic: fixed inputs, no randomness. Run with the project venv:
    /work/venv/bin/python tools/make_image_fixtures.py
Requires: Pillow, numpy, torch, torchvision, open_clip_torch 3.3.0, safetensors, scikit-image.
"""

import io
import json
import os
import sys

import numpy as np
import open_clip
import PIL
import PIL.features
import torch
import torchvision
import torchvision.transforms.functional as TF
from open_clip.transform import image_transform
from PIL import Image
from safetensors.numpy import save_file
from torchvision.transforms import InterpolationMode

import skimage

SKIMAGE_DATA = os.path.join(os.path.dirname(skimage.__file__), "data")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "images")
SRC = os.path.join(ROOT, "src")
REF = os.path.join(ROOT, "ref")

MEAN = np.array(open_clip.OPENAI_DATASET_MEAN, dtype=np.float64)
STD = np.array(open_clip.OPENAI_DATASET_STD, dtype=np.float64)


def sk(name):
    return Image.open(os.path.join(SKIMAGE_DATA, name))


def radial_alpha(w, h):
    """Alpha from 255 (centre) through every value to 0 (corners): exercises premultiplication."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    return np.clip(np.round((1.3 - r) / 0.9 * 255), 0, 255).astype(np.uint8)


def build_sources():
    """(name, bytes) of every fixture file, deterministic."""
    out = []

    def save(name, im, **kw):
        buf = io.BytesIO()
        im.save(buf, **kw)
        out.append((name, buf.getvalue()))

    # The shipped JPEG, untouched: 640x427, 4:4:4 baseline, written by some other encoder.
    with open(os.path.join(SKIMAGE_DATA, "rocket.jpg"), "rb") as f:
        out.append(("rocket.jpg", f.read()))
    coffee = sk("coffee.png").convert("RGB")  # 600x400
    chelsea = sk("chelsea.png").convert("RGB")  # 451x300
    astronaut = sk("astronaut.png").convert("RGB")  # 512x512
    camera = sk("camera.png").convert("L")  # 512x512

    # Landscape 4:2:0 (PIL's default subsampling), odd width.
    save("coffee_420.jpg", coffee.resize((361, 241), Image.LANCZOS), format="JPEG", quality=90)
    # Portrait, 4:2:2, progressive, narrower than 224 (upsampling path).
    save(
        "chelsea_portrait_422.jpg",
        chelsea.transpose(Image.Transpose.TRANSPOSE).resize((201, 301), Image.LANCZOS),
        format="JPEG", quality=88, subsampling=1, progressive=True,
    )
    # Smaller than 224 on both sides, 4:2:0.
    save("astronaut_small.jpg", astronaut.resize((150, 121), Image.LANCZOS), format="JPEG", quality=85)
    # Grayscale JPEG (one component).
    save("camera_gray.jpg", camera.resize((257, 229), Image.LANCZOS), format="JPEG", quality=90)
    # CMYK JPEG (Adobe, inverted), as some stock photos are.
    save("coffee_cmyk.jpg", coffee.resize((300, 200), Image.LANCZOS).convert("CMYK"), format="JPEG", quality=90)

    # Grayscale PNG, odd size.
    save("camera_gray.png", camera.resize((301, 263), Image.LANCZOS), format="PNG")
    # RGBA PNG with every alpha value (premultiplied resize in PIL).
    a = astronaut.resize((240, 236), Image.LANCZOS)
    rgba = np.dstack([np.asarray(a), radial_alpha(240, 236)])
    save("astronaut_rgba.png", Image.fromarray(rgba, "RGBA"), format="PNG")
    # Gray + alpha PNG (LA).
    g = np.asarray(camera.resize((230, 250), Image.LANCZOS))
    save("camera_la.png", Image.fromarray(np.dstack([g, radial_alpha(230, 250)]), "LA"), format="PNG")
    # Palette PNG, 64 colours, with a transparent entry (tRNS): PIL resizes mode P with NEAREST.
    p = coffee.resize((333, 222), Image.LANCZOS).quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    save("coffee_palette.png", p, format="PNG", transparency=3)
    # 1-bit PNG (mode "1"), also resized with NEAREST.
    page = sk("page.png").convert("L").point(lambda v: 255 if v > 150 else 0).convert("1")
    save("page_1bit.png", page, format="PNG")
    # 16-bit grayscale PNG (mode I;16): values above 255 clip to white in convert("RGB").
    moon = np.asarray(sk("moon.png").convert("L").resize((240, 240), Image.LANCZOS)).astype(np.uint16)
    save("moon_16bit.png", Image.fromarray(moon * 2 + 3), format="PNG")
    # 16-bit RGB PNG (PIL keeps the high byte of each sample), smaller than 224.
    # Low byte = 37 * high byte mod 256: often >= 128, so rounding to 8 bits would differ.
    hi = np.asarray(chelsea.resize((160, 106), Image.LANCZOS)).astype(np.uint16)
    c16 = hi * 256 + (hi * 37) % 256
    out.append(("chelsea_16bit.png", png16_rgb(c16)))
    # Lossy WebP.
    save("chelsea.webp", chelsea.resize((339, 225), Image.LANCZOS), format="WEBP", quality=80, method=4)
    return out


def png16_rgb(arr):
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def to_u8_chw(t):
    """Invert ToTensor + Normalize exactly; assert the round trip is bit-exact."""
    t = t.numpy()
    u = np.round((t.astype(np.float64) * STD[:, None, None] + MEAN[:, None, None]) * 255.0)
    assert u.min() >= 0 and u.max() <= 255, (u.min(), u.max())
    u = u.astype(np.uint8)
    back = TF.normalize(torch.from_numpy(u).float().div(255), open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    assert torch.equal(back, torch.from_numpy(t)), "uint8 reconstruction is not exact"
    return u


def pil_u8_chw(im):
    return np.ascontiguousarray(np.asarray(im.convert("RGB")).transpose(2, 0, 1))


def main():
    os.makedirs(SRC, exist_ok=True)
    os.makedirs(REF, exist_ok=True)
    sources = build_sources()
    # Files whose eval_224 is left out to keep the fixtures small (their decoder and mode paths are
    # covered by eval_64x96 and `decoded`; the 224 path itself by the other files).
    no_224 = {"chelsea_portrait_422.jpg", "chelsea_16bit.png"}
    # Which extra references each file gets (besides eval_224 and eval_64x96).
    crops = {
        # name: list of (top, left, height, width, out_h, out_w)
        "rocket.jpg": [(31, 47, 380, 561, 128, 160)],
        "astronaut_rgba.png": [(5, 9, 220, 201, 96, 96)],
        "coffee_palette.png": [(10, 20, 200, 290, 96, 128)],
        "camera_gray.png": [(40, 60, 100, 120, 100, 120), (3, 4, 200, 250, 250, 200)],
        "moon_16bit.png": [(12, 7, 217, 222, 96, 96)],
    }
    extra_cfgs = {
        "coffee_420.jpg": ["bilinear", "longest", "squash"],
        "astronaut_rgba.png": ["longest"],
        "coffee_palette.png": ["longest"],
        "camera_la.png": ["bilinear"],
    }
    decoded = {
        # name: window (top, left, height, width) or None for the whole image
        "rocket.jpg": (100, 150, 96, 128),
        "coffee_420.jpg": (60, 101, 80, 96),
        "chelsea_portrait_422.jpg": (150, 37, 96, 80),
        "astronaut_small.jpg": None,
        "camera_gray.jpg": (50, 40, 100, 120),
        "coffee_cmyk.jpg": (70, 90, 64, 80),
        "chelsea.webp": (90, 120, 80, 96),
    }
    manifest = {
        "versions": {
            "open_clip": open_clip.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "Pillow": PIL.__version__,
            "numpy": np.__version__,
            "libjpeg_turbo": PIL.features.version("libjpeg_turbo"),
            "libwebp": PIL.features.version("webp"),
        },
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "files": {},
    }
    total = 0
    for name, data in sources:
        path = os.path.join(SRC, name)
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
        im = Image.open(path)
        im.load()
        entry = {"format": im.format, "mode": im.mode, "width": im.size[0], "height": im.size[1], "refs": {}}
        tensors = {}

        def put(key, arr, **meta):
            # A CHW image whose three channels are equal (gray sources) is stored as one channel.
            if arr.ndim == 3 and arr.shape[0] == 3 and (arr[0] == arr[1]).all() and (arr[0] == arr[2]).all():
                arr = arr[:1]
            tensors[key] = np.ascontiguousarray(arr)
            entry["refs"][key] = {"shape": list(arr.shape), **meta}

        if name not in no_224:
            put("eval_224", to_u8_chw(image_transform(224, is_train=False)(im)), size=[224, 224])
        t = image_transform((64, 96), is_train=False)(im)
        put("eval_64x96", to_u8_chw(t), size=[64, 96])
        if name == "chelsea.webp":
            tensors["normalized_64x96"] = t.numpy().astype(np.float32)
            entry["refs"]["normalized_64x96"] = {"shape": list(t.shape), "size": [64, 96]}
        for cfg in extra_cfgs.get(name, []):
            kw = {"interpolation": "bilinear"} if cfg == "bilinear" else {"resize_mode": cfg}
            put(f"eval_64_{cfg}", to_u8_chw(image_transform(64, is_train=False, **kw)(im)), size=[64, 64], **kw)
        for top, left, h, w, oh, ow in crops.get(name, []):
            out = TF.resized_crop(im, top, left, h, w, [oh, ow], InterpolationMode.BICUBIC)
            put(f"crop_{top}_{left}_{h}_{w}_{oh}x{ow}", pil_u8_chw(out), box=[top, left, h, w], size=[oh, ow])
        if name in decoded:
            rgb = np.asarray(im.convert("RGB"))
            win = decoded[name]
            if win is None:
                put("decoded", rgb)
            else:
                top, left, h, w = win
                put("decoded", rgb[top:top + h, left:left + w], window=list(win))
        ref_path = os.path.join(REF, name.replace(".", "_") + ".safetensors")
        save_file(tensors, ref_path)
        total += os.path.getsize(ref_path)
        manifest["files"][name] = entry
        print(f"{name:28s} {im.format:5s} {im.mode:5s} {im.size[0]}x{im.size[1]}  refs: {', '.join(entry['refs'])}")
    with open(os.path.join(ROOT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"total {total / 1e6:.2f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
