//! timm vision towers (open_clip's `TimmModel`) against open_clip 3.3.0 + timm 1.0.31, on the
//! fixtures written by `tools/make_timm_fixtures.py` (`tests/fixtures/timm/`): eval-mode and
//! train-mode embeddings, every visual parameter's gradient, the BatchNorm running statistics
//! after a train-mode forward, and the state-dict keys of CLIP-KD's timm presets.
//!
//! References are float64 computations stored as float32; clipkd runs in float32. Tolerances:
//! embeddings min cosine 0.99999 and max abs diff 1e-4 (the features are O(1)-O(10)); gradients
//! per tensor relative L2 difference 1e-4, or twice PyTorch's own float32 error where that is
//! larger (the stem convolution of `resnet_bottleneck`, whose gradient through a train-mode
//! BatchNorm cancels: 1.2e-2 in torch's float32 and in clipkd's); running statistics max abs
//! diff 1e-5 relative to their scale. A gradient that is zero in exact arithmetic (float64
//! reference below 1e-9 of the largest) must stay below 1e-5 of the largest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::Flex;
use clipkd_models::{
    Clip, ClipConfig, StoredDType, TimmTrunkConfig, VisionConfig, load_open_clip,
    open_clip_state_dict_spec, save_open_clip,
};
use safetensors::SafeTensors;

mod common;
use common::{keys_of, spec_of, state_dict_keys};

type B = Flex;
type AD = Autodiff<Flex>;

const CASES: [&str; 6] = [
    "resnet_basic",
    "resnet_bottleneck",
    "efficientnet_small",
    "mobilenetv3_small",
    "swin_small",
    "mobilevit_small",
];

/// CLIP-KD's timm students among the presets.
const PRESETS: &[&str] = &[
    "timm_resnet18",
    "timm-efficientnet-b0",
    "timm_mobilenetv3_small_100",
    "timm-swin_tiny_patch4_window7_224",
    "timm-mobilevit_s",
];

/// The gradient tolerance where PyTorch's own float32 gradient is closer than it.
const GRAD_TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/timm")
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("clipkd-timm-{}-{name}", std::process::id()))
}

/// The f32 tensors of a safetensors file (integer tensors skipped), by name.
fn read_f32(path: &Path) -> BTreeMap<String, (Vec<f32>, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == safetensors::Dtype::F32)
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, (values, view.shape().to_vec()))
        })
        .collect()
}

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data()
        .convert_dtype(DType::F32)
        .into_vec::<f32>()
        .unwrap()
}

fn load_case<Bk: Backend>(case: &str) -> Clip<Bk> {
    let config = ClipConfig::from_open_clip_json(fixtures().join(format!("{case}.json"))).unwrap();
    load_open_clip::<Bk>(
        fixtures().join(format!("{case}.safetensors")),
        &config,
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{case}: {e}"))
}

fn tensor<Bk: Backend, const D: usize>(
    io: &BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    key: &str,
) -> Tensor<Bk, D> {
    let (v, s) = io[key].clone();
    Tensor::from_data(TensorData::new(v, s), &Default::default())
}

/// Min row cosine and max abs difference of two `[N, D]` embeddings, asserted.
fn assert_embeddings(what: &str, ours: &[f32], theirs: &[f32], dim: usize) {
    assert_eq!(ours.len(), theirs.len(), "{what}");
    let mut min_cos = f64::INFINITY;
    for (a, b) in ours.chunks(dim).zip(theirs.chunks(dim)) {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        min_cos = min_cos.min(dot / (na * nb));
    }
    let max_abs = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("{what}: min cosine {min_cos:.9}, max abs diff {max_abs:.2e}");
    assert!(min_cos >= 0.99999, "{what}: cosine {min_cos}");
    assert!(max_abs <= 1e-4, "{what}: max abs diff {max_abs}");
}

/// ‖a − b‖ / ‖b‖.
fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

#[test]
fn eval_mode_embeddings_match_open_clip() {
    for case in CASES {
        let model = load_case::<B>(case);
        let io = read_f32(&fixtures().join(format!("{case}_io.safetensors")));
        let ours = values(model.encode_image(tensor(&io, "pixels")).unwrap());
        let (theirs, shape) = &io["image_features_eval"];
        assert_embeddings(&format!("{case} eval"), &ours, theirs, shape[1]);
    }
}

/// Replaces every float parameter by its gradient (running statistics, which have none, keep
/// their values), so that the export writes the gradients under open_clip's keys.
struct GradientsAsValues(<AD as AutodiffBackend>::Gradients);

impl ModuleMapper<AD> for GradientsAsValues {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AD, D>>) -> Param<Tensor<AD, D>> {
        let (id, tensor, _) = param.consume();
        match tensor.grad(&self.0) {
            Some(grad) => Param::initialized(id, Tensor::from_inner(grad)),
            None => Param::initialized(id, tensor),
        }
    }
}

/// Train mode (batch statistics, on the autodiff backend): embeddings, the gradient of every
/// visual parameter, and the running statistics' update, all against PyTorch.
#[test]
fn train_mode_embeddings_gradients_and_running_statistics_match_open_clip() {
    for case in CASES {
        let model = load_case::<AD>(case);
        let io = read_f32(&fixtures().join(format!("{case}_io.safetensors")));
        let features = model.encode_image(tensor(&io, "pixels")).unwrap();
        let (theirs, shape) = &io["image_features_train"];
        assert_embeddings(
            &format!("{case} train"),
            &values(features.clone()),
            theirs,
            shape[1],
        );

        // The running statistics, updated by that forward.
        let after = temp_path(&format!("{case}-after.safetensors"));
        save_open_clip(&model.valid(), &after).unwrap();
        let exported = read_f32(&after);
        std::fs::remove_file(&after).unwrap();
        let mut statistics = 0;
        for (key, (expected, _)) in io.iter().filter(|(k, _)| k.starts_with("after_train.")) {
            let key = key.trim_start_matches("after_train.");
            let (ours, _) = &exported[key];
            let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let max_abs = ours
                .iter()
                .zip(expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max_abs <= 1e-5 * scale, "{case} {key}: {max_abs}");
            statistics += 1;
        }
        let expected = open_clip_state_dict_spec(&model)
            .iter()
            .filter(|s| s.key.ends_with("running_mean") || s.key.ends_with("running_var"))
            .count();
        assert_eq!(
            statistics, expected,
            "{case}: every running statistic compared"
        );

        let weights: Tensor<AD, 2> = tensor(&io, "grad_weights");
        let grads = (features * weights).sum().backward();
        let gradient_model = model.clone().map(&mut GradientsAsValues(grads)).valid();
        let path = temp_path(&format!("{case}-grads.safetensors"));
        save_open_clip(&gradient_model, &path).unwrap();
        let ours = read_f32(&path);
        std::fs::remove_file(&path).unwrap();
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join("meta.json")).unwrap())
                .unwrap();
        let torch_f32 = &meta["cases"][case]["torch_f32_grad_relative_l2"];
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let gradients: Vec<(&str, &Vec<f32>)> = io
            .iter()
            .filter_map(|(k, (v, _))| k.strip_prefix("grad.").map(|k| (k, v)))
            .collect();
        let scale = gradients.iter().map(|(_, v)| norm(v)).fold(0.0, f64::max);
        let mut compared = 0;
        let mut vanishing = 0;
        let mut worst = 0.0f64;
        for (key, expected) in gradients {
            compared += 1;
            // Exactly zero in exact arithmetic (a BatchNorm bias followed, through a linear
            // convolution, by a train-mode BatchNorm, which removes any per-channel shift):
            // the float64 reference is ~1e-15, so a relative error means nothing; ours must
            // be as negligible next to the model's gradients.
            if norm(expected) <= 1e-9 * scale {
                let ours = norm(&ours[key].0);
                assert!(
                    ours <= 1e-5 * scale,
                    "{case} gradient of {key}: {ours:.2e}, should vanish (largest {scale:.2e})"
                );
                vanishing += 1;
                continue;
            }
            let error = relative_l2(&ours[key].0, expected);
            let torch = torch_f32[key].as_f64().unwrap();
            assert!(
                error <= GRAD_TOLERANCE.max(2.0 * torch),
                "{case} gradient of {key}: relative L2 {error:.2e} (torch f32: {torch:.2e})"
            );
            worst = worst.max(error);
        }
        println!(
            "{case}: {compared} gradients ({vanishing} vanishing), worst relative L2 {worst:.2e}"
        );
        let visual = open_clip_state_dict_spec(&model)
            .into_iter()
            .filter(|s| s.key.starts_with("visual.") && s.dtype == StoredDType::F32)
            .filter(|s| !s.key.ends_with("running_mean") && !s.key.ends_with("running_var"))
            .count();
        assert_eq!(compared, visual, "{case}: every visual parameter compared");
    }
}

/// The fixture models and CLIP-KD's full-size presets have exactly open_clip's keys, shapes and
/// dtypes, and so do the vision towers of every other timm model name clipkd builds (built
/// lazily: the full-size weights are never drawn).
#[test]
fn state_dicts_have_open_clip_keys() {
    let all = state_dict_keys(&fixtures());
    let mut named = 0;
    for &name in TimmTrunkConfig::known_names() {
        let key = format!("named:{name}");
        if all.get(&key).is_none() {
            continue; // a preset's or a case's model, checked below
        }
        let json = format!(
            r#"{{"embed_dim": 512, "vision_cfg": {{"timm_model_name": "{name}", "timm_pool": "", "timm_proj": "linear"}},
                "text_cfg": {{"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}}}"#
        );
        let model = ClipConfig::from_open_clip_json_str(&json)
            .unwrap()
            .init::<B>(&Default::default())
            .unwrap();
        let visual: BTreeMap<_, _> = spec_of(&model)
            .into_iter()
            .filter(|(k, _)| k.starts_with("visual."))
            .collect();
        assert_eq!(visual, keys_of(&all, &key), "{name}");
        named += 1;
    }
    // Every name but those of CLIP-KD's presets.
    assert_eq!(named, TimmTrunkConfig::known_names().len() - PRESETS.len());
    for case in CASES {
        let model = load_case::<B>(case);
        assert_eq!(spec_of(&model), keys_of(&all, case), "{case}");
    }
    for preset in PRESETS {
        let config = ClipConfig::preset(preset).unwrap();
        let model = config.init::<B>(&Default::default()).unwrap();
        assert_eq!(
            spec_of(&model),
            keys_of(&all, &format!("preset:{preset}")),
            "{preset}"
        );
    }
}

/// A Swin checkpoint in the key layout of timm < 0.9 (CLIP-KD's): patch merging at the end of
/// the previous stage, persistent index and mask buffers. It loads into the same weights.
#[test]
fn older_timm_swin_checkpoints_load() {
    let config = ClipConfig::from_open_clip_json(fixtures().join("swin_small.json")).unwrap();
    let legacy = load_open_clip::<B>(
        fixtures().join("swin_small_legacy.safetensors"),
        &config,
        &Default::default(),
    )
    .unwrap();
    let io = read_f32(&fixtures().join("swin_small_io.safetensors"));
    let ours = values(legacy.encode_image(tensor(&io, "pixels")).unwrap());
    let (theirs, shape) = &io["image_features_eval"];
    assert_embeddings("swin_small legacy", &ours, theirs, shape[1]);
}

/// A checkpoint as CLIP-KD's training code saves it (torch zip, the state dict nested under
/// `state_dict` with DDP's `module.` prefix, next to the epoch and the optimizer) loads and
/// embeds as open_clip does.
#[test]
fn clip_kd_training_checkpoints_load() {
    let config =
        ClipConfig::from_open_clip_json(fixtures().join("mobilenetv3_small.json")).unwrap();
    let model = load_open_clip::<B>(
        fixtures().join("mobilenetv3_small_clip_kd.pt"),
        &config,
        &Default::default(),
    )
    .unwrap();
    let io = read_f32(&fixtures().join("mobilenetv3_small_io.safetensors"));
    let ours = values(model.encode_image(tensor(&io, "pixels")).unwrap());
    let (theirs, shape) = &io["image_features_eval"];
    assert_embeddings(
        "mobilenetv3_small CLIP-KD checkpoint",
        &ours,
        theirs,
        shape[1],
    );
}

/// Export then import gives the same weights bit for bit, and the config written for a small
/// variant (with `timm_model_kwargs`) reads back to the same config.
#[test]
fn round_trips_weights_and_configs() {
    for case in CASES {
        let model = load_case::<B>(case);
        let path = temp_path(&format!("{case}-round.safetensors"));
        save_open_clip(&model, &path).unwrap();
        let again = load_open_clip::<B>(&path, model.config(), &Default::default()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let original = read_f32(&fixtures().join(format!("{case}.safetensors")));
        let path = temp_path(&format!("{case}-again.safetensors"));
        save_open_clip(&again, &path).unwrap();
        let written = read_f32(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(written.len(), original.len());
        for (key, (values, _)) in &original {
            assert_eq!(&written[key].0, values, "{case} {key}");
        }
        let json = model.config().to_open_clip_json();
        assert_eq!(
            &ClipConfig::from_open_clip_json_str(&json).unwrap(),
            model.config()
        );
    }
    let preset = ClipConfig::preset("timm_resnet18").unwrap();
    let json = preset.to_open_clip_json();
    assert!(!json.contains("timm_model_kwargs"), "{json}");
    assert_eq!(ClipConfig::from_open_clip_json_str(&json).unwrap(), preset);
    match &preset.vision {
        VisionConfig::Timm(t) => {
            assert_eq!(Some(&t.trunk), TimmTrunkConfig::named("resnet18").as_ref());
            assert_eq!(t.trunk.num_features(), 512);
        }
        other => panic!("{other:?}"),
    }
}
