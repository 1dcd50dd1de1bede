//! Helpers shared by the parity tests: the state-dict key lists the fixture scripts write.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use clipkd_models::{Clip, StoredDType, open_clip_state_dict_spec};

/// `state_dict_keys.json` of a fixture directory (written by the `tools/make_*_fixtures.py`).
pub fn state_dict_keys(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("state_dict_keys.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// open_clip's key -> (shape, dtype) for one model of `state_dict_keys.json`.
pub fn keys_of(
    all: &serde_json::Value,
    model: &str,
) -> BTreeMap<String, (Vec<usize>, StoredDType)> {
    all[model]
        .as_array()
        .unwrap_or_else(|| panic!("{model} not in state_dict_keys.json"))
        .iter()
        .map(|entry| {
            let key = entry[0].as_str().unwrap().to_string();
            let shape = entry[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let dtype = match entry[2].as_str().unwrap() {
                "float32" => StoredDType::F32,
                "int64" => StoredDType::I64,
                other => panic!("{key}: {other}"),
            };
            (key, (shape, dtype))
        })
        .collect()
}

/// The model's export spec in the same form.
pub fn spec_of<Bk: Backend>(model: &Clip<Bk>) -> BTreeMap<String, (Vec<usize>, StoredDType)> {
    open_clip_state_dict_spec(model)
        .into_iter()
        .map(|s| (s.key, (s.shape, s.dtype)))
        .collect()
}
