//! `clipkd distill`: train a student CLIP from a frozen teacher (CLIP-KD).

use std::path::PathBuf;

use clap::Args;
use clipkd_train::config::{Override, TrainMode};

use super::run_options::{RunOptions, execute};

/// Options of `clipkd distill`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  clipkd distill --preset vit-b-16-to-vit-t-16-cc3m-12m --teacher-weights teacher.safetensors \\
      --train-data cc3m.csv,cc12m.csv --data-root /data/cc3m,/data/cc12m --output runs/kd
  clipkd distill --config run.toml --set optim.lr=5e-4 --device cuda
  clipkd distill --config run.toml --resume            # continue from the latest checkpoint")]
pub struct DistillArgs {
    /// The teacher: an open_clip config name (ViT-B-16, ViT-L-14, ...; see `clipkd models`) or
    /// JSON file (`teacher.model`; default ViT-B-16).
    #[arg(long, value_name = "CONFIG")]
    pub teacher: Option<String>,
    /// The teacher's open_clip checkpoint (`teacher.weights`).
    #[arg(long, value_name = "FILE")]
    pub teacher_weights: Option<PathBuf>,
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
    if let Some(w) = &args.teacher_weights {
        extra.push(Override::new(
            "teacher.weights",
            w.to_string_lossy().into_owned(),
        ));
    }
    if let Some(c) = &args.teacher_cache {
        extra.push(Override::new(
            "teacher.cache",
            c.to_string_lossy().into_owned(),
        ));
    }
    execute(&args.run, &extra, TrainMode::Distill)
}
