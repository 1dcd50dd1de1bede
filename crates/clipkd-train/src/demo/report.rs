//! The demo's results: one row per model, the KD gain, timings, `results.json`, the printed
//! table and the comparison plots.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clipkd_data::dataset::shapes::ShapesFiles;
use clipkd_models::ClipConfig;
use serde::{Deserialize, Serialize};

use super::{DemoConfig, DemoLayout};
use crate::error::TrainError;
use crate::metrics::read_metrics;
use crate::plot::{Series, line_chart};
use crate::trainer::RunSummary;

/// The metric names of the table, as the evaluation reports them.
const TOP1: &str = "zeroshot/top1";
const TOP5: &str = "zeroshot/top5";
const I2T_R1: &str = "retrieval/image_to_text_R@1";
const T2I_R1: &str = "retrieval/text_to_image_R@1";

/// Which model a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemoRole {
    /// The larger model trained alone, then frozen as the teacher.
    Teacher,
    /// The student trained without a teacher (task loss only).
    StudentBaseline,
    /// The student distilled with CLIP-KD's losses.
    StudentKd,
}

impl DemoRole {
    /// The label in the table.
    pub fn label(self) -> &'static str {
        match self {
            DemoRole::Teacher => "teacher",
            DemoRole::StudentBaseline => "student (no KD)",
            DemoRole::StudentKd => "student (CLIP-KD)",
        }
    }
}

impl fmt::Display for DemoRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One model's results. Accuracies and recalls are fractions in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoRow {
    /// Which model.
    pub role: DemoRole,
    /// All parameters.
    pub params: usize,
    /// Of which the token-embedding table (vocabulary x text width).
    pub token_table_params: usize,
    /// Optimizer steps trained.
    pub steps: u64,
    /// Epochs trained.
    pub epochs: u64,
    /// Zero-shot top-1 accuracy on the held-out images.
    pub zero_shot_top1: f64,
    /// Zero-shot top-5 accuracy.
    pub zero_shot_top5: f64,
    /// Image-to-text retrieval recall at 1.
    pub image_to_text_r1: f64,
    /// Text-to-image retrieval recall at 1.
    pub text_to_image_r1: f64,
    /// Every final evaluation metric (`zeroshot/...`, `retrieval/...`).
    pub metrics: BTreeMap<String, f64>,
    /// Wall time of the run (training and its evaluations), seconds.
    pub train_time_s: f64,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The final checkpoint.
    pub checkpoint: Option<PathBuf>,
}

impl DemoRow {
    /// The row of a finished run with its final metrics.
    pub fn new<B: AutodiffBackend>(
        role: DemoRole,
        config: &ClipConfig,
        summary: &RunSummary,
        metrics: &BTreeMap<String, f64>,
        train_time_s: f64,
        device: &B::Device,
    ) -> Self {
        let (params, token_table_params) =
            param_counts::<B::InnerBackend>(config, device).unwrap_or((0, 0));
        let get = |name: &str| metrics.get(name).copied().unwrap_or(f64::NAN);
        DemoRow {
            role,
            params,
            token_table_params,
            steps: summary.steps,
            epochs: summary.epochs,
            zero_shot_top1: get(TOP1),
            zero_shot_top5: get(TOP5),
            image_to_text_r1: get(I2T_R1),
            text_to_image_r1: get(T2I_R1),
            metrics: metrics.clone(),
            train_time_s,
            run_dir: summary.run_dir.clone(),
            checkpoint: summary.checkpoint.clone(),
        }
    }
}

/// `(all parameters, token-embedding parameters)` of the model `config` describes.
pub fn param_counts<B: Backend>(
    config: &ClipConfig,
    device: &B::Device,
) -> Result<(usize, usize), TrainError> {
    let model = config.init::<B>(device)?;
    Ok((
        model.num_params(),
        config.text.vocab_size * config.text.width,
    ))
}

/// `1.23M`, `45.6k`, `789`.
pub fn human_count(n: usize) -> String {
    if n >= 1_000_000 {
        format!("{:.2}M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

/// CLIP-KD student minus no-KD student, in percentage points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KdGain {
    /// Zero-shot top-1.
    pub zero_shot_top1: f64,
    /// Zero-shot top-5.
    pub zero_shot_top5: f64,
    /// Image-to-text R@1.
    pub image_to_text_r1: f64,
    /// Text-to-image R@1.
    pub text_to_image_r1: f64,
}

impl KdGain {
    /// `kd - baseline` for each metric, in points.
    pub fn between(baseline: &DemoRow, kd: &DemoRow) -> Self {
        KdGain {
            zero_shot_top1: 100.0 * (kd.zero_shot_top1 - baseline.zero_shot_top1),
            zero_shot_top5: 100.0 * (kd.zero_shot_top5 - baseline.zero_shot_top5),
            image_to_text_r1: 100.0 * (kd.image_to_text_r1 - baseline.image_to_text_r1),
            text_to_image_r1: 100.0 * (kd.text_to_image_r1 - baseline.text_to_image_r1),
        }
    }
}

/// Wall times of the demo's phases, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DemoTimings {
    /// Rendering and writing the dataset.
    pub data_s: f64,
    /// Training (and evaluating) the teacher.
    pub teacher_s: f64,
    /// Training the no-KD student.
    pub student_no_kd_s: f64,
    /// Training the CLIP-KD student.
    pub student_kd_s: f64,
    /// Building the teacher cache the CLIP-KD student distilled from (when it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_cache_s: Option<f64>,
    /// Final evaluations, results and plots.
    pub final_eval_s: f64,
    /// The whole demo.
    pub total_s: f64,
}

/// Mean, sample standard deviation, minimum and maximum of one metric over several runs
/// (e.g. seeds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Number of values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation (0 for one value).
    pub std: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl MetricSummary {
    /// The summary of `values`; `None` when there is none.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Some(MetricSummary {
            n,
            mean,
            std: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// Everything the demo measured; `results.json` is its JSON form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoReport {
    /// The config the demo ran with.
    pub config: DemoConfig,
    /// Where everything is.
    pub layout: DemoLayout,
    /// The dataset's files.
    pub data: ShapesFiles,
    /// Teacher, student without KD, student with CLIP-KD.
    pub rows: Vec<DemoRow>,
    /// CLIP-KD student minus no-KD student, in points.
    pub kd_gain: KdGain,
    /// Phase wall times.
    pub timings: DemoTimings,
    /// The comparison plots written.
    pub plots: Vec<PathBuf>,
    /// CPU threads available to the process (a hint for comparing timings).
    pub available_threads: usize,
    /// The clipkd version.
    pub clipkd_version: String,
}

impl DemoReport {
    /// Assembles the report (the rows in role order: teacher, no KD, CLIP-KD).
    ///
    /// # Panics
    /// If `rows` lacks the no-KD or CLIP-KD student.
    pub fn new(
        config: DemoConfig,
        layout: DemoLayout,
        data: ShapesFiles,
        rows: Vec<DemoRow>,
        timings: DemoTimings,
        plots: Vec<PathBuf>,
    ) -> Self {
        let find = |role| {
            rows.iter()
                .find(|r| r.role == role)
                .expect("the demo has both students")
        };
        let kd_gain = KdGain::between(find(DemoRole::StudentBaseline), find(DemoRole::StudentKd));
        DemoReport {
            config,
            layout,
            data,
            kd_gain,
            rows,
            timings,
            plots,
            available_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            clipkd_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The row of `role`.
    pub fn row(&self, role: DemoRole) -> Option<&DemoRow> {
        self.rows.iter().find(|r| r.role == role)
    }

    /// Writes the report as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| TrainError::Metrics {
            path: path.to_path_buf(),
            what: format!("cannot serialize the demo report: {e}"),
        })?;
        std::fs::write(path, text + "\n").map_err(|e| TrainError::io("writing", path, e))
    }

    /// Reads a report written by [`DemoReport::save`].
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io("reading", path, e))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Metrics {
            path: path.to_path_buf(),
            what: format!("line {}: {e}", e.line()),
        })
    }

    /// The results table alone (Markdown), one row per model.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| model             | params (w/o token table) | zero-shot top-1 | top-5  | I->T R@1 | T->I R@1 | steps | train time |\n",
        );
        out.push_str(
            "|-------------------|--------------------------|-----------------|--------|----------|----------|-------|------------|\n",
        );
        for r in &self.rows {
            let params = format!(
                "{} ({})",
                human_count(r.params),
                human_count(r.params.saturating_sub(r.token_table_params))
            );
            out.push_str(&format!(
                "| {:<17} | {:<24} | {:>14.2}% | {:>5.1}% | {:>7.2}% | {:>7.2}% | {:>5} | {:>8.0} s |\n",
                r.role.label(),
                params,
                100.0 * r.zero_shot_top1,
                100.0 * r.zero_shot_top5,
                100.0 * r.image_to_text_r1,
                100.0 * r.text_to_image_r1,
                r.steps,
                r.train_time_s,
            ));
        }
        out
    }
}

impl fmt::Display for DemoReport {
    /// The table with a title line, the KD gain, timings and where the files are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "clipkd demo: {} training / {} held-out images ({} px, {} classes), seed {}, batch {}, device {}",
            self.data.train_samples,
            self.data.heldout_samples,
            c.data.image_size,
            self.data.classes,
            c.seed,
            c.batch_size,
            c.device
        )?;
        writeln!(f)?;
        write!(f, "{}", self.table())?;
        writeln!(f)?;
        let g = &self.kd_gain;
        writeln!(
            f,
            "CLIP-KD minus no KD: zero-shot top-1 {:+.2}, top-5 {:+.2}, I->T R@1 {:+.2}, T->I R@1 {:+.2} (points)",
            g.zero_shot_top1, g.zero_shot_top5, g.image_to_text_r1, g.text_to_image_r1
        )?;
        let t = &self.timings;
        let cache = t
            .teacher_cache_s
            .map(|s| format!(", teacher cache {s:.0} s"))
            .unwrap_or_default();
        writeln!(
            f,
            "wall time {} (data {:.0} s, teacher {:.0} s, student no KD {:.0} s{cache}, student CLIP-KD {:.0} s, final eval {:.0} s; {} threads)",
            minutes(t.total_s),
            t.data_s,
            t.teacher_s,
            t.student_no_kd_s,
            t.student_kd_s,
            t.final_eval_s,
            self.available_threads
        )?;
        writeln!(f, "results: {}", self.layout.results.display())?;
        for p in &self.plots {
            writeln!(f, "plot: {}", p.display())?;
        }
        writeln!(
            f,
            "runs (metrics, plots, final checkpoints): {}, {}, {}",
            self.layout.teacher_run.display(),
            self.layout.baseline_run.display(),
            self.layout.kd_run.display()
        )
    }
}

/// `5 min 12 s`.
fn minutes(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// Draws the comparison plots into `layout.plots`: zero-shot top-1 and image-to-text R@1 of
/// the three runs over their evaluations, and the task loss of the two students.
pub fn comparison_plots(layout: &DemoLayout, rows: &[DemoRow]) -> Result<Vec<PathBuf>, TrainError> {
    std::fs::create_dir_all(&layout.plots)
        .map_err(|e| TrainError::io("creating", &layout.plots, e))?;
    let mut evals = Vec::new();
    let mut task = Vec::new();
    for r in rows {
        let (steps, records) = read_metrics(&r.run_dir)?;
        evals.push((r.role, records));
        if r.role != DemoRole::Teacher {
            task.push((
                r.role.label().to_string(),
                steps
                    .iter()
                    .filter_map(|s| s.loss.get("task").map(|v| (s.step as f64, *v)))
                    .collect::<Vec<_>>(),
            ));
        }
    }
    let mut written = Vec::new();
    for (metric, file, title) in [
        (
            TOP1,
            "zero_shot_top1.png",
            "Zero-shot top-1 on the held-out shapes",
        ),
        (
            I2T_R1,
            "image_to_text_r1.png",
            "Image-to-text R@1 on the held-out shapes",
        ),
    ] {
        let series: Vec<Series> = evals
            .iter()
            .map(|(role, records)| {
                (
                    role.label().to_string(),
                    records
                        .iter()
                        .filter_map(|e| e.metrics.get(metric).map(|v| (e.step as f64, *v)))
                        .collect(),
                )
            })
            .filter(|(_, points): &Series| !points.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let path = layout.plots.join(file);
        line_chart(&path, title, "optimizer step", "fraction", &series)?;
        written.push(path);
    }
    if task.iter().any(|(_, p)| !p.is_empty()) {
        let path = layout.plots.join("student_task_loss.png");
        line_chart(
            &path,
            "Students' task (CLIP) loss",
            "optimizer step",
            "loss",
            &task,
        )?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_counts() {
        let s = MetricSummary::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.n, s.mean, s.min, s.max), (3, 2.0, 1.0, 3.0));
        assert!((s.std - 1.0).abs() < 1e-12);
        assert_eq!(MetricSummary::of(&[4.0]).unwrap().std, 0.0);
        assert!(MetricSummary::of(&[]).is_none());
        assert_eq!(human_count(1_234_567), "1.23M");
        assert_eq!(human_count(45_600), "45.6k");
        assert_eq!(human_count(789), "789");
        assert_eq!(minutes(312.4), "5 min 12 s");
        assert_eq!(minutes(42.0), "42 s");
    }
}
