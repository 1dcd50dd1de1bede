//! Checkpoints: everything needed to continue a run exactly, written atomically.
//!
//! A checkpoint is a directory `RUN/checkpoints/step-00000123/` holding:
//!
//! | file | what |
//! |---|---|
//! | `student.safetensors` | the student as an open_clip state dict (loadable by open_clip) |
//! | `student_config.json` | the student's open_clip model config |
//! | `model.mpk` | the Burn record of the student and the loss module (projectors, ICL/AFD scales) |
//! | `optimizer.mpk` | the AdamW state of every parameter group (moments, step counts) |
//! | `state.json` | [`TrainState`]: step, epoch, data position, RNG, config hash |
//! | `config.toml` | the run config |
//!
//! It is written into a hidden `.tmp-…` directory next to it, each file flushed to disk, then
//! renamed into place in one step: a crash leaves either the whole checkpoint or a `.tmp-…`
//! directory, which is ignored and removed by the next save. Only `step-*` directories count,
//! the highest step being the latest; after each save all but the last `keep` are deleted.
//!
//! Records use Burn's `NamedMpkFileRecorder` at full precision, so a resumed run starts from
//! bit-identical weights and optimizer moments.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use clipkd_data::loader::DataPosition;
use clipkd_models::{ClipConfig, save_open_clip};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::TrainError;
use crate::optim::{GroupRecord, GroupedAdamW};
use crate::step::DistillModel;

/// The folder of a run directory that holds its checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

const STATE_FILE: &str = "state.json";
const CONFIG_FILE: &str = "config.toml";
const STUDENT_FILE: &str = "student.safetensors";
const STUDENT_CONFIG_FILE: &str = "student_config.json";
const MODEL_RECORD: &str = "model";
const OPTIMIZER_RECORD: &str = "optimizer";
const TMP_PREFIX: &str = ".tmp-";

type FileRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// Where a run stands: what `state.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// The epoch the next step belongs to.
    pub epoch: u64,
    /// Optimizer steps already taken in that epoch.
    #[serde(default)]
    pub steps_in_epoch: u64,
    /// Where the data loader continues.
    pub data_position: DataPosition,
    /// The backend RNG: reseeded before every step from the run seed and the step, so this is
    /// all of its state.
    pub rng: RngState,
    /// Images seen by the optimizer so far.
    pub samples_seen: u64,
    /// Optimizer steps of the whole run (the schedule's length).
    pub total_steps: u64,
    /// [`RunConfig::trajectory_hash`] of the run's config.
    pub config_hash: String,
    /// Whether the run was a distillation (`true`) or the no-teacher baseline.
    pub distill: bool,
    /// The clipkd version that wrote the checkpoint.
    pub clipkd_version: String,
}

/// The backend RNG's state: the run seed; step `s` runs after `B::seed(step_seed(seed, s))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The run seed.
    pub seed: u64,
    /// The step whose seed comes next.
    pub next_step: u64,
}

/// The backend seed of step `step` of a run seeded `seed` (SplitMix64 of both), so that every
/// random draw of a step (MFD masks, …) depends only on the run seed and the step.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The name of the checkpoint directory of step `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// The complete checkpoints under `dir` (a run's `checkpoints` folder), by increasing step.
/// Temporary directories of unfinished saves are ignored.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| TrainError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| TrainError::io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if path.join(STATE_FILE).is_file() {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Finds a checkpoint: `spec` is `latest` (the latest of `run_dir`), a checkpoint directory,
/// a run directory or its `checkpoints` folder (their latest checkpoint).
pub fn resolve_checkpoint(spec: &str, run_dir: &Path) -> Result<PathBuf, TrainError> {
    let start = if spec == "latest" {
        run_dir.to_path_buf()
    } else {
        PathBuf::from(spec)
    };
    if start.join(STATE_FILE).is_file() {
        return Ok(start);
    }
    if !start.exists() {
        return Err(TrainError::Checkpoint {
            path: start,
            what: "no such checkpoint or run directory".into(),
        });
    }
    let folder = if start.join(CHECKPOINTS_DIR).is_dir() {
        start.join(CHECKPOINTS_DIR)
    } else {
        start.clone()
    };
    list_checkpoints(&folder)?
        .pop()
        .map(|(_, path)| path)
        .ok_or_else(|| TrainError::Checkpoint {
            path: folder,
            what: "no complete checkpoint (step-* directory with a state.json) here".into(),
        })
}

/// Everything a checkpoint stores.
pub struct CheckpointContents<'a, B: AutodiffBackend> {
    /// The student and loss module.
    pub model: &'a DistillModel<B>,
    /// The optimizer.
    pub optimizer: &'a GroupedAdamW<B, DistillModel<B>>,
    /// The run's position.
    pub state: &'a TrainState,
    /// The run config.
    pub config: &'a RunConfig,
}

/// Writes a checkpoint of step `contents.state.step` under `dir` (a run's `checkpoints`
/// folder) atomically, then deletes all but the last `keep` checkpoints and any leftover
/// temporary directory. Returns the checkpoint's path.
pub fn save_checkpoint<B: AutodiffBackend>(
    dir: &Path,
    contents: CheckpointContents<'_, B>,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    fs::create_dir_all(dir).map_err(|e| TrainError::io("creating", dir, e))?;
    remove_temporaries(dir)?;
    let step = contents.state.step;
    let final_path = dir.join(checkpoint_name(step));
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{}-{}",
        checkpoint_name(step),
        std::process::id()
    ));
    fs::create_dir_all(&tmp).map_err(|e| TrainError::io("creating", &tmp, e))?;
    write_contents(&tmp, &contents)?;
    sync_files(&tmp)?;
    if final_path.exists() {
        // A checkpoint of the same step (e.g. from a run resumed from an earlier one).
        let old = dir.join(format!("{TMP_PREFIX}old-{}", checkpoint_name(step)));
        fs::rename(&final_path, &old).map_err(|e| TrainError::io("renaming", &final_path, e))?;
        fs::rename(&tmp, &final_path).map_err(|e| TrainError::io("renaming", &tmp, e))?;
        fs::remove_dir_all(&old).map_err(|e| TrainError::io("removing", &old, e))?;
    } else {
        fs::rename(&tmp, &final_path).map_err(|e| TrainError::io("renaming", &tmp, e))?;
    }
    sync_dir(dir);
    prune_checkpoints(dir, keep)?;
    Ok(final_path)
}

fn write_contents<B: AutodiffBackend>(
    dir: &Path,
    contents: &CheckpointContents<'_, B>,
) -> Result<(), TrainError> {
    let student_path = dir.join(STUDENT_FILE);
    save_open_clip(&contents.model.student, &student_path)?;
    let student_config = dir.join(STUDENT_CONFIG_FILE);
    fs::write(
        &student_config,
        contents.model.student.config().to_open_clip_json(),
    )
    .map_err(|e| TrainError::io("writing", &student_config, e))?;
    let recorder = FileRecorder::new();
    let model_path = dir.join(MODEL_RECORD);
    recorder
        .record(contents.model.clone().into_record(), model_path.clone())
        .map_err(|e| TrainError::Record {
            path: model_path.with_extension("mpk"),
            message: e.to_string(),
        })?;
    let optim_path = dir.join(OPTIMIZER_RECORD);
    recorder
        .record(contents.optimizer.to_records(), optim_path.clone())
        .map_err(|e| TrainError::Record {
            path: optim_path.with_extension("mpk"),
            message: e.to_string(),
        })?;
    contents.config.save(dir.join(CONFIG_FILE))?;
    let state_path = dir.join(STATE_FILE);
    let json = serde_json::to_string_pretty(contents.state).expect("a train state serializes");
    fs::write(&state_path, json).map_err(|e| TrainError::io("writing", &state_path, e))
}

/// Flushes every file of `dir` to disk.
fn sync_files(dir: &Path) -> Result<(), TrainError> {
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
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Removes the temporary directories of unfinished saves.
pub fn remove_temporaries(dir: &Path) -> Result<(), TrainError> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(|e| TrainError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| TrainError::io("listing", dir, e))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TMP_PREFIX))
        {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(|e| TrainError::io("removing", &path, e))?;
        }
    }
    Ok(())
}

/// Deletes all but the last `keep` checkpoints under `dir`.
pub fn prune_checkpoints(dir: &Path, keep: usize) -> Result<(), TrainError> {
    let all = list_checkpoints(dir)?;
    let excess = all.len().saturating_sub(keep.max(1));
    for (_, path) in all.into_iter().take(excess) {
        fs::remove_dir_all(&path).map_err(|e| TrainError::io("removing", &path, e))?;
    }
    Ok(())
}

/// Reads a checkpoint's `state.json` and `config.toml`.
pub fn read_checkpoint_meta(dir: &Path) -> Result<(TrainState, RunConfig), TrainError> {
    let state_path = dir.join(STATE_FILE);
    let text =
        fs::read_to_string(&state_path).map_err(|e| TrainError::io("reading", &state_path, e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        what: format!("{STATE_FILE} line {}: {e}", e.line()),
    })?;
    let config = RunConfig::from_file(dir.join(CONFIG_FILE))?;
    Ok((state, config))
}

/// The student's open_clip model config stored in a checkpoint.
pub fn read_student_config(dir: &Path) -> Result<ClipConfig, TrainError> {
    Ok(ClipConfig::from_open_clip_json(
        dir.join(STUDENT_CONFIG_FILE),
    )?)
}

/// The path of the student's open_clip weights in a checkpoint.
pub fn student_weights_path(dir: &Path) -> PathBuf {
    dir.join(STUDENT_FILE)
}

/// Loads the student and loss module saved in checkpoint `dir` into `model` (same
/// architecture and losses), parameter identities included (the optimizer state refers to
/// them).
pub fn load_model<B: AutodiffBackend>(
    dir: &Path,
    model: DistillModel<B>,
    device: &B::Device,
) -> Result<DistillModel<B>, TrainError> {
    let path = dir.join(MODEL_RECORD);
    let record = FileRecorder::new()
        .load(path.clone(), device)
        .map_err(|e| TrainError::Record {
            path: path.with_extension("mpk"),
            message: format!("{e} (was the checkpoint written with another student or loss set?)"),
        })?;
    Ok(model.load_record(record))
}

/// Loads the optimizer state saved in checkpoint `dir` into `optimizer`, built for the model
/// returned by [`load_model`].
pub fn load_optimizer<B: AutodiffBackend>(
    dir: &Path,
    optimizer: GroupedAdamW<B, DistillModel<B>>,
    device: &B::Device,
) -> Result<GroupedAdamW<B, DistillModel<B>>, TrainError> {
    let path = dir.join(OPTIMIZER_RECORD);
    let records: Vec<GroupRecord<B, DistillModel<B>>> = FileRecorder::new()
        .load(path.clone(), device)
        .map_err(|e| TrainError::Record {
            path: path.with_extension("mpk"),
            message: e.to_string(),
        })?;
    let groups = optimizer.groups().count();
    if records.len() != groups {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            what: format!(
                "the optimizer state has {} parameter groups, this run has {groups}",
                records.len()
            ),
        });
    }
    Ok(optimizer.load_records(records))
}

/// What [`export_student`] wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The checkpoint exported.
    pub checkpoint: PathBuf,
    /// The step of the checkpoint.
    pub step: u64,
    /// The student's model config.
    pub config: ClipConfig,
}

/// Exports the student of checkpoint `dir` as an open_clip state dict (safetensors) at
/// `output`, after loading it into the model its config describes (so the file is known to
/// match). Written to a temporary file and renamed. With `model_config_out`, also writes the
/// open_clip model-config JSON there.
pub fn export_student<B: burn::tensor::backend::Backend>(
    dir: &Path,
    output: &Path,
    model_config_out: Option<&Path>,
    device: &B::Device,
) -> Result<ExportReport, TrainError> {
    let (state, _) = read_checkpoint_meta(dir)?;
    let config = read_student_config(dir)?;
    let model = clipkd_models::load_open_clip::<B>(student_weights_path(dir), &config, device)?;
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| TrainError::io("creating", parent, e))?;
    }
    let mut tmp_name = output.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = output.with_file_name(tmp_name);
    save_open_clip(&model, &tmp)?;
    fs::rename(&tmp, output).map_err(|e| TrainError::io("renaming", &tmp, e))?;
    if let Some(path) = model_config_out {
        fs::write(path, config.to_open_clip_json())
            .map_err(|e| TrainError::io("writing", path, e))?;
    }
    Ok(ExportReport {
        checkpoint: dir.to_path_buf(),
        step: state.step,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_seeds_differ_and_are_stable() {
        assert_ne!(step_seed(0, 0), step_seed(0, 1));
        assert_ne!(step_seed(0, 1), step_seed(1, 1));
        assert_eq!(step_seed(7, 3), step_seed(7, 3));
    }

    #[test]
    fn listing_ignores_temporaries_and_incomplete_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in [
            "step-00000002",
            "step-00000010",
            ".tmp-step-00000011-1",
            "step-00000012",
        ] {
            fs::create_dir_all(root.join(name)).unwrap();
        }
        for name in ["step-00000002", "step-00000010", ".tmp-step-00000011-1"] {
            fs::write(root.join(name).join(STATE_FILE), "{}").unwrap();
        }
        // step-00000012 has no state.json: not a checkpoint.
        let steps: Vec<u64> = list_checkpoints(root)
            .unwrap()
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(steps, [2, 10]);
        assert_eq!(
            resolve_checkpoint("latest", root).unwrap(),
            root.join("step-00000010")
        );
        remove_temporaries(root).unwrap();
        assert!(!root.join(".tmp-step-00000011-1").exists());
        prune_checkpoints(root, 1).unwrap();
        assert!(!root.join("step-00000002").exists());
        assert!(root.join("step-00000010").exists());
        let e = resolve_checkpoint("latest", &root.join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nowhere"), "{e}");
    }
}
