//! open_clip's `DistillClipLoss` distillation term.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;

use super::common::{student_logits, teacher_logits};
use crate::error::LossError;
use crate::loss::DistillLoss;
use crate::ops::soft_cross_entropy;
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// Configuration of the [`OpenClipDistillLoss`] (it has no options).
#[derive(Config, Debug)]
pub struct OpenClipDistillLossConfig {}

impl OpenClipDistillLossConfig {
    /// Creates the loss.
    pub fn init(&self) -> OpenClipDistillLoss {
        OpenClipDistillLoss
    }
}

/// open_clip's `DistillClipLoss` distillation term (term `"distill"`): soft cross entropy of
/// the student's logits against the teacher's probabilities, both directions,
/// `½ [-Σ softmax(T) log_softmax(S) - Σ softmax(Tᵀ) log_softmax(Sᵀ)] / N`.
///
/// open_clip returns it beside its contrastive loss, which is the [`TaskLoss`](crate::TaskLoss)
/// here: the `open_clip_distill` preset is both, weight 1 each.
#[derive(Module, Clone, Debug)]
pub struct OpenClipDistillLoss;

impl OpenClipDistillLoss {
    /// The term's name.
    pub const NAME: &'static str = "distill";
}

impl<B: Backend> DistillLoss<B> for OpenClipDistillLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let (s_image, s_text) = student_logits(input);
        let (t_image, t_text) = teacher_logits(input);
        let value = (soft_cross_entropy(s_image, t_image) + soft_cross_entropy(s_text, t_text))
            .div_scalar(2.0);
        Ok(LossTerms::single(Self::NAME, value))
    }
}
