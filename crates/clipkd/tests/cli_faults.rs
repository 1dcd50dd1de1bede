//! Crashes at every instant of a run: `clipkd distill` is killed (SIGABRT, no cleanup) just
//! before each of its file-system changes in turn (`CLIPKD_KILL_AT_FS_OP`, see
//! `clipkd_train::fault`), then resumed. At every point, once the first checkpoint has
//! committed, a complete checkpoint is found; and the resumed run ends with exactly the
//! weights and per-step losses of the run that was never interrupted. The harshest settings:
//! `keep_checkpoints = 1`; 3 epochs of 2 steps with a checkpoint every 3 steps, so that one
//! save falls inside an epoch and the last one on a step that is an epoch end, a periodic
//! checkpoint and the end of the run at once.
#![cfg(feature = "flex")]

mod common;
#[path = "common/train_setup.rs"]
mod train_setup;

use std::path::Path;
use std::process::{Command, Output};

use common::TempDir;
use train_setup::{metric_rows, write_config, write_csv, write_images, write_models};

const KILL_ENV: &str = "CLIPKD_KILL_AT_FS_OP";

fn distill(config: &Path, out: &Path, resume: bool, kill: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipkd"));
    cmd.args(["distill", "--config"])
        .arg(config)
        .arg("--output")
        .arg(out)
        .args(["--set", "optim.epochs=3", "-q"]);
    if resume {
        cmd.arg("--resume");
    }
    match kill {
        Some(v) => cmd.env(KILL_ENV, v),
        None => cmd.env_remove(KILL_ENV),
    };
    cmd.output().expect("the clipkd binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Per-step totals and the final student's bytes of a finished run.
fn outcome(run: &Path) -> (Vec<(u64, f64)>, Vec<u8>) {
    let rows: Vec<(u64, f64)> = metric_rows(run)
        .iter()
        .map(|r| (r["step"].as_u64().unwrap(), r["total"].as_f64().unwrap()))
        .collect();
    let weights = std::fs::read(
        run.join("checkpoints")
            .join("step-00000006")
            .join("student.safetensors"),
    )
    .unwrap();
    (rows, weights)
}

const STEPS: u64 = 6;

#[test]
fn killed_at_every_file_operation_a_run_resumes_to_the_same_end() {
    let dir = TempDir::new("faults");
    write_models(&dir.0);
    let rows = write_images(&dir.0, 8);
    write_csv(&dir.0, &rows);
    let config = write_config(
        &dir.0,
        "plots = false\ncheckpoint_every_steps = 3\nkeep_checkpoints = 1",
    );

    let reference = dir.0.join("reference");
    let o = distill(&config, &reference, false, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let (ref_rows, ref_weights) = outcome(&reference);
    assert_eq!(
        ref_rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=STEPS).collect::<Vec<u64>>()
    );

    // Every file-system change of the run, in order.
    let listed = dir.0.join("listed");
    let o = distill(&config, &listed, false, Some("list"));
    assert!(o.status.success(), "{}", stderr(&o));
    let ops: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.starts_with("fs-op "))
        .map(String::from)
        .collect();
    assert!(ops.len() > 20, "{ops:#?}");
    // Each step is saved once, even where an epoch end and a periodic checkpoint coincide.
    for step in [3, 6] {
        let commits = ops
            .iter()
            .filter(|l| l.contains("rename") && l.contains(&format!(".tmp-step-{step:08}-")))
            .count();
        assert_eq!(commits, 1, "step {step} saved {commits} times: {ops:#?}");
    }
    assert!(
        ops.iter().any(|l| l.contains(".deleting-step-00000003")),
        "the first checkpoint is pruned by rename: {ops:#?}"
    );
    let first_commit = ops
        .iter()
        .position(|l| l.contains("rename") && l.contains(".tmp-step-"))
        .expect("a checkpoint commit")
        + 1;

    // Kill before each operation in turn (two runs at a time: this takes a minute).
    let check = |k: usize| {
        let op = &ops[k - 1];
        let out = dir.0.join(format!("killed-{k}"));
        let o = distill(&config, &out, false, Some(&k.to_string()));
        assert!(
            !o.status.success(),
            "not killed at op {k} ({op}): {}",
            stderr(&o)
        );
        let resumed = distill(&config, &out, true, None);
        if !resumed.status.success() {
            let e = stderr(&resumed);
            assert!(
                k <= first_commit && e.contains("no complete checkpoint"),
                "killed before op {k} ({op}), after the first checkpoint committed (op \
                 {first_commit}), and resume fails: {e}"
            );
            let fresh = distill(&config, &out, false, None);
            assert!(fresh.status.success(), "op {k}: {}", stderr(&fresh));
        }
        let (rows, weights) = outcome(&out);
        assert_eq!(
            rows, ref_rows,
            "killed before op {k} ({op}): the metrics differ"
        );
        assert!(
            weights == ref_weights,
            "killed before op {k} ({op}): the final weights differ"
        );
        std::fs::remove_dir_all(&out).unwrap();
    };
    std::thread::scope(|scope| {
        let check = &check;
        let n = ops.len();
        let odd = scope.spawn(move || (1..=n).step_by(2).for_each(check));
        (2..=n).step_by(2).for_each(check);
        odd.join().unwrap();
    });
}
