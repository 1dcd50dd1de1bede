//! A custom distillation loss next to the built-in ones.
//!
//! Defines `TokenLoss`, a loss of its own with a learnable layer that reads intermediate
//! features (student tokens projected to the teacher's width, cosine distance), puts it in one
//! `LossSet` with the paper's CLIP-KD recipe, and runs a few optimizer steps on the losses'
//! parameters with random "embeddings" standing in for two models' outputs.
//!
//! Run: `cargo run -p clipkd-losses --example custom_loss`

use burn::backend::Autodiff;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use burn_flex::Flex;
use clipkd_losses::ops::{cosine_distance_normalized, l2_normalize_smooth};
use clipkd_losses::{
    BuiltinLoss, DistillBatch, DistillInput, DistillLoss, Embeddings, LossError, LossSet,
    LossSetConfig, LossTerms,
};

/// Student tokens `[N, L, C_s]`, projected to the teacher's width and compared with the
/// teacher's tokens `[N, L, C_t]` by cosine distance. Its projection is learnable state.
#[derive(Module, Debug)]
struct TokenLoss<B: Backend> {
    proj: Linear<B>,
    feature: String,
}

impl<B: Backend> TokenLoss<B> {
    fn new(feature: &str, student_width: usize, teacher_width: usize, device: &B::Device) -> Self {
        Self {
            proj: LinearConfig::new(student_width, teacher_width).init(device),
            feature: feature.to_string(),
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
}

type B = Autodiff<Flex>;

fn main() -> Result<(), LossError> {
    let device = Default::default();
    let (n, d_s, d_t) = (16, 32, 48);
    let (tokens, c_s, c_t) = (5, 24, 40);

    // The paper's recipe from its preset, plus our loss with weight 10.
    let mut losses: LossSet<B, MyLoss<B>> = LossSetConfig::clip_kd(d_s, d_t)
        .init::<B>(&device)?
        .map_losses(MyLoss::Builtin)
        .with_loss(
            "tokens",
            10.0,
            MyLoss::Tokens(TokenLoss::new("vision.block6", c_s, c_t, &device)),
        )?;
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
            "vision.block6",
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
        // projection); a trainer steps the student's parameters with the same gradients.
        let grads = GradientsParams::from_grads(total.backward(), &losses);
        losses = optim.step(1e-2, losses, grads);
    }
    Ok(())
}
