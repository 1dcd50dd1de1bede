//! Model configs in open_clip's JSON schema (`model_configs/*.json`), typed.
//!
//! - the types: [`ClipConfig`] with its vision tower ([`VisionConfig`]: [`VitConfig`],
//!   [`ModifiedResNetConfig`] or [`TimmConfig`]) and text tower ([`TextConfig`]), with
//!   open_clip's defaults;
//! - reading and writing open_clip 3.3.0's model-config JSON
//!   ([`ClipConfig::from_open_clip_json_str`], [`ClipConfig::to_open_clip_json`]; serde uses
//!   the same format). Fields that change the math are either implemented or rejected with an
//!   error naming the field and its value; fields open_clip's `CLIP` class itself ignores are
//!   accepted and ignored the same way; unknown fields are errors, as they are for open_clip's
//!   dataclasses;
//! - bundled presets ([`ClipConfig::preset`], [`ClipConfig::resolve`]);
//! - validation ([`ClipConfig::validate`] and each tower's `validate`).
//!
//! Models are built from configs with `init`, as Burn's module configs are:
//! [`ClipConfig::init`] for a whole model, or one tower alone with [`VitConfig::init`],
//! [`ModifiedResNetConfig::init`], [`VisionConfig::init`] or [`TextConfig::init`].

mod open_clip;
pub(crate) use open_clip::read_json_file;
mod timm;
mod types;
mod validate;

pub(crate) use timm::make_divisible;
pub use timm::{
    EfficientNetArch, MobileVitStage, MobileVitTransformer, ResNetBlock, TimmConfig,
    TimmEfficientNetConfig, TimmMobileVitConfig, TimmPool, TimmProj, TimmResNetConfig,
    TimmSwinConfig, TimmTrunkConfig,
};
pub use types::{
    Activation, ClipConfig, DEFAULT_LOGIT_SCALE, GeluApproximate, ModifiedResNetConfig,
    PosEmbedType, TextConfig, TextPool, TextProjType, VisionConfig, VisionPool, VitConfig,
};
pub(crate) use validate::check_embed_dim;
