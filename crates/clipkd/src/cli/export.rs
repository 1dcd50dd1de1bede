//! `clipkd export`: the student of a checkpoint as an open_clip state dict (safetensors).

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use clipkd_train::checkpoint::{ExportReport, export_student, resolve_checkpoint};

use super::backend::{BackendTask, DeviceSpec, Precision, dispatch};

/// Options of `clipkd export`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "The output loads in open_clip with
  model = open_clip.create_model(NAME); model.load_state_dict(safetensors.torch.load_file(PATH))

Examples:
  clipkd export --run runs/kd --output vit-t-16-kd.safetensors
  clipkd export --checkpoint runs/kd/checkpoints/step-00090000 --output student.safetensors \\
      --model-config student.json")]
pub struct ExportArgs {
    /// `latest` (the latest checkpoint of --run), a checkpoint directory, or a run directory
    /// (its latest checkpoint).
    #[arg(long, default_value = "latest", value_name = "latest|DIR")]
    pub checkpoint: String,
    /// The run directory `latest` refers to.
    #[arg(long, default_value = "runs/clipkd", value_name = "DIR")]
    pub run: PathBuf,
    /// Where to write the student's weights (open_clip keys, f32, safetensors).
    #[arg(long, short = 'o', value_name = "OUT.safetensors")]
    pub output: PathBuf,
    /// Also write the student's open_clip model-config JSON here.
    #[arg(long, value_name = "FILE.json")]
    pub model_config: Option<PathBuf>,
    /// Device used to check the weights load into the model: cpu, cuda[:N], wgpu[:N].
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

/// Runs `clipkd export`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let checkpoint = resolve_checkpoint(&args.checkpoint, &args.run)?;
    let report = dispatch(
        args.device,
        Precision::F32,
        ExportTask {
            args: args.clone(),
            checkpoint,
        },
    )?;
    eprintln!(
        "exported the student of {} (step {}) to {}",
        report.checkpoint.display(),
        report.step,
        args.output.display()
    );
    if let Some(path) = &args.model_config {
        eprintln!("model config: {}", path.display());
    }
    Ok(())
}

struct ExportTask {
    args: ExportArgs,
    checkpoint: PathBuf,
}

impl BackendTask for ExportTask {
    type Output = ExportReport;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<ExportReport> {
        export_student::<B::InnerBackend>(
            &self.checkpoint,
            &self.args.output,
            self.args.model_config.as_deref(),
            &device,
        )
        .with_context(|| format!("exporting {}", self.checkpoint.display()))
    }
}
