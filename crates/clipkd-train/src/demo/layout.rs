//! [`DemoLayout`]: where the demo writes its dataset, models, runs, results and plots, and when
//! an existing folder may be replaced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

use super::*;

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
    /// The teacher cache the CLIP-KD student distills from (`DemoConfig::teacher_cache`).
    pub teacher_cache: PathBuf,
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
            teacher_cache: root.join("teacher-cache"),
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
            for dir in [
                &self.data,
                &self.models,
                &root.join("runs"),
                &self.plots,
                &self.teacher_cache,
            ] {
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
