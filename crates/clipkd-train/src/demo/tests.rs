use super::*;
use crate::config::Override;

#[test]
fn configs_validate_and_errors_name_the_field() {
    DemoConfig::default().validate().unwrap();
    DemoConfig::quick().validate().unwrap();
    let c = DemoConfig::default().with_seed(7);
    assert_eq!((c.seed, c.data.seed), (7, 7));

    let mut c = DemoConfig::quick();
    c.batch_size = 10_000;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("demo.batch_size"), "{e}");
    let mut c = DemoConfig::quick();
    c.student.text_width = 20;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("demo.student.text_width"), "{e}");
    let mut c = DemoConfig::quick();
    c.warmup_fraction = 1.0;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("warmup_fraction")
    );
    let mut c = DemoConfig::quick();
    c.fd_weight = Some(f64::NAN);
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("demo.fd_weight")
    );
    let mut c = DemoConfig::quick();
    c.data.image_size = 8;
    assert!(c.validate().unwrap_err().to_string().contains("demo.data"));
    // JSON round trip, and unknown fields are rejected.
    let json = serde_json::to_string(&DemoConfig::default()).unwrap();
    let back: DemoConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, DemoConfig::default());
    assert!(serde_json::from_str::<DemoConfig>(r#"{"batchsize": 3}"#).is_err());
}

#[test]
fn overrides_set_fields_by_path_and_name_bad_ones() {
    let parse = |s: &str| Override::parse(s).unwrap();
    let c = DemoConfig::default()
        .with_overrides(&[
            parse("teacher.vision_width=192"),
            parse("data.train_samples=100"),
            parse("fd_weight=500"),
            parse("data.colours=[\"red\", \"blue\"]"),
        ])
        .unwrap();
    assert_eq!(c.teacher.vision_width, 192);
    assert_eq!(c.data.train_samples, 100);
    assert_eq!(c.fd_weight, Some(500.0));
    assert_eq!(c.data.colours.len(), 2);
    let e = DemoConfig::default()
        .with_overrides(&[parse("teacher.widht=3")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("demo.teacher.widht"), "{e}");
    let e = DemoConfig::default()
        .with_overrides(&[parse("batch_size=\"many\"")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("demo.batch_size"), "{e}");
    let e = DemoConfig::default()
        .with_overrides(&[parse("seed.x=1")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("demo.seed.x"), "{e}");
}

#[test]
fn kd_terms_are_the_clip_kd_recipe_with_the_configured_weights() {
    let c = DemoConfig {
        fd_weight: Some(500.0),
        ..DemoConfig::default()
    };
    let mut rc = RunConfig::default();
    rc.loss.terms = c.kd_loss_terms();
    let set = rc
        .loss
        .loss_set_config(TrainMode::Distill, 64, 128)
        .unwrap();
    let names: Vec<_> = set
        .losses
        .iter()
        .map(|l| l.entry_name().to_string())
        .collect();
    assert_eq!(names, ["task", "crd", "icl", "fd"]);
    let weights: Vec<f64> = set.losses.iter().map(|l| l.weight).collect();
    assert_eq!(weights, [1.0, 1.0, 1.0, 500.0]);
    // FD's default weight is the paper's per squared distance: 2000 x 96 / 512.
    assert_eq!(DemoConfig::default().fd_weight(), 375.0);
    // With the paper's weights the terms equal the `clip_kd` preset.
    let paper = DemoConfig {
        fd_weight: Some(2000.0),
        ..DemoConfig::default()
    };
    rc.loss.terms = paper.kd_loss_terms();
    let ours = rc
        .loss
        .loss_set_config(TrainMode::Distill, 64, 128)
        .unwrap();
    assert_eq!(
        serde_json::to_value(&ours).unwrap(),
        serde_json::to_value(clipkd_losses::LossSetConfig::clip_kd(64, 128)).unwrap()
    );
}

#[test]
fn output_folder_is_replaced_only_when_it_is_a_demos() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
    let e = DemoLayout::new(&foreign).prepare().unwrap_err().to_string();
    assert!(e.contains("not a demo's output"), "{e}");
    assert!(foreign.join("notes.txt").is_file());

    let out = dir.path().join("demo");
    let layout = DemoLayout::new(&out);
    layout.prepare().unwrap();
    std::fs::create_dir_all(layout.teacher_run.join("checkpoints")).unwrap();
    std::fs::write(&layout.results, "{}").unwrap();
    layout.prepare().unwrap();
    assert!(!layout.teacher_run.exists() && !layout.results.exists());
    assert!(out.join(DEMO_MARKER).is_file());
}
