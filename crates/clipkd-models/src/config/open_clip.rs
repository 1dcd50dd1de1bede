//! open_clip's model-config JSON: reading it into a [`ClipConfig`] ([`read`](mod@read)) and
//! writing a [`ClipConfig`] back ([`write`](mod@write)), as open_clip 3.3.0 reads and writes
//! `model_configs/*.json`.
//!
//! The reader takes the JSON as it is: the same field names and the same defaults as the
//! dataclasses `CLIPVisionCfg` and `CLIPTextCfg` (`open_clip/model.py`) and the `CLIP`
//! constructor. Fields that change the math are either implemented or rejected with an error
//! naming the field and its value; fields open_clip's `CLIP` class itself ignores (for example
//! `timm_pool` without `timm_model_name`, or every ViT-only field of a ModifiedResNet config)
//! are accepted and ignored the same way. Unknown fields are errors, as they are for open_clip's
//! dataclasses. The writer leaves out fields at their defaults, so that what it writes reads
//! back to the same config.

mod read;
mod section;
mod timm;
mod write;

#[cfg(test)]
mod tests;

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::types::ClipConfig;
use crate::error::ModelError;

impl ClipConfig {
    /// Reads an open_clip model-config JSON file (e.g. `ViT-B-16.json`, or a Hugging Face hub
    /// `open_clip_config.json` whose model config sits under `model_cfg`).
    pub fn from_open_clip_json(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        Self::from_open_clip_value(read_json_file(path.as_ref())?)
    }

    /// Parses open_clip model-config JSON text.
    pub fn from_open_clip_json_str(json: &str) -> Result<Self, ModelError> {
        let value: Value = serde_json::from_str(json).map_err(|source| ModelError::Json {
            origin: None,
            source,
        })?;
        Self::from_open_clip_value(value)
    }

    /// Parses an already-parsed open_clip model-config JSON value.
    pub fn from_open_clip_value(value: Value) -> Result<Self, ModelError> {
        read::clip_from_value(value)
    }

    /// The config as open_clip model-config JSON (pretty-printed).
    pub fn to_open_clip_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_open_clip_value())
            .expect("a JSON value always serializes")
    }

    /// The config as an open_clip model-config JSON value.
    pub fn to_open_clip_value(&self) -> Value {
        write::clip_to_value(self)
    }
}

/// A JSON file's value; errors name the file (and the parser's line and column).
pub(crate) fn read_json_file(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json {
        origin: Some(path.to_path_buf()),
        source,
    })
}

impl Serialize for ClipConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_open_clip_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ClipConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        ClipConfig::from_open_clip_value(value).map_err(serde::de::Error::custom)
    }
}
