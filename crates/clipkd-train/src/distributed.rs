//! Data parallelism over Burn's own collective engine (`burn-collective`, re-exported as
//! `burn::collective`): the primitives of a data-parallel distillation step and the exact
//! gradient of the global batch (issue 13; the trainer, data sharding, the CLI and multi-node
//! runs build on these).
//!
//! # The step on `W` peers
//! Each peer holds a copy of the student and the loss module and `n = N / W` of the global
//! batch's `N` samples. Peer `r` owns rows `r·n .. r·n + n` of the global batch.
//! 1. It embeds its samples (student with gradient, teacher without) and all-gathers both into
//!    the global batch ([`Peer::gather_rows`]: burn-collective has no all-gather, so each peer
//!    writes its rows into a zero `[N, D]` tensor and the peers all-reduce it with a sum; the
//!    embeddings are small next to the gradients).
//! 2. Its loss `L_r` is the losses' local-rows form on the gathered batch
//!    (`DistillInput::with_local_rows`: this peer's rows are the anchors, the whole batch the
//!    candidates, the mean over the local rows), computed on the gathered student embeddings
//!    as a leaf `G`, so that the backward gives `∂L_r/∂G` for all `N` rows.
//! 3. The peers all-reduce `∂L_r/∂G` (sum): peer `r` takes its rows of `Σ_p ∂L_p/∂G`, the
//!    gradient of every peer's loss with respect to its own embeddings (open_clip's
//!    `gather_with_grad`), and back-propagates it through its towers.
//! 4. The parameter gradients (towers, logit scale, loss parameters) are all-reduced (sum, in
//!    the module's visiting order, flattened into buckets of at most 25 MiB) and divided by `W`: the
//!    gradient of `mean_r L_r`, which equals the single-device loss on the global batch (the
//!    contract of `DistillInput`). CLIP-KD's DDP averages the same per-peer gradients, but
//!    without step 3 (`gather_with_grad=False`), so its gradient lacks the cross-peer terms; here
//!    `W` peers x `n` samples give the update of one peer with `N` samples, which the tests
//!    check.

use burn::collective::{
    CollectiveConfig, PeerId, ReduceOperation, all_reduce, broadcast, finish_collective, register,
};
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};
use clipkd_losses::{DistillInput, Embeddings};

use crate::error::TrainError;

/// What this thread's peer has put through collectives since the last [`take_stats`]: the
/// bytes of the tensors it handed in (a ring all-reduce of `S` bytes sends `2 (W - 1) / W · S`
/// per peer over the links; the figure here is `S`), and the wall time spent inside the calls
/// (waiting for the slowest peer included).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CollectiveStats {
    /// Collective calls.
    pub calls: u64,
    /// Bytes of the tensors handed to the collectives.
    pub bytes: u64,
    /// Seconds spent inside the calls.
    pub seconds: f64,
}

thread_local! {
    static STATS: std::cell::Cell<CollectiveStats> = const {
        std::cell::Cell::new(CollectiveStats { calls: 0, bytes: 0, seconds: 0.0 })
    };
}

/// This thread's [`CollectiveStats`] since the last call, reset to zero (a peer is a thread).
pub fn take_stats() -> CollectiveStats {
    STATS.with(|s| s.replace(CollectiveStats::default()))
}

/// Counts one collective call of `bytes` that took `start.elapsed()`.
fn record(bytes: usize, start: std::time::Instant) {
    let seconds = start.elapsed().as_secs_f64();
    STATS.with(|s| {
        let mut v = s.get();
        v.calls += 1;
        v.bytes += bytes as u64;
        v.seconds += seconds;
        s.set(v);
    });
}

/// The largest gradient bucket of [`Peer::all_reduce_buckets`]: PyTorch DDP's default, 25 MiB.
pub const BUCKET_BYTES: usize = 25 << 20;

/// One peer of a data-parallel group inside this process (a thread per device), joined
/// through burn-collective's local server of one backend. burn-collective keeps a server per
/// backend type: join with the inner backend of the autodiff backend that trains, and run every
/// collective on it (the functions here do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    rank: usize,
    world: usize,
}

impl Peer {
    /// Joins the group of `world` local peers as `rank` on `device` (blocks until all joined
    /// only at the first collective operation).
    ///
    /// # Errors
    /// [`TrainError::Collective`] if the rank is out of range or burn-collective refuses the
    /// registration (a second registration, a mismatched world size).
    pub fn join<B: Backend>(
        rank: usize,
        world: usize,
        device: B::Device,
    ) -> Result<Self, TrainError> {
        if world == 0 || rank >= world {
            return Err(TrainError::Collective {
                rank,
                operation: "join",
                message: format!("rank {rank} is not in a group of {world} peers"),
            });
        }
        let config = CollectiveConfig::default().with_num_devices(world);
        register::<B>(PeerId::from(rank), device, config)
            .map_err(|e| Self { rank, world }.error("join", e))?;
        Ok(Self { rank, world })
    }

    /// This peer's rank (`0..world`).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of peers.
    pub fn world(&self) -> usize {
        self.world
    }

    fn id(&self) -> PeerId {
        PeerId::from(self.rank)
    }

    fn error(&self, operation: &'static str, e: impl std::fmt::Debug) -> TrainError {
        TrainError::Collective {
            rank: self.rank,
            operation,
            message: format!("{e:?}"),
        }
    }

    /// The element-wise sum of `x` over the peers (every peer gets it).
    ///
    /// # Errors
    /// [`TrainError::Collective`] if a peer's shape differs or the group failed.
    pub fn all_reduce_sum<B: Backend, const D: usize>(
        &self,
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, TrainError> {
        let bytes = x.shape().num_elements() * x.dtype().size();
        let start = std::time::Instant::now();
        let out = all_reduce::<B>(self.id(), x.into_primitive().tensor(), ReduceOperation::Sum)
            .map_err(|e| self.error("all_reduce", e))?;
        record(bytes, start);
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// The element-wise sums over the peers of many 1-D tensors, in buckets of at most
    /// [`BUCKET_BYTES`] (one all-reduce per bucket instead of one per tensor, as PyTorch's DDP
    /// buckets gradients); a tensor larger than a bucket goes alone.
    ///
    /// # Errors
    /// [`TrainError::Collective`] if the peers' tensors differ or the group failed.
    pub fn all_reduce_buckets<B: Backend>(
        &self,
        tensors: Vec<Tensor<B, 1>>,
    ) -> Result<Vec<Tensor<B, 1>>, TrainError> {
        let mut out = Vec::with_capacity(tensors.len());
        let mut bucket: Vec<Tensor<B, 1>> = Vec::new();
        let mut bytes = 0;
        let flush = |bucket: &mut Vec<Tensor<B, 1>>, out: &mut Vec<Tensor<B, 1>>| {
            if bucket.is_empty() {
                return Ok(());
            }
            let sizes: Vec<usize> = bucket.iter().map(|t| t.dims()[0]).collect();
            let sum = self.all_reduce_sum(Tensor::cat(std::mem::take(bucket), 0))?;
            let mut offset = 0;
            for size in sizes {
                out.push(sum.clone().narrow(0, offset, size));
                offset += size;
            }
            Ok::<(), TrainError>(())
        };
        for t in tensors {
            let size = t.dims()[0] * t.dtype().size();
            if bytes + size > BUCKET_BYTES && !bucket.is_empty() {
                flush(&mut bucket, &mut out)?;
                bytes = 0;
            }
            bytes += size;
            bucket.push(t);
        }
        flush(&mut bucket, &mut out)?;
        Ok(out)
    }

    /// Rank 0's `x` on every peer (the others' `x` is ignored).
    ///
    /// # Errors
    /// [`TrainError::Collective`] if the group failed.
    pub fn broadcast_from_first<B: Backend, const D: usize>(
        &self,
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, TrainError> {
        let bytes = x.shape().num_elements() * x.dtype().size();
        let start = std::time::Instant::now();
        let mine = (self.rank == 0).then(|| x.into_primitive().tensor());
        let out = broadcast::<B>(self.id(), mine).map_err(|e| self.error("broadcast", e))?;
        record(bytes, start);
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// The rows of every peer, in rank order: `[n, D]` from each of `W` peers -> `[W n, D]`
    /// (equal shares). Each peer writes its rows into zeros and the peers sum.
    ///
    /// # Errors
    /// [`TrainError::Collective`] if the peers' shapes differ or the group failed.
    pub fn gather_rows<B: Backend>(&self, local: Tensor<B, 2>) -> Result<Tensor<B, 2>, TrainError> {
        let [n, d] = local.dims();
        let device = local.device();
        let mut parts = Vec::with_capacity(self.world);
        for r in 0..self.world {
            parts.push(if r == self.rank {
                local.clone()
            } else {
                Tensor::zeros([n, d], &device)
            });
        }
        self.all_reduce_sum(Tensor::cat(parts, 0))
    }

    /// Replaces every parameter of `module` (and running statistic) by rank 0's, so that all
    /// peers start from the same weights. The collectives run on `B`'s inner backend, the one
    /// the peers joined with.
    ///
    /// # Errors
    /// [`TrainError::Collective`] if the group failed.
    pub fn broadcast_module<B: AutodiffBackend, M: Module<B>>(
        &self,
        module: M,
    ) -> Result<M, TrainError> {
        let mut mapper = BroadcastParams {
            peer: *self,
            error: None,
        };
        let module = module.map(&mut mapper);
        match mapper.error {
            Some(e) => Err(e),
            None => Ok(module),
        }
    }

    /// Leaves the group (every peer calls it once, at the end).
    ///
    /// # Errors
    /// [`TrainError::Collective`] if the group failed.
    pub fn leave<B: Backend>(self) -> Result<(), TrainError> {
        finish_collective::<B>(self.id()).map_err(|e| self.error("finish", e))
    }
}

/// Maps every float parameter to rank 0's value, in visiting order (the same on every peer).
struct BroadcastParams {
    peer: Peer,
    error: Option<TrainError>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for BroadcastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let require_grad = tensor.is_require_grad();
        match self.peer.broadcast_from_first(tensor.clone().inner()) {
            Ok(value) => {
                let value = Tensor::<B, D>::from_inner(value);
                let value = if require_grad {
                    value.require_grad()
                } else {
                    value
                };
                Param::from_mapped_value(id, value, mapper)
            }
            Err(e) => {
                self.error = Some(e);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

/// The teacher's outputs for one peer's samples (plain tensors: no gradient reaches it).
#[derive(Debug, Clone)]
pub struct TeacherShare<B: Backend> {
    /// Raw image embeddings, `[n, D_t]`.
    pub image: Tensor<B, 2>,
    /// Raw text embeddings, `[n, D_t]`.
    pub text: Tensor<B, 2>,
    /// The teacher's log logit scale, `[1]` (the same on every peer).
    pub log_scale: Tensor<B, 1>,
}

/// This peer's share of a data-parallel distillation step: the global batch's gradient of
/// `loss` for every parameter of `model`, identical on all peers, and this peer's loss value
/// (see the module docs for the steps).
///
/// - `student_image`, `student_text`: the student's raw embeddings of this peer's `n` samples,
///   computed from `model` (with gradient);
/// - `log_scale`: the student's log logit scale (a parameter of `model`);
/// - `teacher`: the teacher's embeddings of the same `n` samples (no gradient);
/// - `loss`: the scalar loss of a `DistillInput` (its local rows set by this function).
///
/// # Errors
/// [`TrainError::Collective`] if a collective fails; the loss's own errors.
pub fn data_parallel_gradients<B, M>(
    peer: &Peer,
    model: &M,
    student_image: Tensor<B, 2>,
    student_text: Tensor<B, 2>,
    log_scale: Tensor<B, 1>,
    teacher: TeacherShare<B::InnerBackend>,
    loss: impl FnOnce(&DistillInput<B>) -> Result<Tensor<B, 1>, TrainError>,
) -> Result<(GradientsParams, Tensor<B::InnerBackend, 1>), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let n = student_image.dims()[0];
    let offset = peer.rank() * n;
    // 1. The global batch: the student's as leaves (their gradient is read below), the
    //    teacher's as plain values.
    let image =
        Tensor::<B, 2>::from_inner(peer.gather_rows(student_image.clone().inner())?).require_grad();
    let text =
        Tensor::<B, 2>::from_inner(peer.gather_rows(student_text.clone().inner())?).require_grad();
    let TeacherShare {
        image: t_image,
        text: t_text,
        log_scale: t_log_scale,
    } = teacher;
    let teacher = Embeddings::from_log_scale(
        Tensor::from_inner(peer.gather_rows(t_image)?),
        Tensor::from_inner(peer.gather_rows(t_text)?),
        Tensor::from_inner(t_log_scale),
    )?;
    let student = Embeddings::from_log_scale(image.clone(), text.clone(), log_scale)?;
    let input = DistillInput::new(student, teacher)?.with_local_rows(offset, n)?;
    // 2. This peer's loss and its gradient: the loss's and logit scale's parameters directly,
    //    the embeddings' for every row.
    let value = loss(&input)?;
    let grads = value.backward();
    let d_image = image.grad(&grads);
    let d_text = text.grad(&grads);
    let direct = GradientsParams::from_grads(grads, model);
    // 3. Every peer's loss gradient with respect to this peer's rows, through the towers.
    let upstream = |g: Option<Tensor<B::InnerBackend, 2>>, like: &Tensor<B, 2>| match g {
        Some(g) => peer
            .all_reduce_sum(g)
            .map(|sum| Some(Tensor::<B, 2>::from_inner(sum.narrow(0, offset, n)))),
        None => {
            // A loss that ignores these embeddings: the peers still take part in the sum.
            let [rows, d] = like.dims();
            peer.all_reduce_sum(Tensor::<B::InnerBackend, 2>::zeros(
                [rows * peer.world(), d],
                &like.device(),
            ))
            .map(|_| None)
        }
    };
    let up_image = upstream(d_image, &student_image)?;
    let up_text = upstream(d_text, &student_text)?;
    let surrogate = match (up_image, up_text) {
        (Some(i), Some(t)) => Some((student_image * i).sum() + (student_text * t).sum()),
        (Some(i), None) => Some((student_image * i).sum()),
        (None, Some(t)) => Some((student_text * t).sum()),
        (None, None) => None,
    };
    let through_towers = match surrogate {
        Some(s) => GradientsParams::from_grads(s.backward(), model),
        None => GradientsParams::new(),
    };
    // 4. Both parts per parameter, summed over the peers in buckets and averaged.
    let mut collect = CollectLocal::<B::InnerBackend> {
        direct,
        through_towers,
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
    let averaged = distribute.out;
    Ok((averaged, value.inner()))
}

/// Per trainable parameter, in the module's visiting order (the same on every peer, whatever
/// the parameter ids): this peer's two gradient parts added and flattened. A parameter without
/// a gradient here still takes part (with zeros), so that the peers' buckets agree; it gets no
/// gradient, as on one device.
struct CollectLocal<I: Backend> {
    direct: GradientsParams,
    through_towers: GradientsParams,
    entries: Vec<(burn::module::ParamId, Tensor<I, 1>, bool)>,
}

impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for CollectLocal<B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        let id = param.id;
        let a = self.direct.remove::<B::InnerBackend, D>(id);
        let b = self.through_towers.remove::<B::InnerBackend, D>(id);
        let (local, has_grad) = match (a, b) {
            (Some(a), Some(b)) => (a + b, true),
            (Some(g), None) | (None, Some(g)) => (g, true),
            (None, None) => {
                let shape = param.lazy_shape();
                let device = param.lazy_device();
                (Tensor::zeros(shape, &device), false)
            }
        };
        let n = local.shape().num_elements();
        self.entries.push((id, local.reshape([n]), has_grad));
    }
}

/// The summed gradients back into their parameters' shapes, divided by the number of peers.
struct Distribute<I: Backend> {
    entries: std::collections::VecDeque<(burn::module::ParamId, Tensor<I, 1>, bool)>,
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
