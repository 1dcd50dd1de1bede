//! Seconds per forward + backward of a vision tower on the CPU (Flex backend, autodiff,
//! BatchNorm with batch statistics as in training): the five timm students of CLIP-KD
//! (`timm_resnet18`, `timm_mobilenetv3_small_100`, `timm-efficientnet-b0`,
//! `timm-mobilevit_s`, `timm-swin_tiny_patch4_window7_224`) and ViT-T-16 for reference, at
//! full size, batch 8, 224 px, embedding 512; the loss is the sum of the embeddings. Also the
//! inference forward (running statistics, no autodiff). `tools/bench_torch_towers.py` measures
//! the same on PyTorch/timm with the same threads.
//!
//! Run: `cargo bench -p clipkd-models --bench vision_towers`. Settings by environment variable:
//! `CLIPKD_BENCH_TOWERS` (comma-separated preset names), `CLIPKD_BENCH_BATCH` (8),
//! `CLIPKD_BENCH_STEPS` (3), `CLIPKD_BENCH_WARMUP` (1).

use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use burn_flex::Flex;
use clipkd_models::{Activation, ClipConfig};

type B = Autodiff<Flex>;

const TOWERS: &str = "timm_resnet18,timm_mobilenetv3_small_100,timm-efficientnet-b0,\
                      timm-mobilevit_s,timm-swin_tiny_patch4_window7_224,ViT-T-16";

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let towers: String = env("CLIPKD_BENCH_TOWERS", TOWERS.to_string());
    let batch: usize = env("CLIPKD_BENCH_BATCH", 8);
    let steps: usize = env("CLIPKD_BENCH_STEPS", 3);
    let warmup: usize = env("CLIPKD_BENCH_WARMUP", 1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "vision_towers bench: batch {batch}, 224 px, {threads} CPU threads, Flex backend, f32, \
         median of {steps} after {warmup} warm-up"
    );
    println!("| tower | params | train fwd+bwd s | inference fwd s |");
    println!("|---|---|---|---|");
    let device = Default::default();
    for name in towers.split(',').map(str::trim) {
        let config = ClipConfig::preset(name).expect("preset");
        let [h, w] = config.image_size();
        let tower = config
            .vision
            .init::<B>(config.embed_dim, Activation::Gelu, &device)
            .expect("tower");
        let params = burn::module::Module::num_params(&tower);
        let images =
            Tensor::<B, 4>::random([batch, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
        let mut train = Vec::new();
        for i in 0..warmup + steps {
            let start = Instant::now();
            let loss = tower.forward(images.clone()).expect("forward").sum();
            let grads = loss.backward();
            drop(grads);
            if i >= warmup {
                train.push(start.elapsed().as_secs_f64());
            }
        }
        let inference_tower = tower.valid();
        let inner = images.inner();
        let mut inference = Vec::new();
        for i in 0..warmup + steps {
            let start = Instant::now();
            let out = inference_tower.forward(inner.clone()).expect("forward");
            let _: Vec<f32> = out.into_data().to_vec().expect("read");
            if i >= warmup {
                inference.push(start.elapsed().as_secs_f64());
            }
        }
        println!(
            "| {name} | {:.2}M | {:.3} | {:.3} |",
            params as f64 / 1e6,
            median(train),
            median(inference)
        );
    }
}
