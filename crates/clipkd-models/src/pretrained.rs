//! open_clip's pretrained weights by name: the `(model, tag)` pairs people type
//! (`ViT-B-16` / `laion400m_e32`, `ViT-L-14` / `openai`), each resolved to the Hugging Face Hub
//! repository open_clip downloads it from, and the preprocessing and activation the weights
//! expect.
//!
//! The table is open_clip 3.3.0's `pretrained.py` for the model configs clipkd bundles, written
//! by `tools/make_pretrained_table.py` into `src/pretrained/open_clip_3.3.0.json` (tags whose
//! weights exist only at a plain URL, not on the Hub, are left out). [`crate::hub_cache`] finds
//! a tag's file in the Hugging Face cache that Python tools share.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::config::{Activation, ClipConfig};
use crate::error::ModelError;

/// The file open_clip 3.3.0 prefers in a repository (safetensors), then its fallback.
pub const WEIGHT_FILES: [&str; 2] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

/// One pretrained tag of one model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Pretrained {
    /// The Hugging Face Hub repository (`timm/vit_base_patch16_clip_224.laion400m_e32`).
    pub repo: String,
    /// The weight files to look for in the repository, in order of preference.
    pub files: Vec<String>,
    /// The per-channel mean the weights were trained with (images in `[0, 1]`).
    pub mean: [f64; 3],
    /// The per-channel standard deviation.
    pub std: [f64; 3],
    /// The resize interpolation (`bicubic`, `bilinear`).
    pub interpolation: String,
    /// open_clip's resize mode (`shortest`, `squash`).
    pub resize_mode: String,
    /// Whether the weights were trained with QuickGELU (the OpenAI and LAION-400M ones).
    pub quick_gelu: bool,
}

impl Pretrained {
    /// `config` with the activation these weights were trained with: QuickGELU where the tag
    /// says so (open_clip warns and keeps GELU, which gives wrong embeddings; clipkd applies it),
    /// the config's own otherwise.
    pub fn adapt_config(&self, mut config: ClipConfig) -> ClipConfig {
        if self.quick_gelu {
            config.activation = Activation::QuickGelu;
        }
        config
    }
}

#[derive(Deserialize)]
struct Table {
    models: BTreeMap<String, BTreeMap<String, Pretrained>>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(include_str!("pretrained/open_clip_3.3.0.json"))
            .expect("the bundled pretrained table is valid JSON (tools/make_pretrained_table.py)")
    })
}

/// The pretrained tags open_clip has for `model` (a bundled preset name), sorted; empty for a
/// model without any.
pub fn pretrained_tags(model: &str) -> Vec<&'static str> {
    table()
        .models
        .get(model)
        .map(|tags| tags.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The models that have pretrained tags, sorted.
pub fn pretrained_models() -> Vec<&'static str> {
    table().models.keys().map(String::as_str).collect()
}

/// `model`'s pretrained `tag`.
///
/// # Errors
/// [`ModelError::UnknownPretrained`] naming the model and the tags it has (or that it has
/// none, listing the models that do).
pub fn pretrained(model: &str, tag: &str) -> Result<&'static Pretrained, ModelError> {
    let unknown = |known: Vec<String>| ModelError::UnknownPretrained {
        model: model.to_string(),
        tag: tag.to_string(),
        known,
    };
    match table().models.get(model) {
        Some(tags) => tags
            .get(tag)
            .ok_or_else(|| unknown(tags.keys().cloned().collect())),
        None => Err(unknown(Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_teachers_resolve_to_their_hub_repositories() {
        let b16 = pretrained("ViT-B-16", "laion400m_e32").unwrap();
        assert_eq!(b16.repo, "timm/vit_base_patch16_clip_224.laion400m_e32");
        assert_eq!(b16.files, WEIGHT_FILES);
        assert!(!b16.quick_gelu);
        let l14 = pretrained("ViT-L-14", "openai").unwrap();
        assert_eq!(l14.repo, "timm/vit_large_patch14_clip_224.openai");
        assert!(l14.quick_gelu, "OpenAI's weights use QuickGELU");
        assert_eq!(l14.mean, [0.48145466, 0.4578275, 0.40821073]);
        assert_eq!(l14.interpolation, "bicubic");
        // A tag trained with other statistics keeps them.
        let laion2b = pretrained("ViT-L-14", "laion2b_s32b_b82k").unwrap();
        assert_eq!(laion2b.mean, [0.5, 0.5, 0.5]);
    }

    #[test]
    fn every_model_with_tags_is_a_bundled_preset() {
        let presets = ClipConfig::preset_names();
        let models = pretrained_models();
        assert!(models.len() >= 20, "{models:?}");
        for model in models {
            assert!(presets.contains(&model), "{model} is not a preset");
            assert!(!pretrained_tags(model).is_empty());
        }
        assert!(
            pretrained_tags("ViT-T-16").is_empty(),
            "CLIP-KD's student has none"
        );
    }

    #[test]
    fn an_unknown_tag_lists_the_known_ones() {
        let error = pretrained("ViT-B-16", "laion400m_e33")
            .unwrap_err()
            .to_string();
        assert!(error.contains("`laion400m_e33`"), "{error}");
        assert!(error.contains("laion400m_e32, metaclip_400m"), "{error}");
        let error = pretrained("ViT-T-16", "openai").unwrap_err().to_string();
        assert!(error.contains("no pretrained weights"), "{error}");
        assert!(error.contains("ViT-B-16"), "{error}");
    }

    #[test]
    fn quick_gelu_weights_switch_the_activation() {
        let config = ClipConfig::preset("ViT-B-32").unwrap();
        assert_eq!(config.activation, Activation::Gelu);
        let openai = pretrained("ViT-B-32", "openai").unwrap();
        assert_eq!(
            openai.adapt_config(config.clone()).activation,
            Activation::QuickGelu
        );
        let laion2b = pretrained("ViT-B-32", "laion2b_s34b_b79k").unwrap();
        assert_eq!(laion2b.adapt_config(config).activation, Activation::Gelu);
    }
}
