//! Images/s of one training step on the CPU (Flex backend), as the trainer runs it: the same
//! `clipkd_train::train_step` (teacher forward on the inner backend, student forward and
//! backward, AdamW with CLIP-KD's groups, `logit_scale` clamp).
//!
//! Two workloads:
//! - `baseline`: a ViT-T-16-shaped student alone (task loss), as `clipkd train`;
//! - `kd`: the same student distilled from a ViT-B-16-shaped teacher with the CLIP-KD losses
//!   (task + CRD + ICL + FD), as `clipkd distill`;
//! - `cached`: `kd` from a teacher cache (`clipkd distill --teacher-cache`): the teacher's
//!   outputs for the batch are computed once before the steps and each step turns them from
//!   host memory into tensors (as the trainer does with a cache's rows) instead of running
//!   the teacher.
//!
//! Both models keep their real widths, depths and text towers (context 77, vocabulary 49408);
//! only the image size is reduced (default 64 px: 16 patches) so a step fits a small CPU.
//! Inputs are random (data loading is measured by `clipkd-data`'s `pipeline` bench).
//!
//! After the steps, the cost of the trainer's NaN/Inf checks (`clipkd_train::finite`) on the
//! same model: keeping a step's loss terms on the device (every step, no device read), reading
//! 100 steps' terms back in one transfer (on logged steps), and checking every weight and AdamW
//! moment (before each checkpoint).
//!
//! Run: `cargo bench -p clipkd-train --bench train_step`. Settings by environment variable:
//! `CLIPKD_BENCH_BATCH` (default 32), `CLIPKD_BENCH_IMAGE` (64), `CLIPKD_BENCH_STEPS` (5),
//! `CLIPKD_BENCH_WARMUP` (1), `CLIPKD_BENCH_WORKLOADS` (`baseline,kd`),
//! `CLIPKD_BENCH_STUDENT` (`ViT-T-16`), `CLIPKD_BENCH_TEACHER` (`ViT-B-16`),
//! `CLIPKD_BENCH_PRECISION` (`f32`; `bf16` or `f16`: mixed precision as `--precision`, f16
//! with a fixed loss scale of 1024 and its per-step overflow check; measures the autocast's
//! casts and Flex's half-precision products).

use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use burn_flex::Flex;
use clipkd_losses::{LossPreset, LossSetConfig};
use clipkd_models::{ClipConfig, VisionConfig};
use clipkd_train::config::Precision;
use clipkd_train::finite::{LossWatch, check_weights_and_moments};
use clipkd_train::step::{
    DistillModel, MicroBatch, StepOptions, TeacherOutputs, distill_optimizer, train_step,
};
use clipkd_train::trainer::force_init;

type B = Autodiff<Flex>;
type Inner = Flex;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn at_size(mut config: ClipConfig, size: usize) -> ClipConfig {
    match &mut config.vision {
        VisionConfig::Vit(v) => v.image_size = [size, size],
        VisionConfig::ModifiedResNet(r) => r.image_size = size,
        VisionConfig::Timm(t) => t.image_size = [size, size],
    }
    config
}

/// Captions of random length: start token, random ids, end token (the highest id).
fn tokens(n: usize, context: usize, device: &burn::tensor::Device<Inner>) -> Tensor<Inner, 2, Int> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut ids = vec![0i64; n * context];
    for row in ids.chunks_mut(context) {
        let len = 2 + (next() as usize % (context - 1));
        row[0] = 49406;
        for id in &mut row[1..len - 1] {
            *id = 1 + (next() % 49000) as i64;
        }
        row[len - 1] = 49407;
    }
    Tensor::from_data(TensorData::new(ids, [n, context]), device)
}

fn main() {
    let batch: usize = env("CLIPKD_BENCH_BATCH", 32);
    let size: usize = env("CLIPKD_BENCH_IMAGE", 64);
    let steps: usize = env("CLIPKD_BENCH_STEPS", 5);
    let warmup: usize = env("CLIPKD_BENCH_WARMUP", 1);
    let workloads: String = env("CLIPKD_BENCH_WORKLOADS", "baseline,kd,cached".to_string());
    let student_name: String = env("CLIPKD_BENCH_STUDENT", "ViT-T-16".to_string());
    let teacher_name: String = env("CLIPKD_BENCH_TEACHER", "ViT-B-16".to_string());
    let precision: Precision = env("CLIPKD_BENCH_PRECISION", Precision::F32);
    if precision.autocast().is_none() && precision != Precision::F32 {
        panic!("CLIPKD_BENCH_PRECISION={precision}: the CPU runs f32, bf16 or f16");
    }
    let device = Default::default();
    let student_cfg = at_size(
        ClipConfig::resolve(&student_name).expect("student config"),
        size,
    );
    let teacher_cfg = at_size(
        ClipConfig::resolve(&teacher_name).expect("teacher config"),
        size,
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "train_step bench: student {student_name}, teacher {teacher_name}, {size} px, batch \
         {batch}, context {}, {threads} CPU threads, Flex backend, precision {precision}",
        student_cfg.context_length()
    );

    for workload in workloads.split(',').map(str::trim) {
        let (kd, cached) = match workload {
            "kd" => (true, false),
            "cached" => (true, true),
            "baseline" => (false, false),
            other => panic!("unknown workload `{other}` (baseline, kd, cached)"),
        };
        <B as Backend>::seed(&device, 0);
        let teacher = kd.then(|| {
            let t = teacher_cfg.init::<Inner>(&device).expect("teacher");
            force_init(&t);
            t
        });
        let (preset, teacher_dim) = if kd {
            (LossPreset::ClipKd, teacher_cfg.embed_dim)
        } else {
            (LossPreset::Baseline, student_cfg.embed_dim)
        };
        let model = DistillModel::new(
            student_cfg.init::<B>(&device).expect("student"),
            LossSetConfig::preset(preset, student_cfg.embed_dim, teacher_dim)
                .init::<B>(&device)
                .expect("losses"),
        );
        force_init(&model);
        let mut optimizer = distill_optimizer(&model, clipkd_train::AdamWParams::vit());
        let mut model = Some(model);
        let images = Tensor::<Inner, 4>::random(
            [batch, 3, size, size],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let toks = tokens(batch, student_cfg.context_length(), &device);
        // From a cache: the teacher's outputs as host rows (what a cache lookup returns).
        let stored = cached.then(|| {
            let t = teacher.as_ref().expect("a teacher");
            (
                t.encode_image(images.clone()).expect("image").into_data(),
                t.encode_text(toks.clone()).expect("text").into_data(),
                t.logit_scale().into_data(),
            )
        });
        let teacher = if cached { None } else { teacher };
        let mut times = Vec::new();
        let mut last_terms = None;
        for i in 0..warmup + steps {
            let t = Instant::now();
            let out = train_step(
                teacher.as_ref(),
                model.take().expect("model"),
                &mut optimizer,
                [{
                    let batch = MicroBatch::new(images.clone(), toks.clone());
                    match &stored {
                        None => batch,
                        Some((image, text, scale)) => batch.with_teacher(TeacherOutputs {
                            image: Tensor::from_data(image.clone(), &device),
                            text: Tensor::from_data(text.clone(), &device),
                            log_logit_scale: Tensor::from_data(scale.clone(), &device),
                        }),
                    }
                }],
                &StepOptions {
                    autocast: precision.autocast(),
                    loss_scale: precision.scales_losses().then_some(1024.0),
                    ..StepOptions::new(1e-4)
                },
            )
            .expect("step");
            // Read the loss back: the step's work is done when this returns.
            let total: f32 = out.terms.total().unwrap().into_scalar();
            last_terms = Some(out.terms);
            model = Some(out.model);
            let s = t.elapsed().as_secs_f64();
            if i >= warmup {
                times.push(s);
            }
            eprintln!(
                "[{workload}] {} {} {s:.3} s (loss {total:.4})",
                if i < warmup { "warm-up" } else { "step" },
                i + 1
            );
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{workload}: median {median:.3} s/step (min {:.3}), {:.1} images/s",
            times[0],
            batch as f64 / median
        );

        let terms = last_terms.expect("at least one step");
        let model = model.expect("model");
        let mut watch = LossWatch::<Inner>::new();
        let t = Instant::now();
        for step in 1..=100 {
            watch.push(step, &terms);
        }
        let push = t.elapsed().as_secs_f64() / 100.0;
        let t = Instant::now();
        watch.check().expect("finite");
        let check = t.elapsed().as_secs_f64();
        let t = Instant::now();
        check_weights_and_moments(&model, &optimizer, 1).expect("finite");
        let weights = t.elapsed().as_secs_f64();
        println!(
            "{workload}: NaN/Inf checks: {:.1} us/step to keep the terms (no device read; \
             {:.1e} of the median step), {:.2} ms to read and check 100 steps' terms, {:.1} ms \
             to check every weight and moment (per checkpoint)",
            push * 1e6,
            push / median,
            check * 1e3,
            weights * 1e3
        );
    }
}
