//! ICL: interactive contrastive learning.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;

use super::common::cross_logits;
use crate::error::LossError;
use crate::loss::{DistillLoss, LearnableScale, LearnableScaleConfig};
use crate::ops::contrastive_cross_entropy;
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// Configuration of the [`IclLoss`].
#[derive(Config, Debug)]
pub struct IclLossConfig {
    /// The learnable logit scale `c` (CLIP-KD: raw, init `ln(1/0.07)`).
    #[config(default = "LearnableScaleConfig::new()")]
    pub scale: LearnableScaleConfig,
}

impl IclLossConfig {
    /// Creates the loss on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<IclLoss<B>, LossError> {
        self.scale.validate("ICL")?;
        Ok(IclLoss {
            scale: self.scale.init(device),
        })
    }
}

/// Interactive contrastive learning (term `"icl"`): student anchors against teacher candidates,
/// `½ [CE(c ŝ_img t_txtᵀ, y) + CE(c ŝ_txt t_imgᵀ, y)]`, with `c` a learnable scale owned by the
/// loss (CLIP-KD's `cross_logit_scale`).
#[derive(Module, Debug)]
pub struct IclLoss<B: Backend> {
    /// The learnable logit scale.
    pub scale: LearnableScale<B>,
}

impl<B: Backend> IclLoss<B> {
    /// The term's name.
    pub const NAME: &'static str = "icl";
}

impl<B: Backend> DistillLoss<B> for IclLoss<B> {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        batch.check_aligned("ICL")?;
        let input = batch.input();
        let offset = input.rows().offset;
        let scale = self.scale.multiplier();
        let (per_image, per_text) =
            cross_logits(input, batch.image_aligned(), batch.text_aligned(), &scale);
        let value = (contrastive_cross_entropy(per_image, offset)
            + contrastive_cross_entropy(per_text, offset))
        .div_scalar(2.0);
        Ok(LossTerms::single(Self::NAME, value))
    }
}
