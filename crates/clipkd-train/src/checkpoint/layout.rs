//! The `checkpoints` folder: listing, choosing (with fallback past a damaged latest),
//! recovering after a crash, and pruning, each keeping a complete checkpoint on disk.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::TrainError;
use crate::fault;

use super::*;

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
