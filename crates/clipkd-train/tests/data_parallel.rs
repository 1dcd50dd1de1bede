//! Data parallelism over burn-collective (`clipkd_train::distributed`): 2 and 4 local peers (one
//! thread each, CPU), each with a quarter or half of a global batch of 8, give the gradient of
//! one device with the whole batch, for the paper's recipe (task + CRD + ICL + FD) and for GD,
//! on every parameter of the student and the loss module; every peer gets the same gradient
//! and the single-device loss of the global batch; a peer that starts from other
//! weights is brought to rank 0's by the broadcast; over 3 whole steps (`data_parallel_step`,
//! with accumulation and clipping) every peer holds bit-identical parameters after each step,
//! equal to one device's `train_step` after the last.
//!
//! Tolerance: relative L2 difference 1e-5 per tensor (f32; the peers sum partial gradients in
//! another order than one device). One test in this file: burn-collective's local server and
//! the CPU backend's RNG are global to the process.

use std::collections::BTreeMap;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use burn_flex::Flex;
use clipkd_losses::{DistillInput, Embeddings, LossKind};
use clipkd_models::ClipConfig;
use clipkd_train::AdamWParams;
use clipkd_train::config::{LossSection, TrainMode};
use clipkd_train::distributed::{Peer, data_parallel_gradients, data_parallel_step, take_stats};
use clipkd_train::step::{DistillModel, MicroBatch, StepOptions, distill_optimizer, train_step};

mod common;
use common::{relative_l2, term};

type B = Autodiff<Flex>;
type Model = DistillModel<B>;

const STUDENT: &str = r#"{
  "embed_dim": 16,
  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
}"#;
const N: usize = 8;
const TEACHER_DIM: usize = 24;

/// Deterministic pseudo-random values in (-1, 1).
fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2_000_001) as f32 / 1_000_000.0 - 1.0
        })
        .collect()
}

/// The global batch: images, tokens, and the teacher's embeddings and log scale.
struct Batch {
    images: TensorData,
    tokens: TensorData,
    teacher_image: TensorData,
    teacher_text: TensorData,
}

fn batch() -> Batch {
    let mut tokens = vec![0i64; N * 16];
    for (i, row) in tokens.chunks_mut(16).enumerate() {
        let len = 3 + i % 10;
        row[0] = 49406;
        for (j, t) in row[1..len - 1].iter_mut().enumerate() {
            *t = 100 + ((i * 31 + j * 7) % 4000) as i64;
        }
        row[len - 1] = 49407;
    }
    Batch {
        images: TensorData::new(values(N * 3 * 32 * 32, 1), [N, 3, 32, 32]),
        tokens: TensorData::new(tokens, [N, 16]),
        teacher_image: TensorData::new(values(N * TEACHER_DIM, 2), [N, TEACHER_DIM]),
        teacher_text: TensorData::new(values(N * TEACHER_DIM, 3), [N, TEACHER_DIM]),
    }
}

fn model(kinds: &[LossKind], seed: u64) -> Model {
    let device = Default::default();
    let student = ClipConfig::from_open_clip_json_str(STUDENT)
        .unwrap()
        .init_seeded::<B>(seed, &device)
        .unwrap();
    let terms = kinds
        .iter()
        .map(|&kind| term(kind, if kind == LossKind::Fd { 100.0 } else { 1.0 }))
        .collect();
    let section = LossSection {
        terms,
        ..Default::default()
    };
    let losses = section
        .loss_set_config(TrainMode::Distill, 16, TEACHER_DIM)
        .unwrap()
        .init::<B>(&device)
        .unwrap();
    let model = DistillModel::new(student, losses);
    clipkd_train::trainer::force_init(&model);
    model
}

fn rows<const D: usize, K>(data: &TensorData, from: usize, len: usize) -> Tensor<B, D, K>
where
    K: burn::tensor::TensorKind<B> + burn::tensor::BasicOps<B>,
{
    let t = Tensor::<B, D, K>::from_data(data.clone(), &Default::default());
    t.narrow(0, from, len)
}

/// Every gradient of `grads` by the parameter's position in `model` (the same on all peers).
fn by_position(model: &Model, grads: &GradientsParams) -> BTreeMap<usize, Vec<f32>> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        index: usize,
        out: BTreeMap<usize, Vec<f32>>,
    }
    impl ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<Flex, D>(param.id) {
                self.out.insert(self.index, g.into_data().to_vec().unwrap());
            }
            self.index += 1;
        }
    }
    let mut c = Collect {
        grads,
        index: 0,
        out: BTreeMap::new(),
    };
    model.visit(&mut c);
    c.out
}

fn loss_of(model: &Model, input: &DistillInput<B>) -> Tensor<B, 1> {
    model.losses.forward(input).unwrap().total().unwrap()
}

/// One device, the whole batch.
fn single_device(model: &Model, data: &Batch) -> (f32, BTreeMap<usize, Vec<f32>>) {
    let student = &model.student;
    let embeddings = Embeddings::from_log_scale(
        student.encode_image(rows(&data.images, 0, N)).unwrap(),
        student
            .encode_text(rows::<2, Int>(&data.tokens, 0, N))
            .unwrap(),
        student.logit_scale(),
    )
    .unwrap();
    let teacher = Embeddings::from_log_scale(
        rows(&data.teacher_image, 0, N),
        rows(&data.teacher_text, 0, N),
        Tensor::from_floats([2.5], &Default::default()),
    )
    .unwrap();
    let loss = loss_of(model, &DistillInput::new(embeddings, teacher).unwrap());
    let value: f32 = loss.clone().into_scalar();
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (value, by_position(model, &grads))
}

/// `world` peers; rank 0 starts from `reference`, the others from models of other seeds (and
/// other loss-module draws), which the broadcast replaces.
fn data_parallel(
    reference: &Model,
    kinds: &'static [LossKind],
    world: usize,
) -> Vec<(f32, BTreeMap<usize, Vec<f32>>)> {
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let start = if rank == 0 {
                reference.clone()
            } else {
                model(kinds, 100 + rank as u64)
            };
            std::thread::spawn(move || {
                let data = batch();
                let peer = Peer::join::<Flex>(rank, world, Default::default()).unwrap();
                let model = peer.broadcast_module(start).unwrap();
                take_stats(); // count the step's collectives only
                let n = N / world;
                let from = rank * n;
                let student = &model.student;
                let image = student.encode_image(rows(&data.images, from, n)).unwrap();
                let text = student
                    .encode_text(rows::<2, Int>(&data.tokens, from, n))
                    .unwrap();
                let local = DistillInput::new(
                    Embeddings::from_log_scale(image, text, student.logit_scale()).unwrap(),
                    Embeddings::from_log_scale(
                        rows(&data.teacher_image, from, n),
                        rows(&data.teacher_text, from, n),
                        Tensor::from_floats([2.5], &Default::default()),
                    )
                    .unwrap(),
                )
                .unwrap();
                let (grads, terms) = data_parallel_gradients(&peer, &model, local, |input| {
                    Ok(model.losses.forward(input)?)
                })
                .unwrap();
                let loss = terms.total().unwrap();
                // The step's collectives are counted: at least every gradient's bytes, in far
                // fewer calls than gradients (they go in buckets).
                let stats = take_stats();
                let params = by_position(&model, &grads);
                let gradient_bytes: usize = params.values().map(|g| 4 * g.len()).sum();
                assert!(stats.bytes as usize >= gradient_bytes, "{stats:?}");
                assert!((stats.calls as usize) < params.len(), "{stats:?}");
                let out = (loss.into_scalar(), params);
                peer.leave::<Flex>().unwrap();
                out
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

const TEACHER: &str = r#"{
  "embed_dim": 24,
  "vision_cfg": {"image_size": 32, "layers": 1, "width": 48, "head_width": 16, "patch_size": 8},
  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 3, "layers": 1}
}"#;

/// Every parameter's value, in model order.
fn values_of(model: &Model) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().into_data().to_vec().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// Three optimizer steps of `data_parallel_step` (2 micro-batches of the global batch each,
/// clipping) on `world` peers; returns each peer's parameters after each step.
fn parallel_steps(
    start: &Model,
    teacher: &clipkd_models::Clip<Flex>,
    world: usize,
    kinds: &'static [LossKind],
) -> Vec<Vec<Vec<Vec<f32>>>> {
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let start = if rank == 0 {
                start.clone()
            } else {
                model(kinds, 100 + rank as u64)
            };
            let teacher = teacher.clone();
            std::thread::spawn(move || {
                let device = Default::default();
                let data = batch();
                let peer = Peer::join::<Flex>(rank, world, device).unwrap();
                let model = peer.broadcast_module(start).unwrap();
                let mut optimizer = distill_optimizer(&model, AdamWParams::vit());
                let mut model = model;
                let n = N / 2 / world;
                let mut after = Vec::new();
                for step in 0..3 {
                    let micro = (0..2)
                        .map(|m| {
                            MicroBatch::new(
                                rows::<4, burn::tensor::Float>(
                                    &data.images,
                                    m * N / 2 + rank * n,
                                    n,
                                )
                                .inner(),
                                rows::<2, Int>(&data.tokens, m * N / 2 + rank * n, n).inner(),
                            )
                        })
                        .collect();
                    let mut options = StepOptions::new(1e-3 * (step + 1) as f64);
                    options.grad_clip_norm = Some(1.0);
                    model = data_parallel_step(
                        &peer,
                        Some(&teacher),
                        model,
                        &mut optimizer,
                        micro,
                        &options,
                    )
                    .unwrap()
                    .model;
                    after.push(values_of(&model));
                }
                peer.leave::<Flex>().unwrap();
                after
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn peers_give_the_single_device_gradient_of_the_global_batch() {
    peers_stay_identical_and_step_like_one_device();
    const RECIPE: &[LossKind] = &[LossKind::Task, LossKind::Crd, LossKind::Icl, LossKind::Fd];
    const GD: &[LossKind] = &[LossKind::Task, LossKind::Gd];
    let data = batch();
    for (name, kinds) in [("task+CRD+ICL+FD", RECIPE), ("task+GD", GD)] {
        let start = model(kinds, 7);
        let (reference_loss, reference) = single_device(&start, &data);
        for world in [2, 4] {
            let peers = data_parallel(&start, kinds, world);
            for (rank, (loss, _)) in peers.iter().enumerate() {
                assert!(
                    (loss - reference_loss).abs() <= 1e-5 * reference_loss.abs(),
                    "{name}, {world} peers, rank {rank}: the global batch's loss {loss} vs \
                     {reference_loss}"
                );
            }
            let mean_loss = peers[0].0;
            let mut worst = 0.0f64;
            for (rank, (_, grads)) in peers.iter().enumerate() {
                assert_eq!(
                    grads.keys().collect::<Vec<_>>(),
                    reference.keys().collect::<Vec<_>>(),
                    "{name}, {world} peers, rank {rank}: the parameters with a gradient"
                );
                for (position, g) in grads {
                    let error = relative_l2(g, &reference[position]);
                    worst = worst.max(error);
                    assert!(
                        error <= 1e-5,
                        "{name}, {world} peers, rank {rank}, parameter {position}: {error:.2e}"
                    );
                }
                assert_eq!(grads, &peers[0].1, "every peer gets the same gradient");
            }
            println!(
                "{name}, {world} peers: {} gradients, worst relative L2 {worst:.2e}, loss {mean_loss} vs {reference_loss}",
                reference.len()
            );
        }
    }
}

/// `data_parallel_step` on 2 and 4 peers whose starting weights differ (rank 0's are
/// broadcast): after each of 3 steps every peer holds bit-identical parameters, and after the
/// last they equal `train_step`'s on one device within 1e-5 relative L2 (all parameters).
fn peers_stay_identical_and_step_like_one_device() {
    const RECIPE: &[LossKind] = &[LossKind::Task, LossKind::Crd, LossKind::Icl, LossKind::Fd];
    let device = Default::default();
    let data = batch();
    let teacher = ClipConfig::from_open_clip_json_str(TEACHER)
        .unwrap()
        .init_seeded::<Flex>(3, &device)
        .unwrap();
    let start = model(RECIPE, 7);
    let mut model = start.clone();
    let mut optimizer = distill_optimizer(&model, AdamWParams::vit());
    for step in 0..3 {
        let micro: Vec<_> = (0..2)
            .map(|m| {
                MicroBatch::new(
                    rows::<4, burn::tensor::Float>(&data.images, m * N / 2, N / 2).inner(),
                    rows::<2, Int>(&data.tokens, m * N / 2, N / 2).inner(),
                )
            })
            .collect();
        let mut options = StepOptions::new(1e-3 * (step + 1) as f64);
        options.grad_clip_norm = Some(1.0);
        model = train_step(Some(&teacher), model, &mut optimizer, micro, &options)
            .unwrap()
            .model;
    }
    let reference = values_of(&model).concat();
    for world in [2, 4] {
        let peers = parallel_steps(&start, &teacher, world, RECIPE);
        for step in 0..3 {
            for (rank, p) in peers.iter().enumerate() {
                assert!(
                    p[step] == peers[0][step],
                    "{world} peers: rank {rank} differs from rank 0 after step {}",
                    step + 1
                );
            }
        }
        let error = relative_l2(&peers[0][2].concat(), &reference);
        println!("{world} peers, 3 steps: parameters within {error:.2e} of one device");
        assert!(error <= 1e-5, "{world} peers: {error:.2e}");
    }
}
