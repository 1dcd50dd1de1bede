//! The built-in losses, one module each.

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

pub use afd::{AfdLoss, AfdLossConfig};
pub use crd::{CrdLoss, CrdLossConfig};
pub use cross_kd::{CrossKdLoss, CrossKdLossConfig};
pub use distill::{OpenClipDistillLoss, OpenClipDistillLossConfig};
pub use fd::{FdLoss, FdLossConfig, FeatureDistance};
pub use gd::{GdLoss, GdLossConfig, GdScaleUse, contrastive_gradients};
pub use icl::{IclLoss, IclLossConfig};
pub use mfd::{MfdLoss, MfdLossConfig};
pub use task::{TaskLoss, TaskLossConfig};
