//! What `clipkd distill` and `clipkd train` share: the run config, its overrides, resuming,
//! and running the trainer on the chosen backend; and `clipkd plot`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use clipkd_losses::LossPreset;
use clipkd_train::checkpoint;
use clipkd_train::config::{Override, RunConfig, TrainMode};
use clipkd_train::progress::ProgressMode;
use clipkd_train::trainer::{PreparedRun, RunSummary};

use super::backend::{BackendTask, Precision, dispatch_on};

/// Options of a training run (`clipkd distill`, `clipkd train`).
#[derive(Debug, Clone, Args)]
pub struct RunOptions {
    /// The run config: a TOML file (or JSON, by extension). Every field has a default (the
    /// paper's recipe); see docs/training.md.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start from a run preset (the paper's runs); the config file and flags override it.
    /// See --list-presets.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Override any config field by its dotted path, e.g. `--set optim.lr=5e-4` or
    /// `--set loss.terms.1.weight=1000` (repeatable). The value is read as TOML; anything that
    /// is not valid TOML is taken as a string.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    /// The student: an open_clip config name (ViT-T-16, RN50, ...; see `clipkd models`), a JSON
    /// file, or a Hugging Face Hub repository `hf-hub:org/name` (or a `local-dir:PATH` folder
    /// laid out as one), which starts from its weights (`student.model`; default ViT-T-16).
    #[arg(long, value_name = "CONFIG")]
    pub student: Option<String>,
    /// Initialise the student from this open_clip checkpoint (`student.init`).
    #[arg(long, value_name = "FILE", conflicts_with = "student_pretrained")]
    pub student_init: Option<PathBuf>,
    /// Initialise the student from this open_clip pretrained tag's weights, downloaded like
    /// the teacher's (`student.pretrained`; `clipkd models --pretrained`).
    #[arg(long, value_name = "TAG")]
    pub student_pretrained: Option<String>,
    /// Training data: CSV files `a.csv,b.csv` or webdataset shards `dir/{0000..0099}.tar`
    /// (`data.train_data`).
    #[arg(long, value_name = "DATA")]
    pub train_data: Option<String>,
    /// Data roots of the CSV image paths, one or one per CSV (`data.data_root`).
    #[arg(long, value_name = "DIRS")]
    pub data_root: Option<String>,
    /// The run directory: config, metrics, plots, checkpoints (`run.output_dir`; default
    /// runs/clipkd).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Epochs (`optim.epochs`; default 32, the paper's).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Images per micro-batch (`data.batch_size`; default 1024, the paper's global batch: on
    /// a CPU choose far fewer).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (`optim.lr`; default 1e-3).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay of the student's matrices (`optim.weight_decay`; default 0.1).
    #[arg(long)]
    pub wd: Option<f64>,
    /// Linear warmup steps (`optim.warmup`; default 10000).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Micro-batches per optimizer step, gradients averaged (`optim.grad_accum`; default 1).
    #[arg(long)]
    pub accum_freq: Option<usize>,
    /// Clip the global gradient norm to this value (`optim.grad_clip_norm`; default none).
    #[arg(long, value_name = "NORM")]
    pub grad_clip_norm: Option<f64>,
    /// The seed of initialisation, data order and augmentation (`run.seed`; default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Data loader threads (`data.workers`; default 0: every core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// A metrics row every N optimizer steps (`run.log_every_steps`; default 100).
    #[arg(long, value_name = "N")]
    pub log_every_n_steps: Option<u64>,
    /// Evaluate image-text retrieval on this caption file (COCO-Karpathy JSON or CSV;
    /// `eval.retrieval.annotations`; default none).
    #[arg(long, value_name = "FILE")]
    pub val_data: Option<PathBuf>,
    /// Evaluate zero-shot ImageNet classification on this ImageFolder (`eval.zero_shot.root`;
    /// default none).
    #[arg(long, value_name = "DIR")]
    pub imagenet_val: Option<PathBuf>,
    /// The loss preset (`loss.preset`; default clip_kd for distill, baseline for train):
    /// clip_kd, crd, fd, mfd, gd, icl, afd, open_clip_distill, baseline.
    #[arg(long, value_name = "PRESET")]
    pub loss: Option<String>,
    /// Device: cpu, cuda[:N], wgpu[:N] (`run.device`; default cpu).
    #[arg(long)]
    pub device: Option<String>,
    /// Data parallel on these devices of one backend, one peer each: `cuda:0,cuda:1,...`
    /// (`run.devices`; `cpu,cpu` runs two CPU peers). --batch-size is then the global batch,
    /// split evenly over them.
    #[arg(
        long,
        value_name = "DEVICES",
        value_delimiter = ',',
        conflicts_with = "device"
    )]
    pub devices: Vec<String>,
    /// Several machines: the number of nodes, one clipkd process each with the same
    /// --devices (`run.num_nodes`; default: WORLD_SIZE when set, for launchers that start
    /// one process per node).
    #[arg(long, value_name = "N")]
    pub num_nodes: Option<usize>,
    /// This node's rank, 0..N (`run.node_rank`; default: RANK when set). Node 0 starts the
    /// orchestrator and writes the run directory.
    #[arg(long, value_name = "R")]
    pub node_rank: Option<usize>,
    /// The orchestrator, HOST:PORT (`run.orchestrator`; default: MASTER_ADDR:MASTER_PORT when
    /// set); node 0 starts it on that port.
    #[arg(long, value_name = "HOST:PORT")]
    pub orchestrator: Option<String>,
    /// This node's address for the other nodes, HOST:PORT (`run.node_address`; default:
    /// CLIPKD_NODE_ADDRESS when set); its collective data service listens on that port.
    #[arg(long, value_name = "HOST:PORT")]
    pub node_address: Option<String>,
    /// Precision (`run.precision`): f32; bf16 or f16 mixed precision (half-precision matrix
    /// products, f32 parameters, f16 with loss scaling; CPU and CUDA); pure_bf16 or pure_f16
    /// (every tensor; CPU and CUDA).
    #[arg(long, value_name = "f32|bf16|f16|pure_bf16|pure_f16")]
    pub precision: Option<Precision>,
    /// Continue a run: `latest` (the latest checkpoint of the output directory) or a
    /// checkpoint or run directory. Without --config, the checkpoint's own config is used.
    #[arg(long, value_name = "latest|PATH", num_args = 0..=1, default_missing_value = "latest")]
    pub resume: Option<String>,
    /// No progress bar or progress lines.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the assembled config (TOML) and exit without checking files or training.
    #[arg(long)]
    pub print_config: bool,
    /// List the run presets and exit.
    #[arg(long)]
    pub list_presets: bool,
}

impl RunOptions {
    /// The overrides given by the shortcut flags and `--set`, in that order.
    fn overrides(&self) -> anyhow::Result<Vec<Override>> {
        let mut out = Vec::new();
        let mut push = |path: &str, value: serde_json::Value| out.push(Override::new(path, value));
        if let Some(v) = &self.student {
            push("student.model", v.clone().into());
        }
        for o in weights_overrides(
            "student",
            ("init", self.student_init.as_deref()),
            self.student_pretrained.as_deref(),
        ) {
            push(&o.path, o.value);
        }
        if let Some(v) = &self.train_data {
            push("data.train_data", v.clone().into());
        }
        if let Some(v) = &self.data_root {
            push("data.data_root", v.clone().into());
        }
        if let Some(v) = &self.output {
            push("run.output_dir", path_value(v));
        }
        if let Some(v) = self.epochs {
            push("optim.epochs", v.into());
        }
        if let Some(v) = self.batch_size {
            push("data.batch_size", v.into());
        }
        if let Some(v) = self.lr {
            push("optim.lr", v.into());
        }
        if let Some(v) = self.wd {
            push("optim.weight_decay", v.into());
        }
        if let Some(v) = self.warmup {
            push("optim.warmup", v.into());
        }
        if let Some(v) = self.accum_freq {
            push("optim.grad_accum", v.into());
        }
        if let Some(v) = self.grad_clip_norm {
            push("optim.grad_clip_norm", v.into());
        }
        if let Some(v) = self.seed {
            push("run.seed", v.into());
        }
        if let Some(v) = self.workers {
            push("data.workers", v.into());
        }
        if let Some(v) = self.log_every_n_steps {
            push("run.log_every_steps", v.into());
        }
        if let Some(v) = &self.val_data {
            push("eval.retrieval.annotations", path_value(v));
        }
        if let Some(v) = &self.imagenet_val {
            push("eval.zero_shot.root", path_value(v));
        }
        if let Some(v) = &self.loss {
            let preset: LossPreset = v.parse().context("--loss")?;
            push("loss.preset", preset.name().into());
        }
        if let Some(v) = &self.device {
            push("run.device", v.clone().into());
        }
        if !self.devices.is_empty() {
            push("run.devices", self.devices.clone().into());
        }
        for (path, value) in self.nodes()? {
            push(path, value);
        }
        if let Some(v) = self.precision {
            push("run.precision", v.to_string().into());
        }
        for s in &self.set {
            out.push(Override::parse(s).with_context(|| format!("--set {s}"))?);
        }
        Ok(out)
    }
}

impl RunOptions {
    /// The several-machines fields from the flags, or else from the variables torchrun-style
    /// launchers set (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT: one clipkd process per node)
    /// and CLIPKD_NODE_ADDRESS.
    fn nodes(&self) -> anyhow::Result<Vec<(&'static str, serde_json::Value)>> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number = |name: &str| -> anyhow::Result<Option<usize>> {
            env(name)
                .map(|v| {
                    v.parse::<usize>()
                        .with_context(|| format!("{name}={v}: not a number"))
                })
                .transpose()
        };
        let mut out = Vec::new();
        if let Some(n) = self
            .num_nodes
            .map_or_else(|| number("WORLD_SIZE"), |n| Ok(Some(n)))?
        {
            out.push(("run.num_nodes", n.into()));
        }
        if let Some(r) = self
            .node_rank
            .map_or_else(|| number("RANK"), |r| Ok(Some(r)))?
        {
            out.push(("run.node_rank", r.into()));
        }
        let master = match (env("MASTER_ADDR"), env("MASTER_PORT")) {
            (Some(addr), Some(port)) => Some(format!("{addr}:{port}")),
            _ => None,
        };
        if let Some(o) = self.orchestrator.clone().or(master) {
            out.push(("run.orchestrator", o.into()));
        }
        if let Some(a) = self
            .node_address
            .clone()
            .or_else(|| env("CLIPKD_NODE_ADDRESS"))
        {
            out.push(("run.node_address", a.into()));
        }
        Ok(out)
    }
}

pub(crate) fn path_value(path: &Path) -> serde_json::Value {
    path.to_string_lossy().into_owned().into()
}

/// Prints the run presets.
fn list_presets() {
    println!("run presets (--preset NAME):");
    for (name, description) in RunConfig::preset_descriptions() {
        println!("  {name:32} {description}");
    }
}

/// Assembles the run config of these options: the checkpoint's config when resuming without
/// --config, else defaults, preset, file; then the overrides.
pub fn assemble_config(opts: &RunOptions, extra: &[Override]) -> anyhow::Result<RunConfig> {
    let mut overrides = extra.to_vec();
    overrides.extend(opts.overrides()?);
    let file = match (&opts.config, &opts.resume) {
        (Some(file), _) => Some(file.clone()),
        (None, Some(spec)) => {
            let run_dir = opts
                .output
                .clone()
                .unwrap_or_else(|| RunConfig::default().run.output_dir);
            let ckpt = checkpoint::resolve_checkpoint(spec, &run_dir)
                .context("--resume: finding the checkpoint")?;
            // A checkpoint named by path continues in its own run directory
            // (`RUN/checkpoints/step-N`), wherever the run was first written.
            let folder = ckpt.parent();
            if opts.output.is_none()
                && folder.is_some_and(|f| f.ends_with(checkpoint::CHECKPOINTS_DIR))
                && let Some(run) = folder.and_then(Path::parent)
            {
                overrides.insert(0, Override::new("run.output_dir", path_value(run)));
            }
            Some(ckpt.join("config.toml"))
        }
        (None, None) => None,
    };
    let config = RunConfig::load(file.as_deref(), opts.preset.as_deref(), &overrides)?;
    Ok(config)
}

/// Runs `clipkd distill` / `clipkd train` with these options and extra overrides.
pub fn execute(opts: &RunOptions, extra: &[Override], mode: TrainMode) -> anyhow::Result<()> {
    if opts.list_presets {
        list_presets();
        return Ok(());
    }
    let config = assemble_config(opts, extra)?;
    if opts.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let devices = if config.run.devices.is_empty() {
        vec![config.run.device]
    } else {
        config.run.devices.clone()
    };
    let device = devices
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let precision = config.run.precision;
    // `--resume PATH` resumes that checkpoint; `--resume latest` the output directory's.
    let prepared =
        PreparedRun::prepare(config, mode, opts.resume.as_deref())?.with_progress(if opts.quiet {
            ProgressMode::Quiet
        } else {
            ProgressMode::Auto
        });
    let (steps_per_epoch, total) = (prepared.steps_per_epoch(), prepared.total_steps());
    if !opts.quiet {
        let what = match mode {
            TrainMode::Distill => format!(
                "distilling {} -> {}",
                prepared.config().teacher.model,
                prepared.config().student.model
            ),
            TrainMode::Baseline => {
                format!("training {} (no teacher)", prepared.config().student.model)
            }
        };
        eprintln!(
            "{what}: {total} optimizer steps ({steps_per_epoch} per epoch x {} epochs), \
             {} {device}, {precision}, run directory {}",
            prepared.config().optim.epochs,
            if devices.len() > 1 {
                "devices"
            } else {
                "device"
            },
            prepared.config().run.output_dir.display()
        );
    }
    let summary = dispatch_on(&devices, precision, TrainTask { prepared })?;
    print_summary(&summary, opts.quiet);
    Ok(())
}

struct TrainTask {
    prepared: PreparedRun,
}

impl BackendTask for TrainTask {
    type Output = RunSummary;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<RunSummary> {
        Ok(self.prepared.run::<B>(&device)?)
    }

    fn run_on<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> anyhow::Result<RunSummary> {
        Ok(self.prepared.run_on_devices::<B>(&devices)?)
    }
}

fn print_summary(summary: &RunSummary, quiet: bool) {
    if quiet {
        return;
    }
    eprintln!(
        "{} after {} of {} steps ({} epochs) in {}",
        if summary.stopped_early {
            "stopped"
        } else {
            "finished"
        },
        summary.steps,
        summary.total_steps,
        summary.epochs,
        summary.run_dir.display()
    );
    if let Some((terms, total)) = &summary.last_loss {
        let shown: Vec<String> = terms.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        eprintln!("last loss {total:.4} ({})", shown.join(", "));
    }
    if let Some(eval) = &summary.last_eval {
        let shown: Vec<String> = eval.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        eprintln!("last eval: {}", shown.join(", "));
    }
    if !summary.skipped.is_empty() {
        eprintln!(
            "skipped samples: {}",
            clipkd_train::trainer::skip_details(&summary.skipped)
        );
    }
    if let Some(ckpt) = &summary.checkpoint {
        eprintln!("checkpoint: {}", ckpt.display());
    }
    for plot in &summary.plots {
        eprintln!("plot: {}", plot.display());
    }
}

/// Options of `clipkd plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// The run directory (with metrics.jsonl or metrics.csv, and eval.jsonl).
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
}

/// Runs `clipkd plot`: PNG plots of a run's loss terms, learning rate and evaluations.
pub fn plot(args: PlotArgs) -> anyhow::Result<()> {
    let files = clipkd_train::plot::plot_run(&args.run_dir)?;
    if files.is_empty() {
        eprintln!(
            "{}: no metrics rows yet, nothing to plot",
            args.run_dir.display()
        );
    }
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

/// The overrides of a weights file flag and a pretrained-tag flag of `section`: the one given
/// replaces the other (a tag on the command line wins over a file in the config, and the
/// reverse), so they never meet.
pub(crate) fn weights_overrides(
    section: &str,
    (file_field, file): (&str, Option<&std::path::Path>),
    tag: Option<&str>,
) -> Vec<Override> {
    match (file, tag) {
        (Some(file), _) => vec![
            Override::new(format!("{section}.{file_field}"), path_value(file)),
            Override::new(format!("{section}.pretrained"), serde_json::Value::Null),
        ],
        (None, Some(tag)) => vec![
            Override::new(format!("{section}.pretrained"), tag),
            Override::new(format!("{section}.{file_field}"), serde_json::Value::Null),
        ],
        (None, None) => Vec::new(),
    }
}
