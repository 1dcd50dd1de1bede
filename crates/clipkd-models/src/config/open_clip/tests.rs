//! Reading and writing open_clip model-config JSON: round trips, and errors that name the
//! field.

use serde_json::json;

use crate::config::{
    ClipConfig, ModifiedResNetConfig, ResNetBlock, TextPool, TimmPool, TimmProj, TimmTrunkConfig,
    VisionConfig, VisionPool, VitConfig,
};
use crate::error::ModelError;

fn vit(config: &ClipConfig) -> &VitConfig {
    match &config.vision {
        VisionConfig::Vit(v) => v,
        other => panic!("expected a ViT, got {other:?}"),
    }
}

fn resnet(config: &ClipConfig) -> &ModifiedResNetConfig {
    match &config.vision {
        VisionConfig::ModifiedResNet(r) => r,
        other => panic!("expected a ModifiedResNet, got {other:?}"),
    }
}

/// (name, embed, vision width, layers, heads, patch, image, text width, heads, layers,
#[test]
fn every_preset_round_trips_through_json_and_serde() {
    assert!(ClipConfig::preset_names().len() >= 20);
    for name in ClipConfig::preset_names() {
        let c = ClipConfig::preset(name).unwrap();
        let again = ClipConfig::from_open_clip_json_str(&c.to_open_clip_json()).unwrap();
        assert_eq!(c, again, "{name}");
        let via_serde: ClipConfig =
            serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(c, via_serde, "{name}");
    }
}

#[test]
fn non_default_fields_round_trip() {
    let json = r#"{
        "embed_dim": 24, "quick_gelu": true, "init_logit_scale": 1.5, "init_logit_bias": -10,
        "nonscalar_logit_scale": true,
        "vision_cfg": {"image_size": [32, 48], "layers": 2, "width": 32, "head_width": 8,
            "patch_size": [8, 16], "mlp_ratio": 2.5, "ls_init_value": 0.1, "no_ln_pre": true,
            "pool_type": "avg", "final_ln_after_pool": true, "patch_dropout": 0.5,
            "norm_kwargs": {"eps": 1e-6}, "timm_pool": "avg", "attn_pooler_heads": 4},
        "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2,
            "layers": 2, "ls_init_value": 0.1, "proj_bias": true, "pool_type": "eos",
            "eos_id": 999, "no_causal_mask": true, "hf_tokenizer_name": "x/y",
            "tokenizer_kwargs": {"clean": "canonicalize"}, "mlp_ratio": 3.0}
    }"#;
    let c = ClipConfig::from_open_clip_json_str(json).unwrap();
    let v = vit(&c);
    assert_eq!(v.image_size, [32, 48]);
    assert_eq!(v.patch_size, [8, 16]);
    assert_eq!(v.grid_size(), [4, 3]);
    assert_eq!(v.mlp_width(), 80);
    assert_eq!(v.pool_type, VisionPool::Average);
    assert!(v.final_ln_after_pool && v.no_ln_pre);
    assert_eq!(v.norm_eps, 1e-6);
    assert_eq!(c.init_logit_bias, Some(-10.0));
    assert_eq!(c.text.pool_type, TextPool::Eos);
    assert_eq!(c.text.eos_id, 999);
    assert!(c.text.proj_bias && c.text.no_causal_mask);
    assert_eq!(c.text.tokenizer["hf_tokenizer_name"], json!("x/y"));
    let again = ClipConfig::from_open_clip_json_str(&c.to_open_clip_json()).unwrap();
    assert_eq!(c, again);
}

fn error_of(json: &str) -> ModelError {
    ClipConfig::from_open_clip_json_str(json).expect_err(json)
}

fn with_vision(extra: &str) -> String {
    format!(
        r#"{{"embed_dim": 8, "vision_cfg": {{"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8{extra}}},
           "text_cfg": {{"context_length": 8, "vocab_size": 10, "width": 8, "heads": 2, "layers": 1}}}}"#
    )
}

fn with_text(extra: &str) -> String {
    format!(
        r#"{{"embed_dim": 8, "vision_cfg": {{"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8}},
           "text_cfg": {{"context_length": 8, "vocab_size": 10, "width": 8, "heads": 2, "layers": 1{extra}}}}}"#
    )
}

#[test]
fn unsupported_fields_are_named() {
    let cases = [
        (
            with_vision(r#", "timm_model_name": "convnext_tiny""#),
            "vision_cfg.timm_model_name",
            "\"convnext_tiny\"",
        ),
        (
            with_vision(r#", "timm_model_name": "resnet18", "timm_model_pretrained": true"#),
            "vision_cfg.timm_model_pretrained",
            "true",
        ),
        (
            with_vision(r#", "timm_model_name": "resnet18", "timm_pool": "abs_attn""#),
            "vision_cfg.timm_pool",
            "\"abs_attn\"",
        ),
        (
            with_vision(r#", "timm_model_name": "resnet18", "timm_proj": "none""#),
            "vision_cfg.timm_proj",
            "\"none\"",
        ),
        (
            with_vision(r#", "timm_model_name": "resnet18", "patch_dropout": 0.5"#),
            "vision_cfg.patch_dropout",
            "0.5",
        ),
        (
            with_vision(
                r#", "timm_model_name": "resnet50", "timm_model_kwargs": {"stem_type": "deep"}"#,
            ),
            "vision_cfg.timm_model_kwargs.stem_type",
            "\"deep\"",
        ),
        (
            with_vision(r#", "attentional_pool": true"#),
            "vision_cfg.attentional_pool",
            "true",
        ),
        (
            with_vision(r#", "pool_type": "none""#),
            "vision_cfg.pool_type",
            "\"none\"",
        ),
        (
            with_vision(r#", "qk_norm": true"#),
            "vision_cfg.qk_norm",
            "true",
        ),
        (
            with_vision(r#", "block_type": "custom""#),
            "vision_cfg.block_type",
            "\"custom\"",
        ),
        (
            with_vision(r#", "norm_kwargs": {"elementwise_affine": false}"#),
            "vision_cfg.norm_kwargs",
            "{\"elementwise_affine\":false}",
        ),
        (
            with_text(r#", "hf_model_name": "roberta-base""#),
            "text_cfg.hf_model_name",
            "\"roberta-base\"",
        ),
        (
            with_text(r#", "embed_cls": true"#),
            "text_cfg.embed_cls",
            "true",
        ),
        (
            with_text(r#", "pool_type": "none""#),
            "text_cfg.pool_type",
            "\"none\"",
        ),
        (
            with_text(r#", "scale_fc": true"#),
            "text_cfg.scale_fc",
            "true",
        ),
    ];
    for (json, field, value) in cases {
        match error_of(&json) {
            ModelError::UnsupportedConfig {
                field: f, value: v, ..
            } => {
                assert_eq!((f.as_str(), v.as_str()), (field, value));
            }
            other => panic!("{field}: expected UnsupportedConfig, got {other}"),
        }
    }
    let custom = with_vision("").replacen('{', r#"{"custom_text": true, "#, 1);
    assert!(
        matches!(error_of(&custom), ModelError::UnsupportedConfig { field, .. } if field == "custom_text")
    );
}

/// A timm tower reads the timm fields and ignores the ViT/ResNet ones (as open_clip's
/// `TimmModel` does); an unknown name lists the names clipkd has.
#[test]
fn timm_towers_are_read() {
    let c = ClipConfig::from_open_clip_json_str(&with_vision(
        r#", "timm_model_name": "resnet50", "timm_pool": "", "timm_proj": "mlp", "timm_proj_bias": true,
           "timm_drop": 0.1, "timm_drop_path": 0.05, "timm_model_kwargs": {"layers": [1, 1, 1, 1]}"#,
    ))
    .unwrap();
    let VisionConfig::Timm(t) = &c.vision else {
        panic!("{:?}", c.vision)
    };
    assert_eq!(t.model_name, "resnet50");
    assert_eq!(
        (t.pool, t.proj, t.proj_bias),
        (TimmPool::TrunkDefault, TimmProj::Mlp, true)
    );
    assert_eq!(
        (t.drop, t.drop_path, t.image_size),
        (0.1, Some(0.05), [32, 32])
    );
    let TimmTrunkConfig::ResNet(r) = &t.trunk else {
        panic!("{:?}", t.trunk)
    };
    assert_eq!(
        (r.block, r.layers, r.num_features()),
        (ResNetBlock::Bottleneck, [1, 1, 1, 1], 2048)
    );
    assert_eq!(
        ClipConfig::from_open_clip_json_str(&c.to_open_clip_json()).unwrap(),
        c
    );

    let error = error_of(&with_vision(r#", "timm_model_name": "mobilenetv4""#)).to_string();
    assert!(
        error.contains("resnet18") && error.contains("resnet50"),
        "{error}"
    );
}

#[test]
fn invalid_fields_are_named() {
    let cases = [
        (
            with_vision(r#", "pool_type": "max""#),
            "vision_cfg.pool_type",
        ),
        (
            with_vision(r#", "pos_embed_type": "rope""#),
            "vision_cfg.pos_embed_type",
        ),
        (
            with_vision(r#", "unknown_thing": 1"#),
            "vision_cfg.unknown_thing",
        ),
        (
            with_vision(
                r#", "timm_model_name": "resnet18", "timm_model_kwargs": {"layers": [1, 2]}"#,
            ),
            "vision_cfg.timm_model_kwargs.layers",
        ),
        (
            with_vision(r#", "timm_model_name": "resnet18", "timm_model_kwargs": {"depth": 3}"#),
            "vision_cfg.timm_model_kwargs.depth",
        ),
        (
            with_vision(
                r#", "timm_model_name": "resnet18", "timm_model_kwargs": {"layers": [1, 0, 1, 1]}"#,
            ),
            "vision_cfg.timm_model_kwargs.layers",
        ),
        (
            with_vision(r#", "timm_model_name": "resnet18", "timm_drop": 1.5"#),
            "vision_cfg.timm_drop",
        ),
        (
            with_vision(r#", "patch_dropout": 1.0"#),
            "vision_cfg.patch_dropout",
        ),
        (with_text(r#", "width": "wide""#), "text_cfg.width"),
        (with_text(r#", "heads": 3"#), "text_cfg.heads"),
        (with_text(r#", "proj_type": "mlp""#), "text_cfg.proj_type"),
        (
            with_vision(r#", "act_kwargs": {"approximate": "tanh"}"#).replacen(
                '{',
                r#"{"quick_gelu": true, "#,
                1,
            ),
            "vision_cfg.act_kwargs",
        ),
        (
            with_vision("").replacen("\"embed_dim\": 8,", "", 1),
            "embed_dim",
        ),
    ];
    for (json, field) in cases {
        match error_of(&json) {
            ModelError::InvalidConfig { field: f, .. } => assert_eq!(f, field, "{json}"),
            other => panic!("{field}: expected InvalidConfig, got {other}"),
        }
    }
    let message = error_of(&with_text(r#", "heads": 3"#)).to_string();
    assert!(
        message.contains("text_cfg.heads") && message.contains('3'),
        "{message}"
    );
    assert!(matches!(error_of("{ not json"), ModelError::Json { .. }));
}

#[test]
fn resnet_ignores_vit_only_fields_like_open_clip() {
    let json = r#"{"embed_dim": 8, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1],
        "width": 4, "head_width": 32, "patch_size": null, "pool_type": "avg"},
        "text_cfg": {"context_length": 8, "vocab_size": 10, "width": 8, "heads": 2, "layers": 1}}"#;
    let c = ClipConfig::from_open_clip_json_str(json).unwrap();
    assert_eq!(resnet(&c).heads(), 4);
    assert_eq!(resnet(&c).grid_size(), 2);
    assert!(!c.is_vit());
    let rect = json.replace("\"image_size\": 64", "\"image_size\": [64, 96]");
    assert!(matches!(
        error_of(&rect),
        ModelError::UnsupportedConfig { field, .. } if field == "vision_cfg.image_size"
    ));
}

#[test]
fn hub_config_with_model_cfg_is_read() {
    let inner = ClipConfig::preset("ViT-B-32").unwrap().to_open_clip_json();
    let hub = format!(r#"{{"model_cfg": {inner}, "preprocess_cfg": {{"mean": [0.5]}}}}"#);
    assert_eq!(
        ClipConfig::from_open_clip_json_str(&hub).unwrap(),
        ClipConfig::preset("ViT-B-32").unwrap()
    );
}
