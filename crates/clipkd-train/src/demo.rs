//! `clipkd demo`: a download-free demonstration that distillation helps, run by the real
//! trainer on a rendered dataset.
//!
//! 1. **Data.** [`write_shapes_dataset`] renders captioned shapes ("a small red circle in the
//!    top left corner") into `OUTPUT/data/`: a training CSV of PNG files, and a held-out split
//!    as an image folder by class (zero-shot classification over colour x shape, 30 classes)
//!    with a CSV of its captions (image-text retrieval).
//! 2. **Models.** Two small open_clip ViT configs written to `OUTPUT/models/` (a teacher about
//!    ten times the student's transformer parameters; both use the CLIP tokenizer's 49408-token
//!    vocabulary).
//! 3. **Teacher.** Trained alone (`clipkd train`'s code path: [`TrainMode::Baseline`]) into
//!    `OUTPUT/runs/teacher/`; its final checkpoint's open_clip weights become the teacher.
//! 4. **Students.** The same student config trained twice with the same seed, data order and
//!    steps: without a teacher (the `baseline` loss preset) into `runs/student-no-kd/`, and
//!    with CLIP-KD's recipe (task + CRD + ICL + FD) from the frozen teacher into
//!    `runs/student-clip-kd/`.
//! 5. **Report.** Every run is evaluated on the held-out split by the trainer's evaluation
//!    (zero-shot top-1/top-5 with class-name prompts, retrieval R@1 both ways); the table,
//!    `results.json` and comparison plots go to `OUTPUT/`.
//!
//! Each training run is an ordinary run directory (config, metrics, evaluations, checkpoint,
//! plots) made by [`PreparedRun`], so the demo exercises the CSV dataset, the loader, the
//! training step, the optimizer groups, the schedule, checkpoints and evaluation of the
//! product, at a small size. Sizes, epochs and learning rates are [`DemoConfig`] fields.
//!
//! Compiled with the crate's `demo` feature (off by default; on in the `clipkd` crate's
//! defaults), which brings `plots` and `clipkd-data`'s `shapes` dataset.

mod models;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;
use clipkd_data::DataError;
use clipkd_data::dataset::shapes::{ShapesConfig, ShapesFiles, write_shapes_dataset};
use clipkd_losses::LossPreset;
use clipkd_models::{ClipConfig, load_open_clip, save_open_clip};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::checkpoint::student_weights_path;
use crate::config::{
    DataKind, DeviceSpec, LossKind, LossTermConfig, MetricsFormat, ModelSource, Override,
    RunConfig, TrainMode,
};
use crate::error::TrainError;
use crate::eval::{ClassNames, Templates};
use crate::eval::{EvalConfig, RetrievalConfig, ZeroShotConfig};
use crate::metrics::read_metrics;
use crate::progress::ProgressMode;
use crate::trainer::{PreparedRun, RunSummary, force_init};

pub use models::DemoModel;
pub use report::{DemoReport, DemoRole, DemoRow, DemoTimings, KdGain, MetricSummary};

/// The file that marks a folder as a demo's output, so that a rerun may replace it.
pub const DEMO_MARKER: &str = ".clipkd-demo";

/// The demo's results file in the output folder.
pub const RESULTS_FILE: &str = "results.json";

/// What the demo does: data, models, training lengths. [`DemoConfig::default`] is the standard
/// demo (about 4 minutes on 2 CPU cores); [`DemoConfig::quick`] a run of seconds for tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// The output folder (dataset, runs, results, plots).
    pub output: PathBuf,
    /// The seed of model initialisation, data order and augmentation (the rendered data has
    /// its own, `data.seed`; [`DemoConfig::with_seed`] sets both).
    pub seed: u64,
    /// The rendered dataset.
    pub data: ShapesConfig,
    /// Token positions of both text towers (captions are at most 15 tokens with SOT and EOT;
    /// longer ones would be truncated keeping EOT).
    pub context_length: usize,
    /// The teacher's sizes.
    pub teacher: DemoModel,
    /// The student's sizes.
    pub student: DemoModel,
    /// Images per optimizer step (all three runs).
    pub batch_size: usize,
    /// The teacher's epochs over the training images.
    pub teacher_epochs: u64,
    /// Each student's epochs.
    pub student_epochs: u64,
    /// The teacher's peak learning rate.
    pub teacher_lr: f64,
    /// The students' peak learning rate.
    pub student_lr: f64,
    /// Linear warmup as a fraction of each run's steps (then cosine decay to 0).
    pub warmup_fraction: f64,
    /// Weight of CRD in the CLIP-KD student's loss (paper: 1).
    pub crd_weight: f64,
    /// Weight of ICL (paper: 1).
    pub icl_weight: f64,
    /// Weight of FD. Default (`None`): the paper's 2000 scaled by `teacher.embed_dim / 512`.
    /// FD is a mean over the embedding's elements, so at the paper's width (512) 2000 weighs
    /// each sample's squared feature distance by 2000 / 512 ≈ 3.9; the scaled weight keeps
    /// that at other widths (375 for the demo teacher's 96), where 2000 would let FD drown
    /// the other terms.
    pub fd_weight: Option<f64>,
    /// Evaluations during each run (spread over its epochs; the final one always runs).
    pub evals_per_run: u64,
    /// Data loader threads (0: every core).
    pub workers: usize,
    /// The device name recorded in the run configs (`run.device`); the device itself is the
    /// one [`run_demo`] is given.
    pub device: DeviceSpec,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            output: PathBuf::from("clipkd-demo"),
            seed: 0,
            data: ShapesConfig::default(),
            context_length: 16,
            teacher: DemoModel::teacher(),
            student: DemoModel::student(),
            batch_size: 64,
            teacher_epochs: 12,
            student_epochs: 3,
            teacher_lr: 3e-3,
            student_lr: 3e-3,
            warmup_fraction: 0.1,
            crd_weight: 1.0,
            icl_weight: 1.0,
            fd_weight: None,
            evals_per_run: 3,
            workers: 1,
            device: DeviceSpec::Cpu,
        }
    }
}

impl DemoConfig {
    /// A run of seconds (for tests and CI): 256 training and 60 held-out images, one-block
    /// models of width 32 (teacher) and 16 (student), 2 teacher epochs and 1 per student.
    /// It checks that everything runs, not that distillation helps.
    pub fn quick() -> Self {
        DemoConfig {
            output: PathBuf::from("clipkd-demo-quick"),
            data: ShapesConfig {
                train_samples: 256,
                heldout_samples: 60,
                ..ShapesConfig::default()
            },
            teacher: DemoModel {
                embed_dim: 32,
                vision_width: 32,
                vision_layers: 1,
                head_width: 16,
                patch_size: 8,
                text_width: 32,
                text_layers: 1,
            },
            student: DemoModel {
                embed_dim: 16,
                vision_width: 16,
                vision_layers: 1,
                head_width: 16,
                patch_size: 8,
                text_width: 16,
                text_layers: 1,
            },
            batch_size: 32,
            teacher_epochs: 2,
            student_epochs: 1,
            evals_per_run: 1,
            ..DemoConfig::default()
        }
    }

    /// Sets the training seed and the data seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.data.seed = seed;
        self
    }

    /// Applies `overrides` (dotted paths of this config's JSON form, e.g.
    /// `teacher.vision_width=192` or `data.train_samples=8000`, as `--set` gives them). A path
    /// that names no field, or a value of the wrong type, is an error naming it.
    pub fn with_overrides(self, overrides: &[Override]) -> Result<Self, TrainError> {
        if overrides.is_empty() {
            return Ok(self);
        }
        let mut value = serde_json::to_value(&self)
            .map_err(|e| TrainError::config("demo", format!("cannot represent the config: {e}")))?;
        for o in overrides {
            let mut node = &mut value;
            for part in o.path.split('.') {
                let field = format!("demo.{}", o.path);
                node = match node {
                    Value::Object(map) => map.get_mut(part).ok_or_else(|| {
                        TrainError::config(
                            &field,
                            format!("`{part}` is not a field of the demo config"),
                        )
                    })?,
                    _ => {
                        return Err(TrainError::config(
                            field,
                            format!("`{part}` is inside a value that has no fields"),
                        ));
                    }
                };
            }
            *node = o.value.clone();
        }
        serde_path_to_error::deserialize::<_, DemoConfig>(value)
            .map_err(|e| TrainError::config(format!("demo.{}", e.path()), e.inner().to_string()))
    }

    /// Checks every field, naming the first bad one (`demo.student.text_width`, ...).
    pub fn validate(&self) -> Result<(), TrainError> {
        self.data
            .validate()
            .map_err(|e| TrainError::field("demo.data", e))?;
        if self.output.as_os_str().is_empty() {
            return Err(TrainError::config("demo.output", "must not be empty"));
        }
        if self.context_length < 3 {
            return Err(TrainError::config(
                "demo.context_length",
                format!(
                    "{} leaves no room for a word between SOT and EOT",
                    self.context_length
                ),
            ));
        }
        self.model_configs()?;
        for (field, v) in [
            ("demo.batch_size", self.batch_size as u64),
            ("demo.teacher_epochs", self.teacher_epochs),
            ("demo.student_epochs", self.student_epochs),
        ] {
            if v == 0 {
                return Err(TrainError::config(field, "must be at least 1"));
            }
        }
        if self.batch_size > self.data.train_samples {
            return Err(TrainError::config(
                "demo.batch_size",
                format!(
                    "{} is more than the {} training images",
                    self.batch_size, self.data.train_samples
                ),
            ));
        }
        for (field, v) in [
            ("demo.teacher_lr", self.teacher_lr),
            ("demo.student_lr", self.student_lr),
            ("demo.crd_weight", self.crd_weight),
            ("demo.icl_weight", self.icl_weight),
            ("demo.fd_weight", self.fd_weight()),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TrainError::config(
                    field,
                    format!("{v} must be finite and >= 0"),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return Err(TrainError::config(
                "demo.warmup_fraction",
                format!("{} is not in [0, 1)", self.warmup_fraction),
            ));
        }
        Ok(())
    }

    /// The teacher's and the student's open_clip configs.
    pub fn model_configs(&self) -> Result<(ClipConfig, ClipConfig), TrainError> {
        let size = self.data.image_size;
        Ok((
            self.teacher
                .clip_config(size, self.context_length, "demo.teacher")?,
            self.student
                .clip_config(size, self.context_length, "demo.student")?,
        ))
    }

    /// Optimizer steps per epoch (the loader drops the last incomplete batch).
    pub fn steps_per_epoch(&self) -> u64 {
        (self.data.train_samples / self.batch_size.max(1)) as u64
    }

    /// The FD weight used: [`DemoConfig::fd_weight`], or the paper's scaled to the teacher's
    /// embedding size.
    pub fn fd_weight(&self) -> f64 {
        self.fd_weight
            .unwrap_or(2000.0 * self.teacher.embed_dim as f64 / 512.0)
    }

    /// The CLIP-KD student's loss terms: task (1), CRD, ICL and FD with this config's weights
    /// (the `clip_kd` preset's losses and options).
    pub fn kd_loss_terms(&self) -> Vec<LossTermConfig> {
        [
            (LossKind::Task, 1.0),
            (LossKind::Crd, self.crd_weight),
            (LossKind::Icl, self.icl_weight),
            (LossKind::Fd, self.fd_weight()),
        ]
        .into_iter()
        .map(|(kind, weight)| LossTermConfig {
            kind,
            weight,
            name: None,
            options: Map::new(),
        })
        .collect()
    }
}

/// The paths of a demo's output folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoLayout {
    /// The output folder.
    pub root: PathBuf,
    /// The rendered dataset.
    pub data: PathBuf,
    /// The model configs.
    pub models: PathBuf,
    /// The teacher's run directory.
    pub teacher_run: PathBuf,
    /// The no-KD student's run directory.
    pub baseline_run: PathBuf,
    /// The CLIP-KD student's run directory.
    pub kd_run: PathBuf,
    /// The comparison plots.
    pub plots: PathBuf,
    /// `results.json`.
    pub results: PathBuf,
}

impl DemoLayout {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Self {
        let runs = root.join("runs");
        DemoLayout {
            root: root.to_path_buf(),
            data: root.join("data"),
            models: root.join("models"),
            teacher_run: runs.join("teacher"),
            baseline_run: runs.join("student-no-kd"),
            kd_run: runs.join("student-clip-kd"),
            plots: root.join("plots"),
            results: root.join(RESULTS_FILE),
        }
    }

    /// Makes `root` ready for a fresh demo: creates it, or empties the parts of a previous
    /// demo (recognised by [`DEMO_MARKER`]). Refuses a non-empty folder that is not a demo's,
    /// so that no one's files are deleted.
    pub fn prepare(&self) -> Result<(), TrainError> {
        let root = &self.root;
        if root.exists() {
            let marker = root.join(DEMO_MARKER);
            let mut entries =
                std::fs::read_dir(root).map_err(|e| TrainError::io("listing", root, e))?;
            let empty = entries.next().is_none();
            if !empty && !marker.is_file() {
                return Err(TrainError::config(
                    "demo.output",
                    format!(
                        "{} exists and is not a demo's output (no {DEMO_MARKER} file): choose \
                         another folder with --output, or remove it",
                        root.display()
                    ),
                ));
            }
            for dir in [&self.data, &self.models, &root.join("runs"), &self.plots] {
                if dir.exists() {
                    std::fs::remove_dir_all(dir).map_err(|e| TrainError::io("removing", dir, e))?;
                }
            }
            if self.results.exists() {
                std::fs::remove_file(&self.results)
                    .map_err(|e| TrainError::io("removing", &self.results, e))?;
            }
        }
        std::fs::create_dir_all(root).map_err(|e| TrainError::io("creating", root, e))?;
        let marker = root.join(DEMO_MARKER);
        std::fs::write(
            &marker,
            "This folder is the output of `clipkd demo`; a rerun replaces it.\n",
        )
        .map_err(|e| TrainError::io("writing", &marker, e))?;
        Ok(())
    }
}

/// Runs the whole demo on backend `B` (the teacher's inference on `B::InnerBackend`) and
/// writes `results.json`; `progress` is how the training runs show progress (the demo's own
/// phase lines are printed to stderr unless it is [`ProgressMode::Quiet`]).
pub fn run_demo<B: AutodiffBackend>(
    config: &DemoConfig,
    device: &B::Device,
    progress: ProgressMode,
) -> Result<DemoReport, TrainError> {
    let start = Instant::now();
    config.validate()?;
    let (teacher_cfg, student_cfg) = config.model_configs()?;
    let say = |line: String| {
        if progress != ProgressMode::Quiet {
            eprintln!("{line}");
        }
    };
    let layout = DemoLayout::new(&config.output);
    layout.prepare()?;

    // 1. Data.
    let t = Instant::now();
    say(format!(
        "[1/5] rendering {} training and {} held-out images ({} px) into {}",
        config.data.train_samples,
        config.data.heldout_samples,
        config.data.image_size,
        layout.data.display()
    ));
    let files = write_shapes_dataset(&config.data, &layout.data).map_err(|e| match e {
        DataError::Write { path, source } => TrainError::io("writing", path, source),
        e => TrainError::Data(e),
    })?;
    let data_s = t.elapsed().as_secs_f64();

    // 2. Models.
    std::fs::create_dir_all(&layout.models)
        .map_err(|e| TrainError::io("creating", &layout.models, e))?;
    let teacher_json = layout.models.join("teacher.json");
    let student_json = layout.models.join("student.json");
    for (path, cfg) in [(&teacher_json, &teacher_cfg), (&student_json, &student_cfg)] {
        std::fs::write(path, cfg.to_open_clip_json())
            .map_err(|e| TrainError::io("writing", path, e))?;
    }
    // Both students start from these weights, so that they differ only by the loss.
    let student_init = layout.models.join("student_init.safetensors");
    <B::InnerBackend as Backend>::seed(device, config.seed);
    let initial = student_cfg.init::<B::InnerBackend>(device)?;
    force_init(&initial);
    save_open_clip(&initial, &student_init)?;
    drop(initial);
    let eval = eval_config(&files, config);

    // 3. Teacher.
    let t = Instant::now();
    let teacher_run = run_config(
        config,
        &files,
        &eval,
        &teacher_json,
        &layout.teacher_run,
        config.teacher_epochs,
        config.teacher_lr,
    );
    say(format!(
        "[2/5] training the teacher ({} transformer parameters) for {} steps into {}",
        report::human_count(transformer_params::<B::InnerBackend>(&teacher_cfg, device)),
        config.teacher_epochs * config.steps_per_epoch(),
        layout.teacher_run.display()
    ));
    let teacher_summary = train::<B>(teacher_run, TrainMode::Baseline, device, progress)?;
    let teacher_train_s = t.elapsed().as_secs_f64();
    let teacher_weights = final_weights(&teacher_summary)?;

    // 4. Students: same seed, data order and steps.
    let t = Instant::now();
    let mut baseline_run = run_config(
        config,
        &files,
        &eval,
        &student_json,
        &layout.baseline_run,
        config.student_epochs,
        config.student_lr,
    );
    baseline_run.student.init = Some(student_init.clone());
    say(format!(
        "[3/5] training the student without a teacher ({} transformer parameters) for {} \
         steps into {}",
        report::human_count(transformer_params::<B::InnerBackend>(&student_cfg, device)),
        config.student_epochs * config.steps_per_epoch(),
        layout.baseline_run.display()
    ));
    let baseline_summary = train::<B>(baseline_run, TrainMode::Baseline, device, progress)?;
    let baseline_train_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut kd_run = run_config(
        config,
        &files,
        &eval,
        &student_json,
        &layout.kd_run,
        config.student_epochs,
        config.student_lr,
    );
    kd_run.student.init = Some(student_init);
    kd_run.teacher.model = ModelSource::File(teacher_json.clone());
    kd_run.teacher.weights = Some(teacher_weights.clone());
    kd_run.loss.preset = None;
    kd_run.loss.terms = config.kd_loss_terms();
    say(format!(
        "[4/5] distilling the student from the teacher (CLIP-KD: task + CRD {} + ICL {} + FD \
         {}) into {}",
        config.crd_weight,
        config.icl_weight,
        config.fd_weight(),
        layout.kd_run.display()
    ));
    let kd_summary = train::<B>(kd_run, TrainMode::Distill, device, progress)?;
    let kd_train_s = t.elapsed().as_secs_f64();

    // 5. Final metrics, results and plots.
    say("[5/5] evaluating and writing the results".to_string());
    let t = Instant::now();
    let mut rows = Vec::with_capacity(3);
    for (role, cfg, summary, train_s) in [
        (
            DemoRole::Teacher,
            &teacher_cfg,
            &teacher_summary,
            teacher_train_s,
        ),
        (
            DemoRole::StudentBaseline,
            &student_cfg,
            &baseline_summary,
            baseline_train_s,
        ),
        (DemoRole::StudentKd, &student_cfg, &kd_summary, kd_train_s),
    ] {
        let metrics = final_metrics::<B>(summary, cfg, &eval, device)?;
        rows.push(DemoRow::new::<B>(
            role, cfg, summary, &metrics, train_s, device,
        ));
    }
    let plots = report::comparison_plots(&layout, &rows)?;
    let eval_s = t.elapsed().as_secs_f64();
    let report = DemoReport::new(
        config.clone(),
        layout.clone(),
        files,
        rows,
        DemoTimings {
            data_s,
            teacher_s: teacher_train_s,
            student_no_kd_s: baseline_train_s,
            student_kd_s: kd_train_s,
            final_eval_s: eval_s,
            total_s: start.elapsed().as_secs_f64(),
        },
        plots,
    );
    report.save(&layout.results)?;
    Ok(report)
}

/// The evaluation of every run: zero-shot over the held-out class folders with the dataset's
/// class names and templates, retrieval over the held-out captions (how often is set per run).
fn eval_config(files: &ShapesFiles, config: &DemoConfig) -> EvalConfig {
    EvalConfig {
        zero_shot: Some(ZeroShotConfig {
            root: files.heldout_dir.clone(),
            classnames: ClassNames::File(files.classnames.clone()),
            templates: Templates::File(files.templates.clone()),
        }),
        retrieval: Some(RetrievalConfig::new(
            files.heldout_csv.clone(),
            Some(files.root.clone()),
        )),
        batch_size: 256,
        workers: config.workers,
        preprocess_cfg: None,
        every_epochs: None,
        every_steps: None,
    }
}

/// A run config of the demo: the paper's recipe (AdamW groups, betas, weight decay, cosine
/// schedule) at the demo's size.
fn run_config(
    config: &DemoConfig,
    files: &ShapesFiles,
    eval: &EvalConfig,
    model: &Path,
    output: &Path,
    epochs: u64,
    lr: f64,
) -> RunConfig {
    let steps = epochs * config.steps_per_epoch();
    let mut rc = RunConfig::default();
    rc.data.train_data = Some(files.train_csv.to_string_lossy().into_owned());
    rc.data.data_root = Some(files.root.to_string_lossy().into_owned());
    rc.data.kind = DataKind::Csv;
    rc.data.batch_size = config.batch_size;
    rc.data.workers = config.workers;
    rc.student.model = ModelSource::File(model.to_path_buf());
    rc.teacher.model = ModelSource::File(model.to_path_buf());
    rc.loss.preset = Some(LossPreset::Baseline);
    rc.optim.lr = lr;
    rc.optim.epochs = epochs;
    rc.optim.warmup = (config.warmup_fraction * steps as f64).round() as u64;
    rc.run.seed = config.seed;
    rc.run.output_dir = output.to_path_buf();
    rc.run.checkpoint_at_epoch_end = false;
    rc.run.keep_checkpoints = 1;
    rc.run.log_every_steps = (steps / 50).max(1);
    rc.run.metrics_format = MetricsFormat::Jsonl;
    rc.run.plots = true;
    rc.run.device = config.device;
    let mut eval = eval.clone();
    let every = (epochs / config.evals_per_run.max(1)).max(1);
    eval.every_epochs = (config.evals_per_run > 0).then_some(every);
    rc.eval = eval;
    rc
}

fn train<B: AutodiffBackend>(
    rc: RunConfig,
    mode: TrainMode,
    device: &B::Device,
    progress: ProgressMode,
) -> Result<RunSummary, TrainError> {
    PreparedRun::prepare(rc, mode, None)?
        .with_progress(progress)
        .run::<B>(device)
}

/// The open_clip weights of a run's final checkpoint.
fn final_weights(summary: &RunSummary) -> Result<PathBuf, TrainError> {
    let ckpt = summary
        .checkpoint
        .as_ref()
        .ok_or_else(|| TrainError::Checkpoint {
            path: summary.run_dir.clone(),
            what: "the run wrote no checkpoint".into(),
        })?;
    Ok(student_weights_path(ckpt))
}

/// The evaluation metrics of a run's final model: the run's own evaluation at its last step
/// when it made one, else a fresh evaluation of the final checkpoint.
fn final_metrics<B: AutodiffBackend>(
    summary: &RunSummary,
    config: &ClipConfig,
    eval: &EvalConfig,
    device: &B::Device,
) -> Result<std::collections::BTreeMap<String, f64>, TrainError> {
    let (_, evals) = read_metrics(&summary.run_dir)?;
    if let Some(last) = evals.iter().rev().find(|e| e.step == summary.steps) {
        return Ok(last.metrics.clone());
    }
    let weights = final_weights(summary)?;
    let model = load_open_clip::<B::InnerBackend>(&weights, config, device)?;
    let report = eval.build()?.run(&model, device)?;
    Ok(report.metrics().into_iter().collect())
}

/// Parameters of the model `config` describes, without the token-embedding table (49408 rows,
/// which dominates small models but costs one row lookup per token).
fn transformer_params<B: burn::tensor::backend::Backend>(
    config: &ClipConfig,
    device: &B::Device,
) -> usize {
    report::param_counts::<B>(config, device).map_or(0, |(total, table)| total - table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_validate_and_errors_name_the_field() {
        DemoConfig::default().validate().unwrap();
        DemoConfig::quick().validate().unwrap();
        let c = DemoConfig::default().with_seed(7);
        assert_eq!((c.seed, c.data.seed), (7, 7));

        let mut c = DemoConfig::quick();
        c.batch_size = 10_000;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("demo.batch_size"), "{e}");
        let mut c = DemoConfig::quick();
        c.student.text_width = 20;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("demo.student.text_width"), "{e}");
        let mut c = DemoConfig::quick();
        c.warmup_fraction = 1.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("warmup_fraction")
        );
        let mut c = DemoConfig::quick();
        c.fd_weight = Some(f64::NAN);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("demo.fd_weight")
        );
        let mut c = DemoConfig::quick();
        c.data.image_size = 8;
        assert!(c.validate().unwrap_err().to_string().contains("demo.data"));
        // JSON round trip, and unknown fields are rejected.
        let json = serde_json::to_string(&DemoConfig::default()).unwrap();
        let back: DemoConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, DemoConfig::default());
        assert!(serde_json::from_str::<DemoConfig>(r#"{"batchsize": 3}"#).is_err());
    }

    #[test]
    fn overrides_set_fields_by_path_and_name_bad_ones() {
        let parse = |s: &str| Override::parse(s).unwrap();
        let c = DemoConfig::default()
            .with_overrides(&[
                parse("teacher.vision_width=192"),
                parse("data.train_samples=100"),
                parse("fd_weight=500"),
                parse("data.colours=[\"red\", \"blue\"]"),
            ])
            .unwrap();
        assert_eq!(c.teacher.vision_width, 192);
        assert_eq!(c.data.train_samples, 100);
        assert_eq!(c.fd_weight, Some(500.0));
        assert_eq!(c.data.colours.len(), 2);
        let e = DemoConfig::default()
            .with_overrides(&[parse("teacher.widht=3")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("demo.teacher.widht"), "{e}");
        let e = DemoConfig::default()
            .with_overrides(&[parse("batch_size=\"many\"")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("demo.batch_size"), "{e}");
        let e = DemoConfig::default()
            .with_overrides(&[parse("seed.x=1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("demo.seed.x"), "{e}");
    }

    #[test]
    fn kd_terms_are_the_clip_kd_recipe_with_the_configured_weights() {
        let c = DemoConfig {
            fd_weight: Some(500.0),
            ..DemoConfig::default()
        };
        let mut rc = RunConfig::default();
        rc.loss.terms = c.kd_loss_terms();
        let set = rc
            .loss
            .loss_set_config(TrainMode::Distill, 64, 128)
            .unwrap();
        let names: Vec<_> = set
            .losses
            .iter()
            .map(|l| l.entry_name().to_string())
            .collect();
        assert_eq!(names, ["task", "crd", "icl", "fd"]);
        let weights: Vec<f64> = set.losses.iter().map(|l| l.weight).collect();
        assert_eq!(weights, [1.0, 1.0, 1.0, 500.0]);
        // FD's default weight is the paper's per squared distance: 2000 x 96 / 512.
        assert_eq!(DemoConfig::default().fd_weight(), 375.0);
        // With the paper's weights the terms equal the `clip_kd` preset.
        let paper = DemoConfig {
            fd_weight: Some(2000.0),
            ..DemoConfig::default()
        };
        rc.loss.terms = paper.kd_loss_terms();
        let ours = rc
            .loss
            .loss_set_config(TrainMode::Distill, 64, 128)
            .unwrap();
        assert_eq!(
            serde_json::to_value(&ours).unwrap(),
            serde_json::to_value(clipkd_losses::LossSetConfig::clip_kd(64, 128)).unwrap()
        );
    }

    #[test]
    fn output_folder_is_replaced_only_when_it_is_a_demos() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("mine");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
        let e = DemoLayout::new(&foreign).prepare().unwrap_err().to_string();
        assert!(e.contains("not a demo's output"), "{e}");
        assert!(foreign.join("notes.txt").is_file());

        let out = dir.path().join("demo");
        let layout = DemoLayout::new(&out);
        layout.prepare().unwrap();
        std::fs::create_dir_all(layout.teacher_run.join("checkpoints")).unwrap();
        std::fs::write(&layout.results, "{}").unwrap();
        layout.prepare().unwrap();
        assert!(!layout.teacher_run.exists() && !layout.results.exists());
        assert!(out.join(DEMO_MARKER).is_file());
    }
}
