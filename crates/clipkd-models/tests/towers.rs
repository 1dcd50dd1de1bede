//! Each tower built alone through its public `init` is the tower a `ClipConfig::init` model
//! holds: the same parameter count, and for the same seed the same weights, so the same
//! outputs.
//!
//! Parameters are created lazily, drawing from the backend RNG when first used, so each
//! comparison runs the forward before anything else touches the parameters (`num_params`
//! creates them too, in field order), and the seeded sections hold [`SEEDED`]: the backend RNG
//! is shared by the tests running in parallel.

use std::sync::{Mutex, MutexGuard};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_flex::Flex;
use clipkd_models::{
    Clip, ClipConfig, ModelError, ModifiedResNetConfig, TextConfig, VisionConfig, VisionTower,
    VitConfig,
};

type B = Flex;

const SEED: u64 = 7;

/// Held while a test seeds the backend RNG and draws weights from it.
static SEEDED: Mutex<()> = Mutex::new(());

fn seeded() -> MutexGuard<'static, ()> {
    SEEDED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small ViT model exercising LayerScale, QuickGELU, average pooling and a biased text
/// projection.
fn vit_config() -> ClipConfig {
    ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 24, "quick_gelu": true,
            "vision_cfg": {"image_size": 32, "patch_size": 8, "layers": 2, "width": 32,
                "head_width": 16, "ls_init_value": 0.1, "pool_type": "avg"},
            "text_cfg": {"context_length": 8, "vocab_size": 50, "width": 16, "heads": 2,
                "layers": 2, "proj_bias": true}}"#,
    )
    .unwrap()
}

/// A small ModifiedResNet model.
fn resnet_config() -> ClipConfig {
    ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 16,
            "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8,
                "head_width": 32},
            "text_cfg": {"context_length": 6, "vocab_size": 40, "width": 16, "heads": 4,
                "layers": 1}}"#,
    )
    .unwrap()
}

/// Deterministic pixels (no RNG draw, so that the seeded weights are the same draws).
fn images(n: usize, side: usize, device: &Device<B>) -> Tensor<B, 4> {
    let len = n * 3 * side * side;
    let values: Vec<f32> = (0..len)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(values, [n, 3, side, side]), device)
}

/// Token rows ending in the highest id (the end-of-text token of argmax pooling).
fn tokens(vocab: usize, context: usize, device: &Device<B>) -> Tensor<B, 2, Int> {
    let rows = [
        [1, 5, 9, vocab - 1],
        [vocab - 1, 0, 0, 0],
        [3, 4, vocab - 1, 2],
    ];
    let ids: Vec<i64> = rows.iter().flatten().map(|&id| id as i64).collect();
    assert!(context >= 4);
    Tensor::from_data(TensorData::new(ids, [3, 4]), device)
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn vit_of(config: &ClipConfig) -> &VitConfig {
    match &config.vision {
        VisionConfig::Vit(v) => v,
        other => panic!("expected a ViT, got {other:?}"),
    }
}

fn resnet_of(config: &ClipConfig) -> &ModifiedResNetConfig {
    match &config.vision {
        VisionConfig::ModifiedResNet(r) => r,
        other => panic!("expected a ModifiedResNet, got {other:?}"),
    }
}

/// A seeded model's image embeddings.
fn model_images(config: &ClipConfig, images: Tensor<B, 4>) -> (Clip<B>, Vec<f32>) {
    let device = Default::default();
    B::seed(&device, SEED);
    let model = config.init::<B>(&device).unwrap();
    let out = values(model.encode_image(images).unwrap());
    (model, out)
}

#[test]
fn vit_built_alone_is_the_models_vision_tower() {
    let _seeded = seeded();
    let device = Default::default();
    let config = vit_config();
    let (model, expected) = model_images(&config, images(2, 32, &device));

    B::seed(&device, SEED);
    let vit = vit_of(&config)
        .init::<B>(config.embed_dim, config.activation, &device)
        .unwrap();
    assert_eq!(
        values(vit.forward(images(2, 32, &device)).unwrap()),
        expected
    );
    assert_eq!(vit.num_params(), model.visual.num_params());
    assert_eq!(vit.num_patches(), 16);

    // The same through `VisionConfig::init`.
    B::seed(&device, SEED);
    let tower = config
        .vision
        .init::<B>(config.embed_dim, config.activation, &device)
        .unwrap();
    assert!(matches!(tower, VisionTower::Vit(_)));
    assert_eq!(
        values(tower.forward(images(2, 32, &device)).unwrap()),
        expected
    );
}

#[test]
fn resnet_built_alone_is_the_models_vision_tower() {
    let _seeded = seeded();
    let device = Default::default();
    let config = resnet_config();
    let (model, expected) = model_images(&config, images(2, 64, &device));

    B::seed(&device, SEED);
    let resnet = resnet_of(&config)
        .init::<B>(config.embed_dim, &device)
        .unwrap();
    assert_eq!(
        values(resnet.forward(images(2, 64, &device)).unwrap()),
        expected
    );
    assert_eq!(resnet.num_params(), model.visual.num_params());
}

#[test]
fn text_tower_built_alone_is_the_models_text_tower() {
    let _seeded = seeded();
    let device = Default::default();
    for config in [vit_config(), resnet_config()] {
        let t = &config.text;
        B::seed(&device, SEED);
        let model = config.init::<B>(&device).unwrap();
        let expected = values(
            model
                .encode_text(tokens(t.vocab_size, t.context_length, &device))
                .unwrap(),
        );

        B::seed(&device, SEED);
        let text = t
            .init::<B>(config.embed_dim, config.activation, &device)
            .unwrap();
        assert_eq!(text.config(), t);
        let got = values(
            text.forward(tokens(t.vocab_size, t.context_length, &device))
                .unwrap(),
        );
        assert_eq!(got, expected);
        assert_eq!(got.len(), 3 * config.text_embed_dim());

        // The model is its two towers plus the logit scale.
        let logit_params = 1 + usize::from(config.init_logit_bias.is_some());
        assert_eq!(
            model.visual.num_params() + text.num_params() + logit_params,
            model.num_params()
        );
    }
}

#[test]
fn tower_inits_reject_invalid_configs_naming_the_field() {
    let device: Device<B> = Default::default();
    let config = vit_config();
    let field_of = |error: ModelError| match error {
        ModelError::InvalidConfig { field, .. } => field,
        other => panic!("expected InvalidConfig, got {other}"),
    };

    let vit = vit_of(&config);
    let error = vit.init::<B>(0, config.activation, &device).unwrap_err();
    assert_eq!(field_of(error), "embed_dim");
    let bad = VitConfig {
        head_width: 0,
        ..vit.clone()
    };
    let error = bad.init::<B>(24, config.activation, &device).unwrap_err();
    assert_eq!(field_of(error), "vision_cfg.head_width");

    let bad = ModifiedResNetConfig {
        image_size: 16,
        ..resnet_of(&resnet_config()).clone()
    };
    let error = bad.init::<B>(16, &device).unwrap_err();
    assert_eq!(field_of(error), "vision_cfg.image_size");
    let error = VisionConfig::ModifiedResNet(bad)
        .init::<B>(16, config.activation, &device)
        .unwrap_err();
    assert_eq!(field_of(error), "vision_cfg.image_size");

    let bad = TextConfig {
        heads: 3,
        ..config.text.clone()
    };
    let error = bad.init::<B>(24, config.activation, &device).unwrap_err();
    let message = error.to_string();
    assert_eq!(field_of(error), "text_cfg.heads", "{message}");
    let error = config
        .text
        .init::<B>(0, config.activation, &device)
        .unwrap_err();
    assert_eq!(field_of(error), "embed_dim");
}
