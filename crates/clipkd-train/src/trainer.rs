//! The trainer: a run config in, a trained, evaluated, checkpointed student out.
//!
//! [`PreparedRun::prepare`] checks everything before any work: the config's fields, the model
//! configs, that the teacher sees the student's exact pixels and tokens, the losses against
//! the student, the files (weights, data, evaluation sets, checkpoint to resume), and sizes
//! the schedule. [`PreparedRun::run`] then trains on any autodiff backend:
//!
//! ```text
//! for each epoch (steps_per_epoch optimizer steps), for each group of grad_accum micro-batches:
//!     lr = cosine schedule(step); B::seed(step_seed(seed, step))
//!     teacher forward (inner backend) + student forward/backward per micro-batch
//!     [clip global norm] -> AdamW (3 groups) -> clamp logit_scale
//!     every log_every_steps: metrics row, progress; every checkpoint_every_steps and at the
//!     epoch's end: one checkpoint; every eval.every_steps / eval.every_epochs: evaluation
//! at the end: plots
//! ```
//!
//! # Epochs, passes and skipped samples
//! The schedule is planned from the data's rows: an epoch is `⌊rows / batch_size⌋ / grad_accum`
//! optimizer steps (for webdataset shards, `train_num_samples` decides). Samples that cannot
//! be used are skipped, so a pass over the data can end before its epoch does; the epoch then
//! goes on into the next pass (in that pass's own shuffled order), so that every planned step
//! is taken and the learning rate decays to zero where it was planned to. Each epoch starts a
//! fresh pass. A pass that yields no step at all is an error ([`TrainError::NoUsableData`]),
//! as is a skipped fraction above `data.max_skipped_fraction`
//! ([`TrainError::TooManySkipped`]). Before any model is built, a sample of the data is read
//! and decoded, so that data nobody can use fails in seconds.
//!
//! # Resuming
//! A resumed run continues from the checkpoint's model, optimizer, data position and step,
//! and takes exactly the steps the uninterrupted run would have taken (the backend RNG is
//! reseeded from `(seed, step)` before every step, and the data loader is deterministic).
//! The run directory is locked for the run ([`crate::run_dir`]); resuming from a checkpoint
//! older than the latest rolls the run back to it.
//!
//! # Non-finite values
//! Loss terms stay on the device and are checked in batches ([`crate::finite`]): on logged
//! steps and before every checkpoint and evaluation, so no step waits for the device for the
//! check alone. A checkpoint is written only when every earlier step's loss was finite and
//! its weights and optimizer moments are; otherwise the run stops with an error naming the
//! step and the term (or the tensors), and the earlier checkpoints are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use clipkd_data::dataset::{CsvConfig, DataSource, DatasetKind, SkipReport, SyntheticDataset};
use clipkd_data::image::{ImageTransform, TransformConfig};
use clipkd_data::loader::{Batch, Batches, DataLoader, DataPosition, LoaderConfig};
use clipkd_data::tokenizer::Tokenizer;
use clipkd_losses::LossSetConfig;
use clipkd_models::{Clip, ClipConfig, load_open_clip};

use crate::checkpoint::{
    self, CHECKPOINTS_DIR, CheckpointContents, RngState, TrainState, save_checkpoint, step_seed,
};
use crate::config::{DataKind, RunConfig, TrainMode};
use crate::error::TrainError;
use crate::eval::{EvalReport, EvalSuite};
use crate::finite::{LossWatch, check_weights_and_moments};
use crate::metrics::{EvalRecord, MetricsWriter, StepRecord};
use crate::optim::{AdamWParams, GroupedAdamW};
use crate::progress::{Progress, ProgressMode};
use crate::run_dir::{RunLock, recover_run_dir, roll_back_to};
use crate::schedule::CosineSchedule;
use crate::step::{DistillModel, MicroBatch, StepOptions, distill_optimizer, train_step};

/// A run whose config, models, data and files have all been checked.
#[derive(Debug)]
pub struct PreparedRun {
    /// The run config.
    pub config: RunConfig,
    /// Distillation or baseline.
    pub mode: TrainMode,
    /// The student's model config.
    pub student: ClipConfig,
    /// The teacher's model config (distillation only).
    pub teacher: Option<ClipConfig>,
    /// The loss set (embedding sizes from the models).
    pub loss: LossSetConfig,
    /// AdamW settings (betas and eps by student architecture unless given).
    pub adamw: AdamWParams,
    /// The training data loader.
    pub loader: DataLoader,
    /// Optimizer steps per epoch (micro-batches per epoch / grad_accum).
    pub steps_per_epoch: u64,
    /// Optimizer steps of the whole run (the schedule's length).
    pub total_steps: u64,
    /// The evaluations to run during training, when configured.
    pub eval: Option<EvalSuite>,
    /// The checkpoint to resume from.
    pub resume: Option<PathBuf>,
    /// Notes worth telling the user (e.g. a resumed config that differs from the checkpoint's).
    pub warnings: Vec<String>,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// Lines of the data files dropped while they were read (malformed CSV lines).
    pub read_skips: SkipReport,
    /// The run directory's lock, held from the checks to the end of the run.
    pub lock: RunLock,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Optimizer steps done.
    pub steps: u64,
    /// Optimizer steps of the whole run.
    pub total_steps: u64,
    /// Epochs completed.
    pub epochs: u64,
    /// Whether the run stopped at `run.stop_after_steps` before its end.
    pub stopped_early: bool,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// The last logged loss terms and their total.
    pub last_loss: Option<(BTreeMap<String, f64>, f64)>,
    /// The last evaluation's metrics.
    pub last_eval: Option<BTreeMap<String, f64>>,
    /// The plots drawn.
    pub plots: Vec<PathBuf>,
    /// Samples skipped by this process (all passes), and the data lines dropped when the data
    /// files were read.
    pub skipped: SkipReport,
}

impl PreparedRun {
    /// Checks `config` for a run in `mode` and opens what it reads, before any training work;
    /// `resume` is `latest` or a checkpoint / run directory. Errors name the config field or
    /// the file.
    pub fn prepare(
        config: RunConfig,
        mode: TrainMode,
        resume: Option<&str>,
    ) -> Result<Self, TrainError> {
        config.validate(mode)?;
        let tokenizer_vocab = Tokenizer::new().vocab_size();
        let student = ClipConfig::resolve(&config.student.model)
            .map_err(|e| TrainError::config("student.model", e.to_string()))?;
        check_vocab(&student, tokenizer_vocab, "student.model")?;
        if let Some(init) = &config.student.init {
            check_file(init, "student.init")?;
        }
        let teacher = match mode {
            TrainMode::Baseline => None,
            TrainMode::Distill => {
                let teacher = ClipConfig::resolve(&config.teacher.model)
                    .map_err(|e| TrainError::config("teacher.model", e.to_string()))?;
                check_vocab(&teacher, tokenizer_vocab, "teacher.model")?;
                let weights = config.teacher.weights.as_ref().expect("validated");
                check_file(weights, "teacher.weights")?;
                if teacher.image_size() != student.image_size() {
                    return Err(TrainError::config(
                        "teacher.model",
                        format!(
                            "the teacher `{}` takes {:?} images but the student `{}` {:?}: the \
                             teacher sees the student's exact pixels, so both need the same \
                             image size (use a teacher config with the student's image_size)",
                            config.teacher.model,
                            teacher.image_size(),
                            config.student.model,
                            student.image_size()
                        ),
                    ));
                }
                if teacher.context_length() < student.context_length() {
                    return Err(TrainError::config(
                        "teacher.model",
                        format!(
                            "the teacher's context length {} is shorter than the student's {}: \
                             the teacher reads the student's exact tokens",
                            teacher.context_length(),
                            student.context_length()
                        ),
                    ));
                }
                Some(teacher)
            }
        };
        let teacher_dim = teacher.as_ref().map_or(student.embed_dim, |t| t.embed_dim);
        let loss = config
            .loss
            .loss_set_config(mode, student.embed_dim, teacher_dim)?;
        loss.validate()
            .map_err(|e| TrainError::config("loss", e.to_string()))?;
        loss.check_student(student.is_vit())
            .map_err(|e| TrainError::config("loss", e.to_string()))?;
        let adamw = config.optim.adamw_params(student.is_vit());

        let source = open_data(&config)?;
        let loader = build_loader(&config, &student, source)?;
        let (steps_per_epoch, total_steps) = schedule_length(&config, &loader)?;
        let mut warnings = Vec::new();
        let read_skips = check_data(&config, &loader, &mut warnings)?;
        let eval = if config.eval.is_empty() {
            None
        } else {
            Some(config.eval.build()?)
        };

        let run_dir = config.run.output_dir.clone();
        // From here on this process owns the run directory; what a crash left is cleaned
        // before checkpoints are looked at.
        let lock = RunLock::acquire(&run_dir)?;
        warnings.extend(
            recover_run_dir(&run_dir)?
                .into_iter()
                .map(|n| format!("note: {n}")),
        );
        let resume = match resume {
            None => {
                let existing = checkpoint::list_checkpoints(&run_dir.join(CHECKPOINTS_DIR))?;
                if let Some((step, _)) = existing.last() {
                    return Err(TrainError::config(
                        "run.output_dir",
                        format!(
                            "{} already holds checkpoints (up to step {step}): continue it with \
                             `--resume latest`, or choose another output directory",
                            run_dir.display()
                        ),
                    ));
                }
                None
            }
            Some(spec) => {
                let (path, notes) = checkpoint::find_checkpoint(spec, &run_dir)?;
                warnings.extend(notes);
                let (state, saved) = checkpoint::read_checkpoint_meta(&path)?;
                if state.distill != (mode == TrainMode::Distill) {
                    return Err(TrainError::Checkpoint {
                        path,
                        what: format!(
                            "it was written by a {} run; resume it with `clipkd {}`",
                            if state.distill {
                                "distillation"
                            } else {
                                "baseline"
                            },
                            if state.distill { "distill" } else { "train" },
                        ),
                    });
                }
                if state.config_hash != config.trajectory_hash() {
                    let mut changed = Vec::new();
                    let (a, b) = (
                        serde_json::to_value(&saved).unwrap_or_default(),
                        serde_json::to_value(&config).unwrap_or_default(),
                    );
                    for section in ["data", "teacher", "student", "loss", "optim", "run"] {
                        if a.get(section) != b.get(section) {
                            changed.push(section);
                        }
                    }
                    warnings.push(format!(
                        "resuming {} with a config that differs from the checkpoint's \
                         (sections: {}): the run will not retrace the original trajectory",
                        path.display(),
                        changed.join(", ")
                    ));
                }
                if state.epoch >= config.optim.epochs
                    && config.run.stop_after_steps.is_none_or(|s| s > state.step)
                {
                    warnings.push(format!(
                        "checkpoint {} is at the end of epoch {}: optim.epochs is {}, nothing \
                         is left to train",
                        path.display(),
                        state.epoch,
                        config.optim.epochs
                    ));
                }
                Some(path)
            }
        };
        Ok(PreparedRun {
            config,
            mode,
            student,
            teacher,
            loss,
            adamw,
            loader,
            steps_per_epoch,
            total_steps,
            eval,
            resume,
            warnings,
            progress: ProgressMode::Auto,
            read_skips,
            lock,
        })
    }

    /// Replaces the training data (e.g. an in-memory dataset in tests or research code); the
    /// loader settings and the schedule follow the new data.
    pub fn with_data(mut self, source: DataSource) -> Result<Self, TrainError> {
        self.loader = build_loader(&self.config, &self.student, source)?;
        let (steps_per_epoch, total_steps) = schedule_length(&self.config, &self.loader)?;
        self.read_skips = check_data(&self.config, &self.loader, &mut self.warnings)?;
        self.steps_per_epoch = steps_per_epoch;
        self.total_steps = total_steps;
        Ok(self)
    }

    /// Sets how progress is shown.
    pub fn with_progress(mut self, progress: ProgressMode) -> Self {
        self.progress = progress;
        self
    }

    /// Trains on backend `B` (the teacher runs on `B::InnerBackend`), on `device`.
    pub fn run<B: AutodiffBackend>(self, device: &B::Device) -> Result<RunSummary, TrainError> {
        Runner::<B>::start(self, device)?.train()
    }
}

fn check_file(path: &Path, field: &str) -> Result<(), TrainError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(TrainError::config(
            field,
            format!("file not found: {}", path.display()),
        ))
    }
}

fn check_vocab(config: &ClipConfig, tokenizer_vocab: usize, field: &str) -> Result<(), TrainError> {
    if config.text.vocab_size < tokenizer_vocab {
        Err(TrainError::config(
            field,
            TrainError::TokenizerMismatch {
                model_vocab: config.text.vocab_size,
                tokenizer_vocab,
            }
            .to_string(),
        ))
    } else {
        Ok(())
    }
}

/// Opens the training data named by `[data]`.
fn open_data(config: &RunConfig) -> Result<DataSource, TrainError> {
    let d = &config.data;
    if d.kind == DataKind::Synthetic {
        let [h, w] = ClipConfig::resolve(&config.student.model)
            .map(|c| c.image_size())
            .unwrap_or([224, 224]);
        return Ok(DataSource::indexed(SyntheticDataset::new(
            d.synthetic_samples,
            w,
            h,
        )));
    }
    let kind = match d.kind {
        DataKind::Auto => DatasetKind::Auto,
        DataKind::Csv => DatasetKind::Csv,
        DataKind::Webdataset => DatasetKind::WebDataset,
        DataKind::Synthetic => unreachable!("handled above"),
    };
    let csv = CsvConfig::default()
        .with_keys(d.csv_caption_key.clone(), d.csv_img_key.clone())
        .with_separator(d.csv_separator.as_bytes()[0])
        .with_quoting(d.csv_quoting);
    let data = d.train_data.as_deref().expect("validated");
    DataSource::open(data, d.data_root.as_deref(), kind, &csv)
        .map_err(|e| TrainError::config("data.train_data", e.to_string()))
}

fn build_loader(
    config: &RunConfig,
    student: &ClipConfig,
    source: DataSource,
) -> Result<DataLoader, TrainError> {
    let d = &config.data;
    let [h, w] = student.image_size();
    let transform = ImageTransform::new(
        TransformConfig::default()
            .with_size(h, w)
            .with_mean_std(d.mean, d.std)
            .with_crop_scale(d.crop_scale[0], d.crop_scale[1]),
    )?;
    let loader_config = LoaderConfig::train(d.batch_size)
        .with_workers(d.workers)
        .with_prefetch(d.prefetch)
        .with_seed(config.run.seed)
        .with_context_length(student.context_length())
        .with_shuffle_buffer(d.shuffle_buffer);
    Ok(DataLoader::new(
        source,
        transform,
        Tokenizer::new(),
        loader_config,
    )?)
}

/// Optimizer steps per epoch and in total.
fn schedule_length(config: &RunConfig, loader: &DataLoader) -> Result<(u64, u64), TrainError> {
    let d = &config.data;
    let batches = match loader.batches_per_epoch() {
        Some(b) => b,
        None => match d.train_num_samples {
            Some(n) => n / d.batch_size as u64,
            None => {
                return Err(TrainError::config(
                    "data.train_num_samples",
                    "required for webdataset shards (their length is unknown until read): \
                     the number of samples in one epoch",
                ));
            }
        },
    };
    let k = config.optim.grad_accum as u64;
    let steps_per_epoch = batches / k;
    if steps_per_epoch == 0 {
        let samples = loader
            .source()
            .known_len()
            .map_or_else(|| "too few".to_string(), |n| n.to_string());
        return Err(TrainError::config(
            "data.batch_size",
            format!(
                "the data has {samples} samples, fewer than one optimizer step's \
                 data.batch_size x optim.grad_accum = {} x {k}",
                d.batch_size
            ),
        ));
    }
    let total = steps_per_epoch
        .checked_mul(config.optim.epochs)
        .filter(|&t| t < 1 << 53)
        .ok_or_else(|| {
            TrainError::config(
                "optim.epochs",
                format!(
                    "{} epochs of {steps_per_epoch} steps is more optimizer steps than can be \
                     counted",
                    config.optim.epochs
                ),
            )
        })?;
    Ok((steps_per_epoch, total))
}

/// How many samples [`check_data`] reads before any model is built.
const PROBE_SAMPLES: usize = 32;

/// Reads a sample of the data before any model is built: data of which nothing can be used
/// (a wrong data root, every image corrupt) fails here, naming the first files. Also checks
/// the lines dropped while reading the data files against `data.max_skipped_fraction`.
/// Returns those dropped lines; notes go to `warnings`.
fn check_data(
    config: &RunConfig,
    loader: &DataLoader,
    warnings: &mut Vec<String>,
) -> Result<SkipReport, TrainError> {
    let limit = config.data.max_skipped_fraction;
    let source = loader.source();
    let read_skips = source.read_skips();
    let dropped = read_skips.total();
    if dropped > 0 {
        let rows = source.known_len().unwrap_or(0) as u64;
        let seen = rows + dropped;
        let fraction = dropped as f64 / seen as f64;
        if fraction > limit {
            return Err(TrainError::TooManySkipped {
                skipped: dropped,
                seen,
                fraction: 100.0 * fraction,
                limit,
                report: skip_details(&read_skips),
            });
        }
        warnings.push(format!(
            "{dropped} of {seen} data lines dropped while reading: {}",
            skip_details(&read_skips)
        ));
    }
    let probe = source.probe(PROBE_SAMPLES, loader.transform());
    if probe.checked > 0 && probe.usable == 0 {
        return Err(TrainError::NoUsableData {
            what: format!(
                "none of the {} samples read to check the data could be used: {} (check \
                 data.train_data and data.data_root)",
                probe.checked,
                skip_details(&probe.skipped)
            ),
        });
    }
    if probe.usable < probe.checked {
        warnings.push(format!(
            "{} of {} samples read to check the data are unusable: {}",
            probe.checked - probe.usable,
            probe.checked,
            skip_details(&probe.skipped)
        ));
    }
    Ok(read_skips)
}

/// `12 (missing_file 10, corrupt_image 2)`.
fn skip_counts(report: &SkipReport) -> String {
    let by: Vec<String> = report
        .counts
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    format!("{} ({})", report.total(), by.join(", "))
}

/// The counts by cause and the first example of each cause, on one line.
pub fn skip_details(report: &SkipReport) -> String {
    let first: Vec<String> = report
        .counts
        .keys()
        .filter_map(|reason| report.examples.iter().find(|e| e.reason == *reason))
        .map(ToString::to_string)
        .collect();
    if first.is_empty() {
        skip_counts(report)
    } else {
        format!("{}; first: {}", skip_counts(report), first.join("; "))
    }
}

/// Materialises every lazily initialised parameter, in module order, so that initial values
/// depend only on the seed and a clone never draws new ones.
pub fn force_init<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// A batch of the loader as device tensors.
pub fn micro_batch<B: Backend>(
    batch: &Batch,
    device: &B::Device,
) -> Result<MicroBatch<B>, TrainError> {
    if batch.num_texts() != batch.len() {
        return Err(TrainError::Data(clipkd_data::DataError::DatasetSpec {
            what: format!(
                "training needs one caption per image; a batch has {} images and {} captions",
                batch.len(),
                batch.num_texts()
            ),
        }));
    }
    let images = Tensor::<B, 4>::from_data(
        TensorData::new(batch.images.clone(), batch.images_shape()),
        device,
    );
    let ids: Vec<i64> = batch.tokens.iter().map(|&t| i64::from(t)).collect();
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, batch.tokens_shape()), device);
    Ok(MicroBatch { images, tokens })
}

/// The state of a run on backend `B`.
struct Runner<B: AutodiffBackend> {
    prep: PreparedRun,
    device: B::Device,
    teacher: Option<Clip<B::InnerBackend>>,
    model: Option<DistillModel<B>>,
    optimizer: GroupedAdamW<B, DistillModel<B>>,
    state: TrainState,
    schedule: CosineSchedule,
    metrics: MetricsWriter,
    progress: Progress,
    run_dir: PathBuf,
    /// Loss terms of the steps not yet checked for NaN/Inf.
    watch: LossWatch<B::InnerBackend>,
    /// Skips of the passes over the data that this process finished or left.
    run_skips: SkipReport,
    last_checkpoint: Option<PathBuf>,
    last_checkpoint_step: Option<u64>,
    last_loss: Option<(BTreeMap<String, f64>, f64)>,
    last_eval: Option<BTreeMap<String, f64>>,
    last_eval_step: Option<u64>,
    // Throughput since the last logged row.
    window_start: Instant,
    window_images: u64,
    window_steps: u64,
    window_wait: Duration,
}

/// The skipped fraction is checked once a pass has read this many samples (and at its end).
const MIN_SAMPLES_FOR_SKIP_CHECK: u64 = 1000;
/// Loss terms kept on the device before a check is forced (bounds memory when logging is rare).
const MAX_UNCHECKED_STEPS: usize = 1000;

/// Samples read and skipped in the current pass over the data, as of the last batch.
#[derive(Debug, Clone, Copy, Default)]
struct PassCount {
    seen: u64,
    skipped: u64,
}

impl PassCount {
    fn after_batch(batches: &Batches) -> Self {
        PassCount {
            seen: batches.position().sample,
            skipped: batches.skipped().total(),
        }
    }

    /// The final count once `batches` is over: skipped samples after the last batch and the
    /// usable ones left out of a last partial batch were read too.
    fn at_end(self, batches: &Batches) -> Self {
        let skipped = batches.skipped().total();
        PassCount {
            seen: self.seen + skipped.saturating_sub(self.skipped) + batches.dropped() as u64,
            skipped,
        }
    }
}

impl<B: AutodiffBackend> Runner<B> {
    fn start(prep: PreparedRun, device: &B::Device) -> Result<Self, TrainError> {
        let config = &prep.config;
        let run_dir = config.run.output_dir.clone();
        std::fs::create_dir_all(&run_dir).map_err(|e| TrainError::io("creating", &run_dir, e))?;
        config.save(run_dir.join("config.toml"))?;

        B::seed(device, config.run.seed);
        let teacher = match (&prep.teacher, &config.teacher.weights) {
            (Some(tc), Some(weights)) => Some(
                load_open_clip::<B::InnerBackend>(weights, tc, device)
                    .map_err(|e| TrainError::config("teacher.weights", e.to_string()))?,
            ),
            _ => None,
        };
        let student = match &config.student.init {
            Some(path) => load_open_clip::<B>(path, &prep.student, device)
                .map_err(|e| TrainError::config("student.init", e.to_string()))?,
            None => prep.student.init::<B>(device)?,
        };
        let losses = prep.loss.init::<B>(device)?;
        let model = DistillModel { student, losses };
        force_init(&model);

        let fresh_state = TrainState {
            step: 0,
            epoch: 0,
            steps_in_epoch: 0,
            data_position: DataPosition::start(0),
            rng: RngState {
                seed: config.run.seed,
                next_step: 0,
            },
            samples_seen: 0,
            total_steps: prep.total_steps,
            config_hash: config.trajectory_hash(),
            distill: prep.mode == TrainMode::Distill,
            clipkd_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let (model, optimizer, state) = match &prep.resume {
            None => {
                let optimizer = distill_optimizer(&model, prep.adamw);
                (model, optimizer, fresh_state)
            }
            Some(path) => {
                let model = checkpoint::load_model(path, model, device)?;
                let optimizer = distill_optimizer(&model, prep.adamw);
                let optimizer = checkpoint::load_optimizer(path, optimizer, device)?;
                let (saved, _) = checkpoint::read_checkpoint_meta(path)?;
                let state = TrainState {
                    total_steps: prep.total_steps,
                    config_hash: fresh_state.config_hash,
                    clipkd_version: fresh_state.clipkd_version,
                    ..saved
                };
                (model, optimizer, state)
            }
        };
        let mut notes = Vec::new();
        let mut last_checkpoint_step = None;
        if let Some(path) = &prep.resume {
            // The resumed step is the run's present: later checkpoints of this run directory
            // belong to a branch the user left (see `run_dir`).
            if let Some(moved) = roll_back_to(&run_dir, state.step)? {
                notes.push(format!(
                    "rolled back to step {}: the later checkpoints and the metrics as they were \
                     are kept in {}",
                    state.step,
                    moved.display()
                ));
            }
            if same_dir(path.parent(), &run_dir.join(CHECKPOINTS_DIR)) {
                last_checkpoint_step = Some(state.step);
            }
        }
        let metrics = MetricsWriter::open(
            &run_dir,
            config.run.metrics_format,
            prep.resume.as_ref().map(|_| state.step),
        )?;
        let progress = Progress::new(prep.progress, prep.total_steps, state.step);
        for w in &prep.warnings {
            if w.starts_with("note: ") {
                progress.println(w);
            } else {
                progress.println(&format!("warning: {w}"));
            }
        }
        for n in &notes {
            progress.println(&format!("note: {n}"));
        }
        if let Some(path) = &prep.resume {
            progress.println(&format!(
                "resumed from {} at step {} ({})",
                path.display(),
                state.step,
                state.data_position
            ));
        }
        let schedule = CosineSchedule::new(config.optim.lr, config.optim.warmup, prep.total_steps);
        Ok(Runner {
            device: device.clone(),
            teacher,
            model: Some(model),
            optimizer,
            state,
            schedule,
            metrics,
            progress,
            run_dir,
            watch: LossWatch::new(),
            run_skips: SkipReport::default(),
            last_checkpoint: None,
            last_checkpoint_step,
            last_loss: None,
            last_eval: None,
            last_eval_step: None,
            window_start: Instant::now(),
            window_images: 0,
            window_steps: 0,
            window_wait: Duration::ZERO,
            prep,
        })
    }

    fn train(mut self) -> Result<RunSummary, TrainError> {
        let epochs = self.prep.config.optim.epochs;
        let k = self.prep.config.optim.grad_accum;
        let stop_after = self.prep.config.run.stop_after_steps;
        let mut stopped_early = false;
        let steps_per_epoch = self.prep.steps_per_epoch;
        'epochs: while self.state.epoch < epochs {
            let mut batches = self.prep.loader.resume(&self.state.data_position)?;
            let mut pass_from_start = self.state.data_position.is_epoch_start();
            let mut pass_steps = 0u64;
            let mut count = PassCount::after_batch(&batches);
            loop {
                if stop_after.is_some_and(|s| self.state.step >= s) {
                    stopped_early = true;
                    self.run_skips.merge(batches.skipped());
                    break 'epochs;
                }
                let wait = Instant::now();
                let mut group = Vec::with_capacity(k);
                while group.len() < k {
                    let Some(batch) = batches.next() else { break };
                    group.push(batch?);
                    count = PassCount::after_batch(&batches);
                }
                self.window_wait += wait.elapsed();
                if group.len() < k {
                    // The pass is over (a partial accumulation group is dropped); the epoch
                    // goes on into the next pass.
                    let end = count.at_end(&batches);
                    self.check_skipped(end, batches.skipped())?;
                    if pass_from_start && pass_steps == 0 {
                        return Err(TrainError::NoUsableData {
                            what: format!(
                                "a whole pass over the data ({} samples read) gave {} batches of \
                                 {}, and one optimizer step needs {k} (optim.grad_accum); \
                                 skipped: {}",
                                end.seen,
                                group.len(),
                                self.prep.config.data.batch_size,
                                skip_details(batches.skipped())
                            ),
                        });
                    }
                    self.run_skips.merge(batches.skipped());
                    self.state.data_position = batches.position().clone();
                    drop(batches);
                    batches = self.prep.loader.resume(&self.state.data_position)?;
                    pass_from_start = true;
                    pass_steps = 0;
                    count = PassCount::default();
                    continue;
                }
                self.step(&group, batches.skipped())?;
                pass_steps += 1;
                self.state.data_position = batches.position().clone();
                if count.seen >= MIN_SAMPLES_FOR_SKIP_CHECK {
                    self.check_skipped(count, batches.skipped())?;
                }
                let epoch_over = self.state.steps_in_epoch >= steps_per_epoch;
                if epoch_over {
                    // Every epoch starts a fresh pass (for webdataset shards, as open_clip).
                    self.run_skips.merge(batches.skipped());
                    drop(batches);
                    self.state.data_position = self.state.data_position.next_epoch();
                    self.state.epoch += 1;
                    self.state.steps_in_epoch = 0;
                    self.after_step(true)?;
                    continue 'epochs;
                }
                self.after_step(false)?;
            }
        }
        if self.last_checkpoint_step != Some(self.state.step) {
            self.checkpoint()?;
        }
        self.watch.check()?;
        self.progress.finish();
        let plots = if self.prep.config.run.plots {
            crate::plot::plot_run(&self.run_dir)?
        } else {
            Vec::new()
        };
        let mut skipped = self.prep.read_skips.clone();
        skipped.merge(&self.run_skips);
        Ok(RunSummary {
            run_dir: self.run_dir.clone(),
            steps: self.state.step,
            total_steps: self.prep.total_steps,
            epochs: self.state.epoch,
            stopped_early,
            checkpoint: self.last_checkpoint.clone(),
            last_loss: self.last_loss.clone(),
            last_eval: self.last_eval.clone(),
            plots,
            skipped,
        })
    }

    /// Fails when the pass so far skipped more than `data.max_skipped_fraction` of what it
    /// read.
    fn check_skipped(&self, count: PassCount, report: &SkipReport) -> Result<(), TrainError> {
        let limit = self.prep.config.data.max_skipped_fraction;
        if count.seen == 0 || limit >= 1.0 {
            return Ok(());
        }
        let fraction = count.skipped as f64 / count.seen as f64;
        if fraction > limit {
            return Err(TrainError::TooManySkipped {
                skipped: count.skipped,
                seen: count.seen,
                fraction: 100.0 * fraction,
                limit,
                report: skip_details(report),
            });
        }
        Ok(())
    }

    /// One optimizer step on `group` (grad_accum micro-batches); `skips` are the current
    /// pass's skipped samples (for the metrics row and the progress line).
    fn step(&mut self, group: &[Batch], skips: &SkipReport) -> Result<(), TrainError> {
        let config = &self.prep.config;
        let step = self.state.step;
        let lr = self.schedule.lr(step);
        B::seed(&self.device, step_seed(config.run.seed, step));
        let micro = group
            .iter()
            .map(|b| micro_batch::<B::InnerBackend>(b, &self.device))
            .collect::<Result<Vec<_>, _>>()?;
        let images: u64 = group.iter().map(|b| b.len() as u64).sum();
        let log_now = (step + 1).is_multiple_of(config.run.log_every_steps)
            || step + 1 == self.prep.total_steps;
        let options = StepOptions {
            lr,
            mask_ratio: Some(config.loss.mask_ratio),
            grad_clip_norm: config.optim.grad_clip_norm,
            compute_grad_norm: log_now,
        };
        let model = self
            .model
            .take()
            .expect("the model is back after every step");
        let out = train_step(
            self.teacher.as_ref(),
            model,
            &mut self.optimizer,
            micro,
            &options,
        )?;
        self.state.step += 1;
        self.state.steps_in_epoch += 1;
        self.state.rng.next_step = self.state.step;
        self.state.samples_seen += images;
        self.window_images += images;
        self.window_steps += 1;
        self.progress.set_step(self.state.step);
        self.watch.push(self.state.step, &out.terms);
        self.model = Some(out.model);
        if log_now {
            // One transfer for every step since the last check; fails on a non-finite term.
            let checked = self.watch.check()?.expect("this step's terms are pending");
            let loss: BTreeMap<String, f64> = checked.terms.into_iter().collect();
            let total: f64 = loss.values().sum();
            let grad_norm = out.grad_norm.map(|n| n.into_scalar().elem::<f64>());
            let logit_scale = self
                .model
                .as_ref()
                .expect("just put back")
                .student
                .logit_scale()
                .into_scalar()
                .elem::<f64>()
                .exp();
            let elapsed = self.window_start.elapsed().as_secs_f64().max(1e-9);
            let row = StepRecord {
                step: self.state.step,
                epoch: self.state.epoch,
                lr,
                loss: loss.clone(),
                total,
                grad_norm,
                logit_scale: logit_scale.is_finite().then_some(logit_scale),
                images_per_s: self.window_images as f64 / elapsed,
                step_time_s: elapsed / self.window_steps.max(1) as f64,
                data_wait_s: self.window_wait.as_secs_f64() / self.window_steps.max(1) as f64,
                samples_seen: self.state.samples_seen,
                skipped: skips.total(),
            };
            self.metrics.write_step(&row)?;
            let terms: Vec<String> = loss.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
            let skipped = if skips.is_empty() {
                String::new()
            } else {
                format!(" | skipped {}", skip_counts(skips))
            };
            self.progress.report(
                self.state.step,
                self.prep.total_steps,
                &format!(
                    "{:.1} img/s | lr {lr:.2e} | loss {total:.4} ({}){skipped}",
                    row.images_per_s,
                    terms.join(", ")
                ),
            );
            self.last_loss = Some((loss, total));
            self.window_start = Instant::now();
            self.window_images = 0;
            self.window_steps = 0;
            self.window_wait = Duration::ZERO;
        } else if self.watch.pending() >= MAX_UNCHECKED_STEPS {
            self.watch.check()?;
        }
        Ok(())
    }

    /// The checkpoint and evaluation due after a step (`epoch_over`: it ended an epoch). At
    /// most one checkpoint and one evaluation per step.
    fn after_step(&mut self, epoch_over: bool) -> Result<(), TrainError> {
        let config = &self.prep.config;
        let every = config.run.checkpoint_every_steps;
        let step = self.state.step;
        if (every > 0 && step.is_multiple_of(every))
            || (epoch_over && config.run.checkpoint_at_epoch_end)
        {
            self.checkpoint()?;
        }
        let config = &self.prep.config;
        if (config.eval.due_after_step(step)
            || (epoch_over && config.eval.due_after_epoch(self.state.epoch)))
            && self.last_eval_step != Some(step)
        {
            self.evaluate()?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the current step, once per step, and only of finite values.
    fn checkpoint(&mut self) -> Result<(), TrainError> {
        if self.last_checkpoint_step == Some(self.state.step) {
            return Ok(());
        }
        self.watch.check()?;
        let model = self
            .model
            .as_ref()
            .expect("the model is present between steps");
        check_weights_and_moments(model, &self.optimizer, self.state.step)?;
        let path = save_checkpoint(
            &self.run_dir.join(CHECKPOINTS_DIR),
            CheckpointContents {
                model,
                optimizer: &self.optimizer,
                state: &self.state,
                config: &self.prep.config,
            },
            self.prep.config.run.keep_checkpoints,
        )?;
        self.progress
            .println(&format!("checkpoint {}", path.display()));
        self.last_checkpoint = Some(path);
        self.last_checkpoint_step = Some(self.state.step);
        Ok(())
    }

    fn evaluate(&mut self) -> Result<(), TrainError> {
        let Some(suite) = &self.prep.eval else {
            return Ok(());
        };
        self.watch.check()?;
        let model = self
            .model
            .as_ref()
            .expect("the model is present between steps");
        let student = model.student.valid();
        let report: EvalReport = suite.run(&student, &self.device)?;
        let metrics: BTreeMap<String, f64> = report.metrics().into_iter().collect();
        self.metrics.write_eval(&EvalRecord {
            step: self.state.step,
            epoch: self.state.epoch,
            metrics: metrics.clone(),
            report: serde_json::to_value(&report).map_err(|e| TrainError::Eval {
                what: format!("cannot serialize the report: {e}"),
            })?,
        })?;
        let shown: Vec<String> = metrics.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        self.progress.println(&format!(
            "eval at step {}: {}",
            self.state.step,
            shown.join(", ")
        ));
        self.last_eval = Some(metrics);
        self.last_eval_step = Some(self.state.step);
        Ok(())
    }
}

/// Whether `a` and `b` name the same directory.
fn same_dir(a: Option<&Path>, b: &Path) -> bool {
    match (a.and_then(|a| a.canonicalize().ok()), b.canonicalize().ok()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
