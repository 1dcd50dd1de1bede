//! Parity with open_clip 3.3.0 and checkpoint import/export, on the Flex CPU backend, against
//! the fixtures written by `tools/make_model_fixtures.py` (`tests/fixtures/models/`).
//!
//! Tolerances: embeddings must have cosine similarity >= 0.99999 per row with open_clip's
//! (computed in float64), and a max abs difference below `1e-5` (the values are O(1); float32
//! accumulation over a few hundred terms gives ~1e-6, open_clip's own float32 run is 1e-6 off
//! its float64 result, see `meta.json`). Round trips through our own files must be bit-exact.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use burn_flex::Flex;
use clipkd_models::{
    Clip, ClipConfig, ModelError, StoredDType, VisionConfig, load_open_clip,
    open_clip_state_dict_spec, save_open_clip,
};
use safetensors::SafeTensors;

mod common;
use common::{keys_of, spec_of, state_dict_keys};

/// Burn's backend RNG is one per process: tests that seed it, or draw from it, hold this lock
/// so that a seeded draw is not interleaved with another test's.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn seeded() -> std::sync::MutexGuard<'static, ()> {
    SEEDED.lock().unwrap_or_else(|e| e.into_inner())
}

type B = Flex;
type AD = Autodiff<Flex>;

const COSINE_MIN: f64 = 0.99999;
const MAX_ABS: f32 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models")
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("clipkd-models-{}-{name}", std::process::id()))
}

/// A tensor read from a fixture file.
#[derive(Debug, Clone)]
enum Stored {
    F32(Vec<f32>, Vec<usize>),
    I64(Vec<i64>, Vec<usize>),
}

fn read_safetensors(path: &Path) -> BTreeMap<String, Stored> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = view.shape().to_vec();
            let data = view.data();
            let stored = match view.dtype() {
                safetensors::Dtype::F32 => Stored::F32(
                    data.chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                    shape,
                ),
                safetensors::Dtype::I64 => Stored::I64(
                    data.chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                    shape,
                ),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, stored)
        })
        .collect()
}

fn f32s(io: &BTreeMap<String, Stored>, key: &str) -> (Vec<f32>, Vec<usize>) {
    match &io[key] {
        Stored::F32(v, s) => (v.clone(), s.clone()),
        other => panic!("{key}: expected f32, got {other:?}"),
    }
}

fn i64s(io: &BTreeMap<String, Stored>, key: &str) -> (Vec<i64>, Vec<usize>) {
    match &io[key] {
        Stored::I64(v, s) => (v.clone(), s.clone()),
        other => panic!("{key}: expected i64, got {other:?}"),
    }
}

fn pixels<Bk: Backend>(io: &BTreeMap<String, Stored>, device: &Bk::Device) -> Tensor<Bk, 4> {
    let (v, s) = f32s(io, "pixels");
    Tensor::from_data(TensorData::new(v, s), device)
}

fn int2<Bk: Backend>(
    io: &BTreeMap<String, Stored>,
    key: &str,
    device: &Bk::Device,
) -> Tensor<Bk, 2, Int> {
    let (v, s) = i64s(io, key);
    Tensor::from_data(TensorData::new(v, s), device)
}

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data()
        .convert_dtype(DType::F32)
        .into_vec::<f32>()
        .unwrap()
}

/// Per-row cosine similarity (min over rows) and max abs difference.
fn compare(ours: &[f32], theirs: &[f32], dim: usize) -> (f64, f32) {
    assert_eq!(ours.len(), theirs.len());
    let mut min_cos = f64::INFINITY;
    for (a, b) in ours.chunks(dim).zip(theirs.chunks(dim)) {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        min_cos = min_cos.min(dot / (na * nb));
    }
    let max_abs = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    (min_cos, max_abs)
}

fn assert_close(what: &str, ours: Vec<f32>, io: &BTreeMap<String, Stored>, key: &str) {
    let (theirs, shape) = f32s(io, key);
    let (cos, max_abs) = compare(&ours, &theirs, *shape.last().unwrap());
    println!("{what}: {key}: min cosine {cos:.9}, max abs diff {max_abs:.3e}");
    assert!(cos >= COSINE_MIN, "{what} {key}: cosine {cos}");
    assert!(max_abs <= MAX_ABS, "{what} {key}: max abs diff {max_abs}");
}

fn load_case<Bk: Backend>(case: &str, device: &Bk::Device) -> (ClipConfig, Clip<Bk>) {
    let config = ClipConfig::from_open_clip_json(fixtures().join(format!("{case}.json"))).unwrap();
    let model = load_open_clip::<Bk>(
        fixtures().join(format!("{case}.safetensors")),
        &config,
        device,
    )
    .unwrap_or_else(|e| panic!("{case}: {e}"));
    (config, model)
}

fn parity(case: &str) {
    let device = Default::default();
    let (_, model) = load_case::<B>(case, &device);
    let io = read_safetensors(&fixtures().join(format!("{case}_io.safetensors")));
    let images = pixels::<B>(&io, &device);
    let tokens = int2::<B>(&io, "tokens", &device);

    let out = model.forward(images.clone(), tokens.clone()).unwrap();
    assert_close(
        case,
        values(out.image_embeds.clone()),
        &io,
        "image_features",
    );
    assert_close(case, values(out.text_embeds.clone()), &io, "text_features");
    assert_close(
        case,
        values(out.image_embeds_normalized()),
        &io,
        "image_features_normalized",
    );
    assert_close(
        case,
        values(out.text_embeds_normalized()),
        &io,
        "text_features_normalized",
    );
    assert_eq!(values(out.logit_scale.clone()), f32s(&io, "logit_scale").0);
    // Token ids of another integer type give the same embeddings.
    let (ids, shape) = i64s(&io, "tokens");
    let tokens_i32 = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&t| t as i32).collect::<Vec<_>>(), shape),
        &device,
    );
    assert_eq!(
        values(model.encode_text(tokens_i32).unwrap()),
        values(out.text_embeds.clone())
    );
    assert_eq!(
        values(model.encode_image_normalized(images.clone()).unwrap()),
        values(out.image_embeds_normalized())
    );

    if model.is_vit() {
        let keep = int2::<B>(&io, "keep", &device);
        let masked = model
            .encode_image_masked_with_indices(images, keep)
            .unwrap();
        assert_close(case, values(masked), &io, "masked_image_features");
    }
}

#[test]
fn parity_vit_gelu() {
    parity("vit_gelu");
}

#[test]
fn parity_vit_quickgelu_layerscale_rect_avgpool_linear_proj_eos() {
    parity("vit_quickgelu");
}

#[test]
fn parity_vit_sincos_gelu_tanh_eps_ln_after_avgpool_bidirectional_last_noproj() {
    parity("vit_sincos");
}

#[test]
fn sin_cos_positions_are_initialised_as_open_clip() {
    let device = Default::default();
    let (config, loaded) = load_case::<B>("vit_sincos", &device);
    let fresh = config.init::<B>(&device).unwrap();
    let table = |model: &Clip<B>| match &model.visual {
        clipkd_models::VisionTower::Vit(vit) => values(vit.positional_embedding.val()),
        _ => unreachable!(),
    };
    let (ours, theirs) = (table(&fresh), table(&loaded));
    let max_abs = compare(&ours, &theirs, 32).1;
    assert!(
        max_abs < 1e-6,
        "sin-cos table differs from open_clip's by {max_abs}"
    );
}

#[test]
fn parity_modified_resnet() {
    parity("rn");
}

#[test]
fn masked_forward_random_is_seeded_and_ratio_zero_is_the_plain_forward() {
    let _seeded = seeded();
    let device = Default::default();
    let (_, model) = load_case::<B>("vit_gelu", &device);
    let io = read_safetensors(&fixtures().join("vit_gelu_io.safetensors"));
    let images = pixels::<B>(&io, &device);

    // Ratio 0 keeps every patch (in a random order): attention and class-token pooling do not
    // depend on token order, so this is the ordinary forward up to rounding.
    let all = values(model.encode_image_masked(images.clone(), 0.0).unwrap());
    let (cos, max_abs) = compare(
        &all,
        &values(model.encode_image(images.clone()).unwrap()),
        32,
    );
    assert!(
        cos >= COSINE_MIN && max_abs < 1e-5,
        "cos {cos}, max abs {max_abs}"
    );

    B::seed(&device, 42);
    let a = values(model.encode_image_masked(images.clone(), 0.75).unwrap());
    B::seed(&device, 42);
    let b = values(model.encode_image_masked(images.clone(), 0.75).unwrap());
    B::seed(&device, 43);
    let c = values(model.encode_image_masked(images.clone(), 0.75).unwrap());
    assert_eq!(a, b, "same seed, same mask");
    assert_ne!(a, c, "another seed, another mask");
    assert_eq!(a.len(), 4 * 32);

    assert!(matches!(
        model.encode_image_masked(images.clone(), 1.0),
        Err(ModelError::InvalidMaskRatio(r)) if r == 1.0
    ));
    let bad_keep = Tensor::<B, 2, Int>::zeros([3, 2], &device);
    assert!(matches!(
        model.encode_image_masked_with_indices(images, bad_keep),
        Err(ModelError::InvalidKeepIndices {
            found: [3, 2],
            batch: 4,
            patches: 16
        })
    ));

    let (_, resnet) = load_case::<B>("rn", &device);
    let rn_images = Tensor::<B, 4>::zeros([1, 3, 64, 64], &device);
    let error = resnet.encode_image_masked(rn_images, 0.5).unwrap_err();
    assert!(matches!(error, ModelError::MaskedForwardUnsupported { .. }));
    assert!(error.to_string().contains("ModifiedResNet"), "{error}");
}

#[test]
fn training_mode_follows_the_autodiff_backend() {
    let device = Default::default();
    // BatchNorm: batch statistics under autodiff, running statistics after `valid()`.
    let (_, resnet) = load_case::<AD>("rn", &device);
    let io = read_safetensors(&fixtures().join("rn_io.safetensors"));
    let images = pixels::<AD>(&io, &device);
    // (Evaluate first: a training-mode forward also updates the running statistics.)
    let eval = values(resnet.valid().encode_image(images.clone().inner()).unwrap());
    let train = values(resnet.encode_image(images.clone()).unwrap());
    let (reference, _) = f32s(&io, "image_features");
    assert!(compare(&eval, &reference, 32).1 <= MAX_ABS);
    assert!(
        compare(&train, &reference, 32).1 > 1e-2,
        "train mode should use batch statistics"
    );

    // Patch dropout: active under autodiff only.
    let mut config = ClipConfig::from_open_clip_json(fixtures().join("vit_gelu.json")).unwrap();
    if let VisionConfig::Vit(v) = &mut config.vision {
        v.patch_dropout = 0.5;
    }
    let weights = fixtures().join("vit_gelu.safetensors");
    let io = read_safetensors(&fixtures().join("vit_gelu_io.safetensors"));
    let (reference, _) = f32s(&io, "image_features");
    let inference = load_open_clip::<B>(&weights, &config, &device).unwrap();
    let eval = values(inference.encode_image(pixels::<B>(&io, &device)).unwrap());
    assert!(compare(&eval, &reference, 32).1 <= MAX_ABS);
    let training = load_open_clip::<AD>(&weights, &config, &device).unwrap();
    let dropped = values(training.encode_image(pixels::<AD>(&io, &device)).unwrap());
    assert_eq!(dropped.len(), reference.len());
    assert!(
        compare(&dropped, &reference, 32).1 > 1e-3,
        "patch dropout should change the output"
    );
}

/// The weights of a model as open_clip keys -> f32 values (via our own export).
fn exported(model: &Clip<B>, name: &str) -> BTreeMap<String, Stored> {
    let path = temp_path(name);
    save_open_clip(model, &path).unwrap();
    let out = read_safetensors(&path);
    std::fs::remove_file(&path).unwrap();
    out
}

#[test]
fn every_checkpoint_format_loads_the_same_weights() {
    let device = Default::default();
    let config = ClipConfig::from_open_clip_json(fixtures().join("tiny.json")).unwrap();
    let reference =
        load_open_clip::<B>(fixtures().join("tiny.safetensors"), &config, &device).unwrap();
    let expected = exported(&reference, "tiny-ref.safetensors");

    for variant in ["tiny_nested_module.pt", "tiny_legacy.pt"] {
        let model = load_open_clip::<B>(fixtures().join(variant), &config, &device)
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
        let got = exported(&model, variant);
        assert_eq!(got.len(), expected.len(), "{variant}");
        for (key, value) in &expected {
            match (value, &got[key]) {
                (Stored::F32(a, sa), Stored::F32(b, sb)) => {
                    assert_eq!((a, sa), (b, sb), "{variant}: {key}")
                }
                (Stored::I64(a, _), Stored::I64(b, _)) => assert_eq!(a, b),
                _ => panic!("{variant}: {key}: dtype differs"),
            }
        }
    }

    // Half-precision files: every weight is the reference rounded to that type.
    for (variant, dtype) in [
        ("tiny_fp16.safetensors", DType::F16),
        ("tiny_bf16.pt", DType::BF16),
    ] {
        let model = load_open_clip::<B>(fixtures().join(variant), &config, &device)
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
        let got = exported(&model, variant);
        for (key, value) in &expected {
            let (Stored::F32(a, sa), Stored::F32(b, sb)) = (value, &got[key]) else {
                continue;
            };
            assert_eq!(sa, sb, "{variant}: {key} shape");
            let rounded = TensorData::new(a.clone(), sa.clone())
                .convert_dtype(dtype)
                .convert_dtype(DType::F32)
                .into_vec::<f32>()
                .unwrap();
            assert_eq!(&rounded, b, "{variant}: {key}");
        }
    }
}

/// Rewrites `tiny.safetensors` with changes, for the error tests.
fn write_variant(
    name: &str,
    edit: impl FnOnce(&mut BTreeMap<String, (Vec<f32>, Vec<usize>)>),
) -> PathBuf {
    let source = read_safetensors(&fixtures().join("tiny.safetensors"));
    let mut tensors: BTreeMap<String, (Vec<f32>, Vec<usize>)> = source
        .into_iter()
        .map(|(k, v)| match v {
            Stored::F32(v, s) => (k, (v, s)),
            Stored::I64(..) => panic!("tiny has no int tensors"),
        })
        .collect();
    edit(&mut tensors);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, (v, s))| (k, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (k.clone(), view)
        })
        .collect();
    let path = temp_path(name);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn a_broken_file_reports_every_bad_key() {
    let device = Default::default();
    let config = ClipConfig::from_open_clip_json(fixtures().join("tiny.json")).unwrap();
    let path = write_variant("broken.safetensors", |t| {
        t.remove("visual.ln_post.bias");
        t.remove("transformer.resblocks.0.mlp.c_fc.weight");
        t.insert(
            "visual.extra_head.weight".into(),
            (vec![0.0; 4], vec![2, 2]),
        );
        t.insert("logit_bias".into(), (vec![-10.0], vec![]));
        let (v, _) = t.remove("ln_final.weight").unwrap();
        t.insert("ln_final.weight".into(), (v[..8].to_vec(), vec![8]));
        let (v, s) = t.remove("visual.positional_embedding").unwrap();
        t.insert("visual.positional_embedding".into(), (v, vec![s[1], s[0]]));
    });
    let error = load_open_clip::<B>(&path, &config, &device).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let message = error.to_string();
    println!("{message}");
    let ModelError::KeyMismatch { report, .. } = error else {
        panic!("expected KeyMismatch, got {message}");
    };
    let mut missing = report.missing.clone();
    missing.sort();
    assert_eq!(
        missing,
        [
            "transformer.resblocks.0.mlp.c_fc.weight",
            "visual.ln_post.bias"
        ]
    );
    let mut unexpected = report.unexpected.clone();
    unexpected.sort();
    assert_eq!(unexpected, ["logit_bias", "visual.extra_head.weight"]);
    let mismatched: HashMap<&str, (Vec<usize>, Vec<usize>)> = report
        .mismatched
        .iter()
        .map(|m| (m.key.as_str(), (m.expected.clone(), m.found.clone())))
        .collect();
    assert_eq!(mismatched.len(), 2);
    assert_eq!(mismatched["ln_final.weight"], (vec![16], vec![8]));
    assert_eq!(
        mismatched["visual.positional_embedding"],
        (vec![5, 16], vec![16, 5])
    );
    for key in [
        "visual.ln_post.bias",
        "transformer.resblocks.0.mlp.c_fc.weight",
        "visual.extra_head.weight",
        "logit_bias",
        "ln_final.weight",
        "visual.positional_embedding",
        "init_logit_bias",
    ] {
        assert!(
            message.contains(key),
            "message should name {key}: {message}"
        );
    }
}

#[test]
fn not_a_checkpoint_is_a_format_error() {
    let device = Default::default();
    let config = ClipConfig::from_open_clip_json(fixtures().join("tiny.json")).unwrap();
    let path = temp_path("garbage.pt");
    std::fs::write(&path, b"this is not a checkpoint at all").unwrap();
    let error = load_open_clip::<B>(&path, &config, &device).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(error, ModelError::CheckpointFormat { .. }),
        "{error}"
    );
    let missing =
        load_open_clip::<B>(temp_path("absent.safetensors"), &config, &device).unwrap_err();
    assert!(matches!(missing, ModelError::Io { .. }), "{missing}");
}

#[test]
fn export_matches_open_clip_keys_and_round_trips_exactly() {
    let _seeded = seeded();
    let device = Default::default();
    let all = state_dict_keys(&fixtures());
    for case in ["vit_gelu", "vit_quickgelu", "vit_sincos", "rn", "tiny"] {
        let (config, model) = load_case::<B>(case, &device);
        let expected = keys_of(&all, case);
        assert_eq!(spec_of(&model), expected, "{case}: spec");

        let path = temp_path(&format!("{case}-export.safetensors"));
        save_open_clip(&model, &path).unwrap();
        let written: BTreeMap<String, (Vec<usize>, StoredDType)> = read_safetensors(&path)
            .into_iter()
            .map(|(k, v)| match v {
                Stored::F32(_, s) => (k, (s, StoredDType::F32)),
                Stored::I64(_, s) => (k, (s, StoredDType::I64)),
            })
            .collect();
        assert_eq!(written, expected, "{case}: exported file");

        // Re-import: bit-identical outputs.
        let again = load_open_clip::<B>(&path, &config, &device).unwrap();
        std::fs::remove_file(&path).unwrap();
        let [h, w] = config.image_size();
        let images =
            Tensor::<B, 4>::random([2, 3, h, w], burn::tensor::Distribution::Default, &device);
        let tokens = Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![3i64, 1, 2, 5, 1, 1, 4, 2], [2, 4]),
            &device,
        );
        assert_eq!(
            values(model.encode_image(images.clone()).unwrap()),
            values(again.encode_image(images).unwrap()),
            "{case}"
        );
        assert_eq!(
            values(model.encode_text(tokens.clone()).unwrap()),
            values(again.encode_text(tokens).unwrap()),
            "{case}"
        );
        assert_eq!(values(model.logit_scale()), values(again.logit_scale()));
    }
}

#[test]
fn preset_models_have_open_clip_state_dicts() {
    // Parameters are lazy: building these models allocates (almost) nothing.
    let device = Default::default();
    let all = state_dict_keys(&fixtures());
    for name in ["ViT-T-16", "ViT-B-16", "RN50"] {
        let model = ClipConfig::preset(name)
            .unwrap()
            .init::<B>(&device)
            .unwrap();
        assert_eq!(
            spec_of(&model),
            keys_of(&all, &format!("preset:{name}")),
            "{name}"
        );
    }
}

#[test]
fn fresh_models_have_open_clip_initial_statistics() {
    let _seeded = seeded();
    let device = Default::default();
    B::seed(&device, 0);
    let config = ClipConfig::preset("ViT-B-16").unwrap();
    let model = config.init::<B>(&device).unwrap();
    let std = |v: Vec<f32>| {
        let n = v.len() as f64;
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
    };
    let close = |what: &str, got: f64, want: f64| {
        assert!(
            (got / want - 1.0).abs() < 0.02,
            "{what}: std {got}, open_clip {want}"
        );
    };
    close(
        "token_embedding",
        std(values(model.token_embedding.weight.val())),
        0.02,
    );
    close(
        "positional_embedding",
        std(values(model.positional_embedding.val())),
        0.01,
    );
    let block = &model.transformer.resblocks[0];
    close(
        "text in_proj",
        std(values(block.attn.in_proj.weight.val())),
        512f64.powf(-0.5),
    );
    close(
        "text out_proj",
        std(values(block.attn.out_proj.weight.val())),
        512f64.powf(-0.5) * 24f64.powf(-0.5),
    );
    close(
        "text c_fc",
        std(values(block.mlp.c_fc.weight.val())),
        1024f64.powf(-0.5),
    );
    assert_eq!(values(model.logit_scale()), vec![(1.0f32 / 0.07).ln()]);
    let clipkd_models::VisionTower::Vit(vit) = &model.visual else {
        panic!("ViT-B-16 has a ViT");
    };
    close(
        "visual.proj",
        std(values(vit.proj.val())),
        768f64.powf(-0.5),
    );
    // PyTorch's nn.MultiheadAttention: xavier_uniform on [3w, w]: std = sqrt(2 / (4w)).
    let vblock = &vit.transformer.resblocks[0];
    close(
        "visual in_proj",
        std(values(vblock.attn.in_proj.weight.val())),
        (2.0f64 / 3072.0).sqrt(),
    );
}

#[test]
fn gradients_reach_every_trainable_parameter() {
    use burn::optim::GradientsParams;
    let device = Default::default();
    for case in ["vit_sincos", "rn"] {
        let (_, model) = load_case::<AD>(case, &device);
        let io = read_safetensors(&fixtures().join(format!("{case}_io.safetensors")));
        let images = pixels::<AD>(&io, &device);
        let tokens = int2::<AD>(&io, "tokens", &device);
        let mut loss = model.encode_image(images.clone()).unwrap().sum()
            + model.encode_text(tokens).unwrap().sum()
            + model.logit_scale().sum();
        if model.is_vit() {
            loss = loss + model.encode_image_masked(images, 0.5).unwrap().sum();
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let spec = open_clip_state_dict_spec(&model);
        // Trainable: every float tensor except BatchNorm running statistics and the fixed
        // sin-cos positional table.
        let trainable = spec
            .iter()
            .filter(|s| s.dtype == StoredDType::F32)
            .filter(|s| !s.key.ends_with("running_mean") && !s.key.ends_with("running_var"))
            .filter(|s| !(case == "vit_sincos" && s.key == "visual.positional_embedding"))
            .count();
        assert_eq!(grads.len(), trainable, "{case}: parameters with a gradient");
    }
}
