//! A student of your own design, distilled by clipkd's trainer.
//!
//! `PatchStudent` is a few lines of Burn: a patch convolution averaged over the image, and a
//! bag of token embeddings, each projected into one embedding space, with CLIP's learnable
//! logit scale. It implements `ClipEncoder` (what any CLIP-like model is) and `Student` (what
//! training needs; every method has a default, one is overridden here) and is then distilled
//! from an open_clip ViT teacher with the paper's losses (task + CRD + ICL + FD) by the same
//! trainer `clipkd distill` runs: data loading, AdamW with CLIP-KD's parameter groups, the
//! schedule, atomic checkpoints, exact resume and evaluation.
//!
//! The data is the demo's rendered captioned-shapes set (no download). The teacher is itself
//! trained first, briefly, as an open_clip model by the same trainer, and loaded back from its
//! checkpoint's open_clip safetensors, as a real teacher checkpoint would be. Then the student
//! is distilled: stopped half way, resumed, finished and evaluated (zero-shot and retrieval on
//! the held-out split).
//!
//! Run: `cargo run --release -p clipkd-train --example custom_student` (seconds; CI runs it).

use burn::backend::Autodiff;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use burn_flex::Flex;
use clipkd_data::dataset::shapes::{ShapesConfig, write_shapes_dataset};
use clipkd_models::{ClipConfig, ClipEncoder, ModelError, ModelSource, load_open_clip};
use clipkd_train::checkpoint::{CHECKPOINTS_DIR, resolve_checkpoint, student_weights_path};
use clipkd_train::config::{DataKind, RunConfig, TrainMode};
use clipkd_train::eval::{ClassNames, EvalConfig, RetrievalConfig, Templates, ZeroShotConfig};
use clipkd_train::progress::ProgressMode;
use clipkd_train::{Models, PreparedRun, Student, TrainError};

/// The student: image = mean of patch features, text = mean of token embeddings.
#[derive(Module, Debug)]
struct PatchStudent<B: Backend> {
    patches: Conv2d<B>,
    image_proj: Linear<B>,
    tokens: Embedding<B>,
    text_proj: Linear<B>,
    logit_scale: Param<Tensor<B, 1>>,
    image_size: usize,
    context_length: usize,
}

impl<B: Backend> PatchStudent<B> {
    fn new(image_size: usize, context_length: usize, device: &B::Device) -> Self {
        let (width, dim, patch) = (48, 32, 8);
        PatchStudent {
            patches: Conv2dConfig::new([3, width], [patch, patch])
                .with_stride([patch, patch])
                .init(device),
            image_proj: LinearConfig::new(width, dim).init(device),
            // The CLIP tokenizer's 49408 ids.
            tokens: EmbeddingConfig::new(49408, width).init(device),
            text_proj: LinearConfig::new(width, dim).init(device),
            // CLIP's initial log scale, ln(1 / 0.07).
            logit_scale: Param::from_tensor(Tensor::from_floats([2.659_26], device)),
            image_size,
            context_length,
        }
    }
}

impl<B: Backend> ClipEncoder<B> for PatchStudent<B> {
    fn embed_dim(&self) -> usize {
        32
    }

    fn image_size(&self) -> [usize; 2] {
        [self.image_size, self.image_size]
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn vocab_size(&self) -> usize {
        49408
    }

    fn encode_image(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, ModelError> {
        let x = gelu(self.patches.forward(images)); // [N, width, h, w]
        let [n, c, _, _] = x.dims();
        Ok(self
            .image_proj
            .forward(x.flatten::<3>(2, 3).mean_dim(2).reshape([n, c])))
    }

    fn encode_text(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 2>, ModelError> {
        // The mean over the caption's tokens (padding is id 0).
        let mask = tokens
            .clone()
            .not_equal_elem(0)
            .float()
            .unsqueeze_dim::<3>(2); // [N, L, 1]
        let x = self.tokens.forward(tokens) * mask.clone(); // [N, L, width]
        let [n, _, c] = x.dims();
        let mean = x.sum_dim(1).reshape([n, c]) / mask.sum_dim(1).reshape([n, 1]).clamp_min(1.0);
        Ok(self.text_proj.forward(mean))
    }

    fn logit_scale(&self) -> Tensor<B, 1> {
        self.logit_scale.val()
    }
}

/// Training needs nothing more than the defaults (parameter names from the module's fields,
/// grouped by CLIP-KD's weight-decay rule, ViT AdamW settings); the step-end hook is
/// overridden to clamp the logit scale as CLIP does.
impl<B: AutodiffBackend> Student<B> for PatchStudent<B> {
    fn after_step(mut self) -> Self {
        self.logit_scale = self
            .logit_scale
            .map(|t| t.clamp(0.0, 4.605_17).detach().require_grad());
        self
    }
}

type B = Autodiff<Flex>;

fn main() -> Result<(), TrainError> {
    let device = Default::default();
    let work = std::env::temp_dir().join(format!("clipkd-custom-student-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);

    // Data: the rendered shapes, 32 px; train CSV, and a held-out image folder + CSV.
    let shapes = ShapesConfig {
        train_samples: 384,
        heldout_samples: 60,
        ..ShapesConfig::default()
    };
    let files = write_shapes_dataset(&shapes, work.join("data"))?;
    let mut config = RunConfig::default();
    config.data.train_data = Some(files.train_csv.to_string_lossy().into_owned());
    config.data.data_root = Some(files.root.to_string_lossy().into_owned());
    config.data.kind = DataKind::Csv;
    config.data.batch_size = 32;
    config.data.workers = 2;
    config.optim.lr = 1e-3;
    config.optim.warmup = 2;
    config.run.log_every_steps = 4;
    config.run.plots = false;
    config.eval = EvalConfig {
        zero_shot: Some(ZeroShotConfig {
            root: files.heldout_dir.clone(),
            classnames: ClassNames::File(files.classnames.clone()),
            templates: Templates::File(files.templates.clone()),
        }),
        retrieval: Some(RetrievalConfig::new(
            files.heldout_csv.clone(),
            Some(files.root.clone()),
        )),
        every_epochs: Some(1),
        ..EvalConfig::default()
    };

    // The teacher: a small open_clip ViT, trained briefly by the trainer as open_clip models
    // are (`clipkd train`), then loaded from its checkpoint like any open_clip checkpoint.
    let teacher_config = ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 64,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32,
                           "patch_size": 8},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2,
                         "layers": 2}}"#,
    )?;
    let mut teacher_run = config.clone();
    // An inline model config (`[student.model.config]` in a TOML file).
    teacher_run.student.model = ModelSource::from(teacher_config.clone());
    teacher_run.optim.epochs = 3;
    teacher_run.run.output_dir = work.join("teacher");
    teacher_run.eval = EvalConfig::default();
    let summary = PreparedRun::prepare(teacher_run, TrainMode::Baseline, None)?
        .with_progress(ProgressMode::Quiet)
        .run::<B>(&device)?;
    let teacher_ckpt = resolve_checkpoint("latest", &summary.run_dir.join(CHECKPOINTS_DIR))?;
    let teacher = load_open_clip::<Flex>(
        student_weights_path(&teacher_ckpt),
        &teacher_config,
        &device,
    )?;
    println!("teacher: {} steps", summary.steps);

    // The student, distilled with the config's losses (the paper's recipe, sized for these
    // two models): stopped after 6 of 24 steps, as if interrupted ...
    config.optim.epochs = 2;
    config.run.output_dir = work.join("student");
    config.run.stop_after_steps = Some(6);
    let new_student = |seed| {
        <B as Backend>::seed(&device, seed);
        PatchStudent::<B>::new(32, 32, &device)
    };
    let student = new_student(0);
    let prepared =
        PreparedRun::prepare_for(config.clone(), None, student.shape(), Some(teacher.shape()))?
            .with_progress(ProgressMode::Quiet);
    let losses = prepared.loss_config().init::<B>(&device)?;
    let first = prepared.run_with(
        &device,
        Models {
            student,
            teacher: Some(teacher.clone()),
            losses,
        },
    )?;
    println!(
        "student: stopped at step {} of {}",
        first.steps, first.total_steps
    );

    // ... and resumed from its checkpoint (weights, optimizer, data position) to the end. The
    // models passed in are replaced by the checkpoint's.
    config.run.stop_after_steps = None;
    let student = new_student(1);
    let prepared = PreparedRun::prepare_for(
        config,
        Some("latest"),
        student.shape(),
        Some(teacher.shape()),
    )?
    .with_progress(ProgressMode::Quiet);
    let losses = prepared.loss_config().init::<B>(&device)?;
    let done = prepared.run_with(
        &device,
        Models {
            student,
            teacher: Some(teacher),
            losses,
        },
    )?;
    let (terms, total) = done.last_loss.clone().expect("logged steps");
    println!(
        "student: finished at step {}, loss {total:.3} ({})",
        done.steps,
        terms
            .iter()
            .map(|(n, v)| format!("{n} {v:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let eval = done.last_eval.expect("evaluated at each epoch end");
    println!(
        "held-out: zero-shot top-1 {:.3}, image->text R@1 {:.3} ({} classes, chance {:.3})",
        eval["zeroshot/top1"],
        eval["retrieval/image_to_text_R@1"],
        files.classes,
        1.0 / files.classes as f64
    );
    assert_eq!(done.steps, done.total_steps);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
