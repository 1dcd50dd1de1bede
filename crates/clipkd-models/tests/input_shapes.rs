//! Inputs a model cannot take are a [`ModelError::InputShape`] naming the sizes, not a panic:
//! images of the wrong size or channel count, token batches longer than the context. The edges
//! of the accepted sizes still run (the check follows the convolution arithmetic).

use burn::tensor::{Device, Int, Tensor};
use burn_flex::Flex;
use clipkd_models::{Clip, ClipConfig, ClipEncoder, ModelError};

type B = Flex;

/// A tiny ViT: 32x32 images in a 4x4 grid of 8x8 patches, a context of 77 tokens.
fn vit() -> Clip<B> {
    ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 8,
            "vision_cfg": {"image_size": 32, "patch_size": 8, "layers": 1, "width": 16,
                "head_width": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 20, "width": 8, "heads": 2,
                "layers": 1}}"#,
    )
    .unwrap()
    .init(&Default::default())
    .unwrap()
}

/// A tiny ModifiedResNet: 64x64 images, a 2x2 final feature map.
fn resnet() -> Clip<B> {
    ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 8,
            "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8,
                "head_width": 32},
            "text_cfg": {"context_length": 6, "vocab_size": 20, "width": 8, "heads": 2,
                "layers": 1}}"#,
    )
    .unwrap()
    .init(&Default::default())
    .unwrap()
}

fn images(shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::zeros(shape, &Device::<B>::default())
}

fn tokens(shape: [usize; 2]) -> Tensor<B, 2, Int> {
    Tensor::ones(shape, &Device::<B>::default())
}

/// The error's fields, after checking it is an `InputShape` of `input` with shape `got`, and
/// its message.
fn input_shape(error: ModelError, input: &str, got: &[usize]) -> (&'static str, String) {
    let message = error.to_string();
    match error {
        ModelError::InputShape {
            part,
            input: i,
            got: g,
            ..
        } => {
            assert_eq!(i, input, "{message}");
            assert_eq!(g, got, "{message}");
            assert!(message.contains(&format!("{got:?}")), "{message}");
            (part, message)
        }
        other => panic!("expected InputShape, got {other:?}"),
    }
}

#[test]
fn vit_given_the_wrong_image_size_names_the_sizes_that_fit() {
    let model = vit();
    let error = model.encode_image(images([2, 3, 40, 48])).unwrap_err();
    let (part, message) = input_shape(error, "images", &[2, 3, 40, 48]);
    assert_eq!(part, "ViT vision tower");
    for needle in [
        "32..=39",
        "4x4 grid",
        "8x8 patches",
        "give 5x6",
        "image_size",
    ] {
        assert!(message.contains(needle), "`{needle}` not in: {message}");
    }
    // Smaller than one patch: no grid at all.
    let error = model.encode_image(images([1, 3, 7, 32])).unwrap_err();
    let (_, message) = input_shape(error, "images", &[1, 3, 7, 32]);
    assert!(message.contains("give 0x4"), "{message}");

    // Every entry point checks the same way.
    let wrong = || images([2, 3, 40, 40]);
    let errors = [
        ClipEncoder::encode_image_normalized(&model, wrong()).unwrap_err(),
        model.encode_image_masked(wrong(), 0.5).unwrap_err(),
        model
            .encode_image_with_features(wrong(), &[])
            .map(|_| ())
            .unwrap_err(),
        model
            .encode_image_with_features(wrong(), &["visual.transformer.resblocks.0".into()])
            .map(|_| ())
            .unwrap_err(),
        model
            .forward(wrong(), tokens([2, 5]))
            .map(|_| ())
            .unwrap_err(),
    ];
    for error in errors {
        input_shape(error, "images", &[2, 3, 40, 40]);
    }
}

#[test]
fn vit_takes_every_size_its_patch_grid_allows() {
    let model = vit();
    for side in [32, 39] {
        let out = model.encode_image(images([2, 3, side, side])).unwrap();
        assert_eq!(out.dims(), [2, 8], "side {side}");
    }
}

#[test]
fn resnet_given_the_wrong_image_size_names_the_sizes_that_fit() {
    let model = resnet();
    let error = model.encode_image(images([1, 3, 32, 32])).unwrap_err();
    let (part, message) = input_shape(error, "images", &[1, 3, 32, 32]);
    assert_eq!(part, "ModifiedResNet vision tower");
    // Stride-2 stem conv (ceil(H / 2)), then four halvings: a 2x2 map for sides 63 to 94.
    for needle in ["63..=94", "2x2 final feature map", "give 1x1", "image_size"] {
        assert!(message.contains(needle), "`{needle}` not in: {message}");
    }
    // A non-square map with the attention pool's number of positions is still the wrong map.
    let error = model.encode_image(images([1, 3, 32, 128])).unwrap_err();
    let (_, message) = input_shape(error, "images", &[1, 3, 32, 128]);
    assert!(message.contains("give 1x4"), "{message}");
}

#[test]
fn resnet_takes_every_size_its_feature_map_allows() {
    let model = resnet();
    for side in [63, 94] {
        let out = model.encode_image(images([1, 3, side, side])).unwrap();
        assert_eq!(out.dims(), [1, 8], "side {side}");
    }
    for side in [62, 95] {
        assert!(
            model.encode_image(images([1, 3, side, side])).is_err(),
            "side {side}"
        );
    }
}

#[test]
fn images_with_two_channels_are_an_error_for_both_towers() {
    for (model, side, tower) in [
        (vit(), 32, "ViT vision tower"),
        (resnet(), 64, "ModifiedResNet vision tower"),
    ] {
        let error = model.encode_image(images([2, 2, side, side])).unwrap_err();
        let (part, message) = input_shape(error, "images", &[2, 2, side, side]);
        assert_eq!(part, tower);
        assert!(
            message.contains("3 channels") && message.contains("not 2"),
            "{message}"
        );
    }
}

#[test]
fn tokens_longer_than_the_context_are_an_error() {
    let model = vit();
    let error = model.encode_text(tokens([2, 78])).unwrap_err();
    let (part, message) = input_shape(error, "tokens", &[2, 78]);
    assert_eq!(part, "text tower");
    assert!(
        message.contains("1 <= L <= 77") && message.contains("context_length 77"),
        "{message}"
    );
    // Through the trait, the normalized form and the two-tower forward too.
    input_shape(
        ClipEncoder::encode_text_normalized(&model, tokens([2, 78])).unwrap_err(),
        "tokens",
        &[2, 78],
    );
    input_shape(
        model
            .forward(images([2, 3, 32, 32]), tokens([2, 78]))
            .map(|_| ())
            .unwrap_err(),
        "tokens",
        &[2, 78],
    );
    // Empty batches and empty sequences.
    let (_, message) = input_shape(
        model.encode_text(tokens([0, 5])).unwrap_err(),
        "tokens",
        &[0, 5],
    );
    assert!(message.contains("at least one sequence"), "{message}");
    let (_, message) = input_shape(
        model.encode_text(tokens([2, 0])).unwrap_err(),
        "tokens",
        &[2, 0],
    );
    assert!(message.contains("at least one token"), "{message}");

    // The full context and shorter sequences run.
    for l in [1, 77] {
        assert_eq!(model.encode_text(tokens([2, l])).unwrap().dims(), [2, 8]);
    }
}
