//! AdamW with parameter groups, as CLIP-KD builds its optimizer.
//!
//! CLIP-KD (and open_clip) split the parameters into groups that differ only in weight decay:
//!
//! | group | members | weight decay |
//! |---|---|---|
//! | `decay` | every other parameter of the student | 0.1 |
//! | `no_decay` | rank < 2, or a path containing `bn`, `ln`, `bias` or `logit_scale` | 0 |
//! | `loss` | the loss module's own parameters (projectors, ICL/AFD scales) | 0.01 (PyTorch's AdamW default, which CLIP-KD's third group inherits) |
//!
//! Burn's optimizers take one weight decay, so [`GroupedAdamW`] keeps one AdamW per group and
//! hands each the gradients of its own parameters only.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsParams, Optimizer,
};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// Which parameters a group takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// Student parameters that get weight decay.
    Decay,
    /// Student parameters excluded from weight decay (CLIP-KD's rule).
    NoDecay,
    /// Parameters of the loss module.
    Loss,
}

impl GroupKind {
    /// The group's name, as it appears in logs and checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            GroupKind::Decay => "decay",
            GroupKind::NoDecay => "no_decay",
            GroupKind::Loss => "loss",
        }
    }
}

/// CLIP-KD's exclusion rule: `p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or
/// "logit_scale" in n` (the name is the dotted module path, open_clip's state-dict key).
pub fn excluded_from_weight_decay(path: &str, rank: usize) -> bool {
    rank < 2
        || path.contains("bn")
        || path.contains("ln")
        || path.contains("bias")
        || path.contains("logit_scale")
}

/// Collects `(dotted path, rank, id)` of every float parameter of a module, in visiting
/// order. The path is Burn's module path (field names, `Vec` indices; enum variant names
/// skipped), e.g. `student.visual.transformer.resblocks.0.ln_1.gamma`.
#[derive(Default)]
pub struct ParamPaths {
    /// The parameters in visiting order.
    pub params: Vec<(String, usize, ParamId)>,
    path: Vec<String>,
}

impl<B: Backend> ModuleVisitor<B> for ParamPaths {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.params.push((self.path.join("."), D, param.id));
    }
}

/// The hyper-parameters of AdamW that the groups share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    /// β₁.
    pub beta_1: f32,
    /// β₂.
    pub beta_2: f32,
    /// ε.
    pub epsilon: f32,
    /// Weight decay of the `decay` group.
    pub weight_decay: f32,
    /// Weight decay of the `loss` group.
    pub loss_weight_decay: f32,
}

impl AdamWParams {
    /// CLIP-KD's settings for a ViT student: betas (0.9, 0.98), eps 1e-6, wd 0.1 (loss group 0.01).
    pub fn vit() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.98,
            epsilon: 1e-6,
            weight_decay: 0.1,
            loss_weight_decay: 0.01,
        }
    }

    /// CLIP-KD's settings for other students (ResNets...): betas (0.9, 0.999), eps 1e-8, wd 0.1.
    pub fn resnet() -> Self {
        Self {
            beta_2: 0.999,
            epsilon: 1e-8,
            ..Self::vit()
        }
    }

    /// CLIP-KD's settings for a student of this config: [`AdamWParams::vit`] for a ViT and a
    /// timm MobileViT, [`AdamWParams::resnet`] for the other towers (ModifiedResNet, timm
    /// ResNet, EfficientNet, MobileNetV3, Swin).
    pub fn clip_kd(student: &clipkd_models::ClipConfig) -> Self {
        use clipkd_models::{TimmTrunkConfig, VisionConfig};
        let mobilevit = matches!(&student.vision,
            VisionConfig::Timm(t) if matches!(t.trunk, TimmTrunkConfig::MobileVit(_)));
        if student.is_vit() || mobilevit {
            Self::vit()
        } else {
            Self::resnet()
        }
    }

    fn config(&self, weight_decay: f32) -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_weight_decay(weight_decay)
    }
}

/// The saved state of one parameter group (Burn's AdamW record, keyed by parameter id).
pub type GroupRecord<B, M> = <OptimizerAdaptor<AdamW, M, B> as Optimizer<M, B>>::Record;

/// One AdamW per parameter group over a module `M`.
#[derive(Clone)]
pub struct GroupedAdamW<B: AutodiffBackend, M: AutodiffModule<B>> {
    groups: Vec<Group<B, M>>,
}

#[derive(Clone)]
struct Group<B: AutodiffBackend, M: AutodiffModule<B>> {
    kind: GroupKind,
    ids: Vec<ParamId>,
    optim: OptimizerAdaptor<AdamW, M, B>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> GroupedAdamW<B, M> {
    /// Splits the parameters of `module` into groups with `classify(path, rank)` (Burn module
    /// paths, see [`ParamPaths`]) and builds one AdamW per non-empty group.
    pub fn new(
        module: &M,
        params: AdamWParams,
        classify: impl Fn(&str, usize) -> GroupKind,
    ) -> Self {
        let mut paths = ParamPaths::default();
        module.visit(&mut paths);
        let kinds = paths
            .params
            .iter()
            .map(|(path, rank, id)| (*id, classify(path, *rank)))
            .collect::<Vec<_>>();
        Self::from_kinds(&kinds, params)
    }

    /// Builds one AdamW per non-empty group from the group of every parameter.
    pub fn from_kinds(kinds: &[(ParamId, GroupKind)], params: AdamWParams) -> Self {
        let groups = [GroupKind::Decay, GroupKind::NoDecay, GroupKind::Loss]
            .into_iter()
            .filter_map(|kind| {
                let ids: Vec<ParamId> = kinds
                    .iter()
                    .filter(|(_, k)| *k == kind)
                    .map(|(id, _)| *id)
                    .collect();
                let weight_decay = match kind {
                    GroupKind::Decay => params.weight_decay,
                    GroupKind::NoDecay => 0.0,
                    GroupKind::Loss => params.loss_weight_decay,
                };
                (!ids.is_empty()).then(|| Group {
                    kind,
                    ids,
                    optim: params.config(weight_decay).init(),
                })
            })
            .collect();
        Self { groups }
    }

    /// Gives every trainable parameter of `module` without a state zero moments at time 0, as PyTorch's
    /// AdamW starts (parameters that already have a state keep it).
    ///
    /// The first step then computes exactly what Burn's start from no state computes
    /// (`m = β₁·0 + (1-β₁)·g` is `(1-β₁)·g`, bit for bit), but through the same fused kernels
    /// as every later step: on the GPU backends the second step compiles nothing new instead
    /// of a second set of update kernels (17 on the wgpu ViT test, docs/performance.md).
    pub fn with_zero_moments(mut self, module: &M) -> Self {
        for group in &mut self.groups {
            let mut zeros = ZeroMoments::<B, M> {
                ids: group.ids.iter().copied().collect(),
                records: group.optim.to_record(),
            };
            module.visit(&mut zeros);
            group.optim = group.optim.clone().load_record(zeros.records);
        }
        self
    }

    /// The group of every parameter.
    pub fn kinds(&self) -> Vec<(ParamId, GroupKind)> {
        self.groups
            .iter()
            .flat_map(|g| g.ids.iter().map(move |id| (*id, g.kind)))
            .collect()
    }

    /// The groups: kind and number of parameter tensors.
    pub fn groups(&self) -> impl Iterator<Item = (GroupKind, usize)> + '_ {
        self.groups.iter().map(|g| (g.kind, g.ids.len()))
    }

    /// One AdamW step of every group at learning rate `lr`, with the gradients in `grads`
    /// (consumed: each group takes its own).
    pub fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        let mut split = GradSplitter {
            from: grads,
            group_of: self
                .groups
                .iter()
                .enumerate()
                .flat_map(|(i, g)| g.ids.iter().map(move |id| (*id, i)))
                .collect(),
            to: self.groups.iter().map(|_| GradientsParams::new()).collect(),
        };
        module.visit(&mut split);
        let mut module = module;
        for (group, grads) in self.groups.iter_mut().zip(split.to) {
            module = group.optim.step(lr, module, grads);
        }
        module
    }

    /// The state of every group, in group order (for checkpoints).
    pub fn to_records(&self) -> Vec<GroupRecord<B, M>> {
        self.groups.iter().map(|g| g.optim.to_record()).collect()
    }

    /// Restores the state saved by [`GroupedAdamW::to_records`].
    ///
    /// # Panics
    /// If the number of records is not the number of groups (check it against
    /// [`GroupedAdamW::groups`] first when the records come from a file).
    pub fn load_records(mut self, records: Vec<GroupRecord<B, M>>) -> Self {
        assert_eq!(
            records.len(),
            self.groups.len(),
            "one optimizer record per parameter group"
        );
        self.groups = self
            .groups
            .into_iter()
            .zip(records)
            .map(|(mut g, r)| {
                g.optim = g.optim.load_record(r);
                g
            })
            .collect();
        self
    }
}

/// Adds a zero AdamW state for each parameter of one group that has none.
struct ZeroMoments<B: AutodiffBackend, M: AutodiffModule<B>> {
    ids: std::collections::HashSet<ParamId>,
    records: GroupRecord<B, M>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> ModuleVisitor<B> for ZeroMoments<B, M> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.ids.contains(&param.id) || self.records.contains_key(&param.id) {
            return;
        }
        let value = param.val();
        // A frozen parameter never gets a gradient, so Burn would never give it a state.
        if !value.is_require_grad() {
            return;
        }
        let value = value.inner();
        let momentum = AdaptiveMomentumState {
            time: 0,
            moment_1: value.zeros_like(),
            moment_2: value.zeros_like(),
            max_moment_2: None,
        };
        self.records.insert(
            param.id,
            AdaptorRecord::from_state::<D>(AdamWState { momentum }),
        );
    }
}

/// Moves each parameter's gradient into the gradients of its group, in one pass.
struct GradSplitter {
    from: GradientsParams,
    group_of: HashMap<ParamId, usize>,
    to: Vec<GradientsParams>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradSplitter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(&group) = self.group_of.get(&param.id)
            && let Some(grad) = self.from.remove::<B::InnerBackend, D>(param.id)
        {
            self.to[group].register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}

/// The global L2 norm of the gradients of every parameter of `module` (all groups together),
/// shape `[1]`, computed on the device (nothing is read back). `None` when no parameter has a
/// gradient.
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let mut visitor = SquaredNorm::<B> { grads, sum: None };
    module.visit(&mut visitor);
    visitor.sum.map(Tensor::sqrt)
}

/// Multiplies every gradient of `module`'s parameters by `factor` (shape `[1]`, on the device).
pub fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
    factor: Tensor<B::InnerBackend, 1>,
) -> GradientsParams {
    let mut visitor = GradScaler::<B> { grads, factor };
    module.visit(&mut visitor);
    visitor.grads
}

/// PyTorch's `clip_grad_norm_` over every parameter of `module` (one global norm across all
/// groups, not Burn's per-tensor clipping): gradients are multiplied by
/// `min(1, max_norm / (norm + 1e-6))`. Returns the clipped gradients and the norm before
/// clipping, shape `[1]` (no host sync).
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, Option<Tensor<B::InnerBackend, 1>>) {
    let Some(norm) = global_grad_norm::<B, M>(module, &grads) else {
        return (grads, None);
    };
    let coef = clip_coefficient(norm.clone(), max_norm);
    (scale_grads::<B, M>(module, grads, coef), Some(norm))
}

/// PyTorch's `clip_grad_norm_` factor for gradients of global norm `norm` (shape `[1]`):
/// `min(1, max_norm / (norm + 1e-6))`.
pub fn clip_coefficient<B: Backend>(norm: Tensor<B, 1>, max_norm: f64) -> Tensor<B, 1> {
    norm.add_scalar(1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0)
}

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sq = grad.powi_scalar(2).sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + sq,
                None => sq,
            });
        }
    }
}

struct GradScaler<B: AutodiffBackend> {
    grads: GradientsParams,
    factor: Tensor<B::InnerBackend, 1>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradScaler<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let factor = self.factor.clone().reshape([1; D]);
            self.grads
                .register::<B::InnerBackend, D>(param.id, grad * factor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CLIP-KD's rule: ViT and MobileViT students get (0.9, 0.98, 1e-6), the others
    /// (0.9, 0.999, 1e-8).
    #[test]
    fn clip_kd_settings_follow_the_student_family() {
        let betas = |name: &str| {
            let p = AdamWParams::clip_kd(&clipkd_models::ClipConfig::preset(name).unwrap());
            (p.beta_2, p.epsilon)
        };
        for vit in ["ViT-T-16", "timm-mobilevit_s"] {
            assert_eq!(betas(vit), (0.98, 1e-6), "{vit}");
        }
        for other in [
            "RN50",
            "timm_resnet18",
            "timm-efficientnet-b0",
            "timm_mobilenetv3_small_100",
            "timm-swin_tiny_patch4_window7_224",
        ] {
            assert_eq!(betas(other), (0.999, 1e-8), "{other}");
        }
    }
    use burn::backend::Autodiff;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Distribution, TensorData};
    use burn_flex::Flex;

    type B = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        layer: Linear<B>,
        frozen: Param<Tensor<B, 1>>,
    }

    fn tiny() -> Tiny<B> {
        let device = Default::default();
        let frozen = Tensor::<B, 1>::from_floats([1.0, 2.0], &device);
        Tiny {
            layer: LinearConfig::new(3, 2).init::<B>(&device),
            frozen: Param::from_tensor(frozen).set_require_grad(false),
        }
    }

    fn weights(model: &Tiny<B>) -> Vec<f32> {
        let mut out = model
            .layer
            .weight
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        out.extend(
            model
                .layer
                .bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
        );
        out
    }

    /// Three AdamW steps on fixed random inputs; the weights after each step.
    fn train(mut model: Tiny<B>, mut optim: GroupedAdamW<B, Tiny<B>>) -> Vec<Vec<f32>> {
        let device = Default::default();
        let mut out = Vec::new();
        for step in 0..3 {
            let x = Tensor::<B, 2>::from_data(
                TensorData::new(
                    (0..12).map(|i| (i * (step + 1)) as f32 * 0.1).collect(),
                    [4, 3],
                ),
                &device,
            );
            let y = model.layer.forward(x) * model.frozen.val().unsqueeze();
            let grads = GradientsParams::from_grads(y.powi_scalar(2).sum().backward(), &model);
            model = optim.step(1e-2, model, grads);
            out.push(weights(&model));
        }
        out
    }

    #[test]
    fn zero_moments_train_bit_for_bit_like_no_state_and_skip_frozen_parameters() {
        let model = tiny();
        let optim = || GroupedAdamW::new(&model, AdamWParams::vit(), |_, _| GroupKind::Decay);
        let zeroed = optim().with_zero_moments(&model);
        let records = &zeroed.to_records()[0];
        assert_eq!(
            records.len(),
            2,
            "weight and bias get a state, the frozen tensor none"
        );
        assert!(!records.contains_key(&model.frozen.id));

        let from_zero = train(model.clone(), zeroed);
        let from_none = train(model.clone(), optim());
        assert_eq!(from_zero, from_none);
        assert_ne!(from_zero[0], weights(&model), "the steps moved the weights");
    }

    #[test]
    fn zero_moments_keep_an_existing_state() {
        let model = tiny();
        let optim = GroupedAdamW::new(&model, AdamWParams::vit(), |_, _| GroupKind::Decay);
        let x = Tensor::<B, 2>::random([4, 3], Distribution::Default, &Default::default());
        let grads = GradientsParams::from_grads(model.layer.forward(x).sum().backward(), &model);
        let mut trained = optim;
        let model = trained.step(1e-2, model, grads);
        let before = trained.to_records()[0]
            .get(&model.layer.weight.id)
            .cloned()
            .unwrap()
            .into_state::<2>();
        let after = trained.with_zero_moments(&model).to_records()[0]
            .get(&model.layer.weight.id)
            .cloned()
            .unwrap()
            .into_state::<2>();
        assert_eq!(after.momentum.time, 1);
        assert_eq!(
            after.momentum.moment_1.into_data(),
            before.momentum.moment_1.into_data()
        );
    }
}
