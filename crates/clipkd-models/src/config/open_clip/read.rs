//! Reading open_clip model-config JSON: each JSON object is consumed field by field
//! ([`Section`]), with open_clip's defaults for absent fields, and whatever is left over is an
//! error.

use serde_json::{Map, Value, json};

use super::section::{Section, unsupported};
use super::timm::parse_timm;
use crate::config::types::{
    Activation, ClipConfig, DEFAULT_LOGIT_SCALE, ModifiedResNetConfig, PosEmbedType, TextConfig,
    TextPool, TextProjType, VisionConfig, VisionPool, VitConfig,
};
use crate::config::validate::invalid;
use crate::error::ModelError;

/// A config from an open_clip model-config JSON value: a model config, or a Hugging Face hub
/// `open_clip_config.json` whose model config sits under `model_cfg`.
pub(super) fn clip_from_value(value: Value) -> Result<ClipConfig, ModelError> {
    let mut top = Section::new("", value)?;
    if let Some(model_cfg) = top.take("model_cfg") {
        let _ = top.take("preprocess_cfg");
        top.finish()?;
        return clip_from_value(model_cfg);
    }
    parse_clip(top)
}

fn parse_clip(mut top: Section) -> Result<ClipConfig, ModelError> {
    if top.bool("custom_text", false)? {
        return Err(unsupported(
            "custom_text",
            &json!(true),
            "open_clip's CustomTextCLIP (text tower under `text.`, HF text models) is not implemented",
        ));
    }
    if let Some(v) = top.take("multimodal_cfg") {
        return Err(unsupported(
            "multimodal_cfg",
            &v,
            "CoCa models are not implemented",
        ));
    }
    let embed_dim = top.required_usize("embed_dim")?;
    let activation = if top.bool("quick_gelu", false)? {
        Activation::QuickGelu
    } else {
        Activation::Gelu
    };
    let init_logit_scale = top.f64("init_logit_scale", DEFAULT_LOGIT_SCALE)?;
    let init_logit_bias = top.opt_f64("init_logit_bias")?;
    let nonscalar_logit_scale = top.bool("nonscalar_logit_scale", false)?;
    let vision = match top.take("vision_cfg") {
        Some(v) => parse_vision(Section::new("vision_cfg", v)?, activation)?,
        None => return Err(invalid("vision_cfg", &Value::Null, "required")),
    };
    let text = match top.take("text_cfg") {
        Some(v) => parse_text(Section::new("text_cfg", v)?, activation)?,
        None => return Err(invalid("text_cfg", &Value::Null, "required")),
    };
    top.finish()?;
    let config = ClipConfig {
        embed_dim,
        vision,
        text,
        activation,
        init_logit_scale,
        init_logit_bias,
        nonscalar_logit_scale,
    };
    config.validate()?;
    Ok(config)
}

const TIMM_FIELDS: &[&str] = &[
    "timm_model_kwargs",
    "timm_model_pretrained",
    "timm_pool",
    "timm_proj",
    "timm_proj_bias",
    "timm_drop",
    "timm_drop_path",
];

/// Vision fields only a ViT reads (open_clip's ModifiedResNet and `TimmModel` ignore them).
pub(super) const VIT_ONLY_FIELDS: &[&str] = &[
    "mlp_ratio",
    "patch_size",
    "ls_init_value",
    "patch_dropout",
    "attentional_pool",
    "attn_pooler_queries",
    "attn_pooler_heads",
    "no_ln_pre",
    "pos_embed_type",
    "final_ln_after_pool",
    "pool_type",
    "output_tokens",
    "act_kwargs",
    "norm_kwargs",
    "block_type",
    "qk_norm",
    "scaled_cosine_attn",
    "scale_heads",
    "scale_attn_inner",
    "scale_attn",
    "scale_fc",
];

fn parse_vision(mut s: Section, activation: Activation) -> Result<VisionConfig, ModelError> {
    if let Some(name) = s.take("timm_model_name") {
        return Ok(VisionConfig::Timm(parse_timm(s, &name)?));
    }
    s.ignore(TIMM_FIELDS);
    let defaults = VitConfig::default();
    let layers = s.take("layers").unwrap_or(json!(defaults.layers));
    if let Some(list) = layers.as_array() {
        // ModifiedResNet: open_clip reads only layers, width, head_width and image_size.
        let stages: Vec<Option<u64>> = list.iter().map(Value::as_u64).collect();
        if stages.len() != 4 || stages.iter().any(Option::is_none) {
            return Err(invalid(
                "vision_cfg.layers",
                &layers,
                "a ModifiedResNet needs four block counts",
            ));
        }
        let width = s.usize("width", defaults.width)?;
        let head_width = s.usize("head_width", defaults.head_width)?;
        let image_size = s.pair("image_size", defaults.image_size)?;
        if image_size[0] != image_size[1] {
            return Err(unsupported(
                "vision_cfg.image_size",
                &json!(image_size),
                "open_clip's ModifiedResNet takes a single (square) image size",
            ));
        }
        s.ignore(VIT_ONLY_FIELDS);
        s.finish()?;
        return Ok(VisionConfig::ModifiedResNet(ModifiedResNetConfig {
            layers: [
                stages[0].unwrap() as usize,
                stages[1].unwrap() as usize,
                stages[2].unwrap() as usize,
                stages[3].unwrap() as usize,
            ],
            width,
            head_width,
            image_size: image_size[0],
        }));
    }
    let layers = s.usize_value("layers", &layers)?;
    let width = s.usize("width", defaults.width)?;
    let head_width = s.usize("head_width", defaults.head_width)?;
    let mlp_ratio = s.f64("mlp_ratio", defaults.mlp_ratio)?;
    if s.is_null("patch_size") {
        return Err(invalid(
            "vision_cfg.patch_size",
            &Value::Null,
            "a ViT needs a patch size",
        ));
    }
    let patch_size = s.pair("patch_size", defaults.patch_size)?;
    let image_size = s.pair("image_size", defaults.image_size)?;
    let ls_init_value = s.opt_f64("ls_init_value")?;
    let patch_dropout = s.f64("patch_dropout", 0.0)?;
    if let Some(v) = s.take("attentional_pool")
        && v != json!(false)
    {
        return Err(unsupported(
            "vision_cfg.attentional_pool",
            &v,
            "the attentional pooler (CoCa) is not implemented",
        ));
    }
    s.ignore(&["attn_pooler_queries", "attn_pooler_heads"]);
    let no_ln_pre = s.bool("no_ln_pre", false)?;
    let pos_embed_type = match s.opt_str("pos_embed_type")? {
        None => PosEmbedType::Learnable,
        Some((kind, v)) => match kind.as_str() {
            "learnable" => PosEmbedType::Learnable,
            "sin_cos_2d" => PosEmbedType::SinCos2d,
            _ => {
                return Err(invalid(
                    "vision_cfg.pos_embed_type",
                    &v,
                    "expected \"learnable\" or \"sin_cos_2d\"",
                ));
            }
        },
    };
    let final_ln_after_pool = s.bool("final_ln_after_pool", false)?;
    let pool_type = match s.opt_str("pool_type")? {
        None => VisionPool::Token,
        Some((kind, v)) => match kind.as_str() {
            "tok" => VisionPool::Token,
            "avg" => VisionPool::Average,
            "none" => {
                return Err(unsupported(
                    "vision_cfg.pool_type",
                    &v,
                    "without pooling the tower returns every token, not an embedding",
                ));
            }
            _ => {
                return Err(invalid(
                    "vision_cfg.pool_type",
                    &v,
                    "expected \"tok\", \"avg\" or \"none\"",
                ));
            }
        },
    };
    let output_tokens = s.bool("output_tokens", false)?;
    let gelu_approximate = s.act_kwargs(activation)?;
    let norm_eps = s.norm_kwargs()?;
    s.default_block_only()?;
    s.finish()?;
    Ok(VisionConfig::Vit(VitConfig {
        image_size,
        patch_size,
        width,
        layers,
        head_width,
        mlp_ratio,
        ls_init_value,
        patch_dropout,
        no_ln_pre,
        pos_embed_type,
        final_ln_after_pool,
        pool_type,
        output_tokens,
        gelu_approximate,
        norm_eps,
    }))
}

const TOKENIZER_FIELDS: &[&str] = &["hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs"];

fn parse_text(mut s: Section, activation: Activation) -> Result<TextConfig, ModelError> {
    if let Some(v) = s.take("hf_model_name") {
        return Err(unsupported(
            "text_cfg.hf_model_name",
            &v,
            "Hugging Face text towers are not implemented",
        ));
    }
    s.ignore(&["hf_model_pretrained", "hf_proj_type", "hf_pooler_type"]);
    let d = TextConfig::default();
    let mut tokenizer = Map::new();
    for key in TOKENIZER_FIELDS {
        if let Some(v) = s.take(key) {
            tokenizer.insert(key.to_string(), v);
        }
    }
    if s.bool("embed_cls", false)? {
        return Err(unsupported(
            "text_cfg.embed_cls",
            &json!(true),
            "a text CLS token needs open_clip's CustomTextCLIP/CoCa, which are not implemented",
        ));
    }
    let pool_type = match s.opt_str("pool_type")? {
        None => TextPool::Argmax,
        Some((kind, v)) => match kind.as_str() {
            "first" => TextPool::First,
            "last" => TextPool::Last,
            "argmax" => TextPool::Argmax,
            "eos" => TextPool::Eos,
            "none" => {
                return Err(unsupported(
                    "text_cfg.pool_type",
                    &v,
                    "without pooling the tower returns every token, not an embedding",
                ));
            }
            _ => {
                return Err(invalid(
                    "text_cfg.pool_type",
                    &v,
                    "expected \"first\", \"last\", \"argmax\", \"eos\" or \"none\"",
                ));
            }
        },
    };
    let proj_type = match s.opt_str("proj_type")? {
        None => TextProjType::Linear,
        Some((kind, v)) => match kind.as_str() {
            "linear" => TextProjType::Linear,
            "none" => TextProjType::None,
            _ => {
                return Err(invalid(
                    "text_cfg.proj_type",
                    &v,
                    "expected \"linear\" or \"none\"",
                ));
            }
        },
    };
    let config = TextConfig {
        context_length: s.usize("context_length", d.context_length)?,
        vocab_size: s.usize("vocab_size", d.vocab_size)?,
        width: s.usize("width", d.width)?,
        heads: s.usize("heads", d.heads)?,
        layers: s.usize("layers", d.layers)?,
        mlp_ratio: s.f64("mlp_ratio", d.mlp_ratio)?,
        ls_init_value: s.opt_f64("ls_init_value")?,
        no_causal_mask: s.bool("no_causal_mask", false)?,
        pool_type,
        eos_id: s.i64("eos_id", d.eos_id)?,
        pad_id: s.i64("pad_id", d.pad_id)?,
        proj_type,
        proj_bias: s.bool("proj_bias", false)?,
        final_ln_after_pool: s.bool("final_ln_after_pool", false)?,
        output_tokens: s.bool("output_tokens", false)?,
        gelu_approximate: s.act_kwargs(activation)?,
        norm_eps: s.norm_kwargs()?,
        tokenizer,
    };
    s.default_block_only()?;
    s.finish()?;
    Ok(config)
}
