//! `clipkd demo`: render a captioned-shapes dataset, train a teacher, then the same student
//! without and with CLIP-KD, and print the comparison. No download, no argument needed.

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use clipkd_train::config::Override;
use clipkd_train::demo::{DemoConfig, DemoReport, run_demo};
use clipkd_train::progress::ProgressMode;

use super::backend::{BackendTask, DeviceSpec, Precision, dispatch};

/// Options of `clipkd demo`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  clipkd demo                                  # the standard demo (a few minutes on 2 CPU cores)
  clipkd demo --seed 1 --output demo-seed1
  clipkd demo --quick                          # seconds: checks that everything runs
  clipkd demo --teacher-epochs 20 --set teacher.vision_layers=6 --set data.train_samples=10000
  clipkd demo --print-config > demo.json; clipkd demo --config demo.json")]
pub struct DemoArgs {
    /// The output folder: dataset, the three runs, results.json, plots. A previous demo's
    /// output is replaced; any other non-empty folder is refused. Default: `clipkd-demo`
    /// (`clipkd-demo-quick` with --quick).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// The seed of the data, the initialisations and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A much smaller run (seconds): tiny models, 256 images, 1-2 epochs. Shows the pipeline
    /// works; its numbers say nothing about distillation.
    #[arg(long)]
    pub quick: bool,
    /// Device: cpu, cuda[:N], wgpu[:N] (default: cpu, or the --config file's).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Precision: f32; bf16 or f16 mixed precision (half-precision matrix products, the rest
    /// f32; CPU and CUDA); pure_bf16 or pure_f16 (every tensor; CPU and CUDA).
    #[arg(long, value_name = "f32|bf16|f16|pure_bf16|pure_f16", default_value_t = Precision::F32)]
    pub precision: Precision,
    /// A demo config (JSON, as --print-config writes) instead of the built-in one.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Training images.
    #[arg(long)]
    pub train_samples: Option<usize>,
    /// Held-out images (zero-shot and retrieval).
    #[arg(long)]
    pub heldout_samples: Option<usize>,
    /// Images per optimizer step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// The teacher's epochs.
    #[arg(long)]
    pub teacher_epochs: Option<u64>,
    /// Each student's epochs.
    #[arg(long)]
    pub student_epochs: Option<u64>,
    /// The students' peak learning rate.
    #[arg(long)]
    pub student_lr: Option<f64>,
    /// The weight of FD in the CLIP-KD loss (default: the paper's 2000 scaled by the teacher's
    /// embedding size / 512, i.e. 375).
    #[arg(long)]
    pub fd_weight: Option<f64>,
    /// Distill the CLIP-KD student from a teacher cache of K crops per sample (built after the
    /// teacher is trained) instead of running the teacher at every step.
    #[arg(long, value_name = "K")]
    pub teacher_cache: Option<u64>,
    /// Set any demo-config field by its dotted path, e.g. `--set teacher.vision_width=192`,
    /// `--set data.noise=20`, `--set student.text_layers=2` (repeatable; see --print-config).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    /// Only the table and the summary lines (no progress).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the demo config (JSON) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl DemoArgs {
    /// The demo config these options describe: the built-in (or --quick, or --config) one,
    /// then the seed, the shortcut flags and --set, in that order.
    pub fn demo_config(&self) -> anyhow::Result<DemoConfig> {
        let base = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the demo config {}", path.display()))?;
                serde_json::from_str::<DemoConfig>(&text).with_context(|| {
                    format!("demo config {}: not a valid demo config", path.display())
                })?
            }
            None if self.quick => DemoConfig::quick(),
            None => DemoConfig::default(),
        };
        let mut config = base.with_seed(self.seed);
        if let Some(output) = &self.output {
            config.output = output.clone();
        }
        if let Some(device) = self.device {
            config.device = device;
        }
        config.precision = self.precision;
        let mut overrides = Vec::new();
        let mut push = |path: &str, value: serde_json::Value| {
            overrides.push(Override::new(path, value));
        };
        if let Some(v) = self.train_samples {
            push("data.train_samples", v.into());
        }
        if let Some(v) = self.heldout_samples {
            push("data.heldout_samples", v.into());
        }
        if let Some(v) = self.batch_size {
            push("batch_size", v.into());
        }
        if let Some(v) = self.teacher_epochs {
            push("teacher_epochs", v.into());
        }
        if let Some(v) = self.student_epochs {
            push("student_epochs", v.into());
        }
        if let Some(v) = self.student_lr {
            push("student_lr", v.into());
        }
        if let Some(v) = self.fd_weight {
            push("fd_weight", v.into());
        }
        if let Some(v) = self.teacher_cache {
            push("teacher_cache", v.into());
        }
        for s in &self.set {
            overrides.push(Override::parse(s).with_context(|| format!("--set {s}"))?);
        }
        let config = config.with_overrides(&overrides)?;
        config.validate()?;
        Ok(config)
    }
}

/// Runs `clipkd demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let config = args.demo_config()?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let device = config.device;
    let progress = if args.quiet {
        ProgressMode::Quiet
    } else {
        ProgressMode::Auto
    };
    let precision = config.precision;
    let report = dispatch(device, precision, DemoTask { config, progress })?;
    print!("{report}");
    Ok(())
}

struct DemoTask {
    config: DemoConfig,
    progress: ProgressMode,
}

impl BackendTask for DemoTask {
    type Output = DemoReport;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<DemoReport> {
        Ok(run_demo::<B>(&self.config, &device, self.progress)?)
    }
}
