//! What a data-parallel distillation step exchanges (`clipkd_train::distributed`): for 1, 2
//! and 4 local CPU peers (threads) sharing one global batch, per step and per peer, the
//! collective calls, the bytes handed to them (gathered embeddings, embedding gradients,
//! parameter gradients) and the seconds spent inside them, next to the step's wall time.
//!
//! The student is ViT-T-16 with its real widths and text tower (context 77, vocabulary 49408)
//! at a reduced image size (default 64 px), with the CLIP-KD losses against random teacher
//! embeddings of width 512 (the teacher's forward is not part of the exchange). On one machine
//! the peers share its cores, so the step time measures contention, not speed-up; the bytes
//! are what a multi-GPU run moves, and docs/distributed.md turns them into time for real links.
//!
//! Run: `cargo bench -p clipkd-train --bench data_parallel`. Settings by environment variable:
//! `CLIPKD_BENCH_BATCH` (global batch, default 16), `CLIPKD_BENCH_IMAGE` (64),
//! `CLIPKD_BENCH_STEPS` (3), `CLIPKD_BENCH_WORLDS` (`1,2,4`).

use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use burn_flex::Flex;
use clipkd_losses::{DistillInput, Embeddings, LossPreset, LossSetConfig};
use clipkd_models::{ClipConfig, VisionConfig};
use clipkd_train::distributed::{Peer, data_parallel_gradients, take_stats};
use clipkd_train::step::DistillModel;

type B = Autodiff<Flex>;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tokens(n: usize, context: usize) -> TensorData {
    let mut ids = vec![0i64; n * context];
    for (i, row) in ids.chunks_mut(context).enumerate() {
        let len = 3 + (i * 7) % (context - 3);
        row[0] = 49406;
        for (j, id) in row[1..len - 1].iter_mut().enumerate() {
            *id = 1 + ((i * 131 + j * 17) % 49000) as i64;
        }
        row[len - 1] = 49407;
    }
    TensorData::new(ids, [n, context])
}

fn main() {
    let batch: usize = env("CLIPKD_BENCH_BATCH", 16);
    let size: usize = env("CLIPKD_BENCH_IMAGE", 64);
    let steps: usize = env("CLIPKD_BENCH_STEPS", 3);
    let worlds: String = env("CLIPKD_BENCH_WORLDS", "1,2,4".to_string());
    let mut config = ClipConfig::preset("ViT-T-16").expect("preset");
    if let VisionConfig::Vit(v) = &mut config.vision {
        v.image_size = [size, size];
    }
    let context = config.context_length();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "data_parallel bench: ViT-T-16 student, {size} px, global batch {batch}, CLIP-KD losses \
         (teacher width 512), {threads} CPU threads shared by the peers, median of {steps} steps"
    );
    println!(
        "| peers | samples per peer | step s | in collectives s | calls | MiB per peer per step |"
    );
    println!("|---|---|---|---|---|---|");
    for world in worlds
        .split(',')
        .map(|w| w.trim().parse::<usize>().expect("world"))
    {
        assert!(
            batch.is_multiple_of(world),
            "the global batch must split into {world} peers"
        );
        let n = batch / world;
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let config = config.clone();
                std::thread::spawn(move || {
                    let device = Default::default();
                    let peer = Peer::join::<Flex>(rank, world, device).expect("join");
                    let student = config.init_seeded::<B>(0, &device).expect("student");
                    let losses = LossSetConfig::preset(LossPreset::ClipKd, config.embed_dim, 512)
                        .init::<B>(&device)
                        .expect("losses");
                    let model = DistillModel::new(student, losses);
                    clipkd_train::trainer::force_init(&model);
                    let model = peer.broadcast_module(model).expect("broadcast");
                    take_stats();
                    let mut rows = Vec::new();
                    for step in 0..steps {
                        let images = Tensor::<B, 4>::random(
                            [n, 3, size, size],
                            Distribution::Normal(0.0, 1.0),
                            &device,
                        );
                        let text = Tensor::<B, 2, Int>::from_data(tokens(n, context), &device);
                        let teacher = Embeddings::from_log_scale(
                            Tensor::random([n, 512], Distribution::Normal(0.0, 1.0), &device),
                            Tensor::random([n, 512], Distribution::Normal(0.0, 1.0), &device),
                            Tensor::from_floats([4.6], &device),
                        )
                        .expect("teacher");
                        let start = Instant::now();
                        let image = model.student.encode_image(images).expect("image");
                        let text = model.student.encode_text(text).expect("text");
                        let student =
                            Embeddings::from_log_scale(image, text, model.student.logit_scale())
                                .expect("student");
                        let local = DistillInput::new(student, teacher).expect("input");
                        let (grads, _) = data_parallel_gradients(&peer, &model, local, |input| {
                            Ok(model.losses.forward(input)?)
                        })
                        .expect("step");
                        drop(grads);
                        let seconds = start.elapsed().as_secs_f64();
                        let stats = take_stats();
                        if step > 0 || steps == 1 {
                            rows.push((seconds, stats));
                        }
                    }
                    peer.leave::<Flex>().expect("leave");
                    rows
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("peer"))
            .collect();
        // Rank 0's steps (every peer hands in the same bytes).
        let mut rows = results[0].clone();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (seconds, stats) = rows[rows.len() / 2];
        println!(
            "| {world} | {n} | {seconds:.3} | {:.3} | {} | {:.1} |",
            stats.seconds,
            stats.calls,
            stats.bytes as f64 / (1 << 20) as f64
        );
    }
}
