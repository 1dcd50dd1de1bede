//! Behaviour of the image transforms that the parity fixtures do not pin down: shapes, crop
//! geometry and rounding, RandomResizedCrop bounds and determinism, configuration, errors.

use std::path::{Path, PathBuf};

use clipkd_data::DataError;
use clipkd_data::image::{
    CropBox, DecodedImage, EvalGeometry, ImageTransform, Interpolation, OPENAI_MEAN, OPENAI_STD,
    PilMode, ResizeMode, TransformConfig,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/images/src")
        .join(name)
}

/// A deterministic RGB image with smooth gradients and some texture.
fn synthetic(width: usize, height: usize) -> DecodedImage {
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            rgb.push((x * 255 / width) as u8);
            rgb.push((y * 255 / height) as u8);
            rgb.push(((x / 3 + y / 5) % 2 * 200 + (x * y) % 55) as u8);
        }
    }
    DecodedImage::from_rgb8(width, height, rgb)
}

fn transform(cfg: TransformConfig) -> ImageTransform {
    ImageTransform::new(cfg).unwrap()
}

#[test]
fn outputs_have_the_configured_shape() {
    let square = transform(TransformConfig::default());
    let wide = transform(TransformConfig::default().with_size(64, 96));
    let mut rng = StdRng::seed_from_u64(0);
    for (w, h) in [
        (640, 427),
        (427, 640),
        (224, 224),
        (50, 30),
        (1, 1),
        (3000, 7),
    ] {
        let img = synthetic(w, h);
        for t in [&square, &wide] {
            let [c, oh, ow] = t.output_shape();
            let e = t.eval(&img);
            assert_eq!(e.shape(), [c, oh, ow], "{w}x{h}");
            assert_eq!(e.data.len(), t.output_len());
            assert!(e.data.iter().all(|v| v.is_finite()));
            assert_eq!(t.train(&img, &mut rng).shape(), [3, oh, ow]);
        }
    }
}

#[test]
fn into_variants_fill_batch_slots_without_touching_others() {
    let t = transform(TransformConfig::square(32));
    let n = t.output_len();
    let a = synthetic(50, 40);
    let b = synthetic(33, 70);
    let mut batch = vec![f32::NAN; 3 * n];
    t.eval_into(&a, &mut batch[..n]);
    t.eval_into(&b, &mut batch[2 * n..]);
    assert_eq!(&batch[..n], &t.eval(&a).data[..]);
    assert!(batch[n..2 * n].iter().all(|v| v.is_nan()));
    assert_eq!(&batch[2 * n..], &t.eval(&b).data[..]);
    let mut r1 = StdRng::seed_from_u64(5);
    let mut r2 = StdRng::seed_from_u64(5);
    t.train_into(&a, &mut r1, &mut batch[n..2 * n]);
    assert_eq!(&batch[n..2 * n], &t.train(&a, &mut r2).data[..]);
}

#[test]
#[should_panic(expected = "output slice has")]
fn into_rejects_a_wrong_slice_length() {
    let t = transform(TransformConfig::square(8));
    t.eval_into(&synthetic(10, 10), &mut [0.0; 10]);
}

#[test]
fn shortest_resize_truncates_and_center_crop_rounds_half_to_even() {
    let t = transform(TransformConfig::default());
    let g = |w, h| t.eval_geometry(w, h);
    // torchvision Resize(224): long side = int(224 * long / short).
    assert_eq!(g(500, 375).resized, [224, 298]); // 298.67 -> 298
    assert_eq!(g(375, 500).resized, [298, 224]);
    assert_eq!(g(300, 200).resized, [224, 336]);
    // CenterCrop: round((size - crop) / 2) with Python's round (ties to even).
    assert_eq!(g(257, 224).crop_left, 16); // 16.5 -> 16
    assert_eq!(g(259, 224).crop_left, 18); // 17.5 -> 18
    assert_eq!(g(258, 224).crop_left, 17);
    assert_eq!(g(224, 257).crop_top, 16);
    assert_eq!(
        g(224, 224),
        EvalGeometry {
            resized: [224, 224],
            crop_top: 0,
            crop_left: 0
        }
    );
    // Smaller images are upsampled, never padded.
    assert_eq!(g(100, 50).resized, [224, 448]);
    assert_eq!(g(100, 50).crop_left, 112);
}

#[test]
fn non_square_longest_and_squash_geometry() {
    // Non-square size: open_clip's ResizeKeepRatio (round half to even), then CenterCrop.
    let t = transform(TransformConfig::default().with_size(64, 96));
    let g = t.eval_geometry(640, 427);
    assert_eq!(g.resized, [64, 96]); // ratio = min(427/64, 640/96)
    let g = t.eval_geometry(300, 300);
    assert_eq!(g.resized, [96, 96]);
    assert_eq!((g.crop_top, g.crop_left), (16, 0));
    // Longest: the long side fits, the rest is padding (negative offsets), odd pads put the
    // extra row after.
    let t = transform(TransformConfig::square(64).with_resize_mode(ResizeMode::Longest));
    let g = t.eval_geometry(100, 50);
    assert_eq!(g.resized, [32, 64]);
    assert_eq!((g.crop_top, g.crop_left), (-16, 0));
    let g = t.eval_geometry(128, 62);
    assert_eq!(g.resized, [31, 64]);
    assert_eq!(g.crop_top, -16);
    // Squash: exactly the output size.
    let t = transform(TransformConfig::default().with_resize_mode(ResizeMode::Squash));
    let g = t.eval_geometry(640, 100);
    assert_eq!((g.resized, g.crop_top, g.crop_left), ([224, 224], 0, 0));
}

#[test]
fn longest_mode_pads_with_fill_color() {
    let mut cfg = TransformConfig::square(16).with_resize_mode(ResizeMode::Longest);
    cfg.fill_color = 255;
    let t = transform(cfg);
    let out = t.eval(&DecodedImage::from_rgb8(4, 2, vec![0; 24]));
    // Rows 0..4 and 12..16 are padding (white), rows 4..12 the black image.
    let (m, s) = (OPENAI_MEAN[0] as f32, OPENAI_STD[0] as f32);
    let (white, black) = ((1.0 - m) / s, (0.0 - m) / s);
    let r = out.channel(0);
    assert!((r[0] - white).abs() < 1e-6 && (r[3 * 16 + 5] - white).abs() < 1e-6);
    assert!((r[4 * 16] - black).abs() < 1e-6 && (r[11 * 16 + 15] - black).abs() < 1e-6);
    assert!((r[12 * 16] - white).abs() < 1e-6);
}

#[test]
fn random_resized_crop_stays_inside_and_within_bounds() {
    let t = transform(TransformConfig::default());
    let (s0, s1) = t.config().crop_scale;
    let (r0, r1) = t.config().crop_ratio;
    let mut rng = StdRng::seed_from_u64(42);
    let (mut sampled, mut fallbacks) = (0, 0);
    for (w, h) in [
        (640, 427),
        (427, 640),
        (224, 224),
        (31, 17),
        (5, 5),
        (1000, 10),
        (1, 1),
    ] {
        for _ in 0..500 {
            let b = t.sample_crop(w, h, &mut rng);
            assert!(b.width > 0 && b.height > 0, "{b:?}");
            assert!(
                b.left + b.width <= w && b.top + b.height <= h,
                "{b:?} in {w}x{h}"
            );
            // torchvision's fallback: the centered box of the clamped aspect ratio.
            let in_ratio = w as f64 / h as f64;
            let (fw, fh) = if in_ratio < r0 {
                (w, (w as f64 / r0).round_ties_even() as usize)
            } else if in_ratio > r1 {
                ((h as f64 * r1).round_ties_even() as usize, h)
            } else {
                (w, h)
            };
            let fallback = CropBox {
                top: (h - fh) / 2,
                left: (w - fw) / 2,
                height: fh,
                width: fw,
            };
            if b == fallback {
                fallbacks += 1;
                continue;
            }
            // A sampled box: area fraction and aspect ratio in range, up to the rounding of each
            // side to whole pixels.
            let area = (b.width * b.height) as f64 / (w * h) as f64;
            let slack = (b.width + b.height + 1) as f64 / (w * h) as f64;
            assert!(area >= s0 - slack && area <= s1 + slack, "{area} {b:?}");
            let ratio = b.width as f64 / b.height as f64;
            assert!(
                ratio >= r0 * (1.0 - 1.0 / b.height as f64) - 1e-9,
                "{ratio}"
            );
            assert!(
                ratio <= r1 * (1.0 + 1.0 / b.height as f64) + 1e-9,
                "{ratio}"
            );
            sampled += 1;
        }
    }
    // Square-ish images are sampled; 3:2 images (640x427) never fit ratio <= 4/3 with 90% of
    // the area, so torchvision (and this) always falls back to the 4/3 center crop for them.
    assert!(sampled >= 400, "{sampled}");
    assert!(fallbacks >= 2000, "{fallbacks}");
    // The fallback: a 1000x10 strip has no crop of ratio <= 4/3 with 90% of its area, so the
    // center crop of ratio 4/3 is taken.
    let b = t.sample_crop(1000, 10, &mut rng);
    assert_eq!(
        b,
        CropBox {
            top: 0,
            left: 493,
            height: 10,
            width: 13
        }
    );
}

#[test]
fn train_transform_is_deterministic_for_a_seed() {
    let t = transform(TransformConfig::square(48));
    // Nearly square, so boxes are sampled (a 3:2 image would always take the fallback).
    let img = synthetic(240, 220);
    let run = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..4)
            .map(|_| t.train(&img, &mut rng).data)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    // train = resized_crop with the box the same RNG state draws.
    let mut r1 = StdRng::seed_from_u64(3);
    let mut r2 = StdRng::seed_from_u64(3);
    let b = t.sample_crop(240, 220, &mut r1);
    assert_eq!(t.train(&img, &mut r2), t.resized_crop(&img, b));
}

#[test]
fn full_box_of_output_size_is_a_plain_crop() {
    // A box of exactly the output size is not resampled (PIL returns the crop unchanged).
    let t = transform(TransformConfig::square(16));
    let img = synthetic(40, 30);
    let out = t.resized_crop(
        &img,
        CropBox {
            top: 3,
            left: 5,
            height: 16,
            width: 16,
        },
    );
    let rgb = img.to_rgb8();
    let v = rgb[((3 + 2) * 40 + 5 + 7) * 3 + 1];
    let expected = (f32::from(v) / 255.0 - OPENAI_MEAN[1] as f32) / OPENAI_STD[1] as f32;
    assert_eq!(out.channel(1)[2 * 16 + 7], expected);
}

#[test]
fn preprocess_cfg_json_is_applied() {
    let cfg = TransformConfig::default()
        .merge_preprocess_cfg(&serde_json::json!({
            "size": [256, 192],
            "mean": [0.5, 0.5, 0.5],
            "std": 0.5,
            "interpolation": "bilinear",
            "resize_mode": "squash",
            "fill_color": 7,
            "mode": "RGB",
            "crop_pct": null,
        }))
        .unwrap();
    assert_eq!(cfg.size, [256, 192]);
    assert_eq!(cfg.mean, [0.5; 3]);
    assert_eq!(cfg.std, [0.5; 3]);
    assert_eq!(cfg.interpolation, Interpolation::Bilinear);
    assert_eq!(cfg.resize_mode, ResizeMode::Squash);
    assert_eq!(cfg.fill_color, 7);
    assert_eq!(cfg.crop_scale, (0.9, 1.0));
    let bad = TransformConfig::default()
        .merge_preprocess_cfg(&serde_json::json!({"interpolation": "lanczos"}));
    assert!(matches!(
        bad,
        Err(DataError::InvalidTransform {
            field: "interpolation",
            ..
        })
    ));
    let bad =
        TransformConfig::default().merge_preprocess_cfg(&serde_json::json!({"size": [1, 2, 3]}));
    assert!(matches!(
        bad,
        Err(DataError::InvalidTransform { field: "size", .. })
    ));
}

#[test]
fn invalid_configs_are_rejected() {
    let cases = [
        (TransformConfig::default().with_size(0, 224), "size"),
        (
            TransformConfig::default().with_mean_std([0.5; 3], [0.5, 0.0, 0.5]),
            "std",
        ),
        (
            TransformConfig::default().with_crop_scale(1.0, 0.9),
            "crop_scale",
        ),
        (
            TransformConfig::default().with_crop_scale(0.0, 0.9),
            "crop_scale",
        ),
    ];
    for (cfg, field) in cases {
        match ImageTransform::new(cfg) {
            Err(DataError::InvalidTransform { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn decoding_reports_modes() {
    for (name, mode) in [
        ("rocket.jpg", PilMode::Rgb),
        ("camera_gray.jpg", PilMode::L),
        ("coffee_cmyk.jpg", PilMode::Cmyk),
        ("astronaut_rgba.png", PilMode::Rgba),
        ("camera_la.png", PilMode::La),
        ("coffee_palette.png", PilMode::Palette),
        ("page_1bit.png", PilMode::Bilevel),
        ("moon_16bit.png", PilMode::I16),
        ("chelsea_16bit.png", PilMode::Rgb),
        ("chelsea.webp", PilMode::Rgb),
    ] {
        let img = DecodedImage::open(fixture(name)).unwrap();
        assert_eq!(img.mode(), mode, "{name}");
        let bytes = std::fs::read(fixture(name)).unwrap();
        assert_eq!(DecodedImage::from_bytes(&bytes, name).unwrap(), img);
    }
}

#[test]
fn corrupt_and_truncated_files_are_errors_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("clipkd-image-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("rocket.jpg", 0.5, "truncated.jpg"),
        ("camera_gray.png", 0.6, "truncated.png"),
        ("chelsea.webp", 0.5, "truncated.webp"),
    ];
    for (src, keep, name) in cases {
        let bytes = std::fs::read(fixture(src)).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, &bytes[..(bytes.len() as f64 * keep) as usize]).unwrap();
        let err = DecodedImage::open(&path).expect_err(name);
        assert!(
            matches!(err, DataError::ImageDecode { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
    // Not an image at all.
    let path = dir.join("notes.jpg");
    std::fs::write(&path, b"this is not an image").unwrap();
    let err = DecodedImage::open(&path).unwrap_err();
    assert!(matches!(err, DataError::ImageFormat { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.jpg"), "{err}");
    // A JPEG whose headers are garbage after the start marker.
    let mut bytes = std::fs::read(fixture("coffee_420.jpg")).unwrap();
    for b in &mut bytes[20..400] {
        *b = 0x00;
    }
    let err = DecodedImage::from_bytes(&bytes, "garbled.jpg").unwrap_err();
    assert!(err.to_string().contains("garbled.jpg"), "{err}");
    // A missing file.
    let err = DecodedImage::open(dir.join("missing.png")).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }) && err.to_string().contains("missing.png"));
    std::fs::remove_dir_all(&dir).unwrap();
}
