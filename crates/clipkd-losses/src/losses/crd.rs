//! CRD: contrastive relational distillation.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;

use super::common::{check_temperature, student_logits, teacher_logits};
use crate::error::LossError;
use crate::loss::DistillLoss;
use crate::ops::kl_div_batchmean;
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// Configuration of the [`CrdLoss`].
#[derive(Config, Debug)]
pub struct CrdLossConfig {
    /// Softmax temperature `T` (CLIP-KD: 1); the KL is multiplied by `T²`.
    #[config(default = 1.0)]
    pub temperature: f64,
}

impl CrdLossConfig {
    /// Creates the loss; errors if the temperature is not positive.
    pub fn init(&self) -> Result<CrdLoss, LossError> {
        check_temperature("CRD", self.temperature)?;
        Ok(CrdLoss {
            temperature: self.temperature,
        })
    }
}

/// Contrastive relational distillation (term `"crd"`): the student's image-text similarity
/// distributions follow the teacher's.
///
/// `S = s ū_img ū_txtᵀ` (the student's task logits), `T = s_T t_img t_txtᵀ` (detached);
/// `½ [KL(softmax(T/τ) ‖ softmax(S/τ)) + KL(softmax(Tᵀ/τ) ‖ softmax(Sᵀ/τ))] · τ²`, KL with
/// `batchmean` reduction, as CLIP-KD's `DistillKL`.
#[derive(Module, Clone, Debug)]
pub struct CrdLoss {
    /// Softmax temperature.
    pub temperature: f64,
}

impl CrdLoss {
    /// The term's name.
    pub const NAME: &'static str = "crd";
}

impl<B: Backend> DistillLoss<B> for CrdLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let (s_image, s_text) = student_logits(input);
        let (t_image, t_text) = teacher_logits(input);
        let value = (kl_div_batchmean(s_image, t_image, self.temperature)
            + kl_div_batchmean(s_text, t_text, self.temperature))
        .div_scalar(2.0);
        Ok(LossTerms::single(Self::NAME, value))
    }
}
