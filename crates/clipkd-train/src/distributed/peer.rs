//! One peer of a data-parallel group and its collectives (burn-collective), with the bytes and
//! time they take.

use burn::collective::{
    CollectiveConfig, PeerId, ReduceOperation, all_reduce, broadcast, finish_collective, register,
};
use std::sync::Arc;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};

use super::group::GroupWatch;
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
///
/// Inside [`super::train_on_peers`] a peer also reports when it enters and leaves each
/// collective, so that a group whose peer died or never arrived fails within the timeout
/// instead of waiting forever.
#[derive(Debug, Clone)]
pub struct Peer {
    rank: usize,
    world: usize,
    watch: Option<Arc<GroupWatch>>,
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
        let peer = Self {
            rank,
            world,
            watch: None,
        };
        let config = CollectiveConfig::default().with_num_devices(world);
        peer.watched("join", 0, || {
            register::<B>(PeerId::from(rank), device, config)
        })
        .map_err(|e| peer.error("join", e))?;
        Ok(peer)
    }

    /// Joins like [`Peer::join`], reporting to `watch` (see [`super::train_on_peers`]).
    pub(super) fn join_watched<B: Backend>(
        rank: usize,
        world: usize,
        device: B::Device,
        watch: Arc<GroupWatch>,
    ) -> Result<Self, TrainError> {
        let mut peer = Self::join::<B>(rank, world, device)?;
        peer.watch = Some(watch);
        Ok(peer)
    }

    /// Runs one collective call `f` (`operation`, `bytes`), reporting it to the group's watch
    /// and to this thread's [`CollectiveStats`].
    fn watched<T>(&self, operation: &'static str, bytes: usize, f: impl FnOnce() -> T) -> T {
        if let Some(w) = &self.watch {
            w.enter(self.rank, operation);
        }
        let start = std::time::Instant::now();
        let out = f();
        record(bytes, start);
        if let Some(w) = &self.watch {
            w.leave(self.rank);
        }
        out
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
        let out = self
            .watched("all_reduce", bytes, || {
                all_reduce::<B>(self.id(), x.into_primitive().tensor(), ReduceOperation::Sum)
            })
            .map_err(|e| self.error("all_reduce", e))?;
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
        let mine = (self.rank == 0).then(|| x.into_primitive().tensor());
        let out = self
            .watched("broadcast", bytes, || broadcast::<B>(self.id(), mine))
            .map_err(|e| self.error("broadcast", e))?;
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
            peer: self.clone(),
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
        self.watched("finish", 0, || finish_collective::<B>(self.id()))
            .map_err(|e| self.error("finish", e))
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
