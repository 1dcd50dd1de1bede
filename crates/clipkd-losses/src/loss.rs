//! The loss trait, the trait every built-in loss's config implements, and the learnable logit
//! scale shared by ICL, AFD and cross-KD.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::LossError;
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// A distillation loss: reads a [`DistillBatch`] and returns its named, *unweighted* terms.
///
/// Implement it for your own module to use it beside the built-in losses in a
/// [`LossSet`](crate::LossSet) (see `crates/clipkd-train/examples/custom_loss.rs`).
///
/// The built-in losses also have an inherent, tensor-level `forward` (e.g.
/// [`CrdLoss::forward`](crate::CrdLoss::forward) on two [`Embeddings`](crate::Embeddings)),
/// which method-call syntax picks first; call this one as `DistillLoss::forward(&loss, &batch)`.
pub trait DistillLoss<B: Backend> {
    /// The loss's terms for this batch (unweighted: the loss set applies the weights).
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError>;

    /// Whether this loss reads the student's masked-view image embeddings (MFD does).
    fn requires_masked_view(&self) -> bool {
        false
    }

    /// The intermediate features this loss reads from the input
    /// ([`DistillInput::feature`](crate::DistillInput::feature)), and which model features a
    /// trainer should fill them with. Default: none.
    fn feature_requests(&self) -> Vec<FeatureRequest> {
        Vec::new()
    }
}

/// A pair of intermediate features a loss reads: the trainer takes image feature `student`
/// of the student and `teacher` of the teacher (names as their
/// `ClipEncoder::image_feature_names` list them, e.g. `visual.transformer.resblocks.3`) and
/// puts them into the input under `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeatureRequest {
    /// The key of the pair in the input ([`DistillInput::with_features`](crate::DistillInput::with_features)).
    pub name: String,
    /// The student's feature.
    pub student: String,
    /// The teacher's feature.
    pub teacher: String,
}

impl FeatureRequest {
    /// Feature `student` of the student and `teacher` of the teacher, under `name`.
    pub fn new(
        name: impl Into<String>,
        student: impl Into<String>,
        teacher: impl Into<String>,
    ) -> Self {
        FeatureRequest {
            name: name.into(),
            student: student.into(),
            teacher: teacher.into(),
        }
    }
}

/// What a [`LossSet`](crate::LossSet) and a run config need to know about a built-in loss:
/// implemented by the config of each one (`CrdLossConfig`, …).
///
/// The list of built-in losses is one macro invocation in `builtin.rs`, which generates
/// [`LossConfig`](crate::LossConfig), [`BuiltinLoss`](crate::BuiltinLoss) and
/// [`LossKind`](crate::LossKind) and their dispatch from these items. Adding a built-in loss
/// is: its module and config, this trait for the config, and one line in that list.
pub trait BuiltinLossConfig: Sized {
    /// The loss module the config creates.
    type Loss<B: Backend>: Module<B> + DistillLoss<B>;

    /// The loss's term name, and its default entry name in a loss set (`"crd"`).
    const NAME: &'static str;

    /// Whether the loss reads the student features aligned to the teacher's space (so a loss
    /// set needs a projector when `D_s != D_t`).
    const USES_ALIGNED_FEATURES: bool;

    /// Whether the loss reads the teacher's embeddings.
    const NEEDS_TEACHER: bool = true;

    /// Whether the loss reads the student's masked-view image embeddings (MFD does).
    const REQUIRES_MASKED_VIEW: bool = false;

    /// The configuration with every option at its default, for a teacher of embedding size
    /// `teacher_dim` (only AFD's depends on it).
    fn defaults(teacher_dim: usize) -> Self;

    /// Creates the loss on `device`; errors name the invalid option.
    fn init_loss<B: Backend>(&self, device: &B::Device) -> Result<Self::Loss<B>, LossError>;

    /// Checks the options that depend on the loss set's sizes; `entry` names the entry in
    /// the error. Default: nothing to check.
    fn check_sizes(
        &self,
        entry: &str,
        student_dim: usize,
        teacher_dim: usize,
    ) -> Result<(), LossError> {
        let _ = (entry, student_dim, teacher_dim);
        Ok(())
    }
}

/// How a learnable logit scale `c` becomes the multiplier of the logits.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ScaleMode {
    /// Multiply by `c` itself, as CLIP-KD releases ICL and AFD (init `ln(1/0.07) ≈ 2.659`, so an
    /// effective temperature of ≈ 0.376). The default, to reproduce the paper.
    Raw,
    /// Multiply by `exp(c)`, like CLIP's own `logit_scale` (init 2.659 gives 14.3).
    Exp,
}

/// Configuration of a [`LearnableScale`].
#[derive(Config, Debug)]
pub struct LearnableScaleConfig {
    /// How the parameter becomes the multiplier.
    #[config(default = "ScaleMode::Raw")]
    pub mode: ScaleMode,
    /// Initial value of the parameter (CLIP-KD: `ln(1/0.07)`).
    #[config(default = 2.659_260_036_932_778)]
    pub init: f64,
}

impl LearnableScaleConfig {
    /// Creates the scale on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LearnableScale<B> {
        LearnableScale {
            value: Param::from_tensor(Tensor::from_floats([self.init as f32], device)),
            mode: self.mode,
        }
    }

    pub(crate) fn validate(&self, what: &str) -> Result<(), LossError> {
        if !self.init.is_finite() {
            return Err(LossError::InvalidConfig {
                what: format!("{what} logit scale init"),
                reason: format!("{} is not finite", self.init),
            });
        }
        Ok(())
    }
}

/// A learnable scalar logit scale owned by a loss (ICL's, AFD's, cross-KD's), saved with the
/// loss's record and trained by the optimizer.
#[derive(Module, Debug)]
pub struct LearnableScale<B: Backend> {
    /// The parameter `c`, shape `[1]`.
    pub value: Param<Tensor<B, 1>>,
    /// How `c` becomes the multiplier.
    pub mode: ScaleMode,
}

impl<B: Backend> LearnableScale<B> {
    /// The multiplier of the logits: `c` or `exp(c)`, shape `[1]`.
    pub fn multiplier(&self) -> Tensor<B, 1> {
        match self.mode {
            ScaleMode::Raw => self.value.val(),
            ScaleMode::Exp => self.value.val().exp(),
        }
    }
}
