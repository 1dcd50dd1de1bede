//! Cross-KD: CLIP-KD's undocumented cross-model KL term.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::common::{check_pair, check_scale, check_temperature, clip_logits, cross_logits};
use crate::error::LossError;
use crate::input::Embeddings;
use crate::loss::{BuiltinLossConfig, DistillLoss, LearnableScale, LearnableScaleConfig};
use crate::ops::{LocalRows, kl_div_batchmean};
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

impl BuiltinLossConfig for CrossKdLossConfig {
    type Loss<B: Backend> = CrossKdLoss<B>;
    const NAME: &'static str = "cross_kd";
    const USES_ALIGNED_FEATURES: bool = true;

    fn defaults(_teacher_dim: usize) -> Self {
        Self::new()
    }

    fn init_loss<B: Backend>(&self, device: &B::Device) -> Result<CrossKdLoss<B>, LossError> {
        self.init(device)
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
    pub const NAME: &'static str = CrossKdLossConfig::NAME;

    /// The loss of one batch; the same value as the loss in a [`LossSet`](crate::LossSet).
    ///
    /// What it needs beyond the embeddings:
    /// - its own learnable scale `c` (a parameter of this module: train the module with the
    ///   student, or use [`cross_kd_loss`] with a scale tensor of your own);
    /// - the student in the teacher's space: when `D_s != D_t`, map it with a (learnable)
    ///   [`Projector`](crate::Projector) first, as a loss set does.
    ///
    /// The teacher is detached. Errors if the batch sizes or the embedding sizes differ.
    ///
    /// # Shapes
    /// - `student`: `[N, D_t]` (aligned), `teacher`: `[N, D_t]`, teacher logit scale `[1]`
    ///   -> `[1]`
    ///
    /// ```
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_flex::Flex;
    /// use clipkd_losses::{CrossKdLossConfig, Embeddings};
    ///
    /// let device = Default::default();
    /// let randn = |d| Tensor::<Flex, 2>::random([4, d], Distribution::Normal(0.0, 1.0), &device);
    /// let student = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([2.659], &device))?;
    /// let teacher = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([4.6], &device))?;
    /// let cross_kd = CrossKdLossConfig::new().init::<Flex>(&device)?; // owns the learnable scale
    /// assert!(cross_kd.forward(&student, &teacher)?.into_scalar() >= 0.0);
    /// # Ok::<(), clipkd_losses::LossError>(())
    /// ```
    pub fn forward(
        &self,
        student: &Embeddings<B>,
        teacher: &Embeddings<B>,
    ) -> Result<Tensor<B, 1>, LossError> {
        cross_kd_loss(
            student,
            teacher,
            &self.scale.multiplier(),
            self.temperature,
            LocalRows::all(student.batch_size()),
        )
    }
}

/// Cross-KD of this device's `rows` of a (gathered) batch, with the logit-scale multiplier
/// `scale` ([`LearnableScale::multiplier`]): what [`CrossKdLoss`] computes, in both of its
/// `forward`s. `student_aligned` is the student in the teacher's space
/// ([`Projector::project`](crate::Projector::project)); the teacher is detached.
///
/// Errors if the batch sizes or the embedding sizes differ, `rows` fall outside the batch,
/// `scale` is not `[1]` or the temperature is not a positive number.
///
/// # Shapes
/// - `student_aligned`, `teacher`: `[N, D_t]`, `scale` and the teacher's logit scale: `[1]`
///   -> `[1]`
pub fn cross_kd_loss<B: Backend>(
    student_aligned: &Embeddings<B>,
    teacher: &Embeddings<B>,
    scale: &Tensor<B, 1>,
    temperature: f64,
    rows: LocalRows,
) -> Result<Tensor<B, 1>, LossError> {
    check_pair("cross-KD", student_aligned, teacher, true, rows)?;
    check_scale("cross-KD", scale)?;
    check_temperature("cross-KD", temperature)?;
    let teacher = teacher.clone().detach();
    let (s_image, s_text) = cross_logits(student_aligned, &teacher, scale, rows);
    let (t_image, t_text) = clip_logits(&teacher, rows);
    Ok((kl_div_batchmean(s_image, t_image, temperature)
        + kl_div_batchmean(s_text, t_text, temperature))
    .div_scalar(2.0))
}

impl<B: Backend> DistillLoss<B> for CrossKdLoss<B> {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let value = cross_kd_loss(
            batch.student_aligned(),
            input.teacher(),
            &self.scale.multiplier(),
            self.temperature,
            input.rows(),
        )?;
        Ok(LossTerms::single(Self::NAME, value))
    }
}
