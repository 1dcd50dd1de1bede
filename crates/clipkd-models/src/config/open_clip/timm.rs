//! The `vision_cfg` of a timm tower (`timm_model_name` set) in open_clip's JSON, read and
//! written. open_clip's `TimmModel` reads `image_size`, the `timm_*` fields and
//! `patch_dropout`; every other vision field is ignored for a timm tower, by open_clip and here.

use serde_json::{Map, Value, json};

use super::read::VIT_ONLY_FIELDS;
use super::section::{Section, unsupported};
use crate::config::timm::{
    MobileVitStage, MobileVitTransformer, TimmConfig, TimmPool, TimmProj, TimmTrunkConfig,
};
use crate::config::validate::invalid;
use crate::error::ModelError;

/// Vision fields of the ModifiedResNet that open_clip's `TimmModel` does not read either (it
/// reads `patch_dropout`, taken before these are ignored).
const RESNET_FIELDS: &[&str] = &["layers", "width", "head_width"];

/// Reads a timm tower's `vision_cfg` whose `timm_model_name` is `name` (already taken).
pub(super) fn parse_timm(mut s: Section, name: &Value) -> Result<TimmConfig, ModelError> {
    let model_name = name
        .as_str()
        .ok_or_else(|| invalid("vision_cfg.timm_model_name", name, "expected a string"))?
        .to_string();
    let named = TimmTrunkConfig::named(&model_name).ok_or_else(|| {
        unsupported(
            "vision_cfg.timm_model_name",
            name,
            &format!(
                "clipkd has no timm model of this name; it has {}",
                TimmTrunkConfig::known_names().join(", ")
            ),
        )
    })?;
    if s.bool("timm_model_pretrained", false)? {
        return Err(unsupported(
            "vision_cfg.timm_model_pretrained",
            &json!(true),
            "clipkd cannot fetch timm's ImageNet weights: set it to false and load the \
             trained tower from an open_clip checkpoint instead",
        ));
    }
    let pool = match s.opt_str("timm_pool")? {
        None => TimmPool::Avg,
        Some((kind, v)) => match kind.as_str() {
            "" => TimmPool::TrunkDefault,
            "avg" => TimmPool::Avg,
            "max" => TimmPool::Max,
            _ => {
                return Err(unsupported(
                    "vision_cfg.timm_pool",
                    &v,
                    "clipkd has the pools \"\" (the trunk's own), \"avg\" and \"max\"",
                ));
            }
        },
    };
    let proj = match s.opt_str("timm_proj")? {
        None => TimmProj::Linear,
        Some((kind, v)) => match kind.as_str() {
            "linear" => TimmProj::Linear,
            "mlp" => TimmProj::Mlp,
            _ => {
                return Err(unsupported(
                    "vision_cfg.timm_proj",
                    &v,
                    "clipkd has the projections \"linear\" and \"mlp\" (without one, the \
                     trunk's classifier would be the projection)",
                ));
            }
        },
    };
    let proj_bias = s.bool("timm_proj_bias", false)?;
    let drop = s.f64("timm_drop", 0.0)?;
    let drop_path = s.opt_f64("timm_drop_path")?;
    let image_size = s.pair("image_size", [224, 224])?;
    let patch_dropout = s.f64("patch_dropout", 0.0)?;
    if patch_dropout > 0.0 {
        return Err(unsupported(
            "vision_cfg.patch_dropout",
            &json!(patch_dropout),
            "open_clip passes it to the timm trunk as `patch_drop_rate`, which only timm's \
             ViTs take",
        ));
    }
    let trunk = match s.take("timm_model_kwargs") {
        None => named,
        Some(kwargs) => apply_kwargs(named, Section::new("vision_cfg.timm_model_kwargs", kwargs)?)?,
    };
    s.ignore(RESNET_FIELDS);
    s.ignore(VIT_ONLY_FIELDS);
    s.finish()?;
    let config = TimmConfig {
        model_name,
        trunk,
        pool,
        proj,
        proj_bias,
        drop,
        drop_path,
        image_size,
    };
    config.validate()?;
    Ok(config)
}

/// The named architecture changed by timm keyword arguments (`timm_model_kwargs`).
fn apply_kwargs(
    trunk: TimmTrunkConfig,
    mut kwargs: Section,
) -> Result<TimmTrunkConfig, ModelError> {
    let trunk = match trunk {
        TimmTrunkConfig::ResNet(mut r) => {
            if let Some(v) = kwargs.take("layers") {
                r.layers = four("layers", &v)?;
            }
            if let Some(v) = kwargs.take("channels") {
                r.channels = four("channels", &v)?;
            }
            for key in ["stem_type", "stem_width", "avg_down", "replace_stem_pool"] {
                if let Some(v) = kwargs.take(key) {
                    return Err(unsupported(
                        &format!("vision_cfg.timm_model_kwargs.{key}"),
                        &v,
                        "clipkd builds timm's default ResNet stem (7x7 convolution, 64 \
                         channels, max pooling) and strided 1x1 shortcuts; it takes `layers` \
                         and `channels`",
                    ));
                }
            }
            TimmTrunkConfig::ResNet(r)
        }
        TimmTrunkConfig::EfficientNet(mut e) => {
            e.channel_multiplier = kwargs.f64("channel_multiplier", e.channel_multiplier)?;
            e.depth_multiplier = kwargs.f64("depth_multiplier", e.depth_multiplier)?;
            TimmTrunkConfig::EfficientNet(e)
        }
        TimmTrunkConfig::Swin(mut w) => {
            w.img_size = kwargs.usize("img_size", w.img_size)?;
            w.patch_size = kwargs.usize("patch_size", w.patch_size)?;
            w.window_size = kwargs.usize("window_size", w.window_size)?;
            w.embed_dim = kwargs.usize("embed_dim", w.embed_dim)?;
            w.mlp_ratio = kwargs.f64("mlp_ratio", w.mlp_ratio)?;
            for (key, list) in [("depths", &mut w.depths), ("num_heads", &mut w.num_heads)] {
                if let Some(v) = kwargs.take(key) {
                    *list = counts(key, &v)?;
                }
            }
            TimmTrunkConfig::Swin(w)
        }
        TimmTrunkConfig::MobileVit(mut v) => {
            v.stem_chs = kwargs.usize("stem_chs", v.stem_chs)?;
            v.num_features = kwargs.usize("num_features", v.num_features)?;
            v.bottle_ratio = kwargs.f64("bottle_ratio", v.bottle_ratio)?;
            if let Some(stages) = kwargs.take("stages") {
                v.stages = mobilevit_stages(&stages)?;
            }
            TimmTrunkConfig::MobileVit(v)
        }
    };
    kwargs.finish()?;
    Ok(trunk)
}

/// `timm_model_kwargs.stages` of a MobileViT.
fn mobilevit_stages(v: &Value) -> Result<Vec<MobileVitStage>, ModelError> {
    let list = v.as_array().ok_or_else(|| {
        invalid(
            "vision_cfg.timm_model_kwargs.stages",
            v,
            "expected a list of stages",
        )
    })?;
    list.iter()
        .map(|stage| {
            let mut s = Section::new("vision_cfg.timm_model_kwargs.stages[]", stage.clone())?;
            let blocks = s.required_usize("d")?;
            let channels = s.required_usize("c")?;
            let stride = s.required_usize("s")?;
            let transformer = match s.take("transformer_dim") {
                None => None,
                Some(dim) => Some(MobileVitTransformer {
                    dim: s.usize_value("transformer_dim", &dim)?,
                    depth: s.required_usize("transformer_depth")?,
                    patch_size: s.usize("patch_size", 2)?,
                }),
            };
            s.finish()?;
            Ok(MobileVitStage {
                blocks,
                channels,
                stride,
                transformer,
            })
        })
        .collect()
}

/// Non-negative integers, one per stage.
fn counts(key: &str, v: &Value) -> Result<Vec<usize>, ModelError> {
    v.as_array()
        .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect())
        .ok_or_else(|| {
            invalid(
                &format!("vision_cfg.timm_model_kwargs.{key}"),
                v,
                "expected a list of non-negative integers, one per stage",
            )
        })
}

/// Four non-negative integers (a per-stage kwarg).
fn four(key: &str, v: &Value) -> Result<[usize; 4], ModelError> {
    let items: Option<Vec<usize>> = v
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect());
    match items.as_deref() {
        Some(&[a, b, c, d]) => Ok([a, b, c, d]),
        _ => Err(invalid(
            &format!("vision_cfg.timm_model_kwargs.{key}"),
            v,
            "expected four non-negative integers, one per stage",
        )),
    }
}

/// A timm tower's `vision_cfg`, fields at open_clip's defaults left out (`timm_pool` and
/// `timm_proj` always written, as CLIP-KD's configs do).
pub(super) fn timm_to_value(t: &TimmConfig) -> Value {
    let mut m = Map::new();
    m.insert("timm_model_name".into(), json!(t.model_name));
    m.insert("timm_model_pretrained".into(), json!(false));
    m.insert("timm_pool".into(), json!(t.pool.as_str()));
    m.insert("timm_proj".into(), json!(t.proj.as_str()));
    if t.proj_bias {
        m.insert("timm_proj_bias".into(), json!(true));
    }
    if t.drop != 0.0 {
        m.insert("timm_drop".into(), json!(t.drop));
    }
    if let Some(rate) = t.drop_path {
        m.insert("timm_drop_path".into(), json!(rate));
    }
    m.insert(
        "image_size".into(),
        if t.image_size[0] == t.image_size[1] {
            json!(t.image_size[0])
        } else {
            json!(t.image_size)
        },
    );
    if let Some(kwargs) = kwargs_value(t) {
        m.insert("timm_model_kwargs".into(), kwargs);
    }
    Value::Object(m)
}

/// The kwargs that turn the named architecture into `t.trunk`, or `None` if they are equal
/// (a valid config's trunk is of its name's family, [`TimmConfig::validate`]).
fn kwargs_value(t: &TimmConfig) -> Option<Value> {
    let named = TimmTrunkConfig::named(&t.model_name)?;
    if named == t.trunk {
        return None;
    }
    let mut m = Map::new();
    match (&t.trunk, &named) {
        (TimmTrunkConfig::ResNet(r), TimmTrunkConfig::ResNet(n)) => {
            if r.layers != n.layers {
                m.insert("layers".into(), json!(r.layers));
            }
            if r.channels != n.channels {
                m.insert("channels".into(), json!(r.channels));
            }
        }
        (TimmTrunkConfig::EfficientNet(e), TimmTrunkConfig::EfficientNet(n)) => {
            if e.channel_multiplier != n.channel_multiplier {
                m.insert("channel_multiplier".into(), json!(e.channel_multiplier));
            }
            if e.depth_multiplier != n.depth_multiplier {
                m.insert("depth_multiplier".into(), json!(e.depth_multiplier));
            }
        }
        (TimmTrunkConfig::Swin(w), TimmTrunkConfig::Swin(n)) => {
            for (key, ours, named) in [
                ("img_size", w.img_size, n.img_size),
                ("patch_size", w.patch_size, n.patch_size),
                ("window_size", w.window_size, n.window_size),
                ("embed_dim", w.embed_dim, n.embed_dim),
            ] {
                if ours != named {
                    m.insert(key.into(), json!(ours));
                }
            }
            if w.depths != n.depths {
                m.insert("depths".into(), json!(w.depths));
            }
            if w.num_heads != n.num_heads {
                m.insert("num_heads".into(), json!(w.num_heads));
            }
            if w.mlp_ratio != n.mlp_ratio {
                m.insert("mlp_ratio".into(), json!(w.mlp_ratio));
            }
        }
        (TimmTrunkConfig::MobileVit(v), TimmTrunkConfig::MobileVit(n)) => {
            if v.stem_chs != n.stem_chs {
                m.insert("stem_chs".into(), json!(v.stem_chs));
            }
            if v.num_features != n.num_features {
                m.insert("num_features".into(), json!(v.num_features));
            }
            if v.bottle_ratio != n.bottle_ratio {
                m.insert("bottle_ratio".into(), json!(v.bottle_ratio));
            }
            if v.stages != n.stages {
                let stages: Vec<Value> = v
                    .stages
                    .iter()
                    .map(|s| {
                        let mut o = json!({"d": s.blocks, "c": s.channels, "s": s.stride});
                        if let Some(t) = &s.transformer {
                            o["transformer_dim"] = json!(t.dim);
                            o["transformer_depth"] = json!(t.depth);
                            o["patch_size"] = json!(t.patch_size);
                        }
                        o
                    })
                    .collect();
                m.insert("stages".into(), Value::Array(stages));
            }
        }
        // A valid config's trunk is of its name's family.
        _ => {}
    }
    Some(Value::Object(m))
}
