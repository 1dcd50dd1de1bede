//! FD: feature distillation.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::common::check_pair;
use crate::error::LossError;
use crate::input::Embeddings;
use crate::loss::{BuiltinLossConfig, DistillLoss};
use crate::ops::{LocalRows, cosine_distance_normalized, local, mse};
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// How FD and MFD compare the aligned student features with the teacher's.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FeatureDistance {
    /// Mean squared error over all `N · D_t` elements, as CLIP-KD.
    Mse,
    /// Mean over samples of `1 - cos(ŝ_i, t_i)` (= `D_t / 2` times the MSE of unit vectors,
    /// so it needs a weight about `D_t / 2` times smaller than MSE's for the same effect).
    Cosine,
}

impl FeatureDistance {
    pub(crate) fn apply<B: Backend>(
        self,
        student: &Tensor<B, 2>,
        teacher: &Tensor<B, 2>,
        rows: LocalRows,
    ) -> Tensor<B, 1> {
        let (s, t) = (local(student, rows), local(teacher, rows));
        match self {
            FeatureDistance::Mse => mse(s, t),
            FeatureDistance::Cosine => cosine_distance_normalized(s, t),
        }
    }
}

/// Configuration of the [`FdLoss`].
#[derive(Config, Debug)]
pub struct FdLossConfig {
    /// The distance (CLIP-KD: MSE).
    #[config(default = "FeatureDistance::Mse")]
    pub distance: FeatureDistance,
}

impl FdLossConfig {
    /// Creates the loss.
    pub fn init(&self) -> FdLoss {
        FdLoss {
            distance: self.distance,
        }
    }
}

impl BuiltinLossConfig for FdLossConfig {
    type Loss<B: Backend> = FdLoss;
    const NAME: &'static str = FdLoss::NAME;
    const USES_ALIGNED_FEATURES: bool = true;

    fn defaults(_teacher_dim: usize) -> Self {
        Self::new()
    }

    fn init_loss<B: Backend>(&self, _device: &B::Device) -> Result<FdLoss, LossError> {
        Ok(self.init())
    }
}

/// Feature distillation (term `"fd"`): `MSE(ŝ_img, t_img) + MSE(ŝ_txt, t_txt)` where
/// `ŝ = normalize(P s)` are the student's embeddings aligned by the loss set's projector
/// (identity when `D_s == D_t`) and `t` the teacher's normalized embeddings.
#[derive(Module, Clone, Debug)]
pub struct FdLoss {
    /// The distance.
    pub distance: FeatureDistance,
}

impl FdLoss {
    /// The term's name.
    pub const NAME: &'static str = "fd";

    /// The loss of one batch; the same value as the loss in a [`LossSet`](crate::LossSet).
    /// The student must already be in the teacher's space: when `D_s != D_t`, map it with a
    /// (learnable) [`Projector`](crate::Projector) first, as a loss set does. The teacher is
    /// detached. [`fd_loss`] is the form for a gathered global batch.
    ///
    /// Errors if the batch sizes or the embedding sizes differ.
    ///
    /// # Shapes
    /// - `student`: `[N, D_t]` (aligned), `teacher`: `[N, D_t]` -> `[1]`
    ///
    /// ```
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_flex::Flex;
    /// use clipkd_losses::{Embeddings, FdLossConfig, ProjectorConfig};
    ///
    /// let device = Default::default();
    /// let randn = |d| Tensor::<Flex, 2>::random([4, d], Distribution::Normal(0.0, 1.0), &device);
    /// let student = Embeddings::from_log_scale(randn(8), randn(8), Tensor::from_floats([2.659], &device))?;
    /// let teacher = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([4.6], &device))?;
    /// let fd = FdLossConfig::new().init();
    /// // 8 != 12: the student needs a projector into the teacher's space (train it too).
    /// assert!(fd.forward(&student, &teacher).is_err());
    /// let projector = ProjectorConfig::new(8, 12).init::<Flex>(&device);
    /// let loss = fd.forward(&projector.project(&student)?, &teacher)?;
    /// assert!(loss.into_scalar() > 0.0);
    /// # Ok::<(), clipkd_losses::LossError>(())
    /// ```
    pub fn forward<B: Backend>(
        &self,
        student: &Embeddings<B>,
        teacher: &Embeddings<B>,
    ) -> Result<Tensor<B, 1>, LossError> {
        fd_loss(
            student,
            teacher,
            self.distance,
            LocalRows::all(student.batch_size()),
        )
    }
}

/// FD of this device's `rows` of a (gathered) batch: what [`FdLoss`] computes, in both of its
/// `forward`s. `student_aligned` is the student in the teacher's space
/// ([`Projector::project`](crate::Projector::project)); the teacher is detached.
///
/// Errors if the batch sizes or the embedding sizes differ, or `rows` fall outside the batch.
///
/// # Shapes
/// - `student_aligned`, `teacher`: `[N, D_t]` -> `[1]`
pub fn fd_loss<B: Backend>(
    student_aligned: &Embeddings<B>,
    teacher: &Embeddings<B>,
    distance: FeatureDistance,
    rows: LocalRows,
) -> Result<Tensor<B, 1>, LossError> {
    check_pair("FD", student_aligned, teacher, true, rows)?;
    let (s, t) = (student_aligned, teacher.clone().detach());
    Ok(
        distance.apply(s.image_normalized(), t.image_normalized(), rows)
            + distance.apply(s.text_normalized(), t.text_normalized(), rows),
    )
}

impl<B: Backend> DistillLoss<B> for FdLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let value = fd_loss(
            batch.student_aligned(),
            input.teacher(),
            self.distance,
            input.rows(),
        )?;
        Ok(LossTerms::single(Self::NAME, value))
    }
}
