//! The demo's model configs: small open_clip ViT-B-style CLIPs described by a few sizes.

use clipkd_models::ClipConfig;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::TrainError;

/// The sizes of a small open_clip ViT CLIP (pre-norm ViT with a CLS token, causal text
/// transformer over the CLIP tokenizer's 49408 tokens, GELU, no biases on the projections).
/// [`DemoModel::open_clip_json`] turns it into an open_clip model config, which the demo
/// writes to a file and hands to the trainer like any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoModel {
    /// Joint embedding size (`embed_dim`).
    pub embed_dim: usize,
    /// ViT token width (`vision_cfg.width`).
    pub vision_width: usize,
    /// ViT blocks (`vision_cfg.layers`).
    pub vision_layers: usize,
    /// Width of one attention head in both towers (`vision_cfg.head_width`; the text tower
    /// gets `text_width / head_width` heads).
    pub head_width: usize,
    /// ViT patch side in pixels (`vision_cfg.patch_size`).
    pub patch_size: usize,
    /// Text transformer width (`text_cfg.width`).
    pub text_width: usize,
    /// Text transformer blocks (`text_cfg.layers`).
    pub text_layers: usize,
}

impl Default for DemoModel {
    /// [`DemoModel::student`].
    fn default() -> Self {
        Self::student()
    }
}

impl DemoModel {
    /// The default teacher: embedding 96, ViT width 96 x 3 blocks (3 heads), text width 96
    /// x 2 blocks, patch 8 (a 4x4 grid of patches on the demo's 32-pixel images).
    pub fn teacher() -> Self {
        DemoModel {
            embed_dim: 96,
            vision_width: 96,
            vision_layers: 3,
            head_width: 32,
            patch_size: 8,
            text_width: 96,
            text_layers: 2,
        }
    }

    /// The default student: embedding 64, ViT width 64 x 2 blocks (2 heads), text width 64 x
    /// 1 block, patch 8.
    pub fn student() -> Self {
        DemoModel {
            embed_dim: 64,
            vision_width: 64,
            vision_layers: 2,
            head_width: 32,
            patch_size: 8,
            text_width: 64,
            text_layers: 1,
        }
    }

    /// The open_clip model config for `image_size`-pixel images and `context_length` tokens.
    pub fn open_clip_json(&self, image_size: usize, context_length: usize) -> serde_json::Value {
        json!({
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "head_width": self.head_width,
                "patch_size": self.patch_size,
            },
            "text_cfg": {
                "context_length": context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": (self.text_width / self.head_width.max(1)).max(1),
                "layers": self.text_layers,
            },
        })
    }

    /// The parsed config, checked: every size positive, widths divisible by the head width,
    /// the image divisible into patches. `field` (`teacher` or `student`) names the model in
    /// errors.
    pub fn clip_config(
        &self,
        image_size: usize,
        context_length: usize,
        field: &str,
    ) -> Result<ClipConfig, TrainError> {
        for (name, value) in [
            ("embed_dim", self.embed_dim),
            ("vision_width", self.vision_width),
            ("vision_layers", self.vision_layers),
            ("head_width", self.head_width),
            ("patch_size", self.patch_size),
            ("text_width", self.text_width),
            ("text_layers", self.text_layers),
        ] {
            if value == 0 {
                return Err(TrainError::config(
                    format!("{field}.{name}"),
                    "must be at least 1",
                ));
            }
        }
        for (name, width) in [
            ("vision_width", self.vision_width),
            ("text_width", self.text_width),
        ] {
            if width % self.head_width != 0 {
                return Err(TrainError::config(
                    format!("{field}.{name}"),
                    format!(
                        "{width} is not a multiple of {field}.head_width {}",
                        self.head_width
                    ),
                ));
            }
        }
        if !image_size.is_multiple_of(self.patch_size) {
            return Err(TrainError::config(
                format!("{field}.patch_size"),
                format!(
                    "the {image_size}-pixel images do not divide into {} pixel patches",
                    self.patch_size
                ),
            ));
        }
        let config =
            ClipConfig::from_open_clip_value(self.open_clip_json(image_size, context_length))
                .map_err(|e| TrainError::field(field, e))?;
        config.validate().map_err(|e| TrainError::field(field, e))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_bad_sizes_name_the_field() {
        let t = DemoModel::teacher().clip_config(32, 20, "teacher").unwrap();
        assert_eq!(t.embed_dim, 96);
        assert_eq!(t.image_size(), [32, 32]);
        assert_eq!(t.context_length(), 20);
        assert_eq!(t.text.heads, 3);
        assert!(t.is_vit());
        let s = DemoModel::student().clip_config(32, 20, "student").unwrap();
        assert_eq!(s.embed_dim, 64);
        assert_eq!(s.text.vocab_size, 49408);

        let mut bad = DemoModel::student();
        bad.vision_width = 48;
        bad.head_width = 32;
        let e = bad.clip_config(32, 20, "student").unwrap_err().to_string();
        assert!(e.contains("student.vision_width"), "{e}");
        let e = DemoModel::student()
            .clip_config(36, 20, "student")
            .unwrap_err()
            .to_string();
        assert!(e.contains("student.patch_size"), "{e}");
        let mut zero = DemoModel::teacher();
        zero.text_layers = 0;
        let e = zero.clip_config(32, 20, "teacher").unwrap_err().to_string();
        assert!(e.contains("teacher.text_layers"), "{e}");
    }
}
