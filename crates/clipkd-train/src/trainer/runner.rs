//! The training loop of a prepared run (see the parent module for what it guarantees).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use clipkd_data::dataset::{DataSource, SkipReport};
use clipkd_data::loader::{Batch, Batches, DataLoader, DataPosition};
use clipkd_models::ClipEncoder;
use clipkd_models::autocast::autocast;

use super::data::{micro_batch, skip_counts, skip_details};
use super::parallel::{Leader, NodeReady};
use super::{Models, PreparedRun, RunSummary, force_init};
use crate::checkpoint::{
    self, CHECKPOINTS_DIR, CheckpointContents, RngState, TrainState, save_checkpoint, step_seed,
};
use crate::config::{RunConfig, TrainMode};
use crate::distributed::data_parallel_step;
use crate::error::TrainError;
use crate::eval::EvalReport;
use crate::finite::{LossWatch, check_weights_and_moments};
use crate::loss_scale::LossScaler;
use crate::metrics::{EvalRecord, MetricsWriter, StepRecord};
use crate::optim::{AdamWParams, GroupedAdamW};
use crate::progress::Progress;
use crate::run_dir::roll_back_to;
use crate::schedule::CosineSchedule;
use crate::step::{DistillModel, StepOptions, TrainableObjective, distill_optimizer, train_step};
use crate::student::Student;

/// The state of a run on backend `B`: student `S`, teacher `T`, loss module `L`.
pub(super) struct Runner<B, S, T, L>
where
    B: AutodiffBackend,
    S: Student<B>,
    L: TrainableObjective<B>,
{
    prep: PreparedRun,
    device: B::Device,
    teacher: Option<T>,
    model: Option<DistillModel<B, S, L>>,
    optimizer: GroupedAdamW<B, DistillModel<B, S, L>>,
    state: TrainState,
    schedule: CosineSchedule,
    /// The metrics file; none on the nodes other than node 0 (they write nothing).
    metrics: Option<MetricsWriter>,
    progress: Progress,
    run_dir: PathBuf,
    /// Loss terms of the steps not yet checked for NaN/Inf.
    watch: LossWatch<B::InnerBackend>,
    /// Skips of the passes over the data that this process finished or left.
    run_skips: SkipReport,
    last_checkpoint: Option<PathBuf>,
    last_checkpoint_step: Option<u64>,
    last_loss: Option<(BTreeMap<String, f64>, f64)>,
    last_eval: Option<BTreeMap<String, f64>>,
    last_eval_step: Option<u64>,
    // Throughput since the last logged row.
    window_start: Instant,
    window_images: u64,
    window_steps: u64,
    window_wait: Duration,
    /// On several devices: this peer leads the group (see `parallel`).
    parallel: Option<Leader>,
}

/// The skipped fraction is checked once a pass has read this many samples (and at its end).
const MIN_SAMPLES_FOR_SKIP_CHECK: u64 = 1000;
/// Loss terms kept on the device before a check is forced (bounds memory when logging is rare).
const MAX_UNCHECKED_STEPS: usize = 1000;

/// Samples read and skipped in the current pass over the data, as of the last batch.
#[derive(Debug, Clone, Copy, Default)]
struct PassCount {
    seen: u64,
    skipped: u64,
}

impl PassCount {
    fn after_batch(batches: &Batches) -> Self {
        PassCount {
            seen: batches.position().sample,
            skipped: batches.skipped().total(),
        }
    }

    /// The final count once `batches` is over: skipped samples after the last batch and the
    /// usable ones left out of a last partial batch were read too.
    fn at_end(self, batches: &Batches) -> Self {
        let skipped = batches.skipped().total();
        PassCount {
            seen: self.seen + skipped.saturating_sub(self.skipped) + batches.dropped() as u64,
            skipped,
        }
    }
}

/// What the nodes agreed on before a step ([`Runner::agree_on_group`]).
struct Agreed {
    /// The nodes without a whole group for the step (the pass ends on every node).
    not_ready: Vec<usize>,
    /// On several nodes, the current pass's skipped samples counted over every node (on one
    /// node: the loader's own report).
    skips: Option<SkipReport>,
    /// Every node's data position after the step, on several nodes.
    positions: Option<Vec<DataPosition>>,
}

/// Where this node's data continues when resuming from `saved`, every node's position (on
/// several nodes), and a note when the checkpoint was written by another number of nodes:
/// each node's part of the data depends on it, so the interrupted pass continues at its
/// global batch for indexed data (samples read to replace skipped ones may be read again), and
/// a new pass starts for webdataset shards (each node's shards change).
fn node_data_position(
    saved: &TrainState,
    config: &RunConfig,
    loader: &DataLoader,
) -> (DataPosition, Vec<DataPosition>, Option<String>) {
    let nodes = config.run.num_nodes;
    let saved_nodes = saved.node_positions.len().max(1);
    let at = &saved.data_position;
    if saved_nodes == nodes {
        return match nodes {
            1 => (at.clone(), Vec::new(), None),
            _ => (
                saved.node_positions[config.run.node_rank].clone(),
                saved.node_positions.clone(),
                None,
            ),
        };
    }
    let (position, how) = if at.is_epoch_start() {
        (at.clone(), "starts its pass from the beginning".to_string())
    } else {
        match loader.source() {
            DataSource::Indexed(_) => {
                // Every node yields the same number of batches per pass.
                let sample = at.batch * loader.config().batch_size as u64;
                (
                    DataPosition {
                        epoch: at.epoch,
                        batch: at.batch,
                        sample,
                        anchor: sample,
                        stream: None,
                        skipped: Default::default(),
                    },
                    format!(
                        "continues the interrupted pass at its global batch {} (samples read \
                         to replace skipped ones may be read again)",
                        at.batch
                    ),
                )
            }
            DataSource::WebDataset(_) => (
                at.next_epoch(),
                "starts a new pass over the shards (each node's shards depend on the number \
                 of nodes)"
                    .to_string(),
            ),
        }
    };
    let note = format!(
        "the checkpoint was written by {saved_nodes} node(s) and this run has {nodes}: the data \
         {how}"
    );
    let all = if nodes > 1 {
        vec![position.clone(); nodes]
    } else {
        Vec::new()
    };
    (position, all, Some(note))
}

/// The trained module (student and losses, every parameter materialised), the teacher, and
/// the AdamW settings of `config` for this student.
pub(super) fn assemble<B, S, T, L>(
    models: Models<S, T, L>,
    config: &RunConfig,
) -> (DistillModel<B, S, L>, Option<T>, AdamWParams)
where
    B: AutodiffBackend,
    S: Student<B>,
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
    (model, teacher, adamw)
}

/// A run's [`DistillModel`] and its optimizer.
type Restored<B, S, L> = (
    DistillModel<B, S, L>,
    GroupedAdamW<B, DistillModel<B, S, L>>,
);

/// The model and its optimizer as the run starts: fresh moments, or the checkpoint's weights
/// and moments when resuming from `resume`.
pub(super) fn restore<B, S, L>(
    resume: Option<&Path>,
    model: DistillModel<B, S, L>,
    adamw: AdamWParams,
    device: &B::Device,
) -> Result<Restored<B, S, L>, TrainError>
where
    B: AutodiffBackend,
    S: Student<B>,
    L: TrainableObjective<B>,
{
    Ok(match resume {
        None => {
            let optimizer = distill_optimizer(&model, adamw);
            (model, optimizer)
        }
        Some(path) => {
            let model = checkpoint::load_model(path, model, device)?;
            let optimizer = distill_optimizer(&model, adamw);
            let optimizer = checkpoint::load_optimizer(path, optimizer, device)?;
            (model, optimizer)
        }
    })
}

impl<B, S, T, L> Runner<B, S, T, L>
where
    B: AutodiffBackend,
    S: Student<B>,
    T: ClipEncoder<B::InnerBackend>,
    L: TrainableObjective<B>,
{
    /// Takes the run's models (built and seeded by the caller), restores a checkpoint when
    /// resuming, and opens the run directory's files.
    pub(super) fn start(
        prep: PreparedRun,
        device: &B::Device,
        models: Models<S, T, L>,
    ) -> Result<Self, TrainError> {
        let config = &prep.config;
        let mut notes = Vec::new();
        if let Some(cache) = &prep.teacher_cache {
            // Before any step: every row of the data is what the cache stored.
            cache.check_data(prep.loader.source(), &mut notes)?;
        }
        let run_dir = config.run.output_dir.clone();
        let writer = config.run.node_rank == 0;
        if writer {
            std::fs::create_dir_all(&run_dir)
                .map_err(|e| TrainError::io("creating", &run_dir, e))?;
            config.save(run_dir.join("config.toml"))?;
        }
        let (model, teacher, adamw) = assemble(models, config);

        let fresh_state = TrainState {
            step: 0,
            epoch: 0,
            steps_in_epoch: 0,
            data_position: DataPosition::start(0),
            node_positions: if config.run.num_nodes > 1 {
                vec![DataPosition::start(0); config.run.num_nodes]
            } else {
                Vec::new()
            },
            rng: RngState {
                seed: config.run.seed,
                next_step: 0,
            },
            samples_seen: 0,
            total_steps: prep.total_steps,
            config_hash: config.trajectory_hash(),
            distill: prep.mode == TrainMode::Distill,
            clipkd_version: env!("CARGO_PKG_VERSION").to_string(),
            loss_scaler: config.run.precision.scales_losses().then(LossScaler::new),
        };
        let (model, optimizer) = restore(prep.resume.as_deref(), model, adamw, device)?;
        let state = match &prep.resume {
            None => fresh_state,
            Some(path) => {
                let (saved, _) = checkpoint::read_checkpoint_meta(path)?;
                let (data_position, node_positions, note) =
                    node_data_position(&saved, config, &prep.loader);
                notes.extend(note);
                TrainState {
                    data_position,
                    node_positions,
                    total_steps: prep.total_steps,
                    config_hash: fresh_state.config_hash,
                    clipkd_version: fresh_state.clipkd_version,
                    // The checkpoint's scaler when this run scales its losses (a run resumed
                    // in another precision starts a fresh one, or none).
                    loss_scaler: fresh_state
                        .loss_scaler
                        .map(|fresh| saved.loss_scaler.unwrap_or(fresh)),
                    ..saved
                }
            }
        };
        let mut last_checkpoint_step = None;
        if let Some(path) = prep.resume.as_ref().filter(|_| writer) {
            // The resumed step is the run's present: later checkpoints of this run directory
            // belong to a branch the user left (see `run_dir`).
            if let Some(moved) = roll_back_to(&run_dir, state.step)? {
                notes.push(format!(
                    "rolled back to step {}: the later checkpoints and the metrics as they were \
                     are kept in {}",
                    state.step,
                    moved.display()
                ));
            }
            if same_dir(path.parent(), &run_dir.join(CHECKPOINTS_DIR)) {
                last_checkpoint_step = Some(state.step);
            }
        }
        let metrics = if writer {
            Some(MetricsWriter::open(
                &run_dir,
                config.run.metrics_format,
                prep.resume.as_ref().map(|_| state.step),
            )?)
        } else {
            None
        };
        let progress = Progress::new(
            if writer {
                prep.progress
            } else {
                crate::progress::ProgressMode::Quiet
            },
            prep.total_steps,
            state.step,
        );
        for w in &prep.warnings {
            if w.starts_with("note: ") {
                progress.println(w);
            } else {
                progress.println(&format!("warning: {w}"));
            }
        }
        for n in &notes {
            progress.println(&format!("note: {n}"));
        }
        if let Some(path) = &prep.resume {
            progress.println(&format!(
                "resumed from {} at step {} ({})",
                path.display(),
                state.step,
                state.data_position
            ));
        }
        let schedule = CosineSchedule::new(config.optim.lr, config.optim.warmup, prep.total_steps);
        Ok(Runner {
            device: device.clone(),
            teacher,
            model: Some(model),
            optimizer,
            state,
            schedule,
            metrics,
            progress,
            run_dir,
            watch: LossWatch::new(),
            run_skips: SkipReport::default(),
            last_checkpoint: None,
            last_checkpoint_step,
            last_loss: None,
            last_eval: None,
            last_eval_step: None,
            window_start: Instant::now(),
            window_images: 0,
            window_steps: 0,
            window_wait: Duration::ZERO,
            parallel: None,
            prep,
        })
    }

    /// Makes this runner the leader of a data-parallel group: the peers take rank 0's weights
    /// (a collective every peer makes once, before the first step), and every step is shared.
    pub(super) fn lead(&mut self, leader: Leader) -> Result<(), TrainError> {
        let model = self
            .model
            .take()
            .expect("the model is present between steps");
        self.model = Some(leader.peer.broadcast_module(model)?);
        self.parallel = Some(leader);
        Ok(())
    }

    /// Trains to the end of the plan (or `run.stop_after_steps`).
    pub(super) fn train(mut self) -> Result<RunSummary, TrainError> {
        let epochs = self.prep.config.optim.epochs;
        let k = self.prep.config.optim.grad_accum;
        let stop_after = self.prep.config.run.stop_after_steps;
        let mut stopped_early = false;
        let steps_per_epoch = self.prep.steps_per_epoch;
        'epochs: while self.state.epoch < epochs {
            let mut batches = self.prep.loader.resume(&self.state.data_position)?;
            let mut pass_from_start = self.state.data_position.is_epoch_start();
            let mut pass_steps = 0u64;
            let mut count = PassCount::after_batch(&batches);
            loop {
                if stop_after.is_some_and(|s| self.state.step >= s) {
                    stopped_early = true;
                    self.run_skips.merge(batches.skipped());
                    break 'epochs;
                }
                let wait = Instant::now();
                let mut group = Vec::with_capacity(k);
                while group.len() < k {
                    let Some(batch) = batches.next() else { break };
                    group.push(batch?);
                    count = PassCount::after_batch(&batches);
                }
                self.window_wait += wait.elapsed();
                let agreed = self.agree_on_group(group.len() == k, &batches)?;
                if !agreed.not_ready.is_empty() {
                    // The pass is over (on one node at least: every node ends it; a partial
                    // accumulation group is dropped); the epoch goes on into the next pass.
                    let end = count.at_end(&batches);
                    self.check_skipped(end, batches.skipped())?;
                    if pass_from_start && pass_steps == 0 {
                        let who = if self.prep.config.run.num_nodes > 1 {
                            let nodes: Vec<String> =
                                agreed.not_ready.iter().map(ToString::to_string).collect();
                            format!(
                                "node(s) {} (each node reads its own part of the data; this \
                                 one read {} samples)",
                                nodes.join(", "),
                                end.seen
                            )
                        } else {
                            format!("{} batches ({} samples read)", group.len(), end.seen)
                        };
                        return Err(TrainError::NoUsableData {
                            what: format!(
                                "a whole pass over the data gave {who}, fewer batches of {} \
                                 than one optimizer step needs ({k}, optim.grad_accum); \
                                 skipped: {}",
                                self.prep.config.data.batch_size,
                                skip_details(batches.skipped())
                            ),
                        });
                    }
                    self.run_skips.merge(batches.skipped());
                    self.set_data_position(self.state.data_position.next_epoch(), None);
                    drop(batches);
                    batches = self.prep.loader.resume(&self.state.data_position)?;
                    pass_from_start = true;
                    pass_steps = 0;
                    count = PassCount::default();
                    continue;
                }
                self.step(&group, agreed.skips.as_ref().unwrap_or(batches.skipped()))?;
                pass_steps += 1;
                self.set_data_position(batches.position().clone(), agreed.positions);
                if count.seen >= MIN_SAMPLES_FOR_SKIP_CHECK {
                    self.check_skipped(count, batches.skipped())?;
                }
                let epoch_over = self.state.steps_in_epoch >= steps_per_epoch;
                if epoch_over {
                    // Every epoch starts a fresh pass (for webdataset shards, as open_clip).
                    self.run_skips.merge(batches.skipped());
                    drop(batches);
                    self.set_data_position(self.state.data_position.next_epoch(), None);
                    self.state.epoch += 1;
                    self.state.steps_in_epoch = 0;
                    self.after_step(true)?;
                    continue 'epochs;
                }
                self.after_step(false)?;
            }
        }
        if self.last_checkpoint_step != Some(self.state.step) {
            self.checkpoint()?;
        }
        self.watch.check()?;
        if let Some(leader) = self.parallel.take() {
            leader.finish::<B>()?;
        }
        self.progress.finish();
        let plots = if self.metrics.is_some() {
            end_of_run_plots(&self.prep.config, &self.run_dir)?
        } else {
            Vec::new()
        };
        let mut skipped = self.prep.read_skips.clone();
        skipped.merge(&self.run_skips);
        Ok(RunSummary {
            run_dir: self.run_dir.clone(),
            steps: self.state.step,
            total_steps: self.prep.total_steps,
            epochs: self.state.epoch,
            stopped_early,
            checkpoint: self.last_checkpoint.clone(),
            last_loss: self.last_loss.clone(),
            last_eval: self.last_eval.clone(),
            plots,
            skipped,
        })
    }

    /// Whether every node read a whole group of micro-batches for the next step (on one
    /// node: whether this one did), and on several nodes the current pass's skipped samples
    /// over the nodes.
    /// On several nodes, each reading its own part of the data, the nodes exchange this and
    /// their data positions (see `parallel`).
    fn agree_on_group(&self, ready: bool, batches: &Batches) -> Result<Agreed, TrainError> {
        let Some(leader) = self.parallel.as_ref().filter(|l| l.peer.nodes() > 1) else {
            return Ok(Agreed {
                not_ready: if ready { Vec::new() } else { vec![0] },
                skips: None,
                positions: None,
            });
        };
        let mine = NodeReady {
            ready,
            position: batches.position().clone(),
        };
        let all = leader.exchange_positions::<B::InnerBackend>(&mine, &self.device)?;
        let mut skips = SkipReport::default();
        for node in &all {
            skips.merge(&SkipReport::from_counts(node.position.skipped.clone()));
        }
        skips.examples = batches.skipped().examples.clone();
        Ok(Agreed {
            not_ready: (0..all.len()).filter(|&n| !all[n].ready).collect(),
            skips: Some(skips),
            positions: Some(all.into_iter().map(|n| n.position).collect()),
        })
    }

    /// Where this node's data continues and, on several nodes, every node's (`None`: the
    /// same start of a pass for every node).
    fn set_data_position(&mut self, position: DataPosition, nodes: Option<Vec<DataPosition>>) {
        match nodes {
            Some(nodes) => self.state.node_positions = nodes,
            None => self
                .state
                .node_positions
                .iter_mut()
                .for_each(|p| *p = position.clone()),
        }
        self.state.data_position = position;
    }

    /// Fails when the pass so far skipped more than `data.max_skipped_fraction` of what it
    /// read.
    fn check_skipped(&self, count: PassCount, report: &SkipReport) -> Result<(), TrainError> {
        let limit = self.prep.config.data.max_skipped_fraction;
        if count.seen == 0 || limit >= 1.0 {
            return Ok(());
        }
        let fraction = count.skipped as f64 / count.seen as f64;
        if fraction > limit {
            return Err(TrainError::TooManySkipped {
                skipped: count.skipped,
                seen: count.seen,
                fraction: 100.0 * fraction,
                limit,
                report: skip_details(report),
            });
        }
        Ok(())
    }

    /// One optimizer step on `group` (grad_accum micro-batches); `skips` are the current
    /// pass's skipped samples (for the metrics row and the progress line).
    fn step(&mut self, group: &[Batch], skips: &SkipReport) -> Result<(), TrainError> {
        let config = &self.prep.config;
        let step = self.state.step;
        let lr = self.schedule.lr(step);
        let seed = step_seed(config.run.seed, step);
        B::seed(&self.device, seed);
        // Every node read batches of the same size (its part of each global batch).
        let images: u64 =
            group.iter().map(|b| b.len() as u64).sum::<u64>() * config.run.num_nodes as u64;
        let log_now = (step + 1).is_multiple_of(config.run.log_every_steps)
            || step + 1 == self.prep.total_steps;
        let options = StepOptions {
            lr,
            mask_ratio: Some(config.loss.mask_ratio),
            grad_clip_norm: config.optim.grad_clip_norm,
            compute_grad_norm: log_now,
            autocast: config.run.precision.autocast(),
            loss_scale: self.state.loss_scaler.map(|s| s.scale),
        };
        // From a teacher cache: the stored outputs of each row's crop and caption.
        let stored = match &self.prep.teacher_cache {
            Some(cache) => group
                .iter()
                .map(|b| cache.lookup(b).map(Some))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![None; group.len()],
        };
        let model = self
            .model
            .take()
            .expect("the model is back after every step");
        let out = match &self.parallel {
            None => {
                let micro = group
                    .iter()
                    .zip(&stored)
                    .map(|(b, t)| micro_batch::<B::InnerBackend>(b, t.as_ref(), &self.device))
                    .collect::<Result<Vec<_>, _>>()?;
                train_step(
                    self.teacher.as_ref(),
                    model,
                    &mut self.optimizer,
                    micro,
                    &options,
                )?
            }
            Some(leader) => {
                let micro = leader
                    .share(group, &stored, &options, seed)?
                    .into_iter()
                    .map(|m| m.into_device::<B::InnerBackend>(&self.device))
                    .collect();
                data_parallel_step(
                    &leader.peer,
                    self.teacher.as_ref(),
                    model,
                    &mut self.optimizer,
                    micro,
                    &options,
                )?
            }
        };
        self.state.step += 1;
        self.state.steps_in_epoch += 1;
        self.state.rng.next_step = self.state.step;
        self.state.samples_seen += images;
        self.window_images += images;
        self.window_steps += 1;
        self.progress.set_step(self.state.step);
        self.model = Some(out.model);
        if let Some(scaler) = &mut self.state.loss_scaler {
            let scale = scaler.scale;
            scaler.update(out.skipped);
            if out.skipped {
                // As PyTorch's GradScaler: no update, a lower scale, the run goes on (its terms
                // may be infinite: the overflow can be in the forward).
                self.progress.println(&format!(
                    "step {} skipped: gradients overflowed at loss scale {scale} (now {}; {} \
                     skipped so far)",
                    self.state.step, scaler.scale, scaler.skipped_steps
                ));
                return Ok(());
            }
        }
        self.watch.push(self.state.step, &out.terms);
        if log_now {
            // One transfer for every step since the last check; fails on a non-finite term.
            let checked = self.watch.check()?.expect("this step's terms are pending");
            let loss: BTreeMap<String, f64> = checked.terms.into_iter().collect();
            let total: f64 = loss.values().sum();
            let grad_norm = out.grad_norm.map(|n| n.into_scalar().elem::<f64>());
            let logit_scale = self
                .model
                .as_ref()
                .expect("just put back")
                .student
                .logit_scale()
                .into_scalar()
                .elem::<f64>()
                .exp();
            let elapsed = self.window_start.elapsed().as_secs_f64().max(1e-9);
            let row = StepRecord {
                step: self.state.step,
                epoch: self.state.epoch,
                lr,
                loss: loss.clone(),
                total,
                grad_norm,
                logit_scale: logit_scale.is_finite().then_some(logit_scale),
                images_per_s: self.window_images as f64 / elapsed,
                step_time_s: elapsed / self.window_steps.max(1) as f64,
                data_wait_s: self.window_wait.as_secs_f64() / self.window_steps.max(1) as f64,
                samples_seen: self.state.samples_seen,
                skipped: skips.total(),
            };
            if let Some(metrics) = &mut self.metrics {
                metrics.write_step(&row)?;
            }
            let terms: Vec<String> = loss.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
            let skipped = if skips.is_empty() {
                String::new()
            } else {
                format!(" | skipped {}", skip_counts(skips))
            };
            self.progress.report(
                self.state.step,
                self.prep.total_steps,
                &format!(
                    "{:.1} img/s | lr {lr:.2e} | loss {total:.4} ({}){skipped}",
                    row.images_per_s,
                    terms.join(", ")
                ),
            );
            self.last_loss = Some((loss, total));
            self.window_start = Instant::now();
            self.window_images = 0;
            self.window_steps = 0;
            self.window_wait = Duration::ZERO;
        } else if self.watch.pending() >= MAX_UNCHECKED_STEPS {
            self.watch.check()?;
        }
        Ok(())
    }

    /// The checkpoint and evaluation due after a step (`epoch_over`: it ended an epoch). At
    /// most one checkpoint and one evaluation per step.
    fn after_step(&mut self, epoch_over: bool) -> Result<(), TrainError> {
        let config = &self.prep.config;
        let every = config.run.checkpoint_every_steps;
        let step = self.state.step;
        if (every > 0 && step.is_multiple_of(every))
            || (epoch_over && config.run.checkpoint_at_epoch_end)
        {
            self.checkpoint()?;
        }
        let config = &self.prep.config;
        if (config.eval.due_after_step(step)
            || (epoch_over && config.eval.due_after_epoch(self.state.epoch)))
            && self.last_eval_step != Some(step)
        {
            self.evaluate()?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the current step, once per step, and only of finite values.
    fn checkpoint(&mut self) -> Result<(), TrainError> {
        if self.last_checkpoint_step == Some(self.state.step) {
            return Ok(());
        }
        self.watch.check()?;
        if self.metrics.is_none() {
            // Another node than node 0: it holds the same weights and writes nothing.
            self.last_checkpoint_step = Some(self.state.step);
            return Ok(());
        }
        let model = self
            .model
            .as_ref()
            .expect("the model is present between steps");
        check_weights_and_moments(model, &self.optimizer, self.state.step)?;
        let path = save_checkpoint(
            &self.run_dir.join(CHECKPOINTS_DIR),
            CheckpointContents {
                model,
                optimizer: &self.optimizer,
                state: &self.state,
                config: &self.prep.config,
            },
            self.prep.config.run.keep_checkpoints,
        )?;
        self.progress
            .println(&format!("checkpoint {}", path.display()));
        self.last_checkpoint = Some(path);
        self.last_checkpoint_step = Some(self.state.step);
        Ok(())
    }

    fn evaluate(&mut self) -> Result<(), TrainError> {
        let Some(suite) = self.prep.eval.as_ref().filter(|_| self.metrics.is_some()) else {
            return Ok(());
        };
        self.watch.check()?;
        let model = self
            .model
            .as_ref()
            .expect("the model is present between steps");
        let student = model.student.valid();
        // Evaluated in the run's precision, as open_clip evaluates under autocast.
        let scope = autocast(self.prep.config.run.precision.autocast());
        let report: EvalReport = suite.run(&student, &self.device)?;
        drop(scope);
        let metrics: BTreeMap<String, f64> = report.metrics().into_iter().collect();
        let Some(writer) = &mut self.metrics else {
            unreachable!("only node 0 evaluates");
        };
        writer.write_eval(&EvalRecord {
            step: self.state.step,
            epoch: self.state.epoch,
            metrics: metrics.clone(),
            report: serde_json::to_value(&report).map_err(|e| TrainError::Eval {
                what: format!("cannot serialize the report: {e}"),
            })?,
        })?;
        let shown: Vec<String> = metrics.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        self.progress.println(&format!(
            "eval at step {}: {}",
            self.state.step,
            shown.join(", ")
        ));
        self.last_eval = Some(metrics);
        self.last_eval_step = Some(self.state.step);
        Ok(())
    }
}

/// Whether `a` and `b` name the same directory.
fn same_dir(a: Option<&Path>, b: &Path) -> bool {
    match (a.and_then(|a| a.canonicalize().ok()), b.canonicalize().ok()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The plots drawn at the end of a run (`run.plots`): none when they are off.
#[cfg(feature = "plots")]
fn end_of_run_plots(config: &RunConfig, run_dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    if config.run.plots {
        crate::plot::plot_run(run_dir)
    } else {
        Ok(Vec::new())
    }
}

/// Without the `plots` feature nothing is drawn: `PreparedRun` refused a config that asks for
/// plots before any work (`plots_unavailable`), and a prepared run's config cannot change.
#[cfg(not(feature = "plots"))]
fn end_of_run_plots(_config: &RunConfig, _run_dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    Ok(Vec::new())
}
