//! ICL: interactive contrastive learning.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::common::{check_pair, check_scale, cross_logits};
use crate::error::LossError;
use crate::input::Embeddings;
use crate::loss::{BuiltinLossConfig, DistillLoss, LearnableScale, LearnableScaleConfig};
use crate::ops::{LocalRows, contrastive_cross_entropy};
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

impl BuiltinLossConfig for IclLossConfig {
    type Loss<B: Backend> = IclLoss<B>;
    const NAME: &'static str = "icl";
    const USES_ALIGNED_FEATURES: bool = true;

    fn defaults(_teacher_dim: usize) -> Self {
        Self::new()
    }

    fn init_loss<B: Backend>(&self, device: &B::Device) -> Result<IclLoss<B>, LossError> {
        self.init(device)
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
    pub const NAME: &'static str = IclLossConfig::NAME;

    /// The loss of one batch; the same value as the loss in a [`LossSet`](crate::LossSet).
    ///
    /// What it needs beyond the embeddings:
    /// - its own learnable scale `c` (a parameter of this module: train the module with the
    ///   student, or use [`icl_loss`] with a scale tensor of your own);
    /// - the student in the teacher's space: when `D_s != D_t`, map it with a (learnable)
    ///   [`Projector`](crate::Projector) first, as a loss set does.
    ///
    /// The teacher is detached. Errors if the batch sizes or the embedding sizes differ.
    ///
    /// # Shapes
    /// - `student`: `[N, D_t]` (aligned), `teacher`: `[N, D_t]` -> `[1]`
    ///
    /// ```
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_flex::Flex;
    /// use clipkd_losses::{Embeddings, IclLossConfig, ProjectorConfig};
    ///
    /// let device = Default::default();
    /// let randn = |d| Tensor::<Flex, 2>::random([4, d], Distribution::Normal(0.0, 1.0), &device);
    /// let student = Embeddings::from_log_scale(randn(8), randn(8), Tensor::from_floats([2.659], &device))?;
    /// let teacher = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([4.6], &device))?;
    /// let icl = IclLossConfig::new().init::<Flex>(&device)?; // owns the learnable scale
    /// let projector = ProjectorConfig::new(8, 12).init::<Flex>(&device); // 8 != 12
    /// let loss = icl.forward(&projector.project(&student)?, &teacher)?;
    /// assert!(loss.into_scalar() > 0.0);
    /// # Ok::<(), clipkd_losses::LossError>(())
    /// ```
    pub fn forward(
        &self,
        student: &Embeddings<B>,
        teacher: &Embeddings<B>,
    ) -> Result<Tensor<B, 1>, LossError> {
        icl_loss(
            student,
            teacher,
            &self.scale.multiplier(),
            LocalRows::all(student.batch_size()),
        )
    }
}

/// ICL of this device's `rows` of a (gathered) batch, with the logit-scale multiplier `scale`
/// (`c`, or `exp(c)`: [`LearnableScale::multiplier`]): what [`IclLoss`] computes, in both of
/// its `forward`s. `student_aligned` is the student in the teacher's space
/// ([`Projector::project`](crate::Projector::project)); the teacher is detached.
///
/// Errors if the batch sizes or the embedding sizes differ, `rows` fall outside the batch or
/// `scale` is not `[1]`.
///
/// # Shapes
/// - `student_aligned`, `teacher`: `[N, D_t]`, `scale`: `[1]` -> `[1]`
pub fn icl_loss<B: Backend>(
    student_aligned: &Embeddings<B>,
    teacher: &Embeddings<B>,
    scale: &Tensor<B, 1>,
    rows: LocalRows,
) -> Result<Tensor<B, 1>, LossError> {
    check_pair("ICL", student_aligned, teacher, true, rows)?;
    check_scale("ICL", scale)?;
    let teacher = teacher.clone().detach();
    let (per_image, per_text) = cross_logits(student_aligned, &teacher, scale, rows);
    Ok((contrastive_cross_entropy(per_image, rows.offset)
        + contrastive_cross_entropy(per_text, rows.offset))
    .div_scalar(2.0))
}

impl<B: Backend> DistillLoss<B> for IclLoss<B> {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let value = icl_loss(
            batch.student_aligned(),
            input.teacher(),
            &self.scale.multiplier(),
            input.rows(),
        )?;
        Ok(LossTerms::single(Self::NAME, value))
    }
}
