//! Loss-set configuration, presets, validation errors, and the loss set as a Burn module
//! (parameters trained by an optimizer, saved and restored by a record).

mod common;

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::Tensor;
use clipkd_losses::{
    AfdLossConfig, BuiltinLoss, DistillInput, Embeddings, FdLossConfig, IclLossConfig, LossConfig,
    LossError, LossPreset, LossSet, LossSetConfig, MfdLossConfig, TaskLossConfig,
};
use common::{B, Inner, randn, values};

fn input(n: usize, ds: usize, dt: usize, masked: bool) -> DistillInput<B> {
    let device = Default::default();
    let student = Embeddings::from_log_scale(
        randn::<B>(n, ds, 1, &device).require_grad(),
        randn::<B>(n, ds, 2, &device).require_grad(),
        Tensor::from_floats([2.659], &device),
    )
    .unwrap();
    let teacher = Embeddings::from_log_scale(
        randn::<B>(n, dt, 3, &device),
        randn::<B>(n, dt, 4, &device),
        Tensor::from_floats([4.6], &device),
    )
    .unwrap();
    let input = DistillInput::new(student, teacher).unwrap();
    if masked {
        input
            .with_masked_student_image(randn::<B>(n, ds, 5, &device))
            .unwrap()
    } else {
        input
    }
}

#[test]
fn presets_have_the_papers_terms_and_weights() {
    let expect: [(LossPreset, &[(&str, f64)]); 9] = [
        (LossPreset::Baseline, &[("task", 1.0)]),
        (
            LossPreset::ClipKd,
            &[("task", 1.0), ("crd", 1.0), ("icl", 1.0), ("fd", 2000.0)],
        ),
        (LossPreset::Crd, &[("task", 1.0), ("crd", 1.0)]),
        (LossPreset::Fd, &[("task", 1.0), ("fd", 2000.0)]),
        (LossPreset::Mfd, &[("task", 1.0), ("mfd", 2000.0)]),
        (LossPreset::Gd, &[("task", 1.0), ("gd", 1e8)]),
        (LossPreset::Icl, &[("task", 1.0), ("icl", 1.0)]),
        (LossPreset::Afd, &[("task", 1.0), ("afd", 1.0)]),
        (
            LossPreset::OpenClipDistill,
            &[("task", 1.0), ("distill", 1.0)],
        ),
    ];
    let device = Default::default();
    for (preset, terms) in expect {
        assert_eq!(preset.name().parse::<LossPreset>().unwrap(), preset);
        let config = LossSetConfig::preset(preset, 6, 10);
        let set = config.init::<B>(&device).unwrap();
        let got: Vec<(&str, f64)> = set.entries().map(|(n, w, _)| (n, w)).collect();
        assert_eq!(got, terms, "{preset}");
        assert_eq!(set.requires_masked_view(), preset == LossPreset::Mfd);
        let out = set.forward(&input(5, 6, 10, true)).unwrap();
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, terms.iter().map(|t| t.0).collect::<Vec<_>>());
        for (term, (_, w)) in out.iter().zip(terms) {
            assert_eq!(term.weight, *w);
        }
    }
    let err = "clip-kd".parse::<LossPreset>().unwrap_err().to_string();
    assert!(err.contains("clip_kd") && err.contains("unknown"), "{err}");
}

#[test]
fn weights_are_applied_once_and_total_is_their_sum() {
    let device = Default::default();
    let x = input(6, 4, 8, false);
    let unit = LossSetConfig::new(4, 8)
        .add(1.0, LossConfig::Task(TaskLossConfig::new()))
        .add(1.0, LossConfig::Fd(FdLossConfig::new()))
        .init::<B>(&device)
        .unwrap();
    // same layers (cloned before any forward: the layers are initialized eagerly), other weights
    let weighted = LossSet::new(unit.projector().clone())
        .with_loss("task", 0.5, BuiltinLoss::Task(clipkd_losses::TaskLoss))
        .unwrap()
        .with_loss("fd", 2000.0, BuiltinLoss::Fd(FdLossConfig::new().init()))
        .unwrap();
    let a = unit.forward(&x).unwrap().to_scalars();
    let terms = weighted.forward(&x).unwrap();
    let b = terms.to_scalars();
    assert!((b[0].1 - 0.5 * a[0].1).abs() < 1e-6 * a[0].1.abs());
    assert!((b[1].1 - 2000.0 * a[1].1).abs() < 1e-5 * b[1].1.abs());
    let total = values(&terms.total().unwrap())[0] as f64;
    assert!((total - (b[0].1 + b[1].1)).abs() < 1e-5 * total.abs());
}

#[test]
fn config_round_trips_through_json() {
    let dir = std::env::temp_dir().join(format!("clipkd-losses-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("losses.json");
    let config = LossSetConfig::clip_kd(512, 768).add_named(
        "afd_fused",
        0.5,
        LossConfig::Afd(AfdLossConfig::new(768).with_fused_dim(Some(256))),
    );
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let back = LossSetConfig::from_json_file(&path).unwrap();
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        serde_json::to_string(&config).unwrap()
    );
    // a broken file names the file, line and column
    std::fs::write(
        &path,
        "{\n  \"student_dim\": 512,\n  \"teacher_dim\": oops\n}",
    )
    .unwrap();
    let err = LossSetConfig::from_json_file(&path).unwrap_err();
    assert!(
        matches!(err, LossError::ConfigParse { line: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("losses.json"), "{err}");
    let missing = LossSetConfig::from_json_file(dir.join("nope.json")).unwrap_err();
    assert!(missing.to_string().contains("nope.json"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_configs_are_rejected_with_clear_errors() {
    let device = Default::default();
    let init = |c: LossSetConfig| {
        c.init::<Inner>(&device)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let empty = init(LossSetConfig::new(4, 4));
    assert!(empty.contains("no losses"), "{empty}");
    let dup = init(LossSetConfig::clip_kd(4, 8).add(3.0, LossConfig::Fd(FdLossConfig::new())));
    assert!(dup.contains("two entries are named `fd`"), "{dup}");
    let nan = init(LossSetConfig::new(4, 8).add(f64::NAN, LossConfig::Task(TaskLossConfig::new())));
    assert!(nan.contains("`task`") && nan.contains("NaN"), "{nan}");
    let afd = init(LossSetConfig::new(4, 8).add(1.0, LossConfig::Afd(AfdLossConfig::new(16))));
    assert!(
        afd.contains("AFD") && afd.contains("16") && afd.contains('8'),
        "{afd}"
    );
    let temp = init(LossSetConfig::new(4, 8).add(
        1.0,
        LossConfig::Crd(clipkd_losses::CrdLossConfig::new().with_temperature(0.0)),
    ));
    assert!(temp.contains("CRD temperature"), "{temp}");
}

#[test]
fn mfd_is_rejected_at_configuration_for_a_student_without_masked_view() {
    let config = LossSetConfig::preset(LossPreset::Mfd, 512, 768);
    assert!(config.requires_masked_view());
    let err = config.check_student(false).unwrap_err();
    assert!(matches!(err, LossError::MaskedViewUnsupported { ref loss } if loss == "mfd"));
    let msg = err.to_string();
    assert!(msg.contains("ViT") && msg.contains("`mfd`"), "{msg}");
    config.check_student(true).unwrap();
    LossSetConfig::clip_kd(512, 768)
        .check_student(false)
        .unwrap();
    // the same check on the built set
    let set = LossSetConfig::preset(LossPreset::Mfd, 4, 8)
        .init::<Inner>(&Default::default())
        .unwrap();
    assert!(set.check_student(false).is_err());
    // and a forward without the masked view says which call is missing
    let err = LossSetConfig::preset(LossPreset::Mfd, 4, 8)
        .init::<B>(&Default::default())
        .unwrap()
        .forward(&input(3, 4, 8, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("with_masked_student_image"), "{err}");
}

#[test]
fn size_mismatches_are_errors() {
    let device = Default::default();
    // the projector was made for a 4-wide student
    let set = LossSetConfig::clip_kd(4, 8).init::<B>(&device).unwrap();
    let err = set.forward(&input(3, 5, 8, false)).unwrap_err().to_string();
    assert!(
        err.contains("projector") && err.contains('4') && err.contains('5'),
        "{err}"
    );
    // a loss reading aligned features without a projector
    let set = LossSet::new(clipkd_losses::Projector::identity())
        .with_loss("fd", 1.0, BuiltinLoss::Fd(FdLossConfig::new().init()))
        .unwrap();
    let err = set.forward(&input(3, 4, 8, false)).unwrap_err().to_string();
    assert!(err.contains("FD") && err.contains("projector"), "{err}");
    // batch sizes
    let s = Embeddings::<B>::new(
        randn(3, 4, 1, &device),
        randn(3, 4, 2, &device),
        Tensor::from_floats([1.0], &device),
    )
    .unwrap();
    let t = Embeddings::<B>::new(
        randn(2, 8, 1, &device),
        randn(2, 8, 2, &device),
        Tensor::from_floats([1.0], &device),
    )
    .unwrap();
    let err = DistillInput::new(s, t).unwrap_err().to_string();
    assert!(
        err.contains("teacher") && err.contains('2') && err.contains('3'),
        "{err}"
    );
    let err = Embeddings::<B>::new(
        randn(3, 4, 1, &device),
        randn(3, 5, 2, &device),
        Tensor::from_floats([1.0], &device),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("text"), "{err}");
}

#[test]
fn projector_only_when_needed() {
    let device = Default::default();
    let count = |c: LossSetConfig| c.init::<Inner>(&device).unwrap().num_params();
    // projector 2 × (4·8 + 8), ICL scale 1
    assert_eq!(count(LossSetConfig::clip_kd(4, 8)), 2 * (4 * 8 + 8) + 1);
    assert_eq!(count(LossSetConfig::clip_kd(8, 8)), 1);
    // task + CRD read the student's own features: no projector
    assert_eq!(count(LossSetConfig::preset(LossPreset::Crd, 4, 8)), 0);
    // AFD: projector + 2 fusion layers (2·8 -> 8) + scale
    assert_eq!(
        count(LossSetConfig::preset(LossPreset::Afd, 4, 8)),
        2 * (4 * 8 + 8) + 2 * (16 * 8 + 8) + 1
    );
    let _ = MfdLossConfig::new();
    let _ = IclLossConfig::new();
}

#[test]
fn optimizer_trains_and_record_saves_the_loss_parameters() {
    let device = Default::default();
    let set = LossSetConfig::preset(LossPreset::Afd, 4, 8)
        .add(1.0, LossConfig::Icl(IclLossConfig::new()))
        .init::<B>(&device)
        .unwrap();
    let before = snapshot(&set.valid());
    let terms = set.forward(&input(6, 4, 8, false)).unwrap();
    let grads = GradientsParams::from_grads(terms.total().unwrap().backward(), &set);
    let mut optim = AdamWConfig::new().init();
    let set = optim.step(1e-2, set, grads);
    let after = snapshot(&set.valid());
    assert_eq!(before.len(), after.len());
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        assert_ne!(a, b, "parameter {i} was not updated");
    }
    // a record of the set restores every parameter (projector, fusion layers, scales)
    let bytes = BinBytesRecorder::<FullPrecisionSettings>::default()
        .record(set.clone().into_record(), ())
        .unwrap();
    let fresh = LossSetConfig::preset(LossPreset::Afd, 4, 8)
        .add(1.0, LossConfig::Icl(IclLossConfig::new()))
        .init::<B>(&device)
        .unwrap();
    assert_ne!(snapshot(&fresh.valid()), after);
    let record = BinBytesRecorder::<FullPrecisionSettings>::default()
        .load(bytes, &device)
        .unwrap();
    let restored = fresh.load_record(record);
    assert_eq!(snapshot(&restored.valid()), after);
}

/// Every parameter's values, in visiting order.
fn snapshot(set: &LossSet<Inner>) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor<Inner> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Inner, D>>) {
            self.0.push(values(&param.val()));
        }
    }
    let mut c = Collect(Vec::new());
    set.visit(&mut c);
    c.0
}

/// The parameter paths a checkpoint of the set uses (Burn's module paths).
fn paths(set: &LossSet<Inner>) -> Vec<String> {
    struct Paths {
        stack: Vec<String>,
        out: Vec<String>,
    }
    impl burn::module::ModuleVisitor<Inner> for Paths {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<Inner, D>>) {
            self.out.push(self.stack.join("."));
        }
    }
    let mut p = Paths {
        stack: Vec::new(),
        out: Vec::new(),
    };
    set.visit(&mut p);
    p.out
}

#[test]
fn checkpoint_paths_name_every_loss_parameter() {
    let set = LossSetConfig::preset(LossPreset::ClipKd, 4, 8)
        .add(1.0, LossConfig::Afd(AfdLossConfig::new(8)))
        .init::<Inner>(&Default::default())
        .unwrap();
    assert_eq!(
        paths(&set),
        [
            "projector.image.weight",
            "projector.image.bias",
            "projector.text.weight",
            "projector.text.bias",
            "losses.2.Icl.scale.value",
            "losses.4.Afd.image_fusion.weight",
            "losses.4.Afd.image_fusion.bias",
            "losses.4.Afd.text_fusion.weight",
            "losses.4.Afd.text_fusion.bias",
            "losses.4.Afd.scale.value",
        ]
    );
}

/// The JSON example in `docs/losses.md` parses, and is the recipe with an `exp` ICL scale.
#[test]
fn json_example_in_the_docs_parses() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/losses.md"))
        .unwrap();
    let start = doc
        .find("```json\n")
        .expect("a json block in docs/losses.md")
        + 8;
    let end = start + doc[start..].find("```").unwrap();
    let config: LossSetConfig = serde_json::from_str(&doc[start..end]).unwrap();
    let names: Vec<&str> = config.losses.iter().map(|l| l.entry_name()).collect();
    assert_eq!(names, ["task", "crd", "icl", "fd"]);
    match &config.losses[2].loss {
        LossConfig::Icl(icl) => assert_eq!(icl.scale.mode, clipkd_losses::ScaleMode::Exp),
        other => panic!("{other:?}"),
    }
    config.init::<Inner>(&Default::default()).unwrap();
}
