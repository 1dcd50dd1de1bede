//! The trainer: a run config in, a trained, evaluated, checkpointed student out.
//!
//! Any student, teacher and loss module: [`PreparedRun::run`] trains the open_clip models and
//! built-in losses the config names; [`PreparedRun::prepare_for`] +
//! [`PreparedRun::run_with`] train models of the caller's own ([`Student`],
//! [`ClipEncoder`], [`DistillObjective`](clipkd_losses::DistillObjective)) with the same loop, checkpoints and evaluation.
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
//! at the end: plots (with the `plots` feature)
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

mod checks;
pub(crate) mod data;
mod parallel;
mod runner;

use checks::{check_file, check_teacher_fits, check_vocab, plots_unavailable};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use burn_flex::Flex;
use clipkd_data::dataset::{DataSource, SkipReport};
use clipkd_data::loader::DataLoader;
use clipkd_data::tokenizer::Tokenizer;
use clipkd_losses::{LossSet, LossSetConfig};
use clipkd_models::host_init::{build_on_host, copy_parameters};
use clipkd_models::{Clip, ClipConfig, ClipEncoder, EncoderShape, load_open_clip};

use crate::checkpoint::{self, CHECKPOINTS_DIR};
use crate::config::{RunConfig, TrainMode, WeightsFile};
use crate::error::TrainError;
use crate::eval::EvalSuite;
use crate::progress::ProgressMode;
use crate::run_dir::{RunLock, recover_run_dir};
use crate::step::TrainableObjective;
use crate::student::Student;
use crate::teacher_cache::TeacherCache;
use std::sync::Arc;

/// The no-teacher baseline trains with the task loss alone: a `[loss]` that names anything
/// else (a distillation config reused for the baseline) is replaced by `preset = "baseline"`,
/// so that the run's saved config says what it trains, with a note saying so.
fn baseline_loss(config: &mut RunConfig, mode: TrainMode) -> Option<String> {
    use clipkd_losses::LossPreset;
    let loss = &mut config.loss;
    let other = loss.preset.is_some_and(|p| p != LossPreset::Baseline) || !loss.terms.is_empty();
    if mode != TrainMode::Baseline || !other {
        return None;
    }
    let was = match loss.preset {
        Some(p) if loss.terms.is_empty() => format!("loss.preset = \"{}\"", p.name()),
        _ => format!("{} loss.terms", loss.terms.len()),
    };
    loss.preset = Some(LossPreset::Baseline);
    loss.terms.clear();
    Some(format!(
        "{was} is not used: the baseline (no teacher) trains with the task loss alone; the run's \
         config records loss.preset = \"baseline\""
    ))
}

/// The teacher cache of `config`, opened, when distilling from one.
fn open_cache(config: &RunConfig, mode: TrainMode) -> Result<Option<TeacherCache>, TrainError> {
    match (&config.teacher.cache, mode) {
        (Some(dir), TrainMode::Distill) => Ok(Some(TeacherCache::open(dir)?)),
        _ => Ok(None),
    }
}

use data::{build_loader, check_data, open_data, schedule_length};
pub use data::{micro_batch, skip_details};
use runner::Runner;

/// The models a run trains, built by the caller: the student, the frozen teacher (none for
/// the no-teacher baseline) and the loss module.
#[derive(Debug)]
pub struct Models<S, T, L> {
    /// The student (trained).
    pub student: S,
    /// The teacher (frozen, on the inner backend), or `None`.
    pub teacher: Option<T>,
    /// The loss module (its own parameters are trained with the student).
    pub losses: L,
}

/// Which models a run was prepared for.
#[derive(Debug, Clone)]
enum ModelPlan {
    /// The open_clip models of the config's `student` and `teacher` sections.
    OpenClip {
        student: Box<ClipConfig>,
        teacher: Option<Box<ClipConfig>>,
        /// The student's starting weights (none: a seeded random initialisation).
        student_init: Option<WeightsFile>,
        /// The teacher's weights (none without a teacher, or from a teacher cache).
        teacher_weights: Option<WeightsFile>,
    },
    /// Models of the caller's own, known by their shapes.
    Custom,
}

/// A run whose config, models, data and files have all been checked; it cannot be changed
/// afterwards except for its data ([`PreparedRun::with_data`], checked again) and its
/// progress display.
#[derive(Debug)]
pub struct PreparedRun {
    config: RunConfig,
    mode: TrainMode,
    plan: ModelPlan,
    student: EncoderShape,
    teacher: Option<EncoderShape>,
    loss: LossSetConfig,
    loader: DataLoader,
    steps_per_epoch: u64,
    total_steps: u64,
    eval: Option<EvalSuite>,
    resume: Option<PathBuf>,
    warnings: Vec<String>,
    progress: ProgressMode,
    read_skips: SkipReport,
    /// Distilling from a teacher cache: the teacher's outputs come from it.
    teacher_cache: Option<Arc<TeacherCache>>,
    /// Held, not read: the run directory is this process's until the run ends (none on the
    /// nodes other than node 0 of a run on several machines).
    _lock: Option<RunLock>,
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
    /// The plots drawn (none when `run.plots` is off; drawing them needs the `plots`
    /// feature).
    pub plots: Vec<PathBuf>,
    /// Samples skipped by this process (all passes), and the data lines dropped when the data
    /// files were read.
    pub skipped: SkipReport,
}

impl PreparedRun {
    /// Checks `config` for a run in `mode` of the open_clip models its `student` and `teacher`
    /// sections name, with its built-in losses, and opens what it reads, before any training
    /// work; `resume` is `latest` or a checkpoint / run directory. Errors name the config field
    /// or the file. Train with [`PreparedRun::run`].
    pub fn prepare(
        config: RunConfig,
        mode: TrainMode,
        resume: Option<&str>,
    ) -> Result<Self, TrainError> {
        config.validate(mode)?;
        let tokenizer_vocab = Tokenizer::new().vocab_size();
        let student = config.student.architecture()?;
        check_vocab(student.text.vocab_size, tokenizer_vocab, "student.model")?;
        // Pretrained weights are found in the Hugging Face cache or downloaded now, before
        // any training work.
        let student_init = config.student.init_file()?;
        if let Some(init) = &student_init {
            check_file(&init.path, init.field)?;
        }
        let cache = open_cache(&config, mode)?;
        let mut teacher_weights = None;
        let mut early_warnings = Vec::new();
        let teacher = match (mode, &cache) {
            (TrainMode::Baseline, _) => None,
            (TrainMode::Distill, Some(cache)) => {
                // No teacher model: its outputs come from the cache.
                check_teacher_fits(
                    &cache.teacher_shape(),
                    &student.encoder_shape(),
                    &format!("the teacher of cache {}", cache.dir().display()),
                    &format!("the student `{}`", config.student.model),
                )?;
                None
            }
            (TrainMode::Distill, None) => {
                let teacher = config.teacher.architecture()?;
                check_vocab(teacher.text.vocab_size, tokenizer_vocab, "teacher.model")?;
                let weights = config.teacher.weights_file()?.expect("validated");
                check_file(&weights.path, weights.field)?;
                teacher_weights = Some(weights);
                early_warnings.extend(config.teacher.normalization_warning(&config)?);
                check_teacher_fits(
                    &teacher.encoder_shape(),
                    &student.encoder_shape(),
                    &format!("the teacher `{}`", config.teacher.model),
                    &format!("the student `{}`", config.student.model),
                )?;
                Some(teacher)
            }
        };
        let plan = ModelPlan::OpenClip {
            student: Box::new(student.clone()),
            teacher: teacher.clone().map(Box::new),
            student_init,
            teacher_weights,
        };
        let student = student.encoder_shape();
        let teacher = match &cache {
            Some(cache) => Some(cache.teacher_shape()),
            None => teacher.map(|t| t.encoder_shape()),
        };
        let mut run = Self::prepare_shapes(config, mode, resume, plan, student, teacher, cache)?;
        run.warnings.splice(0..0, early_warnings);
        Ok(run)
    }

    /// Checks `config` for a run of models of the caller's own, of the given shapes (from
    /// [`ClipEncoder::shape`]; the config's `student` and `teacher` sections are not used), and
    /// opens what it reads. A teacher makes it a distillation, none the no-teacher baseline.
    /// Train with [`PreparedRun::run_with`], whose models must have these shapes;
    /// [`PreparedRun::loss_config`] is the config's `[loss]` sized for them.
    pub fn prepare_for(
        config: RunConfig,
        resume: Option<&str>,
        student: EncoderShape,
        teacher: Option<EncoderShape>,
    ) -> Result<Self, TrainError> {
        let mode = if teacher.is_some() {
            TrainMode::Distill
        } else {
            TrainMode::Baseline
        };
        // The teacher's weights are the caller's to load: the config only needs them for the
        // open_clip teacher it names.
        let mut checked = config.clone();
        if mode == TrainMode::Distill && checked.teacher.weights.is_none() {
            checked.teacher.weights = Some(PathBuf::from("<the caller's teacher>"));
            checked.teacher.pretrained = None;
        }
        checked.validate(mode)?;
        let tokenizer_vocab = Tokenizer::new().vocab_size();
        check_vocab(student.vocab_size, tokenizer_vocab, "student")?;
        if let Some(t) = &teacher {
            check_vocab(t.vocab_size, tokenizer_vocab, "teacher")?;
            check_teacher_fits(t, &student, "the teacher", "the student")?;
        }
        let cache = open_cache(&config, mode)?;
        Self::prepare_shapes(
            config,
            mode,
            resume,
            ModelPlan::Custom,
            student,
            teacher,
            cache,
        )
    }

    fn prepare_shapes(
        mut config: RunConfig,
        mode: TrainMode,
        resume: Option<&str>,
        plan: ModelPlan,
        student: EncoderShape,
        teacher: Option<EncoderShape>,
        cache: Option<TeacherCache>,
    ) -> Result<Self, TrainError> {
        if let Some(err) = plots_unavailable(&config) {
            return Err(err);
        }
        let mut warnings = Vec::new();
        warnings.extend(baseline_loss(&mut config, mode));
        let teacher_dim = teacher.map_or(student.embed_dim, |t| t.embed_dim);
        let loss = config
            .loss
            .loss_set_config(mode, student.embed_dim, teacher_dim)?;
        loss.validate().map_err(|e| TrainError::field("loss", e))?;
        if matches!(plan, ModelPlan::OpenClip { .. }) {
            loss.check_student(student.supports_masked_view)
                .map_err(|e| TrainError::field("loss", e))?;
        }

        let source = open_data(&config, student.image_size)?;
        if let Some(cache) = &cache {
            // The data is checked against the cache when the run starts (`with_data` may
            // replace it until then).
            cache.check_config(&config, &student)?;
        }
        let cache = cache.map(Arc::new);
        let loader = build_loader(&config, &student, source, cache.as_deref())?;
        let (steps_per_epoch, total_steps) = schedule_length(&config, &loader)?;
        let read_skips = check_data(&config, &loader, &mut warnings)?;
        let eval = if config.eval.is_empty() {
            None
        } else {
            Some(config.eval.build()?)
        };

        let run_dir = config.run.output_dir.clone();
        // From here on this process owns the run directory; what a crash left is cleaned
        // before checkpoints are looked at. On several nodes, node 0 owns it and the others
        // only read it (to resume).
        let writer = config.run.node_rank == 0;
        let lock = if writer {
            let lock = RunLock::acquire(&run_dir)?;
            warnings.extend(
                recover_run_dir(&run_dir)?
                    .into_iter()
                    .map(|n| format!("note: {n}")),
            );
            Some(lock)
        } else {
            None
        };
        let resume = match resume {
            None if !writer => None,
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
                        serde_json::to_value(&saved).expect("a run config serializes"),
                        serde_json::to_value(&config).expect("a run config serializes"),
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
            plan,
            student,
            teacher,
            loss,
            loader,
            steps_per_epoch,
            total_steps,
            eval,
            resume,
            warnings,
            progress: ProgressMode::Auto,
            read_skips,
            teacher_cache: cache,
            _lock: lock,
        })
    }

    /// Replaces the training data (e.g. an in-memory dataset in tests or research code); the
    /// loader settings, the schedule and the data check follow the new data.
    pub fn with_data(mut self, source: DataSource) -> Result<Self, TrainError> {
        self.loader = build_loader(
            &self.config,
            &self.student,
            source,
            self.teacher_cache.as_deref(),
        )?;
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

    /// The run config.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// Distillation or the no-teacher baseline.
    pub fn mode(&self) -> TrainMode {
        self.mode
    }

    /// The student's shape the data pipeline was built for.
    pub fn student_shape(&self) -> EncoderShape {
        self.student
    }

    /// The teacher's shape (distillation only).
    pub fn teacher_shape(&self) -> Option<EncoderShape> {
        self.teacher
    }

    /// The config's `[loss]` as a loss set sized for the prepared models (what
    /// [`PreparedRun::run`] trains; `init` it for [`PreparedRun::run_with`] to train the
    /// paper's losses with models of your own).
    pub fn loss_config(&self) -> &LossSetConfig {
        &self.loss
    }

    /// Optimizer steps per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    /// Optimizer steps of the whole run (the schedule's length).
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// The checkpoint the run resumes from.
    pub fn resume_from(&self) -> Option<&Path> {
        self.resume.as_deref()
    }

    /// Notes for the user found while preparing (also printed when the run starts).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Trains the open_clip models and built-in losses of the config (prepared by
    /// [`PreparedRun::prepare`]) on backend `B` (the teacher runs on `B::InnerBackend`), on
    /// `device`.
    pub fn run<B: AutodiffBackend>(self, device: &B::Device) -> Result<RunSummary, TrainError> {
        self.check_one_node()?;
        let models = self.open_clip_models()?.build::<B>(device)?;
        Runner::<B, Clip<B>, Clip<B::InnerBackend>, LossSet<B>>::start(self, device, models)?
            .train()
    }

    /// Trains models of the caller's own on backend `B`, on `device`: any [`Student`], any
    /// [`ClipEncoder`] teacher on the inner backend, any [`DistillObjective`](clipkd_losses::DistillObjective) loss module
    /// (for instance a [`LossSet`] from [`PreparedRun::loss_config`], or one mixing built-in and
    /// user losses). Their shapes must be those the run was prepared for, and the student must
    /// have the masked view the losses read. Seed the backend before building them
    /// (`B::seed`) for reproducible initial weights; when resuming, the checkpoint's weights
    /// replace them.
    pub fn run_with<B, S, T, L>(
        self,
        device: &B::Device,
        models: Models<S, T, L>,
    ) -> Result<RunSummary, TrainError>
    where
        B: AutodiffBackend,
        S: Student<B>,
        T: ClipEncoder<B::InnerBackend>,
        L: TrainableObjective<B>,
    {
        self.check_one_node()?;
        self.check_models(&models)?;
        Runner::<B, S, T, L>::start(self, device, models)?.train()
    }

    /// Refuses a config of several nodes on the single-device paths (each node reads only its
    /// part of the data, which the nodes must train on together).
    fn check_one_node(&self) -> Result<(), TrainError> {
        if self.config.run.num_nodes > 1 {
            return Err(TrainError::config(
                "run.num_nodes",
                format!(
                    "{} nodes train together through run_on_devices or run_with_peers, not on \
                     one device alone",
                    self.config.run.num_nodes
                ),
            ));
        }
        Ok(())
    }

    /// Checks the caller's models against the shapes the run was prepared for.
    fn check_models<B, S, T, L>(&self, models: &Models<S, T, L>) -> Result<(), TrainError>
    where
        B: AutodiffBackend,
        S: Student<B>,
        T: ClipEncoder<B::InnerBackend>,
        L: TrainableObjective<B>,
    {
        let got = models.student.shape();
        if got != self.student {
            return Err(TrainError::config(
                "student",
                format!(
                    "the student has shape {got:?}, but the run was prepared for {:?}",
                    self.student
                ),
            ));
        }
        match (&models.teacher, &self.teacher) {
            (Some(t), Some(want)) if t.shape() != *want => {
                return Err(TrainError::config(
                    "teacher",
                    format!(
                        "the teacher has shape {:?}, but the run was prepared for {want:?}",
                        t.shape()
                    ),
                ));
            }
            (Some(_), None) => {
                return Err(TrainError::config(
                    "teacher",
                    "a teacher was given to a run prepared without one",
                ));
            }
            (None, Some(_)) if self.teacher_cache.is_none() => {
                return Err(TrainError::config(
                    "teacher",
                    "the run was prepared for distillation, but no teacher was given",
                ));
            }
            (Some(_), Some(_)) if self.teacher_cache.is_some() => {
                return Err(TrainError::config(
                    "teacher",
                    "the run distills from a teacher cache: give no teacher model",
                ));
            }
            _ => {}
        }
        if models.losses.requires_masked_view() && !got.supports_masked_view {
            return Err(TrainError::config(
                "loss",
                "the losses read the student's masked image view (MFD), which this student \
                 does not have (ClipEncoder::supports_masked_view)",
            ));
        }
        Ok(())
    }
}

/// The open_clip student and teacher and the built-in losses, on backend `B`.
type OpenClipModelSet<B> = Models<Clip<B>, Clip<<B as AutodiffBackend>::InnerBackend>, LossSet<B>>;

/// The open_clip models and built-in losses of a run prepared by [`PreparedRun::prepare`],
/// built on any device (each data-parallel peer builds its own).
#[derive(Debug, Clone)]
struct OpenClipModels {
    config: RunConfig,
    student: ClipConfig,
    teacher: Option<ClipConfig>,
    student_init: Option<WeightsFile>,
    teacher_weights: Option<WeightsFile>,
    loss: LossSetConfig,
}

impl OpenClipModels {
    /// The teacher loaded from its weights; the student from its starting weights or
    /// initialised from the run's seed; the losses' projections likewise.
    fn build<B: AutodiffBackend>(
        &self,
        device: &B::Device,
    ) -> Result<OpenClipModelSet<B>, TrainError> {
        let config = &self.config;
        B::seed(device, config.run.seed);
        let teacher = match (&self.teacher, &self.teacher_weights) {
            (Some(tc), Some(weights)) => Some(
                load_open_clip::<B::InnerBackend>(&weights.path, tc, device)
                    .map_err(|e| TrainError::field(weights.field, e))?,
            ),
            _ => None,
        };
        // Random initial weights (the student's, the losses' projections) are drawn on the CPU
        // from the run's seed, student first, and copied to the device: the same on every
        // backend.
        let (host_student, host_losses) = build_on_host(config.run.seed, |cpu| {
            let host_student = match &self.student_init {
                Some(_) => None,
                None => Some(self.student.init::<Flex>(cpu)?),
            };
            Ok::<_, TrainError>((host_student, self.loss.init::<Flex>(cpu)?))
        })?;
        let student = match (&self.student_init, host_student) {
            (Some(init), _) => load_open_clip::<B>(&init.path, &self.student, device)
                .map_err(|e| TrainError::field(init.field, e))?,
            (None, Some(host)) => copy_parameters(&host, self.student.init::<B>(device)?)?,
            (None, None) => unreachable!("built on the host above"),
        };
        let losses: LossSet<B> = copy_parameters(&host_losses, self.loss.init::<B>(device)?)?;
        Ok(Models {
            student,
            teacher,
            losses,
        })
    }
}

/// Materialises every lazily initialised parameter, in module order (defined in
/// `clipkd-models`, where seeded initialisation needs it too).
pub use clipkd_models::host_init::force_init;

#[cfg(test)]
mod tests {
    use super::*;

    /// `run.plots` is refused exactly when this build cannot draw plots, naming the field and
    /// the feature.
    #[test]
    fn plots_are_refused_only_without_the_feature() {
        let mut config = RunConfig::default();
        config.run.plots = false;
        assert!(plots_unavailable(&config).is_none());
        config.run.plots = true;
        let refused = plots_unavailable(&config);
        assert_eq!(refused.is_some(), !cfg!(feature = "plots"), "{refused:?}");
        if let Some(err) = refused {
            let e = err.to_string();
            assert!(
                e.contains("run.plots") && e.contains("`plots` feature"),
                "{e}"
            );
        }
    }
}
