"""Writes clipkd's table of open_clip pretrained tags, from open_clip's own `pretrained.py`.

For every model config clipkd bundles (crates/clipkd-models/src/presets/*.json) that open_clip
3.3.0 lists pretrained weights for: each tag's Hugging Face Hub repository (open_clip's
`hf_hub`, without the trailing slash), the file open_clip downloads from it (`open_clip_model.
safetensors` first, as open_clip does, then `open_clip_pytorch_model.bin`), the preprocessing
the weights expect (mean, std, interpolation, resize mode) and whether they need QuickGELU.
Tags without an `hf_hub` (weights only at a plain URL) are left out.

Output: crates/clipkd-models/src/pretrained/open_clip_3.3.0.json (committed).

Run: python3 tools/make_pretrained_table.py WHEEL
     where WHEEL is open_clip_torch-3.3.0-py3-none-any.whl (`pip download --no-deps
     open_clip_torch==3.3.0`); only its pretrained.py, constants.py and version.py are read,
     so neither torch nor open_clip has to be installed.
"""

import json
import os
import sys
import types
import zipfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PRESETS = os.path.join(ROOT, "crates", "clipkd-models", "src", "presets")
OUT = os.path.join(ROOT, "crates", "clipkd-models", "src", "pretrained", "open_clip_3.3.0.json")


def load_pretrained(wheel):
    z = zipfile.ZipFile(wheel)
    package = types.ModuleType("open_clip")
    package.__path__ = []
    sys.modules["open_clip"] = package
    for name in ("constants", "version"):
        module = types.ModuleType(f"open_clip.{name}")
        exec(z.read(f"open_clip/{name}.py").decode(), module.__dict__)
        sys.modules[f"open_clip.{name}"] = module
    # tqdm is imported for downloads only.
    sys.modules.setdefault("tqdm", types.SimpleNamespace(tqdm=None))
    module = types.ModuleType("open_clip.pretrained")
    module.__package__ = "open_clip"
    exec(z.read("open_clip/pretrained.py").decode(), module.__dict__)
    return module, sys.modules["open_clip.version"].__version__


def main():
    pretrained, version = load_pretrained(sys.argv[1])
    assert version == "3.3.0", version
    presets = sorted(f[:-5] for f in os.listdir(PRESETS) if f.endswith(".json"))
    table = {}
    for model in presets:
        tags = pretrained._PRETRAINED.get(model, {})
        entries = {}
        for tag, cfg in tags.items():
            repo = cfg.get("hf_hub", "").strip("/")
            if not repo:
                continue
            entries[tag] = {
                "repo": repo,
                "files": ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"],
                "mean": list(cfg["mean"]),
                "std": list(cfg["std"]),
                "interpolation": cfg["interpolation"],
                "resize_mode": cfg["resize_mode"],
                "quick_gelu": bool(cfg.get("quick_gelu", False)),
            }
        if entries:
            table[model] = entries
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"source": f"open_clip {version} pretrained.py (tools/make_pretrained_table.py)",
                   "models": table}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{OUT}: {sum(len(t) for t in table.values())} tags for {len(table)} models")


if __name__ == "__main__":
    main()
