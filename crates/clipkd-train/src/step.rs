//! One distillation step: teacher forward (no autodiff), student forward, losses, backward,
//! AdamW with the student's parameter groups, the student's step-end hook (CLIP's
//! `logit_scale` clamp).
//!
//! Generic over the student ([`Student`]), the teacher ([`ClipEncoder`] on the inner backend)
//! and the loss module ([`DistillObjective`]); `Clip` and `LossSet` are the defaults.

use std::marker::PhantomData;

use burn::module::{AutodiffModule, Module, ModuleDisplay, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, ElementConversion, Int, Tensor};
use clipkd_losses::{DistillInput, DistillObjective, Embeddings, LossSet, LossTerms};
use clipkd_models::autocast::autocast;
use clipkd_models::{Clip, ClipEncoder};

use crate::error::TrainError;
use crate::optim::{
    AdamWParams, DeviceScalar, GroupKind, GroupedAdamW, ParamPaths, clip_coefficient,
    global_grad_norm, grad_clip_factor,
};
use crate::student::Student;

pub use crate::student::MAX_LOG_LOGIT_SCALE;

/// What the optimizer trains: the student and the loss module's own parameters (projectors,
/// ICL/AFD scales), together so that one optimizer and one checkpoint cover both.
///
/// Parameter names are the student's ([`Student::parameter_names`]) and `losses.<path>`.
#[derive(Module, Debug)]
pub struct DistillModel<B: Backend, M: Module<B> = Clip<B>, L: Module<B> = LossSet<B>> {
    /// The student.
    pub student: M,
    /// The loss module (with its projector and learnable scales).
    pub losses: L,
    /// Burn's derive needs the backend in a field; a module without state or record entry.
    pub backend: PhantomData<B>,
}

impl<B: Backend, M: Module<B>, L: Module<B>> DistillModel<B, M, L> {
    /// The student and the loss module, trained together.
    pub fn new(student: M, losses: L) -> Self {
        DistillModel {
            student,
            losses,
            backend: PhantomData,
        }
    }
}

/// The bounds the trainer puts on a loss module: a [`DistillObjective`] that is a Burn module
/// on an autodiff backend. Implemented for every such type; nothing to implement.
pub trait TrainableObjective<B: AutodiffBackend>:
    AutodiffModule<B, InnerModule: ModuleDisplay> + ModuleDisplay + DistillObjective<B>
{
}

impl<B, L> TrainableObjective<B> for L
where
    B: AutodiffBackend,
    L: AutodiffModule<B> + ModuleDisplay + DistillObjective<B>,
    L::InnerModule: ModuleDisplay,
{
}

/// The parameter groups of a [`DistillModel`]: the loss module's parameters in their own
/// group; the student's by [`Student::parameter_group`] of their
/// [`Student::parameter_names`] (for `Clip`, CLIP-KD's rule on open_clip names). Returns
/// `(name, rank, id, group)` for every parameter, in model order.
pub fn distill_param_groups<B, S, L>(
    model: &DistillModel<B, S, L>,
) -> Vec<(String, usize, ParamId, GroupKind)>
where
    B: AutodiffBackend,
    S: Student<B>,
    L: TrainableObjective<B>,
{
    let mut out: Vec<(String, usize, ParamId, GroupKind)> = model
        .student
        .parameter_names()
        .into_iter()
        .map(|(name, rank, id)| {
            let kind = model.student.parameter_group(&name, rank);
            (name, rank, id, kind)
        })
        .collect();
    let mut losses = ParamPaths::default();
    model.losses.visit(&mut losses);
    out.extend(
        losses
            .params
            .into_iter()
            .map(|(path, rank, id)| (format!("losses.{path}"), rank, id, GroupKind::Loss)),
    );
    out
}

/// The AdamW of a [`DistillModel`] with its parameter groups ([`distill_param_groups`]).
pub fn distill_optimizer<B, S, L>(
    model: &DistillModel<B, S, L>,
    params: AdamWParams,
) -> GroupedAdamW<B, DistillModel<B, S, L>>
where
    B: AutodiffBackend,
    S: Student<B>,
    L: TrainableObjective<B>,
{
    let kinds: Vec<(ParamId, GroupKind)> = distill_param_groups(model)
        .into_iter()
        .map(|(_, _, id, kind)| (id, kind))
        .collect();
    GroupedAdamW::from_kinds(&kinds, params).with_zero_moments(model)
}

/// Runs the teacher (if any) and the student on the same pixels and tokens and returns the
/// weighted loss terms (with the autodiff graph of the student and the loss module): the
/// loss module on [`distill_input`].
pub fn distill_terms<B, S, T, L>(
    teacher: Option<&T>,
    model: &DistillModel<B, S, L>,
    images: Tensor<B::InnerBackend, 4>,
    tokens: Tensor<B::InnerBackend, 2, Int>,
    mask_ratio: Option<f64>,
) -> Result<LossTerms<B>, TrainError>
where
    B: AutodiffBackend,
    S: Student<B>,
    T: ClipEncoder<B::InnerBackend>,
    L: TrainableObjective<B>,
{
    let input = distill_input(teacher, model, MicroBatch::new(images, tokens), mask_ratio)?;
    Ok(model.losses.forward(&input)?)
}

/// Runs the teacher (if any) and the student on the same pixels and tokens and returns what
/// the loss module reads: both models' embeddings, the intermediate features its losses
/// request, and the student's masked view when it needs one (with the autodiff graph of the
/// student).
///
/// The teacher runs on the inner backend, so it builds no autodiff graph. A micro-batch that
/// carries the teacher's outputs ([`TeacherOutputs`]: a teacher cache, another framework) uses
/// them instead of running `teacher`; the losses must then read no intermediate teacher
/// feature. With no teacher, the loss module must only hold losses that do not read the
/// teacher (the task loss): the student's own detached embeddings fill the teacher slot.
/// `mask_ratio` adds the student's masked view (MFD) when the loss module needs it.
///
/// # Shapes
/// - `batch.images`: `[N, 3, H, W]` normalized pixels; `batch.tokens`: `[N, C]`
pub fn distill_input<B, S, T, L>(
    teacher: Option<&T>,
    model: &DistillModel<B, S, L>,
    batch: MicroBatch<B::InnerBackend>,
    mask_ratio: Option<f64>,
) -> Result<DistillInput<B>, TrainError>
where
    B: AutodiffBackend,
    S: Student<B>,
    T: ClipEncoder<B::InnerBackend>,
    L: TrainableObjective<B>,
{
    // Intermediate features the losses read, by model feature name.
    let requests = model.losses.feature_requests();
    let student_names: Vec<String> = requests.iter().map(|r| r.student.clone()).collect();
    let teacher_names: Vec<String> = requests.iter().map(|r| r.teacher.clone()).collect();
    let MicroBatch {
        images,
        tokens,
        teacher: stored,
    } = batch;
    let teacher = match (stored, teacher) {
        (Some(stored), _) => {
            if !teacher_names.is_empty() {
                return Err(TrainError::config(
                    "loss",
                    format!(
                        "the losses read the teacher's intermediate features ({}), which stored \
                         teacher outputs do not hold: distill from the teacher model",
                        teacher_names.join(", ")
                    ),
                ));
            }
            let n = images.dims()[0];
            stored.check_rows(n)?;
            Some((
                Tensor::<B, 2>::from_inner(stored.image),
                Tensor::<B, 2>::from_inner(stored.text),
                Tensor::<B, 1>::from_inner(stored.log_logit_scale),
                Vec::new(),
            ))
        }
        (None, Some(t)) => {
            let (image, features) = t.encode_image_with_features(images.clone(), &teacher_names)?;
            Some((
                Tensor::<B, 2>::from_inner(image),
                Tensor::<B, 2>::from_inner(t.encode_text(tokens.clone())?),
                Tensor::<B, 1>::from_inner(t.logit_scale()),
                features.into_iter().map(Tensor::from_inner).collect(),
            ))
        }
        (None, None) => None,
    };
    let images = Tensor::<B, 4>::from_inner(images);
    let masked = match mask_ratio {
        Some(ratio) if model.losses.requires_masked_view() => {
            Some(model.student.encode_image_masked(images.clone(), ratio)?)
        }
        _ => None,
    };
    let (student_image, student_features) = model
        .student
        .encode_image_with_features(images, &student_names)?;
    let student = Embeddings::from_log_scale(
        student_image,
        model.student.encode_text(Tensor::from_inner(tokens))?,
        model.student.logit_scale(),
    )?;
    let (teacher, teacher_features): (Embeddings<B>, Vec<Tensor<B, 3>>) = match teacher {
        Some((image, text, log_scale, features)) => (
            Embeddings::from_log_scale(image, text, log_scale)?,
            features,
        ),
        // No teacher: the student's own (detached) outputs fill its slot.
        None => (
            student.clone(),
            student_features
                .iter()
                .map(|f| f.clone().detach())
                .collect(),
        ),
    };
    let mut input = DistillInput::new(student, teacher)?;
    for ((request, s), t) in requests.iter().zip(student_features).zip(teacher_features) {
        input = input.with_features(request.name.clone(), s, t)?;
    }
    if let Some(masked) = masked {
        input = input.with_masked_student_image(masked)?;
    }
    Ok(input)
}

/// One micro-batch on the device: normalized images and their captions' tokens, and the
/// teacher's outputs for them when they were computed elsewhere.
#[derive(Debug, Clone)]
pub struct MicroBatch<B: Backend> {
    /// `[N, 3, H, W]` normalized pixels.
    pub images: Tensor<B, 4>,
    /// `[N, C]` token ids.
    pub tokens: Tensor<B, 2, Int>,
    /// The teacher's outputs for these images and captions (a teacher cache, another
    /// framework, an API): used instead of running a teacher model.
    pub teacher: Option<TeacherOutputs<B>>,
}

impl<B: Backend> MicroBatch<B> {
    /// Images and tokens; the teacher, if any, runs on them.
    pub fn new(images: Tensor<B, 4>, tokens: Tensor<B, 2, Int>) -> Self {
        MicroBatch {
            images,
            tokens,
            teacher: None,
        }
    }

    /// With the teacher's outputs for these rows, computed elsewhere.
    pub fn with_teacher(mut self, teacher: TeacherOutputs<B>) -> Self {
        self.teacher = Some(teacher);
        self
    }
}

/// What the losses read of a teacher, for the rows of a micro-batch, computed elsewhere than
/// in the step (a [`crate::teacher_cache`], another framework, an API): the teacher's raw
/// (unnormalized) image and text embeddings, as its `encode_image`/`encode_text` return them,
/// and its logit scale.
#[derive(Debug, Clone)]
pub struct TeacherOutputs<B: Backend> {
    /// `[N, D_t]` raw image embeddings of the micro-batch's images (the same crops).
    pub image: Tensor<B, 2>,
    /// `[N, D_t]` raw text embeddings of its captions.
    pub text: Tensor<B, 2>,
    /// `[1]`: the teacher's logit-scale parameter `ln s`.
    pub log_logit_scale: Tensor<B, 1>,
}

impl<B: Backend> TeacherOutputs<B> {
    /// Checks that both embeddings have `n` rows of one width.
    fn check_rows(&self, n: usize) -> Result<(), TrainError> {
        let ([ni, di], [nt, dt]) = (self.image.dims(), self.text.dims());
        if ni != n || nt != n || di != dt {
            return Err(TrainError::config(
                "teacher",
                format!(
                    "stored teacher outputs of shapes image [{ni}, {di}] and text [{nt}, {dt}] \
                     for a micro-batch of {n} rows"
                ),
            ));
        }
        Ok(())
    }
}

/// Settings of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOptions {
    /// The learning rate of this step (from the schedule).
    pub lr: f64,
    /// MFD's mask ratio (used only when the loss set reads a masked view).
    pub mask_ratio: Option<f64>,
    /// Clip the global gradient norm (all groups) to this value.
    pub grad_clip_norm: Option<f64>,
    /// Compute the global gradient norm even without clipping (for logging).
    pub compute_grad_norm: bool,
    /// Mixed precision: the type the teacher's and the student's matrix products,
    /// convolutions and attention run in (bf16 or f16), everything else and the parameters
    /// staying f32 (see [`clipkd_models::autocast`]). `None`: the thread's current autocast
    /// scope, if any, applies.
    pub autocast: Option<DType>,
    /// Dynamic loss scaling (f16): the loss is multiplied by this before the backward, the
    /// gradients divided by it before clipping and the optimizer, and a step whose scaled
    /// gradients are not finite is skipped ([`StepOutput::skipped`]); the caller updates the
    /// scale ([`crate::loss_scale::LossScaler`]).
    pub loss_scale: Option<f64>,
}

impl StepOptions {
    /// A plain step at `lr`: no mask, no clipping, no norm.
    pub fn new(lr: f64) -> Self {
        StepOptions {
            lr,
            mask_ratio: None,
            grad_clip_norm: None,
            compute_grad_norm: false,
            autocast: None,
            loss_scale: None,
        }
    }
}

/// What [`train_step`] returns.
#[derive(Debug)]
pub struct StepOutput<B: AutodiffBackend, S: Module<B> = Clip<B>, L: Module<B> = LossSet<B>> {
    /// The updated student and loss module.
    pub model: DistillModel<B, S, L>,
    /// The loss terms, averaged over the micro-batches (detached, on the device).
    pub terms: LossTerms<B::InnerBackend>,
    /// The global gradient norm before clipping, when clipping or `compute_grad_norm` asked
    /// for it (on the device).
    pub grad_norm: Option<Tensor<B::InnerBackend, 1>>,
    /// With loss scaling: the scaled gradients were not finite, so no parameter and no
    /// optimizer state changed (`model` is the input model). Always `false` without.
    pub skipped: bool,
}

/// One full optimizer step over `k >= 1` micro-batches (gradient accumulation): for each,
/// teacher and student forward and backward of `total / k`, gradients summed, so the step uses
/// their mean; then optional global-norm clipping, AdamW (all groups) at `options.lr`, and the
/// student's [`Student::after_step`] (CLIP: the `logit_scale` clamp).
///
/// CLIP-KD's losses are batch-level (contrastive over the micro-batch), so `k` micro-batches of
/// `N` are not the same as one batch of `k N`: each sample's negatives are the `N - 1` others
/// of its micro-batch.
///
/// Nothing is read back from the device (the terms and the norm stay tensors), except with
/// loss scaling: whether the gradients are finite is read back to decide the step.
pub fn train_step<B, S, T, L>(
    teacher: Option<&T>,
    model: DistillModel<B, S, L>,
    optimizer: &mut GroupedAdamW<B, DistillModel<B, S, L>>,
    micro_batches: impl IntoIterator<Item = MicroBatch<B::InnerBackend>>,
    options: &StepOptions,
) -> Result<StepOutput<B, S, L>, TrainError>
where
    B: AutodiffBackend,
    S: Student<B>,
    T: ClipEncoder<B::InnerBackend>,
    L: TrainableObjective<B>,
{
    let micro_batches: Vec<MicroBatch<B::InnerBackend>> = micro_batches.into_iter().collect();
    let k = micro_batches.len();
    let (grads, terms) = accumulate_micro_batches(
        teacher,
        &model,
        micro_batches,
        options,
        |input, accumulator| {
            let terms = model.losses.forward(&input)?;
            let total = terms.total()?;
            let total = if k == 1 {
                total
            } else {
                total.div_scalar(k as f64)
            };
            let total = match options.loss_scale {
                Some(scale) => total.mul_scalar(scale),
                None => total,
            };
            accumulator.accumulate(
                &model,
                GradientsParams::from_grads(total.backward(), &model),
            );
            Ok(terms.detached())
        },
    )?;
    finish_step(model, optimizer, grads, terms, options)
}

/// The micro-batch loop of a step, on one device or on one data-parallel peer: for each of the
/// `k >= 1` micro-batches, the models' forward ([`distill_input`], the models' matrix products
/// in the step's autocast type; the losses never use autocast), then `gradients`, which takes
/// the loss's backward into the accumulator and returns the micro-batch's detached terms.
/// Returns the accumulated gradients and the terms averaged over the micro-batches.
pub(crate) fn accumulate_micro_batches<B, S, T, L>(
    teacher: Option<&T>,
    model: &DistillModel<B, S, L>,
    micro_batches: Vec<MicroBatch<B::InnerBackend>>,
    options: &StepOptions,
    mut gradients: impl FnMut(
        DistillInput<B>,
        &mut GradientsAccumulator<DistillModel<B, S, L>>,
    ) -> Result<LossTerms<B::InnerBackend>, TrainError>,
) -> Result<(GradientsParams, LossTerms<B::InnerBackend>), TrainError>
where
    B: AutodiffBackend,
    S: Student<B>,
    T: ClipEncoder<B::InnerBackend>,
    L: TrainableObjective<B>,
{
    let k = micro_batches.len();
    if k == 0 {
        return Err(TrainError::config(
            "optim.grad_accum",
            "a step needs at least one micro-batch",
        ));
    }
    let mut accumulator = GradientsAccumulator::<DistillModel<B, S, L>>::new();
    let mut sums: Option<LossTerms<B::InnerBackend>> = None;
    for batch in micro_batches {
        let scope = options.autocast.map(|dtype| autocast(Some(dtype)));
        let input = distill_input(teacher, model, batch, options.mask_ratio)?;
        drop(scope);
        let terms = gradients(input, &mut accumulator)?;
        sums = Some(match sums {
            None => terms,
            Some(acc) => acc.plus(terms)?,
        });
    }
    let mut terms = sums.expect("at least one micro-batch");
    if k > 1 {
        terms = terms.scale(1.0 / k as f64);
    }
    Ok((accumulator.grads(), terms))
}

/// The end of an optimizer step once the gradients of the step's loss are known (on one
/// device or, already reduced, on every peer of a data-parallel group): loss-scale check,
/// optional clipping, AdamW, the student's [`Student::after_step`].
pub(crate) fn finish_step<B, S, L>(
    model: DistillModel<B, S, L>,
    optimizer: &mut GroupedAdamW<B, DistillModel<B, S, L>>,
    grads: GradientsParams,
    terms: LossTerms<B::InnerBackend>,
    options: &StepOptions,
) -> Result<StepOutput<B, S, L>, TrainError>
where
    B: AutodiffBackend,
    S: Student<B>,
    L: TrainableObjective<B>,
{
    // The gradients' factor (clipping, loss scale) is applied inside each parameter's update.
    let (factor, grad_norm) = match options.loss_scale {
        Some(scale) => match unscale(&model, &grads, scale, options.grad_clip_norm) {
            Some(unscaled) => unscaled,
            None => {
                return Ok(StepOutput {
                    model,
                    terms,
                    grad_norm: None,
                    skipped: true,
                });
            }
        },
        None => match options.grad_clip_norm {
            Some(max_norm) => grad_clip_factor::<B, _>(&model, &grads, max_norm).unzip(),
            None if options.compute_grad_norm => (None, global_grad_norm::<B, _>(&model, &grads)),
            None => (None, None),
        },
    };
    let mut model = optimizer.step_scaled(options.lr, model, grads, factor);
    model.student = model.student.after_step();
    Ok(StepOutput {
        model,
        terms,
        grad_norm,
        skipped: false,
    })
}

/// The factor to multiply the gradients by (none: 1) and their norm before it (none: not
/// computed).
type FactorAndNorm<B> = (Option<DeviceScalar<B>>, Option<DeviceScalar<B>>);

/// Loss scaling's half of a step: `None` when the gradients of the loss scaled by `scale` are
/// not finite (the step is to be skipped); otherwise the factor that divides the gradients
/// by `scale` (and clips them to `max_norm`, in the same multiplication) with their norm
/// before clipping.
fn unscale<B, S, L>(
    model: &DistillModel<B, S, L>,
    grads: &GradientsParams,
    scale: f64,
    max_norm: Option<f64>,
) -> Option<FactorAndNorm<B>>
where
    B: AutodiffBackend,
    S: Student<B>,
    L: TrainableObjective<B>,
{
    let Some(scaled_norm) = global_grad_norm::<B, _>(model, grads) else {
        return Some((None, None));
    };
    // An infinity or a NaN anywhere makes the norm non-finite. (So does an f32 sum of squares
    // above 3.4e38 of finite gradients, which PyTorch's element check would let through: such
    // a step is skipped and the scale lowered too.)
    let scaled: f64 = scaled_norm.clone().into_scalar().elem::<f64>();
    if !scaled.is_finite() {
        return None;
    }
    let norm = scaled_norm.div_scalar(scale);
    let factor = match max_norm {
        Some(max_norm) => clip_coefficient(norm.clone(), max_norm).div_scalar(scale),
        None => norm.zeros_like().add_scalar(1.0 / scale),
    };
    Some((Some(factor), Some(norm)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, TensorData};
    use burn_flex::Flex;
    use clipkd_losses::{LossPreset, LossSetConfig};
    use clipkd_models::ClipConfig;

    type B = Autodiff<Flex>;
    /// No teacher (the baseline): `None` of the default teacher type.
    const NO_TEACHER: Option<&Clip<Flex>> = None;

    const STUDENT: &str = r#"{"embed_dim": 16,
      "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
      "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}"#;

    fn model(preset: LossPreset, teacher_dim: usize) -> DistillModel<B> {
        let device = Default::default();
        let cfg = ClipConfig::from_open_clip_json_str(STUDENT).unwrap();
        DistillModel::new(
            cfg.init::<B>(&device).unwrap(),
            LossSetConfig::preset(preset, 16, teacher_dim)
                .init::<B>(&device)
                .unwrap(),
        )
    }

    fn batch(n: usize) -> MicroBatch<Flex> {
        let device = Default::default();
        let images = Tensor::<Flex, 4>::random([n, 3, 32, 32], Distribution::Default, &device);
        // Distinct captions: token i+1, end-of-text (the highest id) at position 2.
        let mut ids = vec![0i64; n * 8];
        for (i, row) in ids.chunks_mut(8).enumerate() {
            row[0] = 62;
            row[1] = 1 + i as i64;
            row[2] = 63;
        }
        let tokens = Tensor::from_data(TensorData::new(ids, [n, 8]), &device);
        MicroBatch::new(images, tokens)
    }

    #[test]
    fn groups_follow_clip_kd_by_open_clip_name() {
        let m = model(LossPreset::ClipKd, 24);
        let groups = distill_param_groups(&m);
        let kind = |key: &str| {
            groups
                .iter()
                .find(|g| g.0 == key)
                .unwrap_or_else(|| panic!("no parameter {key}"))
                .3
        };
        for key in [
            "visual.conv1.weight",
            "visual.proj",
            "visual.positional_embedding",
            "visual.transformer.resblocks.0.attn.in_proj_weight",
            "visual.transformer.resblocks.0.mlp.c_fc.weight",
            "token_embedding.weight",
            "positional_embedding",
            "text_projection",
        ] {
            assert_eq!(kind(key), GroupKind::Decay, "{key}");
        }
        for key in [
            "logit_scale",
            "visual.class_embedding",
            "visual.ln_pre.weight",
            "visual.ln_post.bias",
            "visual.transformer.resblocks.0.attn.in_proj_bias",
            "visual.transformer.resblocks.0.mlp.c_fc.bias",
            "ln_final.weight",
        ] {
            assert_eq!(kind(key), GroupKind::NoDecay, "{key}");
        }
        let loss: Vec<&str> = groups
            .iter()
            .filter(|g| g.3 == GroupKind::Loss)
            .map(|g| g.0.as_str())
            .collect();
        // The two projectors (weight + bias each) and ICL's scale.
        assert_eq!(loss.len(), 5, "{loss:?}");
        assert!(loss.iter().all(|p| p.starts_with("losses.")));
        let optim = distill_optimizer(&m, AdamWParams::vit());
        let counts: Vec<(GroupKind, usize)> = optim.groups().collect();
        assert_eq!(counts.len(), 3);
        assert_eq!(counts.iter().map(|c| c.1).sum::<usize>(), groups.len());
    }

    #[test]
    fn resnet_students_group_batch_norms_without_decay_and_train() {
        let device = Default::default();
        let cfg = ClipConfig::from_open_clip_json_str(
            r#"{"embed_dim": 16,
              "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 4,
                             "head_width": 32},
              "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2,
                           "layers": 1}}"#,
        )
        .unwrap();
        let m = DistillModel::<B>::new(
            cfg.init::<B>(&device).unwrap(),
            LossSetConfig::preset(LossPreset::Baseline, 16, 16)
                .init::<B>(&device)
                .unwrap(),
        );
        let groups = distill_param_groups(&m);
        let kind = |key: &str| groups.iter().find(|g| g.0 == key).map(|g| g.3);
        assert_eq!(kind("visual.conv1.weight"), Some(GroupKind::Decay));
        assert_eq!(kind("visual.bn1.weight"), Some(GroupKind::NoDecay));
        assert_eq!(kind("visual.layer1.0.bn3.bias"), Some(GroupKind::NoDecay));
        assert_eq!(
            kind("visual.attnpool.c_proj.weight"),
            Some(GroupKind::Decay)
        );
        let mut optim = distill_optimizer(&m, AdamWParams::resnet());
        let images = Tensor::<Flex, 4>::random([4, 3, 64, 64], Distribution::Default, &device);
        let b = MicroBatch::new(images, batch(4).tokens);
        let out = train_step(NO_TEACHER, m, &mut optim, [b], &StepOptions::new(1e-3)).unwrap();
        let total: f32 = out.terms.total().unwrap().into_scalar();
        assert!(total.is_finite());
    }

    #[test]
    fn accumulation_averages_and_clipping_bounds_the_norm() {
        let m = model(LossPreset::Baseline, 16);
        let mut optim = distill_optimizer(&m, AdamWParams::vit());
        let (b1, b2) = (batch(4), batch(4));
        let one = |b: &MicroBatch<Flex>| -> f32 {
            distill_terms(NO_TEACHER, &m, b.images.clone(), b.tokens.clone(), None)
                .unwrap()
                .total()
                .unwrap()
                .into_scalar()
        };
        let expected = (one(&b1) + one(&b2)) / 2.0;
        let out = train_step(
            NO_TEACHER,
            m.clone(),
            &mut optim,
            [b1, b2],
            &StepOptions {
                grad_clip_norm: Some(1e-3),
                ..StepOptions::new(1e-3)
            },
        )
        .unwrap();
        let total: f32 = out.terms.total().unwrap().into_scalar();
        assert!((total - expected).abs() < 1e-5, "{total} vs {expected}");
        let norm: f32 = out
            .grad_norm
            .expect("clipping reports the norm")
            .into_scalar();
        assert!(norm > 1e-3, "the unclipped norm {norm} is reported");
        // After clipping to 1e-3, AdamW's first step moves each weight by about lr whatever
        // the gradient's size; the clipped gradients' norm is what we check here instead:
        let mut grads = GradientsParams::from_grads(
            distill_terms(NO_TEACHER, &m, batch(4).images, batch(4).tokens, None)
                .unwrap()
                .total()
                .unwrap()
                .backward(),
            &m,
        );
        grads = crate::optim::clip_grad_norm::<B, _>(&m, grads, 1e-3).0;
        let clipped: f32 = crate::optim::global_grad_norm::<B, _>(&m, &grads)
            .unwrap()
            .into_scalar();
        assert!((clipped - 1e-3).abs() < 1e-5, "clipped norm {clipped}");
    }

    /// The step applies its clipping factor: its weights are those of the gradients clipped
    /// by `clip_grad_norm`, then stepped (equal here to the last bit). The bound is small and
    /// the learning rate 1 so that the factor shows in AdamW's first update (clipped gradients
    /// near AdamW's epsilon, 1e-6): a factor 0.1% off moves weights by 2.5e-4, an unclipped
    /// step by about 1.
    #[test]
    fn the_step_clips_as_clip_grad_norm_then_adamw() {
        const MAX_NORM: f64 = 1e-4;
        let m = model(LossPreset::Baseline, 16);
        let b = batch(4);
        let weights = |m: &DistillModel<B>| -> Vec<f32> {
            let mut out = Vec::new();
            m.visit(&mut crate::optim::tests::CollectValues(&mut out));
            out.concat()
        };
        let step = |clip: Option<f64>| {
            let mut optim = distill_optimizer(&m, AdamWParams::vit());
            let options = StepOptions {
                grad_clip_norm: clip,
                ..StepOptions::new(1.0)
            };
            weights(
                &train_step(NO_TEACHER, m.clone(), &mut optim, [b.clone()], &options)
                    .unwrap()
                    .model,
            )
        };
        let clipped = step(Some(MAX_NORM));
        let unclipped = step(None);

        let mut optim = distill_optimizer(&m, AdamWParams::vit());
        let grads = GradientsParams::from_grads(
            distill_terms(NO_TEACHER, &m, b.images.clone(), b.tokens.clone(), None)
                .unwrap()
                .total()
                .unwrap()
                .backward(),
            &m,
        );
        let (grads, _) = crate::optim::clip_grad_norm::<B, _>(&m, grads, MAX_NORM);
        let expected = weights(&optim.step(1.0, m.clone(), grads));

        let max_diff = |a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len());
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        let off = max_diff(&clipped, &expected);
        assert!(
            off <= 1e-6,
            "the step's clipping is {off} off clip_grad_norm's"
        );
        let unclipped_off = max_diff(&unclipped, &expected);
        assert!(
            unclipped_off > 1e-2,
            "an unclipped step is only {unclipped_off} off"
        );
    }

    /// Parameter shapes of a module in visiting order, read without initializing lazy ones.
    struct Shapes(Vec<Vec<usize>>);

    impl<Bk: Backend> burn::module::ModuleVisitor<Bk> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<Bk, D>>) {
            self.0.push(param.lazy_shape().to_vec());
        }
    }

    /// On full-size students with CLIP-KD's losses, the optimizer's update order puts no two
    /// parameters of one size next to each other, so on the fusing backends every update is
    /// a kernel of its own code (`optim::update_order`; the tiny test models, where one width
    /// holds most parameters, cannot be ordered so).
    #[test]
    fn full_size_students_update_no_two_same_size_parameters_in_a_row() {
        let device = Default::default();
        for (student, width) in [("ViT-T-16", 512), ("RN50", 1024), ("ViT-B-32", 512)] {
            let cfg = ClipConfig::preset(student).unwrap();
            let m: DistillModel<B> = DistillModel::new(
                cfg.init::<B>(&device).unwrap(),
                LossSetConfig::preset(LossPreset::ClipKd, width, 768)
                    .init::<B>(&device)
                    .unwrap(),
            );
            let mut shapes = Shapes(Vec::new());
            m.visit(&mut shapes);
            let sizes: Vec<usize> = shapes.0.iter().map(|s| s.iter().product()).collect();
            let order = crate::optim::update_order(&sizes);
            let repeats = order
                .windows(2)
                .filter(|w| sizes[w[0]] == sizes[w[1]])
                .count();
            assert_eq!(repeats, 0, "{student}: {} parameters", sizes.len());
        }
    }

    #[test]
    fn a_batch_the_models_cannot_take_is_an_error_of_the_step() {
        let m = model(LossPreset::ClipKd, 16);
        let teacher = ClipConfig::from_open_clip_json_str(STUDENT)
            .unwrap()
            .init::<Flex>(&Default::default())
            .unwrap();
        let mut optim = distill_optimizer(&m, AdamWParams::vit());
        let device = Default::default();
        let wrong_size = MicroBatch {
            images: Tensor::<Flex, 4>::zeros([2, 3, 48, 48], &device),
            ..batch(2)
        };
        let too_long = MicroBatch {
            tokens: Tensor::zeros([2, 9], &device),
            ..batch(2)
        };
        for (batch, input, got) in [
            (wrong_size, "images", vec![2, 3, 48, 48]),
            (too_long, "tokens", vec![2, 9]),
        ] {
            let error = train_step(
                Some(&teacher),
                m.clone(),
                &mut optim,
                [batch],
                &StepOptions::new(1e-3),
            )
            .unwrap_err();
            match error {
                TrainError::Model(clipkd_models::ModelError::InputShape {
                    input: i,
                    got: g,
                    ..
                }) => assert_eq!((i, g), (input, got)),
                other => panic!("expected an input-shape error, got {other:?}"),
            }
        }
    }
}
