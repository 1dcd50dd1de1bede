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
//! | `manifest.json` | the size and CRC-32 of every other file, checked before a resume |
//!
//! # What survives a crash, at every instant
//! A checkpoint is written into a hidden `.tmp-…` directory next to it, each file flushed to
//! disk, then renamed into place in one step (the commit). Only `step-*` directories count;
//! the highest step is the latest. Every other change keeps at least one complete checkpoint
//! on disk at every instant (once the first save has committed):
//! - pruning renames a checkpoint to `.deleting-…` before deleting it, so a half-deleted
//!   folder is never mistaken for a checkpoint and is removed on the next start;
//! - a save of a step that already has a checkpoint (possible only after a rollback) first
//!   moves the old one to `.replaced-step-…`, then renames the new one into place; killed in
//!   between, the `.replaced-…` copy counts as that step's checkpoint and is put back on the
//!   next start;
//! - the newest checkpoint is never pruned.
//!
//! [`recover_checkpoints`] (run at the start of every run, under the run-directory lock)
//! removes what unfinished saves and prunes left behind. [`find_checkpoint`] checks a
//! checkpoint against its manifest before it is used, and falls back to the previous one
//! when the latest is damaged (a truncated file, a disk error).
//!
//! Records use Burn's `NamedMpkFileRecorder` at full precision, so a resumed run starts from
//! bit-identical weights and optimizer moments.

mod layout;
mod manifest;
mod save;

pub(crate) use layout::list_checkpoints_unfiltered;
pub use layout::{
    find_checkpoint, list_checkpoints, prune_checkpoints, recover_checkpoints, resolve_checkpoint,
};
pub use manifest::{FileCheck, Manifest, verify_checkpoint};
pub(crate) use save::sync_dir;
pub use save::{CheckpointContents, save_checkpoint};

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
use crate::loss_scale::LossScaler;
use crate::optim::{GroupRecord, GroupedAdamW};
use crate::step::{DistillModel, TrainableObjective};
use crate::student::Student;

/// The folder of a run directory that holds its checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

const STATE_FILE: &str = "state.json";
const CONFIG_FILE: &str = "config.toml";
const STUDENT_FILE: &str = crate::student::OPEN_CLIP_WEIGHTS_FILE;
const STUDENT_CONFIG_FILE: &str = crate::student::OPEN_CLIP_CONFIG_FILE;
const MODEL_RECORD: &str = "model";
const OPTIMIZER_RECORD: &str = "optimizer";
const MANIFEST_FILE: &str = "manifest.json";
const MODEL_FILE: &str = "model.mpk";
const OPTIMIZER_FILE: &str = "optimizer.mpk";
/// A save in progress.
const TMP_PREFIX: &str = ".tmp-";
/// A checkpoint being pruned.
const DELETING_PREFIX: &str = ".deleting-";
/// A checkpoint being replaced by a new save of the same step.
const REPLACED_PREFIX: &str = ".replaced-";
/// The marker of a rollback in progress (`.rollback-to-step-00000032`): checkpoints after
/// that step are no longer listed (see [`crate::run_dir`]).
pub(crate) const ROLLBACK_PREFIX: &str = ".rollback-to-";

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
    /// Where the data loader continues (on several nodes: node 0's part of the data).
    pub data_position: DataPosition,
    /// On several nodes (`run.num_nodes > 1`), each reading its own part of the data: where
    /// each node's loader continues, by node rank (empty on one node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_positions: Vec<DataPosition>,
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
    /// The dynamic loss scale of an f16 mixed-precision run (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<LossScaler>,
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
pub fn load_model<B: AutodiffBackend, S: Student<B>, L: TrainableObjective<B>>(
    dir: &Path,
    model: DistillModel<B, S, L>,
    device: &B::Device,
) -> Result<DistillModel<B, S, L>, TrainError> {
    let path = dir.join(MODEL_RECORD);
    let record = FileRecorder::new()
        .load(path.clone(), device)
        .map_err(|e| TrainError::Record {
            path: path.with_extension("mpk"),
            message: format!(
                "cannot be read into this run's student and loss set (written for another \
                 student or loss set, or damaged): {e}"
            ),
        })?;
    Ok(model.load_record(record))
}

/// Loads the optimizer state saved in checkpoint `dir` into `optimizer`, built for the model
/// returned by [`load_model`].
pub fn load_optimizer<B: AutodiffBackend, S: Student<B>, L: TrainableObjective<B>>(
    dir: &Path,
    optimizer: GroupedAdamW<B, DistillModel<B, S, L>>,
    device: &B::Device,
) -> Result<GroupedAdamW<B, DistillModel<B, S, L>>, TrainError> {
    let path = dir.join(OPTIMIZER_RECORD);
    let records: Vec<GroupRecord<B, DistillModel<B, S, L>>> = FileRecorder::new()
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
mod tests;
