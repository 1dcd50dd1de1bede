//! `clipkd distill`: train a student CLIP from a frozen teacher (CLIP-KD).

use std::path::PathBuf;

use clap::Args;
use clipkd_train::config::{Override, TrainMode};

use super::run_options::{RunOptions, execute, weights_overrides};

/// Options of `clipkd distill`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  clipkd distill --preset vit-b-16-to-vit-t-16-cc3m-12m --teacher-pretrained laion400m_e32 \\
      --train-data cc3m.csv,cc12m.csv --data-root /data/cc3m,/data/cc12m --output runs/kd
  clipkd distill --teacher ViT-L-14 --teacher-pretrained openai --student ViT-T-16 ...
  clipkd distill --teacher hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K ...
  clipkd distill --teacher ViT-B-16 --teacher-weights teacher.safetensors ...
  clipkd distill --config run.toml --set optim.lr=5e-4 --device cuda
  clipkd distill --config run.toml --resume            # continue from the latest checkpoint")]
pub struct DistillArgs {
    /// The teacher: an open_clip config name (ViT-B-16, ViT-L-14, ...; see `clipkd models`), a
    /// JSON file, or a Hugging Face Hub repository `hf-hub:org/name` (or a folder laid out as
    /// one, `local-dir:PATH`) with its weights (`teacher.model`; default ViT-B-16).
    #[arg(long, value_name = "CONFIG")]
    pub teacher: Option<String>,
    /// The teacher's open_clip checkpoint (`teacher.weights`).
    #[arg(long, value_name = "FILE", conflicts_with = "teacher_pretrained")]
    pub teacher_weights: Option<PathBuf>,
    /// The teacher's open_clip pretrained tag (laion400m_e32, openai, ...; `clipkd models
    /// --pretrained`), downloaded from the Hugging Face Hub into its cache once
    /// (`teacher.pretrained`; HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE
    /// apply).
    #[arg(long, value_name = "TAG")]
    pub teacher_pretrained: Option<String>,
    /// Distill from this teacher cache (`clipkd teacher-cache`) instead of running the teacher
    /// (`teacher.cache`).
    #[arg(long, value_name = "DIR")]
    pub teacher_cache: Option<PathBuf>,
    /// Everything else about the run.
    #[command(flatten)]
    pub run: RunOptions,
}

/// Runs `clipkd distill`.
pub fn run(args: DistillArgs) -> anyhow::Result<()> {
    let mut extra = Vec::new();
    if let Some(t) = &args.teacher {
        extra.push(Override::new("teacher.model", t.clone()));
    }
    extra.extend(weights_overrides(
        "teacher",
        ("weights", args.teacher_weights.as_deref()),
        args.teacher_pretrained.as_deref(),
    ));
    if let Some(c) = &args.teacher_cache {
        extra.push(Override::new(
            "teacher.cache",
            c.to_string_lossy().into_owned(),
        ));
    }
    execute(&args.run, &extra, TrainMode::Distill)
}
