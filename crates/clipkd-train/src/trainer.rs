//! The trainer: a run config in, a trained, evaluated, checkpointed student out.
//!
//! [`PreparedRun::prepare`] checks everything before any work: the config's fields, the model
//! configs, that the teacher sees the student's exact pixels and tokens, the losses against
//! the student, the files (weights, data, evaluation sets, checkpoint to resume), and sizes
//! the schedule. [`PreparedRun::run`] then trains on any autodiff backend:
//!
//! ```text
//! for each epoch, for each group of grad_accum micro-batches:
//!     lr = cosine schedule(step); B::seed(step_seed(seed, step))
//!     teacher forward (inner backend) + student forward/backward per micro-batch
//!     [clip global norm] -> AdamW (3 groups) -> clamp logit_scale
//!     every log_every_steps: metrics row, progress; every checkpoint_every_steps: checkpoint;
//!     every eval.every_steps: evaluation
//! at each epoch end: checkpoint, evaluation every eval.every_epochs
//! at the end: plots
//! ```
//!
//! A resumed run continues from the checkpoint's model, optimizer, data position and step,
//! and takes exactly the steps the uninterrupted run would have taken (the backend RNG is
//! reseeded from `(seed, step)` before every step, and the data loader is deterministic).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use clipkd_data::dataset::{CsvConfig, DataSource, DatasetKind, SyntheticDataset};
use clipkd_data::image::{ImageTransform, TransformConfig};
use clipkd_data::loader::{Batch, DataLoader, DataPosition, LoaderConfig};
use clipkd_data::tokenizer::Tokenizer;
use clipkd_losses::LossSetConfig;
use clipkd_models::{Clip, ClipConfig, load_open_clip};

use crate::checkpoint::{
    self, CHECKPOINTS_DIR, CheckpointContents, RngState, TrainState, save_checkpoint, step_seed,
};
use crate::config::{DataKind, RunConfig, TrainMode};
use crate::error::TrainError;
use crate::eval::{EvalReport, EvalSuite};
use crate::metrics::{EvalRecord, MetricsWriter, StepRecord};
use crate::optim::{AdamWParams, GroupedAdamW};
use crate::progress::{Progress, ProgressMode};
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
        let eval = if config.eval.is_empty() {
            None
        } else {
            Some(config.eval.build()?)
        };

        let run_dir = config.run.output_dir.clone();
        let mut warnings = Vec::new();
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
                let path = checkpoint::resolve_checkpoint(spec, &run_dir)?;
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
                if state.data_position.epoch >= config.optim.epochs
                    && config.run.stop_after_steps.is_none_or(|s| s > state.step)
                {
                    warnings.push(format!(
                        "checkpoint {} is at the end of epoch {}: optim.epochs is {}, nothing \
                         is left to train",
                        path.display(),
                        state.data_position.epoch,
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
        })
    }

    /// Replaces the training data (e.g. an in-memory dataset in tests or research code); the
    /// loader settings and the schedule follow the new data.
    pub fn with_data(mut self, source: DataSource) -> Result<Self, TrainError> {
        self.loader = build_loader(&self.config, &self.student, source)?;
        let (steps_per_epoch, total_steps) = schedule_length(&self.config, &self.loader)?;
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
    Ok((steps_per_epoch, steps_per_epoch * config.optim.epochs))
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
        let metrics = MetricsWriter::open(
            &run_dir,
            config.run.metrics_format,
            prep.resume.as_ref().map(|_| state.step),
        )?;
        let progress = Progress::new(prep.progress, prep.total_steps, state.step);
        for w in &prep.warnings {
            progress.println(&format!("warning: {w}"));
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
            last_checkpoint: None,
            last_checkpoint_step: None,
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
        'epochs: while self.state.data_position.epoch < epochs {
            let mut batches = self.prep.loader.resume(&self.state.data_position)?;
            let mut cut_short = false;
            loop {
                if stop_after.is_some_and(|s| self.state.step >= s) {
                    stopped_early = true;
                    break 'epochs;
                }
                if self.state.steps_in_epoch >= steps_per_epoch {
                    // An epoch of webdataset shards is `train_num_samples` long, as open_clip.
                    cut_short = true;
                    break;
                }
                let wait = Instant::now();
                let mut group = Vec::with_capacity(k);
                for batch in batches.by_ref().take(k) {
                    group.push(batch?);
                }
                self.window_wait += wait.elapsed();
                if group.len() < k {
                    break; // the epoch is over (a partial accumulation group is dropped)
                }
                let skipped = batches.skipped().total();
                self.step(&group, skipped)?;
                self.state.data_position = batches.position().clone();
                self.after_step()?;
            }
            // The epoch is over: the position is the start of the next one.
            self.state.data_position = if cut_short {
                batches.position().next_epoch()
            } else {
                batches.position().clone()
            };
            self.state.epoch = self.state.data_position.epoch;
            self.state.steps_in_epoch = 0;
            drop(batches);
            if self.prep.config.run.checkpoint_at_epoch_end {
                self.checkpoint()?;
            }
            if self.prep.config.eval.due_after_epoch(self.state.epoch)
                && self.last_eval_step != Some(self.state.step)
            {
                self.evaluate()?;
            }
        }
        if self.last_checkpoint_step != Some(self.state.step) {
            self.checkpoint()?;
        }
        self.progress.finish();
        let plots = if self.prep.config.run.plots {
            crate::plot::plot_run(&self.run_dir)?
        } else {
            Vec::new()
        };
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
        })
    }

    /// One optimizer step on `group` (grad_accum micro-batches).
    fn step(&mut self, group: &[Batch], skipped: u64) -> Result<(), TrainError> {
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
        if log_now {
            let loss: BTreeMap<String, f64> = out.terms.to_scalars().into_iter().collect();
            let total: f64 = loss.values().sum();
            if !total.is_finite() {
                let terms: Vec<String> = loss.iter().map(|(n, v)| format!("{n}={v}")).collect();
                return Err(TrainError::NonFiniteLoss {
                    step: self.state.step,
                    terms: terms.join(", "),
                });
            }
            let grad_norm = out.grad_norm.map(|n| n.into_scalar().elem::<f64>());
            let logit_scale = out
                .model
                .student
                .logit_scale()
                .into_scalar()
                .elem::<f64>()
                .exp();
            let elapsed = self.window_start.elapsed().as_secs_f64().max(1e-9);
            let row = StepRecord {
                step: self.state.step,
                epoch: self.state.data_position.epoch,
                lr,
                loss: loss.clone(),
                total,
                grad_norm,
                logit_scale: logit_scale.is_finite().then_some(logit_scale),
                images_per_s: self.window_images as f64 / elapsed,
                step_time_s: elapsed / self.window_steps.max(1) as f64,
                data_wait_s: self.window_wait.as_secs_f64() / self.window_steps.max(1) as f64,
                samples_seen: self.state.samples_seen,
                skipped,
            };
            self.metrics.write_step(&row)?;
            let terms: Vec<String> = loss.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
            self.progress.report(
                self.state.step,
                self.prep.total_steps,
                &format!(
                    "{:.1} img/s | lr {lr:.2e} | loss {total:.4} ({})",
                    row.images_per_s,
                    terms.join(", ")
                ),
            );
            self.last_loss = Some((loss, total));
            self.window_start = Instant::now();
            self.window_images = 0;
            self.window_steps = 0;
            self.window_wait = Duration::ZERO;
        }
        self.model = Some(out.model);
        Ok(())
    }

    /// Step-count triggers: checkpoint and evaluation.
    fn after_step(&mut self) -> Result<(), TrainError> {
        let every = self.prep.config.run.checkpoint_every_steps;
        if every > 0 && self.state.step.is_multiple_of(every) {
            self.checkpoint()?;
        }
        if self.prep.config.eval.due_after_step(self.state.step) {
            self.evaluate()?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), TrainError> {
        let model = self
            .model
            .as_ref()
            .expect("the model is present between steps");
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
