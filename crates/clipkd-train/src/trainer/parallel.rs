//! The trainer on several devices of this process: one peer per device, a thread each
//! ([`crate::distributed::run_peers`]). Each node's peer 0 leads its node: it reads the node's
//! data, splits every batch into equal row shares (rows `r·n .. r·n + n` to local peer `r`),
//! sends the followers theirs before each step; node 0's leader alone writes metrics,
//! checkpoints and evaluations. Every peer takes the same [`data_parallel_step`], so all hold
//! the same weights and moments.
//!
//! On one node the leader reads the global batches in the single-device order, so the data
//! position in a checkpoint is the same whatever the number of peers: a run resumes exactly
//! with the same number of peers, and with another number it continues the same global
//! batches (only the float sums' order changes). On several nodes each node reads its own
//! part of the data ([`clipkd_data::loader::Split`]); before each step the nodes exchange
//! whether each has a whole group and where its data stands ([`Leader::exchange_positions`]),
//! so that they end a pass together and node 0 checkpoints every node's position.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burn::tensor::backend::{AutodiffBackend, Backend};
use clipkd_data::loader::{Batch, DataPosition};
use clipkd_losses::LossSet;
use clipkd_models::{Clip, ClipEncoder};

use super::data::{HostMicroBatch, HostTeacher, host_rows};
use super::runner::{Runner, assemble, restore};
use super::{Models, OpenClipModels, PreparedRun, RunSummary};
use crate::config::RunConfig;
use crate::distributed::{
    NodeLink, Peer, PeerBody, data_parallel_step, run_peers, start_orchestrator,
};
use crate::error::TrainError;
use crate::step::{StepOptions, TrainableObjective};
use crate::student::Student;

/// Models are built one peer at a time: seeded initialisation draws from the CPU backend's
/// generator, which is global to the process.
static BUILDING: Mutex<()> = Mutex::new(());

/// What the leader asks of a follower.
enum Order {
    /// Take part in [`Leader::exchange_positions`] (several nodes, before each step).
    Exchange,
    /// Take a step.
    Step(StepOrder),
}

/// The longest data position (JSON) the nodes exchange before each step.
const POSITION_BYTES: usize = 2048;

/// What the leader sends a follower before each step.
struct StepOrder {
    /// The follower's rows of each micro-batch.
    micro: Vec<HostMicroBatch>,
    options: StepOptions,
    /// The backend seed of the step (stochastic depth, MFD's mask).
    seed: u64,
}

/// The leader's side of the group, held by its [`Runner`].
pub(super) struct Leader {
    pub(super) peer: Peer,
    followers: Vec<Sender<Order>>,
}

/// One node's answer in [`Leader::exchange_positions`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct NodeReady {
    /// Whether the node read a whole group of micro-batches for the next step.
    pub(super) ready: bool,
    /// Where the node's data stands after that group.
    pub(super) position: DataPosition,
}

impl Leader {
    /// With several nodes, before each step: every node says whether it read a whole group
    /// for the step and where its data stands after it; returns every node's answer, by node
    /// rank (every peer takes part: the followers are told to).
    pub(super) fn exchange_positions<B: Backend>(
        &self,
        mine: &NodeReady,
        device: &B::Device,
    ) -> Result<Vec<NodeReady>, TrainError> {
        for (i, follower) in self.followers.iter().enumerate() {
            follower
                .send(Order::Exchange)
                .map_err(|_| self.follower_gone(i, "exchange"))?;
        }
        let json = serde_json::to_vec(mine).expect("a data position serializes");
        let all = self
            .peer
            .gather_bytes::<B>(&json, POSITION_BYTES, "exchange", device)?;
        let local = self.followers.len() + 1;
        all.iter()
            .step_by(local)
            .enumerate()
            .map(|(node, bytes)| {
                serde_json::from_slice(bytes).map_err(|e| TrainError::Collective {
                    rank: node * local,
                    operation: "exchange",
                    message: format!("node {node} sent an unreadable data position: {e}"),
                })
            })
            .collect()
    }

    /// The error of a follower that stopped taking orders.
    fn follower_gone(&self, follower: usize, operation: &'static str) -> TrainError {
        TrainError::Collective {
            rank: self.peer.rank() + follower + 1,
            operation,
            message: "the peer has stopped (its error is reported by the group)".into(),
        }
    }

    /// Sends every follower its rows of `group` (this node's part of each global batch) and
    /// returns the leader's own.
    pub(super) fn share(
        &self,
        group: &[Batch],
        stored: &[Option<HostTeacher>],
        options: &StepOptions,
        seed: u64,
    ) -> Result<Vec<HostMicroBatch>, TrainError> {
        // This node's peers are global ranks `first .. first + local`; the node read its own
        // part of each global batch (the whole batch on one node).
        let first = self.peer.rank();
        let local = self.followers.len() + 1;
        let mut shares: Vec<Vec<HostMicroBatch>> = (0..local).map(|_| Vec::new()).collect();
        for (batch, teacher) in group.iter().zip(stored) {
            if !batch.len().is_multiple_of(local) {
                return Err(TrainError::config(
                    "data.batch_size",
                    format!(
                        "a batch of {} samples cannot be split evenly over {local} devices",
                        batch.len()
                    ),
                ));
            }
            let n = batch.len() / local;
            for (r, share) in shares.iter_mut().enumerate() {
                share.push(host_rows(batch, teacher.as_ref(), r * n, n)?);
            }
        }
        let mut shares = shares.into_iter();
        let own = shares.next().expect("the leader's share");
        for (i, (follower, micro)) in self.followers.iter().zip(shares).enumerate() {
            let order = StepOrder {
                micro,
                options: *options,
                seed: peer_seed(seed, first + i + 1),
            };
            follower
                .send(Order::Step(order))
                .map_err(|_| self.follower_gone(i, "step"))?;
        }
        Ok(own)
    }

    /// Lets the followers finish (no more steps) and leaves the group.
    pub(super) fn finish<B: AutodiffBackend>(self) -> Result<(), TrainError> {
        drop(self.followers);
        self.peer.leave::<B::InnerBackend>()
    }
}

/// Peer `rank`'s backend seed for a step seeded `seed` on one device (rank 0 keeps it, as
/// CLIP-KD seeds each rank with `seed + rank`).
fn peer_seed(seed: u64, rank: usize) -> u64 {
    seed.wrapping_add((rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl PreparedRun {
    /// Trains the open_clip models and built-in losses of the config, like
    /// [`PreparedRun::run`], data-parallel on `devices` (one peer per device, a thread each, in
    /// this process; several entries may name the same device, e.g. the CPU). `data.batch_size`
    /// is the global batch, split evenly over the devices; the result equals one device's
    /// (see [`crate::distributed`] and `docs/distributed.md`). One device is [`PreparedRun::run`].
    ///
    /// # Errors
    /// Those of [`PreparedRun::run`]; [`TrainError::Peer`] naming a peer that failed;
    /// [`TrainError::Collective`] when a peer waited longer than `run.collective_timeout_s`
    /// for the others (the stuck peers' threads are left blocked: end the process).
    pub fn run_on_devices<B: AutodiffBackend>(
        self,
        devices: &[B::Device],
    ) -> Result<RunSummary, TrainError> {
        if devices.len() == 1 && self.config.run.num_nodes == 1 {
            return self.run::<B>(&devices[0]);
        }
        let models = self.open_clip_models()?;
        self.run_with_peers::<B, Clip<B>, Clip<B::InnerBackend>, LossSet<B>, _>(
            devices,
            move |device| models.build::<B>(device),
        )
    }

    /// Trains models of the caller's own, like [`PreparedRun::run_with`], data-parallel on
    /// `devices`: `build` makes one peer's models on its device (it is called once per device,
    /// one call at a time; rank 0's weights are then copied to every peer).
    ///
    /// # Errors
    /// As [`PreparedRun::run_on_devices`].
    pub fn run_with_peers<B, S, T, L, F>(
        self,
        devices: &[B::Device],
        build: F,
    ) -> Result<RunSummary, TrainError>
    where
        B: AutodiffBackend,
        S: Student<B>,
        T: ClipEncoder<B::InnerBackend>,
        L: TrainableObjective<B>,
        F: Fn(&B::Device) -> Result<Models<S, T, L>, TrainError> + Send + Sync + 'static,
    {
        let local = devices.len();
        if local == 0 {
            return Err(TrainError::config("run.devices", "no device was given"));
        }
        let run = &self.config.run;
        let world = local * run.num_nodes;
        let node = (run.num_nodes > 1).then(|| NodeLink {
            num_nodes: run.num_nodes,
            node_rank: run.node_rank,
            orchestrator: run.orchestrator.clone().expect("validated"),
            node_address: run.node_address.clone().expect("validated"),
        });
        if let Some(node) = node.as_ref().filter(|n| n.node_rank == 0) {
            let (_, port) = crate::config::host_port(&node.orchestrator)
                .map_err(|e| TrainError::config("run.orchestrator", e))?;
            start_orchestrator(port)?;
        }
        let batch = self.config.data.batch_size;
        if !batch.is_multiple_of(world) {
            return Err(TrainError::config(
                "data.batch_size",
                format!(
                    "the global batch of {batch} cannot be split evenly over {world} devices \
                     (run.devices on each of run.num_nodes nodes): choose a multiple of {world}"
                ),
            ));
        }
        let build = Arc::new(build);
        let timeout = Duration::from_secs(self.config.run.collective_timeout_s);
        let config = self.config.clone();
        let resume = self.resume.clone();
        let (senders, receivers): (Vec<_>, Vec<_>) = (1..local).map(|_| mpsc::channel()).unzip();
        let mut bodies: Vec<PeerBody<Option<RunSummary>>> = Vec::with_capacity(world);
        let (device, leader_build) = (devices[0].clone(), build.clone());
        let fingerprint = fingerprint(&self.config, local);
        let leader_fingerprint = fingerprint.clone();
        bodies.push(Box::new(move |seat| {
            let peer = seat.join::<B::InnerBackend>(device.clone())?;
            peer.agree::<B::InnerBackend>(&leader_fingerprint, &device)?;
            let models = build_one::<B, S, T, L>(&*leader_build, &device)?;
            self.check_models(&models)?;
            let mut runner = Runner::<B, S, T, L>::start(self, &device, models)?;
            runner.lead(Leader {
                peer,
                followers: senders,
            })?;
            runner.train().map(Some)
        }));
        for (device, orders) in devices[1..].iter().cloned().zip(receivers) {
            let (build, config, resume) = (build.clone(), config.clone(), resume.clone());
            let fingerprint = fingerprint.clone();
            bodies.push(Box::new(move |seat| {
                let peer = seat.join::<B::InnerBackend>(device.clone())?;
                peer.agree::<B::InnerBackend>(&fingerprint, &device)?;
                let models = build_one::<B, S, T, L>(&*build, &device)?;
                follow::<B, S, T, L>(peer, &config, resume, &device, models, orders)?;
                Ok(None)
            }));
        }
        let summaries = run_peers(timeout, node, bodies)?;
        Ok(summaries
            .into_iter()
            .next()
            .flatten()
            .expect("the leader returns the run's summary"))
    }

    /// The builder of the open_clip models the run was prepared for.
    pub(super) fn open_clip_models(&self) -> Result<OpenClipModels, TrainError> {
        let super::ModelPlan::OpenClip {
            student,
            teacher,
            student_init,
            teacher_weights,
        } = &self.plan
        else {
            return Err(TrainError::config(
                "student.model",
                "this run was prepared for models of the caller's own (prepare_for): train it \
                 with run_with or run_with_peers",
            ));
        };
        Ok(OpenClipModels {
            config: self.config.clone(),
            student: (**student).clone(),
            teacher: teacher.as_deref().cloned(),
            student_init: student_init.clone(),
            teacher_weights: teacher_weights.clone(),
            loss: self.loss.clone(),
        })
    }
}

/// What every peer of every node must agree on before training: the run's trajectory (config
/// hash), the clipkd version and the number of devices per node, as 16-bit chunks.
fn fingerprint(config: &RunConfig, local_devices: usize) -> Vec<u16> {
    let trajectory = u64::from_str_radix(&config.trajectory_hash(), 16)
        .expect("the trajectory hash is 16 hex digits");
    let mut out = Vec::new();
    for value in [
        trajectory,
        crate::config::fnv1a(env!("CARGO_PKG_VERSION").as_bytes()),
        local_devices as u64,
    ] {
        out.extend((0..4).map(|i| (value >> (16 * i)) as u16));
    }
    out
}

/// What builds one peer's models on its device.
type ModelBuilder<B, S, T, L> =
    dyn Fn(&burn::tensor::Device<B>) -> Result<Models<S, T, L>, TrainError>;

/// `build`'s models for `device`, one peer at a time (see [`BUILDING`]).
fn build_one<B, S, T, L>(
    build: &ModelBuilder<B, S, T, L>,
    device: &B::Device,
) -> Result<Models<S, T, L>, TrainError>
where
    B: AutodiffBackend,
{
    let _one_at_a_time = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    build(device)
}

/// A follower: its models (restored from the checkpoint when resuming), rank 0's weights, then
/// one data-parallel step per order until the leader stops sending.
fn follow<B, S, T, L>(
    peer: Peer,
    config: &RunConfig,
    resume: Option<PathBuf>,
    device: &B::Device,
    models: Models<S, T, L>,
    orders: Receiver<Order>,
) -> Result<(), TrainError>
where
    B: AutodiffBackend,
    S: Student<B>,
    T: ClipEncoder<B::InnerBackend>,
    L: TrainableObjective<B>,
{
    let (model, teacher, adamw) = assemble(models, config);
    let (model, mut optimizer) = restore(resume.as_deref(), model, adamw, device)?;
    let mut model = peer.broadcast_module(model)?;
    let mut taken = 0;
    while let Ok(order) = orders.recv() {
        let order = match order {
            Order::Exchange => {
                peer.gather_bytes::<B::InnerBackend>(&[], POSITION_BYTES, "exchange", device)?;
                continue;
            }
            Order::Step(order) => order,
        };
        taken += 1;
        crate::fault::peer_step(peer.local_rank(), taken)?;
        B::seed(device, order.seed);
        let micro = order
            .micro
            .into_iter()
            .map(|m| m.into_device::<B::InnerBackend>(device))
            .collect();
        model = data_parallel_step(
            &peer,
            teacher.as_ref(),
            model,
            &mut optimizer,
            micro,
            &order.options,
        )?
        .model;
    }
    peer.leave::<B::InnerBackend>()
}
