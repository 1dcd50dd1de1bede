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
//!
//! The update itself is Burn's AdamW (`SimpleOptimizer::step`, the values and the saved state
//! of Burn's `OptimizerAdaptor`), applied to each parameter seen as a vector and in an order
//! of our own: parameters of one size kept apart (see [`update_order`]). On the fusing GPU
//! backends every parameter's update is then one kernel of the same code whatever its rank
//! and neighbours, instead of runs of 1 to 6 same-shape parameters, per rank, each compiling
//! its own kernel (docs/performance.md).

use std::any::Any;
use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsParams, LearningRate,
    Optimizer, SimpleOptimizer,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

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
    adamw: AdamW,
    /// Each parameter's AdamW state, as Burn's `OptimizerAdaptor` keeps and saves it.
    records: GroupRecord<B, M>,
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
                (!ids.is_empty()).then(|| {
                    let adaptor: OptimizerAdaptor<AdamW, M, B> = params.config(weight_decay).init();
                    Group {
                        kind,
                        ids,
                        adamw: adaptor.optim().clone(),
                        records: adaptor.to_record(),
                    }
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
                records: std::mem::take(&mut group.records),
            };
            module.visit(&mut zeros);
            group.records = zeros.records;
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
    /// (consumed: each parameter's update uses its own gradient and its group's settings).
    pub fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        self.step_scaled(lr, module, grads, None)
    }

    /// [`GroupedAdamW::step`] with every gradient first multiplied by `factor` (shape `[1]`,
    /// on the device: a clipping coefficient, a loss scale's inverse), inside each
    /// parameter's update rather than as a pass of its own (one kernel per parameter on
    /// the fusing backends, not two).
    pub fn step_scaled(
        &mut self,
        lr: f64,
        module: M,
        grads: GradientsParams,
        factor: Option<Tensor<B::InnerBackend, 1>>,
    ) -> M {
        // 1. Take out every parameter that has a gradient, with its gradient.
        let mut take = TakeUpdates {
            grads,
            group_of: self
                .groups
                .iter()
                .enumerate()
                .flat_map(|(i, g)| g.ids.iter().map(move |id| (*id, i)))
                .collect(),
            pending: Vec::new(),
        };
        let module = module.map(&mut take);
        // 2. Update them, keeping parameters of one size apart.
        let sizes: Vec<usize> = take.pending.iter().map(|p| p.size).collect();
        let order = update_order(&sizes);
        let mut pending: Vec<Option<PendingUpdate<B>>> =
            take.pending.into_iter().map(Some).collect();
        let mut updated = HashMap::with_capacity(pending.len());
        for i in order {
            let p = pending[i].take().expect("update_order is a permutation");
            let group = &mut self.groups[p.group];
            let state = group.records.remove(&p.id);
            let (param, state) = (p.update)(&group.adamw, lr, factor.as_ref(), state);
            if let Some(state) = state {
                group.records.insert(p.id, state);
            }
            updated.insert(p.id, param);
        }
        // 3. Put the updated parameters back.
        module.map(&mut PutUpdates { updated })
    }

    /// The state of every group, in group order (for checkpoints).
    pub fn to_records(&self) -> Vec<GroupRecord<B, M>> {
        self.groups.iter().map(|g| g.records.clone()).collect()
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
                g.records = r;
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
        // Zeros from the host, not `zeros_like`: on the fusing backends a fill is a kernel to
        // compile, one per run of same-shape fills the fuser happens to join (11 on the wgpu
        // ViT test); an upload is none, and happens once per run.
        let zeros = || {
            Tensor::<B::InnerBackend, D>::from_data(
                TensorData::zeros::<f32, _>(value.shape()).convert_dtype(value.dtype()),
                &value.device(),
            )
        };
        let momentum = AdaptiveMomentumState {
            time: 0,
            moment_1: zeros(),
            moment_2: zeros(),
            max_moment_2: None,
        };
        self.records.insert(
            param.id,
            AdaptorRecord::from_state::<D>(AdamWState { momentum }),
        );
    }
}

/// An order in which to update parameters with these keys (their sizes; the result indexes
/// `keys`) that puts no two parameters of one key next to each other where that can be done
/// (greedy: each time the key with the most parameters left, other than the last one's; ties
/// and parameters of one key in their given order).
///
/// Why: the fusing backends join consecutive element-wise operations on tensors of one
/// shape into one kernel, up to 64 operations. Parameters updated in module order make runs
/// of one shape (a block's LayerNorm gammas and betas, its biases) that the fuser cuts at
/// varying points, each run a kernel of its own to compile. A shape change ends a fused
/// kernel, so parameters updated between others of another size (each seen as a vector)
/// each get one kernel, the same code for every parameter of a group (its vectorization and
/// workgroup size aside).
pub fn update_order<K: PartialEq>(keys: &[K]) -> Vec<usize> {
    // Keys in order of first appearance, each with its parameters in order.
    let mut buckets: Vec<(&K, std::collections::VecDeque<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match buckets.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push_back(i),
            None => buckets.push((key, [i].into())),
        }
    }
    let mut order = Vec::with_capacity(keys.len());
    let mut last: Option<usize> = None;
    while order.len() < keys.len() {
        let pick = |skip: Option<usize>| {
            buckets
                .iter()
                .enumerate()
                .filter(|(b, (_, members))| Some(*b) != skip && !members.is_empty())
                // The largest bucket; `max_by_key` returns the last of equals, so compare
                // on (size, reversed index) to take the first.
                .max_by_key(|(b, (_, members))| (members.len(), std::cmp::Reverse(*b)))
                .map(|(b, _)| b)
        };
        // Only one key left: its parameters follow each other.
        let b = pick(last).or_else(|| pick(None)).expect("parameters left");
        order.push(buckets[b].1.pop_front().expect("non-empty bucket"));
        last = Some(b);
    }
    order
}

/// The update of one parameter, waiting for its turn: given the group's AdamW, the learning
/// rate, the gradient factor and the parameter's state, it returns the updated
/// `Param<Tensor<B, D>>` (as `Any`: the rank is erased) and the new state.
type UpdateFn<B> = Box<
    dyn FnOnce(
        &AdamW,
        LearningRate,
        Option<&Tensor<<B as AutodiffBackend>::InnerBackend, 1>>,
        Option<AdaptorRecord<AdamW, B>>,
    ) -> (Box<dyn Any>, Option<AdaptorRecord<AdamW, B>>),
>;

struct PendingUpdate<B: AutodiffBackend> {
    id: ParamId,
    group: usize,
    /// The number of elements.
    size: usize,
    update: UpdateFn<B>,
}

/// Takes every parameter of a group that has a gradient out of the module (leaving a
/// placeholder that [`PutUpdates`] replaces), with the code of its update.
struct TakeUpdates<B: AutodiffBackend> {
    grads: GradientsParams,
    group_of: HashMap<ParamId, usize>,
    pending: Vec<PendingUpdate<B>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for TakeUpdates<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(&group) = self.group_of.get(&param.id) else {
            return param;
        };
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let device = grad.device();
        let shape = tensor.shape();
        let placeholder_device = device.clone();
        let update: UpdateFn<B> = Box::new(move |adamw, lr, factor, state| {
            // As Burn's OptimizerAdaptor: the parameter and its state go to the gradient's
            // device.
            let tensor = if tensor.device() != device {
                tensor.to_device(&device)
            } else {
                tensor
            };
            let grad = match factor {
                Some(factor) => grad * factor.clone().reshape([1; D]),
                None => grad,
            };
            // Burn's AdamW on the parameter, its gradient and moments as vectors (reshapes:
            // no data moves unless a gradient is strided), so that the kernel is the same for
            // every rank.
            let dims: [usize; D] = tensor.shape().dims();
            let n = dims.iter().product::<usize>();
            let state =
                state.map(|s| reshape_state(AdamW::to_device(s.into_state::<D>(), &device), [n]));
            let (value, state) =
                adamw.step::<1>(lr, tensor.inner().reshape([n]), grad.reshape([n]), state);
            let state = state.map(|s| reshape_state(s, dims));
            let mut value = Tensor::from_inner(value.reshape(dims));
            if require_grad {
                value = value.require_grad();
            }
            let param = Param::from_mapped_value(id, value, mapper);
            (Box::new(param), state.map(AdaptorRecord::from_state))
        });
        self.pending.push(PendingUpdate {
            id,
            group,
            size: shape.num_elements(),
            update,
        });
        // Never read: PutUpdates swaps it for the updated parameter without initializing it.
        Param::uninitialized(
            id,
            |_, _| unreachable!("a parameter taken out for its update is put back before use"),
            placeholder_device,
            require_grad,
            shape,
        )
    }
}

/// The same AdamW state with its moments reshaped (contiguous: no data moves).
fn reshape_state<Bk: Backend, const D1: usize, const D2: usize>(
    state: AdamWState<Bk, D1>,
    dims: [usize; D2],
) -> AdamWState<Bk, D2> {
    let m = state.momentum;
    AdamWState {
        momentum: AdaptiveMomentumState {
            time: m.time,
            moment_1: m.moment_1.reshape(dims),
            moment_2: m.moment_2.reshape(dims),
            max_moment_2: m.max_moment_2.map(|t| t.reshape(dims)),
        },
    }
}

/// Puts the parameters updated by [`GroupedAdamW::step_scaled`] back in place of their
/// placeholders.
struct PutUpdates {
    updated: HashMap<ParamId, Box<dyn Any>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for PutUpdates {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match self.updated.remove(&param.id) {
            Some(updated) => *updated
                .downcast::<Param<Tensor<B, D>>>()
                .expect("a parameter comes back with its own rank"),
            None => param,
        }
    }
}

/// A number kept on the device of an autodiff backend's inner backend (a gradient norm, a
/// gradient factor), shape `[1]`: nothing is read back to the host.
pub type DeviceScalar<B> = Tensor<<B as AutodiffBackend>::InnerBackend, 1>;

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
    let Some((coef, norm)) = grad_clip_factor::<B, M>(module, &grads, max_norm) else {
        return (grads, None);
    };
    (scale_grads::<B, M>(module, grads, coef), Some(norm))
}

/// [`clip_grad_norm`]'s factor without applying it: `min(1, max_norm / (norm + 1e-6))` and
/// the global norm of `module`'s gradients before clipping, both shape `[1]` on the device
/// (for [`GroupedAdamW::step_scaled`]). `None` when no parameter has a gradient.
pub fn grad_clip_factor<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
    max_norm: f64,
) -> Option<(DeviceScalar<B>, DeviceScalar<B>)> {
    let norm = global_grad_norm::<B, M>(module, grads)?;
    Some((clip_coefficient(norm.clone(), max_norm), norm))
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
            // As a vector: the squaring kernel is then the same for every rank.
            let n = grad.shape().num_elements();
            let sq = grad.reshape([n]).powi_scalar(2).sum();
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
pub(crate) mod tests {
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

    /// A module with parameters of repeated shapes (three 4x4 weights, five [4] vectors).
    #[derive(Module, Debug)]
    struct Stack<B: Backend> {
        first: Linear<B>,
        hidden: Vec<Linear<B>>,
        norm: burn::nn::LayerNorm<B>,
    }

    impl<B: Backend> Stack<B> {
        fn new(device: &B::Device) -> Self {
            Self {
                first: LinearConfig::new(3, 4).init(device),
                hidden: (0..3)
                    .map(|_| LinearConfig::new(4, 4).init(device))
                    .collect(),
                norm: burn::nn::LayerNormConfig::new(4).init(device),
            }
        }

        fn loss(&self, step: usize) -> Tensor<B, 1> {
            let device = self.first.weight.device();
            let x = Tensor::<B, 2>::from_data(
                TensorData::new(
                    (0..12)
                        .map(|i| ((i * (step + 3)) % 7) as f32 * 0.3 - 0.8)
                        .collect(),
                    [4, 3],
                ),
                &device,
            );
            let mut h = self.first.forward(x);
            for layer in &self.hidden {
                h = layer.forward(h).tanh();
            }
            self.norm.forward(h).powi_scalar(3).sum()
        }

        fn values(&self) -> Vec<Vec<f32>> {
            let mut out = Vec::new();
            self.visit(&mut CollectValues(&mut out));
            out
        }
    }

    /// Every parameter's values, in visiting order (also used by step.rs's tests).
    pub(crate) struct CollectValues<'a>(pub(crate) &'a mut Vec<Vec<f32>>);

    impl<B: Backend> ModuleVisitor<B> for CollectValues<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0
                .push(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }

    fn rank_groups(_: &str, rank: usize) -> GroupKind {
        if rank < 2 {
            GroupKind::NoDecay
        } else {
            GroupKind::Decay
        }
    }

    /// The grouped step (its own update order, the gradient factor inside the update) moves
    /// every parameter exactly as Burn's `OptimizerAdaptor` does, one AdamW per group, on
    /// gradients scaled beforehand, over three steps; and keeps the same state.
    #[test]
    fn grouped_steps_equal_burns_adamw_per_group_bit_for_bit() {
        let device = Default::default();
        let start = Stack::<B>::new(&device);
        let params = AdamWParams::vit();
        let mut grouped = GroupedAdamW::new(&start, params, rank_groups).with_zero_moments(&start);
        let kinds = grouped.kinds();
        let mut decay: OptimizerAdaptor<AdamW, Stack<B>, B> =
            params.config(params.weight_decay).init();
        let mut no_decay: OptimizerAdaptor<AdamW, Stack<B>, B> = params.config(0.0).init();

        let (mut ours, mut burns) = (start.clone(), start);
        for step in 0..3 {
            let factor = Tensor::<Flex, 1>::from_floats([0.5 + step as f32 * 0.25], &device);
            let grads = GradientsParams::from_grads(ours.loss(step).backward(), &ours);
            ours = grouped.step_scaled(1e-2, ours, grads, Some(factor.clone()));

            let grads = GradientsParams::from_grads(burns.loss(step).backward(), &burns);
            let grads = scale_grads::<B, _>(&burns, grads, factor);
            let (mut d, mut n) = (GradientsParams::new(), GradientsParams::new());
            let mut split = |id: ParamId, kind: GroupKind, grads: &mut GradientsParams| {
                let to = if kind == GroupKind::Decay {
                    &mut d
                } else {
                    &mut n
                };
                if let Some(g) = grads.remove::<Flex, 2>(id) {
                    to.register::<Flex, 2>(id, g);
                } else if let Some(g) = grads.remove::<Flex, 1>(id) {
                    to.register::<Flex, 1>(id, g);
                }
            };
            let mut grads = grads;
            for (id, kind) in &kinds {
                split(*id, *kind, &mut grads);
            }
            burns = decay.step(1e-2, burns, d);
            burns = no_decay.step(1e-2, burns, n);

            assert_eq!(ours.values(), burns.values(), "step {step}");
        }
        assert_ne!(ours.values(), Stack::<B>::new(&device).values());
        let records = grouped.to_records();
        // The same state, saved with each parameter's shape (the decay group holds the
        // matrices, the other one the vectors).
        let moments = |r: &AdaptorRecord<AdamW, B>, rank: usize| match rank {
            2 => {
                let m = r.clone().into_state::<2>().momentum;
                (m.time, m.moment_1.into_data(), m.moment_2.into_data())
            }
            _ => {
                let m = r.clone().into_state::<1>().momentum;
                (m.time, m.moment_1.into_data(), m.moment_2.into_data())
            }
        };
        for ((ours, burns), rank) in records
            .iter()
            .zip([decay.to_record(), no_decay.to_record()])
            .zip([2, 1])
        {
            assert_eq!(ours.len(), burns.len());
            assert!(!ours.is_empty());
            for (id, record) in ours {
                assert_eq!(moments(record, rank), moments(&burns[id], rank));
            }
        }
    }

    /// Parameters of one key (size) are kept apart wherever the others allow it, each key's
    /// in their given order.
    #[test]
    fn the_update_order_keeps_parameters_of_one_size_apart() {
        // Two transformer blocks: ln_1 (2), in_proj (w, b), out_proj (w, b), ln_2 (2),
        // c_fc (w, b), c_proj (w, b); d = 8.
        let block: [&[usize]; 12] = [
            &[8],
            &[8],
            &[24, 8],
            &[24],
            &[8, 8],
            &[8],
            &[8],
            &[8],
            &[32, 8],
            &[32],
            &[8, 32],
            &[8],
        ];
        let shapes: Vec<&[usize]> = block.iter().chain(&block).copied().collect();
        let order = update_order(&shapes);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..shapes.len()).collect::<Vec<_>>(),
            "a permutation"
        );
        for pair in order.windows(2) {
            assert_ne!(shapes[pair[0]], shapes[pair[1]], "order {order:?}");
        }
        let of_d: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| shapes[i] == [8])
            .collect();
        assert!(of_d.windows(2).all(|w| w[0] < w[1]), "{of_d:?}");

        // Where one shape outnumbers the others, they go between its first parameters.
        let crowded: [&[usize]; 5] = [&[4], &[4], &[4], &[4], &[2]];
        assert_eq!(update_order(&crowded), [0, 4, 1, 2, 3]);
        assert_eq!(update_order::<usize>(&[]), Vec::<usize>::new());
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
