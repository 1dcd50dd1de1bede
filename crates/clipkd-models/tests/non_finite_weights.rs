//! Checkpoints holding NaN or infinite weights are refused at load, naming the file, the keys
//! and how many values, whatever the stored float type and file format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use burn_flex::Flex;
use clipkd_models::{ClipConfig, ModelError, load_open_clip};
use safetensors::SafeTensors;

type B = Flex;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models")
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "clipkd-models-nonfinite-{}-{name}",
        std::process::id()
    ))
}

fn tiny_config() -> ClipConfig {
    ClipConfig::from_open_clip_json(fixtures().join("tiny.json")).unwrap()
}

/// The f32 tensors of `tiny.safetensors`.
fn tiny_tensors() -> BTreeMap<String, (Vec<f32>, Vec<usize>)> {
    let bytes = std::fs::read(fixtures().join("tiny.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, (values, view.shape().to_vec()))
        })
        .collect()
}

/// Writes `tensors` as a safetensors file with every tensor stored as `dtype`.
fn write_safetensors(
    name: &str,
    tensors: &BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    dtype: DType,
) -> PathBuf {
    let stored = match dtype {
        DType::F32 => safetensors::Dtype::F32,
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        DType::F64 => safetensors::Dtype::F64,
        other => panic!("no safetensors dtype for {other:?}"),
    };
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(key, (values, shape))| {
            let data = TensorData::new(values.clone(), shape.clone()).convert_dtype(dtype);
            (key.clone(), shape.clone(), data.as_bytes().to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = buffers
        .iter()
        .map(|(key, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(stored, shape.clone(), bytes).unwrap();
            (key.clone(), view)
        })
        .collect();
    let path = temp_path(name);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

/// Loads `path` with the tiny config, expecting [`ModelError::NonFiniteWeights`]; returns
/// its tensors (sorted by key), total and message. Removes the file.
fn non_finite_error(path: &Path) -> (Vec<(String, usize)>, usize, String) {
    let result = load_open_clip::<B>(path, &tiny_config(), &Default::default());
    std::fs::remove_file(path).unwrap();
    let Err(error) = result else {
        panic!("a checkpoint with NaN / inf weights must be refused");
    };
    let message = error.to_string();
    let ModelError::NonFiniteWeights {
        path: named,
        mut tensors,
        total,
    } = error
    else {
        panic!("expected NonFiniteWeights, got {message}");
    };
    assert_eq!(named, path, "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    tensors.sort();
    (tensors, total, message)
}

#[test]
fn nan_and_inf_weights_are_refused_naming_the_keys() {
    let mut tensors = tiny_tensors();
    tensors.get_mut("visual.proj").unwrap().0[3] = f32::NAN;
    tensors.get_mut("ln_final.weight").unwrap().0[0] = f32::INFINITY;
    let path = write_safetensors("nan-inf.safetensors", &tensors, DType::F32);
    let (found, total, message) = non_finite_error(&path);
    println!("{message}");
    assert_eq!(
        found,
        [
            ("ln_final.weight".to_string(), 1),
            ("visual.proj".to_string(), 1)
        ]
    );
    assert_eq!(total, 2);
    assert!(message.contains("ln_final.weight (1)"), "{message}");
    assert!(message.contains("visual.proj (1)"), "{message}");
    assert!(message.contains("2 non-finite"), "{message}");
}

#[test]
fn every_stored_float_type_is_checked() {
    for dtype in [DType::F16, DType::BF16, DType::F64] {
        let mut tensors = tiny_tensors();
        let proj = &mut tensors.get_mut("text_projection").unwrap().0;
        proj[0] = f32::NAN;
        proj[1] = f32::NEG_INFINITY;
        proj[2] = f32::INFINITY;
        let path = write_safetensors(&format!("{dtype:?}.safetensors"), &tensors, dtype);
        let (found, total, message) = non_finite_error(&path);
        assert_eq!(
            found,
            [("text_projection".to_string(), 3)],
            "{dtype:?}: {message}"
        );
        assert_eq!(total, 3, "{dtype:?}");

        // The same file without them loads (the check is not set off by the type itself).
        let clean = tiny_tensors();
        let path = write_safetensors(&format!("{dtype:?}-clean.safetensors"), &clean, dtype);
        let loaded = load_open_clip::<B>(&path, &tiny_config(), &Default::default());
        std::fs::remove_file(&path).unwrap();
        loaded.unwrap_or_else(|e| panic!("{dtype:?}: {e}"));
    }
}

#[test]
fn f64_weights_beyond_f32_range_are_refused() {
    let mut tensors = tiny_tensors();
    let bias = &mut tensors.get_mut("visual.ln_post.bias").unwrap().0;
    bias[0] = 1.0;
    let path = temp_path("f64-huge.safetensors");
    // Written by hand: 1e300 is finite in f64 but infinite once cast to the model's f32.
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(key, (values, shape))| {
            let mut values: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            if key == "visual.ln_post.bias" {
                values[0] = 1e300;
            }
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (key.clone(), shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = buffers
        .iter()
        .map(|(key, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F64, shape.clone(), bytes)
                    .unwrap();
            (key.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let (found, total, _) = non_finite_error(&path);
    assert_eq!(found, [("visual.ln_post.bias".to_string(), 1)]);
    assert_eq!(total, 1);
}

/// Overwrites the first f32 value of the tensor `key` inside a PyTorch file whose storage holds
/// the same values as `tiny.safetensors` (found by its bytes).
fn patch_pt(source: &str, key: &str, value: f32, name: &str) -> PathBuf {
    let tensors = tiny_tensors();
    let needle: Vec<u8> = tensors[key].0[..8]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut bytes = std::fs::read(fixtures().join(source)).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap_or_else(|| panic!("{key}'s values not found in {source}"));
    assert!(
        !bytes[at + 1..]
            .windows(needle.len())
            .any(|w| w == needle.as_slice()),
        "{key}'s values occur twice in {source}"
    );
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    let path = temp_path(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn pytorch_files_are_checked_too() {
    // The legacy (non-zip) format stores raw little-endian storages, so a value can be patched
    // in place (a zip archive would need its CRC fixed).
    let path = patch_pt("tiny_legacy.pt", "visual.conv1.weight", f32::NAN, "nan.pt");
    let (found, total, message) = non_finite_error(&path);
    assert_eq!(found, [("visual.conv1.weight".to_string(), 1)], "{message}");
    assert_eq!(total, 1);
}

#[test]
fn many_bad_tensors_are_summarised() {
    let mut tensors = tiny_tensors();
    let mut keys: Vec<String> = tensors.keys().cloned().collect();
    keys.truncate(8);
    for key in &keys {
        tensors.get_mut(key).unwrap().0[0] = f32::NAN;
    }
    let path = write_safetensors("many.safetensors", &tensors, DType::F32);
    let (found, total, message) = non_finite_error(&path);
    assert_eq!(found.len(), 8);
    assert_eq!(total, 8);
    assert!(message.contains("in 8 tensor(s)"), "{message}");
    assert!(message.contains("and 3 more"), "{message}");
}
