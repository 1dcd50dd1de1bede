//! Crash injection for the fault tests: every file-system change of the run directory
//! (creating, writing, flushing, renaming, removing checkpoints and metrics) goes through
//! [`point`], and the process can be made to die at the `N`-th one.
//!
//! Set `CLIPKD_KILL_AT_FS_OP=N` and the process aborts (`SIGABRT`: no destructor, no flush,
//! like `kill -9`) just before its `N`-th file-system change, counted from 1 in the order the
//! run makes them. `CLIPKD_KILL_AT_FS_OP=list` prints each change (`fs-op N: what path`) to
//! stderr instead, so a test can choose its points. Unset (always, outside tests), [`point`] is
//! one relaxed atomic load and a comparison.
//!
//! `crates/clipkd/tests/cli_faults.rs` kills `clipkd distill` at every point of a run and checks
//! that a complete checkpoint survives and that the resumed run ends with the uninterrupted
//! run's weights.

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms the crash injection.
pub const KILL_AT_ENV: &str = "CLIPKD_KILL_AT_FS_OP";

enum Mode {
    Off,
    List,
    KillAt(u64),
}

fn mode() -> &'static Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    MODE.get_or_init(|| match std::env::var(KILL_AT_ENV) {
        Ok(v) if v == "list" => Mode::List,
        Ok(v) => v.parse().map_or(Mode::Off, Mode::KillAt),
        Err(_) => Mode::Off,
    })
}

static COUNT: AtomicU64 = AtomicU64::new(0);

/// Marks a file-system change about to be made (`what` on `path`): counts it and, when
/// [`KILL_AT_ENV`] names this one, aborts the process before it happens.
pub fn point(what: &str, path: &Path) {
    match mode() {
        Mode::Off => {}
        Mode::List => {
            let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
            eprintln!("fs-op {n}: {what} {}", path.display());
        }
        Mode::KillAt(at) => {
            let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
            if n == *at {
                eprintln!(
                    "fs-op {n}: {what} {}: killed here ({KILL_AT_ENV})",
                    path.display()
                );
                std::process::abort();
            }
        }
    }
}

/// The environment variable that makes a data-parallel peer fail, for the fault tests:
/// `stall:R:S` (local peer `R` stops responding before the `S`-th step it is given, counted
/// from 1 in this process: it sleeps forever, as a hung device would), `fail:R:S` (it fails
/// there with an error) or `exit:R:S` (the whole process aborts there, as a node that is
/// killed). Followers only (`R >= 1`). Unset, [`peer_step`] does nothing.
pub const PEER_FAULT_ENV: &str = "CLIPKD_PEER_FAULT";

/// Marks that data-parallel peer `rank` is about to take the `step`-th step it was given
/// (from 1): stalls or fails it when [`PEER_FAULT_ENV`] says so.
pub(crate) fn peer_step(rank: usize, step: u64) -> Result<(), crate::error::TrainError> {
    static FAULT: OnceLock<Option<(String, usize, u64)>> = OnceLock::new();
    let fault = FAULT.get_or_init(|| {
        let v = std::env::var(PEER_FAULT_ENV).ok()?;
        let mut parts = v.split(':');
        let kind = parts.next()?.to_string();
        Some((
            kind,
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
        ))
    });
    match fault {
        Some((kind, r, s)) if (*r, *s) == (rank, step) => match kind.as_str() {
            "stall" => {
                eprintln!("peer {rank} stalls before its step {step} ({PEER_FAULT_ENV})");
                loop {
                    std::thread::park();
                }
            }
            "exit" => {
                eprintln!(
                    "peer {rank} kills its process before its step {step} ({PEER_FAULT_ENV})"
                );
                std::process::abort();
            }
            _ => Err(crate::error::TrainError::config(
                PEER_FAULT_ENV,
                format!("peer {rank} fails before its step {step}, as asked"),
            )),
        },
        _ => Ok(()),
    }
}
