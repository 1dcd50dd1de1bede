//! MFD: masked feature distillation.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::common::check_pair;
use super::fd::FeatureDistance;
use crate::error::LossError;
use crate::input::Embeddings;
use crate::loss::{BuiltinLossConfig, DistillLoss};
use crate::ops::{LocalRows, l2_normalize_smooth};
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// Configuration of the [`MfdLoss`].
#[derive(Config, Debug)]
pub struct MfdLossConfig {
    /// The distance (CLIP-KD: MSE).
    #[config(default = "FeatureDistance::Mse")]
    pub distance: FeatureDistance,
    /// Whether to add FD's text term `MSE(ŝ_txt, t_txt)` (CLIP-KD's MFD ablation is FD with a
    /// masked image, text included). Turn it off when FD is in the same set.
    #[config(default = true)]
    pub include_text: bool,
}

impl MfdLossConfig {
    /// Creates the loss.
    pub fn init(&self) -> MfdLoss {
        MfdLoss {
            distance: self.distance,
            include_text: self.include_text,
        }
    }
}

impl BuiltinLossConfig for MfdLossConfig {
    type Loss<B: Backend> = MfdLoss;
    const NAME: &'static str = MfdLoss::NAME;
    const USES_ALIGNED_FEATURES: bool = true;
    const REQUIRES_MASKED_VIEW: bool = true;

    fn defaults(_teacher_dim: usize) -> Self {
        Self::new()
    }

    fn init_loss<B: Backend>(&self, _device: &B::Device) -> Result<MfdLoss, LossError> {
        Ok(self.init())
    }
}

/// Masked feature distillation (term `"mfd"`): FD where the student's image side comes from a
/// *masked* view of the images (the teacher sees the full images):
/// `MSE(normalize(P s_img_masked), t_img) [+ MSE(ŝ_txt, t_txt)]`.
///
/// It reads [`DistillInput::with_masked_student_image`](crate::DistillInput::with_masked_student_image)
/// (e.g. `Clip::encode_image_masked(images, 0.75)`: MAE-style random per-sample patch keep, CLS
/// kept). Only ViT students have a masked forward: check a loss set with
/// [`LossSetConfig::check_student`](crate::LossSetConfig::check_student) when configuring.
/// (CLIP-KD's released MFD discards the masked forward, so it equals FD; this one is real.)
#[derive(Module, Clone, Debug)]
pub struct MfdLoss {
    /// The distance.
    pub distance: FeatureDistance,
    /// Whether the text term is included.
    pub include_text: bool,
}

impl MfdLoss {
    /// The term's name.
    pub const NAME: &'static str = "mfd";

    /// The loss of one batch; the same value as the loss in a [`LossSet`](crate::LossSet).
    /// `student_masked_image` is the student's raw image embeddings of the masked view and
    /// `student` its embeddings of the full batch (MFD reads their text side), both already in
    /// the teacher's space: when `D_s != D_t`, map them with a (learnable)
    /// [`Projector`](crate::Projector) first (`project_image` and `project`), as a loss set
    /// does. The teacher is detached. [`mfd_loss`] is the form for a gathered global batch.
    ///
    /// Errors if the batch sizes or the embedding sizes differ.
    ///
    /// # Shapes
    /// - `student_masked_image`: `[N, D_t]` (raw), `student`, `teacher`: `[N, D_t]` -> `[1]`
    ///
    /// ```
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_flex::Flex;
    /// use clipkd_losses::{Embeddings, MfdLossConfig, ProjectorConfig};
    ///
    /// let device = Default::default();
    /// let randn = |d| Tensor::<Flex, 2>::random([4, d], Distribution::Normal(0.0, 1.0), &device);
    /// let student = Embeddings::from_log_scale(randn(8), randn(8), Tensor::from_floats([2.659], &device))?;
    /// let masked_image = randn(8); // e.g. `Clip::encode_image_masked(images, 0.75)`
    /// let teacher = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([4.6], &device))?;
    /// let projector = ProjectorConfig::new(8, 12).init::<Flex>(&device); // 8 != 12
    /// let loss = MfdLossConfig::new().init().forward(
    ///     &projector.project_image(&masked_image)?,
    ///     &projector.project(&student)?,
    ///     &teacher,
    /// )?;
    /// assert!(loss.into_scalar() > 0.0);
    /// # Ok::<(), clipkd_losses::LossError>(())
    /// ```
    pub fn forward<B: Backend>(
        &self,
        student_masked_image: &Tensor<B, 2>,
        student: &Embeddings<B>,
        teacher: &Embeddings<B>,
    ) -> Result<Tensor<B, 1>, LossError> {
        mfd_loss(
            &l2_normalize_smooth(student_masked_image.clone()),
            student,
            teacher,
            self.distance,
            self.include_text,
            LocalRows::all(student.batch_size()),
        )
    }
}

/// MFD of this device's `rows` of a (gathered) batch: what [`MfdLoss`] computes, in both of
/// its `forward`s. `masked_image_aligned` is the student's masked-view image embeddings in the
/// teacher's space, *normalized* (`normalize(P s_img_masked)`), and `student_aligned` the
/// student in the teacher's space ([`Projector::project`](crate::Projector::project)), whose
/// text side is used when `include_text`; the teacher is detached.
///
/// Errors if the batch sizes or the embedding sizes differ, or `rows` fall outside the batch.
///
/// # Shapes
/// - `masked_image_aligned`, `student_aligned`, `teacher`: `[N, D_t]` -> `[1]`
pub fn mfd_loss<B: Backend>(
    masked_image_aligned: &Tensor<B, 2>,
    student_aligned: &Embeddings<B>,
    teacher: &Embeddings<B>,
    distance: FeatureDistance,
    include_text: bool,
    rows: LocalRows,
) -> Result<Tensor<B, 1>, LossError> {
    check_pair("MFD", student_aligned, teacher, true, rows)?;
    let expected = [teacher.batch_size(), teacher.dim()];
    if masked_image_aligned.dims() != expected {
        return Err(LossError::ShapeMismatch {
            what: "MFD: student masked-view image embeddings in the teacher's space".into(),
            expected: expected.to_vec(),
            got: masked_image_aligned.dims().to_vec(),
        });
    }
    let t = teacher.clone().detach();
    let mut value = distance.apply(masked_image_aligned, t.image_normalized(), rows);
    if include_text {
        value =
            value + distance.apply(student_aligned.text_normalized(), t.text_normalized(), rows);
    }
    Ok(value)
}

impl<B: Backend> DistillLoss<B> for MfdLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let masked = batch
            .masked_image_aligned()
            .ok_or_else(|| LossError::MissingMaskedView {
                loss: Self::NAME.into(),
            })?;
        let input = batch.input();
        let value = mfd_loss(
            masked,
            batch.student_aligned(),
            input.teacher(),
            self.distance,
            self.include_text,
            input.rows(),
        )?;
        Ok(LossTerms::single(Self::NAME, value))
    }

    fn requires_masked_view(&self) -> bool {
        MfdLossConfig::REQUIRES_MASKED_VIEW
    }
}
