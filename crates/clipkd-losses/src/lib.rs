//! CLIP-KD's distillation losses as composable Burn modules.
//!
//! Every loss reads one input, a [`DistillInput`] of student and teacher embeddings (plus,
//! optionally, the student's masked view and intermediate features), and returns named terms
//! ([`LossTerms`]). Losses take plain tensors: this crate does not depend on any model, so
//! research code can use the losses with any pair of models.
//!
//! | loss | term | paper weight |
//! |---|---|---|
//! | [`TaskLoss`]: CLIP InfoNCE | `task` | 1 |
//! | [`CrdLoss`]: KL of teacher vs student similarity distributions | `crd` | 1 |
//! | [`FdLoss`]: MSE of aligned features | `fd` | 2000 |
//! | [`MfdLoss`]: FD on the student's masked view | `mfd` | 2000 |
//! | [`GdLoss`]: MSE of contrastive gradients | `gd` | 1e8 |
//! | [`IclLoss`]: student anchors vs teacher candidates | `icl` | 1 |
//! | [`AfdLoss`]: contrastive loss on fused features | `afd` | 1 |
//! | [`CrossKdLoss`]: KL of cross-model logits | `cross_kd` | 0 |
//! | [`OpenClipDistillLoss`]: open_clip's soft cross entropy | `distill` | 1 |
//!
//! A [`LossSet`] is their weighted sum (built in code or from a [`LossSetConfig`], with the
//! paper's recipe and ablations as [`LossPreset`]s) and owns the [`Projector`] that maps student
//! embeddings into the teacher's space when the sizes differ.
//!
//! Each loss also works on its own, in one call: its tensor-level `forward` takes two
//! [`Embeddings`] (e.g. [`CrdLoss::forward`]), and [`functional`] has every loss as a function
//! of tensors and this device's [`LocalRows`]. The list of built-in losses is one macro
//! invocation ([`builtin`]).
//!
//! ```
//! use burn::tensor::Tensor;
//! use burn_flex::Flex;
//! use clipkd_losses::{DistillInput, Embeddings, LossSetConfig};
//!
//! let device = Default::default();
//! let losses = LossSetConfig::clip_kd(8, 12).init::<Flex>(&device)?;
//! let student = Embeddings::<Flex>::from_log_scale(
//!     Tensor::random([4, 8], burn::tensor::Distribution::Default, &device),
//!     Tensor::random([4, 8], burn::tensor::Distribution::Default, &device),
//!     Tensor::from_floats([2.659], &device),
//! )?;
//! let teacher = Embeddings::from_log_scale(
//!     Tensor::random([4, 12], burn::tensor::Distribution::Default, &device),
//!     Tensor::random([4, 12], burn::tensor::Distribution::Default, &device),
//!     Tensor::from_floats([4.6], &device),
//! )?;
//! let terms = losses.forward(&DistillInput::new(student, teacher)?)?;
//! let names: Vec<_> = terms.iter().map(|t| t.name.as_str()).collect();
//! assert_eq!(names, ["task", "crd", "icl", "fd"]);
//! let total = terms.total()?; // call `backward` on this with an autodiff backend
//! # let _ = total;
//! # Ok::<(), clipkd_losses::LossError>(())
//! ```
#![warn(missing_docs)]

pub mod builtin;
pub mod error;
pub mod functional;
pub mod input;
pub mod loss;
pub mod losses;
pub mod objective;
pub mod ops;
pub mod projector;
pub mod set;
pub mod terms;

pub use builtin::{BuiltinLoss, LossConfig, LossKind};
pub use error::LossError;
pub use input::{DistillInput, Embeddings, FeaturePair};
pub use loss::{
    BuiltinLossConfig, DistillLoss, FeatureRequest, LearnableScale, LearnableScaleConfig, ScaleMode,
};
pub use losses::{
    AfdLoss, AfdLossConfig, CrdLoss, CrdLossConfig, CrossKdLoss, CrossKdLossConfig, FdLoss,
    FdLossConfig, FeatureDistance, GdLoss, GdLossConfig, GdScaleUse, IclLoss, IclLossConfig,
    MfdLoss, MfdLossConfig, OpenClipDistillLoss, OpenClipDistillLossConfig, TaskLoss,
    TaskLossConfig, contrastive_gradients,
};
pub use objective::DistillObjective;
pub use ops::LocalRows;
pub use projector::{DistillBatch, Projector, ProjectorConfig};
pub use set::{LossPreset, LossSet, LossSetConfig, WeightedLossConfig};
pub use terms::{LossTerm, LossTerms};
