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
//! | [`train`] | `clipkd-train` | the trainer: recipe, checkpoints and resume, evaluation, metrics, plots, the demo (feature `demo`) |
//!
//! Backends are cargo features: `flex` (the CPU, default), `cuda`, `wgpu`. Everything is
//! generic over `B: Backend`, so the same code runs on each. The feature `demo` (default)
//! brings `clipkd demo` and `train::demo` with its rendered shapes dataset
//! (`data::dataset::shapes`); `train::plot` is always there.
//!
//! ```rust,no_run
//! use clipkd::backend::{Autodiff, Cpu};
//! use clipkd::losses::{LossPreset, LossSetConfig};
//! use clipkd::models::{ClipConfig, load_open_clip};
//!
//! type B = Autodiff<Cpu>; // the student trains: an autodiff backend
//! let device = Default::default();
//! let teacher = load_open_clip::<Cpu>("teacher.safetensors", &ClipConfig::preset("ViT-L-14")?, &device)?;
//! let student = ClipConfig::preset("ViT-B-16")?.init::<B>(&device)?;
//! let losses = LossSetConfig::preset(LossPreset::ClipKd, 512, 768).init::<B>(&device)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`burn`] is the Burn crate clipkd is built on (use it rather than adding another version of
//! Burn), and [`backend`] names the backends compiled in.
//!
//! The `clipkd` binary (`clipkd demo` with the `demo` feature, `distill`, `train`, `eval`,
//! `embed`, `export`, `bench`, `plot`) is built from this crate; see the repository's README
//! and `docs/`.
#![warn(missing_docs)]

/// The tokenizer, image preprocessing, datasets and the data loader (`clipkd-data`).
pub use clipkd_data as data;
/// Every CLIP-KD distillation loss and their composition (`clipkd-losses`).
pub use clipkd_losses as losses;
/// CLIP models, open_clip configs and checkpoints (`clipkd-models`).
pub use clipkd_models as models;
/// The trainer, evaluation, checkpoints, plots and (feature `demo`) the demo (`clipkd-train`).
pub use clipkd_train as train;

/// The Burn crate clipkd is built on (Burn 0.21): use it for `Tensor`, `Module` and the
/// backends, so that your code and clipkd agree on one Burn.
pub use burn;

/// The backends compiled in (cargo features), as Burn types: inference on `Cpu`, `Cuda` or
/// `Wgpu`; training on `Autodiff<...>` of one of them.
pub mod backend {
    pub use burn::backend::Autodiff;

    /// The CPU: Burn's Flex backend (pure Rust, SIMD, threads). Feature `flex` (default).
    #[cfg(feature = "flex")]
    pub type Cpu = burn_flex::Flex;

    /// NVIDIA GPUs (CUDA through NVRTC at run time), `f32` tensors. Feature `cuda`.
    #[cfg(feature = "cuda")]
    pub type Cuda = burn::backend::Cuda<f32, i32>;

    /// Any GPU through wgpu (Vulkan, Metal, DX12), `f32` tensors. Feature `wgpu`.
    #[cfg(feature = "wgpu")]
    pub type Wgpu = burn::backend::Wgpu<f32, i32>;

    /// Choosing the wgpu adapter by number, with errors that name what exists.
    #[cfg(feature = "wgpu")]
    pub mod wgpu_adapter;
}
