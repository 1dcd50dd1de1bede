//! open_clip's `create_model(model_name, pretrained=tag)`: a [`ModelSource`] and, for a
//! bundled model, one of its pretrained tags, resolved to the architecture the weights need,
//! the weights file and the preprocessing they were trained with.
//!
//! - A preset with a tag: the tag's repository and file ([`crate::pretrained`]), its
//!   activation (QuickGELU for OpenAI's and LAION-400M's weights) and its mean/std,
//!   interpolation and resize mode.
//! - `hf-hub:org/name`: the repository's `open_clip_config.json` and its weights (open_clip's
//!   file order); a tag is refused (open_clip ignores it with a warning: the repository's
//!   weights are the model's). `local-dir:path`: the same from a folder, the checkpoint chosen
//!   as open_clip chooses it.
//! - A preset, file or inline config without a tag: the architecture only; the weights are a
//!   file the caller names, or none (a random initialisation).
//!
//! Files come from the Hugging Face cache or are downloaded into it ([`HubClient`]).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::{ClipConfig, read_json_file};
use crate::error::ModelError;
use crate::hub_download::HubClient;
use crate::pretrained::{Pretrained, WEIGHT_FILES, pretrained};
use crate::source::ModelSource;

/// A model as open_clip names it: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct PretrainedModel {
    model: ModelSource,
    tag: Option<String>,
    client: Option<HubClient>,
}

impl PretrainedModel {
    /// `model` with its pretrained `tag` (none: the architecture only, or a Hub repository's
    /// own weights). Files are fetched by the client the environment describes
    /// ([`HubClient::from_env`]) unless [`PretrainedModel::with_client`] gives one.
    pub fn new(model: ModelSource, tag: Option<String>) -> Self {
        Self {
            model,
            tag,
            client: None,
        }
    }

    /// Fetches files with `client`.
    pub fn with_client(mut self, client: HubClient) -> Self {
        self.client = Some(client);
        self
    }

    /// The model source.
    pub fn model(&self) -> &ModelSource {
        &self.model
    }

    /// The pretrained tag's entry, checked without the network.
    ///
    /// # Errors
    /// [`ModelError::UnknownPretrained`] for a tag the model does not have (listing those it
    /// has); [`ModelError::TagNotApplicable`] for a tag on a source that cannot have one (a
    /// file, an inline config, a Hub repository).
    pub fn tag(&self) -> Result<Option<&'static Pretrained>, ModelError> {
        let Some(tag) = &self.tag else {
            return Ok(None);
        };
        let not_applicable = |reason: &str| ModelError::TagNotApplicable {
            model: self.model.to_string(),
            tag: tag.clone(),
            reason: reason.to_string(),
        };
        match &self.model {
            ModelSource::Preset(name) => pretrained(name, tag).map(Some),
            ModelSource::Hub(_) | ModelSource::LocalDir(_) => Err(not_applicable(
                "an open_clip repository's weights are its own; give no tag",
            )),
            ModelSource::File(_) | ModelSource::Inline(_) => Err(not_applicable(
                "tags belong to bundled model names (`clipkd models --pretrained`); give this \
                 model's weights file instead",
            )),
        }
    }

    /// Whether this names weights of its own (a tag, a Hub repository or a `local-dir:`
    /// folder).
    pub fn has_weights(&self) -> bool {
        self.tag.is_some() || matches!(self.model, ModelSource::Hub(_) | ModelSource::LocalDir(_))
    }

    /// The architecture, with the activation the tag's weights were trained with.
    ///
    /// # Errors
    /// As [`PretrainedModel::tag`] and [`ModelSource::resolve`].
    pub fn config(&self) -> Result<ClipConfig, ModelError> {
        let tag = self.tag()?;
        let config = self.model.resolve_lazily(|| self.client())?;
        Ok(match tag {
            Some(tag) => tag.adapt_config(config),
            None => config,
        })
    }

    /// The weights file the tag or the Hub repository names, from the cache or downloaded;
    /// `None` when this names none.
    ///
    /// # Errors
    /// As [`PretrainedModel::tag`]; [`ModelError::Hub`] when the file cannot be had.
    pub fn weights(&self) -> Result<Option<PathBuf>, ModelError> {
        if let Some(tag) = self.tag()? {
            return self.client()?.pretrained_file(tag).map(Some);
        }
        match &self.model {
            ModelSource::Hub(repo) => self.client()?.first_file(repo, &WEIGHT_FILES).map(Some),
            ModelSource::LocalDir(dir) => find_checkpoint_in_dir(dir).map(Some),
            _ => Ok(None),
        }
    }

    /// open_clip's `preprocess_cfg` for these weights (mean, std, interpolation, resize mode):
    /// the tag's, the Hub repository's, or a model-config file's; `None` when there is none
    /// (open_clip's defaults apply).
    ///
    /// # Errors
    /// As [`PretrainedModel::weights`]; an unreadable or invalid JSON file.
    pub fn preprocess_cfg(&self) -> Result<Option<Value>, ModelError> {
        if let Some(tag) = self.tag()? {
            return Ok(Some(json!({
                "mean": tag.mean,
                "std": tag.std,
                "interpolation": tag.interpolation,
                "resize_mode": tag.resize_mode,
            })));
        }
        match &self.model {
            ModelSource::Hub(_) | ModelSource::LocalDir(_) => {
                Ok(self.model.open_clip_config(|| self.client())?.1)
            }
            // A missing file is reported by `resolve`, with the preset names.
            ModelSource::File(path) if path.is_file() => {
                Ok(read_json_file(path)?.get("preprocess_cfg").cloned())
            }
            _ => Ok(None),
        }
    }

    fn client(&self) -> Result<HubClient, ModelError> {
        match &self.client {
            Some(client) => Ok(client.clone()),
            None => HubClient::from_env(),
        }
    }
}

/// The checkpoint of a `local-dir:` folder, as open_clip's `_find_checkpoint_in_dir` picks it:
/// among its `.safetensors`, `.bin` and `.pth` files, the first of open_clip's preferred names,
/// else the first `.safetensors` by name, else the first by name.
pub fn find_checkpoint_in_dir(dir: &Path) -> Result<PathBuf, ModelError> {
    const PREFERRED: [&str; 8] = [
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.safetensors",
        "open_clip_pytorch_model.bin",
        "open_clip_pytorch_model.pth",
        "model.safetensors",
        "pytorch_model.bin",
        "pytorch_model.pth",
        "model.pth",
    ];
    let io = |source| ModelError::Io {
        action: "listing",
        path: dir.to_path_buf(),
        source,
    };
    let mut found: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let checkpoint = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "safetensors" | "bin" | "pth"));
        if checkpoint && path.is_file() {
            found.push(path);
        }
    }
    let name = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string()
    };
    if let Some(best) = PREFERRED
        .iter()
        .find_map(|wanted| found.iter().find(|p| name(p) == *wanted))
    {
        return Ok(best.clone());
    }
    found.sort_by_key(|p| (p.extension().is_none_or(|e| e != "safetensors"), name(p)));
    found
        .into_iter()
        .next()
        .ok_or_else(|| ModelError::InvalidConfig {
            field: "model".into(),
            value: format!("local-dir:{}", dir.display()),
            reason: "the folder has no checkpoint (.safetensors, .bin or .pth)".into(),
        })
}
