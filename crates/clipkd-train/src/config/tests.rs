use std::path::{Path, PathBuf};

use clipkd_losses::LossConfig;

use super::file::toml_to_json;
use super::*;
use crate::optim::AdamWParams;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn defaults_are_the_papers_recipe() {
    let c = RunConfig::default();
    assert_eq!(c.optim.lr, 1e-3);
    assert_eq!(c.optim.warmup, 10_000);
    assert_eq!(c.optim.epochs, 32);
    assert_eq!(c.optim.weight_decay, 0.1);
    assert_eq!(c.optim.grad_clip_norm, None);
    assert_eq!(c.data.batch_size, 1024);
    assert_eq!(c.data.crop_scale, [0.9, 1.0]);
    assert_eq!(c.loss.mask_ratio, 0.75);
    assert_eq!(c.run.seed, 0);
    let vit = c.optim.adamw_params(AdamWParams::vit());
    assert_eq!((vit.beta_1, vit.beta_2, vit.epsilon), (0.9, 0.98, 1e-6));
    let rn = c.optim.adamw_params(AdamWParams::resnet());
    assert_eq!((rn.beta_2, rn.epsilon), (0.999, 1e-8));
    let set = c
        .loss
        .loss_set_config(TrainMode::Distill, 512, 768)
        .unwrap();
    let names: Vec<_> = set
        .losses
        .iter()
        .map(|l| l.entry_name().to_string())
        .collect();
    assert_eq!(names, ["task", "crd", "icl", "fd"]);
    assert_eq!(set.losses[3].weight, 2000.0);
}

#[test]
fn toml_file_preset_and_overrides_layer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "run.toml",
        r#"
preset = "vit-l-14-laion-to-vit-b-16"
[data]
train_data = "a.csv,b.csv"
batch_size = 256
[optim]
lr = 5e-4
betas = [0.9, 0.95]
"#,
    );
    let c = RunConfig::load(
        Some(&path),
        None,
        &[
            Override::parse("optim.lr=2e-4").unwrap(),
            Override::parse("run.output_dir=/tmp/x y").unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(c.preset.as_deref(), Some("vit-l-14-laion-to-vit-b-16"));
    assert_eq!(c.teacher.model, "ViT-L-14");
    assert_eq!(c.student.model, "ViT-B-16");
    assert_eq!(c.data.batch_size, 256);
    assert_eq!(c.optim.lr, 2e-4);
    assert_eq!(c.optim.betas, Some([0.9, 0.95]));
    assert_eq!(c.optim.warmup, 10_000);
    assert_eq!(c.run.output_dir, PathBuf::from("/tmp/x y"));
    // Round trip through TOML.
    let back = RunConfig::from_value(
        toml_to_json(
            toml::Value::Table(toml::from_str(&c.to_toml()).unwrap()),
            "",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(back, c);
}

#[test]
fn json_files_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "run.json",
        r#"{"data": {"train_data": "x.csv"}, "optim": {"epochs": 2}}"#,
    );
    let c = RunConfig::from_file(&path).unwrap();
    assert_eq!(c.optim.epochs, 2);
    assert_eq!(c.data.train_data.as_deref(), Some("x.csv"));
}

#[test]
fn errors_name_the_field_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad_key = write(dir.path(), "a.toml", "[optim]\nlrr = 1.0\n");
    let e = RunConfig::from_file(&bad_key).unwrap_err().to_string();
    assert!(e.contains("optim") && e.contains("lrr"), "{e}");

    let bad_type = write(dir.path(), "b.toml", "[optim]\nepochs = \"many\"\n");
    let e = RunConfig::from_file(&bad_type).unwrap_err().to_string();
    assert!(e.contains("optim.epochs"), "{e}");

    let bad_syntax = write(dir.path(), "c.toml", "[optim]\nlr = = 1\n");
    let e = RunConfig::from_file(&bad_syntax).unwrap_err().to_string();
    assert!(e.contains("c.toml") && e.contains("line 2"), "{e}");

    let e = RunConfig::from_file(dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");

    let e = RunConfig::load(None, Some("nope"), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown run preset `nope`"), "{e}");

    let mut c = RunConfig::default();
    let e = c.validate(TrainMode::Baseline).unwrap_err().to_string();
    assert!(e.contains("data.train_data"), "{e}");
    c.data.train_data = Some("x.csv".into());
    let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
    assert!(e.contains("teacher.weights"), "{e}");
    c.teacher.weights = Some("t.safetensors".into());
    c.optim.lr = f64::NAN;
    let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
    assert!(e.contains("optim.lr"), "{e}");
    c.optim.lr = 1e-3;
    c.loss.mask_ratio = 1.0;
    let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
    assert!(e.contains("loss.mask_ratio"), "{e}");
    c.loss.mask_ratio = 0.75;
    c.optim.grad_accum = 0;
    let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
    assert!(e.contains("optim.grad_accum"), "{e}");
    c.optim.grad_accum = 1;
    c.validate(TrainMode::Distill).unwrap();
}

#[test]
fn nan_and_inf_are_errors_naming_the_field_and_value() {
    for (set, message) in [
        (
            "optim.lr=nan",
            "config field `optim.lr`: nan is not a finite number",
        ),
        (
            "optim.lr=inf",
            "config field `optim.lr`: inf is not a finite number",
        ),
        (
            "optim.lr=-inf",
            "config field `optim.lr`: -inf is not a finite number",
        ),
        (
            "optim.betas=[0.9, nan]",
            "`optim.betas[1]`: nan is not a finite number",
        ),
        (
            "optim={ lr = +inf }",
            "`optim.lr`: inf is not a finite number",
        ),
    ] {
        let e = Override::parse(set).unwrap_err().to_string();
        assert!(e.contains(message), "{set}: {e}");
        assert!(!e.contains("null"), "{set}: {e}");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "nan.toml", "[optim]\nlr = nan\n");
    let e = RunConfig::from_file(&file).unwrap_err().to_string();
    assert!(e.contains("nan.toml"), "{e}");
    assert!(e.contains("optim.lr: nan is not a finite number"), "{e}");
    let file = write(dir.path(), "inf.toml", "[[loss.terms]]\nweight = -inf\n");
    let e = RunConfig::from_file(&file).unwrap_err().to_string();
    assert!(
        e.contains("loss.terms[0].weight: -inf is not a finite number"),
        "{e}"
    );
}

#[test]
fn explicit_loss_terms_merge_onto_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "loss.toml",
        r#"
[[loss.terms]]
kind = "task"
weight = 1.0
[[loss.terms]]
kind = "fd"
weight = 1000.0
distance = "Cosine"
[[loss.terms]]
kind = "icl"
weight = 0.5
name = "icl_exp"
scale = { mode = "Exp" }
"#,
    );
    let c = RunConfig::from_file(&path).unwrap();
    let set = c.loss.loss_set_config(TrainMode::Distill, 8, 12).unwrap();
    assert_eq!(set.losses.len(), 3);
    assert_eq!(set.losses[1].weight, 1000.0);
    match &set.losses[1].loss {
        LossConfig::Fd(fd) => assert_eq!(fd.distance, clipkd_losses::FeatureDistance::Cosine),
        other => panic!("{other:?}"),
    }
    match &set.losses[2].loss {
        LossConfig::Icl(icl) => {
            assert_eq!(icl.scale.mode, clipkd_losses::ScaleMode::Exp);
            assert!((icl.scale.init - 2.659).abs() < 1e-3, "default kept");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(set.losses[2].entry_name(), "icl_exp");
    // Baseline mode ignores them.
    let base = c.loss.loss_set_config(TrainMode::Baseline, 8, 12).unwrap();
    assert_eq!(base.losses.len(), 1);

    let mut bad = c.clone();
    bad.loss.terms[1]
        .options
        .insert("distanse".into(), Value::from("Mse"));
    let e = bad
        .loss
        .loss_set_config(TrainMode::Distill, 8, 12)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("loss.terms.1.distanse") && e.contains("distance"),
        "{e}"
    );
    let mut bad = c.clone();
    bad.loss.terms[1]
        .options
        .insert("distance".into(), Value::from("L1"));
    let e = bad
        .loss
        .loss_set_config(TrainMode::Distill, 8, 12)
        .unwrap_err()
        .to_string();
    assert!(e.contains("loss.terms.1.distance"), "{e}");
    let mut both = c.clone();
    both.loss.preset = Some(LossPreset::Crd);
    assert!(
        both.loss
            .loss_set_config(TrainMode::Distill, 8, 12)
            .unwrap_err()
            .to_string()
            .contains("loss.preset")
    );
}

#[test]
fn overrides_parse_toml_values_or_strings() {
    assert_eq!(
        Override::parse("a.b=5e-4").unwrap().value,
        Value::from(5e-4)
    );
    assert_eq!(Override::parse("a=true").unwrap().value, Value::from(true));
    assert_eq!(
        Override::parse("a=[1, 2]").unwrap().value,
        serde_json::json!([1, 2])
    );
    assert_eq!(
        Override::parse("a=/data/x.csv").unwrap().value,
        Value::from("/data/x.csv")
    );
    assert_eq!(
        Override::parse("a.b={ mode = \"Exp\" }").unwrap().value,
        serde_json::json!({"mode": "Exp"})
    );
    assert!(Override::parse("novalue").is_err());
    assert!(Override::parse("a..b=1").is_err());
    // Into lists by index, and an error past the end.
    let mut v = serde_json::json!({"loss": {"terms": [{"weight": 1.0}]}});
    Override::parse("loss.terms.0.weight=3.0")
        .unwrap()
        .apply(&mut v)
        .unwrap();
    assert_eq!(v["loss"]["terms"][0]["weight"], Value::from(3.0));
    let e = Override::parse("loss.terms.4.weight=3.0")
        .unwrap()
        .apply(&mut v)
        .unwrap_err()
        .to_string();
    assert!(e.contains("loss.terms.4"), "{e}");
    // Into an unset optional section.
    let c = RunConfig::load(
        None,
        None,
        &[Override::parse("eval.zero_shot.root=/x").unwrap()],
    )
    .unwrap();
    assert_eq!(c.eval.zero_shot.map(|z| z.root), Some(PathBuf::from("/x")));
    let e = RunConfig::load(None, None, &[Override::parse("optim.lr.x=1").unwrap()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("optim.lr"), "{e}");
}

#[test]
fn every_preset_loads_and_hash_tracks_the_trajectory() {
    for name in RunConfig::preset_names() {
        let c = RunConfig::preset(name).unwrap();
        assert!(matches!(c.teacher.model, ModelSource::Preset(_)), "{name}");
        c.teacher.model.resolve().unwrap();
        c.student.model.resolve().unwrap();
    }
    let a = RunConfig::default();
    let mut b = a.clone();
    b.run.log_every_steps = 7;
    assert_eq!(a.trajectory_hash(), b.trajectory_hash());
    b.optim.lr = 2e-3;
    assert_ne!(a.trajectory_hash(), b.trajectory_hash());
}

/// `student.model` / `teacher.model` take a preset, a file or an inline open_clip config;
/// `run.device` and `data.csv_separator` are checked when the file is read, naming the field;
/// and every form survives the run directory's `config.toml` round trip.
#[test]
fn typed_fields_are_read_checked_and_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let inline = write(
        dir.path(),
        "inline.toml",
        r#"
[student]
model = "RN50"
[teacher.model.config]
embed_dim = 32
vision_cfg = { image_size = 32, layers = 2, width = 64, patch_size = 16 }
text_cfg = { context_length = 8, vocab_size = 64, width = 32, heads = 2, layers = 1 }
[data]
csv_separator = ','
[run]
device = "cuda:1"
"#,
    );
    let c = RunConfig::from_file(&inline).unwrap();
    assert_eq!(c.student.model, ModelSource::Preset("RN50".into()));
    let teacher = c.teacher.model.resolve().unwrap();
    assert_eq!((teacher.embed_dim, teacher.context_length()), (32, 8));
    assert_eq!(c.data.csv_separator.byte(), b',');
    assert_eq!(c.run.device, DeviceSpec::Cuda(1));
    let saved = write(dir.path(), "saved.toml", &c.to_toml());
    assert_eq!(RunConfig::from_file(&saved).unwrap(), c);

    let file = write(
        dir.path(),
        "file.toml",
        "[student]\nmodel = \"models/tiny.json\"\n[teacher]\nmodel = { file = \"ViT-B-16\" }\n",
    );
    let c = RunConfig::from_file(&file).unwrap();
    assert_eq!(
        c.student.model,
        ModelSource::File("models/tiny.json".into())
    );
    assert_eq!(c.teacher.model, ModelSource::File("ViT-B-16".into()));
    let saved = write(dir.path(), "saved2.toml", &c.to_toml());
    assert_eq!(RunConfig::from_file(&saved).unwrap(), c);

    for (text, field, says) in [
        (
            "[run]\ndevice = \"gpu\"\n",
            "run.device",
            "unknown device `gpu`",
        ),
        (
            "[data]\ncsv_separator = \"ab\"\n",
            "data.csv_separator",
            "one ASCII character",
        ),
        (
            "[student]\nmodel = { path = \"x\" }\n",
            "student.model",
            "unknown key `path`",
        ),
        (
            "[teacher.model.config]\nembed_dim = 8\n",
            "teacher.model",
            "inline model config",
        ),
    ] {
        let bad = write(dir.path(), "bad.toml", text);
        let e = RunConfig::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains(field) && e.contains(says), "{text}: {e}");
    }
}

/// `teacher.pretrained` / `student.pretrained`: open_clip tags, checked without the network
/// when the config is validated; a tag replaces the weights file, never sits beside it; the
/// tag is what the config keeps (and writes back).
#[test]
fn pretrained_tags_are_checked_when_the_config_is() {
    let mut c = RunConfig::default();
    c.data.train_data = Some("x.csv".into());
    c.teacher.model = ModelSource::named("ViT-B-16");
    c.teacher.pretrained = Some("laion400m_e32".into());
    c.validate(TrainMode::Distill).unwrap();

    c.teacher.pretrained = Some("laion400m_e33".into());
    let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
    assert!(e.contains("teacher.pretrained"), "{e}");
    assert!(e.contains("laion400m_e32, metaclip_400m"), "{e}");

    c.teacher.pretrained = Some("openai".into());
    c.teacher.weights = Some("t.safetensors".into());
    let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
    assert!(
        e.contains("teacher.pretrained") && e.contains("not both"),
        "{e}"
    );
    c.teacher.weights = None;

    // QuickGELU for OpenAI's weights, in the architecture the run builds.
    assert_eq!(
        c.teacher.architecture().unwrap().activation,
        clipkd_models::config::Activation::QuickGelu
    );

    c.student.model = ModelSource::named("my/student.json");
    c.student.pretrained = Some("openai".into());
    let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
    assert!(e.contains("student.pretrained"), "{e}");
    assert!(e.contains("bundled model names"), "{e}");
    c.student.model = ModelSource::named("ViT-B-32");
    c.validate(TrainMode::Distill).unwrap();

    // An hf-hub: teacher names its weights: none required.
    c.teacher.pretrained = None;
    c.teacher.model = ModelSource::named("hf-hub:org/teacher");
    c.validate(TrainMode::Distill).unwrap();
    c.teacher.pretrained = Some("openai".into());
    let e = c.validate(TrainMode::Distill).unwrap_err().to_string();
    assert!(e.contains("teacher.pretrained"), "{e}");

    // So does a local-dir: folder (checked when the run is prepared).
    c.teacher.pretrained = None;
    c.teacher.model = ModelSource::named("local-dir:models/teacher");
    c.validate(TrainMode::Distill).unwrap();
    c.teacher.model = ModelSource::named("hf-hub:org/teacher");

    // What is written reads back as the same names.
    c.teacher.pretrained = None;
    let back = RunConfig::from_value(serde_json::to_value(&c).unwrap()).unwrap();
    assert_eq!(back.teacher.model, ModelSource::Hub("org/teacher".into()));
    assert_eq!(back.student.pretrained.as_deref(), Some("openai"));
    let toml = toml::to_string(&c).unwrap();
    assert!(toml.contains("model = \"hf-hub:org/teacher\""), "{toml}");
}

/// `--teacher-pretrained` over a config that names a file (and the reverse): the command line's
/// choice replaces the config's, by overriding the other field with nothing.
#[test]
fn a_null_override_clears_an_optional_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "run.toml",
        "[data]\ntrain_data = \"x.csv\"\n[teacher]\nweights = \"t.safetensors\"\n",
    );
    let c = RunConfig::load(
        Some(&path),
        None,
        &[
            Override::new("teacher.pretrained", "laion400m_e32"),
            Override::new("teacher.weights", Value::Null),
        ],
    )
    .unwrap();
    assert_eq!(c.teacher.weights, None);
    assert_eq!(c.teacher.pretrained.as_deref(), Some("laion400m_e32"));
    c.validate(TrainMode::Distill).unwrap();
}

/// A teacher trained with another mean/std than the data's gets a warning naming both; one
/// trained with them (or without a known normalization) none.
#[test]
fn a_teacher_normalized_otherwise_than_the_data_is_warned_about() {
    let mut c = RunConfig::default();
    c.teacher.model = ModelSource::named("ViT-L-14");
    c.teacher.pretrained = Some("laion2b_s32b_b82k".into());
    let warning = c.teacher.normalization_warning(&c).unwrap().unwrap();
    assert!(
        warning.contains("ViT-L-14 (laion2b_s32b_b82k)"),
        "{warning}"
    );
    assert!(warning.contains("[0.5, 0.5, 0.5]"), "{warning}");
    assert!(warning.contains("data.mean"), "{warning}");
    c.data.mean = [0.5; 3];
    c.data.std = [0.5; 3];
    assert_eq!(c.teacher.normalization_warning(&c).unwrap(), None);

    c.teacher.pretrained = Some("openai".into());
    assert!(c.teacher.normalization_warning(&c).unwrap().is_some());
    c.data = DataConfig::default();
    assert_eq!(c.teacher.normalization_warning(&c).unwrap(), None);
    c.teacher.pretrained = None;
    assert_eq!(c.teacher.normalization_warning(&c).unwrap(), None);
}
