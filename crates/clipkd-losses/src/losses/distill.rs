//! open_clip's `DistillClipLoss` distillation term.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::common::{check_pair, clip_logits};
use crate::error::LossError;
use crate::input::Embeddings;
use crate::loss::{BuiltinLossConfig, DistillLoss};
use crate::ops::{LocalRows, soft_cross_entropy};
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

impl BuiltinLossConfig for OpenClipDistillLossConfig {
    type Loss<B: Backend> = OpenClipDistillLoss;
    const NAME: &'static str = OpenClipDistillLoss::NAME;
    const USES_ALIGNED_FEATURES: bool = false;

    fn defaults(_teacher_dim: usize) -> Self {
        Self::new()
    }

    fn init_loss<B: Backend>(&self, _device: &B::Device) -> Result<OpenClipDistillLoss, LossError> {
        Ok(self.init())
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

    /// The term of one batch (every row an anchor); the same value as the loss in a
    /// [`LossSet`](crate::LossSet). It reads the student's own normalized embeddings, so the
    /// sizes may differ. The teacher is detached. open_clip's whole `DistillClipLoss` is this
    /// plus [`TaskLoss::forward`](crate::TaskLoss::forward) of the student.
    /// [`open_clip_distill_loss`] is the form for a gathered global batch.
    ///
    /// Errors if the batch sizes differ.
    ///
    /// # Shapes
    /// - `student`: `[N, D_s]`, `teacher`: `[N, D_t]`, logit scales `[1]` -> `[1]`
    ///
    /// ```
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_flex::Flex;
    /// use clipkd_losses::{Embeddings, OpenClipDistillLossConfig, TaskLossConfig};
    ///
    /// let device = Default::default();
    /// let randn = |d| Tensor::<Flex, 2>::random([4, d], Distribution::Normal(0.0, 1.0), &device);
    /// let student = Embeddings::from_log_scale(randn(8), randn(8), Tensor::from_floats([2.659], &device))?;
    /// let teacher = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([4.6], &device))?;
    /// let contrastive = TaskLossConfig::new().init().forward(&student)?;
    /// let distill = OpenClipDistillLossConfig::new().init().forward(&student, &teacher)?;
    /// let open_clip_total = contrastive + distill;
    /// assert_eq!(open_clip_total.dims(), [1]);
    /// # Ok::<(), clipkd_losses::LossError>(())
    /// ```
    pub fn forward<B: Backend>(
        &self,
        student: &Embeddings<B>,
        teacher: &Embeddings<B>,
    ) -> Result<Tensor<B, 1>, LossError> {
        open_clip_distill_loss(student, teacher, LocalRows::all(student.batch_size()))
    }
}

/// open_clip's distillation term for this device's `rows` of a (gathered) batch: what
/// [`OpenClipDistillLoss`] computes, in both of its `forward`s. The teacher is detached.
///
/// Errors if the batch sizes differ or `rows` fall outside the batch.
///
/// # Shapes
/// - `student`: `[N, D_s]`, `teacher`: `[N, D_t]`, logit scales `[1]` -> `[1]`
pub fn open_clip_distill_loss<B: Backend>(
    student: &Embeddings<B>,
    teacher: &Embeddings<B>,
    rows: LocalRows,
) -> Result<Tensor<B, 1>, LossError> {
    check_pair("open_clip distill", student, teacher, false, rows)?;
    let teacher = teacher.clone().detach();
    let (s_image, s_text) = clip_logits(student, rows);
    let (t_image, t_text) = clip_logits(&teacher, rows);
    Ok((soft_cross_entropy(s_image, t_image) + soft_cross_entropy(s_text, t_text)).div_scalar(2.0))
}

impl<B: Backend> DistillLoss<B> for OpenClipDistillLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let value = open_clip_distill_loss(input.student(), input.teacher(), input.rows())?;
        Ok(LossTerms::single(Self::NAME, value))
    }
}
