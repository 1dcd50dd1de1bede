//! PNG plots of a run: loss terms, learning rate and evaluation metrics over steps.
//!
//! Drawn with `plotters` (bitmap backend) and the DejaVu Sans font embedded in the binary, so
//! they need no system font or library. [`plot_run`] reads a run directory's metrics files and
//! writes `plots/loss.png`, `plots/lr.png` and (when there are evaluations) `plots/eval.png`.
//!
//! Compiled with the crate's `plots` feature (off by default; the `clipkd` CLI has it).

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;

use crate::error::TrainError;
use crate::metrics::{EvalRecord, StepRecord, read_metrics};

/// The folder of a run directory that holds its plots.
pub const PLOTS_DIR: &str = "plots";

/// One line: a name and its `(step, value)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// Draws the plots of `run_dir` from its metrics files; returns the PNG files written.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let (steps, evals) = read_metrics(run_dir)?;
    plot_records(&steps, &evals, &run_dir.join(PLOTS_DIR))
}

/// Draws the plots of these rows into `out_dir`; returns the PNG files written (none when
/// there is no row).
pub fn plot_records(
    steps: &[StepRecord],
    evals: &[EvalRecord],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, TrainError> {
    let mut written = Vec::new();
    if steps.is_empty() && evals.is_empty() {
        return Ok(written);
    }
    std::fs::create_dir_all(out_dir).map_err(|e| TrainError::io("creating", out_dir, e))?;
    if !steps.is_empty() {
        let mut names: Vec<String> = Vec::new();
        for r in steps {
            for name in r.loss.keys() {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        let mut series: Vec<Series> = names
            .iter()
            .map(|name| {
                let points = steps
                    .iter()
                    .filter_map(|r| r.loss.get(name).map(|v| (r.step as f64, *v)))
                    .collect();
                (name.clone(), points)
            })
            .collect();
        if names.len() > 1 {
            series.push((
                "total".into(),
                steps.iter().map(|r| (r.step as f64, r.total)).collect(),
            ));
        }
        let path = out_dir.join("loss.png");
        line_chart(&path, "Loss terms (weighted)", "step", "loss", &series)?;
        written.push(path);

        let path = out_dir.join("lr.png");
        let lr = vec![(
            "lr".to_string(),
            steps.iter().map(|r| (r.step as f64, r.lr)).collect(),
        )];
        line_chart(&path, "Learning rate", "step", "learning rate", &lr)?;
        written.push(path);
    }
    if evals
        .iter()
        .any(|r| r.metrics.keys().any(|n| is_fraction_metric(n)))
    {
        let mut names: Vec<String> = Vec::new();
        for r in evals {
            for name in r.metrics.keys() {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        // Accuracies and recalls share a [0, 1] axis; counts and ranks would flatten them.
        names.retain(|n| is_fraction_metric(n));
        let series: Vec<Series> = names
            .iter()
            .map(|name| {
                let points = evals
                    .iter()
                    .filter_map(|r| r.metrics.get(name).map(|v| (r.step as f64, *v)))
                    .collect();
                (name.clone(), points)
            })
            .collect();
        let path = out_dir.join("eval.png");
        line_chart(&path, "Evaluation", "step", "accuracy / recall", &series)?;
        written.push(path);
    }
    Ok(written)
}

/// Whether an evaluation metric is a fraction (accuracy, recall), not a count or a rank.
fn is_fraction_metric(name: &str) -> bool {
    !(name.ends_with("/images")
        || name.ends_with("/captions")
        || name.ends_with("/skipped")
        || name.ends_with("_rank"))
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the `dejavu` crate.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// A line chart of `series` (non-finite points are left out) as a 1000x600 PNG.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), TrainError> {
    register_font();
    let err = |e: &dyn std::fmt::Display| TrainError::Plot {
        path: path.to_path_buf(),
        what: e.to_string(),
    };
    let finite: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, pts)| {
            (
                n.clone(),
                pts.iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect(),
            )
        })
        .collect();
    let all = finite.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0).abs() * 0.05)
        .max(y1.abs().max(y0.abs()) * 1e-3)
        .max(1e-12);
    let (y0, y1) = (y0 - pad, y1 + pad);

    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(&e))?;
    let magnitude = y0.abs().max(y1.abs());
    let decimals = (-(y1 - y0).log10()).ceil().clamp(0.0, 6.0) as usize + 1;
    let y_format = move |y: &f64| {
        if !(1e-2..1e5).contains(&magnitude) {
            format!("{y:.2e}")
        } else {
            format!("{y:.decimals$}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&y_format)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, points)) in finite.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if finite.len() > 1 || finite.first().is_some_and(|(n, _)| n != "lr") {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn draws_pngs_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let steps: Vec<StepRecord> = (1..=20)
            .map(|s| StepRecord {
                step: s,
                epoch: 0,
                lr: 1e-3 * s as f64 / 20.0,
                loss: BTreeMap::from([
                    ("task".to_string(), 3.0 / s as f64),
                    ("fd".to_string(), 0.5),
                ]),
                total: 3.0 / s as f64 + 0.5,
                grad_norm: None,
                logit_scale: None,
                images_per_s: 1.0,
                step_time_s: 1.0,
                data_wait_s: 0.0,
                samples_seen: s,
                skipped: 0,
            })
            .collect();
        let evals = vec![EvalRecord {
            step: 10,
            epoch: 0,
            metrics: BTreeMap::from([("zeroshot/top1".to_string(), 0.25)]),
            report: serde_json::Value::Null,
        }];
        let files = plot_records(&steps, &evals, dir.path()).unwrap();
        assert_eq!(files.len(), 3);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", f.display());
            assert!(bytes.len() > 5_000, "{} is suspiciously small", f.display());
        }
    }
}
