//! The training commands end to end, through the `clipkd` binary (CPU, tiny models):
//! `distill` (stopped and resumed), `train`, `export`, `plot`, `--help`, and config errors
//! that name the field or file before any work.
#![cfg(feature = "flex")]

mod common;
#[path = "common/train_setup.rs"]
mod train_setup;

use common::{TempDir, clipkd, ok};
use train_setup::metric_rows;

use std::path::{Path, PathBuf};

use burn_flex::Flex;
use clipkd_models::{ClipConfig, load_open_clip};

fn fails(args: &[&str]) -> String {
    let out = clipkd(args);
    assert!(!out.status.success(), "clipkd {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Models, teacher weights, 16 captioned images and a run config in `dir`, evaluated by
/// retrieval on the training images every 4 steps; returns the config.
fn setup(dir: &Path) -> PathBuf {
    train_setup::setup(dir, &train_setup::retrieval_on_training_images(dir))
}

#[test]
fn help_lists_the_options() {
    let distill = ok(&["distill", "--help"]);
    for flag in [
        "--config",
        "--preset",
        "--set",
        "--teacher-weights",
        "--train-data",
        "--resume",
        "--device",
        "--precision",
    ] {
        assert!(
            distill.contains(flag),
            "distill --help lacks {flag}:\n{distill}"
        );
    }
    // Every shortcut shows its config field and default (those of RunConfig::default()).
    let defaults = clipkd_train::RunConfig::default();
    for (flag, default) in [
        ("--epochs", format!("default {}", defaults.optim.epochs)),
        (
            "--batch-size",
            format!("default {}", defaults.data.batch_size),
        ),
        ("--lr", "default 1e-3".to_string()),
        ("--wd", format!("default {}", defaults.optim.weight_decay)),
        ("--warmup", format!("default {}", defaults.optim.warmup)),
        ("--seed", format!("default {}", defaults.run.seed)),
        (
            "--log-every-n-steps",
            format!("default {}", defaults.run.log_every_steps),
        ),
        ("--student", "default ViT-T-16".to_string()),
        ("--teacher", "default ViT-B-16".to_string()),
        ("--device", "default cpu".to_string()),
    ] {
        // The flag's entry: its header line and the description lines under it.
        let lines: Vec<&str> = distill.lines().collect();
        let start = lines
            .iter()
            .position(|l| {
                let t = l.trim_start();
                t.starts_with('-') && t.split([' ', ',']).any(|w| w == flag)
            })
            .unwrap_or_else(|| panic!("no {flag} in distill --help:\n{distill}"));
        let end = (start + 1..lines.len())
            .find(|&i| lines[i].trim_start().starts_with('-'))
            .unwrap_or(lines.len());
        let line = lines[start..end]
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            line.contains(&default),
            "{flag}: `{line}` lacks `{default}`"
        );
    }
    // Each takes effect: the same config field as --set.
    let printed = ok(&[
        "distill",
        "--print-config",
        "--lr",
        "5e-4",
        "--wd",
        "0.2",
        "--warmup",
        "7",
        "--accum-freq",
        "2",
        "--grad-clip-norm",
        "1.5",
        "--seed",
        "9",
        "--workers",
        "3",
        "--log-every-n-steps",
        "5",
        "--val-data",
        "val.json",
        "--imagenet-val",
        "/data/in1k",
    ]);
    let dir = TempDir::new("cli-flags");
    let file = dir.0.join("printed.toml");
    std::fs::write(&file, &printed).unwrap();
    let config = clipkd_train::RunConfig::load(Some(&file), None, &[]).unwrap();
    assert_eq!(
        (
            config.optim.lr,
            config.optim.weight_decay,
            config.optim.warmup
        ),
        (5e-4, 0.2, 7)
    );
    assert_eq!(
        (config.optim.grad_accum, config.optim.grad_clip_norm),
        (2, Some(1.5))
    );
    assert_eq!(
        (
            config.run.seed,
            config.data.workers,
            config.run.log_every_steps
        ),
        (9, 3, 5)
    );
    assert_eq!(
        config.eval.retrieval.unwrap().annotations,
        std::path::PathBuf::from("val.json")
    );
    assert_eq!(
        config.eval.zero_shot.unwrap().root,
        std::path::PathBuf::from("/data/in1k")
    );
    let train = ok(&["train", "--help"]);
    assert!(train.contains("--resume") && !train.contains("--teacher-weights"));
    let export = ok(&["export", "--help"]);
    assert!(export.contains("--checkpoint") && export.contains("--model-config"));
    assert!(ok(&["plot", "--help"]).contains("RUN_DIR"));
    // The same names everywhere: -o for every output, --batch-size for every batch.
    for command in [
        "distill",
        "train",
        "export",
        "embed",
        "eval",
        "teacher-cache",
    ] {
        let help = ok(&[command, "--help"]);
        assert!(help.contains("-o, --output"), "{command} --help:\n{help}");
    }
    let bench = ok(&["bench", "--help"]);
    assert!(bench.contains("--batch-size"), "{bench}");
    // `clipkd models` (which `embed --help` points to) lists the presets with open_clip's
    // parameter counts.
    let models = ok(&["models"]);
    assert!(
        models.contains("| ViT-B-16 | ViT /16 | 512 | 224x224 | 77 | 149.62M |"),
        "{models}"
    );
    assert!(models.contains("| RN50 | ModifiedResNet | 1024 | 224x224 | 77 | 102.01M |"));
    let json = ok(&["models", "--json"]);
    let l14: serde_json::Value = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["name"] == "ViT-L-14")
        .unwrap();
    assert_eq!(l14["params"], 427_616_513);
    assert!(
        l14["pretrained"]
            .as_array()
            .unwrap()
            .contains(&"openai".into())
    );
    // The last column counts open_clip's pretrained tags (none for CLIP-KD's own ViT-T-16).
    assert!(models.contains(
        "| RN50 | ModifiedResNet | 1024 | 224x224 | 77 | 102.01M | 38.32M | 63.69M | 3 |"
    ));
    assert!(
        models
            .contains("| ViT-T-16 | ViT /16 | 512 | 224x224 | 77 | 46.12M | 5.62M | 40.49M | 0 |")
    );
    // open_clip's pretrained tags, by model, with the Hub repository each comes from.
    let tags = ok(&["models", "--pretrained"]);
    assert!(
        tags.contains(
            "| ViT-B-16 | laion400m_e32 | timm/vit_base_patch16_clip_224.laion400m_e32 | no |"
        ),
        "{tags}"
    );
    assert!(tags.contains("| ViT-L-14 | openai | timm/vit_large_patch14_clip_224.openai | yes |"));
    assert!(ok(&["embed", "--help"]).contains("clipkd models"));
    // The top-level help says what clipkd is and lists each command on one short line.
    let top = ok(&["--help"]);
    assert!(
        top.starts_with("clipkd distills small CLIP models"),
        "{top}"
    );
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(commands.len() >= 14, "{top}");
    for line in &commands {
        assert!(
            line.len() <= 100,
            "a command's summary is too long: `{line}`"
        );
    }
    // Completions and the man page come from the same definitions.
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&["completions", shell]);
        assert!(
            script.contains("teacher-cache") && script.contains("grad-clip-norm"),
            "{shell}"
        );
    }
    let man = ok(&["man"]);
    assert!(man.starts_with(".ie") || man.starts_with(".TH"), "{man}");
    assert!(man.contains("distill"), "{man}");
    let presets = ok(&["distill", "--list-presets"]);
    assert!(presets.contains("vit-l-14-laion-to-vit-b-16"), "{presets}");
}

#[test]
fn bad_configs_fail_naming_the_field_or_file() {
    let dir = TempDir::new("cli-train");
    let config = setup(&dir.0);
    let c = config.to_str().unwrap();

    let e = fails(&["distill", "--config", c, "--set", "optim.lrr=1", "-q"]);
    assert!(e.contains("optim") && e.contains("lrr"), "{e}");

    let e = fails(&[
        "distill",
        "--config",
        c,
        "--teacher-weights",
        "/no/such.safetensors",
    ]);
    assert!(
        e.contains("teacher.weights") && e.contains("/no/such.safetensors"),
        "{e}"
    );

    let e = fails(&["distill", "--config", c, "--device", "tpu"]);
    assert!(e.contains("run.device"), "{e}");

    let e = fails(&["distill", "--config", c, "--set", "optim.epochs=\"many\""]);
    assert!(e.contains("optim.epochs"), "{e}");

    let e = fails(&["distill", "--config", c, "--loss", "fancy"]);
    assert!(e.contains("--loss") && e.contains("clip_kd"), "{e}");

    let broken = dir.0.join("broken.toml");
    std::fs::write(&broken, "[optim]\nlr = 1e-3\nepochs = = 2\n").unwrap();
    let e = fails(&["distill", "--config", broken.to_str().unwrap()]);
    assert!(e.contains("broken.toml") && e.contains("line 3"), "{e}");

    let e = fails(&["distill", "--config", "/no/such/run.toml"]);
    assert!(e.contains("/no/such/run.toml"), "{e}");

    // Nothing was started: no run directory.
    assert!(!dir.0.join("run").exists());

    // --print-config shows the assembled config without checking files.
    let printed = ok(&[
        "distill",
        "--config",
        c,
        "--set",
        "optim.lr=5e-4",
        "--print-config",
    ]);
    assert!(
        printed.contains("lr = 0.0005") && printed.contains("warmup = 1"),
        "{printed}"
    );
}

/// `clipkd export` of the run's latest checkpoint into `dir`, loaded back (f32).
fn export_and_load(dir: &Path, run: &Path) -> clipkd_models::Clip<Flex> {
    let out = dir.join("student.safetensors");
    let cfg_out = dir.join("student_out.json");
    ok(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--model-config",
        cfg_out.to_str().unwrap(),
    ]);
    let cfg = ClipConfig::from_open_clip_json(&cfg_out).unwrap();
    load_open_clip::<Flex>(&out, &cfg, &Default::default()).unwrap()
}

/// `pure_bf16` on the CPU: every float tensor of the process is bf16 (the CPU device's default
/// float type), so every logged loss is a bf16 value; the run trains, evaluates and exports a
/// checkpoint that loads in f32.
#[test]
fn distill_in_pure_bf16_on_the_cpu() {
    let dir = TempDir::new("cli-train-bf16");
    let config = setup(&dir.0);
    let c = config.to_str().unwrap();
    let run = dir.0.join("run");
    ok(&["distill", "--config", c, "--precision", "pure_bf16", "-q"]);
    let rows = metric_rows(&run);
    assert_eq!(rows.len(), 8);
    for row in &rows {
        for (term, value) in row["loss"].as_object().unwrap() {
            let v = value.as_f64().unwrap() as f32;
            assert!(v.is_finite(), "{term}: {row}");
            assert_eq!(
                v.to_bits() & 0xffff,
                0,
                "{term} = {v} is not a bf16 value: {row}"
            );
        }
    }
    export_and_load(&dir.0, &run);
}

#[test]
fn distill_stop_resume_export_plot_and_baseline() {
    let dir = TempDir::new("cli-train");
    let config = setup(&dir.0);
    let c = config.to_str().unwrap();
    let run = dir.0.join("run");

    // 3 of 8 steps, then stop (as if interrupted) ...
    ok(&[
        "distill",
        "--config",
        c,
        "--set",
        "run.stop_after_steps=3",
        "-q",
    ]);
    assert_eq!(metric_rows(&run).len(), 3);
    // ... a fresh start into the same directory is refused ...
    let e = fails(&["distill", "--config", c, "-q"]);
    assert!(e.contains("--resume"), "{e}");
    // ... and --resume continues to the end.
    ok(&["distill", "--config", c, "--resume", "-q"]);
    let rows = metric_rows(&run);
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[7]["step"], 8);
    assert_eq!(rows[7]["epoch"], 1);
    for term in ["task", "crd", "icl", "fd"] {
        assert!(
            rows[0]["loss"][term].is_number(),
            "{term} missing: {}",
            rows[0]
        );
    }
    let fd = |i: usize| rows[i]["loss"]["fd"].as_f64().unwrap();
    assert!(fd(7) < fd(0), "fd did not go down: {} -> {}", fd(0), fd(7));
    for plot in ["loss.png", "lr.png", "eval.png"] {
        assert!(run.join("plots").join(plot).is_file(), "{plot}");
    }
    assert!(run.join("config.toml").is_file());
    // Evaluations at steps 4 and 8 (every 4 steps; the epoch ends fall on the same steps and
    // do not repeat them); the run resumed at step 3, so none was lost or repeated.
    let evals: Vec<serde_json::Value> = std::fs::read_to_string(run.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at: Vec<u64> = evals.iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(at, [4, 8], "{evals:?}");
    let r1 = evals[1]["metrics"]["retrieval/image_to_text_R@1"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&r1), "{}", evals[1]);

    // Export the latest checkpoint and load it back.
    let model = export_and_load(&dir.0, &run);
    assert_eq!(model.embed_dim(), 16);
    let scale: f32 = model.logit_scale().into_scalar();
    assert!(
        (scale - 2.659_26).abs() > 1e-5,
        "the exported student is not the trained one"
    );

    // Plots on demand.
    let listed = ok(&["plot", run.to_str().unwrap()]);
    assert!(listed.contains("loss.png"), "{listed}");

    // The same config without the teacher: the baseline.
    let base = dir.0.join("base");
    ok(&[
        "train",
        "--config",
        c,
        "--output",
        base.to_str().unwrap(),
        "--set",
        "run.stop_after_steps=2",
        "-q",
    ]);
    let rows = metric_rows(&base);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["loss"].as_object().unwrap().len(), 1, "{}", rows[0]);
    assert!(rows[0]["loss"]["task"].is_number());
    // A distillation loss given to the baseline is an error, not ignored.
    let e = fails(&["train", "--config", c, "--loss", "crd"]);
    assert!(
        e.contains("--loss crd") && e.contains("clipkd distill --loss crd"),
        "{e}"
    );
    // A config's distillation [loss] is replaced by the baseline's, with a note, and the run's
    // config records what it trained.
    let noted = dir.0.join("noted");
    let out = common::clipkd(&[
        "train",
        "--config",
        c,
        "--output",
        noted.to_str().unwrap(),
        "--set",
        "loss.preset=\"crd\"",
        "--set",
        "run.stop_after_steps=1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("loss.preset = \"crd\" is not used"),
        "{stderr}"
    );
    let saved = std::fs::read_to_string(noted.join("config.toml")).unwrap();
    assert!(saved.contains("preset = \"baseline\""), "{saved}");
    // Resuming a checkpoint by path, without --config or --output: its own config, its own
    // run directory.
    let ckpt = base.join("checkpoints").join("step-00000002");
    ok(&[
        "train",
        "--resume",
        ckpt.to_str().unwrap(),
        "--set",
        "run.stop_after_steps=3",
        "-q",
    ]);
    assert_eq!(metric_rows(&base).len(), 3);
    assert!(base.join("checkpoints").join("step-00000003").is_dir());
    // A baseline checkpoint cannot be resumed as a distillation.
    let e = fails(&[
        "distill",
        "--config",
        c,
        "--output",
        base.to_str().unwrap(),
        "--resume",
    ]);
    assert!(e.contains("clipkd train"), "{e}");
}

/// `run.metrics_format = "csv"` with loss terms whose names hold a comma and a quote: every row
/// keeps its columns, and `clipkd plot` reads the file back.
#[test]
fn csv_metrics_keep_columns_for_any_term_name() {
    let dir = TempDir::new("cli-csv-metrics");
    let config = train_setup::setup(
        &dir.0,
        "metrics_format = \"csv\"\nstop_after_steps = 3\n\n[[loss.terms]]\nkind = \"task\"\nweight = 1.0\nname = \"task, \\\"main\\\"\"\n\n[[loss.terms]]\nkind = \"fd\"\nweight = 100.0\n",
    );
    let run = dir.0.join("run");
    ok(&["distill", "--config", config.to_str().unwrap(), "-q"]);
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut reader = csv_rows(&text);
    let header = reader.remove(0);
    assert!(
        header.contains(&"loss/task, \"main\"".to_string()),
        "{text}"
    );
    assert_eq!(reader.len(), 3, "{text}");
    for row in &reader {
        assert_eq!(row.len(), header.len(), "{text}");
    }
    assert!(ok(&["plot", run.to_str().unwrap()]).contains("loss.png"));
}

/// The records of a CSV text, quotes honoured (a small reader for the test: fields separated by
/// commas, `"` quoting with `""` for a quote).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut field)),
                (c, _) => field.push(c),
            }
        }
        fields.push(field);
        rows.push(fields);
    }
    rows
}
