//! The task loss: CLIP's symmetric InfoNCE.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::common::{check_rows, clip_logits};
use crate::error::LossError;
use crate::input::Embeddings;
use crate::loss::{BuiltinLossConfig, DistillLoss};
use crate::ops::{LocalRows, contrastive_cross_entropy};
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

impl BuiltinLossConfig for TaskLossConfig {
    type Loss<B: Backend> = TaskLoss;
    const NAME: &'static str = TaskLoss::NAME;
    const USES_ALIGNED_FEATURES: bool = false;
    const NEEDS_TEACHER: bool = false;

    fn defaults(_teacher_dim: usize) -> Self {
        Self::new()
    }

    fn init_loss<B: Backend>(&self, _device: &B::Device) -> Result<TaskLoss, LossError> {
        Ok(self.init())
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

    /// The loss of one batch of student embeddings (every row an anchor); the same value as
    /// the loss in a [`LossSet`](crate::LossSet). [`task_loss`] is the form for a gathered
    /// global batch.
    ///
    /// # Shapes
    /// - `student`: embeddings `[N, D]`, logit scale `[1]` -> `[1]`
    ///
    /// ```
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_flex::Flex;
    /// use clipkd_losses::{Embeddings, TaskLossConfig};
    ///
    /// let device = Default::default();
    /// let randn = |d| Tensor::<Flex, 2>::random([4, d], Distribution::Normal(0.0, 1.0), &device);
    /// let student = Embeddings::from_log_scale(randn(8), randn(8), Tensor::from_floats([2.659], &device))?;
    /// let loss = TaskLossConfig::new().init().forward(&student)?;
    /// assert_eq!(loss.dims(), [1]);
    /// # Ok::<(), clipkd_losses::LossError>(())
    /// ```
    pub fn forward<B: Backend>(&self, student: &Embeddings<B>) -> Result<Tensor<B, 1>, LossError> {
        task_loss(student, LocalRows::all(student.batch_size()))
    }
}

/// The task loss (CLIP's InfoNCE) of this device's `rows` of a (gathered) batch: what
/// [`TaskLoss`] computes, in both of its `forward`s.
///
/// Errors if `rows` fall outside the batch.
///
/// # Shapes
/// - `student`: embeddings `[N, D]`, logit scale `[1]` -> `[1]`
pub fn task_loss<B: Backend>(
    student: &Embeddings<B>,
    rows: LocalRows,
) -> Result<Tensor<B, 1>, LossError> {
    check_rows(rows, student.batch_size())?;
    let (per_image, per_text) = clip_logits(student, rows);
    Ok((contrastive_cross_entropy(per_image, rows.offset)
        + contrastive_cross_entropy(per_text, rows.offset))
    .div_scalar(2.0))
}

impl<B: Backend> DistillLoss<B> for TaskLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let value = task_loss(input.student(), input.rows())?;
        Ok(LossTerms::single(Self::NAME, value))
    }
}
