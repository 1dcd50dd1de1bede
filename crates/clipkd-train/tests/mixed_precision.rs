//! Mixed precision (`--precision bf16|f16`): one CLIP-KD step's loss and gradients against
//! f32 from the same weights and data, and f16 dynamic loss scaling skipping an overflowing
//! step and recovering.
//!
//! Alone in its own binary: it seeds the Flex backend's global RNG.

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor, TensorData};
use burn_flex::Flex;
use clipkd_losses::{LossPreset, LossSetConfig};
use clipkd_models::autocast::autocast;
use clipkd_models::{Clip, ClipConfig};
use clipkd_train::loss_scale::LossScaler;
use clipkd_train::optim::AdamWParams;
use clipkd_train::step::{
    DistillModel, MicroBatch, StepOptions, distill_optimizer, distill_terms, train_step,
};

type B = Autodiff<Flex>;

const VIT_STUDENT: &str = r#"{"embed_dim": 16,
  "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
  "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 2}}"#;

const RESNET_STUDENT: &str = r#"{"embed_dim": 16,
  "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
  "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}"#;

fn teacher(size: usize) -> Clip<Flex> {
    let json = format!(
        r#"{{"embed_dim": 24,
        "vision_cfg": {{"image_size": {size}, "layers": 2, "width": 48, "head_width": 16,
                        "patch_size": 16}},
        "text_cfg": {{"context_length": 8, "vocab_size": 64, "width": 48, "heads": 3,
                      "layers": 2}}}}"#
    );
    ClipConfig::from_open_clip_json_str(&json)
        .unwrap()
        .init::<Flex>(&Default::default())
        .unwrap()
}

fn model(json: &str) -> DistillModel<B> {
    let device = Default::default();
    DistillModel::new(
        ClipConfig::from_open_clip_json_str(json)
            .unwrap()
            .init::<B>(&device)
            .unwrap(),
        LossSetConfig::preset(LossPreset::ClipKd, 16, 24)
            .init::<B>(&device)
            .unwrap(),
    )
}

fn batch(n: usize, size: usize) -> MicroBatch<Flex> {
    let device = Default::default();
    let images = Tensor::<Flex, 4>::random([n, 3, size, size], Distribution::Default, &device);
    let mut ids = vec![0i64; n * 8];
    for (i, row) in ids.chunks_mut(8).enumerate() {
        row[0] = 62;
        row[1] = 1 + i as i64;
        row[2] = 2 + (i as i64 * 7) % 50;
        row[3] = 63;
    }
    let tokens = Tensor::from_data(TensorData::new(ids, [n, 8]), &device);
    MicroBatch::new(images, tokens)
}

/// Every parameter's gradient (model order), as f32 values.
struct Grads<'a> {
    grads: &'a GradientsParams,
    scale: f32,
    out: Vec<Vec<f32>>,
}

impl ModuleVisitor<B> for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<Flex, D>(param.id) {
            assert_eq!(
                g.dtype(),
                DType::F32,
                "gradients reach the f32 parameters in f32"
            );
            let values = g.into_data().to_vec::<f32>().unwrap();
            self.out
                .push(values.into_iter().map(|v| v / self.scale).collect());
        }
    }
}

/// The total loss and the gradients of one KD forward/backward, under `compute` autocast, the
/// backward of the loss times `scale` (f16's loss scaling; the gradients are divided back).
fn loss_and_grads(
    model: &DistillModel<B>,
    teacher: &Clip<Flex>,
    data: &MicroBatch<Flex>,
    compute: Option<DType>,
    scale: f64,
) -> (f32, Vec<Vec<f32>>) {
    let scope = autocast(compute);
    let terms = distill_terms(
        Some(teacher),
        model,
        data.images.clone(),
        data.tokens.clone(),
        None,
    )
    .unwrap();
    drop(scope);
    let total = terms.total().unwrap();
    let value: f32 = total.clone().into_scalar();
    let grads = GradientsParams::from_grads(total.mul_scalar(scale).backward(), model);
    let mut visitor = Grads {
        grads: &grads,
        scale: scale as f32,
        out: Vec::new(),
    };
    model.visit(&mut visitor);
    (value, visitor.out)
}

fn l2(a: &[f32], b: Option<&[f32]>) -> f64 {
    match b {
        None => a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt(),
        Some(b) => a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
            .sqrt(),
    }
}

/// How far the mixed-precision gradients are from f32: the relative L2 difference over all
/// parameters together (`‖mixed - f32‖ / ‖f32‖`), the largest and the smallest per parameter
/// (each against `max(‖f32‖, 1e-4 · the largest ‖f32‖)`; the smallest among tensors with a
/// gradient of their own: the Bottleneck branches behind open_clip's zero `bn3` gammas get
/// exactly 0 in both types).
fn differences(reference: &[Vec<f32>], mixed: &[Vec<f32>]) -> (f64, f64, f64) {
    assert_eq!(reference.len(), mixed.len());
    let largest = reference.iter().map(|g| l2(g, None)).fold(0.0, f64::max);
    let (mut diff2, mut norm2) = (0.0, 0.0);
    let mut worst = 0.0f64;
    let mut least = f64::INFINITY;
    for (r, m) in reference.iter().zip(mixed) {
        let own = l2(r, None);
        let diff = l2(r, Some(m));
        diff2 += diff * diff;
        norm2 += own * own;
        worst = worst.max(diff / own.max(1e-4 * largest));
        if own >= 1e-4 * largest {
            least = least.min(diff / own);
        }
    }
    ((diff2 / norm2).sqrt(), worst, least)
}

/// Tolerances. bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3 per value), f16
/// 11 (2.4e-4). Measured here, relative L2 difference of the gradients over all parameters /
/// of the worst parameter: ViT bf16 1.6e-2 / 2.1e-2, f16 (loss scale 2^10) 1.9e-3 / 3.2e-3;
/// ModifiedResNet bf16 4.4e-2 / 1.3, f16 2.6e-2 / 2.7. The ModifiedResNet's worst parameters
/// are BatchNorm gains and biases of its 4-channel stem: their gradient is a sum over 16384
/// positions that cancels to a value 10-100x smaller than its terms, so the half-precision
/// rounding of the terms (the convolutions' backward) shows, as in PyTorch's AMP (which even
/// stores those gradients in half precision); in f32, rounding only the input images and the
/// weights to bf16 already moves the stem's gradients by 19%. f16 does worse than bf16 there
/// despite its longer mantissa: at the largest loss scale that does not overflow, the smallest
/// gradients are still f16 subnormals. So the ViT (no BatchNorm) is held per parameter and the
/// ModifiedResNet on all parameters together, each bound about 3x the measured figure: a cast
/// forgotten or put in the wrong place (an f32 op run in half, a product left in f32) shows
/// in them, and the smallest difference shows that the products did run in half precision.
struct Tolerances {
    loss: f64,
    all: f64,
    per_parameter: Option<f64>,
}

fn check_parity(student_json: &str, size: usize, n: usize, bf16: Tolerances, f16: Tolerances) {
    let teacher = teacher(size);
    let model = model(student_json);
    let data = batch(n, size);
    let (loss, reference) = loss_and_grads(&model, &teacher, &data, None, 1.0);
    // f16 with a loss scale, as the trainer runs it (without one, small gradients flush to
    // zero in the f16 products of the backward): GradScaler's 2^16 halved until the scaled
    // gradients are finite.
    for (dtype, tol) in [(DType::BF16, bf16), (DType::F16, f16)] {
        let mut scale = if dtype == DType::F16 { 65536.0 } else { 1.0 };
        let (mixed_loss, mixed) = loop {
            let (l, g) = loss_and_grads(&model, &teacher, &data, Some(dtype), scale);
            if g.iter().flatten().all(|v| v.is_finite()) {
                break (l, g);
            }
            scale /= 2.0;
            assert!(
                scale >= 1.0,
                "{dtype:?}: gradients not finite even unscaled"
            );
        };
        let (all, worst, least) = differences(&reference, &mixed);
        let loss_diff = ((mixed_loss - loss) / loss).abs() as f64;
        eprintln!(
            "{size}px {dtype:?}, loss scale {scale}: loss {mixed_loss} vs f32 {loss} (relative \
             {loss_diff:.2e}); gradients' relative difference: all {all:.2e}, worst parameter \
             {worst:.2e}, least {least:.2e}"
        );
        assert!(
            loss_diff < tol.loss,
            "{dtype:?} loss {mixed_loss} vs {loss}"
        );
        assert!(all < tol.all, "{dtype:?} gradients differ by {all:.3e}");
        if let Some(bound) = tol.per_parameter {
            assert!(
                worst < bound,
                "{dtype:?} a parameter's gradient differs by {worst:.3e}"
            );
        }
        assert!(
            least > 1e-6,
            "{dtype:?}: no gradient moved: autocast did not act"
        );
    }
    // Outside a scope, the same code is f32 again: bit for bit the reference.
    let (again, grads) = loss_and_grads(&model, &teacher, &data, None, 1.0);
    assert_eq!((again, grads), (loss, reference));
}

/// The Flex backend's RNG is one per process: the tests take turns drawing from it.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn seeded(seed: u64) -> std::sync::MutexGuard<'static, ()> {
    let guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    <Flex as Backend>::seed(&Default::default(), seed);
    guard
}

#[test]
fn a_mixed_precision_step_matches_f32_within_the_rounding_of_half_precision() {
    let _rng = seeded(11);
    let tolerances = |loss, all, per_parameter| Tolerances {
        loss,
        all,
        per_parameter,
    };
    check_parity(
        VIT_STUDENT,
        32,
        6,
        tolerances(2e-3, 5e-2, Some(6e-2)),
        tolerances(5e-4, 6e-3, Some(1e-2)),
    );
    check_parity(
        RESNET_STUDENT,
        64,
        16,
        tolerances(1e-3, 0.12, None),
        tolerances(1e-3, 8e-2, None),
    );
}

fn parameters(model: &DistillModel<B>) -> Vec<Vec<f32>> {
    struct Values(Vec<Vec<f32>>);
    impl ModuleVisitor<Flex> for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
            self.0
                .push(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let mut v = Values(Vec::new());
    model.valid().visit(&mut v);
    v.0
}

/// A scale far beyond f16's range (2^40) makes the scaled gradients overflow in the f16
/// products of the backward: those steps are skipped (parameters untouched), the scale halves
/// each time, and once it is low enough the steps go through and train.
#[test]
fn f16_loss_scaling_skips_overflowing_steps_and_recovers() {
    let _rng = seeded(12);
    let teacher = teacher(32);
    let mut model = model(VIT_STUDENT);
    let mut optimizer = distill_optimizer(&model, AdamWParams::vit());
    let data = batch(6, 32);
    let mut scaler = LossScaler {
        scale: 2f64.powi(40),
        ..LossScaler::new()
    };
    let mut losses = Vec::new();
    for _ in 0..40 {
        let before = parameters(&model);
        let options = StepOptions {
            autocast: Some(DType::F16),
            loss_scale: Some(scaler.scale),
            compute_grad_norm: true,
            ..StepOptions::new(1e-3)
        };
        let out = train_step(
            Some(&teacher),
            model,
            &mut optimizer,
            [data.clone()],
            &options,
        )
        .unwrap();
        scaler.update(out.skipped);
        model = out.model;
        if out.skipped {
            assert!(
                losses.is_empty(),
                "a step was skipped after the scale settled"
            );
            assert!(out.grad_norm.is_none());
            assert_eq!(
                parameters(&model),
                before,
                "a skipped step changed a parameter"
            );
        } else {
            assert_ne!(
                parameters(&model),
                before,
                "a step went through without an update"
            );
            let norm: f32 = out.grad_norm.unwrap().into_scalar();
            assert!(
                norm.is_finite() && norm < 1e4,
                "unscaled gradient norm {norm}"
            );
            losses.push(out.terms.total().unwrap().into_scalar());
            if losses.len() == 8 {
                break;
            }
        }
    }
    eprintln!(
        "skipped {} steps, scale now {}, losses {losses:?}",
        scaler.skipped_steps, scaler.scale
    );
    assert!(scaler.skipped_steps >= 1, "no step overflowed at 2^40");
    assert!(
        scaler.scale < 65504.0,
        "the scale came down below f16's range"
    );
    assert_eq!(losses.len(), 8, "the run recovered and kept training");
    assert!(
        losses[7] < losses[0],
        "the steps after recovery train the fixed batch: {losses:?}"
    );
}
