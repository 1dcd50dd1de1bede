//! A custom distillation loss next to the built-in ones, trained end to end.
//!
//! Defines `TokenLoss`, a loss of its own with a learnable layer that reads intermediate
//! features (student tokens projected to the teacher's width, cosine distance), and puts it in
//! one `LossSet` with the paper's CLIP-KD recipe. Then:
//! 1. the set on its own: a few optimizer steps on the losses' parameters with random
//!    "embeddings" and "tokens" standing in for two models' outputs;
//! 2. the same set trained with a student by clipkd's trainer: a small open_clip ViT student
//!    distilled from a larger ViT teacher, the loss reading block 0 of the student and block 1
//!    of the teacher (the trainer fills the features the loss asks for, by name).
//!
//! Run: `cargo run --release -p clipkd-train --example custom_loss` (seconds; CI runs it).

use burn::backend::Autodiff;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use burn_flex::Flex;
use clipkd_losses::ops::{cosine_distance_normalized, l2_normalize_smooth};
use clipkd_losses::{
    BuiltinLoss, DistillBatch, DistillInput, DistillLoss, Embeddings, FeatureRequest, LossError,
    LossSet, LossSetConfig, LossTerms,
};
use clipkd_models::{ClipConfig, ClipEncoder, load_open_clip, save_open_clip};
use clipkd_train::config::{DataKind, RunConfig};
use clipkd_train::progress::ProgressMode;
use clipkd_train::{Models, PreparedRun, TrainError};

/// Student tokens `[N, L, C_s]`, projected to the teacher's width and compared with the
/// teacher's tokens `[N, L, C_t]` by cosine distance. Its projection is learnable state.
#[derive(Module, Debug)]
struct TokenLoss<B: Backend> {
    proj: Linear<B>,
    feature: String,
    /// The model features a trainer fills `feature` with: `(student's, teacher's)`.
    sources: (String, String),
}

impl<B: Backend> TokenLoss<B> {
    fn new(
        feature: &str,
        (student, teacher): (&str, &str),
        student_width: usize,
        teacher_width: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            proj: LinearConfig::new(student_width, teacher_width).init(device),
            feature: feature.to_string(),
            sources: (student.to_string(), teacher.to_string()),
        }
    }
}

impl<B: Backend> DistillLoss<B> for TokenLoss<B> {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let pair =
            batch
                .input()
                .feature(&self.feature)
                .ok_or_else(|| LossError::InvalidConfig {
                    what: "token loss".into(),
                    reason: format!("the input has no features named `{}`", self.feature),
                })?;
        let [n, l, _] = pair.student.dims();
        let [_, _, c_t] = pair.teacher.dims();
        let student = self
            .proj
            .forward(pair.student.clone())
            .reshape([n * l, c_t]);
        let teacher = pair.teacher.clone().reshape([n * l, c_t]);
        let value =
            cosine_distance_normalized(l2_normalize_smooth(student), l2_normalize_smooth(teacher));
        Ok(LossTerms::single("tokens", value))
    }

    /// Asks a trainer for its feature pair (when the input is built by hand, unused).
    fn feature_requests(&self) -> Vec<FeatureRequest> {
        vec![FeatureRequest::new(
            &self.feature,
            &self.sources.0,
            &self.sources.1,
        )]
    }
}

/// The losses this research project uses: the built-in ones and its own. (Burn has no `Module`
/// for `Box`, so the size lint is silenced rather than the variants boxed.)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
enum MyLoss<B: Backend> {
    Builtin(BuiltinLoss<B>),
    Tokens(TokenLoss<B>),
}

impl<B: Backend> DistillLoss<B> for MyLoss<B> {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        match self {
            MyLoss::Builtin(loss) => loss.forward(batch),
            MyLoss::Tokens(loss) => loss.forward(batch),
        }
    }

    fn requires_masked_view(&self) -> bool {
        match self {
            MyLoss::Builtin(loss) => loss.requires_masked_view(),
            MyLoss::Tokens(_) => false,
        }
    }

    fn feature_requests(&self) -> Vec<FeatureRequest> {
        match self {
            MyLoss::Builtin(loss) => loss.feature_requests(),
            MyLoss::Tokens(loss) => loss.feature_requests(),
        }
    }
}

/// The paper's recipe for embeddings of sizes `d_s`/`d_t`, plus `TokenLoss` with weight 10 on
/// tokens of widths `c_s`/`c_t`.
fn my_losses(
    (d_s, d_t): (usize, usize),
    (c_s, c_t): (usize, usize),
    sources: (&str, &str),
    device: &burn::tensor::Device<B>,
) -> Result<LossSet<B, MyLoss<B>>, LossError> {
    LossSetConfig::clip_kd(d_s, d_t)
        .init::<B>(device)?
        .map_losses(MyLoss::Builtin)
        .with_loss(
            "tokens",
            10.0,
            MyLoss::Tokens(TokenLoss::new("vision.block", sources, c_s, c_t, device)),
        )
}

type B = Autodiff<Flex>;

fn main() -> Result<(), TrainError> {
    loss_set_alone()?;
    trained_with_a_student()
}

/// 1. The loss set on stand-ins for two models' outputs.
fn loss_set_alone() -> Result<(), LossError> {
    let device = Default::default();
    let (n, d_s, d_t) = (16, 32, 48);
    let (tokens, c_s, c_t) = (5, 24, 40);

    // Seeded, so that every run prints the same numbers.
    <B as Backend>::seed(&device, 0);
    // The paper's recipe from its preset, plus our loss with weight 10.
    let mut losses = my_losses((d_s, d_t), (c_s, c_t), ("", ""), &device)?;
    losses.check_student(true)?;
    println!(
        "loss set: {} entries, {} parameters",
        losses.len(),
        losses.num_params()
    );

    // Stand-ins for a teacher and a student forward pass (a trainer passes the models' outputs).
    let randn =
        |shape: [usize; 2]| Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let teacher_img = randn([n, d_t]);
    let teacher_txt = teacher_img.clone() + randn([n, d_t]);
    let student_img = randn([n, d_s]);
    let student_txt = student_img.clone() + randn([n, d_s]);
    let teacher_tokens =
        Tensor::<B, 3>::random([n, tokens, c_t], Distribution::Normal(0.0, 1.0), &device);
    let student_tokens =
        Tensor::<B, 3>::random([n, tokens, c_s], Distribution::Normal(0.0, 1.0), &device);

    let mut optim = AdamWConfig::new().init();
    for step in 0..5 {
        let student = Embeddings::from_log_scale(
            student_img.clone(),
            student_txt.clone(),
            Tensor::from_floats([2.659], &device),
        )?;
        let teacher = Embeddings::from_log_scale(
            teacher_img.clone(),
            teacher_txt.clone(),
            Tensor::from_floats([4.6], &device),
        )?;
        let input = DistillInput::new(student, teacher)?.with_features(
            "vision.block",
            student_tokens.clone(),
            teacher_tokens.clone(),
        )?;
        let terms = losses.forward(&input)?;
        let total = terms.total()?;
        let report: Vec<String> = terms
            .to_scalars()
            .iter()
            .map(|(name, value)| format!("{name} {value:.4}"))
            .collect();
        println!(
            "step {step}: total {:.4} = {}",
            total.clone().into_scalar(),
            report.join(" + ")
        );
        // Only the losses' own parameters are trained here (projector, ICL scale, token
        // projection); below, the trainer steps the student's with the same gradients.
        let grads = GradientsParams::from_grads(total.backward(), &losses);
        losses = optim.step(1e-2, losses, grads);
    }
    Ok(())
}

/// 2. The same loss set distilling a student with clipkd's trainer.
fn trained_with_a_student() -> Result<(), TrainError> {
    let device = Default::default();
    let work = std::env::temp_dir().join(format!("clipkd-custom-loss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| TrainError::io("creating", &work, e))?;
    // Two ViTs on the same 32 px patch grid (16 patches + class token), widths 32 and 48.
    let vit = |width: usize, layers: usize, dim: usize| {
        ClipConfig::from_open_clip_json_str(&format!(
            r#"{{"embed_dim": {dim},
                "vision_cfg": {{"image_size": 32, "layers": {layers}, "width": {width},
                               "head_width": 16, "patch_size": 8}},
                "text_cfg": {{"context_length": 16, "vocab_size": 49408, "width": {width},
                             "heads": 2, "layers": 1}}}}"#
        ))
    };
    let (student_config, teacher_config) = (vit(32, 1, 16)?, vit(48, 2, 24)?);
    // The teacher, saved and loaded back as an open_clip checkpoint would be.
    <Flex as Backend>::seed(&device, 1);
    let teacher_file = work.join("teacher.safetensors");
    save_open_clip(&teacher_config.init::<Flex>(&device)?, &teacher_file)?;
    let teacher = load_open_clip::<Flex>(&teacher_file, &teacher_config, &device)?;
    <B as Backend>::seed(&device, 0);
    let student = student_config.init::<B>(&device)?;

    let mut config = RunConfig::default();
    config.data.kind = DataKind::Synthetic;
    config.data.synthetic_samples = 64;
    config.data.batch_size = 16;
    config.data.workers = 2;
    config.optim.epochs = 2;
    config.optim.warmup = 1;
    config.optim.lr = 1e-3;
    config.run.output_dir = work.join("run");
    config.run.log_every_steps = 2;
    config.run.plots = false;
    let prepared = PreparedRun::prepare_for(config, None, student.shape(), Some(teacher.shape()))?
        .with_progress(ProgressMode::Quiet);
    // Student block 0 (width 32) against teacher block 1 (width 48).
    let losses = my_losses(
        (16, 24),
        (32, 48),
        (
            "visual.transformer.resblocks.0",
            "visual.transformer.resblocks.1",
        ),
        &device,
    )?;
    let summary = prepared.run_with(
        &device,
        Models {
            student,
            teacher: Some(teacher),
            losses,
        },
    )?;
    let (terms, total) = summary.last_loss.clone().expect("logged steps");
    println!(
        "trained a student with the set: {} steps, last loss {total:.4} ({})",
        summary.steps,
        terms
            .iter()
            .map(|(n, v)| format!("{n} {v:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(terms.contains_key("tokens"), "the custom term was trained");
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
