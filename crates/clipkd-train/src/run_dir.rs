//! The run directory as one process's property: an exclusive lock, and rollbacks that keep one
//! history.
//!
//! # One process per run directory
//! [`RunLock::acquire`] takes an exclusive OS lock (`flock` on Unix, `LockFileEx` on Windows,
//! through `std::fs::File::try_lock`) on `RUN/.lock` for the whole run. The OS releases it
//! when the process ends, however it ends (a `kill -9` leaves no stale lock, unlike a pid
//! file). A second run or resume into a locked directory stops at once with an error naming
//! the holder (pid, host, start time, command line, written into the lock file by the holder).
//! Readers (`clipkd export`, `eval`, `plot`) take no lock: checkpoints appear by atomic renames.
//! Network file systems honour `flock` only where the server supports it (NFSv4 does).
//!
//! # Rollback
//! Resuming from a checkpoint older than the run directory's latest (`--resume
//! RUN/checkpoints/step-00000032`) makes it the run's present: the newer checkpoints are moved
//! to `RUN/abandoned/from-step-00000032-K/checkpoints/` together with a copy of the metrics
//! files as they were, and the metrics rows after step 32 are dropped. The next `--resume`
//! continues the run the user last ran, and `metrics.jsonl` stays one history. The abandoned
//! branch stays resumable by path (into its own folder).
//!
//! The move is atomic: a marker file `checkpoints/.rollback-to-step-…` is written first, and
//! from then on the newer checkpoints are not listed; a crash before the marker is removed is
//! finished by [`recover_run_dir`] at the next start.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checkpoint::{
    CHECKPOINTS_DIR, ROLLBACK_PREFIX, checkpoint_name, list_checkpoints_unfiltered,
    recover_checkpoints, sync_dir,
};
use crate::error::TrainError;
use crate::fault;
use crate::metrics::{EVAL_JSONL, METRICS_CSV, METRICS_JSONL};

/// The lock file of a run directory.
pub const LOCK_FILE: &str = ".lock";
/// The folder of a run directory that receives the checkpoints a rollback left behind.
pub const ABANDONED_DIR: &str = "abandoned";

/// An exclusive lock on a run directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Locks `run_dir` (created if needed) for this process, or fails naming the process that
    /// holds it.
    pub fn acquire(run_dir: &Path) -> Result<Self, TrainError> {
        fs::create_dir_all(run_dir).map_err(|e| TrainError::io("creating", run_dir, e))?;
        let path = run_dir.join(LOCK_FILE);
        // Not truncated on open: the holder's description must survive a failed attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TrainError::io("opening", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(TrainError::RunDirLocked {
                    path: run_dir.to_path_buf(),
                    holder: describe_holder(holder.trim()),
                });
            }
            Err(TryLockError::Error(e)) => return Err(TrainError::io("locking", &path, e)),
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let command: Vec<String> = std::env::args().collect();
        let text = format!(
            "pid {} on {} since unix time {now}: {}\n",
            std::process::id(),
            hostname(),
            command.join(" ")
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(|e| TrainError::io("writing", &path, e))?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn describe_holder(text: &str) -> String {
    if text.is_empty() {
        return "another process (it has not written its name yet)".into();
    }
    // "pid P on H since unix time T: CMD" -> add how long ago T was.
    if let Some((head, cmd)) = text.split_once(": ")
        && let Some(t) = head
            .rsplit_once("unix time ")
            .and_then(|(_, t)| t.parse::<u64>().ok())
    {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(t, |d| d.as_secs());
        return format!(
            "{} ({} s ago): {cmd}",
            head.replace(" since unix time ", ", started at unix time "),
            now.saturating_sub(t)
        );
    }
    text.to_string()
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

/// Finishes what a crash interrupted in `run_dir` (under its lock): a rollback whose marker is
/// still there, unfinished saves and prunes of checkpoints. Returns a note per thing done.
pub fn recover_run_dir(run_dir: &Path) -> Result<Vec<String>, TrainError> {
    let checkpoints = run_dir.join(CHECKPOINTS_DIR);
    let mut notes = Vec::new();
    if let Some((step, marker)) = rollback_marker(&checkpoints)? {
        let target = fs::read_to_string(&marker)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty() && !t.contains(['/', '\\']))
            .map_or_else(
                || new_abandoned_dir(run_dir, step),
                |t| run_dir.join(ABANDONED_DIR).join(t),
            );
        finish_rollback(run_dir, step, &target, &marker)?;
        notes.push(format!(
            "finished an interrupted rollback to step {step}: later checkpoints are in {}",
            target.display()
        ));
    }
    notes.extend(recover_checkpoints(&checkpoints)?);
    Ok(notes)
}

/// The step and path of an unfinished rollback's marker in a `checkpoints` folder.
pub fn rollback_marker(checkpoints: &Path) -> Result<Option<(u64, PathBuf)>, TrainError> {
    if !checkpoints.is_dir() {
        return Ok(None);
    }
    let entries =
        fs::read_dir(checkpoints).map_err(|e| TrainError::io("listing", checkpoints, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io("listing", checkpoints, e))?;
        if let Some(step) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(ROLLBACK_PREFIX))
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            return Ok(Some((step, entry.path())));
        }
    }
    Ok(None)
}

/// Makes step `step` the present of `run_dir` (see the module docs): the checkpoints after it
/// are moved to a new `abandoned/from-step-…` folder with a copy of the metrics files. Returns
/// that folder, or `None` when no checkpoint is newer.
pub fn roll_back_to(run_dir: &Path, step: u64) -> Result<Option<PathBuf>, TrainError> {
    let checkpoints = run_dir.join(CHECKPOINTS_DIR);
    if !list_checkpoints_unfiltered(&checkpoints)?
        .iter()
        .any(|(s, _)| *s > step)
    {
        return Ok(None);
    }
    let target = new_abandoned_dir(run_dir, step);
    let marker = checkpoints.join(format!("{ROLLBACK_PREFIX}{}", checkpoint_name(step)));
    // The commit point: from here on the later checkpoints are not listed. The marker names
    // the folder, so that a crash is finished into the same one.
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a folder name of ours")
        .to_string();
    fault::point("write", &marker);
    fs::write(&marker, name).map_err(|e| TrainError::io("writing", &marker, e))?;
    sync_dir(&checkpoints);
    finish_rollback(run_dir, step, &target, &marker)?;
    Ok(Some(target))
}

/// `RUN/abandoned/from-step-N-K` with the first K not taken.
fn new_abandoned_dir(run_dir: &Path, step: u64) -> PathBuf {
    let root = run_dir.join(ABANDONED_DIR);
    let base = format!("from-{}", checkpoint_name(step));
    (1..)
        .map(|k| root.join(format!("{base}-{k}")))
        .find(|p| !p.exists())
        .expect("some K is free")
}

fn finish_rollback(
    run_dir: &Path,
    step: u64,
    target: &Path,
    marker: &Path,
) -> Result<(), TrainError> {
    let checkpoints = run_dir.join(CHECKPOINTS_DIR);
    let target_ckpts = target.join(CHECKPOINTS_DIR);
    fault::point("create", &target_ckpts);
    fs::create_dir_all(&target_ckpts).map_err(|e| TrainError::io("creating", &target_ckpts, e))?;
    // Copies of the files as they were (the rows after `step` are dropped from the run's own
    // files when it resumes); a copy a crash cut short is made again.
    for name in [METRICS_JSONL, METRICS_CSV, EVAL_JSONL, "config.toml"] {
        let from = run_dir.join(name);
        if from.is_file() {
            let to = target.join(name);
            let partial = target.join(format!(".{name}.partial"));
            if !to.exists() {
                fault::point("write", &partial);
                fs::copy(&from, &partial).map_err(|e| TrainError::io("copying", &from, e))?;
                fault::point("rename", &partial);
                fs::rename(&partial, &to).map_err(|e| TrainError::io("renaming", &partial, e))?;
            }
        }
    }
    for (s, path) in list_checkpoints_unfiltered(&checkpoints)? {
        if s > step {
            let to = target_ckpts.join(path.file_name().expect("a checkpoint has a name"));
            fault::point("rename", &path);
            fs::rename(&path, &to).map_err(|e| TrainError::io("moving", &path, e))?;
        }
    }
    sync_dir(&checkpoints);
    fault::point("remove", marker);
    fs::remove_file(marker).map_err(|e| TrainError::io("removing", marker, e))?;
    sync_dir(&checkpoints);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = RunLock::acquire(&run).unwrap();
        let e = RunLock::acquire(&run).unwrap_err().to_string();
        assert!(e.contains(&run.display().to_string()), "{e}");
        assert!(
            e.contains(&format!("pid {}", std::process::id())),
            "names the holder: {e}"
        );
        drop(first);
        RunLock::acquire(&run).expect("free once the holder is gone");
    }
}
