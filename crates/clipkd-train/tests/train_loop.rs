//! End-to-end training on tiny models (Flex backend): the loss goes down, checkpoints are
//! written atomically and pruned, bad configs fail before any work naming the field, and the
//! exported student loads back.

mod common;

use burn::backend::Autodiff;
use burn::tensor::{Distribution, Tensor};
use burn_flex::Flex;
use clipkd_losses::LossPreset;
use clipkd_models::{ClipConfig, load_open_clip};
use clipkd_train::checkpoint::{
    CHECKPOINTS_DIR, export_student, list_checkpoints, read_checkpoint_meta, resolve_checkpoint,
};
use clipkd_train::config::{MetricsFormat, TrainMode};
use clipkd_train::progress::ProgressMode;
use clipkd_train::trainer::PreparedRun;
use common::{run_on_squares, squares, steps, tiny_config, write_models};

type B = Autodiff<Flex>;

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// CLIP-KD (task + CRD + ICL + FD, teacher embedding 24 vs student 16) on 32 coloured squares:
/// the total loss of the last steps is well below that of the first ones, and every term is
/// logged. Also: metrics as CSV, plots drawn (with the `plots` feature), keep-last-K and a
/// leftover temporary directory.
#[test]
fn distillation_reduces_the_loss_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (student, teacher, weights) = write_models(dir.path());
    let out = dir.path().join("run");
    let mut config = tiny_config(&student, &teacher, &weights, &out);
    config.optim.epochs = 4; // 4 steps per epoch: 16 steps
    config.run.checkpoint_every_steps = 3;
    config.run.keep_checkpoints = 2;
    config.run.plots = cfg!(feature = "plots");
    config.run.metrics_format = MetricsFormat::Csv;
    // A temporary directory left by a crashed save: ignored, then removed.
    let leftover = out.join(CHECKPOINTS_DIR).join(".tmp-step-00000003-999");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("state.json"), "{").unwrap();

    let summary = run_on_squares(config, TrainMode::Distill, None, 32);
    assert_eq!(summary.steps, 16);
    assert_eq!(summary.epochs, 4);
    assert!(!summary.stopped_early);

    let rows = steps(&out);
    assert_eq!(rows.len(), 16);
    let names: Vec<&str> = rows[0].loss.keys().map(String::as_str).collect();
    assert_eq!(names, ["crd", "fd", "icl", "task"]);
    let totals: Vec<f64> = rows.iter().map(|r| r.total).collect();
    let (first, last) = (mean(&totals[..3]), mean(&totals[13..]));
    assert!(
        last < 0.8 * first,
        "loss did not go down enough: first steps {first:.4}, last steps {last:.4}: {totals:?}"
    );
    let fd: Vec<f64> = rows.iter().map(|r| r.loss["fd"]).collect();
    assert!(fd[15] < fd[0], "fd {fd:?}");
    // Schedule: warmup 2 steps then cosine to 0 over 16.
    assert!((rows[0].lr - 1e-3).abs() < 1e-12);
    assert!((rows[1].lr - 2e-3).abs() < 1e-12);
    assert!(rows[15].lr < 1e-4);
    assert!(
        rows.iter()
            .all(|r| r.grad_norm.is_some() && r.images_per_s > 0.0)
    );
    for r in &rows {
        let s = r.logit_scale.unwrap();
        assert!((1.0..=100.0 + 1e-3).contains(&s), "logit scale {s}");
    }

    // Checkpoints at steps 3, 6, 9, 12, 15 and epoch ends 4, 8, 12, 16: the last 2 are kept.
    let ckpts = list_checkpoints(&out.join(CHECKPOINTS_DIR)).unwrap();
    let kept: Vec<u64> = ckpts.iter().map(|c| c.0).collect();
    assert_eq!(kept, [15, 16]);
    assert!(
        !leftover.exists(),
        "the leftover temporary directory was not removed"
    );
    let (state, saved) = read_checkpoint_meta(&ckpts[1].1).unwrap();
    assert_eq!(state.step, 16);
    assert_eq!(state.data_position.epoch, 4);
    assert_eq!(state.samples_seen, 16 * 8);
    assert_eq!(saved.optim.epochs, 4);
    if cfg!(feature = "plots") {
        for plot in ["loss.png", "lr.png"] {
            assert!(out.join("plots").join(plot).is_file(), "{plot}");
        }
        assert_eq!(summary.plots.len(), 2, "{:?}", summary.plots);
    }

    // Export: the student loads back into the model its config describes, and embeds images
    // exactly like the checkpoint's own copy.
    let latest = resolve_checkpoint("latest", &out).unwrap();
    let exported = dir.path().join("exported.safetensors");
    let config_out = dir.path().join("exported.json");
    let report =
        export_student::<Flex>(&latest, &exported, Some(&config_out), &Default::default()).unwrap();
    assert_eq!(report.step, 16);
    let cfg = ClipConfig::from_open_clip_json(&config_out).unwrap();
    assert_eq!(cfg, ClipConfig::from_open_clip_json(&student).unwrap());
    let device = Default::default();
    let a = load_open_clip::<Flex>(&exported, &cfg, &device).unwrap();
    let b = load_open_clip::<Flex>(latest.join("student.safetensors"), &cfg, &device).unwrap();
    let images = Tensor::<Flex, 4>::random([2, 3, 32, 32], Distribution::Default, &device);
    let (ea, eb) = (
        a.encode_image(images.clone()).unwrap().into_data(),
        b.encode_image(images).unwrap().into_data(),
    );
    assert_eq!(ea, eb);
    // The trained student differs from a fresh one: training changed the weights.
    let logit_scale: f32 = a.logit_scale().into_scalar();
    assert!(
        (logit_scale - 2.659_26).abs() > 1e-5,
        "logit_scale did not move"
    );
}

/// The baseline (`clipkd train`): no teacher is loaded and the task loss alone goes down.
#[test]
fn baseline_trains_without_a_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let (student, _, _) = write_models(dir.path());
    let out = dir.path().join("base");
    // A teacher that does not exist: the baseline ignores [teacher].
    let mut config = tiny_config(
        &student,
        &dir.path().join("nope.json"),
        &dir.path().join("nope.safetensors"),
        &out,
    );
    config.optim.epochs = 3;
    config.loss.preset = Some(LossPreset::ClipKd);
    let prepared = PreparedRun::prepare(config, TrainMode::Baseline, None)
        .unwrap()
        .with_data(squares(32))
        .unwrap()
        .with_progress(ProgressMode::Quiet);
    assert!(prepared.teacher_shape().is_none());
    let summary = prepared.run::<B>(&Default::default()).unwrap();
    assert_eq!(summary.steps, 12);
    let rows = steps(&out);
    assert_eq!(rows[0].loss.keys().collect::<Vec<_>>(), ["task"]);
    let totals: Vec<f64> = rows.iter().map(|r| r.total).collect();
    assert!(
        mean(&totals[9..]) < mean(&totals[..3]),
        "task loss did not go down: {totals:?}"
    );
    // The final checkpoint says it is a baseline run.
    let (state, _) = read_checkpoint_meta(&resolve_checkpoint("latest", &out).unwrap()).unwrap();
    assert!(!state.distill);
}

/// Problems found by `prepare`, before any model is built, each naming its field or file.
#[test]
fn bad_runs_fail_before_work_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (student, teacher, weights) = write_models(dir.path());
    let out = dir.path().join("run");
    let base = tiny_config(&student, &teacher, &weights, &out);
    let err = |c: clipkd_train::RunConfig, mode| {
        PreparedRun::prepare(c, mode, None).unwrap_err().to_string()
    };

    // Without the `plots` feature a run that asks for plots is refused here, not after its
    // training: nothing is written.
    if !cfg!(feature = "plots") {
        let mut c = base.clone();
        c.run.plots = true;
        let e = err(c, TrainMode::Distill);
        assert!(
            e.contains("run.plots") && e.contains("`plots` feature"),
            "{e}"
        );
        assert!(!out.exists(), "the refused run created {}", out.display());
    }

    let mut c = base.clone();
    c.teacher.weights = Some(dir.path().join("missing.safetensors"));
    let e = err(c, TrainMode::Distill);
    assert!(
        e.contains("teacher.weights") && e.contains("missing.safetensors"),
        "{e}"
    );

    let mut c = base.clone();
    c.teacher.model = "ViT-B-16".into(); // 224 px: not the student's 32 px
    let e = err(c, TrainMode::Distill);
    assert!(
        e.contains("teacher.model") && e.contains("image size"),
        "{e}"
    );

    let mut c = base.clone();
    c.student.model = clipkd_models::ModelSource::File(dir.path().join("nope.json"));
    let e = err(c, TrainMode::Distill);
    assert!(
        e.contains("student.model") && e.contains("nope.json"),
        "{e}"
    );

    let mut c = base.clone();
    c.student.model = "RN50".into();
    c.teacher.model = "ViT-B-16".into();
    c.loss.preset = Some(LossPreset::Mfd);
    let e = err(c, TrainMode::Distill);
    assert!(
        e.contains("loss") && e.to_lowercase().contains("mfd"),
        "{e}"
    );

    let mut c = base.clone();
    c.data.synthetic_samples = 7; // fewer than one batch of 8
    let e = err(c, TrainMode::Distill);
    assert!(e.contains("data.batch_size"), "{e}");

    let mut c = base.clone();
    c.data.kind = clipkd_train::config::DataKind::Csv;
    c.data.train_data = Some(dir.path().join("absent.csv").to_string_lossy().into_owned());
    let e = err(c, TrainMode::Distill);
    assert!(
        e.contains("data.train_data") && e.contains("absent.csv"),
        "{e}"
    );

    let mut c = base.clone();
    c.data.kind = clipkd_train::config::DataKind::Webdataset;
    std::fs::create_dir_all(dir.path().join("shards")).unwrap();
    std::fs::write(dir.path().join("shards/000.tar"), []).unwrap();
    c.data.train_data = Some(
        dir.path()
            .join("shards/000.tar")
            .to_string_lossy()
            .into_owned(),
    );
    let e = err(c.clone(), TrainMode::Distill);
    assert!(e.contains("data.train_num_samples"), "{e}");
    // On several nodes each reads its own shards: one shard cannot serve two nodes.
    c.run.num_nodes = 2;
    c.run.orchestrator = Some("127.0.0.1:29500".into());
    c.run.node_address = Some("127.0.0.1:29501".into());
    let e = err(c, TrainMode::Distill);
    assert!(
        e.contains("data.train_data") && e.contains("1 webdataset shards for 2 nodes"),
        "{e}"
    );

    // An output directory with checkpoints needs --resume.
    std::fs::create_dir_all(out.join(CHECKPOINTS_DIR).join("step-00000004")).unwrap();
    std::fs::write(
        out.join(CHECKPOINTS_DIR).join("step-00000004/state.json"),
        "{}",
    )
    .unwrap();
    let e = err(base.clone(), TrainMode::Distill);
    assert!(
        e.contains("run.output_dir") && e.contains("--resume"),
        "{e}"
    );
    let e = PreparedRun::prepare(base, TrainMode::Distill, Some("latest"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("step-00000004") && e.contains("state.json"),
        "{e}"
    );
}
