//! `--model`, `--weights` and `--pretrained` of `clipkd embed` and `clipkd eval`: a model and
//! its weights as open_clip's `create_model(model, pretrained)` names them, resolved to a
//! config, a weights file (downloaded into the Hugging Face cache for a tag or an `hf-hub:`
//! repository) and the preprocessing the weights expect.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use clipkd_models::{ClipConfig, ModelSource, PretrainedModel};

/// The model flags.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model: an open_clip config name (e.g. ViT-B-32, RN50; see `clipkd models`), an
    /// open_clip model-config JSON file (its `preprocess_cfg`, if any, sets the image
    /// preprocessing), a Hugging Face Hub repository `hf-hub:org/name` (config, weights and
    /// preprocessing from it, as in open_clip) or a folder laid out as one, `local-dir:PATH`.
    #[arg(long, value_name = "CONFIG_JSON_OR_PRESET")]
    pub model: ModelSource,
    /// The weights: an open_clip / CLIP-KD checkpoint (.safetensors, .pt, .pth, .bin).
    #[arg(long, value_name = "FILE", conflicts_with = "pretrained")]
    pub weights: Option<PathBuf>,
    /// The weights by open_clip pretrained tag (laion400m_e32, openai, ...; `clipkd models
    /// --pretrained`), downloaded from the Hugging Face Hub into its cache once, with the
    /// activation and preprocessing they were trained with (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT,
    /// HF_TOKEN and HF_HUB_OFFLINE apply).
    #[arg(long, value_name = "TAG")]
    pub pretrained: Option<String>,
}

/// A model ready to load.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// The architecture (with the tag's activation).
    pub config: ClipConfig,
    /// The weights file.
    pub weights: PathBuf,
    /// open_clip's `preprocess_cfg` for the weights, if any.
    pub preprocess_cfg: Option<serde_json::Value>,
}

impl ModelArgs {
    /// `--model` with `--pretrained`.
    fn pretrained_model(&self) -> PretrainedModel {
        PretrainedModel::new(self.model.clone(), self.pretrained.clone())
    }

    /// Checks the flags without the network or the weights: a tag the model has, and some
    /// weights named.
    pub fn check(&self) -> anyhow::Result<()> {
        let model = self.pretrained_model();
        model.tag()?;
        if let Some(weights) = &self.weights {
            anyhow::ensure!(
                weights.is_file(),
                "weights file not found: {}",
                weights.display()
            );
        } else {
            anyhow::ensure!(
                model.has_weights(),
                "no weights: give --weights FILE, --pretrained TAG (`clipkd models --pretrained` \
                 lists them), or an hf-hub: or local-dir: model"
            );
        }
        Ok(())
    }

    /// The config, the weights (from the cache or downloaded) and the preprocessing.
    pub fn resolve(&self) -> anyhow::Result<ResolvedModel> {
        self.check()?;
        let model = self.pretrained_model();
        let context = || match &self.pretrained {
            Some(tag) => format!("model `{}`, pretrained `{tag}`", self.model),
            None => format!("model `{}`", self.model),
        };
        let config = model.config().with_context(context)?;
        let weights = match &self.weights {
            Some(path) => path.clone(),
            None => model
                .weights()
                .with_context(context)?
                .expect("checked: the model names weights"),
        };
        let preprocess_cfg = model.preprocess_cfg().with_context(context)?;
        Ok(ResolvedModel {
            config,
            weights,
            preprocess_cfg,
        })
    }
}
