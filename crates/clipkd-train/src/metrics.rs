//! Metrics files of a run: a row per logged step (`metrics.jsonl` or `metrics.csv`) and a row
//! per evaluation (`eval.jsonl`).
//!
//! `metrics.jsonl`, one object per line:
//! ```json
//! {"step":100,"epoch":0,"lr":1e-05,"loss":{"crd":0.41,"fd":0.82,"icl":4.7,"task":4.8},
//!  "total":10.73,"grad_norm":3.2,"logit_scale":14.3,"images_per_s":812.5,"step_time_s":1.26,
//!  "data_wait_s":0.01,"samples_seen":102400,"skipped":0}
//! ```
//! `metrics.csv` has the same fields as columns (`loss/<term>` for the terms). `eval.jsonl`:
//! `{"step":..,"epoch":..,"metrics":{"zeroshot/top1":..},"report":{...}}`.
//!
//! When a run resumes at step `s`, rows after `s` (written after the checkpoint by the
//! interrupted run) are dropped, so the files describe one trajectory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::MetricsFormat;
use crate::error::TrainError;

/// The JSONL metrics file of a run directory.
pub const METRICS_JSONL: &str = "metrics.jsonl";
/// The CSV metrics file of a run directory.
pub const METRICS_CSV: &str = "metrics.csv";
/// The evaluation results of a run directory.
pub const EVAL_JSONL: &str = "eval.jsonl";

/// One logged optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimizer steps done (this row describes step `step - 1`, counted from 0).
    pub step: u64,
    /// The epoch of the step.
    pub epoch: u64,
    /// The learning rate the step used.
    pub lr: f64,
    /// Each weighted loss term (averaged over the step's micro-batches).
    pub loss: BTreeMap<String, f64>,
    /// Their sum, what was minimized.
    pub total: f64,
    /// The global gradient norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// The student's `exp(logit_scale)` after the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_scale: Option<f64>,
    /// Training throughput since the previous logged row.
    pub images_per_s: f64,
    /// Mean wall time of one optimizer step since the previous row.
    pub step_time_s: f64,
    /// Mean time per step spent waiting for the data loader since the previous row.
    pub data_wait_s: f64,
    /// Images seen so far.
    pub samples_seen: u64,
    /// Samples skipped by the loader so far this epoch (missing or corrupt files, ...).
    pub skipped: u64,
}

/// One evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Optimizer steps done when it ran.
    pub step: u64,
    /// The epoch (the one just finished for an end-of-epoch evaluation).
    pub epoch: u64,
    /// Flat named metrics (`zeroshot/top1`, `retrieval/image_to_text_R@1`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// The full report.
    pub report: serde_json::Value,
}

/// Appends rows to a run's metrics files.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    eval_path: PathBuf,
    format: MetricsFormat,
    /// CSV: the term names of the header (fixed by the first row).
    csv_terms: Option<Vec<String>>,
}

impl MetricsWriter {
    /// Opens the files of `run_dir`. A fresh run (`resume_step` `None`) starts them empty; a
    /// resumed one keeps the rows up to `resume_step` and drops later ones.
    pub fn open(
        run_dir: &Path,
        format: MetricsFormat,
        resume_step: Option<u64>,
    ) -> Result<Self, TrainError> {
        fs::create_dir_all(run_dir).map_err(|e| TrainError::io("creating", run_dir, e))?;
        let path = run_dir.join(match format {
            MetricsFormat::Jsonl => METRICS_JSONL,
            MetricsFormat::Csv => METRICS_CSV,
        });
        let eval_path = run_dir.join(EVAL_JSONL);
        let mut csv_terms = None;
        match resume_step {
            None => {
                for p in [&path, &eval_path] {
                    crate::fault::point("create", p);
                    File::create(p).map_err(|e| TrainError::io("creating", p, e))?;
                }
            }
            Some(step) => {
                truncate_after(&path, format, step)?;
                truncate_after(&eval_path, MetricsFormat::Jsonl, step)?;
                if format == MetricsFormat::Csv {
                    csv_terms = csv_header_terms(&path)?;
                }
            }
        }
        Ok(MetricsWriter {
            path,
            eval_path,
            format,
            csv_terms,
        })
    }

    /// The metrics file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a step row.
    pub fn write_step(&mut self, row: &StepRecord) -> Result<(), TrainError> {
        let line = match self.format {
            MetricsFormat::Jsonl => serde_json::to_string(row).expect("a step record serializes"),
            MetricsFormat::Csv => {
                let terms: Vec<String> = row.loss.keys().cloned().collect();
                let mut out = String::new();
                if self.csv_terms.is_none() {
                    out.push_str(&csv_header(&terms));
                    out.push('\n');
                    self.csv_terms = Some(terms);
                }
                let terms = self.csv_terms.as_ref().expect("set above");
                out.push_str(&csv_row(row, terms));
                out
            }
        };
        append_line(&self.path, &line)
    }

    /// Appends an evaluation row.
    pub fn write_eval(&mut self, row: &EvalRecord) -> Result<(), TrainError> {
        let line = serde_json::to_string(row).expect("an eval record serializes");
        append_line(&self.eval_path, &line)
    }
}

fn append_line(path: &Path, line: &str) -> Result<(), TrainError> {
    crate::fault::point("append", path);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io("opening", path, e))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io("writing", path, e))
}

const CSV_FIXED: [&str; 3] = ["step", "epoch", "lr"];
const CSV_TAIL: [&str; 8] = [
    "total",
    "grad_norm",
    "logit_scale",
    "images_per_s",
    "step_time_s",
    "data_wait_s",
    "samples_seen",
    "skipped",
];

/// One CSV line of `fields` (quoted where a field holds a comma, a quote or a line break),
/// without its line end.
fn csv_line<I: IntoIterator<Item = S>, S: AsRef<[u8]>>(fields: I) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(fields)
        .expect("writing a record to memory cannot fail");
    let bytes = w.into_inner().expect("flushing to memory cannot fail");
    let mut line = String::from_utf8(bytes).expect("the fields are UTF-8");
    line.pop();
    line
}

fn csv_header(terms: &[String]) -> String {
    let mut cols: Vec<String> = CSV_FIXED.iter().map(|s| s.to_string()).collect();
    cols.extend(terms.iter().map(|t| format!("loss/{t}")));
    cols.extend(CSV_TAIL.iter().map(|s| s.to_string()));
    csv_line(&cols)
}

fn csv_row(row: &StepRecord, terms: &[String]) -> String {
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let mut cols = vec![
        row.step.to_string(),
        row.epoch.to_string(),
        row.lr.to_string(),
    ];
    cols.extend(terms.iter().map(|t| opt(row.loss.get(t).copied())));
    cols.extend([
        row.total.to_string(),
        opt(row.grad_norm),
        opt(row.logit_scale),
        row.images_per_s.to_string(),
        row.step_time_s.to_string(),
        row.data_wait_s.to_string(),
        row.samples_seen.to_string(),
        row.skipped.to_string(),
    ]);
    csv_line(&cols)
}

/// The records of a CSV file (header first), each with the line it starts on.
fn csv_records(path: &Path) -> Result<Vec<(u64, csv::StringRecord)>, TrainError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| TrainError::Metrics {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    reader
        .records()
        .map(|r| {
            r.map(|rec| (rec.position().map_or(0, csv::Position::line), rec))
                .map_err(|e| TrainError::Metrics {
                    path: path.to_path_buf(),
                    what: e.to_string(),
                })
        })
        .collect()
}

fn csv_header_terms(path: &Path) -> Result<Option<Vec<String>>, TrainError> {
    if !path.exists() {
        return Ok(None);
    }
    Ok(csv_records(path)?.into_iter().next().map(|(_, header)| {
        header
            .iter()
            .filter_map(|c| c.strip_prefix("loss/"))
            .map(str::to_string)
            .collect()
    }))
}

/// Keeps the rows of `path` whose step is at most `step` (and the CSV header).
fn truncate_after(path: &Path, format: MetricsFormat, step: u64) -> Result<(), TrainError> {
    if !path.exists() {
        return Ok(());
    }
    let mut kept = String::new();
    match format {
        MetricsFormat::Jsonl => {
            let text = fs::read_to_string(path).map_err(|e| TrainError::io("reading", path, e))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let row_step = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64));
                if row_step.is_some_and(|s| s <= step) {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
        MetricsFormat::Csv => {
            for (i, (_, record)) in csv_records(path)?.into_iter().enumerate() {
                let row_step: Option<u64> = record.get(0).and_then(|s| s.parse().ok());
                if i == 0 || row_step.is_some_and(|s| s <= step) {
                    kept.push_str(&csv_line(&record));
                    kept.push('\n');
                }
            }
        }
    }
    // A crash leaves the old file or the new one.
    crate::atomic_write::write_atomic(path, kept.as_bytes())
}

/// The step rows of a run directory (from `metrics.jsonl`, else `metrics.csv`) and its
/// evaluation rows.
pub fn read_metrics(run_dir: &Path) -> Result<(Vec<StepRecord>, Vec<EvalRecord>), TrainError> {
    let jsonl = run_dir.join(METRICS_JSONL);
    let csv = run_dir.join(METRICS_CSV);
    let steps = if jsonl.is_file() && fs::metadata(&jsonl).is_ok_and(|m| m.len() > 0) {
        read_jsonl(&jsonl)?
    } else if csv.is_file() {
        read_csv(&csv)?
    } else if jsonl.is_file() {
        Vec::new()
    } else {
        return Err(TrainError::Metrics {
            path: run_dir.to_path_buf(),
            what: format!("no {METRICS_JSONL} or {METRICS_CSV}: is this a run directory?"),
        });
    };
    let eval_path = run_dir.join(EVAL_JSONL);
    let evals = if eval_path.is_file() {
        read_jsonl(&eval_path)?
    } else {
        Vec::new()
    };
    Ok((steps, evals))
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, TrainError> {
    let text = fs::read_to_string(path).map_err(|e| TrainError::io("reading", path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::Metrics {
                path: path.to_path_buf(),
                what: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

fn read_csv(path: &Path) -> Result<Vec<StepRecord>, TrainError> {
    let mut records = csv_records(path)?.into_iter();
    let Some((_, header)) = records.next() else {
        return Ok(Vec::new());
    };
    let cols: Vec<&str> = header.iter().collect();
    let mut out = Vec::new();
    for (line, record) in records {
        let bad = |what: String| TrainError::Metrics {
            path: path.to_path_buf(),
            what: format!("line {line}: {what}"),
        };
        let fields: Vec<&str> = record.iter().collect();
        if fields.len() != cols.len() {
            return Err(bad(format!(
                "{} fields, the header has {}",
                fields.len(),
                cols.len()
            )));
        }
        let mut row = StepRecord {
            step: 0,
            epoch: 0,
            lr: 0.0,
            loss: BTreeMap::new(),
            total: 0.0,
            grad_norm: None,
            logit_scale: None,
            images_per_s: 0.0,
            step_time_s: 0.0,
            data_wait_s: 0.0,
            samples_seen: 0,
            skipped: 0,
        };
        for (col, value) in cols.iter().zip(&fields) {
            let num = || -> Result<f64, TrainError> {
                value
                    .parse::<f64>()
                    .map_err(|_| bad(format!("column {col}: `{value}` is not a number")))
            };
            let opt = || -> Result<Option<f64>, TrainError> {
                if value.is_empty() {
                    Ok(None)
                } else {
                    num().map(Some)
                }
            };
            match *col {
                "step" => row.step = num()? as u64,
                "epoch" => row.epoch = num()? as u64,
                "lr" => row.lr = num()?,
                "total" => row.total = num()?,
                "grad_norm" => row.grad_norm = opt()?,
                "logit_scale" => row.logit_scale = opt()?,
                "images_per_s" => row.images_per_s = num()?,
                "step_time_s" => row.step_time_s = num()?,
                "data_wait_s" => row.data_wait_s = num()?,
                "samples_seen" => row.samples_seen = num()? as u64,
                "skipped" => row.skipped = num()? as u64,
                other => {
                    if let (Some(term), Some(v)) = (other.strip_prefix("loss/"), opt()?) {
                        row.loss.insert(term.to_string(), v);
                    }
                }
            }
        }
        out.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64) -> StepRecord {
        StepRecord {
            step,
            epoch: step / 3,
            lr: 1e-3 * step as f64,
            loss: BTreeMap::from([("task".to_string(), 2.5), ("fd".to_string(), 0.25)]),
            total: 2.75,
            grad_norm: Some(1.5),
            logit_scale: None,
            images_per_s: 100.0,
            step_time_s: 0.5,
            data_wait_s: 0.01,
            samples_seen: step * 8,
            skipped: 0,
        }
    }

    #[test]
    fn rows_round_trip_and_resume_drops_later_rows() {
        for format in [MetricsFormat::Jsonl, MetricsFormat::Csv] {
            let dir = tempfile::tempdir().unwrap();
            let mut w = MetricsWriter::open(dir.path(), format, None).unwrap();
            for s in 1..=5 {
                w.write_step(&row(s)).unwrap();
            }
            w.write_eval(&EvalRecord {
                step: 4,
                epoch: 1,
                metrics: BTreeMap::from([("zeroshot/top1".to_string(), 0.5)]),
                report: serde_json::json!({"zero_shot": {"top1": 0.5}}),
            })
            .unwrap();
            let (steps, evals) = read_metrics(dir.path()).unwrap();
            assert_eq!(steps, (1..=5).map(row).collect::<Vec<_>>(), "{format:?}");
            assert_eq!(evals.len(), 1);
            // Resume at step 3: rows 4, 5 and the eval at 4 are dropped, new rows appended.
            let mut w = MetricsWriter::open(dir.path(), format, Some(3)).unwrap();
            w.write_step(&row(4)).unwrap();
            let (steps, evals) = read_metrics(dir.path()).unwrap();
            assert_eq!(
                steps.iter().map(|r| r.step).collect::<Vec<_>>(),
                [1, 2, 3, 4],
                "{format:?}"
            );
            assert!(evals.is_empty());
        }
    }

    /// A loss named with a comma and a quote keeps its column (the header and the rows are
    /// quoted as CSV), also after a resume.
    #[test]
    fn csv_term_names_with_commas_and_quotes_keep_their_columns() {
        let dir = tempfile::tempdir().unwrap();
        let odd = |step| {
            let mut r = row(step);
            r.loss.insert("fd, \"scaled\"".to_string(), 0.125);
            r
        };
        let mut w = MetricsWriter::open(dir.path(), MetricsFormat::Csv, None).unwrap();
        for s in 1..=3 {
            w.write_step(&odd(s)).unwrap();
        }
        let text = fs::read_to_string(dir.path().join(METRICS_CSV)).unwrap();
        assert!(text.contains("\"loss/fd, \"\"scaled\"\"\""), "{text}");
        assert_eq!(
            read_metrics(dir.path()).unwrap().0,
            (1..=3).map(odd).collect::<Vec<_>>()
        );
        let mut w = MetricsWriter::open(dir.path(), MetricsFormat::Csv, Some(2)).unwrap();
        w.write_step(&odd(3)).unwrap();
        assert_eq!(
            read_metrics(dir.path()).unwrap().0,
            (1..=3).map(odd).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_corrupt_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(METRICS_JSONL), "{\"step\": 1}\n").unwrap();
        let e = read_metrics(dir.path()).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl") && e.contains("line 1"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(read_metrics(empty.path()).is_err());
    }
}
