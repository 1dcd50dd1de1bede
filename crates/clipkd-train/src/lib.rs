//! The clipkd learner: distill a CLIP student from a frozen teacher (or train it alone).
//!
//! - [`config`]: the run config (TOML/JSON, the paper's recipe as defaults, presets, CLI
//!   overrides);
//! - [`trainer`]: validation of a run before any work, then the training loop
//!   ([`PreparedRun`]), for the open_clip models of a config or any [`Student`], teacher
//!   ([`clipkd_models::ClipEncoder`]) and loss module ([`clipkd_losses::DistillObjective`]);
//! - [`student`]: what the trainer needs of a student beyond an encoder;
//! - [`step`]: one optimizer step (teacher forward without autodiff, student forward, losses,
//!   backward with gradient accumulation, global-norm clipping, AdamW, `logit_scale` clamp);
//! - [`optim`]: AdamW with CLIP-KD's parameter groups;
//! - [`schedule`]: linear warmup and cosine decay (open_clip's `cosine_lr`);
//! - [`checkpoint`]: atomic checkpoints, exact resume, export of the student;
//! - [`metrics`], [`progress`]: JSONL/CSV metrics, the progress bar;
//! - [`eval`]: zero-shot classification and retrieval;
//! - [`embed`]: batched inference from image files and texts to embeddings;
//! - `plot` (feature `plots`): PNG plots of a run's loss terms, learning rate and evaluations,
//!   drawn at the end of a run when `run.plots` is on;
//! - `demo` (feature `demo`, which includes `plots` and `clipkd-data`'s `shapes`): the
//!   download-free demonstration that `clipkd demo` runs.
//!
//! # Features
//! Both are off by default, so that depending on `clipkd-train` to train compiles no
//! rasterizer, PNG writer or plotting stack. Without `plots`, a run whose config asks for plots
//! (`run.plots = true`) is refused by [`PreparedRun`]'s checks, before any work. The `clipkd`
//! crate turns on `plots` always and `demo` by default.
#![warn(missing_docs)]

mod atomic_write;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod distributed;
pub mod embed;
pub mod error;
pub mod eval;
pub mod fault;
pub mod finite;
pub mod loss_scale;
pub mod metrics;
pub mod optim;
#[cfg(feature = "plots")]
pub mod plot;
pub mod progress;
pub mod run_dir;
pub mod schedule;
pub mod step;
pub mod student;
pub mod teacher_cache;
pub mod trainer;

pub use config::{Override, RunConfig, TrainMode};
pub use error::TrainError;
pub use optim::{AdamWParams, GroupKind, GroupedAdamW, excluded_from_weight_decay};
pub use step::{
    DistillModel, MicroBatch, StepOptions, StepOutput, distill_optimizer, distill_terms, train_step,
};
pub use student::Student;
pub use trainer::{Models, PreparedRun, RunSummary};
