//! Bundled open_clip model configs.
//!
//! Every file in `src/presets/` except `ViT-T-16.json` is copied verbatim from open_clip 3.3.0
//! (`open_clip/model_configs/`). `ViT-T-16.json` is not part of open_clip: it is CLIP-KD's student
//! (Yang et al., CVPR 2024; `src/open_clip/model_configs/ViT-T-16.json` in winycg/CLIP-KD):
//! vision width 192, 12 layers, head width 64 (3 heads), patch 16 at 224 px; text width 384,
//! 6 heads, 12 layers; embedding 512.

macro_rules! presets {
    ($($name:literal),* $(,)?) => {
        const NAMES: &[&str] = &[$($name),*];
        const FILES: &[&str] = &[$(include_str!(concat!("presets/", $name, ".json"))),*];
    };
}

presets!(
    "RN50",
    "RN50x4",
    "RN50x4-quickgelu",
    "RN50x16",
    "RN50x16-quickgelu",
    "RN50x64",
    "RN50x64-quickgelu",
    "RN50-quickgelu",
    "RN101",
    "RN101-quickgelu",
    "ViT-B-16",
    "ViT-B-16-plus-240",
    "ViT-B-16-quickgelu",
    "ViT-B-32",
    "ViT-B-32-256",
    "ViT-B-32-quickgelu",
    "ViT-H-14",
    "ViT-H-14-quickgelu",
    "ViT-L-14",
    "ViT-L-14-336",
    "ViT-L-14-336-quickgelu",
    "ViT-L-14-quickgelu",
    "ViT-M-16",
    "ViT-M-32",
    "ViT-S-16",
    "ViT-S-32",
    "ViT-T-16",
);

/// The JSON text of a preset, if `name` is one.
pub(crate) fn preset_json(name: &str) -> Option<&'static str> {
    NAMES.iter().position(|n| *n == name).map(|i| FILES[i])
}

/// All preset names.
pub(crate) fn names() -> &'static [&'static str] {
    NAMES
}
