//! A timm student (open_clip's `TimmModel`, a small timm ResNet) distilled with CLIP-KD's
//! losses: it trains, its checkpoint exports as an open_clip state dict and config that load
//! back, and an interrupted run resumes exactly (BatchNorm running statistics included).
//!
//! One test in this file: the Flex backend's RNG is global to the process.

mod common;

use clipkd_models::{ClipConfig, VisionConfig, load_open_clip};
use clipkd_train::checkpoint::{CHECKPOINTS_DIR, list_checkpoints};
use clipkd_train::config::{LossKind, TrainMode};
use common::{assert_same_steps, run_on_squares, steps, term, tiny_config, write_models};

/// A timm ResNet-18 family trunk, one block per stage, narrow, with CLIP-KD's head settings.
const TIMM_STUDENT_JSON: &str = r#"{
  "embed_dim": 16,
  "vision_cfg": {"timm_model_name": "resnet18", "timm_model_pretrained": false, "timm_pool": "",
                 "timm_proj": "linear", "image_size": 32,
                 "timm_model_kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16]}},
  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
}"#;

#[test]
fn a_timm_student_distils_exports_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (_, teacher, weights) = write_models(dir.path());
    let student = dir.path().join("timm_student.json");
    std::fs::write(&student, TIMM_STUDENT_JSON).unwrap();
    let run = |out: &std::path::Path, stop: u64, resume: Option<&str>| {
        let mut c = tiny_config(&student, &teacher, &weights, out);
        c.optim.epochs = 3;
        c.loss.terms = vec![
            term(LossKind::Task, 1.0),
            term(LossKind::Crd, 1.0),
            term(LossKind::Icl, 1.0),
            term(LossKind::Fd, 2000.0),
        ];
        c.run.stop_after_steps = Some(stop);
        c.run.checkpoint_at_epoch_end = true;
        run_on_squares(c, TrainMode::Distill, resume, 32)
    };
    let straight = dir.path().join("straight");
    let a = run(&straight, 10, None);
    assert_eq!((a.steps, a.total_steps), (10, 12));
    let resumed = dir.path().join("resumed");
    run(&resumed, 5, None);
    run(&resumed, 10, Some("latest"));
    let (ra, rb) = (steps(&straight), steps(&resumed));
    assert!(
        ra[9].loss["fd"] < 0.7 * ra[0].loss["fd"],
        "the student learns: {:?} -> {:?}",
        ra[0].loss,
        ra[9].loss
    );
    assert_same_steps(&ra, &rb);

    // The last checkpoint is an open_clip timm model: its config and weights load back.
    let checkpoints = list_checkpoints(&straight.join(CHECKPOINTS_DIR)).unwrap();
    let last = &checkpoints.last().unwrap().1;
    let config = ClipConfig::from_open_clip_json(last.join("student_config.json")).unwrap();
    assert!(matches!(config.vision, VisionConfig::Timm(_)), "{config:?}");
    assert_eq!(
        config,
        ClipConfig::from_open_clip_json_str(TIMM_STUDENT_JSON).unwrap()
    );
    load_open_clip::<burn_flex::Flex>(
        last.join("student.safetensors"),
        &config,
        &Default::default(),
    )
    .unwrap();
}
