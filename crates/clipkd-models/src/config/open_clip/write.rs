//! Writing a [`ClipConfig`] as open_clip model-config JSON. Fields at open_clip's defaults are
//! left out where open_clip's own files leave them out.

use serde_json::{Map, Value, json};

use super::timm::timm_to_value;

use crate::config::types::{
    Activation, ClipConfig, DEFAULT_LOGIT_SCALE, GeluApproximate, PosEmbedType, TextConfig,
    TextPool, TextProjType, VisionConfig, VisionPool,
};

/// The config as an open_clip model-config JSON object.
pub(super) fn clip_to_value(config: &ClipConfig) -> Value {
    let mut top = Map::new();
    top.insert("embed_dim".into(), json!(config.embed_dim));
    if config.activation == Activation::QuickGelu {
        top.insert("quick_gelu".into(), json!(true));
    }
    if config.init_logit_scale != DEFAULT_LOGIT_SCALE {
        top.insert("init_logit_scale".into(), json!(config.init_logit_scale));
    }
    if let Some(bias) = config.init_logit_bias {
        top.insert("init_logit_bias".into(), json!(bias));
    }
    if config.nonscalar_logit_scale {
        top.insert("nonscalar_logit_scale".into(), json!(true));
    }
    top.insert("vision_cfg".into(), vision_to_value(&config.vision));
    top.insert("text_cfg".into(), text_to_value(&config.text));
    Value::Object(top)
}

fn pair_to_value(pair: [usize; 2]) -> Value {
    if pair[0] == pair[1] {
        json!(pair[0])
    } else {
        json!(pair)
    }
}

fn act_kwargs_value(approx: GeluApproximate) -> Option<Value> {
    match approx {
        GeluApproximate::None => None,
        GeluApproximate::Tanh => Some(json!({"approximate": "tanh"})),
    }
}

fn vision_to_value(vision: &VisionConfig) -> Value {
    let mut m = Map::new();
    match vision {
        VisionConfig::Vit(v) => {
            m.insert("image_size".into(), pair_to_value(v.image_size));
            m.insert("layers".into(), json!(v.layers));
            m.insert("width".into(), json!(v.width));
            m.insert("head_width".into(), json!(v.head_width));
            m.insert("mlp_ratio".into(), json!(v.mlp_ratio));
            m.insert("patch_size".into(), pair_to_value(v.patch_size));
            if let Some(ls) = v.ls_init_value {
                m.insert("ls_init_value".into(), json!(ls));
            }
            if v.patch_dropout != 0.0 {
                m.insert("patch_dropout".into(), json!(v.patch_dropout));
            }
            if v.no_ln_pre {
                m.insert("no_ln_pre".into(), json!(true));
            }
            if v.pos_embed_type == PosEmbedType::SinCos2d {
                m.insert("pos_embed_type".into(), json!("sin_cos_2d"));
            }
            if v.final_ln_after_pool {
                m.insert("final_ln_after_pool".into(), json!(true));
            }
            if v.pool_type == VisionPool::Average {
                m.insert("pool_type".into(), json!("avg"));
            }
            if v.output_tokens {
                m.insert("output_tokens".into(), json!(true));
            }
            if let Some(kw) = act_kwargs_value(v.gelu_approximate) {
                m.insert("act_kwargs".into(), kw);
            }
            if v.norm_eps != 1e-5 {
                m.insert("norm_kwargs".into(), json!({"eps": v.norm_eps}));
            }
        }
        VisionConfig::ModifiedResNet(r) => {
            m.insert("image_size".into(), json!(r.image_size));
            m.insert("layers".into(), json!(r.layers));
            m.insert("width".into(), json!(r.width));
            if r.head_width != 64 {
                m.insert("head_width".into(), json!(r.head_width));
            }
            m.insert("patch_size".into(), Value::Null);
        }
        VisionConfig::Timm(t) => return timm_to_value(t),
    }
    Value::Object(m)
}

fn text_to_value(t: &TextConfig) -> Value {
    let mut m = Map::new();
    m.insert("context_length".into(), json!(t.context_length));
    m.insert("vocab_size".into(), json!(t.vocab_size));
    for (k, v) in &t.tokenizer {
        m.insert(k.clone(), v.clone());
    }
    m.insert("width".into(), json!(t.width));
    m.insert("heads".into(), json!(t.heads));
    m.insert("layers".into(), json!(t.layers));
    if t.mlp_ratio != 4.0 {
        m.insert("mlp_ratio".into(), json!(t.mlp_ratio));
    }
    if let Some(ls) = t.ls_init_value {
        m.insert("ls_init_value".into(), json!(ls));
    }
    if t.no_causal_mask {
        m.insert("no_causal_mask".into(), json!(true));
    }
    let pool = match t.pool_type {
        TextPool::First => Some("first"),
        TextPool::Last => Some("last"),
        TextPool::Argmax => None,
        TextPool::Eos => Some("eos"),
    };
    if let Some(pool) = pool {
        m.insert("pool_type".into(), json!(pool));
    }
    if t.eos_id != 2 {
        m.insert("eos_id".into(), json!(t.eos_id));
    }
    if t.pad_id != 0 {
        m.insert("pad_id".into(), json!(t.pad_id));
    }
    if t.proj_type == TextProjType::None {
        m.insert("proj_type".into(), json!("none"));
    }
    if t.proj_bias {
        m.insert("proj_bias".into(), json!(true));
    }
    if t.final_ln_after_pool {
        m.insert("final_ln_after_pool".into(), json!(true));
    }
    if t.output_tokens {
        m.insert("output_tokens".into(), json!(true));
    }
    if let Some(kw) = act_kwargs_value(t.gelu_approximate) {
        m.insert("act_kwargs".into(), kw);
    }
    if t.norm_eps != 1e-5 {
        m.insert("norm_kwargs".into(), json!({"eps": t.norm_eps}));
    }
    Value::Object(m)
}
