//! The clipkd learner: distill a CLIP student from a frozen teacher (or train it alone).
//!
//! - [`optim`]: AdamW with CLIP-KD's parameter groups;
//! - [`embed`]: batched inference from image files and texts to embeddings;
//! - [`step`]: one distillation step (teacher forward without autodiff, student forward,
//!   losses, backward, optimizer, `logit_scale` clamp).
#![warn(missing_docs)]

pub mod embed;
pub mod error;
pub mod eval;
pub mod optim;
pub mod step;

pub use error::TrainError;
pub use optim::{AdamWParams, GroupKind, GroupedAdamW, excluded_from_weight_decay};
pub use step::{DistillModel, distill_optimizer, distill_terms, train_step};
