//! `clipkd bench`: speed of the CLIP-KD step on one device, with synthetic inputs.
//!
//! Three workloads, as `tools/bench_torch_kd.py` measures them in PyTorch:
//! - `kd`: teacher forward (no autodiff) + student step with task + CRD + ICL + FD and AdamW;
//! - `teacher`: the teacher forward alone;
//! - `student`: the student step alone (task loss, AdamW).
//!
//! For each: model initialisation time, time to the first step (JIT compilation and autotuning
//! on GPU backends happen there), then the median of `--steps` timed steps after `--warmup`
//! untimed ones, as images/s. Each step ends with a device sync, so the times are wall-clock
//! times of finished work. Progress goes to stderr as it happens (a run cut short still says how
//! far it got); results go to stdout as one JSON object per workload.

use std::time::Instant;

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use clap::{Args, ValueEnum};
use clipkd_losses::{LossPreset, LossSetConfig};
use clipkd_models::{Clip, ClipConfig};
use clipkd_train::optim::AdamWParams;
use clipkd_train::step::{DistillModel, MicroBatch, StepOptions, distill_optimizer, train_step};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

use super::backend::{BackendTask, DeviceSpec, Precision, dispatch};

/// A workload of `clipkd bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Teacher forward + student step with the CLIP-KD recipe.
    Kd,
    /// Teacher forward alone.
    Teacher,
    /// Student step alone (task loss).
    Student,
}

/// Options of `clipkd bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Device: cpu, cuda[:N], wgpu[:N].
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Precision: f32; bf16 or f16 mixed precision (matrix products, convolutions and attention
    /// in half precision, the rest f32; f16 measured without the loss scaler's per-step
    /// overflow check); pure_bf16 or pure_f16 (every tensor; CPU and CUDA).
    #[arg(long, value_name = "f32|bf16|f16|pure_bf16|pure_f16", default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Workloads to run, in order (comma separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kd,teacher,student"
    )]
    pub workloads: Vec<Workload>,
    /// Teacher model: an open_clip config name or JSON file.
    #[arg(long, default_value = "ViT-L-14")]
    pub teacher: String,
    /// Student model: an open_clip config name or JSON file.
    #[arg(long, default_value = "ViT-B-16")]
    pub student: String,
    /// Images (and captions) per step (`--batch` is accepted too).
    #[arg(long = "batch-size", alias = "batch", default_value_t = 128)]
    pub batch: usize,
    /// Untimed steps after the first one.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
}

/// Runs `clipkd bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let teacher = ClipConfig::resolve(&args.teacher)
        .with_context(|| format!("teacher model `{}`", args.teacher))?;
    let student = ClipConfig::resolve(&args.student)
        .with_context(|| format!("student model `{}`", args.student))?;
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    if args.workloads.contains(&Workload::Kd) {
        anyhow::ensure!(
            teacher.image_size() == student.image_size()
                && teacher.context_length() == student.context_length(),
            "the teacher sees the student's pixels and tokens: image size {:?} vs {:?}, \
             context {} vs {}",
            teacher.image_size(),
            student.image_size(),
            teacher.context_length(),
            student.context_length()
        );
    }
    for workload in args.workloads.clone() {
        let task = BenchTask {
            args: args.clone(),
            teacher: teacher.clone(),
            student: student.clone(),
            workload,
        };
        let result = dispatch(args.device, args.precision, task)?;
        println!("{result}");
    }
    Ok(())
}

struct BenchTask {
    args: BenchArgs,
    teacher: ClipConfig,
    student: ClipConfig,
    workload: Workload,
}

impl BackendTask for BenchTask {
    type Output = serde_json::Value;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<serde_json::Value> {
        let Self {
            args,
            teacher,
            student,
            workload,
        } = self;
        let name = format!("{workload:?}").to_lowercase();
        let model_config = if workload == Workload::Teacher {
            &teacher
        } else {
            &student
        };
        let [h, w] = model_config.image_size();
        let context = model_config.context_length();
        let vocab = model_config.text.vocab_size;
        let n = args.batch;

        let t0 = Instant::now();
        let teacher_model = match workload {
            Workload::Kd | Workload::Teacher => Some(teacher.init::<B::InnerBackend>(&device)?),
            Workload::Student => None,
        };
        let mut step: Option<StudentStep<B>> = match workload {
            Workload::Teacher => None,
            Workload::Kd | Workload::Student => {
                let preset = if workload == Workload::Kd {
                    LossPreset::ClipKd
                } else {
                    LossPreset::Baseline
                };
                let teacher_dim = if workload == Workload::Kd {
                    teacher.embed_dim
                } else {
                    student.embed_dim
                };
                let model = DistillModel::new(
                    student.init::<B>(&device)?,
                    LossSetConfig::preset(preset, student.embed_dim, teacher_dim)
                        .init::<B>(&device)?,
                );
                let optimizer = distill_optimizer(&model, AdamWParams::clip_kd(&student));
                Some(StudentStep {
                    model: Some(model),
                    optimizer,
                })
            }
        };
        let images = Tensor::<B::InnerBackend, 4>::random(
            [n, 3, h, w],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let tokens = synthetic_tokens::<B::InnerBackend>(n, context, vocab, &device);
        B::sync(&device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
        let init_s = t0.elapsed().as_secs_f64();
        eprintln!("[{name}] models initialised in {init_s:.2} s");

        let mut run_once = || -> anyhow::Result<f64> {
            let t = Instant::now();
            match step.as_mut() {
                Some(s) => s.step(teacher_model.as_ref(), images.clone(), tokens.clone())?,
                None => {
                    let t = teacher_model
                        .as_ref()
                        .expect("teacher workload has a teacher");
                    let img = t.encode_image(images.clone())?;
                    let txt = t.encode_text(tokens.clone())?;
                    // Keep both outputs alive until the sync so no work is skipped.
                    let _ = (img.sum(), txt.sum());
                }
            }
            B::sync(&device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
            Ok(t.elapsed().as_secs_f64())
        };

        let first_step_s = run_once()?;
        eprintln!("[{name}] first step {first_step_s:.2} s");
        for i in 0..args.warmup {
            let s = run_once()?;
            eprintln!("[{name}] warm-up step {} {s:.3} s", i + 1);
        }
        let mut times = Vec::with_capacity(args.steps);
        for i in 0..args.steps {
            let s = run_once()?;
            eprintln!("[{name}] step {} {s:.4} s", i + 1);
            times.push(s);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        Ok(json!({
            "system": "clipkd",
            "burn": "0.21.0",
            "device": args.device.to_string(),
            "mode": name,
            "precision": args.precision.to_string(),
            "teacher": matches!(workload, Workload::Kd | Workload::Teacher).then_some(&args.teacher),
            "student": matches!(workload, Workload::Kd | Workload::Student).then_some(&args.student),
            "batch": n,
            "init_s": round(init_s, 3),
            "first_step_s": round(first_step_s, 3),
            "median_step_s": round(median, 5),
            "min_step_s": round(times[0], 5),
            "images_per_s": round(n as f64 / median, 1),
            "steps_timed": args.steps,
        }))
    }
}

/// The student side of a benchmarked step: model, loss module and optimizer.
struct StudentStep<B: AutodiffBackend> {
    model: Option<DistillModel<B>>,
    optimizer: clipkd_train::GroupedAdamW<B, DistillModel<B>>,
}

impl<B: AutodiffBackend> StudentStep<B> {
    fn step(
        &mut self,
        teacher: Option<&Clip<B::InnerBackend>>,
        images: Tensor<B::InnerBackend, 4>,
        tokens: Tensor<B::InnerBackend, 2, Int>,
    ) -> anyhow::Result<()> {
        let model = self.model.take().context("a previous step failed")?;
        let out = train_step(
            teacher,
            model,
            &mut self.optimizer,
            [MicroBatch::new(images, tokens)],
            &StepOptions::new(1e-4),
        )?;
        self.model = Some(out.model);
        Ok(())
    }
}

/// Random captions: `<start_of_text>`, random ids, `<end_of_text>` (the highest id, where the
/// text tower pools) at a random position, zero padding.
fn synthetic_tokens<B: Backend>(
    n: usize,
    context: usize,
    vocab: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut ids = vec![0i64; n * context];
    for row in ids.chunks_mut(context) {
        let len = rng.random_range(2..=context);
        row[0] = vocab as i64 - 2;
        for id in &mut row[1..len - 1] {
            *id = rng.random_range(1..vocab as i64 - 2);
        }
        row[len - 1] = vocab as i64 - 1;
    }
    Tensor::from_data(TensorData::new(ids, [n, context]), device)
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}
