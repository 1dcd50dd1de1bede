//! Helpers shared by the trainer's integration tests: tiny models, a tiny paired dataset, and
//! a config for them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn_flex::Flex;
use clipkd_data::dataset::{DataSource, ImageSource, IndexedDataset, SampleRef};
use clipkd_data::image::DecodedImage;
use clipkd_models::load_open_clip;
use clipkd_models::{ClipConfig, ModelSource, save_open_clip};
use clipkd_train::checkpoint::{read_student_config, student_weights_path};
use clipkd_train::config::{DataKind, MetricsFormat, RunConfig};
use clipkd_train::config::{LossKind, LossTermConfig, TrainMode};
use clipkd_train::metrics::{StepRecord, read_metrics};
use clipkd_train::progress::ProgressMode;
use clipkd_train::trainer::{PreparedRun, RunSummary, force_init};

/// A ViT student: embedding 16, vision width 32 (1 layer, 2 heads, patch 8 at 32 px), text
/// width 32 (1 layer, 2 heads, context 16, the CLIP tokenizer's 49408 tokens).
pub const STUDENT_JSON: &str = r#"{
  "embed_dim": 16,
  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
}"#;

/// A ViT teacher with another embedding size (24), so the losses use their projectors.
pub const TEACHER_JSON: &str = r#"{
  "embed_dim": 24,
  "vision_cfg": {"image_size": 32, "layers": 1, "width": 48, "head_width": 16, "patch_size": 8},
  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 3, "layers": 1}
}"#;

/// Writes the two model configs and random teacher weights into `dir`; returns
/// `(student.json, teacher.json, teacher.safetensors)`.
pub fn write_models(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let student = dir.join("student.json");
    let teacher = dir.join("teacher.json");
    std::fs::write(&student, STUDENT_JSON).unwrap();
    std::fs::write(&teacher, TEACHER_JSON).unwrap();
    let weights = dir.join("teacher.safetensors");
    let config = ClipConfig::from_open_clip_json(&teacher).unwrap();
    <Flex as burn::tensor::backend::Backend>::seed(&Default::default(), 1234);
    let model = config.init::<Flex>(&Default::default()).unwrap();
    force_init(&model);
    save_open_clip(&model, &weights).unwrap();
    (student, teacher, weights)
}

const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 30, 30]),
    ("green", [30, 200, 40]),
    ("blue", [30, 40, 220]),
    ("yellow", [230, 220, 30]),
];

/// `len` samples of four kinds: a coloured square on a grey background, captioned with its
/// colour. Image `i` has colour `i % 4` and its square at a position that depends on `i`.
#[derive(Debug)]
pub struct ColourSquares {
    len: usize,
    images: Vec<Arc<DecodedImage>>,
}

impl ColourSquares {
    pub fn new(len: usize) -> Self {
        let images = (0..len)
            .map(|i| {
                let (_, rgb) = COLOURS[i % 4];
                let (ox, oy) = ((i * 7) % 16, (i * 5) % 16);
                let mut px = vec![128u8; 48 * 48 * 3];
                for y in 0..48 {
                    for x in 0..48 {
                        if (ox..ox + 32).contains(&x) && (oy..oy + 32).contains(&y) {
                            px[(y * 48 + x) * 3..(y * 48 + x) * 3 + 3].copy_from_slice(&rgb);
                        }
                    }
                }
                Arc::new(DecodedImage::from_rgb8(48, 48, px))
            })
            .collect();
        ColourSquares { len, images }
    }
}

impl IndexedDataset for ColourSquares {
    fn len(&self) -> usize {
        self.len
    }

    fn sample(&self, index: usize) -> SampleRef {
        SampleRef {
            id: index as u64,
            key: format!("square:{index}"),
            image: ImageSource::Decoded(self.images[index].clone()),
            captions: vec![format!("a photo of a {} square", COLOURS[index % 4].0)],
            label: None,
        }
    }
}

/// The data source of [`ColourSquares`].
pub fn squares(len: usize) -> DataSource {
    DataSource::indexed(ColourSquares::new(len))
}

/// A config for the tiny models: `synthetic` data (replace it with `with_data`), batch 8,
/// 2 loader workers, every step logged, no plots, output in `out`.
/// A loss term of `kind` with `weight` and its default options.
pub fn term(kind: LossKind, weight: f64) -> LossTermConfig {
    LossTermConfig {
        kind,
        weight,
        name: None,
        options: Default::default(),
    }
}

pub fn tiny_config(student: &Path, teacher: &Path, weights: &Path, out: &Path) -> RunConfig {
    let mut c = RunConfig::default();
    c.student.model = ModelSource::File(student.to_path_buf());
    c.teacher.model = ModelSource::File(teacher.to_path_buf());
    c.teacher.weights = Some(weights.to_path_buf());
    c.data.kind = DataKind::Synthetic;
    c.data.synthetic_samples = 32;
    c.data.batch_size = 8;
    c.data.workers = 2;
    c.optim.epochs = 2;
    c.optim.warmup = 2;
    c.optim.lr = 2e-3;
    c.run.output_dir = out.to_path_buf();
    c.run.log_every_steps = 1;
    c.run.metrics_format = MetricsFormat::Jsonl;
    c.run.plots = false;
    c
}

/// Runs `config` on the CPU (Flex, f32 backend) over [`squares`]`(samples)`, quietly,
/// resuming from `resume` when given.
pub fn run_on_squares(
    config: RunConfig,
    mode: TrainMode,
    resume: Option<&str>,
    samples: usize,
) -> RunSummary {
    PreparedRun::prepare(config, mode, resume)
        .unwrap()
        .with_data(squares(samples))
        .unwrap()
        .with_progress(ProgressMode::Quiet)
        .run::<burn::backend::Autodiff<Flex>>(&Default::default())
        .unwrap()
}

/// Two runs' step rows are the same trajectory: the same steps, epochs, learning rates and
/// samples seen, the same loss terms, each term and the total within 1e-6.
pub fn assert_same_steps(straight: &[StepRecord], resumed: &[StepRecord]) {
    assert_eq!(straight.len(), resumed.len(), "number of logged steps");
    for (x, y) in straight.iter().zip(resumed) {
        assert_eq!(x.step, y.step);
        assert_eq!(x.epoch, y.epoch);
        assert_eq!(x.lr, y.lr);
        assert_eq!(
            x.loss.keys().collect::<Vec<_>>(),
            y.loss.keys().collect::<Vec<_>>()
        );
        for (name, va) in &x.loss {
            let vb = y.loss[name];
            assert!(
                (va - vb).abs() <= 1e-6,
                "step {} term {name}: straight {va} vs resumed {vb}",
                x.step
            );
        }
        assert!((x.total - y.total).abs() <= 1e-6, "step {}", x.step);
        assert_eq!(x.samples_seen, y.samples_seen);
    }
}

/// The step rows of a run directory.
pub fn steps(run_dir: &Path) -> Vec<StepRecord> {
    read_metrics(run_dir).unwrap().0
}

/// The relative L2 difference `|a - b| / |b|` (f64 sums).
pub fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared vectors differ in length");
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

/// Every parameter of the student saved in the run's last checkpoint, in model order.
pub fn student_weights(summary: &RunSummary) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor<Flex> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
            self.0.push(param.val().into_data().to_vec().unwrap());
        }
    }
    let dir = summary.checkpoint.as_ref().expect("a checkpoint");
    let config: ClipConfig = read_student_config(dir).unwrap();
    let model =
        load_open_clip::<Flex>(&student_weights_path(dir), &config, &Default::default()).unwrap();
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// The paper's recipe (task + CRD + ICL + FD 2000) and MFD 2000, which reads the student's
/// masked view (its masks draw from the backend RNG).
pub fn recipe_with_mfd() -> Vec<LossTermConfig> {
    vec![
        term(LossKind::Task, 1.0),
        term(LossKind::Crd, 1.0),
        term(LossKind::Icl, 1.0),
        term(LossKind::Fd, 2000.0),
        term(LossKind::Mfd, 2000.0),
    ]
}
