//! Bundled open_clip model configs.
//!
//! Every file in `src/presets/` except `ViT-T-16.json` is copied verbatim from open_clip 3.3.0
//! (`open_clip/model_configs/`). `ViT-T-16.json` is not part of open_clip: it is CLIP-KD's student
//! (Yang et al., CVPR 2024; `src/open_clip/model_configs/ViT-T-16.json` in winycg/CLIP-KD):
//! vision width 192, 12 layers, head width 64 (3 heads), patch 16 at 224 px; text width 384,
//! 6 heads, 12 layers; embedding 512. The `timm_*` files are CLIP-KD's timm students, copied
//! verbatim from the same directory of winycg/CLIP-KD: a timm trunk (no ImageNet weights), the
//! trunk's own pooling and a linear projection to 512 without bias, with ViT-T-16's text tower.
//!
//! [`ClipConfig::preset`] reads one by name, [`ClipConfig::resolve`] takes a preset name or a
//! path to a JSON file.

use crate::config::ClipConfig;
use crate::error::ModelError;
use crate::source::ModelSource;

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
    "timm_resnet18",
    "timm-efficientnet-b0",
    "timm_mobilenetv3_small_100",
    "timm-swin_tiny_patch4_window7_224",
    "timm-mobilevit_s",
);

/// The error of a preset name that is not one, listing the names that are.
pub(crate) fn unknown_preset(name: &str) -> ModelError {
    ModelError::UnknownPreset {
        name: name.to_string(),
        known: NAMES.iter().map(|s| s.to_string()).collect(),
    }
}

/// The JSON text of a preset, if `name` is one.
fn preset_json(name: &str) -> Option<&'static str> {
    NAMES.iter().position(|n| *n == name).map(|i| FILES[i])
}

impl ClipConfig {
    /// A bundled preset by open_clip name (`"ViT-B-16"`, `"RN50-quickgelu"`, `"ViT-T-16"`, ...);
    /// see [`ClipConfig::preset_names`].
    pub fn preset(name: &str) -> Result<Self, ModelError> {
        match preset_json(name) {
            Some(json) => Self::from_open_clip_json_str(json),
            None => Err(unknown_preset(name)),
        }
    }

    /// Names accepted by [`ClipConfig::preset`].
    pub fn preset_names() -> &'static [&'static str] {
        NAMES
    }

    /// A preset name, or a path to an open_clip model-config JSON file: the rule of
    /// [`ModelSource::named`] (a bundled preset's name is the preset, anything else a file).
    pub fn resolve(name_or_path: &str) -> Result<Self, ModelError> {
        ModelSource::named(name_or_path).resolve()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        Activation, DEFAULT_LOGIT_SCALE, ModifiedResNetConfig, VisionConfig, VitConfig,
    };

    fn vit(config: &ClipConfig) -> &VitConfig {
        match &config.vision {
            VisionConfig::Vit(v) => v,
            other => panic!("expected a ViT, got {other:?}"),
        }
    }

    fn resnet(config: &ClipConfig) -> &ModifiedResNetConfig {
        match &config.vision {
            VisionConfig::ModifiedResNet(r) => r,
            other => panic!("expected a ModifiedResNet, got {other:?}"),
        }
    }

    /// (name, embed, vision width, layers, heads, patch, image, text width, heads, layers,
    /// context, quick_gelu) as written in open_clip 3.3.0's JSON (ViT-T-16: CLIP-KD's).
    #[allow(clippy::type_complexity)]
    const VITS: &[(
        &str,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        bool,
    )] = &[
        ("ViT-T-16", 512, 192, 12, 3, 16, 224, 384, 6, 12, 77, false),
        ("ViT-B-32", 512, 768, 12, 12, 32, 224, 512, 8, 12, 77, false),
        (
            "ViT-B-32-quickgelu",
            512,
            768,
            12,
            12,
            32,
            224,
            512,
            8,
            12,
            77,
            true,
        ),
        ("ViT-B-16", 512, 768, 12, 12, 16, 224, 512, 8, 12, 77, false),
        (
            "ViT-B-16-quickgelu",
            512,
            768,
            12,
            12,
            16,
            224,
            512,
            8,
            12,
            77,
            true,
        ),
        (
            "ViT-L-14", 768, 1024, 24, 16, 14, 224, 768, 12, 12, 77, false,
        ),
        (
            "ViT-L-14-quickgelu",
            768,
            1024,
            24,
            16,
            14,
            224,
            768,
            12,
            12,
            77,
            true,
        ),
        (
            "ViT-L-14-336",
            768,
            1024,
            24,
            16,
            14,
            336,
            768,
            12,
            12,
            77,
            false,
        ),
        (
            "ViT-L-14-336-quickgelu",
            768,
            1024,
            24,
            16,
            14,
            336,
            768,
            12,
            12,
            77,
            true,
        ),
        (
            "ViT-H-14", 1024, 1280, 32, 16, 14, 224, 1024, 16, 24, 77, false,
        ),
        (
            "ViT-H-14-quickgelu",
            1024,
            1280,
            32,
            16,
            14,
            224,
            1024,
            16,
            24,
            77,
            true,
        ),
    ];

    #[test]
    fn vit_presets_match_open_clip_json() {
        for &(name, embed, width, layers, heads, patch, image, tw, th, tl, ctx, quick) in VITS {
            let c = ClipConfig::preset(name).unwrap();
            let v = vit(&c);
            assert_eq!(c.embed_dim, embed, "{name} embed_dim");
            assert_eq!(v.width, width, "{name} vision width");
            assert_eq!(v.layers, layers, "{name} vision layers");
            assert_eq!(v.heads(), heads, "{name} vision heads");
            assert_eq!(v.patch_size, [patch, patch], "{name} patch size");
            assert_eq!(v.image_size, [image, image], "{name} image size");
            assert_eq!(v.mlp_width(), 4 * width, "{name} mlp width");
            assert_eq!(c.text.width, tw, "{name} text width");
            assert_eq!(c.text.heads, th, "{name} text heads");
            assert_eq!(c.text.layers, tl, "{name} text layers");
            assert_eq!(c.text.context_length, ctx, "{name} context");
            assert_eq!(c.text.vocab_size, 49408, "{name} vocab");
            let expected = if quick {
                Activation::QuickGelu
            } else {
                Activation::Gelu
            };
            assert_eq!(c.activation, expected, "{name} activation");
            assert_eq!(c.init_logit_scale, DEFAULT_LOGIT_SCALE);
        }
    }

    #[test]
    fn resnet_presets_match_open_clip_json() {
        // (name, embed, layers, width, attnpool heads, image, text width, heads, layers)
        #[allow(clippy::type_complexity)]
        let cases: &[(
            &str,
            usize,
            [usize; 4],
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
        )] = &[
            ("RN50", 1024, [3, 4, 6, 3], 64, 32, 224, 512, 8, 12),
            (
                "RN50-quickgelu",
                1024,
                [3, 4, 6, 3],
                64,
                32,
                224,
                512,
                8,
                12,
            ),
            ("RN101", 512, [3, 4, 23, 3], 64, 32, 224, 512, 8, 12),
            (
                "RN101-quickgelu",
                512,
                [3, 4, 23, 3],
                64,
                32,
                224,
                512,
                8,
                12,
            ),
            ("RN50x4", 640, [4, 6, 10, 6], 80, 40, 288, 640, 10, 12),
            (
                "RN50x4-quickgelu",
                640,
                [4, 6, 10, 6],
                80,
                40,
                288,
                640,
                10,
                12,
            ),
        ];
        for &(name, embed, layers, width, heads, image, tw, th, tl) in cases {
            let c = ClipConfig::preset(name).unwrap();
            let r = resnet(&c);
            assert_eq!(c.embed_dim, embed, "{name} embed_dim");
            assert_eq!(r.layers, layers, "{name} layers");
            assert_eq!(r.width, width, "{name} width");
            assert_eq!(r.heads(), heads, "{name} attnpool heads");
            assert_eq!(r.image_size, image, "{name} image size");
            assert_eq!(c.text.width, tw, "{name} text width");
            assert_eq!(c.text.heads, th, "{name} text heads");
            assert_eq!(c.text.layers, tl, "{name} text layers");
            assert_eq!(c.text.context_length, 77, "{name} context");
            assert_eq!(
                c.activation == Activation::QuickGelu,
                name.ends_with("quickgelu"),
                "{name} activation"
            );
        }
    }

    #[test]
    fn resolve_presets_and_paths() {
        assert_eq!(
            ClipConfig::resolve("RN50").unwrap(),
            ClipConfig::preset("RN50").unwrap()
        );
        assert!(matches!(
            ClipConfig::resolve("ViT-Z-99"),
            Err(ModelError::UnknownPreset { name, .. }) if name == "ViT-Z-99"
        ));
        let path =
            std::env::temp_dir().join(format!("clipkd-models-{}-cfg.json", std::process::id()));
        std::fs::write(
            &path,
            ClipConfig::preset("ViT-T-16").unwrap().to_open_clip_json(),
        )
        .unwrap();
        let from_file = ClipConfig::resolve(path.to_str().unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(from_file, ClipConfig::preset("ViT-T-16").unwrap());
        assert!(matches!(
            ClipConfig::resolve("/nonexistent/model.json"),
            Err(ModelError::Io { .. })
        ));
    }
}
