//! What a teacher, evaluation and `embed` ask of a CLIP-like model: [`ClipEncoder`].
//!
//! [`Clip`](crate::Clip) implements it. Implement it for a model of your own (any Burn module
//! that maps images and token ids into one embedding space) to use it as a distillation
//! teacher, to evaluate it (zero-shot, retrieval) or embed files with it; with
//! `clipkd_train::Student` on top, the trainer distills it.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::clip::l2_normalize;
use crate::error::ModelError;

/// A CLIP-like dual encoder: images and token ids to embeddings in one space, and the logit
/// scale that turns their cosine similarities into logits.
///
/// Embeddings are raw (not normalized); the `_normalized` methods are provided.
pub trait ClipEncoder<B: Backend> {
    /// The embedding size `D`.
    fn embed_dim(&self) -> usize;

    /// The image size `[height, width]` the model takes.
    fn image_size(&self) -> [usize; 2];

    /// The token sequence length the model takes.
    fn context_length(&self) -> usize;

    /// The size of the token table: token ids must be below it.
    fn vocab_size(&self) -> usize;

    /// Raw image embeddings.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` normalized pixels at [`ClipEncoder::image_size`] -> `[N, D]`
    ///
    /// # Errors
    /// Inputs the model cannot take are an error, not a panic: [`ModelError::InputShape`]
    /// (images of the wrong size or channel count), checked from the shape before any compute.
    fn encode_image(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, ModelError>;

    /// Raw text embeddings.
    ///
    /// # Shapes
    /// - `tokens`: `[N, L]`, `1 <= L <= context_length` -> `[N, D]`
    ///
    /// # Errors
    /// [`ModelError::InputShape`] for token batches the model cannot take (empty, or longer
    /// than the context), checked from the shape before any compute.
    fn encode_text(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 2>, ModelError>;

    /// The log logit scale, shape `[1]` (CLIP's `logit_scale` parameter: the logits are
    /// `exp(logit_scale)` times the cosine similarities).
    fn logit_scale(&self) -> Tensor<B, 1>;

    /// Whether [`ClipEncoder::encode_image_masked`] is available (MFD needs it).
    fn supports_masked_view(&self) -> bool {
        false
    }

    /// Raw image embeddings of a randomly masked view of each image (CLIP-KD's MFD), with
    /// `mask_ratio` of the patches dropped, random draws from the backend RNG. Models without
    /// such a view keep the default, an error.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, D]`
    fn encode_image_masked(
        &self,
        images: Tensor<B, 4>,
        mask_ratio: f64,
    ) -> Result<Tensor<B, 2>, ModelError> {
        let _ = (images, mask_ratio);
        Err(ModelError::MaskedForwardUnsupported {
            tower: "a model without a masked view (ClipEncoder::supports_masked_view is false)",
        })
    }

    /// The names of the intermediate image features [`ClipEncoder::encode_image_with_features`]
    /// can return (for `Clip` ViTs, `visual.transformer.resblocks.{i}`). Default: none.
    fn image_feature_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// Raw image embeddings and the named intermediate features, in the order asked, as token
    /// sequences `[N, L, C]` (for feature-distillation losses). Default: only the embeddings;
    /// any name is an error ([`ModelError::UnknownFeature`]).
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, D]` and one `[N, L_i, C_i]` per name
    fn encode_image_with_features(
        &self,
        images: Tensor<B, 4>,
        names: &[String],
    ) -> Result<(Tensor<B, 2>, Vec<Tensor<B, 3>>), ModelError> {
        match names.first() {
            None => Ok((self.encode_image(images)?, Vec::new())),
            Some(name) => Err(ModelError::UnknownFeature {
                name: name.clone(),
                available: self.image_feature_names(),
            }),
        }
    }

    /// L2-normalized image embeddings.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, D]`
    ///
    /// # Errors
    /// As [`ClipEncoder::encode_image`].
    fn encode_image_normalized(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, ModelError> {
        Ok(l2_normalize(self.encode_image(images)?))
    }

    /// L2-normalized text embeddings.
    ///
    /// # Shapes
    /// - `tokens`: `[N, L]` -> `[N, D]`
    ///
    /// # Errors
    /// As [`ClipEncoder::encode_text`].
    fn encode_text_normalized(
        &self,
        tokens: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 2>, ModelError> {
        Ok(l2_normalize(self.encode_text(tokens)?))
    }

    /// The sizes and abilities above, together.
    fn shape(&self) -> EncoderShape {
        EncoderShape {
            embed_dim: self.embed_dim(),
            image_size: self.image_size(),
            context_length: self.context_length(),
            vocab_size: self.vocab_size(),
            supports_masked_view: self.supports_masked_view(),
        }
    }
}

/// The sizes and abilities of a [`ClipEncoder`]: what a trainer checks before it builds the
/// data pipeline and the losses (known from a model config before the model exists, or read
/// from a model with [`ClipEncoder::shape`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncoderShape {
    /// The embedding size.
    pub embed_dim: usize,
    /// The image size `[height, width]`.
    pub image_size: [usize; 2],
    /// The token sequence length.
    pub context_length: usize,
    /// The size of the token table.
    pub vocab_size: usize,
    /// Whether the model has a masked image view (MFD).
    pub supports_masked_view: bool,
}

impl crate::ClipConfig {
    /// The [`EncoderShape`] of the model this config builds.
    pub fn encoder_shape(&self) -> EncoderShape {
        EncoderShape {
            embed_dim: self.embed_dim,
            image_size: self.image_size(),
            context_length: self.context_length(),
            vocab_size: self.text.vocab_size,
            supports_masked_view: self.is_vit(),
        }
    }
}

impl<B: Backend> ClipEncoder<B> for crate::Clip<B> {
    fn embed_dim(&self) -> usize {
        crate::Clip::embed_dim(self)
    }

    fn image_size(&self) -> [usize; 2] {
        crate::Clip::image_size(self)
    }

    fn context_length(&self) -> usize {
        crate::Clip::context_length(self)
    }

    fn vocab_size(&self) -> usize {
        self.config().text.vocab_size
    }

    fn encode_image(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, ModelError> {
        crate::Clip::encode_image(self, images)
    }

    fn encode_text(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 2>, ModelError> {
        crate::Clip::encode_text(self, tokens)
    }

    fn logit_scale(&self) -> Tensor<B, 1> {
        crate::Clip::logit_scale(self)
    }

    fn supports_masked_view(&self) -> bool {
        self.is_vit()
    }

    fn encode_image_masked(
        &self,
        images: Tensor<B, 4>,
        mask_ratio: f64,
    ) -> Result<Tensor<B, 2>, ModelError> {
        crate::Clip::encode_image_masked(self, images, mask_ratio)
    }

    /// ViT: `visual.transformer.resblocks.{i}` for every block `i` (its output tokens, class
    /// token first, `[N, 1 + patches, width]`). ModifiedResNet and timm towers: none yet.
    fn image_feature_names(&self) -> Vec<String> {
        match &self.visual {
            crate::VisionTower::Vit(vit) => (0..vit.layers()).map(vit_block_name).collect(),
            crate::VisionTower::ModifiedResNet(_) | crate::VisionTower::Timm(_) => Vec::new(),
        }
    }

    fn encode_image_with_features(
        &self,
        images: Tensor<B, 4>,
        names: &[String],
    ) -> Result<(Tensor<B, 2>, Vec<Tensor<B, 3>>), ModelError> {
        if names.is_empty() {
            return crate::Clip::encode_image(self, images).map(|embeds| (embeds, Vec::new()));
        }
        let available = ClipEncoder::<B>::image_feature_names(self);
        let blocks = names
            .iter()
            .map(|name| {
                available
                    .iter()
                    .position(|a| a == name)
                    .ok_or_else(|| ModelError::UnknownFeature {
                        name: name.clone(),
                        available: available.clone(),
                    })
            })
            .collect::<Result<Vec<usize>, ModelError>>()?;
        let crate::VisionTower::Vit(vit) = &self.visual else {
            unreachable!("only ViTs name features")
        };
        vit.forward_with_block_outputs(images, &blocks)
    }
}

/// The feature name of ViT block `i`'s output, as open_clip's module path.
fn vit_block_name(i: usize) -> String {
    format!("visual.transformer.resblocks.{i}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClipConfig;
    use burn_flex::Flex;

    const VIT: &str = r#"{"embed_dim": 16,
      "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 16, "patch_size": 8},
      "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}"#;

    #[test]
    fn vit_block_features_come_with_the_same_embeddings() {
        let device = Default::default();
        let config = ClipConfig::from_open_clip_json_str(VIT).unwrap();
        let model = config.init::<Flex>(&device).unwrap();
        let images =
            Tensor::<Flex, 4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &device);
        let names = ClipEncoder::<Flex>::image_feature_names(&model);
        assert_eq!(names.len(), 3);
        assert_eq!(names[2], "visual.transformer.resblocks.2");
        let asked = vec![names[2].clone(), names[0].clone()];
        let (embeds, features) = model
            .encode_image_with_features(images.clone(), &asked)
            .unwrap();
        let plain = ClipEncoder::encode_image(&model, images.clone()).unwrap();
        embeds
            .into_data()
            .assert_approx_eq::<f32>(&plain.into_data(), Default::default());
        // 16 patches and the class token, width 32, in the order asked.
        assert_eq!(features.len(), 2);
        assert_eq!(features[0].dims(), [2, 17, 32]);
        let differ: f32 = (features[0].clone() - features[1].clone())
            .abs()
            .sum()
            .into_scalar();
        assert!(differ > 0.0, "block 2 and block 0 are different outputs");
        let e = model
            .encode_image_with_features(images, &["visual.ln_post".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("visual.ln_post") && e.contains("visual.transformer.resblocks.0"),
            "{e}"
        );
    }
}
