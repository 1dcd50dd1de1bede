//! CLIP models for Burn with open_clip 3.3.0 parity: ViT, ModifiedResNet and timm (open_clip's
//! `TimmModel`) vision towers, the
//! text transformer, open_clip model configs (and presets), and open_clip checkpoint import and
//! export.
//!
//! ```no_run
//! use burn_flex::Flex;
//! use clipkd_models::{ClipConfig, load_open_clip};
//!
//! let config = ClipConfig::preset("ViT-B-16")?;
//! let model = load_open_clip::<Flex>("ViT-B-16.safetensors", &config, &Default::default())?;
//! # Ok::<(), clipkd_models::ModelError>(())
//! ```
//!
//! Modules are generic over the backend and run on Flex, CUDA and wgpu. Training behaviour
//! (patch dropout, BatchNorm batch statistics) follows Burn's convention: it is on when the
//! backend is an autodiff backend.
#![warn(missing_docs)]

pub mod autocast;
mod batch_norm;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod encoder;
pub mod error;
pub mod host_init;
pub mod hub_cache;
pub mod hub_download;
mod param_count;
mod presets;
pub mod pretrained;
pub mod pretrained_model;
pub mod resnet;
mod shape;
pub mod source;
pub mod text;
pub mod timm;
pub mod transformer;
pub mod vit;

pub use checkpoint::{
    StoredDType, TensorSpec, load_open_clip, open_clip_state_dict_spec, save_open_clip,
};
pub use clip::{Clip, ClipOutput, TextProjection, VisionTower, l2_normalize};
pub use config::{
    Activation, ClipConfig, EfficientNetArch, GeluApproximate, MobileVitStage,
    MobileVitTransformer, ModifiedResNetConfig, PosEmbedType, ResNetBlock, TextConfig, TextPool,
    TextProjType, TimmConfig, TimmEfficientNetConfig, TimmMobileVitConfig, TimmPool, TimmProj,
    TimmResNetConfig, TimmSwinConfig, TimmTrunkConfig, VisionConfig, VisionPool, VitConfig,
};
pub use encoder::{ClipEncoder, EncoderShape};
pub use error::{KeyReport, ModelError, ShapeMismatch};
pub use hub_cache::HubCache;
pub use hub_download::HubClient;
pub use param_count::ParamCounts;
pub use pretrained::{Pretrained, pretrained, pretrained_models, pretrained_tags};
pub use pretrained_model::PretrainedModel;
pub use resnet::ModifiedResNet;
pub use source::ModelSource;
pub use text::TextTransformer;
pub use timm::TimmTower;
pub use vit::VisionTransformer;
