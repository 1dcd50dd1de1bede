//! Writing a checkpoint: into a hidden temporary folder, every file flushed, then committed by
//! one rename.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;

use crate::config::RunConfig;
use crate::error::TrainError;
use crate::fault;
use crate::optim::GroupedAdamW;
use crate::step::{DistillModel, TrainableObjective};
use crate::student::Student;

use super::*;

/// Everything a checkpoint stores.
pub struct CheckpointContents<'a, B: AutodiffBackend, S: Student<B>, L: TrainableObjective<B>> {
    /// The student and loss module.
    pub model: &'a DistillModel<B, S, L>,
    /// The optimizer.
    pub optimizer: &'a GroupedAdamW<B, DistillModel<B, S, L>>,
    /// The run's position.
    pub state: &'a TrainState,
    /// The run config.
    pub config: &'a RunConfig,
}

/// Writes a checkpoint of step `contents.state.step` under `dir` (a run's `checkpoints`
/// folder) atomically, then deletes all but the last `keep` checkpoints (never the one just
/// written). Returns the checkpoint's path. See the module docs for what a crash at any point
/// leaves.
pub fn save_checkpoint<B: AutodiffBackend, S: Student<B>, L: TrainableObjective<B>>(
    dir: &Path,
    contents: CheckpointContents<'_, B, S, L>,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    if !dir.is_dir() {
        fault::point("create", dir);
        fs::create_dir_all(dir).map_err(|e| TrainError::io("creating", dir, e))?;
    }
    let step = contents.state.step;
    let name = checkpoint_name(step);
    let final_path = dir.join(&name);
    let tmp = dir.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
    if tmp.exists() {
        fault::point("remove", &tmp);
        fs::remove_dir_all(&tmp).map_err(|e| TrainError::io("removing", &tmp, e))?;
    }
    fault::point("create", &tmp);
    fs::create_dir_all(&tmp).map_err(|e| TrainError::io("creating", &tmp, e))?;
    write_contents(&tmp, &contents)?;
    sync_files(&tmp)?;
    if final_path.exists() {
        // Only after a rollback: the old copy stays a checkpoint (`.replaced-…`) until the
        // new one is in place.
        let old = dir.join(format!("{REPLACED_PREFIX}{name}"));
        if old.exists() {
            fault::point("remove", &old);
            fs::remove_dir_all(&old).map_err(|e| TrainError::io("removing", &old, e))?;
        }
        fault::point("rename", &final_path);
        fs::rename(&final_path, &old).map_err(|e| TrainError::io("renaming", &final_path, e))?;
        fault::point("rename", &tmp);
        fs::rename(&tmp, &final_path).map_err(|e| TrainError::io("renaming", &tmp, e))?;
        sync_dir(dir);
        fault::point("remove", &old);
        fs::remove_dir_all(&old).map_err(|e| TrainError::io("removing", &old, e))?;
    } else {
        fault::point("rename", &tmp);
        fs::rename(&tmp, &final_path).map_err(|e| TrainError::io("renaming", &tmp, e))?;
    }
    sync_dir(dir);
    prune_checkpoints(dir, keep)?;
    Ok(final_path)
}

fn write_contents<B: AutodiffBackend, S: Student<B>, L: TrainableObjective<B>>(
    dir: &Path,
    contents: &CheckpointContents<'_, B, S, L>,
) -> Result<(), TrainError> {
    // The student's own files (CLIP: open_clip state dict and config).
    let exported = contents.model.student.export(dir)?;
    let recorder = FileRecorder::new();
    let model_path = dir.join(MODEL_RECORD);
    fault::point("write", &dir.join(MODEL_FILE));
    recorder
        .record(contents.model.clone().into_record(), model_path.clone())
        .map_err(|e| TrainError::Record {
            path: model_path.with_extension("mpk"),
            message: e.to_string(),
        })?;
    let optim_path = dir.join(OPTIMIZER_RECORD);
    fault::point("write", &dir.join(OPTIMIZER_FILE));
    recorder
        .record(contents.optimizer.to_records(), optim_path.clone())
        .map_err(|e| TrainError::Record {
            path: optim_path.with_extension("mpk"),
            message: e.to_string(),
        })?;
    fault::point("write", &dir.join(CONFIG_FILE));
    contents.config.save(dir.join(CONFIG_FILE))?;
    let state_path = dir.join(STATE_FILE);
    let json = serde_json::to_string_pretty(contents.state).expect("a train state serializes");
    fault::point("write", &state_path);
    fs::write(&state_path, json).map_err(|e| TrainError::io("writing", &state_path, e))?;
    // Last: the check of everything above.
    let mut manifest = Manifest::default();
    let names = exported.iter().map(String::as_str).chain([
        MODEL_FILE,
        OPTIMIZER_FILE,
        CONFIG_FILE,
        STATE_FILE,
    ]);
    for name in names {
        let path = dir.join(name);
        let check = FileCheck::of(&path).map_err(|e| TrainError::io("reading", &path, e))?;
        manifest.files.insert(name.to_string(), check);
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    fault::point("write", &manifest_path);
    fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest).expect("a manifest serializes"),
    )
    .map_err(|e| TrainError::io("writing", &manifest_path, e))
}

/// Flushes every file of `dir` to disk.
pub(super) fn sync_files(dir: &Path) -> Result<(), TrainError> {
    // One crash point for all: flushing changes nothing a restarted process can see.
    fault::point("flush", dir);
    for entry in fs::read_dir(dir).map_err(|e| TrainError::io("listing", dir, e))? {
        let path = entry.map_err(|e| TrainError::io("listing", dir, e))?.path();
        if path.is_file() {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| TrainError::io("flushing", &path, e))?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Flushes a directory's entries (best effort: not every platform can open a directory).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
