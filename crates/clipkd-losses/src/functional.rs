//! Every built-in loss as a function of tensors, for a (gathered) batch and this device's rows.
//!
//! These are the implementations: a loss module's tensor-level `forward` (e.g.
//! [`CrdLoss::forward`](crate::CrdLoss::forward)) calls its function with all rows, and its
//! [`DistillLoss`](crate::DistillLoss) `forward` (what a [`LossSet`](crate::LossSet) runs)
//! with the batch's [`LocalRows`](crate::LocalRows), so the three give the same values.
//!
//! The functions own no state: learnable state is an argument (ICL's, AFD's and cross-KD's
//! logit-scale multiplier, AFD's fusion layers). A student that the loss compares with the
//! teacher's space (`student_aligned`) must already be there: when `D_s != D_t`, map it with
//! [`Projector::project`](crate::Projector::project). The teacher is always detached.
//! Pass [`LocalRows::all`](crate::LocalRows::all) on one device.
//!
//! | function | student | learnable state |
//! |---|---|---|
//! | [`task_loss`] | own | — |
//! | [`crd_loss`] | own | — |
//! | [`open_clip_distill_loss`] | own | — |
//! | [`fd_loss`] | aligned | (projector) |
//! | [`mfd_loss`] | aligned, and its masked view | (projector) |
//! | [`gd_loss`] | aligned | (projector) |
//! | [`icl_loss`] | aligned | scale, (projector) |
//! | [`afd_loss`] | aligned | fusion layers, scale, (projector) |
//! | [`cross_kd_loss`] | aligned | scale, (projector) |
//!
//! ```
//! use burn::tensor::{Distribution, Tensor};
//! use burn_flex::Flex;
//! use clipkd_losses::functional::icl_loss;
//! use clipkd_losses::{Embeddings, LocalRows};
//!
//! let device = Default::default();
//! let randn = |d| Tensor::<Flex, 2>::random([6, d], Distribution::Normal(0.0, 1.0), &device);
//! let student = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([2.659], &device))?;
//! let teacher = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([4.6], &device))?;
//! let scale = Tensor::from_floats([2.659], &device); // your own ICL scale
//! let all = icl_loss(&student, &teacher, &scale, LocalRows::all(6))?;
//! // Rows 0..3 and 3..6 as two devices' shares: their mean is the whole batch's loss.
//! let first = icl_loss(&student, &teacher, &scale, LocalRows { offset: 0, len: 3 })?;
//! let second = icl_loss(&student, &teacher, &scale, LocalRows { offset: 3, len: 3 })?;
//! let mean = (first + second).div_scalar(2.0);
//! assert!((mean.into_scalar() - all.into_scalar()).abs() < 1e-5);
//! # Ok::<(), clipkd_losses::LossError>(())
//! ```

pub use crate::losses::{
    afd_loss, crd_loss, cross_kd_loss, fd_loss, gd_loss, icl_loss, mfd_loss,
    open_clip_distill_loss, task_loss,
};
