//! The plain sections of a run config: `[data]`, `[teacher]`, `[student]`, `[optim]`, `[run]`.

use std::fmt;
use std::path::PathBuf;

use clipkd_models::ModelSource;
use serde::{Deserialize, Serialize};

use super::values::{CsvSeparator, DeviceSpec};

use crate::optim::AdamWParams;

/// The format of the training data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// By extension: `.csv`/`.tsv` is CSV, `.tar` or a directory is webdataset.
    #[default]
    Auto,
    /// Tab-separated CSV files (CLIP-KD's `title` / `filepath` columns).
    Csv,
    /// Webdataset tar shards.
    Webdataset,
    /// Generated images with one caption (open_clip's `synthetic`): for throughput tests.
    Synthetic,
}

/// `[data]`: training data and its loader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// CSV files separated by `,` (CLIP-KD's `--train-data`), or webdataset shard patterns
    /// separated by `::`. Required unless `kind = "synthetic"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_data: Option<String>,
    /// Data roots of the CSV files, separated by `,` (one for all, or one per file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_root: Option<String>,
    /// The format.
    pub kind: DataKind,
    /// Samples in one epoch of webdataset shards (open_clip's `--train-num-samples`): needed to
    /// size the schedule, since shards are streamed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_num_samples: Option<u64>,
    /// Samples of `kind = "synthetic"` data.
    pub synthetic_samples: usize,
    /// The CSV caption column.
    pub csv_caption_key: String,
    /// The CSV image-path column.
    pub csv_img_key: String,
    /// The CSV field separator (one ASCII character).
    pub csv_separator: CsvSeparator,
    /// Whether `"` quotes CSV fields (as pandas).
    pub csv_quoting: bool,
    /// Images per micro-batch (the paper: 1024 = 8 GPUs x 128). One optimizer step sees
    /// `batch_size * optim.grad_accum` images.
    pub batch_size: usize,
    /// Loader threads; 0: every core.
    pub workers: usize,
    /// Finished batches prepared ahead of the step.
    pub prefetch: usize,
    /// Webdataset shuffle block, in samples.
    pub shuffle_buffer: usize,
    /// RandomResizedCrop area range `[min, max]` (CLIP-KD: `[0.9, 1.0]`).
    pub crop_scale: [f64; 2],
    /// Normalization mean (OpenAI CLIP's).
    pub mean: [f64; 3],
    /// Normalization standard deviation (OpenAI CLIP's).
    pub std: [f64; 3],
    /// A finite pool of this many crops per sample instead of a fresh crop every epoch
    /// (`clipkd_data::loader::AugmentationPool`; what a teacher cache stores); 0: no pool.
    #[serde(skip_serializing_if = "is_zero")]
    pub augmentation_pool: u64,
    /// The seed the pool's crops are drawn with (default: `run.seed`; a teacher cache's is
    /// its build's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augmentation_seed: Option<u64>,
    /// Stop the run when more than this fraction of the samples read are unusable (missing,
    /// undecodable, too large, bad caption, bad CSV line); 1 never stops.
    pub max_skipped_fraction: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            train_data: None,
            data_root: None,
            kind: DataKind::Auto,
            train_num_samples: None,
            synthetic_samples: 10_000,
            csv_caption_key: "title".into(),
            csv_img_key: "filepath".into(),
            csv_separator: CsvSeparator::TAB,
            csv_quoting: true,
            batch_size: 1024,
            workers: 0,
            prefetch: 2,
            shuffle_buffer: 5000,
            crop_scale: [0.9, 1.0],
            mean: [0.48145466, 0.4578275, 0.40821073],
            std: [0.26862954, 0.26130258, 0.27577711],
            augmentation_pool: 0,
            augmentation_seed: None,
            max_skipped_fraction: 0.1,
        }
    }
}

/// `[teacher]`: the frozen teacher of `clipkd distill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherConfig {
    /// The architecture: an open_clip model-config name (`ViT-B-16`, `ViT-L-14`, `RN50`, ...),
    /// a JSON file, an inline config, or a Hugging Face Hub repository `hf-hub:org/name`
    /// (config and weights from it; see [`ModelSource`]).
    pub model: ModelSource,
    /// The teacher's open_clip checkpoint (.safetensors, .pt, .pth, .bin). One of `weights`,
    /// `pretrained` or an `hf-hub:` model is required, unless the teacher's outputs come from
    /// `cache`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// An open_clip pretrained tag of `model` (`laion400m_e32`, `openai`; `clipkd models
    /// --pretrained` lists them): its weights, found in the Hugging Face cache or downloaded
    /// into it, and the activation they were trained with (QuickGELU for OpenAI's). Instead of
    /// `weights`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
    /// Distill from this teacher cache (`clipkd teacher-cache`) instead of running the teacher:
    /// no teacher is loaded, the crops come from the cache's pool. `model` and `weights`, when
    /// given, must be the cache's teacher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<PathBuf>,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        TeacherConfig {
            model: ModelSource::Preset("ViT-B-16".into()),
            weights: None,
            pretrained: None,
            cache: None,
        }
    }
}

/// `[student]`: the model being trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudentConfig {
    /// The architecture: an open_clip model-config name, a JSON file, an inline config, or a
    /// Hugging Face Hub repository `hf-hub:org/name` (whose weights are then the start, as in
    /// open_clip; see [`ModelSource`]).
    pub model: ModelSource,
    /// Start from this open_clip checkpoint instead of a random initialisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// Start from the weights of this open_clip pretrained tag of `model` (downloaded like
    /// `teacher.pretrained`) instead of a random initialisation. Instead of `init`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
}

impl Default for StudentConfig {
    fn default() -> Self {
        StudentConfig {
            model: ModelSource::Preset("ViT-T-16".into()),
            init: None,
            pretrained: None,
        }
    }
}

/// `[optim]`: AdamW and the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate (paper: 1e-3).
    pub lr: f64,
    /// AdamW `[β₁, β₂]`; default by student: ViT `[0.9, 0.98]`, others `[0.9, 0.999]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub betas: Option<[f64; 2]>,
    /// AdamW ε; default by student: ViT 1e-6, others 1e-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// Weight decay of the student's matrices (paper: 0.1; none for biases, norms, rank < 2
    /// and `logit_scale`).
    pub weight_decay: f64,
    /// Weight decay of the loss module's parameters (CLIP-KD's third group: PyTorch AdamW's
    /// default 0.01).
    pub loss_weight_decay: f64,
    /// Linear warmup steps (paper: 10,000), then cosine decay to 0.
    pub warmup: u64,
    /// Epochs (paper: 32).
    pub epochs: u64,
    /// Micro-batches whose gradients are averaged before one optimizer step.
    pub grad_accum: usize,
    /// Clip the global gradient norm (all groups together) to this value; none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_clip_norm: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-3,
            betas: None,
            eps: None,
            weight_decay: 0.1,
            loss_weight_decay: 0.01,
            warmup: 10_000,
            epochs: 32,
            grad_accum: 1,
            grad_clip_norm: None,
        }
    }
}

impl OptimConfig {
    /// The AdamW settings: `auto` (the student's architecture defaults, e.g. CLIP-KD's ViT or
    /// ResNet betas and epsilon) where `betas` and `eps` are not set, and the weight decays.
    pub fn adamw_params(&self, auto: AdamWParams) -> AdamWParams {
        AdamWParams {
            beta_1: self.betas.map_or(auto.beta_1, |b| b[0] as f32),
            beta_2: self.betas.map_or(auto.beta_2, |b| b[1] as f32),
            epsilon: self.eps.map_or(auto.epsilon, |e| e as f32),
            weight_decay: self.weight_decay as f32,
            loss_weight_decay: self.loss_weight_decay as f32,
        }
    }
}

/// The floating-point types of a run (`run.precision`, `--precision`).
///
/// `bf16` and `f16` are mixed precision, as PyTorch's autocast (open_clip's `amp_bf16` and
/// `amp`, CLIP-KD's fp16 autocast + GradScaler): parameters, optimizer state, losses and every
/// op but the models' matrix products, convolutions and attention stay f32
/// ([`clipkd_models::autocast`]). The `pure_*` types store everything, parameters and AdamW
/// moments included, in half precision (open_clip's `pure_bf16`/`pure_fp16`), which loses the
/// small updates (docs/training.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit floats (every backend).
    #[default]
    F32,
    /// Mixed precision, bfloat16 compute (CPU, CUDA).
    Bf16,
    /// Mixed precision, IEEE half compute with dynamic loss scaling (CPU, CUDA).
    F16,
    /// Everything in bfloat16 (CPU, CUDA).
    PureBf16,
    /// Everything in IEEE half, without loss scaling (CPU, CUDA).
    PureF16,
}

impl Precision {
    /// Every precision, in the order help texts list them.
    pub const ALL: [Precision; 5] = [
        Precision::F32,
        Precision::Bf16,
        Precision::F16,
        Precision::PureBf16,
        Precision::PureF16,
    ];

    /// The compute type of the mixed precisions (what [`clipkd_models::autocast`] casts the
    /// models' matrix products to); `None` for `f32` and the pure types.
    pub fn autocast(self) -> Option<burn::tensor::DType> {
        match self {
            Precision::Bf16 => Some(burn::tensor::DType::BF16),
            Precision::F16 => Some(burn::tensor::DType::F16),
            Precision::F32 | Precision::PureBf16 | Precision::PureF16 => None,
        }
    }

    /// Whether training scales its losses dynamically ([`crate::loss_scale`]): mixed f16.
    pub fn scales_losses(self) -> bool {
        self == Precision::F16
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
            Precision::PureBf16 => "pure_bf16",
            Precision::PureF16 => "pure_f16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    /// `f32`, `bf16`, `f16`, `pure_bf16` or `pure_f16` (case-insensitive), as the config file
    /// and `--precision` write them; open_clip's names `amp_bf16`, `amp` and `pure_fp16` are
    /// accepted for `bf16`, `f16` and `pure_f16`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" | "amp_bf16" => Ok(Precision::Bf16),
            "f16" | "amp" | "amp_fp16" => Ok(Precision::F16),
            "pure_bf16" => Ok(Precision::PureBf16),
            "pure_f16" | "pure_fp16" => Ok(Precision::PureF16),
            _ => Err(format!(
                "unknown precision `{s}` (expected f32, bf16, f16, pure_bf16 or pure_f16)"
            )),
        }
    }
}

/// Format of the per-step metrics file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsFormat {
    /// `metrics.jsonl`: one JSON object per logged step.
    #[default]
    Jsonl,
    /// `metrics.csv`: one row per logged step, a column per loss term.
    Csv,
}

/// `[run]`: seeds, outputs, checkpoints, logging, precision and device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// The seed of everything (initialisation, data order and crops, masks); paper: 0.
    pub seed: u64,
    /// The run directory: config, metrics, plots, checkpoints.
    pub output_dir: PathBuf,
    /// Also checkpoint every this many optimizer steps (0: only at epoch ends).
    pub checkpoint_every_steps: u64,
    /// Checkpoint at the end of every epoch (as open_clip).
    pub checkpoint_at_epoch_end: bool,
    /// Keep the last this many checkpoints (older ones are deleted).
    pub keep_checkpoints: usize,
    /// Write a metrics row every this many optimizer steps (open_clip: 100).
    pub log_every_steps: u64,
    /// The metrics file's format.
    pub metrics_format: MetricsFormat,
    /// Draw PNG plots at the end of the run. Default: on when clipkd-train is built with its
    /// `plots` feature (as the `clipkd` CLI is), off otherwise; asking for plots in a build
    /// without the feature is an error naming this field.
    pub plots: bool,
    /// Precision: f32, mixed bf16/f16, or pure_bf16/pure_f16 (see [`Precision`]).
    pub precision: Precision,
    /// Device: `cpu`, `cuda[:N]`, `wgpu[:N]`.
    pub device: DeviceSpec,
    /// Data parallel on these devices of one backend (one peer each, in this process; e.g.
    /// `["cuda:0", "cuda:1"]`, or `cpu` repeated); empty: `device` alone. `data.batch_size`
    /// is the global batch, split evenly over them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceSpec>,
    /// With several devices: a peer that waits this many seconds in a collective operation
    /// for the others ends the run with an error naming the peers that did not arrive.
    pub collective_timeout_s: u64,
    /// Several machines: the number of nodes, one `clipkd` process each, every node with the
    /// same number of devices (`devices`); 1: this machine alone.
    pub num_nodes: usize,
    /// This node's rank, `0..num_nodes`. Node 0 starts the orchestrator and alone writes the
    /// run directory (checkpoints, metrics, evaluations), which every node reads to resume.
    pub node_rank: usize,
    /// With several nodes: burn-collective's orchestrator, `host:port` (node 0 starts it on
    /// that port; from `MASTER_ADDR`/`MASTER_PORT` when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<String>,
    /// With several nodes: this node's address for the other nodes, `host:port` (its
    /// collective data service listens on that port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_address: Option<String>,
    /// Stop (with a checkpoint) after this many optimizer steps in total, as if interrupted;
    /// the schedule still spans every epoch. For tests and time-boxed jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_after_steps: Option<u64>,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            seed: 0,
            output_dir: PathBuf::from("runs/clipkd"),
            checkpoint_every_steps: 0,
            checkpoint_at_epoch_end: true,
            keep_checkpoints: 3,
            log_every_steps: 100,
            metrics_format: MetricsFormat::Jsonl,
            plots: cfg!(feature = "plots"),
            precision: Precision::F32,
            device: DeviceSpec::Cpu,
            devices: Vec::new(),
            collective_timeout_s: 600,
            num_nodes: 1,
            node_rank: 0,
            orchestrator: None,
            node_address: None,
            stop_after_steps: None,
        }
    }
}

/// Serde: leave a zero out (fields added later keep older configs' hashes).
fn is_zero(v: &u64) -> bool {
    *v == 0
}
