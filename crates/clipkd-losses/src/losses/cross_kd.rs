//! Cross-KD: CLIP-KD's undocumented cross-model KL term.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;

use super::common::{check_temperature, cross_logits, teacher_logits};
use crate::error::LossError;
use crate::loss::{DistillLoss, LearnableScale, LearnableScaleConfig};
use crate::ops::kl_div_batchmean;
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// Configuration of the [`CrossKdLoss`].
#[derive(Config, Debug)]
pub struct CrossKdLossConfig {
    /// The learnable logit scale `c` (CLIP-KD: raw, init `ln(1/0.07)`).
    #[config(default = "LearnableScaleConfig::new()")]
    pub scale: LearnableScaleConfig,
    /// Softmax temperature (CLIP-KD: 1); the KL is multiplied by its square.
    #[config(default = 1.0)]
    pub temperature: f64,
}

impl CrossKdLossConfig {
    /// Creates the loss on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<CrossKdLoss<B>, LossError> {
        self.scale.validate("cross-KD")?;
        check_temperature("cross-KD", self.temperature)?;
        Ok(CrossKdLoss {
            scale: self.scale.init(device),
            temperature: self.temperature,
        })
    }
}

/// Cross-model KD (term `"cross_kd"`), computed but weighted 0 in CLIP-KD's code:
/// `½ [KL(softmax(T) ‖ softmax(c ŝ_img t_txtᵀ)) + KL(softmax(Tᵀ) ‖ softmax(c ŝ_txt t_imgᵀ))]`,
/// `T = s_T t_img t_txtᵀ`.
///
/// CLIP-KD shares `c` with ICL (`cross_logit_scale`); here each loss owns its scale, so that
/// every loss is a self-contained module. Used together, the two scales are trained separately.
#[derive(Module, Debug)]
pub struct CrossKdLoss<B: Backend> {
    /// The learnable logit scale.
    pub scale: LearnableScale<B>,
    /// Softmax temperature.
    pub temperature: f64,
}

impl<B: Backend> CrossKdLoss<B> {
    /// The term's name.
    pub const NAME: &'static str = "cross_kd";
}

impl<B: Backend> DistillLoss<B> for CrossKdLoss<B> {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        batch.check_aligned("cross-KD")?;
        let input = batch.input();
        let scale = self.scale.multiplier();
        let (s_image, s_text) =
            cross_logits(input, batch.image_aligned(), batch.text_aligned(), &scale);
        let (t_image, t_text) = teacher_logits(input);
        let value = (kl_div_batchmean(s_image, t_image, self.temperature)
            + kl_div_batchmean(s_text, t_text, self.temperature))
        .div_scalar(2.0);
        Ok(LossTerms::single(Self::NAME, value))
    }
}
