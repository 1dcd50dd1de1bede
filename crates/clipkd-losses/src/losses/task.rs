//! The task loss: CLIP's symmetric InfoNCE.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;

use super::common::student_logits;
use crate::error::LossError;
use crate::loss::DistillLoss;
use crate::ops::contrastive_cross_entropy;
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// Configuration of the [`TaskLoss`] (it has no options).
#[derive(Config, Debug)]
pub struct TaskLossConfig {}

impl TaskLossConfig {
    /// Creates the loss.
    pub fn init(&self) -> TaskLoss {
        TaskLoss
    }
}

/// CLIP's contrastive loss on the student's own features (term `"task"`):
/// `S = s ū_img ū_txtᵀ`, `½ [CE(S, y) + CE(Sᵀ, y)]`.
///
/// # Shapes
/// - reads the student's normalized embeddings `[N, D_s]` and logit scale `[1]`
#[derive(Module, Clone, Debug)]
pub struct TaskLoss;

impl TaskLoss {
    /// The term's name.
    pub const NAME: &'static str = "task";
}

impl<B: Backend> DistillLoss<B> for TaskLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let offset = input.rows().offset;
        let (per_image, per_text) = student_logits(input);
        let value = (contrastive_cross_entropy(per_image, offset)
            + contrastive_cross_entropy(per_text, offset))
        .div_scalar(2.0);
        Ok(LossTerms::single(Self::NAME, value))
    }
}
