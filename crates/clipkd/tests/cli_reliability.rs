//! What a long run's operator and a careless user run into, through the `clipkd` binary (CPU,
//! tiny models): two processes on one run directory, a rollback and the resume after it, a
//! diverging run, data that cannot be used (wrong root, half the images missing, malformed CSV
//! lines, an image whose header claims 100000 x 100000 pixels), a damaged latest checkpoint,
//! and an epoch count that overflows.
#![cfg(feature = "flex")]

mod common;
#[path = "common/train_setup.rs"]
mod train_setup;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clipkd_train::checkpoint::list_checkpoints;
use clipkd_train::run_dir::RunLock;
use common::{TempDir, clipkd};
use train_setup::{metric_rows, setup, write_config, write_csv, write_images, write_models};

fn fails(args: &[&str]) -> String {
    let out = clipkd(args);
    assert!(
        !out.status.success(),
        "clipkd {args:?} should fail:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `clipkd args`, asserts success, returns stderr (where progress and notes go).
fn ok_err(args: &[&str]) -> String {
    let out = clipkd(args);
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "clipkd {args:?} failed:\n{e}");
    e
}

fn checkpoint_steps(run: &Path) -> Vec<u64> {
    list_checkpoints(&run.join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_second_process_on_a_run_directory_is_refused_naming_the_holder() {
    let dir = TempDir::new("rel-lock");
    let config = setup(&dir.0, "plots = false");
    let c = s(&config);
    let run = dir.0.join("run");

    // A real second process: a long run holds the directory...
    let mut first = Command::new(env!("CARGO_BIN_EXE_clipkd"))
        .args([
            "distill",
            "--config",
            c,
            "--set",
            "optim.epochs=100000",
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = run.join(".lock");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&lock).map_or(true, |t| !t.contains("pid")) {
        assert!(
            Instant::now() < deadline,
            "the first run never locked {lock:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... so a resume and a fresh start into it both stop at once, naming it.
    let pid = format!("pid {}", first.id());
    for args in [
        vec!["distill", "--config", c, "--resume", "-q"],
        vec!["distill", "--config", c, "-q"],
    ] {
        let e = fails(&args);
        assert!(e.contains("in use by") && e.contains(&pid), "{e}");
    }
    // Killed once it has saved a checkpoint (so the `--resume` at the end has one to take up,
    // however slowly this machine runs the first epoch)...
    let checkpoints = run.join("checkpoints");
    let deadline = Instant::now() + Duration::from_secs(300);
    while list_checkpoints(&checkpoints).map_or(true, |c| c.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the first run saved no checkpoint in {checkpoints:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // ... it leaves no stale lock: the directory is free, and its metrics file was not
    // touched by the refused runs (one row per step, in order).
    let rows = metric_rows(&run);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["step"].as_u64().unwrap(), i as u64 + 1, "{rows:?}");
    }

    // The lock held by this test process: the same refusal, then freedom once released.
    let held = RunLock::acquire(&run).unwrap();
    let e = fails(&["distill", "--config", c, "--resume", "-q"]);
    assert!(
        e.contains(&format!("pid {}", std::process::id())),
        "names this test process: {e}"
    );
    drop(held);
    ok_err(&[
        "distill",
        "--config",
        c,
        "--set",
        "run.stop_after_steps=2",
        "--resume",
        "-q",
    ]);
}

/// Resuming from an older checkpoint with another learning rate makes it the run's present:
/// the later checkpoints move aside, the next plain `--resume` continues the rolled-back run,
/// and metrics.jsonl is one history.
#[test]
fn after_a_rollback_resume_continues_the_run_last_run() {
    let dir = TempDir::new("rel-rollback");
    let config = setup(
        &dir.0,
        "plots = false\ncheckpoint_every_steps = 2\nkeep_checkpoints = 10",
    );
    let c = s(&config);
    let run = dir.0.join("run");
    ok_err(&[
        "distill",
        "--config",
        c,
        "--set",
        "run.stop_after_steps=6",
        "-q",
    ]);
    assert_eq!(checkpoint_steps(&run), [2, 4, 6]);

    // Back to step 2 with a lower learning rate, for two steps.
    let step2 = run.join("checkpoints").join("step-00000002");
    let e = ok_err(&[
        "distill",
        "--config",
        c,
        "--resume",
        s(&step2),
        "--set",
        "optim.lr=1e-4",
        "--set",
        "run.stop_after_steps=4",
    ]);
    assert!(e.contains("rolled back to step 2"), "{e}");
    assert_eq!(checkpoint_steps(&run), [2, 4]);
    let aside = run.join("abandoned").join("from-step-00000002-1");
    assert_eq!(checkpoint_steps(&aside), [4, 6]);
    assert_eq!(
        metric_rows(&aside).len(),
        6,
        "the old history is kept beside"
    );

    // A plain resume continues the rolled-back run (at 1e-4), not the abandoned one.
    ok_err(&[
        "distill",
        "--config",
        c,
        "--resume",
        "--set",
        "optim.lr=1e-4",
        "--set",
        "run.stop_after_steps=6",
        "-q",
    ]);
    assert_eq!(checkpoint_steps(&run), [2, 4, 6]);
    let rows = metric_rows(&run);
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    let lr = |i: usize| rows[i]["lr"].as_f64().unwrap();
    assert!(lr(1) > 1e-3, "step 2 ran at the first lr: {}", lr(1));
    for i in 2..6 {
        assert!(lr(i) <= 1e-4, "step {} ran at {}", i + 1, lr(i));
    }
}

/// Every value of a safetensors file is finite.
fn all_finite(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().iter().all(|(_, t)| match t.dtype() {
        safetensors::Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
        _ => true,
    })
}

/// A run of 3 steps with a checkpoint every step, keeping 2: its directory, config and run.
fn three_steps_checkpointed(name: &str) -> (TempDir, PathBuf, PathBuf) {
    let dir = TempDir::new(name);
    let config = setup(
        &dir.0,
        "plots = false\ncheckpoint_every_steps = 1\nkeep_checkpoints = 2",
    );
    ok_err(&[
        "distill",
        "--config",
        s(&config),
        "--set",
        "run.stop_after_steps=3",
        "-q",
    ]);
    let run = dir.0.join("run");
    (dir, config, run)
}

/// lr 1e8, the loss logged every 100 steps, a checkpoint every step, keep 2: the run stops
/// with an error naming the step and the term, and the checkpoints left are finite.
#[test]
fn a_diverging_run_stops_before_saving_non_finite_weights() {
    let (_dir, config, run) = three_steps_checkpointed("rel-nan");
    let c = s(&config);
    let e = fails(&[
        "distill",
        "--config",
        c,
        "--resume",
        "--set",
        "optim.lr=1e8",
        "--set",
        "optim.epochs=20",
        "--set",
        "run.log_every_steps=100",
        "-q",
    ]);
    assert!(
        e.contains("not finite at step") || e.contains("hold non-finite values"),
        "{e}"
    );
    let steps = checkpoint_steps(&run);
    assert!(!steps.is_empty());
    for (_, path) in list_checkpoints(&run.join("checkpoints")).unwrap() {
        assert!(
            all_finite(&path.join("student.safetensors")),
            "{path:?} holds non-finite weights ({e})"
        );
    }
    let last = *steps.last().unwrap();
    // The error names a step after the last checkpoint.
    let named: u64 = e
        .split("step ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step in {e}"));
    assert!(
        named > last,
        "error at step {named}, last checkpoint {last}: {e}"
    );
}

#[test]
fn data_that_cannot_be_used_fails_before_any_work() {
    let dir = TempDir::new("rel-nodata");
    let config = setup(&dir.0, "plots = false");
    let c = s(&config);
    // A wrong data root: every image is missing.
    let e = fails(&[
        "distill",
        "--config",
        c,
        "--data-root",
        "/no/such/root",
        "-q",
    ]);
    assert!(
        e.contains("no usable training data")
            && e.contains("missing_file")
            && e.contains("/no/such/root/images/"),
        "{e}"
    );
    assert!(!dir.0.join("run").exists(), "nothing was started");
    // An epoch count whose steps cannot be counted.
    let e = fails(&[
        "distill",
        "--config",
        c,
        "--epochs",
        "3074457345618258603",
        "-q",
    ]);
    assert!(e.contains("optim.epochs"), "{e}");
}

/// Half the rows name missing images: with the default limit (10%) the run stops, naming the
/// counts; allowed, it takes every planned step (the epochs go on into the next pass) and the
/// learning rate decays to zero; the skips are shown by cause with file names.
#[test]
fn skipped_samples_are_counted_shown_and_limited() {
    let dir = TempDir::new("rel-skips");
    write_models(&dir.0);
    let mut rows = write_images(&dir.0, 16);
    for i in 0..16 {
        rows.push(format!("a photo of nothing\timages/missing-{i}.bmp"));
    }
    // Two malformed lines (three fields) and a lying PNG header.
    rows.push("a\tb\tc".into());
    rows.push("d\te\tf".into());
    std::fs::write(dir.0.join("images").join("huge.png"), lying_png()).unwrap();
    rows.push("a huge image\timages/huge.png".into());
    write_csv(&dir.0, &rows);
    let config = write_config(&dir.0, "plots = false");
    let c = s(&config);

    let e = fails(&["distill", "--config", c]);
    assert!(
        e.contains("data.max_skipped_fraction") && e.contains("missing_file"),
        "{e}"
    );

    // 33 rows of batches of 4: 8 planned steps per epoch, from 16 usable images.
    let e = ok_err(&[
        "distill",
        "--config",
        c,
        "--set",
        "data.max_skipped_fraction=0.6",
        "--set",
        "optim.epochs=1",
    ]);
    let run = dir.0.join("run");
    let rows = metric_rows(&run);
    assert_eq!(rows.len(), 8, "every planned step is taken");
    assert!(rows[7]["lr"].as_f64().unwrap() < 1e-4, "{}", rows[7]);
    assert!(
        e.contains("2 of 35 data lines dropped") && e.contains("train.csv:"),
        "the dropped CSV lines are reported with their line: {e}"
    );
    assert!(
        e.contains("| skipped ") && e.contains("missing_file "),
        "the progress lines show the pass's skips by cause: {e}"
    );
    assert!(
        e.contains("skipped samples:")
            && e.contains("missing_file")
            && e.contains("too_large")
            && e.contains("malformed_line")
            && e.contains("missing-"),
        "the summary shows the skips by cause with files: {e}"
    );
}

/// A PNG whose header claims 100000 x 100000 RGB pixels (30 GB decoded), 60-odd bytes.
fn lying_png() -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut h = crc32fast::Hasher::new();
        h.update(kind);
        h.update(data);
        out.extend_from_slice(&h.finalize().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn a_damaged_latest_checkpoint_resumes_from_the_previous_one() {
    let (_dir, config, run) = three_steps_checkpointed("rel-damaged");
    let c = s(&config);
    let latest: PathBuf = run.join("checkpoints").join("step-00000003");
    let model = latest.join("model.mpk");
    let len = std::fs::metadata(&model).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    // Named by path: an error that says what is wrong with which file.
    let e = fails(&["distill", "--config", c, "--resume", s(&latest), "-q"]);
    assert!(e.contains("model.mpk") && e.contains("truncated"), "{e}");
    // `--resume` (latest): the previous checkpoint, with a warning.
    let e = ok_err(&[
        "distill",
        "--config",
        c,
        "--resume",
        "--set",
        "run.stop_after_steps=4",
    ]);
    assert!(
        e.contains("skipped damaged checkpoint") && e.contains("resumed from"),
        "{e}"
    );
    assert!(e.contains("step-00000002"), "{e}");
    let steps: Vec<u64> = metric_rows(&run)
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
}

/// `embed` on an image whose header lies: a clear error naming the file, at once, not an
/// allocation abort; and no output file.
#[test]
fn embed_refuses_an_image_whose_header_lies() {
    let dir = TempDir::new("rel-embed");
    write_models(&dir.0);
    let huge = dir.0.join("huge.png");
    std::fs::write(&huge, lying_png()).unwrap();
    let out = dir.0.join("embeddings.safetensors");
    let started = Instant::now();
    let e = fails(&[
        "embed",
        "--model",
        s(&dir.0.join("teacher.json")),
        "--weights",
        s(&dir.0.join("teacher.safetensors")),
        "--image",
        s(&huge),
        "--output",
        s(&out),
    ]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        e.contains("huge.png") && e.contains("100000"),
        "names the file and its claimed size: {e}"
    );
    assert!(!out.exists());
}
