//! Where a model's architecture comes from: a bundled open_clip preset, an open_clip
//! model-config JSON file, a Hugging Face Hub repository in open_clip's layout (or a folder
//! holding one), or a config written inline.
//!
//! In a run config (`[student] model = ...`) they are written:
//!
//! ```toml
//! model = "ViT-B-16"                      # a preset (any name of ClipConfig::preset_names)
//! model = "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"  # a Hub repository, as open_clip
//! model = "local-dir:models/my-clip"      # a folder laid out as one, as open_clip
//! model = "configs/my-vit.json"           # not a preset name: a file
//! model = { preset = "RN50" }             # explicit forms, for when a file is named like a preset
//! model = { file = "RN50" }
//! model = { config = { embed_dim = 256, vision_cfg = { ... }, text_cfg = { ... } } }
//! ```
//!
//! A string is a preset when it is one of the bundled names, and a file otherwise: one rule,
//! decided when the config is read, not by what the string looks like when the model is built.
//! Inline configs are open_clip's model-config JSON (the same keys as a `ViT-B-16.json`), parsed
//! and checked when the config is read. A Hub repository (`hf-hub:org/name`, open_clip's
//! prefix) holds `open_clip_config.json` (the model config under `model_cfg`, the preprocessing
//! under `preprocess_cfg`) and the weights; both are downloaded into the Hugging Face cache when
//! the source is resolved ([`HubClient`]). A folder (`local-dir:path`, open_clip's prefix) holds
//! the same `open_clip_config.json` and a checkpoint, found as open_clip finds it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::config::{ClipConfig, read_json_file};
use crate::error::ModelError;
use crate::hub_download::HubClient;
use crate::presets::unknown_preset;

/// open_clip's prefix of a model name that is a Hugging Face Hub repository.
pub const HF_HUB_PREFIX: &str = "hf-hub:";

/// open_clip's prefix of a model name that is a folder laid out as a Hub repository.
pub const LOCAL_DIR_PREFIX: &str = "local-dir:";

/// The file of a Hub repository that holds its open_clip model config and preprocessing.
pub const HUB_CONFIG_FILE: &str = "open_clip_config.json";

/// A model's architecture: see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A bundled open_clip preset by name ([`ClipConfig::preset`]).
    Preset(String),
    /// An open_clip model-config JSON file ([`ClipConfig::from_open_clip_json`]).
    File(PathBuf),
    /// A config given in place (already parsed and checked).
    Inline(Box<ClipConfig>),
    /// A Hugging Face Hub repository in open_clip's layout (`org/name`, written
    /// `hf-hub:org/name`): its `open_clip_config.json` and its weights.
    Hub(String),
    /// A folder laid out as such a repository (written `local-dir:path`): its
    /// `open_clip_config.json` and a checkpoint.
    LocalDir(PathBuf),
}

impl ModelSource {
    /// The source a string names: a Hub repository if it starts with `hf-hub:`, a folder if
    /// with `local-dir:`, a preset if it is a bundled preset's name, else a file.
    pub fn named(name_or_path: &str) -> Self {
        if let Some(repo) = name_or_path.strip_prefix(HF_HUB_PREFIX) {
            ModelSource::Hub(repo.to_string())
        } else if let Some(dir) = name_or_path.strip_prefix(LOCAL_DIR_PREFIX) {
            ModelSource::LocalDir(PathBuf::from(dir))
        } else if ClipConfig::preset_names().contains(&name_or_path) {
            ModelSource::Preset(name_or_path.to_string())
        } else {
            ModelSource::File(PathBuf::from(name_or_path))
        }
    }

    /// The architecture. A file that does not exist and whose name has neither a directory nor
    /// a `.json` extension is reported as an unknown preset (a typo in a preset name is the
    /// likelier mistake), with the known names. A Hub repository's config is downloaded by the
    /// client the environment describes ([`HubClient::from_env`]).
    pub fn resolve(&self) -> Result<ClipConfig, ModelError> {
        self.resolve_lazily(HubClient::from_env)
    }

    /// [`ModelSource::resolve`], with `client` for a Hub repository's config.
    pub fn resolve_with(&self, client: &HubClient) -> Result<ClipConfig, ModelError> {
        self.resolve_lazily(|| Ok(client.clone()))
    }

    /// The client is made only for a Hub repository (the environment may name no cache).
    pub(crate) fn resolve_lazily(
        &self,
        client: impl FnOnce() -> Result<HubClient, ModelError>,
    ) -> Result<ClipConfig, ModelError> {
        match self {
            ModelSource::Hub(_) | ModelSource::LocalDir(_) => {
                let (model_cfg, _) = self.open_clip_config(client)?;
                ClipConfig::from_open_clip_value(model_cfg)
            }
            ModelSource::Preset(name) => ClipConfig::preset(name),
            ModelSource::File(path) => {
                if !path.exists() && looks_like_a_name(path) {
                    return Err(unknown_preset(&path.display().to_string()));
                }
                ClipConfig::from_open_clip_json(path)
            }
            ModelSource::Inline(config) => Ok((**config).clone()),
        }
    }

    /// The JSON file this source reads, if it is one (its `preprocess_cfg`, when present, sets
    /// the image normalization).
    pub fn file(&self) -> Option<&Path> {
        match self {
            ModelSource::File(path) => Some(path),
            _ => None,
        }
    }
}

impl ModelSource {
    /// The `model_cfg` and `preprocess_cfg` of the `open_clip_config.json` of a Hub repository
    /// (from the cache or downloaded by the client) or of a folder.
    ///
    /// # Panics
    /// For the other sources (callers match first).
    pub(crate) fn open_clip_config(
        &self,
        client: impl FnOnce() -> Result<HubClient, ModelError>,
    ) -> Result<(Value, Option<Value>), ModelError> {
        let path = self.open_clip_config_file(client)?;
        self.read_open_clip_config(&path)
    }

    /// Where [`ModelSource::open_clip_config`] reads from.
    fn open_clip_config_file(
        &self,
        client: impl FnOnce() -> Result<HubClient, ModelError>,
    ) -> Result<PathBuf, ModelError> {
        match self {
            ModelSource::Hub(repo) => {
                check_repo_id(repo)?;
                client()?.download(repo, "main", HUB_CONFIG_FILE)
            }
            ModelSource::LocalDir(dir) => {
                let path = dir.join(HUB_CONFIG_FILE);
                if !path.is_file() {
                    return Err(ModelError::InvalidConfig {
                        field: "model".into(),
                        value: self.to_string(),
                        reason: format!(
                            "{} not found: a `local-dir:` folder holds open_clip_config.json \
                             and a checkpoint",
                            path.display()
                        ),
                    });
                }
                Ok(path)
            }
            _ => unreachable!("only Hub and LocalDir sources have an open_clip_config.json"),
        }
    }

    /// The `model_cfg` and `preprocess_cfg` of this source's `open_clip_config.json` at `path`.
    fn read_open_clip_config(&self, path: &Path) -> Result<(Value, Option<Value>), ModelError> {
        let missing = format!(
            "{} has no `model_cfg` (not an open_clip model repository)",
            path.display()
        );
        match self {
            ModelSource::Hub(repo) => read_open_clip_config(path, || ModelError::Hub {
                repo: repo.clone(),
                file: HUB_CONFIG_FILE.to_string(),
                message: missing,
            }),
            _ => read_open_clip_config(path, || ModelError::InvalidConfig {
                field: "model_cfg".into(),
                value: self.to_string(),
                reason: missing,
            }),
        }
    }
}

/// open_clip's check of a Hub repository id: not empty; `org/name` or `name`, no path tricks.
fn check_repo_id(repo: &str) -> Result<(), ModelError> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = parts.len() <= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != ".." && !p.contains('\\'));
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig {
            field: "model".into(),
            value: format!("{HF_HUB_PREFIX}{repo}"),
            reason: "a Hub repository is written `hf-hub:org/name`".into(),
        })
    }
}

/// An `open_clip_config.json`'s `model_cfg` and `preprocess_cfg` (open_clip requires the first).
fn read_open_clip_config(
    path: &Path,
    missing: impl FnOnce() -> ModelError,
) -> Result<(Value, Option<Value>), ModelError> {
    let mut value = read_json_file(path)?;
    let model_cfg = value
        .get_mut("model_cfg")
        .map(Value::take)
        .ok_or_else(missing)?;
    Ok((model_cfg, value.get("preprocess_cfg").cloned()))
}

fn looks_like_a_name(path: &Path) -> bool {
    path.components().count() == 1
        && !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

impl Default for ModelSource {
    /// CLIP-KD's student, ViT-T/16.
    fn default() -> Self {
        ModelSource::Preset("ViT-T-16".into())
    }
}

impl From<&str> for ModelSource {
    fn from(s: &str) -> Self {
        ModelSource::named(s)
    }
}

impl From<ClipConfig> for ModelSource {
    fn from(config: ClipConfig) -> Self {
        ModelSource::Inline(Box::new(config))
    }
}

impl FromStr for ModelSource {
    type Err = std::convert::Infallible;

    /// [`ModelSource::named`] (every string is a preset or a file).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ModelSource::named(s))
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Preset(name) => f.write_str(name),
            ModelSource::File(path) => write!(f, "{}", path.display()),
            ModelSource::Inline(_) => f.write_str("an inline model config"),
            ModelSource::Hub(repo) => write!(f, "{HF_HUB_PREFIX}{repo}"),
            ModelSource::LocalDir(dir) => write!(f, "{LOCAL_DIR_PREFIX}{}", dir.display()),
        }
    }
}

impl PartialEq<&str> for ModelSource {
    fn eq(&self, other: &&str) -> bool {
        *self == ModelSource::named(other)
    }
}

impl Serialize for ModelSource {
    /// A preset as its name; a file as its path, or `{ file = ... }` when the path is also a
    /// preset's name; an inline config as `{ config = { ...open_clip JSON... } }`. What is
    /// written reads back as the same source.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ModelSource::Preset(name) => serializer.serialize_str(name),
            ModelSource::File(path) => {
                let text = path
                    .to_str()
                    .ok_or_else(|| serde::ser::Error::custom("a model file path is not UTF-8"))?;
                if matches!(ModelSource::named(text), ModelSource::File(_)) {
                    serializer.serialize_str(text)
                } else {
                    let mut map = Map::new();
                    map.insert("file".into(), Value::String(text.into()));
                    Value::Object(map).serialize(serializer)
                }
            }
            ModelSource::Inline(config) => {
                let mut map = Map::new();
                map.insert("config".into(), config.to_open_clip_value());
                Value::Object(map).serialize(serializer)
            }
            ModelSource::Hub(_) => serializer.serialize_str(&self.to_string()),
            ModelSource::LocalDir(dir) => {
                let text = dir
                    .to_str()
                    .ok_or_else(|| serde::ser::Error::custom("a model folder path is not UTF-8"))?;
                serializer.serialize_str(&format!("{LOCAL_DIR_PREFIX}{text}"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for ModelSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const FORMS: &str = "expected a preset name or file path, or a table with one of \
                             `preset`, `file` or `config`";
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(ModelSource::named(&s)),
            Value::Object(map) => {
                let mut entries = map.into_iter();
                let (Some((key, value)), None) = (entries.next(), entries.next()) else {
                    return Err(D::Error::custom(FORMS));
                };
                match (key.as_str(), value) {
                    ("preset", Value::String(name)) => match ModelSource::named(&name) {
                        preset @ ModelSource::Preset(_) => Ok(preset),
                        ModelSource::File(_)
                        | ModelSource::Inline(_)
                        | ModelSource::Hub(_)
                        | ModelSource::LocalDir(_) => Err(D::Error::custom(unknown_preset(&name))),
                    },
                    ("file", Value::String(path)) => Ok(ModelSource::File(path.into())),
                    ("config", value @ Value::Object(_)) => ClipConfig::from_open_clip_value(value)
                        .map(ModelSource::from)
                        .map_err(|e| D::Error::custom(format!("inline model config: {e}"))),
                    ("preset" | "file", _) => {
                        Err(D::Error::custom(format!("`{key}` must be a string")))
                    }
                    ("config", _) => Err(D::Error::custom(
                        "`config` must be a table (open_clip model-config JSON keys)",
                    )),
                    (other, _) => Err(D::Error::custom(format!("unknown key `{other}`: {FORMS}"))),
                }
            }
            _ => Err(D::Error::custom(FORMS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json(text: &str) -> Result<ModelSource, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn a_string_is_a_preset_when_it_names_one_else_a_file() {
        assert_eq!(
            from_json(r#""RN50""#).unwrap(),
            ModelSource::Preset("RN50".into())
        );
        assert_eq!(
            from_json(r#""models/RN50.json""#).unwrap(),
            ModelSource::File("models/RN50.json".into())
        );
        // Not a preset, no extension: a file that is looked for as one...
        let typo = from_json(r#""ViT-B-61""#).unwrap();
        assert_eq!(typo, ModelSource::File("ViT-B-61".into()));
        // ...and reported as an unknown preset when there is no such file.
        let e = typo.resolve().unwrap_err().to_string();
        assert!(e.contains("ViT-B-61") && e.contains("ViT-B-16"), "{e}");
    }

    #[test]
    fn explicit_forms_and_round_trips() {
        let path = std::env::temp_dir().join(format!("clipkd-source-{}.json", std::process::id()));
        let tiny = ClipConfig::preset("RN50").unwrap();
        std::fs::write(&path, tiny.to_open_clip_json()).unwrap();

        let file = ModelSource::File(path.clone());
        assert_eq!(file.resolve().unwrap(), tiny);
        let inline = ModelSource::from(tiny.clone());
        assert_eq!(inline.resolve().unwrap(), tiny);
        for source in [
            ModelSource::Preset("ViT-B-16".into()),
            file,
            // A file named like a preset is written as `{ file = ... }` and stays a file.
            ModelSource::File("RN50".into()),
            inline,
        ] {
            let json = serde_json::to_string(&source).unwrap();
            assert_eq!(from_json(&json).unwrap(), source, "{json}");
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            from_json(r#"{"file": "RN50"}"#).unwrap(),
            ModelSource::File("RN50".into())
        );
    }

    #[test]
    fn bad_forms_are_errors_that_say_what_is_accepted() {
        for (text, expect) in [
            (r#"{"preset": "nope"}"#, "unknown model preset `nope`"),
            (r#"{"preset": 3}"#, "`preset` must be a string"),
            (r#"{"config": "x"}"#, "`config` must be a table"),
            (r#"{"path": "x.json"}"#, "unknown key `path`"),
            (
                r#"{"file": "a", "preset": "RN50"}"#,
                "one of `preset`, `file` or `config`",
            ),
            ("7", "a preset name or file path"),
            (r#"{"config": {"embed_dim": 8}}"#, "inline model config"),
        ] {
            let e = from_json(text).unwrap_err().to_string();
            assert!(e.contains(expect), "{text}: {e}");
        }
    }
}
