//! The trainer on several devices of this process: one peer per device, a thread each
//! ([`crate::distributed::run_peers`]). Peer 0 leads: it reads the data, splits every global
//! batch into equal row shares (rows `r·n .. r·n + n` to peer `r`), sends the followers
//! theirs before each step, and alone writes metrics, checkpoints and evaluations; every
//! peer takes the same [`data_parallel_step`], so all hold the same weights and moments.
//!
//! Because the leader reads the global batches in the single-device order, the data
//! position in a checkpoint is the same whatever the number of peers: a run resumes exactly
//! with the same number of peers, and with another number it continues the same global
//! batches (only the float sums' order changes).

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burn::tensor::backend::AutodiffBackend;
use clipkd_data::loader::Batch;
use clipkd_losses::LossSet;
use clipkd_models::{Clip, ClipEncoder};

use super::data::{HostMicroBatch, host_rows};
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
    followers: Vec<Sender<StepOrder>>,
}

impl Leader {
    /// Sends every follower its rows of `group` and returns the leader's own.
    pub(super) fn share(
        &self,
        group: &[Batch],
        options: &StepOptions,
        seed: u64,
    ) -> Result<Vec<HostMicroBatch>, TrainError> {
        // This node's peers are global ranks `first .. first + local`.
        let world = self.peer.world();
        let first = self.peer.rank();
        let local = self.followers.len() + 1;
        let mut shares: Vec<Vec<HostMicroBatch>> = (0..local).map(|_| Vec::new()).collect();
        for batch in group {
            if !batch.len().is_multiple_of(world) {
                return Err(TrainError::config(
                    "data.batch_size",
                    format!(
                        "a batch of {} samples cannot be split evenly over {world} devices",
                        batch.len()
                    ),
                ));
            }
            let n = batch.len() / world;
            for (r, share) in shares.iter_mut().enumerate() {
                share.push(host_rows(batch, (first + r) * n, n)?);
            }
        }
        let mut shares = shares.into_iter();
        let own = shares.next().expect("the leader's share");
        for (rank, (follower, micro)) in self.followers.iter().zip(shares).enumerate() {
            let order = StepOrder {
                micro,
                options: *options,
                seed: peer_seed(seed, first + rank + 1),
            };
            follower.send(order).map_err(|_| TrainError::Collective {
                rank: first + rank + 1,
                operation: "step",
                message: "the peer has stopped (its error is reported by the group)".into(),
            })?;
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
        let super::ModelPlan::OpenClip { student, teacher } = &self.plan else {
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
    orders: Receiver<StepOrder>,
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
