//! `clipkd download`: fetch a model's pretrained weights (and an `hf-hub:` repository's config)
//! into the Hugging Face cache ahead of time, so that a run on machines without internet access
//! finds them there (`HF_HUB_OFFLINE=1`).

use anyhow::Context;
use clap::Args;
use clipkd_models::{ModelSource, PretrainedModel};

/// Options of `clipkd download`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  clipkd download --model ViT-B-16 --pretrained laion400m_e32
  clipkd download --model hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K
  HF_HUB_OFFLINE=1 clipkd distill --teacher ViT-B-16 --teacher-pretrained laion400m_e32 ...")]
pub struct DownloadArgs {
    /// The model: an open_clip config name with --pretrained, or a Hugging Face Hub repository
    /// `hf-hub:org/name`.
    #[arg(long, value_name = "NAME")]
    pub model: ModelSource,
    /// The pretrained tag (`clipkd models --pretrained` lists them).
    #[arg(long, value_name = "TAG")]
    pub pretrained: Option<String>,
}

/// Runs `clipkd download`: prints the cached weights file's path on standard output.
pub fn run(args: DownloadArgs) -> anyhow::Result<()> {
    let model = PretrainedModel::new(args.model.clone(), args.pretrained.clone());
    model.tag()?;
    anyhow::ensure!(
        model.has_weights(),
        "`{}` names no weights to download: give --pretrained TAG (`clipkd models \
         --pretrained` lists them) or an hf-hub: model",
        args.model
    );
    let context = || format!("downloading `{}`", args.model);
    // The config too: an hf-hub repository's is read from the cache offline.
    model.config().with_context(context)?;
    let weights = model
        .weights()
        .with_context(context)?
        .expect("checked: the model names weights");
    eprintln!("cached: {}", weights.display());
    println!("{}", weights.display());
    Ok(())
}
