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

/// The longest node address (`host:port`) the nodes exchange at join.
const ADDRESS_BYTES: usize = 256;

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
    /// The rank among all peers of all nodes.
    rank: usize,
    world: usize,
    /// The rank among this process's peers (burn-collective's local peer id).
    local_rank: usize,
    /// The number of nodes (processes) taking part.
    nodes: usize,
    /// With several nodes: every node's address (`host:port`), by node rank, once exchanged
    /// at join, so that a broken collective can say which node no longer answers.
    node_addresses: Arc<std::sync::OnceLock<Vec<String>>>,
    watch: Option<Arc<GroupWatch>>,
}

/// Several machines: this node's place in the group and burn-collective's global addresses
/// (`host:port` each). Every node runs the same number of local peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLink {
    /// The number of nodes.
    pub num_nodes: usize,
    /// This node's rank, `0..num_nodes`.
    pub node_rank: usize,
    /// The orchestrator every node registers with.
    pub orchestrator: String,
    /// This node's address for the other nodes (its data service listens on its port).
    pub node_address: String,
}

impl NodeLink {
    /// burn-collective's config for `local_world` peers on this node.
    fn collective_config(&self, local_world: usize) -> Result<CollectiveConfig, String> {
        let (_, port) = crate::config::host_port(&self.node_address)?;
        crate::config::host_port(&self.orchestrator)?;
        let ws = |a: &str| {
            format!("ws://{a}")
                .parse::<burn_communication::Address>()
                .expect("any string is an address")
        };
        Ok(CollectiveConfig::default()
            .with_num_devices(local_world)
            .with_num_nodes(self.num_nodes as u32)
            .with_global_address(ws(&self.orchestrator))
            .with_node_address(ws(&self.node_address))
            .with_data_service_port(port))
    }
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
        Self::join_on::<B>(rank, world, None, device, None)
    }

    /// Joins as local peer `local_rank` of `local_world` on this node, of the nodes of `node`
    /// (none: this process alone), reporting to `watch`; the global rank is
    /// `node_rank · local_world + local_rank`. Blocks until every peer of every node joined.
    pub(super) fn join_on<B: Backend>(
        local_rank: usize,
        local_world: usize,
        node: Option<&NodeLink>,
        device: B::Device,
        watch: Option<Arc<GroupWatch>>,
    ) -> Result<Self, TrainError> {
        let (node_rank, num_nodes) = node.map_or((0, 1), |n| (n.node_rank, n.num_nodes));
        let peer = Self {
            rank: node_rank * local_world + local_rank,
            world: num_nodes * local_world,
            local_rank,
            nodes: num_nodes,
            node_addresses: Arc::default(),
            watch,
        };
        if local_world == 0 || local_rank >= local_world || node_rank >= num_nodes {
            return Err(peer.error(
                "join",
                format!(
                    "local rank {local_rank} of {local_world} on node {node_rank} of \
                     {num_nodes} is not a place in the group"
                ),
            ));
        }
        let config = match node {
            None => CollectiveConfig::default().with_num_devices(local_world),
            Some(node) => node
                .collective_config(local_world)
                .map_err(|e| peer.error("join", e))?,
        };
        peer.watched("join", 0, || {
            register::<B>(PeerId::from(local_rank), device.clone(), config)
        })
        .map_err(|e| peer.error("join", e))?;
        if let Some(node) = node {
            peer.learn_node_addresses::<B>(&node.node_address, local_world, &device)?;
        }
        Ok(peer)
    }

    /// Runs one collective call `f` (`operation`, `bytes`), reporting it to the group's watch
    /// and to this thread's [`CollectiveStats`].
    fn watched<T>(&self, operation: &'static str, bytes: usize, f: impl FnOnce() -> T) -> T {
        if let Some(w) = &self.watch {
            w.enter(self.local_rank, operation);
        }
        let start = std::time::Instant::now();
        let out = f();
        record(bytes, start);
        if let Some(w) = &self.watch {
            w.leave(self.local_rank);
        }
        out
    }

    /// This peer's rank among the peers of all nodes (`0..world`).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of peers, of all nodes.
    pub fn world(&self) -> usize {
        self.world
    }

    /// This peer's rank among the peers of its process.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// The number of nodes (processes) in the group.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    fn id(&self) -> PeerId {
        PeerId::from(self.local_rank)
    }

    /// Every node's address, by node rank (each peer hands in its node's, at most
    /// [`ADDRESS_BYTES`]).
    fn learn_node_addresses<B: Backend>(
        &self,
        mine: &str,
        local_world: usize,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let all = self.gather_bytes::<B>(mine.as_bytes(), ADDRESS_BYTES, "join", device)?;
        let addresses = all
            .iter()
            .step_by(local_world)
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .collect();
        let _ = self.node_addresses.set(addresses);
        Ok(())
    }

    /// Every peer's bytes, by rank: each hands in at most `width` bytes (its length and its
    /// bytes as floats, exact in any float type, in its row of zeros) and the peers sum.
    /// `operation` names the exchange in errors.
    ///
    /// # Errors
    /// [`TrainError::Collective`] if `mine` is longer than `width` or the group failed.
    pub fn gather_bytes<B: Backend>(
        &self,
        mine: &[u8],
        width: usize,
        operation: &'static str,
        device: &B::Device,
    ) -> Result<Vec<Vec<u8>>, TrainError> {
        if mine.len() > width {
            return Err(self.error(
                operation,
                format!("{} bytes to exchange, more than {width}", mine.len()),
            ));
        }
        let mut row = vec![0f32; width + 1];
        row[0] = mine.len() as f32;
        for (slot, &byte) in row[1..].iter_mut().zip(mine) {
            *slot = f32::from(byte);
        }
        let all = self.gather_rows(Tensor::<B, 2>::from_data(
            burn::tensor::TensorData::new(row, [1, width + 1]),
            device,
        ))?;
        let all: Vec<f32> = all
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| self.error(operation, e))?;
        Ok(all
            .chunks(width + 1)
            .map(|row| {
                let len = (row[0] as usize).min(width);
                row[1..=len].iter().map(|&b| b as u8).collect()
            })
            .collect())
    }

    /// The nodes (other than this peer's) whose address no longer accepts connections.
    fn unreachable_nodes(&self) -> Vec<String> {
        let Some(addresses) = self.node_addresses.get() else {
            return Vec::new();
        };
        let own = self.rank * self.nodes / self.world;
        addresses
            .iter()
            .enumerate()
            .filter(|(node, _)| *node != own)
            .filter(|(_, address)| {
                use std::net::ToSocketAddrs;
                let timeout = std::time::Duration::from_secs(2);
                !address.to_socket_addrs().is_ok_and(|mut resolved| {
                    resolved.any(|a| std::net::TcpStream::connect_timeout(&a, timeout).is_ok())
                })
            })
            .map(|(node, address)| format!("node {node} ({address})"))
            .collect()
    }

    fn error(&self, operation: &'static str, e: impl std::fmt::Debug) -> TrainError {
        let mut message = format!("{e:?}");
        if self.nodes > 1 && (message.contains("LocalServerMissing") || message.contains("Global("))
        {
            // burn-collective's server task ends when a connection to another node breaks.
            let gone = self.unreachable_nodes();
            let which = if gone.is_empty() {
                "another node died or lost its connection".to_string()
            } else {
                format!(
                    "{} no longer answer(s): died or unreachable",
                    gone.join(", ")
                )
            };
            message.push_str(&format!(
                " (the collective between nodes broke: {which}; resume every node from the last \
                 checkpoint)"
            ));
        }
        TrainError::Collective {
            rank: self.rank,
            operation,
            message,
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
        if self.nodes > 1 {
            // Between nodes burn-collective's ring splits the tensor along a dimension into
            // one part per node and refuses a shorter one: flat, with zeros up to the nodes.
            let shape = x.shape();
            let n = shape.num_elements();
            let flat = x.reshape([n]);
            let flat = if n < self.nodes {
                let device = flat.device();
                Tensor::cat(vec![flat, Tensor::zeros([self.nodes - n], &device)], 0)
            } else {
                flat
            };
            let sum = self.all_reduce_raw(flat, bytes)?;
            return Ok(sum.narrow(0, 0, n).reshape(shape));
        }
        self.all_reduce_raw(x, bytes)
    }

    fn all_reduce_raw<B: Backend, const D: usize>(
        &self,
        x: Tensor<B, D>,
        bytes: usize,
    ) -> Result<Tensor<B, D>, TrainError> {
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
        if self.nodes > 1 {
            // burn-collective 0.21 has no broadcast between nodes ("Global broadcast
            // unimplemented"): rank 0's values plus everyone else's zeros, exactly.
            let x = if self.rank == 0 { x } else { x.zeros_like() };
            return self.all_reduce_sum(x);
        }
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

    /// Checks that every peer of every node has the same `fingerprint` (e.g. a hash of the run
    /// config and the program version), so that a node started with another config or
    /// version is refused when it joins; every peer fails, naming the peers that differ from
    /// rank 0.
    ///
    /// # Errors
    /// [`TrainError::Collective`] naming the peers that differ, or if the group failed.
    pub fn agree<B: Backend>(
        &self,
        fingerprint: &[u16],
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let mine: Vec<f32> = fingerprint.iter().map(|&v| f32::from(v)).collect();
        let k = mine.len();
        let all = self.gather_rows(Tensor::<B, 2>::from_data(
            burn::tensor::TensorData::new(mine, [1, k]),
            device,
        ))?;
        let all: Vec<f32> = all
            .into_data()
            .to_vec()
            .map_err(|e| self.error("agree", e))?;
        let rows: Vec<&[f32]> = all.chunks(k).collect();
        let differ: Vec<String> = (1..rows.len())
            .filter(|&r| rows[r] != rows[0])
            .map(|r| r.to_string())
            .collect();
        if differ.is_empty() {
            Ok(())
        } else {
            Err(self.error(
                "join",
                format!(
                    "refused: peer(s) {} run another config (trajectory), clipkd version or \
                     number of devices per node than peer 0; start every node with the same \
                     command and build",
                    differ.join(", ")
                ),
            ))
        }
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
