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
use super::runner::{Runner, restore};
use super::{Models, OpenClipModels, PreparedRun, RunSummary, force_init};
use crate::config::RunConfig;
use crate::distributed::{Peer, PeerBody, data_parallel_step, run_peers};
use crate::error::TrainError;
use crate::step::{DistillModel, StepOptions, TrainableObjective};
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
        let world = self.peer.world();
        let mut shares: Vec<Vec<HostMicroBatch>> = (0..world).map(|_| Vec::new()).collect();
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
            for (rank, share) in shares.iter_mut().enumerate() {
                share.push(host_rows(batch, rank * n, n)?);
            }
        }
        let mut shares = shares.into_iter();
        let own = shares.next().expect("the leader's share");
        for (rank, (follower, micro)) in self.followers.iter().zip(shares).enumerate() {
            let order = StepOrder {
                micro,
                options: *options,
                seed: peer_seed(seed, rank + 1),
            };
            follower.send(order).map_err(|_| TrainError::Collective {
                rank: rank + 1,
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
        if devices.len() == 1 {
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
        let world = devices.len();
        if world == 0 {
            return Err(TrainError::config("run.devices", "no device was given"));
        }
        let batch = self.config.data.batch_size;
        if !batch.is_multiple_of(world) {
            return Err(TrainError::config(
                "data.batch_size",
                format!(
                    "the global batch of {batch} cannot be split evenly over {world} devices: \
                     choose a multiple of {world}"
                ),
            ));
        }
        let build = Arc::new(build);
        let timeout = Duration::from_secs(self.config.run.collective_timeout_s);
        let config = self.config.clone();
        let resume = self.resume.clone();
        let (senders, receivers): (Vec<_>, Vec<_>) = (1..world).map(|_| mpsc::channel()).unzip();
        let mut bodies: Vec<PeerBody<Option<RunSummary>>> = Vec::with_capacity(world);
        let (device, leader_build) = (devices[0].clone(), build.clone());
        bodies.push(Box::new(move |seat| {
            let peer = seat.join::<B::InnerBackend>(device.clone())?;
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
            bodies.push(Box::new(move |seat| {
                let peer = seat.join::<B::InnerBackend>(device.clone())?;
                let models = build_one::<B, S, T, L>(&*build, &device)?;
                follow::<B, S, T, L>(peer, &config, resume, &device, models, orders)?;
                Ok(None)
            }));
        }
        let summaries = run_peers(timeout, bodies)?;
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

/// `build`'s models for `device`, one peer at a time (see [`BUILDING`]).
fn build_one<B, S, T, L>(
    build: &dyn Fn(&B::Device) -> Result<Models<S, T, L>, TrainError>,
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
    let Models {
        student,
        teacher,
        losses,
    } = models;
    let adamw = config.optim.adamw_params(student.default_adamw());
    let model = DistillModel::new(student, losses);
    force_init(&model);
    let (model, mut optimizer) = restore(resume.as_deref(), model, adamw, device)?;
    let mut model = peer.broadcast_module(model)?;
    let mut taken = 0;
    while let Ok(order) = orders.recv() {
        taken += 1;
        crate::fault::peer_step(peer.rank(), taken)?;
        B::seed(device, order.seed);
        let micro = order
            .micro
            .into_iter()
            .map(|m| m.to_device::<B::InnerBackend>(device))
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
