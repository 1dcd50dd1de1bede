"""Writes open_clip's ImageNet zero-shot metadata as the plain-text assets of clipkd-train.

Source: open_clip 3.3.0, `open_clip/zero_shot_metadata.py` (`IMAGENET_CLASSNAMES`,
`OPENAI_IMAGENET_TEMPLATES`), MIT license (see LICENSE-open_clip in this folder).

Run from the repository root with the project's Python (open_clip_torch 3.3.0 installed):

    /work/venv/bin/python crates/clipkd-train/assets/export_zero_shot_metadata.py

Outputs (UTF-8, one entry per line, `\n` line ends, no trailing blank line):
- `imagenet_classnames.txt`: the 1000 class names in ImageNet label order (sorted WordNet ids);
- `openai_imagenet_templates.txt`: the 80 templates, `{}` where the class name goes.
"""

import os

import open_clip
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

assert open_clip.__version__ == "3.3.0", open_clip.__version__
HERE = os.path.dirname(os.path.abspath(__file__))

assert len(IMAGENET_CLASSNAMES) == 1000
for name in IMAGENET_CLASSNAMES:
    assert "\n" not in name and "{" not in name and "}" not in name and name == name.strip(), name

templates = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
assert len(templates) == 80
for t, f in zip(templates, OPENAI_IMAGENET_TEMPLATES):
    # Exactly one placeholder and no other brace, so `t.format(name)` is open_clip's `f(name)`.
    assert t.count("{}") == 1 and t.count("{") == 1 and t.count("}") == 1, t
    assert t.format("a b") == f("a b"), t

with open(os.path.join(HERE, "imagenet_classnames.txt"), "w", encoding="utf-8", newline="\n") as f:
    f.write("\n".join(IMAGENET_CLASSNAMES) + "\n")
with open(os.path.join(HERE, "openai_imagenet_templates.txt"), "w", encoding="utf-8", newline="\n") as f:
    f.write("\n".join(templates) + "\n")
print("wrote", len(IMAGENET_CLASSNAMES), "class names and", len(templates), "templates")
