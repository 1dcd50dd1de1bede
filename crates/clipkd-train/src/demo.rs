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

mod config;
mod layout;
mod models;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use clipkd_data::DataError;
use clipkd_data::dataset::shapes::{ShapesFiles, write_shapes_dataset};
use clipkd_losses::LossPreset;
use clipkd_models::{ClipConfig, load_open_clip, save_open_clip};

use crate::checkpoint::student_weights_path;
use crate::config::{DataKind, MetricsFormat, ModelSource, RunConfig, TrainMode};
use crate::error::TrainError;
use crate::eval::{ClassNames, Templates};
use crate::eval::{EvalConfig, RetrievalConfig, ZeroShotConfig};
use crate::metrics::read_metrics;
use crate::progress::ProgressMode;
use crate::teacher_cache::{CacheOptions, build_teacher_cache};
use crate::trainer::{PreparedRun, RunSummary};

pub use config::DemoConfig;
pub use layout::DemoLayout;
pub use models::DemoModel;
pub use report::{DemoReport, DemoRole, DemoRow, DemoTimings, KdGain, MetricSummary};

/// The file that marks a folder as a demo's output, so that a rerun may replace it.
pub const DEMO_MARKER: &str = ".clipkd-demo";

/// The demo's results file in the output folder.
pub const RESULTS_FILE: &str = "results.json";

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
    // Drawn on the CPU: the same initial student on every backend.
    let initial = student_cfg.init_seeded::<B::InnerBackend>(config.seed, device)?;
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
    let mut teacher_cache_s = None;
    if let Some(crops) = config.teacher_cache {
        let t = Instant::now();
        say(format!(
            "[4/5] storing the teacher's outputs for {crops} crops per sample in {}",
            layout.teacher_cache.display()
        ));
        let options = CacheOptions::new(&layout.teacher_cache, crops);
        build_teacher_cache::<B::InnerBackend>(&kd_run, &options, device, |_, _| {})?;
        kd_run.teacher.cache = Some(layout.teacher_cache.clone());
        teacher_cache_s = Some(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
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
            teacher_cache_s,
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
    rc.run.precision = config.precision;
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
mod tests;
