//! `clipkd teacher-cache` and `clipkd distill --teacher-cache`: a build killed before each of
//! its file-system changes in turn (`CLIPKD_KILL_AT_FS_OP`) and run again ends with the same
//! files as a build that was never interrupted; distilling from the cache takes the steps of
//! distilling from the teacher with the same pool of crops (every logged term within 1e-6);
//! two CPU peers from the cache take the one device's steps; a cache of other data is refused
//! before training.
#![cfg(feature = "flex")]

mod common;
#[path = "common/train_setup.rs"]
mod train_setup;

use std::path::Path;
use std::process::{Command, Output};

use common::{TempDir, ok};
use train_setup::metric_rows;

const KILL_ENV: &str = "CLIPKD_KILL_AT_FS_OP";

/// `clipkd teacher-cache --config CONFIG -o OUT` with 2 crops, shards of 6 rows, f16.
fn build(config: &Path, out: &Path, kill: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipkd"));
    cmd.args(["teacher-cache", "--config"])
        .arg(config)
        .arg("-o")
        .arg(out)
        .args([
            "--augmentations",
            "2",
            "--shard-rows",
            "6",
            "--dtype",
            "f16",
        ]);
    match kill {
        Some(v) => cmd.env(KILL_ENV, v),
        None => cmd.env_remove(KILL_ENV),
    };
    cmd.output().expect("the clipkd binary runs")
}

/// Every file of a cache directory, by name (a continued build leaves no temporary file).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .map(|(name, path)| (name, std::fs::read(path).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn a_killed_build_continues_and_students_distill_from_the_cache() {
    let dir = TempDir::new("cli-teacher-cache");
    let config = train_setup::setup(&dir.0, "");
    let straight = dir.0.join("straight");
    let out = build(&config, &straight, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 16 samples, 2 f16 crops of width 24, the eval view and the caption.
    assert!(
        stdout.contains("16 samples written") && stdout.contains("3 shards"),
        "{stdout}"
    );
    let want = files(&straight);
    assert_eq!(want.len(), 4, "manifest and 3 shards");

    // Count the build's file-system changes, then kill it before each in turn.
    let listed = build(&config, &dir.0.join("listed"), Some("list"));
    let ops = String::from_utf8_lossy(&listed.stderr)
        .lines()
        .filter(|l| l.starts_with("fs-op "))
        .count();
    assert!(ops >= 12, "{ops} file operations");
    println!("killing the build before each of its {ops} file operations");
    for at in 1..=ops {
        let cache = dir.0.join(format!("killed-{at}"));
        let killed = build(&config, &cache, Some(&at.to_string()));
        assert!(
            !killed.status.success(),
            "op {at}: the build should have been killed"
        );
        let again = build(&config, &cache, None);
        assert!(
            again.status.success(),
            "op {at}: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        let got = files(&cache);
        // The manifest records the same build; every shard is byte for byte the same.
        assert_eq!(
            got.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            want.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "op {at}"
        );
        for ((name, a), (_, b)) in got.iter().zip(&want) {
            if name.ends_with(".safetensors") {
                assert!(a == b, "op {at}: {name} differs");
            }
        }
    }

    // Distill from the cache vs from the teacher with the same two crops per sample (f16
    // embeddings: within 1e-2 of the f32 teacher's loss terms).
    let c = config.to_str().unwrap();
    let online = dir.0.join("online");
    ok(&[
        "distill",
        "--config",
        c,
        "-q",
        "-o",
        online.to_str().unwrap(),
        "--set",
        "data.augmentation_pool=2",
    ]);
    let cached = dir.0.join("cached");
    ok(&[
        "distill",
        "--config",
        c,
        "-q",
        "-o",
        cached.to_str().unwrap(),
        "--teacher-cache",
        straight.to_str().unwrap(),
    ]);
    let (a, b) = (metric_rows(&online), metric_rows(&cached));
    assert_eq!(a.len(), 8);
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for (x, y) in a.iter().zip(&b) {
        for (term, v) in x["loss"].as_object().unwrap() {
            let (p, q) = (v.as_f64().unwrap(), y["loss"][term].as_f64().unwrap());
            worst = worst.max((p - q).abs() / p.abs().max(1e-6));
            assert!(
                (p - q).abs() <= 1e-2 * p.abs().max(1e-6),
                "step {}, {term}: {p} online vs {q} from the f16 cache",
                x["step"]
            );
        }
    }

    println!("f16 cache vs online over 8 steps: loss terms within {worst:.1e} relative");

    // Two CPU peers from the cache take the single device's steps (each looks up its rows).
    let peers = dir.0.join("peers");
    ok(&[
        "distill",
        "--config",
        c,
        "-q",
        "-o",
        peers.to_str().unwrap(),
        "--teacher-cache",
        straight.to_str().unwrap(),
        "--devices",
        "cpu,cpu",
    ]);
    for (x, y) in metric_rows(&peers).iter().zip(&b) {
        for (term, v) in y["loss"].as_object().unwrap() {
            let (p, q) = (x["loss"][term].as_f64().unwrap(), v.as_f64().unwrap());
            assert!(
                // Relative to at least 0.1, as in cli_data_parallel.rs (`same_terms`).
                (p - q).abs() <= 1e-5 * q.abs().max(0.1),
                "step {}, {term}: {p} on 2 peers vs {q} on one device",
                x["step"]
            );
        }
    }

    // A cache of other data is refused before the first step, naming the row.
    std::fs::write(
        dir.0.join("train.csv"),
        std::fs::read_to_string(dir.0.join("train.csv"))
            .unwrap()
            .replacen("a photo of a red square", "a photo of a crimson square", 1),
    )
    .unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_clipkd"))
        .args(["distill", "--config", c, "-q", "-o"])
        .arg(dir.0.join("refused"))
        .arg("--teacher-cache")
        .arg(&straight)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("row 0") && stderr.contains("another caption"),
        "{stderr}"
    );
    assert!(!dir.0.join("refused").join("checkpoints").exists());
}
