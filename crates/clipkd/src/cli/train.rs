//! `clipkd train`: train a student CLIP alone (no teacher): the baseline that measures what
//! distillation adds.

use clap::Args;
use clipkd_train::config::TrainMode;

use super::run_options::{RunOptions, execute};

/// Options of `clipkd train`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "The [teacher] section of the config is ignored and the loss is the task \
loss alone (the `baseline` preset), so one config serves both runs of a comparison.

Examples:
  clipkd train --student ViT-T-16 --train-data cc3m.csv --data-root /data/cc3m --output runs/base
  clipkd train --config run.toml --output runs/base --resume"
)]
pub struct TrainArgs {
    /// Everything about the run.
    #[command(flatten)]
    pub run: RunOptions,
}

/// Runs `clipkd train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    // A flag takes effect or is an error: the baseline has no teacher for another loss to read.
    if let Some(loss) = args.run.loss.as_deref().filter(|l| *l != "baseline") {
        anyhow::bail!(
            "--loss {loss}: `clipkd train` trains the student alone with the task loss (the \
             `baseline` preset); distillation losses need a teacher: use `clipkd distill --loss \
             {loss}`"
        );
    }
    execute(&args.run, &[], TrainMode::Baseline)
}
