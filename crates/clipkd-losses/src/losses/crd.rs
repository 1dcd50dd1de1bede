//! CRD: contrastive relational distillation.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::common::{check_pair, check_temperature, clip_logits};
use crate::error::LossError;
use crate::input::Embeddings;
use crate::loss::{BuiltinLossConfig, DistillLoss};
use crate::ops::{LocalRows, kl_div_batchmean};
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

impl BuiltinLossConfig for CrdLossConfig {
    type Loss<B: Backend> = CrdLoss;
    const NAME: &'static str = CrdLoss::NAME;
    const USES_ALIGNED_FEATURES: bool = false;

    fn defaults(_teacher_dim: usize) -> Self {
        Self::new()
    }

    fn init_loss<B: Backend>(&self, _device: &B::Device) -> Result<CrdLoss, LossError> {
        self.init()
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

    /// The loss of one batch (every row an anchor); the same value as the loss in a
    /// [`LossSet`](crate::LossSet). It reads the student's *own* normalized embeddings, so
    /// the student and teacher sizes may differ and no projector is involved. The teacher is
    /// detached. [`crd_loss`] is the form for a gathered global batch.
    ///
    /// Errors if the batch sizes differ.
    ///
    /// # Shapes
    /// - `student`: `[N, D_s]`, `teacher`: `[N, D_t]`, logit scales `[1]` -> `[1]`
    ///
    /// ```
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_flex::Flex;
    /// use clipkd_losses::{CrdLossConfig, Embeddings};
    ///
    /// let device = Default::default();
    /// let randn = |d| Tensor::<Flex, 2>::random([4, d], Distribution::Normal(0.0, 1.0), &device);
    /// let student = Embeddings::from_log_scale(randn(8), randn(8), Tensor::from_floats([2.659], &device))?;
    /// let teacher = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([4.6], &device))?;
    /// let loss = CrdLossConfig::new().init()?.forward(&student, &teacher)?;
    /// assert!(loss.into_scalar() >= 0.0);
    /// # Ok::<(), clipkd_losses::LossError>(())
    /// ```
    pub fn forward<B: Backend>(
        &self,
        student: &Embeddings<B>,
        teacher: &Embeddings<B>,
    ) -> Result<Tensor<B, 1>, LossError> {
        crd_loss(
            student,
            teacher,
            self.temperature,
            LocalRows::all(student.batch_size()),
        )
    }
}

/// CRD of this device's `rows` of a (gathered) batch: what [`CrdLoss`] computes, in both of its
/// `forward`s. The teacher is detached.
///
/// Errors if the batch sizes differ, `rows` fall outside the batch or the temperature is not a
/// positive number.
///
/// # Shapes
/// - `student`: `[N, D_s]`, `teacher`: `[N, D_t]`, logit scales `[1]` -> `[1]`
pub fn crd_loss<B: Backend>(
    student: &Embeddings<B>,
    teacher: &Embeddings<B>,
    temperature: f64,
    rows: LocalRows,
) -> Result<Tensor<B, 1>, LossError> {
    check_pair("CRD", student, teacher, false, rows)?;
    check_temperature("CRD", temperature)?;
    let teacher = teacher.clone().detach();
    let (s_image, s_text) = clip_logits(student, rows);
    let (t_image, t_text) = clip_logits(&teacher, rows);
    Ok((kl_div_batchmean(s_image, t_image, temperature)
        + kl_div_batchmean(s_text, t_text, temperature))
    .div_scalar(2.0))
}

impl<B: Backend> DistillLoss<B> for CrdLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let value = crd_loss(
            input.student(),
            input.teacher(),
            self.temperature,
            input.rows(),
        )?;
        Ok(LossTerms::single(Self::NAME, value))
    }
}
