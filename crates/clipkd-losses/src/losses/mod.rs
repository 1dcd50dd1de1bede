//! The built-in losses, one module each: config, module, and the tensor-level function both of
//! the module's `forward`s call (re-exported in [`crate::functional`]).

mod afd;
mod common;
mod crd;
mod cross_kd;
mod distill;
mod fd;
mod gd;
mod icl;
mod mfd;
mod task;

pub use afd::{AfdLoss, AfdLossConfig, afd_loss};
pub use crd::{CrdLoss, CrdLossConfig, crd_loss};
pub use cross_kd::{CrossKdLoss, CrossKdLossConfig, cross_kd_loss};
pub use distill::{OpenClipDistillLoss, OpenClipDistillLossConfig, open_clip_distill_loss};
pub use fd::{FdLoss, FdLossConfig, FeatureDistance, fd_loss};
pub use gd::{GdLoss, GdLossConfig, GdScaleUse, contrastive_gradients, gd_loss};
pub use icl::{IclLoss, IclLossConfig, icl_loss};
pub use mfd::{MfdLoss, MfdLossConfig, mfd_loss};
pub use task::{TaskLoss, TaskLossConfig, task_loss};
