//! The data-parallel step: the global batch's gradient on every peer (the four steps of the
//! module docs), then the same clipping, AdamW and step-end hook as one device.

use burn::module::{AutodiffModule, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clipkd_losses::{DistillInput, Embeddings, LossTerm, LossTerms};
use clipkd_models::ClipEncoder;

use super::Peer;
use crate::error::TrainError;
use crate::optim::GroupedAdamW;
use crate::step::{
    DistillModel, MicroBatch, StepOptions, StepOutput, TrainableObjective,
    accumulate_micro_batches, finish_step,
};
use crate::student::Student;

/// One optimizer step of a data-parallel group, on this peer: `micro_batches` are this peer's
/// rows of each of the step's micro-batches (rows `rank·n .. rank·n + n` of a global
/// micro-batch of `world·n`). Every peer must call it with the same `options` and the same
/// number and size of micro-batches. Every peer ends with the same parameters, those one
/// device reaches with [`crate::step::train_step`] on the global micro-batches (up to the
/// order of float sums), as long as the models draw no random numbers (stochastic depth,
/// dropout and MFD's mask draw per peer).
///
/// The returned terms are the global batch's (the mean over the peers of their local-rows
/// terms, which is the single-device value); the gradient norm, clipping and the loss-scale
/// decision use the reduced gradients, so they agree on every peer.
///
/// # Errors
/// [`TrainError::Collective`] if a collective fails; the models' and losses' errors.
pub fn data_parallel_step<B, S, T, L>(
    peer: &Peer,
    teacher: Option<&T>,
    model: DistillModel<B, S, L>,
    optimizer: &mut GroupedAdamW<B, DistillModel<B, S, L>>,
    micro_batches: Vec<MicroBatch<B::InnerBackend>>,
    options: &StepOptions,
) -> Result<StepOutput<B, S, L>, TrainError>
where
    B: AutodiffBackend,
    S: Student<B>,
    T: ClipEncoder<B::InnerBackend>,
    L: TrainableObjective<B>,
{
    // Each micro-batch's loss counts 1/k, scaled for f16 as on one device.
    let scale = options.loss_scale.unwrap_or(1.0) / micro_batches.len().max(1) as f64;
    let (grads, terms) = accumulate_micro_batches(
        teacher,
        &model,
        micro_batches,
        options,
        |local, accumulator| {
            local_gradients(
                peer,
                &model,
                local,
                |input| Ok(model.losses.forward(input)?),
                scale,
                accumulator,
            )
        },
    )?;
    let terms = mean_terms(peer, terms)?;
    let grads = reduce_gradients(peer, &model, grads)?;
    finish_step(model, optimizer, grads, terms, options)
}

/// The gradient of the global batch's loss for every parameter of `model`, identical on all
/// peers, and the global batch's loss terms: `local` is this peer's input as on one device
/// (its `n` samples: the student's embeddings with their graph, the teacher's, features and
/// masked view if any), `loss` the loss of a [`DistillInput`] (its local rows are set here).
///
/// # Errors
/// [`TrainError::Collective`] if a collective fails; the loss's own errors.
pub fn data_parallel_gradients<B, M>(
    peer: &Peer,
    model: &M,
    local: DistillInput<B>,
    loss: impl FnOnce(&DistillInput<B>) -> Result<LossTerms<B>, TrainError>,
) -> Result<(GradientsParams, LossTerms<B::InnerBackend>), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let mut accumulator = GradientsAccumulator::<M>::new();
    let terms = local_gradients(peer, model, local, loss, 1.0, &mut accumulator)?;
    let grads = reduce_gradients(peer, model, accumulator.grads())?;
    Ok((grads, mean_terms(peer, terms)?))
}

/// Steps 1-3 of the module docs for one micro-batch: this peer's gradient of every peer's loss
/// (`scale` times each), added to `accumulator`, not yet reduced over the peers; returns this
/// peer's local-rows terms (unscaled, detached).
fn local_gradients<B, M>(
    peer: &Peer,
    model: &M,
    local: DistillInput<B>,
    loss: impl FnOnce(&DistillInput<B>) -> Result<LossTerms<B>, TrainError>,
    scale: f64,
    accumulator: &mut GradientsAccumulator<M>,
) -> Result<LossTerms<B::InnerBackend>, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let n = local.batch_size();
    let offset = peer.rank() * n;
    let global = n * peer.world();
    // Everything of the student the losses read (with its graph), side by side as `[n, Σd]`,
    // and the teacher's likewise: one gather each.
    let mut student = vec![
        local.student().image().clone(),
        local.student().text().clone(),
    ];
    let mut teacher = vec![
        local.teacher().image().clone().inner(),
        local.teacher().text().clone().inner(),
    ];
    let masked = local.student_masked_image().is_some();
    if let Some(m) = local.student_masked_image() {
        student.push(m.clone());
    }
    let mut features = Vec::new();
    for f in local.features() {
        let [_, ts, ds] = f.student.dims();
        let [_, tt, dt] = f.teacher.dims();
        student.push(f.student.clone().reshape([n, ts * ds]));
        teacher.push(f.teacher.clone().inner().reshape([n, tt * dt]));
        features.push((f.name.clone(), [ts, ds], [tt, dt]));
    }
    let student_widths: Vec<usize> = student.iter().map(|t| t.dims()[1]).collect();
    let teacher_widths: Vec<usize> = teacher.iter().map(|t| t.dims()[1]).collect();
    let local_student = Tensor::cat(student, 1);

    // 1. The global batch: the student's as one leaf, whose gradient is read below.
    let gathered =
        Tensor::<B, 2>::from_inner(peer.gather_rows(local_student.clone().inner())?).require_grad();
    let gathered_teacher = Tensor::<B, 2>::from_inner(peer.gather_rows(Tensor::cat(teacher, 1))?);
    let mut s = columns(gathered.clone(), &student_widths).into_iter();
    let mut t = columns(gathered_teacher, &teacher_widths).into_iter();
    let next = |parts: &mut std::vec::IntoIter<Tensor<B, 2>>| {
        parts.next().expect("one column block per part")
    };
    let student = Embeddings::new(
        next(&mut s),
        next(&mut s),
        local.student().logit_scale().clone(),
    )?;
    let teacher = Embeddings::new(
        next(&mut t),
        next(&mut t),
        local.teacher().logit_scale().clone(),
    )?;
    let mut input = DistillInput::new(student, teacher)?;
    if masked {
        input = input.with_masked_student_image(next(&mut s))?;
    }
    for (name, [ts, ds], [tt, dt]) in features {
        input = input.with_features(
            name,
            next(&mut s).reshape([global, ts, ds]),
            next(&mut t).reshape([global, tt, dt]),
        )?;
    }
    let input = input.with_local_rows(offset, n)?;

    // 2. This peer's loss; its gradient reaches the loss's parameters and the logit scale
    //    directly, the gathered rows through the leaf.
    let terms = loss(&input)?;
    let total = terms.total()?;
    let total = if scale == 1.0 {
        total
    } else {
        total.mul_scalar(scale)
    };
    let grads = total.backward();
    let upstream = gathered.grad(&grads);
    accumulator.accumulate(model, GradientsParams::from_grads(grads, model));

    // 3. Every peer's loss gradient with respect to this peer's rows, through the towers (a
    //    loss that reads no student embedding still takes part in the sum, with zeros).
    let upstream = upstream.unwrap_or_else(|| {
        Tensor::zeros([global, local_student.dims()[1]], &local_student.device())
    });
    let mine = peer.all_reduce_sum(upstream)?.narrow(0, offset, n);
    let surrogate = (local_student * Tensor::<B, 2>::from_inner(mine)).sum();
    accumulator.accumulate(
        model,
        GradientsParams::from_grads(surrogate.backward(), model),
    );
    Ok(terms.detached())
}

/// `x`'s column blocks of the given widths, in order.
fn columns<B: Backend>(x: Tensor<B, 2>, widths: &[usize]) -> Vec<Tensor<B, 2>> {
    let mut offset = 0;
    widths
        .iter()
        .map(|&w| {
            let part = x.clone().narrow(1, offset, w);
            offset += w;
            part
        })
        .collect()
}

/// The mean over the peers of each term (one all-reduce of the stacked values).
fn mean_terms<B: Backend>(peer: &Peer, terms: LossTerms<B>) -> Result<LossTerms<B>, TrainError> {
    let summed = peer.all_reduce_sum(terms.values()?)?;
    let world = peer.world() as f64;
    let mut out = LossTerms::new();
    for (i, LossTerm { name, weight, .. }) in terms.into_iter().enumerate() {
        out.push(
            name,
            weight,
            summed.clone().narrow(0, i, 1).div_scalar(world),
        );
    }
    Ok(out)
}

/// Step 4 of the module docs: each parameter's gradient summed over the peers (in buckets, in
/// the module's visiting order) and divided by the number of peers.
fn reduce_gradients<B, M>(
    peer: &Peer,
    model: &M,
    local: GradientsParams,
) -> Result<GradientsParams, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let mut collect = CollectLocal::<B::InnerBackend> {
        local,
        entries: Vec::new(),
    };
    model.visit(&mut collect);
    let summed = peer.all_reduce_buckets(collect.entries.iter().map(|e| e.1.clone()).collect())?;
    let mut distribute = Distribute {
        entries: collect
            .entries
            .into_iter()
            .zip(summed)
            .map(|((id, _, has_grad), sum)| (id, sum, has_grad))
            .collect(),
        out: GradientsParams::new(),
        world: peer.world() as f64,
    };
    model.visit(&mut distribute);
    Ok(distribute.out)
}

/// Per trainable parameter, in the module's visiting order (the same on every peer, whatever
/// the parameter ids): this peer's gradient, flattened. A parameter without a gradient here
/// still takes part (with zeros), so that the peers' buckets agree; it gets no gradient, as on
/// one device.
struct CollectLocal<I: Backend> {
    local: GradientsParams,
    entries: Vec<(ParamId, Tensor<I, 1>, bool)>,
}

impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for CollectLocal<B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        let id = param.id;
        let (local, has_grad) = match self.local.remove::<B::InnerBackend, D>(id) {
            Some(g) => (g, true),
            None => (
                Tensor::zeros(param.lazy_shape(), &param.lazy_device()),
                false,
            ),
        };
        let n = local.shape().num_elements();
        self.entries.push((id, local.reshape([n]), has_grad));
    }
}

/// The summed gradients back into their parameters' shapes, divided by the number of peers.
struct Distribute<I: Backend> {
    entries: std::collections::VecDeque<(ParamId, Tensor<I, 1>, bool)>,
    out: GradientsParams,
    world: f64,
}

impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Distribute<B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        let (id, sum, has_grad) = self
            .entries
            .pop_front()
            .expect("one entry per trainable parameter, in visiting order");
        debug_assert_eq!(id, param.id);
        if has_grad {
            let shape: [usize; D] = param.lazy_shape().dims();
            self.out
                .register::<B::InnerBackend, D>(id, sum.reshape(shape).div_scalar(self.world));
        }
    }
}
