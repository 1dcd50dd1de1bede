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

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use clipkd_data::loader::DataPosition;
use clipkd_models::{ClipConfig, save_open_clip};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::TrainError;
use crate::fault;
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

/// The step of a checkpoint directory name (`step-00000123`).
fn parse_step(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

fn dir_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, TrainError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| TrainError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| TrainError::io("listing", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_string(), entry.path()));
        }
    }
    Ok(out)
}

/// The complete checkpoints under `dir` (a run's `checkpoints` folder), by increasing step.
///
/// A checkpoint is a `step-N` directory with a `state.json`, or a `.replaced-step-N` one when
/// no `step-N` exists (a save of step `N` over an older one was cut between its two renames).
/// Unfinished saves (`.tmp-…`) and prunes (`.deleting-…`) are ignored, and so are the
/// checkpoints after the step of a rollback in progress.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    let mut all = list_checkpoints_unfiltered(dir)?;
    if let Some((step, _)) = crate::run_dir::rollback_marker(dir)? {
        all.retain(|(s, _)| *s <= step);
    }
    Ok(all)
}

/// [`list_checkpoints`] without the rollback filter.
pub(crate) fn list_checkpoints_unfiltered(dir: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries = dir_entries(dir)?;
    let mut out = Vec::new();
    for (name, path) in &entries {
        let step = match name.strip_prefix(REPLACED_PREFIX) {
            Some(rest) => match parse_step(rest) {
                Some(step) if !dir.join(rest).join(STATE_FILE).is_file() => step,
                _ => continue,
            },
            None => match parse_step(name) {
                Some(step) => step,
                None => continue,
            },
        };
        if path.join(STATE_FILE).is_file() {
            out.push((step, path.clone()));
        }
    }
    out.sort();
    Ok(out)
}

/// Finds a checkpoint (see [`find_checkpoint`]), dropping the notes about damaged ones.
pub fn resolve_checkpoint(spec: &str, run_dir: &Path) -> Result<PathBuf, TrainError> {
    find_checkpoint(spec, run_dir).map(|(path, _)| path)
}

/// Finds a checkpoint: `spec` is `latest` (the latest of `run_dir`), a checkpoint directory,
/// a run directory or its `checkpoints` folder (their latest checkpoint).
///
/// Every candidate is checked with [`verify_checkpoint`]. When the latest checkpoint of a
/// folder is damaged, the previous one is taken and the returned notes say which was passed
/// over and why; a checkpoint named by its own path must be intact.
pub fn find_checkpoint(spec: &str, run_dir: &Path) -> Result<(PathBuf, Vec<String>), TrainError> {
    let start = if spec == "latest" {
        run_dir.to_path_buf()
    } else {
        PathBuf::from(spec)
    };
    if start.join(STATE_FILE).is_file() {
        return match verify_checkpoint(&start) {
            Ok(()) => Ok((start, Vec::new())),
            Err(what) => Err(TrainError::Checkpoint {
                path: start,
                what: format!(
                    "{what}; resume from an earlier checkpoint of its folder (or the run \
                     directory, which takes the latest intact one)"
                ),
            }),
        };
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
    let mut notes = Vec::new();
    for (_, path) in list_checkpoints(&folder)?.into_iter().rev() {
        match verify_checkpoint(&path) {
            Ok(()) => return Ok((path, notes)),
            Err(what) => notes.push(format!(
                "skipped damaged checkpoint {}: {what}",
                path.display()
            )),
        }
    }
    Err(TrainError::Checkpoint {
        path: folder,
        what: if notes.is_empty() {
            "no complete checkpoint (step-* directory with a state.json) here".into()
        } else {
            format!("no intact checkpoint here ({})", notes.join("; "))
        },
    })
}

/// The size and CRC-32 of one file of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheck {
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the content.
    pub crc32: u32,
}

impl FileCheck {
    /// Reads `path` and computes its check.
    pub fn of(path: &Path) -> Result<Self, std::io::Error> {
        let mut file = fs::File::open(path)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(FileCheck {
            bytes,
            crc32: hasher.finalize(),
        })
    }
}

/// `manifest.json`: the check of every other file of a checkpoint, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// File name to check.
    pub files: BTreeMap<String, FileCheck>,
}

/// Checks that a checkpoint is complete and intact before it is used: `state.json` parses, and
/// every file matches the size and CRC-32 of `manifest.json` (checkpoints written before
/// manifests existed are checked for their files only). Returns what is wrong.
pub fn verify_checkpoint(dir: &Path) -> Result<(), String> {
    let state = dir.join(STATE_FILE);
    let text = fs::read_to_string(&state).map_err(|e| format!("{STATE_FILE}: {e}"))?;
    serde_json::from_str::<TrainState>(&text)
        .map_err(|e| format!("{STATE_FILE} line {}: {e}", e.line()))?;
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        for name in [MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE] {
            if !dir.join(name).is_file() {
                return Err(format!("{name} is missing"));
            }
        }
        return Ok(());
    }
    let manifest: Manifest = fs::read_to_string(&manifest_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|e| format!("{MANIFEST_FILE}: {e}"))?;
    for (name, want) in &manifest.files {
        let got = FileCheck::of(&dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
        if got.bytes != want.bytes {
            return Err(format!(
                "{name} is {} bytes where {MANIFEST_FILE} says {} ({})",
                got.bytes,
                want.bytes,
                if got.bytes < want.bytes {
                    "truncated"
                } else {
                    "longer than written"
                }
            ));
        }
        if got.crc32 != want.crc32 {
            return Err(format!(
                "{name} has CRC-32 {:08x} where {MANIFEST_FILE} says {:08x} (damaged)",
                got.crc32, want.crc32
            ));
        }
    }
    Ok(())
}

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
fn sync_files(dir: &Path) -> Result<(), TrainError> {
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
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Cleans a run's `checkpoints` folder after a crash; run at the start of a run, by the
/// process that holds the run directory's lock. Removes unfinished saves (`.tmp-…`) and
/// prunes (`.deleting-…`); a `.replaced-step-N` left by a replacing save cut between its two
/// renames is put back as `step-N` when that is missing (the new copy never committed), and
/// removed otherwise. Returns a note per thing done.
pub fn recover_checkpoints(dir: &Path) -> Result<Vec<String>, TrainError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut notes = Vec::new();
    for (name, path) in dir_entries(dir)? {
        if let Some(rest) = name.strip_prefix(REPLACED_PREFIX) {
            let target = dir.join(rest);
            if target.join(STATE_FILE).is_file() {
                fault::point("remove", &path);
                fs::remove_dir_all(&path).map_err(|e| TrainError::io("removing", &path, e))?;
            } else {
                if target.exists() {
                    fault::point("remove", &target);
                    fs::remove_dir_all(&target)
                        .map_err(|e| TrainError::io("removing", &target, e))?;
                }
                fault::point("rename", &path);
                fs::rename(&path, &target).map_err(|e| TrainError::io("renaming", &path, e))?;
                notes.push(format!(
                    "restored {} (a save that replaced it did not finish)",
                    target.display()
                ));
            }
        } else if name.starts_with(TMP_PREFIX) || name.starts_with(DELETING_PREFIX) {
            fault::point("remove", &path);
            fs::remove_dir_all(&path).map_err(|e| TrainError::io("removing", &path, e))?;
            notes.push(format!(
                "removed {} (left by an interrupted {})",
                path.display(),
                if name.starts_with(TMP_PREFIX) {
                    "save"
                } else {
                    "prune"
                }
            ));
        }
    }
    sync_dir(dir);
    Ok(notes)
}

/// Deletes all but the last `keep` (at least 1) checkpoints under `dir`. Each is first renamed
/// to `.deleting-…` (one atomic step), then deleted: a crash in between leaves a folder that
/// is not a checkpoint and is removed by [`recover_checkpoints`].
pub fn prune_checkpoints(dir: &Path, keep: usize) -> Result<(), TrainError> {
    let all = list_checkpoints(dir)?;
    let excess = all.len().saturating_sub(keep.max(1));
    for (_, path) in all.into_iter().take(excess) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .trim_start_matches(REPLACED_PREFIX)
            .to_string();
        let doomed = dir.join(format!("{DELETING_PREFIX}{name}"));
        fault::point("rename", &path);
        fs::rename(&path, &doomed).map_err(|e| TrainError::io("renaming", &path, e))?;
        sync_dir(dir);
        fault::point("remove", &doomed);
        fs::remove_dir_all(&doomed).map_err(|e| TrainError::io("removing", &doomed, e))?;
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
        for (name, step) in [
            ("step-00000002", 2),
            ("step-00000010", 10),
            (".tmp-step-00000011-1", 11),
        ] {
            fake_checkpoint(&root.join(name), step);
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
        recover_checkpoints(root).unwrap();
        assert!(!root.join(".tmp-step-00000011-1").exists());
        prune_checkpoints(root, 1).unwrap();
        assert!(!root.join("step-00000002").exists());
        assert!(root.join("step-00000010").exists());
        let e = resolve_checkpoint("latest", &root.join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nowhere"), "{e}");
    }

    fn fake_checkpoint(path: &Path, step: u64) {
        fs::create_dir_all(path).unwrap();
        let state = format!(
            r#"{{"step": {step}, "epoch": 0, "data_position": {{"epoch": 0, "batch": 0,
                "sample": 0, "anchor": 0}}, "rng": {{"seed": 0, "next_step": {step}}},
                "samples_seen": 0, "total_steps": 8, "config_hash": "x", "distill": true,
                "clipkd_version": "0"}}"#
        );
        fs::write(path.join(STATE_FILE), state).unwrap();
        for name in [MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE] {
            fs::write(path.join(name), format!("{name} of step {step}")).unwrap();
        }
    }

    /// A save of step 12 over an older step 12, killed between its two renames: the old copy
    /// (`.replaced-…`) is still listed as step 12, is what resume finds, and is put back by
    /// the recovery; the uncommitted new copy is removed.
    #[test]
    fn a_replacing_save_cut_between_its_renames_keeps_the_old_copy() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_checkpoint(&root.join(".replaced-step-00000012"), 12);
        fake_checkpoint(&root.join(".tmp-step-00000012-77"), 12);
        let listed = list_checkpoints(root).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, 12);
        let (found, notes) = find_checkpoint("latest", root).unwrap();
        assert!(found.ends_with(".replaced-step-00000012"), "{found:?}");
        assert!(notes.is_empty(), "{notes:?}");
        let notes = recover_checkpoints(root).unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(root.join("step-00000012").join(STATE_FILE).is_file());
        assert!(!root.join(".replaced-step-00000012").exists());
        assert!(!root.join(".tmp-step-00000012-77").exists());
        // With both copies present, the `.replaced-` one is the leftover.
        fake_checkpoint(&root.join(".replaced-step-00000012"), 12);
        assert_eq!(list_checkpoints(root).unwrap().len(), 1);
        recover_checkpoints(root).unwrap();
        assert!(!root.join(".replaced-step-00000012").exists());
        assert!(root.join("step-00000012").exists());
    }

    /// Pruning renames first: a prune killed halfway leaves a `.deleting-…` folder, which is
    /// not a checkpoint (even with its state.json still there) and is removed on recovery.
    #[test]
    fn a_half_pruned_checkpoint_is_never_listed_and_is_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for step in [2, 4, 6] {
            fake_checkpoint(&root.join(checkpoint_name(step)), step);
        }
        fake_checkpoint(&root.join(".deleting-step-00000001"), 1);
        let steps: Vec<u64> = list_checkpoints(root)
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(steps, [2, 4, 6]);
        prune_checkpoints(root, 0).unwrap();
        let steps: Vec<u64> = list_checkpoints(root)
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(steps, [6], "keep 0 still keeps the newest");
        recover_checkpoints(root).unwrap();
        let left: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["step-00000006"]);
    }

    /// A damaged latest checkpoint is passed over (with a note naming the file and what is
    /// wrong) for the previous one; named by its own path, it is an error.
    #[test]
    fn a_damaged_latest_checkpoint_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for step in [3, 6] {
            let path = root.join(checkpoint_name(step));
            fake_checkpoint(&path, step);
            let mut manifest = Manifest::default();
            for name in [MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE, STATE_FILE] {
                manifest
                    .files
                    .insert(name.into(), FileCheck::of(&path.join(name)).unwrap());
            }
            fs::write(
                path.join(MANIFEST_FILE),
                serde_json::to_string(&manifest).unwrap(),
            )
            .unwrap();
        }
        let latest = root.join(checkpoint_name(6));
        assert_eq!(find_checkpoint("latest", root).unwrap().0, latest);
        // Truncated: named with both sizes.
        fs::write(latest.join(MODEL_FILE), "model").unwrap();
        let (found, notes) = find_checkpoint("latest", root).unwrap();
        assert_eq!(found, root.join(checkpoint_name(3)));
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("model.mpk is 5 bytes") && notes[0].contains("truncated"),
            "{notes:?}"
        );
        let e = find_checkpoint(latest.to_str().unwrap(), root)
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.mpk") && e.contains("truncated"), "{e}");
        // Same length, other bytes: the CRC tells.
        fs::write(latest.join(MODEL_FILE), "model.mpk of step 9").unwrap();
        let (_, notes) = find_checkpoint("latest", root).unwrap();
        assert!(notes[0].contains("CRC-32"), "{notes:?}");
    }
}
