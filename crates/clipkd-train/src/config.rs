//! The run config: one TOML or JSON file describes a whole run, every field with a default
//! equal to CLIP-KD's recipe (see `docs/training.md` for the reference of every field).
//!
//! A config is assembled in layers, each overriding the one before:
//! 1. the defaults (the paper's recipe: [`RunConfig::default`]);
//! 2. a run preset ([`RunConfig::preset`]), named by `--preset` or a top-level `preset` key;
//! 3. the file (`.toml`, or `.json`);
//! 4. overrides from the command line ([`Override`], `--set optim.lr=5e-4` and the shortcuts).
//!
//! Tables merge key by key; arrays and values replace. The result is deserialized strictly: an
//! unknown key or a value of the wrong type is an error that names its dotted path
//! (`optim.lr`, `loss.terms.1.weight`). [`RunConfig::validate`] then checks ranges and
//! combinations, again naming the field, before any file is opened.
//!
//! ```
//! use clipkd_train::config::{Override, RunConfig};
//!
//! let config = RunConfig::load(
//!     None,
//!     Some("vit-b-16-to-vit-t-16-cc3m-12m"),
//!     &[Override::parse("optim.lr=5e-4")?, Override::parse("data.batch_size=256")?],
//! )?;
//! assert_eq!(config.optim.lr, 5e-4);
//! assert_eq!(config.student.model, "ViT-T-16");
//! assert_eq!(config.optim.warmup, 10_000); // the paper's
//! # Ok::<(), clipkd_train::TrainError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use clipkd_losses::{LossConfig, LossPreset, LossSetConfig, WeightedLossConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::TrainError;
use crate::eval::EvalConfig;
use crate::optim::AdamWParams;

/// Whether a run distills from a teacher or trains the student alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainMode {
    /// `clipkd distill`: a frozen teacher and the configured losses.
    Distill,
    /// `clipkd train`: no teacher, the task loss only (the "no KD" baseline). The `[teacher]`
    /// section is ignored and the loss is replaced by the `baseline` preset, so one config
    /// file serves both runs of a comparison.
    Baseline,
}

/// The whole run. See the [module docs](self) for how it is assembled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The run preset this config starts from (informational once loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Training data and its loader.
    pub data: DataConfig,
    /// The teacher (used by `clipkd distill` only).
    pub teacher: TeacherConfig,
    /// The student.
    pub student: StudentConfig,
    /// The losses.
    pub loss: LossSection,
    /// AdamW and the learning-rate schedule.
    pub optim: OptimConfig,
    /// Seeds, outputs, checkpoints, logging, precision, device.
    pub run: RunSection,
    /// Evaluation during training (see [`EvalConfig`]); default: every epoch, when a
    /// zero-shot or retrieval set is configured.
    pub eval: EvalConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            preset: None,
            data: DataConfig::default(),
            teacher: TeacherConfig::default(),
            student: StudentConfig::default(),
            loss: LossSection::default(),
            optim: OptimConfig::default(),
            run: RunSection::default(),
            eval: EvalConfig {
                every_epochs: Some(1),
                ..EvalConfig::default()
            },
        }
    }
}

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
    pub csv_separator: String,
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
            csv_separator: "\t".into(),
            csv_quoting: true,
            batch_size: 1024,
            workers: 0,
            prefetch: 2,
            shuffle_buffer: 5000,
            crop_scale: [0.9, 1.0],
            mean: [0.48145466, 0.4578275, 0.40821073],
            std: [0.26862954, 0.26130258, 0.27577711],
            max_skipped_fraction: 0.1,
        }
    }
}

/// `[teacher]`: the frozen teacher of `clipkd distill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherConfig {
    /// An open_clip model-config name (`ViT-B-16`, `ViT-L-14`, `RN50`, ...) or JSON file.
    pub model: String,
    /// The teacher's open_clip checkpoint (.safetensors, .pt, .pth, .bin). Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        TeacherConfig {
            model: "ViT-B-16".into(),
            weights: None,
        }
    }
}

/// `[student]`: the model being trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudentConfig {
    /// An open_clip model-config name or JSON file.
    pub model: String,
    /// Start from this open_clip checkpoint instead of a random initialisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
}

impl Default for StudentConfig {
    fn default() -> Self {
        StudentConfig {
            model: "ViT-T-16".into(),
            init: None,
        }
    }
}

/// The kind of one explicit loss term (`[[loss.terms]]`, `kind = "fd"`): the losses crate's
/// list of built-in losses, so a loss added there is a kind here too. Its `default_config`
/// gives the options an explicit term's are merged onto.
pub use clipkd_losses::LossKind;

/// One explicit loss term: `kind`, `weight`, an optional `name`, and any option of that loss
/// (the fields of its `clipkd_losses` config, e.g. `distance = "Cosine"` for FD or
/// `scale = { mode = "Exp" }` for ICL); options not given keep their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossTermConfig {
    /// The loss.
    pub kind: LossKind,
    /// Its weight in the total.
    pub weight: f64,
    /// The term's name in logs (default: the loss's name, e.g. `fd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Options of the loss, merged onto its defaults.
    #[serde(flatten)]
    pub options: Map<String, Value>,
}

/// `[loss]`: a preset or explicit terms, and the settings the trainer owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossSection {
    /// A preset of `clipkd_losses` (`clip_kd`, `baseline`, `crd`, `fd`, `mfd`, `gd`, `icl`,
    /// `afd`, `open_clip_distill`). Default: `clip_kd` (CRD + ICL + FD), unless `terms` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<LossPreset>,
    /// Explicit terms instead of a preset.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<LossTermConfig>,
    /// MFD's mask ratio (fraction of patches hidden from the student), paper: 0.75.
    pub mask_ratio: f64,
    /// Whether the student-to-teacher projectors have a bias (CLIP-KD's do).
    pub projector_bias: bool,
}

impl Default for LossSection {
    fn default() -> Self {
        LossSection {
            preset: None,
            terms: Vec::new(),
            mask_ratio: 0.75,
            projector_bias: true,
        }
    }
}

impl LossSection {
    /// The loss set for these embedding sizes (`teacher_dim = student_dim` without a teacher).
    /// Errors name the field (`loss.terms.2.distance`, ...).
    pub fn loss_set_config(
        &self,
        mode: TrainMode,
        student_dim: usize,
        teacher_dim: usize,
    ) -> Result<LossSetConfig, TrainError> {
        if mode == TrainMode::Baseline {
            return Ok(
                LossSetConfig::preset(LossPreset::Baseline, student_dim, student_dim)
                    .with_projector_bias(self.projector_bias),
            );
        }
        if self.preset.is_some() && !self.terms.is_empty() {
            return Err(TrainError::config(
                "loss.preset",
                "give either a preset or explicit `loss.terms`, not both",
            ));
        }
        if self.terms.is_empty() {
            let preset = self.preset.unwrap_or(LossPreset::ClipKd);
            return Ok(LossSetConfig::preset(preset, student_dim, teacher_dim)
                .with_projector_bias(self.projector_bias));
        }
        let mut set =
            LossSetConfig::new(student_dim, teacher_dim).with_projector_bias(self.projector_bias);
        for (i, term) in self.terms.iter().enumerate() {
            let field = format!("loss.terms.{i}");
            let loss = term_config(term, teacher_dim, &field)?;
            set.losses
                .push(WeightedLossConfig::new(loss, term.weight).with_name(term.name.clone()));
        }
        Ok(set)
    }
}

/// The loss config of an explicit term: its defaults with the term's options merged in.
fn term_config(
    term: &LossTermConfig,
    teacher_dim: usize,
    field: &str,
) -> Result<LossConfig, TrainError> {
    let default = term.kind.default_config(teacher_dim);
    let mut value = serde_json::to_value(&default).map_err(|e| {
        TrainError::config(field, format!("cannot represent the default options: {e}"))
    })?;
    // Externally tagged: {"Fd": {...}} (unit-like configs are {"Task": {}}).
    let inner = value
        .as_object_mut()
        .and_then(|o| o.values_mut().next())
        .ok_or_else(|| TrainError::config(field, "unexpected default loss config shape"))?;
    for (key, v) in &term.options {
        merge_strict(inner, key, v.clone(), field)?;
    }
    serde_path_to_error::deserialize::<_, LossConfig>(value).map_err(|e| {
        let path = e.path().to_string();
        // The path starts with the variant (`Fd.distance`): drop it.
        let sub = path.split_once('.').map(|(_, rest)| rest).unwrap_or("");
        TrainError::config(
            if sub.is_empty() {
                field.to_string()
            } else {
                format!("{field}.{sub}")
            },
            e.inner().to_string(),
        )
    })
}

/// Sets `key` of the object `base` to `value`, recursing into objects; unknown keys are errors.
fn merge_strict(base: &mut Value, key: &str, value: Value, field: &str) -> Result<(), TrainError> {
    let obj = base
        .as_object_mut()
        .ok_or_else(|| TrainError::config(field, "this loss takes no options"))?;
    let here = format!("{field}.{key}");
    let Some(slot) = obj.get_mut(key) else {
        let known: Vec<&str> = obj.keys().map(String::as_str).collect();
        return Err(TrainError::config(
            here,
            if known.is_empty() {
                "unknown option: this loss has none".to_string()
            } else {
                format!("unknown option (this loss has: {})", known.join(", "))
            },
        ));
    };
    match (slot.is_object(), value) {
        (true, Value::Object(map)) => {
            for (k, v) in map {
                merge_strict(slot, &k, v, &here)?;
            }
        }
        (_, value) => *slot = value,
    }
    Ok(())
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

/// The floating-point type of every tensor of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit floats (every backend).
    #[default]
    F32,
    /// bfloat16 (CUDA).
    Bf16,
    /// IEEE half precision (CUDA).
    F16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    /// `f32`, `bf16` or `f16` (case-insensitive), as the config file and `--precision` write it.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" => Ok(Precision::F16),
            _ => Err(format!(
                "unknown precision `{s}` (expected f32, bf16 or f16)"
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
    /// Draw PNG plots at the end of the run.
    pub plots: bool,
    /// Floating-point precision (bf16/f16 where the backend supports them).
    pub precision: Precision,
    /// Device: `cpu`, `cuda[:N]`, `wgpu[:N]`.
    pub device: String,
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
            plots: true,
            precision: Precision::F32,
            device: "cpu".into(),
            stop_after_steps: None,
        }
    }
}

/// A command-line override: a dotted path (`optim.lr`, `loss.terms.0.weight`) and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The dotted path.
    pub path: String,
    /// The value.
    pub value: Value,
}

impl Override {
    /// An override of `path` with `value`.
    pub fn new(path: impl Into<String>, value: impl Into<Value>) -> Self {
        Override {
            path: path.into(),
            value: value.into(),
        }
    }

    /// Parses `path=value`, the value as a TOML value (`5e-4`, `true`, `"text"`, `[1, 2]`,
    /// `{ mode = "Exp" }`); a value that is not valid TOML is taken as a string, so
    /// `data.train_data=/data/cc3m.csv` needs no quotes.
    pub fn parse(s: &str) -> Result<Self, TrainError> {
        let (path, raw) = s.split_once('=').ok_or_else(|| TrainError::ConfigParse {
            path: PathBuf::from("<command line>"),
            location: None,
            message: format!("override `{s}`: expected `path.to.field=value`"),
        })?;
        let path = path.trim();
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(TrainError::ConfigParse {
                path: PathBuf::from("<command line>"),
                location: None,
                message: format!("override `{s}`: `{path}` is not a dotted field path"),
            });
        }
        let raw = raw.trim();
        let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut table) => toml_to_json(table.remove("v").expect("parsed key `v`"), path)
                .map_err(|(field, value)| {
                    TrainError::config(field, format!("{value} is not a finite number"))
                })?,
            Err(_) => Value::String(raw.to_string()),
        };
        Ok(Override::new(path, value))
    }

    fn apply(&self, root: &mut Value) -> Result<(), TrainError> {
        let mut node = root;
        let parts: Vec<&str> = self.path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let here = parts[..=i].join(".");
            if node.is_null() {
                // An unset optional section (`eval.zero_shot`): setting a field inside it
                // creates it.
                *node = Value::Object(Map::new());
            }
            node = match node {
                Value::Object(map) => {
                    if last {
                        map.insert(part.to_string(), self.value.clone());
                        return Ok(());
                    }
                    map.entry(part.to_string())
                        .or_insert_with(|| Value::Object(Map::new()))
                }
                Value::Array(items) => {
                    let index: usize = part.parse().map_err(|_| {
                        TrainError::config(&here, "expected an index into the list")
                    })?;
                    let len = items.len();
                    let slot = items.get_mut(index).ok_or_else(|| {
                        TrainError::config(
                            &here,
                            format!("index {index} past the end ({len} items)"),
                        )
                    })?;
                    if last {
                        *slot = self.value.clone();
                        return Ok(());
                    }
                    slot
                }
                _ => {
                    return Err(TrainError::config(
                        parts[..i].join("."),
                        format!("is a value, so `{}` cannot be set inside it", self.path),
                    ));
                }
            };
        }
        Ok(())
    }
}

/// The run presets: the paper's runs, naming teacher and student (data and weights paths are
/// the user's).
const PRESETS: &[(&str, &str, &str, &str)] = &[
    (
        "vit-b-16-to-vit-t-16-cc3m-12m",
        "ViT-B-16",
        "ViT-T-16",
        "ViT-B/16 teacher trained on CC3M+CC12M -> ViT-T/16 on CC3M+CC12M (paper: 30.55 -> 34.90)",
    ),
    (
        "vit-b-16-to-rn50-cc3m-12m",
        "ViT-B-16",
        "RN50",
        "ViT-B/16 teacher trained on CC3M+CC12M -> ResNet-50 (ModifiedResNet) on CC3M+CC12M",
    ),
    (
        "vit-l-14-laion-to-vit-b-16",
        "ViT-L-14",
        "ViT-B-16",
        "open_clip ViT-L-14 laion400m_e32 teacher -> ViT-B/16 on CC3M+CC12M (paper: 37.0 -> 57.5)",
    ),
    (
        "vit-l-14-laion-to-vit-t-16",
        "ViT-L-14",
        "ViT-T-16",
        "open_clip ViT-L-14 laion400m_e32 teacher -> ViT-T/16 (paper: 30.6 -> 40.9)",
    ),
    (
        "vit-b-16-laion-to-vit-t-16",
        "ViT-B-16",
        "ViT-T-16",
        "open_clip ViT-B-16 laion400m_e32 teacher -> ViT-T/16 (paper: 30.6 -> 42.6)",
    ),
    (
        "vit-b-16-laion-to-rn50",
        "ViT-B-16",
        "RN50",
        "open_clip ViT-B-16 laion400m_e32 teacher -> RN50 (paper: 35.3 -> 55.4)",
    ),
];

impl RunConfig {
    /// Names of the run presets.
    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|p| p.0).collect()
    }

    /// The presets with a one-line description each.
    pub fn preset_descriptions() -> Vec<(&'static str, &'static str)> {
        PRESETS.iter().map(|p| (p.0, p.3)).collect()
    }

    /// A run preset: the paper's recipe (every default) with its teacher and student models
    /// and the `clip_kd` losses. Data and teacher weights are left for the user.
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        let (_, teacher, student, _) = PRESETS.iter().find(|p| p.0 == name).ok_or_else(|| {
            TrainError::config(
                "preset",
                format!(
                    "unknown run preset `{name}`; known: {}",
                    Self::preset_names().join(", ")
                ),
            )
        })?;
        let mut config = RunConfig {
            preset: Some(name.to_string()),
            ..Default::default()
        };
        config.teacher.model = teacher.to_string();
        config.student.model = student.to_string();
        config.loss.preset = Some(LossPreset::ClipKd);
        Ok(config)
    }

    /// Assembles a config from the defaults, a preset (`preset`, or the file's top-level
    /// `preset` key), the file (`.json` is JSON, anything else TOML) and the overrides, in
    /// that order, then checks it with [`RunConfig::validate`]-independent strict parsing:
    /// unknown keys and wrong types are errors naming the field.
    pub fn load(
        file: Option<&Path>,
        preset: Option<&str>,
        overrides: &[Override],
    ) -> Result<Self, TrainError> {
        let file_value = match file {
            Some(path) => Some(read_config_value(path)?),
            None => None,
        };
        let preset = preset.map(str::to_string).or_else(|| {
            file_value
                .as_ref()
                .and_then(|v| v.get("preset"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let base = match &preset {
            Some(name) => Self::preset(name)?,
            None => Self::default(),
        };
        let mut value = serde_json::to_value(&base).map_err(|e| {
            TrainError::config("", format!("cannot represent the base config: {e}"))
        })?;
        if let Some(file_value) = file_value {
            if !file_value.is_object() {
                return Err(TrainError::ConfigParse {
                    path: file.map(Path::to_path_buf).unwrap_or_default(),
                    location: None,
                    message: "the top level must be a table of sections".into(),
                });
            }
            merge(&mut value, file_value);
        }
        for o in overrides {
            o.apply(&mut value)?;
        }
        if let Some(name) = &preset {
            value["preset"] = Value::String(name.clone());
        }
        Self::from_value(value)
    }

    /// Parses an assembled config tree strictly (errors name the field).
    pub fn from_value(value: Value) -> Result<Self, TrainError> {
        serde_path_to_error::deserialize::<_, RunConfig>(value).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            let field = if path == "." { String::new() } else { path };
            TrainError::config(field, message)
        })
    }

    /// Reads a config file alone (defaults, its preset if it names one, the file).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TrainError> {
        Self::load(Some(path.as_ref()), None, &[])
    }

    /// The config as TOML (what a run writes to `config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a run config always serializes to TOML")
    }

    /// Writes the config as TOML to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TrainError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_toml()).map_err(|e| TrainError::io("writing", path, e))
    }

    /// A stable 64-bit hash (FNV-1a) of everything that determines the training trajectory
    /// (data, models, losses, optimizer, seed, precision), not of logging or output settings.
    /// Stored in checkpoints to warn when a run is resumed with another config.
    pub fn trajectory_hash(&self) -> String {
        // Settings that do not change the steps taken are left out.
        let mut data = serde_json::to_value(&self.data).expect("a config serializes");
        if let Some(d) = data.as_object_mut() {
            d.remove("max_skipped_fraction");
        }
        let key = serde_json::json!({
            "data": data,
            "teacher": self.teacher,
            "student": self.student,
            "loss": self.loss,
            "optim": self.optim,
            "seed": self.run.seed,
            "precision": self.run.precision,
        });
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.to_string().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// Checks ranges and combinations of fields, naming the field of the first problem. Opens
    /// no file: models, data and weights are checked when the trainer is built.
    pub fn validate(&self, mode: TrainMode) -> Result<(), TrainError> {
        let d = &self.data;
        if d.kind != DataKind::Synthetic
            && d.train_data.as_deref().is_none_or(|s| s.trim().is_empty())
        {
            return Err(TrainError::config(
                "data.train_data",
                "required: CSV files (`a.csv,b.csv`) or webdataset shards (`shards/{0000..0099}.tar`)",
            ));
        }
        if d.kind == DataKind::Synthetic && d.synthetic_samples == 0 {
            return Err(TrainError::config(
                "data.synthetic_samples",
                "must be at least 1",
            ));
        }
        positive("data.batch_size", d.batch_size as u64)?;
        positive("data.prefetch", d.prefetch as u64)?;
        positive("data.shuffle_buffer", d.shuffle_buffer as u64)?;
        if !(0.0..=1.0).contains(&d.max_skipped_fraction) {
            return Err(TrainError::config(
                "data.max_skipped_fraction",
                format!("{} must be between 0 and 1", d.max_skipped_fraction),
            ));
        }
        if d.csv_separator.len() != 1 {
            return Err(TrainError::config(
                "data.csv_separator",
                format!(
                    "`{}` must be exactly one ASCII character",
                    d.csv_separator.escape_default()
                ),
            ));
        }
        let [lo, hi] = d.crop_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(TrainError::config(
                "data.crop_scale",
                format!("[{lo}, {hi}] must satisfy 0 < min <= max <= 1"),
            ));
        }
        if d.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(TrainError::config(
                "data.std",
                "every value must be positive",
            ));
        }
        if d.mean.iter().any(|m| !m.is_finite()) {
            return Err(TrainError::config(
                "data.mean",
                "every value must be finite",
            ));
        }
        if let Some(n) = d.train_num_samples {
            positive("data.train_num_samples", n)?;
        }
        if mode == TrainMode::Distill && self.teacher.weights.is_none() {
            return Err(TrainError::config(
                "teacher.weights",
                "required for distillation: the teacher's open_clip checkpoint \
                 (or run `clipkd train` for the no-teacher baseline)",
            ));
        }
        if mode == TrainMode::Distill {
            if self.loss.preset.is_some() && !self.loss.terms.is_empty() {
                return Err(TrainError::config(
                    "loss.preset",
                    "give either a preset or explicit `loss.terms`, not both",
                ));
            }
            for (i, t) in self.loss.terms.iter().enumerate() {
                if !t.weight.is_finite() {
                    return Err(TrainError::config(
                        format!("loss.terms.{i}.weight"),
                        format!("{} is not finite", t.weight),
                    ));
                }
            }
        }
        let r = self.loss.mask_ratio;
        if !(0.0..1.0).contains(&r) {
            return Err(TrainError::config(
                "loss.mask_ratio",
                format!("{r} is not in [0, 1)"),
            ));
        }
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr >= 0.0) {
            return Err(TrainError::config(
                "optim.lr",
                format!("{} must be finite and >= 0", o.lr),
            ));
        }
        if let Some([b1, b2]) = o.betas
            && !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2))
        {
            return Err(TrainError::config(
                "optim.betas",
                format!("[{b1}, {b2}]: each must be in [0, 1)"),
            ));
        }
        if let Some(eps) = o.eps
            && !(eps.is_finite() && eps > 0.0)
        {
            return Err(TrainError::config(
                "optim.eps",
                format!("{eps} must be positive"),
            ));
        }
        for (field, wd) in [
            ("optim.weight_decay", o.weight_decay),
            ("optim.loss_weight_decay", o.loss_weight_decay),
        ] {
            if !(wd.is_finite() && wd >= 0.0) {
                return Err(TrainError::config(
                    field,
                    format!("{wd} must be finite and >= 0"),
                ));
            }
        }
        positive("optim.epochs", o.epochs)?;
        positive("optim.grad_accum", o.grad_accum as u64)?;
        if let Some(c) = o.grad_clip_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(TrainError::config(
                "optim.grad_clip_norm",
                format!("{c} must be positive"),
            ));
        }
        let r = &self.run;
        positive("run.keep_checkpoints", r.keep_checkpoints as u64)?;
        positive("run.log_every_steps", r.log_every_steps)?;
        if let Some(n) = r.stop_after_steps {
            positive("run.stop_after_steps", n)?;
        }
        if r.output_dir.as_os_str().is_empty() {
            return Err(TrainError::config("run.output_dir", "must not be empty"));
        }
        if self.eval.batch_size == 0 {
            return Err(TrainError::config("eval.batch_size", "must be at least 1"));
        }
        Ok(())
    }
}

fn positive(field: &str, value: u64) -> Result<(), TrainError> {
    if value == 0 {
        Err(TrainError::config(field, "must be at least 1"))
    } else {
        Ok(())
    }
}

/// Reads a TOML (or, by extension, JSON) config file as a JSON value.
fn read_config_value(path: &Path) -> Result<Value, TrainError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| TrainError::io("reading config", path, e))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::from_str(&text).map_err(|e| TrainError::ConfigParse {
            path: path.to_path_buf(),
            location: Some((e.line(), e.column())),
            message: e.to_string(),
        })
    } else {
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            let location = e.span().map(|span| line_column(&text, span.start));
            TrainError::ConfigParse {
                path: path.to_path_buf(),
                location,
                message: e.message().to_string(),
            }
        })?;
        toml_to_json(toml::Value::Table(table), "").map_err(|(field, value)| {
            TrainError::ConfigParse {
                path: path.to_path_buf(),
                location: None,
                message: format!("{field}: {value} is not a finite number"),
            }
        })
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A TOML value at `path` (`optim.lr`, `loss.terms[0].weight`, as serde_path_to_error names
/// fields) as JSON (datetimes become strings). JSON has no NaN or infinity (serde_json would
/// make them `null`, then "invalid type: null"), so those are an error: the path of the value
/// and its TOML spelling (`nan`, `inf`, `-inf`).
fn toml_to_json(value: toml::Value, path: &str) -> Result<Value, (String, &'static str)> {
    let child = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => match serde_json::Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None if f.is_nan() => return Err((path.to_string(), "nan")),
            None if f > 0.0 => return Err((path.to_string(), "inf")),
            None => return Err((path.to_string(), "-inf")),
        },
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(
            a.into_iter()
                .enumerate()
                .map(|(i, v)| toml_to_json(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => {
            let mut map = Map::new();
            for (k, v) in t {
                let value = toml_to_json(v, &child(&k))?;
                map.insert(k, value);
            }
            Value::Object(map)
        }
    })
}

/// Merges `overlay` into `base`: objects key by key (recursively), anything else replaced.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_the_papers_recipe() {
        let c = RunConfig::default();
        assert_eq!(c.optim.lr, 1e-3);
        assert_eq!(c.optim.warmup, 10_000);
        assert_eq!(c.optim.epochs, 32);
        assert_eq!(c.optim.weight_decay, 0.1);
        assert_eq!(c.optim.grad_clip_norm, None);
        assert_eq!(c.data.batch_size, 1024);
        assert_eq!(c.data.crop_scale, [0.9, 1.0]);
        assert_eq!(c.loss.mask_ratio, 0.75);
        assert_eq!(c.run.seed, 0);
        let vit = c.optim.adamw_params(AdamWParams::vit());
        assert_eq!((vit.beta_1, vit.beta_2, vit.epsilon), (0.9, 0.98, 1e-6));
        let rn = c.optim.adamw_params(AdamWParams::resnet());
        assert_eq!((rn.beta_2, rn.epsilon), (0.999, 1e-8));
        let set = c
            .loss
            .loss_set_config(TrainMode::Distill, 512, 768)
            .unwrap();
        let names: Vec<_> = set
            .losses
            .iter()
            .map(|l| l.entry_name().to_string())
            .collect();
        assert_eq!(names, ["task", "crd", "icl", "fd"]);
        assert_eq!(set.losses[3].weight, 2000.0);
    }

    #[test]
    fn toml_file_preset_and_overrides_layer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "run.toml",
            r#"
preset = "vit-l-14-laion-to-vit-b-16"
[data]
train_data = "a.csv,b.csv"
batch_size = 256
[optim]
lr = 5e-4
betas = [0.9, 0.95]
"#,
        );
        let c = RunConfig::load(
            Some(&path),
            None,
            &[
                Override::parse("optim.lr=2e-4").unwrap(),
                Override::parse("run.output_dir=/tmp/x y").unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(c.preset.as_deref(), Some("vit-l-14-laion-to-vit-b-16"));
        assert_eq!(c.teacher.model, "ViT-L-14");
        assert_eq!(c.student.model, "ViT-B-16");
        assert_eq!(c.data.batch_size, 256);
        assert_eq!(c.optim.lr, 2e-4);
        assert_eq!(c.optim.betas, Some([0.9, 0.95]));
        assert_eq!(c.optim.warmup, 10_000);
        assert_eq!(c.run.output_dir, PathBuf::from("/tmp/x y"));
        // Round trip through TOML.
        let back = RunConfig::from_value(
            toml_to_json(
                toml::Value::Table(toml::from_str(&c.to_toml()).unwrap()),
                "",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn json_files_work_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "run.json",
            r#"{"data": {"train_data": "x.csv"}, "optim": {"epochs": 2}}"#,
        );
        let c = RunConfig::from_file(&path).unwrap();
        assert_eq!(c.optim.epochs, 2);
        assert_eq!(c.data.train_data.as_deref(), Some("x.csv"));
    }

    #[test]
    fn errors_name_the_field_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad_key = write(dir.path(), "a.toml", "[optim]\nlrr = 1.0\n");
        let e = RunConfig::from_file(&bad_key).unwrap_err().to_string();
        assert!(e.contains("optim") && e.contains("lrr"), "{e}");

        let bad_type = write(dir.path(), "b.toml", "[optim]\nepochs = \"many\"\n");
        let e = RunConfig::from_file(&bad_type).unwrap_err().to_string();
        assert!(e.contains("optim.epochs"), "{e}");

        let bad_syntax = write(dir.path(), "c.toml", "[optim]\nlr = = 1\n");
        let e = RunConfig::from_file(&bad_syntax).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("line 2"), "{e}");

        let e = RunConfig::from_file(dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");

        let e = RunConfig::load(None, Some("nope"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown run preset `nope`"), "{e}");

        let mut c = RunConfig::default();
        let e = c.validate(TrainMode::Baseline).unwrap_err().to_string();
        assert!(e.contains("data.train_data"), "{e}");
        c.data.train_data = Some("x.csv".into());
        let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
        assert!(e.contains("teacher.weights"), "{e}");
        c.teacher.weights = Some("t.safetensors".into());
        c.optim.lr = f64::NAN;
        let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
        assert!(e.contains("optim.lr"), "{e}");
        c.optim.lr = 1e-3;
        c.loss.mask_ratio = 1.0;
        let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
        assert!(e.contains("loss.mask_ratio"), "{e}");
        c.loss.mask_ratio = 0.75;
        c.optim.grad_accum = 0;
        let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
        assert!(e.contains("optim.grad_accum"), "{e}");
        c.optim.grad_accum = 1;
        c.validate(TrainMode::Distill).unwrap();
    }

    #[test]
    fn nan_and_inf_are_errors_naming_the_field_and_value() {
        for (set, message) in [
            (
                "optim.lr=nan",
                "config field `optim.lr`: nan is not a finite number",
            ),
            (
                "optim.lr=inf",
                "config field `optim.lr`: inf is not a finite number",
            ),
            (
                "optim.lr=-inf",
                "config field `optim.lr`: -inf is not a finite number",
            ),
            (
                "optim.betas=[0.9, nan]",
                "`optim.betas[1]`: nan is not a finite number",
            ),
            (
                "optim={ lr = +inf }",
                "`optim.lr`: inf is not a finite number",
            ),
        ] {
            let e = Override::parse(set).unwrap_err().to_string();
            assert!(e.contains(message), "{set}: {e}");
            assert!(!e.contains("null"), "{set}: {e}");
        }

        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "nan.toml", "[optim]\nlr = nan\n");
        let e = RunConfig::from_file(&file).unwrap_err().to_string();
        assert!(e.contains("nan.toml"), "{e}");
        assert!(e.contains("optim.lr: nan is not a finite number"), "{e}");
        let file = write(dir.path(), "inf.toml", "[[loss.terms]]\nweight = -inf\n");
        let e = RunConfig::from_file(&file).unwrap_err().to_string();
        assert!(
            e.contains("loss.terms[0].weight: -inf is not a finite number"),
            "{e}"
        );
    }

    #[test]
    fn explicit_loss_terms_merge_onto_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "loss.toml",
            r#"
[[loss.terms]]
kind = "task"
weight = 1.0
[[loss.terms]]
kind = "fd"
weight = 1000.0
distance = "Cosine"
[[loss.terms]]
kind = "icl"
weight = 0.5
name = "icl_exp"
scale = { mode = "Exp" }
"#,
        );
        let c = RunConfig::from_file(&path).unwrap();
        let set = c.loss.loss_set_config(TrainMode::Distill, 8, 12).unwrap();
        assert_eq!(set.losses.len(), 3);
        assert_eq!(set.losses[1].weight, 1000.0);
        match &set.losses[1].loss {
            LossConfig::Fd(fd) => assert_eq!(fd.distance, clipkd_losses::FeatureDistance::Cosine),
            other => panic!("{other:?}"),
        }
        match &set.losses[2].loss {
            LossConfig::Icl(icl) => {
                assert_eq!(icl.scale.mode, clipkd_losses::ScaleMode::Exp);
                assert!((icl.scale.init - 2.659).abs() < 1e-3, "default kept");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(set.losses[2].entry_name(), "icl_exp");
        // Baseline mode ignores them.
        let base = c.loss.loss_set_config(TrainMode::Baseline, 8, 12).unwrap();
        assert_eq!(base.losses.len(), 1);

        let mut bad = c.clone();
        bad.loss.terms[1]
            .options
            .insert("distanse".into(), Value::from("Mse"));
        let e = bad
            .loss
            .loss_set_config(TrainMode::Distill, 8, 12)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("loss.terms.1.distanse") && e.contains("distance"),
            "{e}"
        );
        let mut bad = c.clone();
        bad.loss.terms[1]
            .options
            .insert("distance".into(), Value::from("L1"));
        let e = bad
            .loss
            .loss_set_config(TrainMode::Distill, 8, 12)
            .unwrap_err()
            .to_string();
        assert!(e.contains("loss.terms.1.distance"), "{e}");
        let mut both = c.clone();
        both.loss.preset = Some(LossPreset::Crd);
        assert!(
            both.loss
                .loss_set_config(TrainMode::Distill, 8, 12)
                .unwrap_err()
                .to_string()
                .contains("loss.preset")
        );
    }

    #[test]
    fn overrides_parse_toml_values_or_strings() {
        assert_eq!(
            Override::parse("a.b=5e-4").unwrap().value,
            Value::from(5e-4)
        );
        assert_eq!(Override::parse("a=true").unwrap().value, Value::from(true));
        assert_eq!(
            Override::parse("a=[1, 2]").unwrap().value,
            serde_json::json!([1, 2])
        );
        assert_eq!(
            Override::parse("a=/data/x.csv").unwrap().value,
            Value::from("/data/x.csv")
        );
        assert_eq!(
            Override::parse("a.b={ mode = \"Exp\" }").unwrap().value,
            serde_json::json!({"mode": "Exp"})
        );
        assert!(Override::parse("novalue").is_err());
        assert!(Override::parse("a..b=1").is_err());
        // Into lists by index, and an error past the end.
        let mut v = serde_json::json!({"loss": {"terms": [{"weight": 1.0}]}});
        Override::parse("loss.terms.0.weight=3.0")
            .unwrap()
            .apply(&mut v)
            .unwrap();
        assert_eq!(v["loss"]["terms"][0]["weight"], Value::from(3.0));
        let e = Override::parse("loss.terms.4.weight=3.0")
            .unwrap()
            .apply(&mut v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("loss.terms.4"), "{e}");
        // Into an unset optional section.
        let c = RunConfig::load(
            None,
            None,
            &[Override::parse("eval.zero_shot.root=/x").unwrap()],
        )
        .unwrap();
        assert_eq!(c.eval.zero_shot.map(|z| z.root), Some(PathBuf::from("/x")));
        let e = RunConfig::load(None, None, &[Override::parse("optim.lr.x=1").unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("optim.lr"), "{e}");
    }

    #[test]
    fn every_preset_loads_and_hash_tracks_the_trajectory() {
        for name in RunConfig::preset_names() {
            let c = RunConfig::preset(name).unwrap();
            clipkd_models::ClipConfig::resolve(&c.teacher.model).unwrap();
            clipkd_models::ClipConfig::resolve(&c.student.model).unwrap();
        }
        let a = RunConfig::default();
        let mut b = a.clone();
        b.run.log_every_steps = 7;
        assert_eq!(a.trajectory_hash(), b.trajectory_hash());
        b.optim.lr = 2e-3;
        assert_ne!(a.trajectory_hash(), b.trajectory_hash());
    }
}
