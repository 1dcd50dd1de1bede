//! The learner with models and losses of the caller's own: a student that is not `Clip`, a
//! loss module that is not a `LossSet`, an open_clip teacher or one of another family; trained,
//! checkpointed and resumed exactly by the same trainer; and the shape checks of `run_with`.

mod common;

use burn::backend::Autodiff;
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use burn_flex::Flex;
use clipkd_losses::{DistillInput, DistillObjective, LossError, LossSetConfig, LossTerms};
use clipkd_models::{ClipConfig, ClipEncoder, ModelError, load_open_clip};
use clipkd_train::checkpoint::{CHECKPOINTS_DIR, list_checkpoints};
use clipkd_train::config::RunConfig;
use clipkd_train::progress::ProgressMode;
use clipkd_train::{Models, PreparedRun, Student, TrainError};
use common::{squares, steps, tiny_config, write_models};

type B = Autodiff<Flex>;

/// Burn's backend seed is one per process: tests that seed it and draw initial weights must
/// not interleave, or the exact-resume comparison sees another test's draws.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn seeded() -> std::sync::MutexGuard<'static, ()> {
    SEEDED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Mean-pooled pixels and a bag of tokens, each projected to 16 dimensions.
#[derive(Module, Debug)]
struct PoolStudent<B: Backend> {
    image: Linear<B>,
    tokens: Embedding<B>,
    text: Linear<B>,
    logit_scale: Param<Tensor<B, 1>>,
    image_size: usize,
}

impl<B: Backend> PoolStudent<B> {
    fn new(image_size: usize, device: &B::Device) -> Self {
        PoolStudent {
            image: LinearConfig::new(3 * 16, 16).init(device),
            tokens: EmbeddingConfig::new(49408, 8).init(device),
            text: LinearConfig::new(8, 16).init(device),
            logit_scale: Param::from_tensor(Tensor::from_floats([2.659], device)),
            image_size,
        }
    }
}

impl<B: Backend> ClipEncoder<B> for PoolStudent<B> {
    fn embed_dim(&self) -> usize {
        16
    }
    fn image_size(&self) -> [usize; 2] {
        [self.image_size, self.image_size]
    }
    fn context_length(&self) -> usize {
        16
    }
    fn vocab_size(&self) -> usize {
        49408
    }
    fn encode_image(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, ModelError> {
        // A 4 x 4 grid of mean colours.
        let [n, c, h, w] = images.dims();
        let pooled = images
            .reshape([n, c, 4, h / 4, 4, w / 4])
            .mean_dim(5)
            .mean_dim(3)
            .reshape([n, c * 16]);
        Ok(self.image.forward(pooled))
    }
    fn encode_text(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 2>, ModelError> {
        let [n, _] = tokens.dims();
        Ok(self
            .text
            .forward(self.tokens.forward(tokens).mean_dim(1).reshape([n, 8])))
    }
    fn logit_scale(&self) -> Tensor<B, 1> {
        self.logit_scale.val()
    }
}

impl<B: AutodiffBackend> Student<B> for PoolStudent<B> {}

/// A loss module of its own: the cosine distance of the student's image embeddings, mapped
/// by a learnable layer, to the teacher's (student 16 -> teacher 24), and the CLIP task loss.
#[derive(Module, Debug)]
struct AlignObjective<B: Backend> {
    map: Linear<B>,
}

impl<B: Backend> DistillObjective<B> for AlignObjective<B> {
    fn forward(&self, input: &DistillInput<B>) -> Result<LossTerms<B>, LossError> {
        let s = clipkd_losses::ops::l2_normalize_smooth(
            self.map.forward(input.student().image().clone()),
        );
        let t = input.teacher().image_normalized().clone();
        let align = (s * t).sum_dim(1).mean().neg().add_scalar(1.0);
        let mut terms = LossTerms::single("align", align);
        let task = clipkd_losses::TaskLossConfig::new()
            .init()
            .forward(input.student())?;
        terms.push("task", 1.0, task);
        Ok(terms)
    }
}

fn setup(dir: &std::path::Path, out: &str) -> (RunConfig, clipkd_models::Clip<Flex>) {
    let (student, teacher, weights) = write_models(dir);
    let mut config = tiny_config(&student, &teacher, &weights, &dir.join(out));
    config.optim.epochs = 2; // 4 steps per epoch over 32 squares
    let teacher_config = ClipConfig::from_open_clip_json(&teacher).unwrap();
    let teacher = load_open_clip::<Flex>(&weights, &teacher_config, &Default::default()).unwrap();
    (config, teacher)
}

fn run(
    config: RunConfig,
    resume: Option<&str>,
    teacher: &clipkd_models::Clip<Flex>,
) -> Result<clipkd_train::RunSummary, TrainError> {
    let device = Default::default();
    <B as Backend>::seed(&device, 3);
    let student = PoolStudent::<B>::new(32, &device);
    let losses = AlignObjective {
        map: LinearConfig::new(16, 24).init::<B>(&device),
    };
    PreparedRun::prepare_for(config, resume, student.shape(), Some(teacher.shape()))?
        .with_data(squares(32))?
        .with_progress(ProgressMode::Quiet)
        .run_with(
            &device,
            Models {
                student,
                teacher: Some(teacher.clone()),
                losses,
            },
        )
}

/// Straight through, and stopped at step 3 then resumed: the same losses at every step (the
/// checkpoint holds the custom student and loss module; no open_clip files, since the student
/// exports none).
#[test]
fn a_custom_student_and_loss_train_checkpoint_and_resume_exactly() {
    let _seeded = seeded();
    let dir = tempfile::tempdir().unwrap();
    let (config, teacher) = setup(dir.path(), "straight");
    let straight = run(config.clone(), None, &teacher).unwrap();
    assert_eq!(straight.steps, 8);
    let rows = steps(&straight.run_dir);
    assert_eq!(rows.len(), 8);
    assert_eq!(
        rows[0].loss.keys().map(String::as_str).collect::<Vec<_>>(),
        ["align", "task"]
    );
    let first = rows[0].loss["align"];
    let last = rows[7].loss["align"];
    assert!(
        last < first,
        "the student moved toward the teacher: {first} -> {last}"
    );

    let mut stopped = config.clone();
    stopped.run.output_dir = dir.path().join("resumed");
    stopped.run.stop_after_steps = Some(3);
    run(stopped.clone(), None, &teacher).unwrap();
    let ckpts = list_checkpoints(&stopped.run.output_dir.join(CHECKPOINTS_DIR)).unwrap();
    let (_, latest) = ckpts.last().unwrap();
    assert!(latest.join("model.mpk").is_file());
    assert!(!latest.join("student.safetensors").exists());
    stopped.run.stop_after_steps = None;
    run(stopped.clone(), Some("latest"), &teacher).unwrap();
    let resumed = steps(&stopped.run.output_dir);
    assert_eq!(resumed.len(), 8);
    for (a, b) in rows.iter().zip(&resumed) {
        assert_eq!(a.step, b.step);
        for (name, v) in &a.loss {
            assert!(
                (v - b.loss[name]).abs() <= 1e-6,
                "step {} {name}: {v} vs {}",
                a.step,
                b.loss[name]
            );
        }
    }
}

/// `run_with` refuses models that do not match what the run was prepared for, and losses that
/// read a view or a feature the student does not have.
#[test]
fn models_that_do_not_fit_the_preparation_are_refused() {
    let _seeded = seeded();
    let dir = tempfile::tempdir().unwrap();
    let (config, teacher) = setup(dir.path(), "run");
    let device = Default::default();
    let prepared = |c: RunConfig| {
        PreparedRun::prepare_for(
            c,
            None,
            PoolStudent::<B>::new(32, &device).shape(),
            Some(teacher.shape()),
        )
        .unwrap()
        .with_data(squares(32))
        .unwrap()
        .with_progress(ProgressMode::Quiet)
    };
    // A student of another image size.
    let e = prepared(config.clone())
        .run_with(
            &device,
            Models {
                student: PoolStudent::<B>::new(64, &device),
                teacher: Some(teacher.clone()),
                losses: AlignObjective {
                    map: LinearConfig::new(16, 24).init::<B>(&device),
                },
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("image_size: [64, 64]") && e.contains("[32, 32]"),
        "{e}"
    );
    // The paper's losses with MFD, which reads a masked view this student has no way to give.
    let mut with_mfd = config.clone();
    with_mfd.run.output_dir = dir.path().join("mfd");
    let run = prepared(with_mfd);
    let losses = LossSetConfig::preset(clipkd_losses::LossPreset::Mfd, 16, 24)
        .init::<B>(&device)
        .unwrap();
    let e = run
        .run_with(
            &device,
            Models {
                student: PoolStudent::<B>::new(32, &device),
                teacher: Some(teacher.clone()),
                losses,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("masked image view"), "{e}");
    // No teacher for a run prepared for distillation.
    let mut none = config;
    none.run.output_dir = dir.path().join("none");
    let e = prepared(none)
        .run_with(
            &device,
            Models::<_, clipkd_models::Clip<Flex>, _> {
                student: PoolStudent::<B>::new(32, &device),
                teacher: None,
                losses: AlignObjective {
                    map: LinearConfig::new(16, 24).init::<B>(&device),
                },
            },
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("no teacher was given"), "{e}");
}

/// A teacher of another family (not open_clip: the pooling model above, frozen on the inner
/// backend) and the paper's losses from the config (`loss_config()`: task + CRD + ICL + FD,
/// sized 16 -> 16): every term is trained and FD, the feature mimicry, falls.
#[test]
fn a_teacher_of_another_family_distills_with_the_papers_losses() {
    let _seeded = seeded();
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = setup(dir.path(), "own-teacher");
    let device = Default::default();
    <B as Backend>::seed(&device, 5);
    let teacher = PoolStudent::<Flex>::new(32, &device);
    let student = PoolStudent::<B>::new(32, &device);
    let prepared =
        PreparedRun::prepare_for(config, None, student.shape(), Some(teacher.shape())).unwrap();
    let losses = prepared.loss_config().init::<B>(&device).unwrap();
    let summary = prepared
        .with_data(squares(32))
        .unwrap()
        .with_progress(ProgressMode::Quiet)
        .run_with(
            &device,
            Models {
                student,
                teacher: Some(teacher),
                losses,
            },
        )
        .unwrap();
    let rows = steps(&summary.run_dir);
    assert_eq!(rows.len(), 8);
    let mut names: Vec<_> = rows[0].loss.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["crd", "fd", "icl", "task"]);
    let (first, last) = (rows[0].loss["fd"], rows[7].loss["fd"]);
    assert!(
        last < first,
        "the student's features moved toward the teacher's: {first} -> {last}"
    );
}
