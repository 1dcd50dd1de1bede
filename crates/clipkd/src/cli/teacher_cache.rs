//! `clipkd teacher-cache`: run a teacher once over the training data and store its outputs,
//! so that students distill from them without loading it (`clipkd distill --teacher-cache`).

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use clipkd_train::RunConfig;
use clipkd_train::config::Override;
use clipkd_train::teacher_cache::{CacheDtype, CacheOptions, build_teacher_cache};

use super::backend::{BackendTask, DeviceSpec, dispatch};
use super::run_options::weights_overrides;

/// Options of `clipkd teacher-cache`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  clipkd teacher-cache --config run.toml --output cache/vit-b-16 --augmentations 10
  clipkd distill --config run.toml --teacher-cache cache/vit-b-16

The config's [teacher] (model, weights) and [data] (training data, crop scale, mean/std) are
what the cache is built from, and run.seed seeds the crops. Run the same command again to
continue an interrupted build.")]
pub struct TeacherCacheArgs {
    /// The run config whose [teacher] and [data] the cache is built from (TOML or JSON).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a config field (`--set data.workers=8`; repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    /// The teacher: an open_clip config name, JSON file, `hf-hub:org/name` repository or
    /// `local-dir:PATH` folder (`teacher.model`).
    #[arg(long, value_name = "CONFIG")]
    pub teacher: Option<String>,
    /// The teacher's open_clip checkpoint (`teacher.weights`).
    #[arg(long, value_name = "FILE", conflicts_with = "teacher_pretrained")]
    pub teacher_weights: Option<PathBuf>,
    /// The teacher's open_clip pretrained tag, downloaded into the Hugging Face cache once
    /// (`teacher.pretrained`; `clipkd models --pretrained`).
    #[arg(long, value_name = "TAG")]
    pub teacher_pretrained: Option<String>,
    /// Training data: CSV files `a.csv,b.csv` or webdataset shards `dir/{0000..0099}.tar`
    /// (`data.train_data`).
    #[arg(long, value_name = "DATA")]
    pub train_data: Option<String>,
    /// Data roots of the CSV image paths (`data.data_root`).
    #[arg(long, value_name = "DIRS")]
    pub data_root: Option<String>,
    /// The seed of the crops (`run.seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The cache directory (created; an interrupted build there is continued).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    /// Crops stored per sample (K): each epoch a sample trains on one of them.
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub augmentations: u64,
    /// How embeddings are stored: f32 (exact) or f16 (half the size).
    #[arg(long, default_value = "f32")]
    pub dtype: CacheDtype,
    /// Rows of CSV data per cache shard (webdataset: one cache shard per tar shard).
    #[arg(long, value_name = "ROWS", default_value_t = 4096)]
    pub shard_rows: u64,
    /// Images per teacher forward.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Device: cpu, cuda[:N], wgpu[:N] (default: `run.device`).
    #[arg(long)]
    pub device: Option<String>,
    /// No progress lines.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

struct BuildTask {
    config: RunConfig,
    options: CacheOptions,
    quiet: bool,
}

impl BackendTask for BuildTask {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let quiet = self.quiet;
        let summary = build_teacher_cache::<B::InnerBackend>(
            &self.config,
            &self.options,
            &device,
            |done, shards| {
                if !quiet {
                    eprintln!("teacher cache: {done} of {shards} shards written");
                }
            },
        )?;
        let m = &summary.manifest;
        println!(
            "teacher cache {}: {} samples written in {:.1} s ({} shards; {} unusable, not \
             stored), {} crops per sample, {} bytes per sample ({:?})",
            self.options.dir.display(),
            summary.samples_written,
            summary.seconds,
            summary.shards_written,
            summary.skipped,
            m.pool.size,
            m.bytes_per_sample(),
            m.dtype
        );
        Ok(())
    }
}

/// Runs `clipkd teacher-cache`.
pub fn run(args: TeacherCacheArgs) -> anyhow::Result<()> {
    let mut overrides = Vec::new();
    if let Some(t) = &args.teacher {
        overrides.push(Override::new("teacher.model", t.clone()));
    }
    overrides.extend(weights_overrides(
        "teacher",
        ("weights", args.teacher_weights.as_deref()),
        args.teacher_pretrained.as_deref(),
    ));
    if let Some(d) = &args.train_data {
        overrides.push(Override::new("data.train_data", d.clone()));
    }
    if let Some(r) = &args.data_root {
        overrides.push(Override::new("data.data_root", r.clone()));
    }
    if let Some(s) = args.seed {
        overrides.push(Override::new("run.seed", s));
    }
    if let Some(d) = &args.device {
        overrides.push(Override::new("run.device", d.clone()));
    }
    for s in &args.set {
        overrides.push(Override::parse(s)?);
    }
    let config = RunConfig::load(args.config.as_deref(), None, &overrides)?;
    let options = CacheOptions {
        dir: args.output.clone(),
        augmentations: args.augmentations,
        dtype: args.dtype,
        shard_rows: args.shard_rows,
        batch_size: args.batch_size,
    };
    let device: DeviceSpec = config.run.device;
    let precision = config.run.precision;
    dispatch(
        device,
        precision,
        BuildTask {
            config,
            options,
            quiet: args.quiet,
        },
    )
    .with_context(|| format!("building the teacher cache {}", args.output.display()))
}
