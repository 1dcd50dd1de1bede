//! AFD: augmented feature distillation (student-teacher feature fusion).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use super::common::{check_pair, check_scale};
use crate::error::LossError;
use crate::input::Embeddings;
use crate::loss::{BuiltinLossConfig, DistillLoss, LearnableScale, LearnableScaleConfig};
use crate::ops::{
    LocalRows, contrastive_cross_entropy, l2_normalize_smooth, local, scaled_similarity,
};
use crate::projector::{DistillBatch, eager};
use crate::terms::LossTerms;

/// Configuration of the [`AfdLoss`].
#[derive(Config, Debug)]
pub struct AfdLossConfig {
    /// The teacher's embedding size `D_t` (the fusion layers read `[ŝ ; t]`, `2 · D_t` wide).
    pub teacher_dim: usize,
    /// Output size of the fusion layers; `None`: `D_t`.
    #[config(default = "None")]
    pub fused_dim: Option<usize>,
    /// Whether the fusion layers have a bias (CLIP-KD's do).
    #[config(default = true)]
    pub bias: bool,
    /// The learnable logit scale `c_f` (CLIP-KD: raw, init `ln(1/0.07)`).
    #[config(default = "LearnableScaleConfig::new()")]
    pub scale: LearnableScaleConfig,
}

impl AfdLossConfig {
    /// Creates the loss on `device` (fusion layers initialized like PyTorch's `nn.Linear`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<AfdLoss<B>, LossError> {
        self.scale.validate("AFD")?;
        let fused = self.fused_dim.unwrap_or(self.teacher_dim);
        if self.teacher_dim == 0 || fused == 0 {
            return Err(LossError::InvalidConfig {
                what: "AFD sizes".into(),
                reason: format!(
                    "teacher_dim {} and fused_dim {fused} must be positive",
                    self.teacher_dim
                ),
            });
        }
        let linear = || {
            eager(
                LinearConfig::new(2 * self.teacher_dim, fused)
                    .with_bias(self.bias)
                    .init(device),
            )
        };
        Ok(AfdLoss {
            image_fusion: linear(),
            text_fusion: linear(),
            scale: self.scale.init(device),
        })
    }
}

impl BuiltinLossConfig for AfdLossConfig {
    type Loss<B: Backend> = AfdLoss<B>;
    const NAME: &'static str = "afd";
    const USES_ALIGNED_FEATURES: bool = true;

    fn defaults(teacher_dim: usize) -> Self {
        Self::new(teacher_dim)
    }

    fn init_loss<B: Backend>(&self, device: &B::Device) -> Result<AfdLoss<B>, LossError> {
        self.init(device)
    }

    fn check_sizes(
        &self,
        entry: &str,
        _student_dim: usize,
        teacher_dim: usize,
    ) -> Result<(), LossError> {
        if self.teacher_dim != teacher_dim {
            return Err(LossError::InvalidConfig {
                what: format!("loss `{entry}` (AFD) teacher_dim"),
                reason: format!(
                    "{} differs from the loss set's teacher_dim {teacher_dim}",
                    self.teacher_dim
                ),
            });
        }
        Ok(())
    }
}

/// Augmented feature distillation (term `"afd"`): contrastive loss on fused student-teacher
/// features, `f_img = normalize(W_v [ŝ_img ; t_img])`, `f_txt = normalize(W_t [ŝ_txt ; t_txt])`,
/// `½ [CE(c_f f_img f_txtᵀ, y) + CE(c_f f_txt f_imgᵀ, y)]`.
///
/// CLIP-KD concatenates after its projector but sizes the fusion layers
/// `Linear(D_s + D_t -> D_s)`, so it only runs when `D_s == D_t`; here they are
/// `Linear(2 · D_t -> D_t)` (the same layer when the sizes match), so any student works.
#[derive(Module, Debug)]
pub struct AfdLoss<B: Backend> {
    /// Image fusion layer `W_v` (CLIP-KD's `visual_fusion_proj`).
    pub image_fusion: Linear<B>,
    /// Text fusion layer `W_t` (CLIP-KD's `text_fusion_proj`).
    pub text_fusion: Linear<B>,
    /// The learnable logit scale `c_f` (CLIP-KD's `fusion_logit_scale`).
    pub scale: LearnableScale<B>,
}

impl<B: Backend> AfdLoss<B> {
    /// The term's name.
    pub const NAME: &'static str = AfdLossConfig::NAME;

    /// The loss of one batch; the same value as the loss in a [`LossSet`](crate::LossSet).
    ///
    /// What it needs beyond the embeddings:
    /// - its own learnable state: the fusion layers `W_v`, `W_t` and the scale `c_f`
    ///   (parameters of this module: train the module with the student, or use [`afd_loss`]
    ///   with layers and a scale of your own);
    /// - the student in the teacher's space: when `D_s != D_t`, map it with a (learnable)
    ///   [`Projector`](crate::Projector) first, as a loss set does.
    ///
    /// The teacher is detached. Errors if the batch sizes or the embedding sizes differ, or the
    /// fusion layers do not read `2 · D_t` features.
    ///
    /// # Shapes
    /// - `student`: `[N, D_t]` (aligned), `teacher`: `[N, D_t]` -> `[1]`
    ///
    /// ```
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_flex::Flex;
    /// use clipkd_losses::{AfdLossConfig, Embeddings, ProjectorConfig};
    ///
    /// let device = Default::default();
    /// let randn = |d| Tensor::<Flex, 2>::random([4, d], Distribution::Normal(0.0, 1.0), &device);
    /// let student = Embeddings::from_log_scale(randn(8), randn(8), Tensor::from_floats([2.659], &device))?;
    /// let teacher = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([4.6], &device))?;
    /// let afd = AfdLossConfig::new(12).init::<Flex>(&device)?; // fusion layers 24 -> 12, scale
    /// let projector = ProjectorConfig::new(8, 12).init::<Flex>(&device); // 8 != 12
    /// let loss = afd.forward(&projector.project(&student)?, &teacher)?;
    /// assert!(loss.into_scalar() > 0.0);
    /// # Ok::<(), clipkd_losses::LossError>(())
    /// ```
    pub fn forward(
        &self,
        student: &Embeddings<B>,
        teacher: &Embeddings<B>,
    ) -> Result<Tensor<B, 1>, LossError> {
        afd_loss(
            student,
            teacher,
            &self.image_fusion,
            &self.text_fusion,
            &self.scale.multiplier(),
            LocalRows::all(student.batch_size()),
        )
    }
}

/// AFD of this device's `rows` of a (gathered) batch, with the fusion layers `image_fusion`
/// (`W_v`), `text_fusion` (`W_t`) and the logit-scale multiplier `scale`
/// ([`LearnableScale::multiplier`]): what [`AfdLoss`] computes, in both of its `forward`s.
/// `student_aligned` is the student in the teacher's space
/// ([`Projector::project`](crate::Projector::project)); the teacher is detached.
///
/// Errors if the batch sizes or the embedding sizes differ, `rows` fall outside the batch, a
/// fusion layer does not read `2 · D_t` features or `scale` is not `[1]`.
///
/// # Shapes
/// - `student_aligned`, `teacher`: `[N, D_t]`; fusion layers `Linear(2 · D_t -> D_f)`;
///   `scale`: `[1]` -> `[1]`
pub fn afd_loss<B: Backend>(
    student_aligned: &Embeddings<B>,
    teacher: &Embeddings<B>,
    image_fusion: &Linear<B>,
    text_fusion: &Linear<B>,
    scale: &Tensor<B, 1>,
    rows: LocalRows,
) -> Result<Tensor<B, 1>, LossError> {
    check_pair("AFD", student_aligned, teacher, true, rows)?;
    check_scale("AFD", scale)?;
    for (modality, layer) in [("image", image_fusion), ("text", text_fusion)] {
        let [fusion_in, _] = layer.weight.dims();
        if fusion_in != 2 * teacher.dim() {
            return Err(LossError::DimMismatch {
                what: format!(
                    "AFD: {modality} fusion layer input (2 x the teacher's embedding size)"
                ),
                expected: fusion_in,
                got: 2 * teacher.dim(),
            });
        }
    }
    let t = teacher.clone().detach();
    let fuse = |linear: &Linear<B>, student: &Tensor<B, 2>, teacher: &Tensor<B, 2>| {
        l2_normalize_smooth(linear.forward(Tensor::cat(vec![student.clone(), teacher.clone()], 1)))
    };
    let fused_image = fuse(
        image_fusion,
        student_aligned.image_normalized(),
        t.image_normalized(),
    );
    let fused_text = fuse(
        text_fusion,
        student_aligned.text_normalized(),
        t.text_normalized(),
    );
    let per_image = scaled_similarity(local(&fused_image, rows), fused_text.clone(), scale);
    let per_text = scaled_similarity(local(&fused_text, rows), fused_image, scale);
    Ok((contrastive_cross_entropy(per_image, rows.offset)
        + contrastive_cross_entropy(per_text, rows.offset))
    .div_scalar(2.0))
}

impl<B: Backend> DistillLoss<B> for AfdLoss<B> {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let value = afd_loss(
            batch.student_aligned(),
            input.teacher(),
            &self.image_fusion,
            &self.text_fusion,
            &self.scale.multiplier(),
            input.rows(),
        )?;
        Ok(LossTerms::single(Self::NAME, value))
    }
}
