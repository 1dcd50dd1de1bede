//! clipkd: distill small CLIP models from large teacher CLIP models (CLIP-KD, Yang et al.,
//! CVPR 2024) in pure Rust on Burn.
//!
//! This facade crate gives the whole family through one dependency (`cargo add clipkd`):
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`models`] | `clipkd-models` | open_clip's ViT, ModifiedResNet and text transformer, configs, checkpoints in and out |
//! | [`data`] | `clipkd-data` | the CLIP tokenizer, image decoding and transforms, datasets and the loader |
//! | [`losses`] | `clipkd-losses` | every CLIP-KD loss as a Burn module, composable in a `LossSet` |
//! | [`train`] | `clipkd-train` | the trainer: recipe, checkpoints and resume, evaluation, metrics, the demo |
//!
//! Backends are cargo features: `flex` (the CPU, default), `cuda`, `wgpu`. Everything is
//! generic over `B: Backend`, so the same code runs on each.
//!
//! ```rust,ignore
//! use clipkd::losses::{LossPreset, LossSetConfig};
//! use clipkd::models::{ClipConfig, load_open_clip};
//!
//! let teacher = load_open_clip::<B>("teacher.safetensors", &ClipConfig::preset("ViT-L-14")?, &device)?;
//! let student = ClipConfig::preset("ViT-B-16")?.init::<B>(&device)?;
//! let losses = LossSetConfig::preset(LossPreset::ClipKd, 512, 768).init::<B>(&device)?;
//! ```
//!
//! The `clipkd` binary (`clipkd demo`, `distill`, `train`, `eval`, `embed`, `export`, `bench`,
//! `plot`) is built from this crate; see the repository's README and `docs/`.
#![warn(missing_docs)]

/// The tokenizer, image preprocessing, datasets and the data loader (`clipkd-data`).
pub use clipkd_data as data;
/// Every CLIP-KD distillation loss and their composition (`clipkd-losses`).
pub use clipkd_losses as losses;
/// CLIP models, open_clip configs and checkpoints (`clipkd-models`).
pub use clipkd_models as models;
/// The trainer, evaluation, checkpoints and the demo (`clipkd-train`).
pub use clipkd_train as train;
