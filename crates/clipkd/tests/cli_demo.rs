//! `clipkd demo --quick` end to end through the binary (CPU, tiny models, a few seconds): the
//! table, `results.json`, the dataset, the three runs and the plots are produced with sane
//! values; a rerun replaces the previous output; a folder that is not a demo's is refused;
//! `--print-config` and `--set` assemble the config.
//!
//! The KD margin itself is not asserted here: the quick run is far too short for it to mean
//! anything. It is measured over three seeds of the standard demo in `docs/demo.md`.
#![cfg(feature = "flex")]

mod common;

use common::{TempDir, clipkd, ok};

use std::path::{Path, PathBuf};

use serde_json::Value;

fn fraction(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!((0.0..=1.0).contains(&x), "{what} = {x} is not a fraction");
    x
}

fn checkpoint_weights(run: &Path) -> PathBuf {
    let ckpts: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(ckpts.len(), 1, "one final checkpoint in {}", run.display());
    ckpts[0].join("student.safetensors")
}

#[test]
fn quick_demo_prints_the_table_and_writes_results() {
    let dir = TempDir::new("cli-demo");
    let out = dir.0.join("demo");
    let out_s = out.to_str().unwrap();
    let stdout = ok(&[
        "demo", "--quick", "--quiet", "--output", out_s, "--seed", "3",
    ]);

    // The table: a header and one row per model, then the gain and wall-time lines.
    assert!(
        stdout.contains("| model")
            && stdout.contains("zero-shot top-1")
            && stdout.contains("T->I R@1"),
        "{stdout}"
    );
    for label in ["| teacher", "| student (no KD)", "| student (CLIP-KD)"] {
        assert_eq!(stdout.matches(label).count(), 1, "{label} in:\n{stdout}");
    }
    assert!(stdout.contains("CLIP-KD minus no KD"), "{stdout}");
    assert!(stdout.contains("wall time"), "{stdout}");
    assert!(stdout.contains("seed 3"), "{stdout}");

    // results.json.
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = results["rows"].as_array().unwrap();
    let roles: Vec<&str> = rows.iter().map(|r| r["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["teacher", "student_baseline", "student_kd"]);
    // Quick: 256 images / batch 32 = 8 steps per epoch; teacher 2 epochs, students 1.
    let steps: Vec<u64> = rows.iter().map(|r| r["steps"].as_u64().unwrap()).collect();
    assert_eq!(steps, [16, 8, 8]);
    let params: Vec<u64> = rows.iter().map(|r| r["params"].as_u64().unwrap()).collect();
    assert!(
        params[0] > params[1],
        "teacher larger than student: {params:?}"
    );
    assert_eq!(params[1], params[2], "the same student twice");
    // The token table (49408 x text width) is part of the count.
    assert_eq!(rows[1]["token_table_params"].as_u64(), Some(49408 * 16));
    for r in rows {
        for key in [
            "zero_shot_top1",
            "zero_shot_top5",
            "image_to_text_r1",
            "text_to_image_r1",
        ] {
            fraction(&r[key], key);
        }
        let top1 = r["zero_shot_top1"].as_f64().unwrap();
        let top5 = r["zero_shot_top5"].as_f64().unwrap();
        assert!(top5 >= top1, "top-5 {top5} < top-1 {top1}");
        assert_eq!(r["metrics"]["zeroshot/images"].as_f64(), Some(60.0));
        assert_eq!(r["metrics"]["retrieval/captions"].as_f64(), Some(60.0));
        assert!(r["train_time_s"].as_f64().unwrap() > 0.0);
    }
    // The gain is the difference of the two students' rows, in points.
    let gain = results["kd_gain"]["zero_shot_top1"].as_f64().unwrap();
    let diff = 100.0
        * (rows[2]["zero_shot_top1"].as_f64().unwrap()
            - rows[1]["zero_shot_top1"].as_f64().unwrap());
    assert!((gain - diff).abs() < 1e-9, "{gain} vs {diff}");
    let t = &results["timings"];
    assert!(t["total_s"].as_f64().unwrap() >= t["teacher_s"].as_f64().unwrap());
    assert_eq!(results["config"]["seed"].as_u64(), Some(3));
    assert_eq!(results["config"]["data"]["seed"].as_u64(), Some(3));

    // The dataset, as the ordinary pipeline reads it.
    let data = out.join("data");
    let train_csv = std::fs::read_to_string(data.join("train.csv")).unwrap();
    assert_eq!(train_csv.lines().count(), 1 + 256);
    assert!(train_csv.starts_with("title\tfilepath\n"));
    let classes = std::fs::read_dir(data.join("heldout")).unwrap().count();
    assert_eq!(classes, 30);
    assert!(data.join("heldout.csv").is_file() && data.join("classnames.txt").is_file());

    // The runs: metrics, evaluations, a final checkpoint each, the trainer's plots. The KD
    // run logged the four CLIP-KD terms; the baseline the task loss alone.
    let runs = out.join("runs");
    for (name, terms) in [
        ("teacher", vec!["task"]),
        ("student-no-kd", vec!["task"]),
        ("student-clip-kd", vec!["crd", "fd", "icl", "task"]),
    ] {
        let run = runs.join(name);
        let first: Value = serde_json::from_str(
            std::fs::read_to_string(run.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        let logged: Vec<&str> = first["loss"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(logged, terms, "{name}");
        assert!(run.join("eval.jsonl").is_file(), "{name}");
        assert!(checkpoint_weights(&run).is_file(), "{name}");
        assert!(run.join("plots").join("loss.png").is_file(), "{name}");
    }
    // Both students started from the same weights: their first task losses are equal.
    let first_task = |run: &str| -> f64 {
        let line = std::fs::read_to_string(runs.join(run).join("metrics.jsonl")).unwrap();
        let v: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        v["loss"]["task"].as_f64().unwrap()
    };
    let (a, b) = (first_task("student-no-kd"), first_task("student-clip-kd"));
    assert!((a - b).abs() < 1e-4, "first task losses {a} vs {b}");
    for plot in [
        "zero_shot_top1.png",
        "image_to_text_r1.png",
        "student_task_loss.png",
    ] {
        assert!(out.join("plots").join(plot).is_file(), "{plot}");
    }

    // A rerun into the same folder replaces it.
    ok(&[
        "demo", "--quick", "--quiet", "--output", out_s, "--seed", "3",
    ]);
    assert!(out.join("results.json").is_file());
}

#[test]
fn foreign_folders_are_refused_and_configs_assemble() {
    let dir = TempDir::new("cli-demo");
    let foreign = dir.0.join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), "keep").unwrap();
    let out = clipkd(&[
        "demo",
        "--quick",
        "--quiet",
        "--output",
        foreign.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a demo's output"), "{err}");
    assert!(foreign.join("thesis.tex").is_file());

    let printed = ok(&[
        "demo",
        "--print-config",
        "--seed",
        "5",
        "--teacher-epochs",
        "7",
        "--set",
        "student.vision_layers=3",
    ]);
    let config: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(config["seed"].as_u64(), Some(5));
    assert_eq!(config["data"]["seed"].as_u64(), Some(5));
    assert_eq!(config["teacher_epochs"].as_u64(), Some(7));
    assert_eq!(config["student"]["vision_layers"].as_u64(), Some(3));
    assert_eq!(config["output"].as_str(), Some("clipkd-demo"));

    // The printed config is a valid --config file.
    let file = dir.0.join("demo.json");
    std::fs::write(&file, &printed).unwrap();
    let again: Value = serde_json::from_str(&ok(&[
        "demo",
        "--print-config",
        "--config",
        file.to_str().unwrap(),
        "--seed",
        "5",
    ]))
    .unwrap();
    assert_eq!(again, config);

    let out = clipkd(&["demo", "--print-config", "--set", "teacher.widht=3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("demo.teacher.widht"), "{err}");
}
