//! The wgpu backend against the CPU (issue 10): initial weights, forward passes, gradients and
//! training steps of a ViT and a ModifiedResNet student, from the same seed.
//!
//! Runs with `--features wgpu` on any Vulkan device, Mesa's software driver lavapipe included
//! (`.ci/run` installs it):
//! `cargo test -p clipkd --features wgpu --test wgpu_backend`.
//! Without an adapter each test prints why and passes, unless `CLIPKD_REQUIRE_WGPU=1` (CI),
//! which turns a missing adapter into a failure.
//!
//! Tolerances: forward embeddings 1e-4 relative to their scale, gradients 1e-4 relative to each
//! tensor's largest entry, losses over three AdamW steps 1e-4 relative (ViT) and 1e-3 (RN: the
//! batch statistics of BatchNorm are summed in another order). What the ViT's differ by on
//! lavapipe is float summation order: 5e-7 (embeddings, gradients), 1e-7 (losses).
//!
//! The ModifiedResNet tests are ignored: at 224 pixels its embeddings differ from the CPU's on
//! lavapipe (issue 10, still open), and they take about 10 minutes there.
#![cfg(feature = "wgpu")]

use burn::backend::Autodiff;
use burn::backend::wgpu::WgpuDevice;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use clipkd::backend::{Cpu, Wgpu, wgpu_adapter};
use clipkd::losses::{LossPreset, LossSetConfig};
use clipkd::models::ClipConfig;
use clipkd::models::host_init::{build_on_host, copy_parameters};
use clipkd::train::{
    AdamWParams, DistillModel, MicroBatch, StepOptions, distill_optimizer, train_step,
};

type GpuAd = Autodiff<Wgpu>;
type CpuAd = Autodiff<Cpu>;

/// The wgpu device, or `None` (after saying why) where this machine has no adapter.
fn gpu() -> Option<WgpuDevice> {
    match wgpu_adapter::select(None) {
        Ok(device) => Some(device),
        Err(e) if std::env::var_os("CLIPKD_REQUIRE_WGPU").is_some() => {
            panic!("CLIPKD_REQUIRE_WGPU is set and there is no wgpu device: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

const VIT: &str = r#"{"embed_dim": 16,
  "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
  "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}"#;

/// A ModifiedResNet for images of `size` pixels: at 224 and batch 8 its stem's BatchNorm reduces
/// 8·112·112 = 100 352 values per channel, past the size where Burn's row reduction fails on
/// lavapipe.
fn rn(size: usize) -> String {
    format!(
        r#"{{"embed_dim": 16,
  "vision_cfg": {{"image_size": {size}, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16}},
  "text_cfg": {{"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}}}"#
    )
}

/// A small ViT teacher for images of `size` pixels (4 x 4 patches).
fn teacher(size: usize) -> ClipConfig {
    config(&format!(
        r#"{{"embed_dim": 24,
  "vision_cfg": {{"image_size": {size}, "layers": 1, "width": 48, "head_width": 16, "patch_size": {}}},
  "text_cfg": {{"context_length": 8, "vocab_size": 64, "width": 48, "heads": 3, "layers": 1}}}}"#,
        size / 4
    ))
}

fn config(json: &str) -> ClipConfig {
    ClipConfig::from_open_clip_json_str(json).unwrap()
}

/// Every float parameter (and running statistic), in visiting order, as f32 values.
fn parameters<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<f32>> {
    struct Values(Vec<Vec<f32>>);
    impl<B: Backend> ModuleVisitor<B> for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0
                .push(param.val().into_data().convert::<f32>().to_vec().unwrap());
        }
    }
    let mut values = Values(Vec::new());
    module.visit(&mut values);
    values.0
}

/// The gradient of every trainable parameter, in visiting order.
fn gradients<B: AutodiffBackend, M: Module<B>>(module: &M, grads: &B::Gradients) -> Vec<Vec<f32>> {
    struct Grads<'a, B: AutodiffBackend>(&'a B::Gradients, Vec<Vec<f32>>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = param.val().grad(self.0) {
                self.1
                    .push(g.into_data().convert::<f32>().to_vec().unwrap());
            }
        }
    }
    let mut out = Grads::<B>(grads, Vec::new());
    module.visit(&mut out);
    out.1
}

/// The largest difference between two lists of tensors, relative to each tensor's largest
/// magnitude, with the index of the worst tensor.
fn worst_relative(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "tensor counts");
    let mut worst = (0.0f32, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.len(), y.len(), "tensor {i} sizes");
        let scale = x.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        let diff = x
            .iter()
            .zip(y)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        if diff / scale > worst.0 {
            worst = (diff / scale, i);
        }
    }
    worst
}

/// Seeded pixels and distinct captions (token i+1 then end-of-text), the same on both backends.
fn batch_data(n: usize, size: usize, seed: u64) -> (TensorData, TensorData) {
    let pixels = build_on_host(seed, |d| {
        Ok::<_, ()>(
            Tensor::<Cpu, 4>::random([n, 3, size, size], Distribution::Normal(0.0, 1.0), d)
                .into_data(),
        )
    })
    .unwrap();
    let mut ids = vec![0i64; n * 8];
    for (i, row) in ids.chunks_mut(8).enumerate() {
        row[0] = 62;
        row[1] = 1 + i as i64;
        row[2] = 63;
    }
    (pixels, TensorData::new(ids, [n, 8]))
}

fn micro_batch<B: Backend>(data: &(TensorData, TensorData), device: &B::Device) -> MicroBatch<B> {
    MicroBatch {
        images: Tensor::from_data(data.0.clone(), device),
        tokens: Tensor::<B, 2, Int>::from_data(data.1.clone(), device),
    }
}

/// Burn 0.21's row reduction on wgpu, kept as the minimal repro of failure 1 of issue 10:
/// `sum_dim` over rows of 65 535 elements or more returns wrong sums on Mesa's lavapipe (the
/// only candidate its autotune can run there is the `unit` routine: plane and cube routines
/// need subgroup operations, which CubeCL disables for CPU adapters). clipkd does not depend on
/// it (BatchNorm reduces short rows, `clipkd-models`' batch_norm.rs). Ignored because it fails
/// on lavapipe; run it with `--ignored` to see whether a new Burn or driver fixes it.
#[test]
#[ignore = "fails on lavapipe with Burn 0.21 (issue 10, failure 1)"]
fn row_reductions_of_65535_elements_or_more() {
    let Some(device) = gpu() else { return };
    for (rows, f) in [
        (8usize, 65_535usize),
        (8, 100_352),
        (4, 1 << 17),
        (1, 1 << 20),
    ] {
        let data: Vec<f32> = (0..rows * f).map(|i| ((i / f) % 7 + 1) as f32).collect();
        let x = Tensor::<Wgpu, 2>::from_data(TensorData::new(data, [rows, f]), &device);
        let sums: Vec<f32> = x.sum_dim(1).into_data().to_vec().unwrap();
        let expected: Vec<f32> = (0..rows).map(|r| (f * (r % 7 + 1)) as f32).collect();
        assert_eq!(sums, expected, "[{rows}, {f}].sum_dim(1)");
    }
}

#[test]
fn one_seed_gives_the_same_initial_weights_on_the_cpu_and_wgpu() {
    let Some(device) = gpu() else { return };
    for json in [VIT.to_string(), rn(224)] {
        let cfg = config(&json);
        let cpu = parameters(&cfg.init_seeded::<Cpu>(11, &Default::default()).unwrap());
        let gpu = parameters(&cfg.init_seeded::<Wgpu>(11, &device).unwrap());
        assert_eq!(cpu.len(), gpu.len(), "parameter counts");
        let differing: Vec<usize> = (0..cpu.len()).filter(|&i| cpu[i] != gpu[i]).collect();
        assert!(
            differing.is_empty(),
            "{} of {} initial tensors differ between the CPU and wgpu (indices {differing:?})",
            differing.len(),
            cpu.len()
        );
    }
}

/// Image and text embeddings of a model initialised from seed 5.
fn embed<B: Backend>(
    cfg: &ClipConfig,
    data: &(TensorData, TensorData),
    device: &B::Device,
) -> Vec<Vec<f32>> {
    let model = cfg.init_seeded::<B>(5, device).unwrap();
    let batch = micro_batch::<B>(data, device);
    let image = model.encode_image(batch.images).unwrap();
    let text = model.encode_text(batch.tokens).unwrap();
    [image, text]
        .into_iter()
        .map(|t| t.into_data().convert::<f32>().to_vec().unwrap())
        .collect()
}

/// Image and text embeddings in inference (the teacher's path) and on the autodiff backend
/// (the student's path; for the RN, BatchNorm with batch statistics).
fn check_embeddings(json: &str, size: usize, device: &WgpuDevice) {
    let cfg = config(json);
    let data = batch_data(8, size, 3);
    let cpu = Default::default();
    for (mode, on_cpu, on_gpu) in [
        (
            "inference",
            embed::<Cpu>(&cfg, &data, &cpu),
            embed::<Wgpu>(&cfg, &data, device),
        ),
        (
            "training",
            embed::<CpuAd>(&cfg, &data, &cpu),
            embed::<GpuAd>(&cfg, &data, device),
        ),
    ] {
        let (worst, which) = worst_relative(&on_cpu, &on_gpu);
        println!("{size}px {mode}: worst relative difference {worst:.2e} (output {which})");
        assert!(
            worst < 1e-4,
            "{size}px {mode}: output {which} differs by {worst:.2e}"
        );
    }
}

#[test]
fn vit_embeddings_match_the_cpu() {
    let Some(device) = gpu() else { return };
    check_embeddings(VIT, 32, &device);
}

/// Fails on lavapipe: the ModifiedResNet's embeddings differ from the CPU's by 2e-2 at 224
/// pixels even in inference (no batch statistics), so a kernel other than the row reduction is
/// wrong there at this size; see issue 10. Takes about 10 minutes on lavapipe.
#[test]
#[ignore = "fails on lavapipe (issue 10): ModifiedResNet at 224 px differs from the CPU"]
fn modified_resnet_embeddings_match_the_cpu() {
    let Some(device) = gpu() else { return };
    for size in [64, 224] {
        check_embeddings(&rn(size), size, &device);
    }
}

/// The sum of the squared embeddings: a loss whose gradient reaches every parameter.
fn square_loss<B: Backend>(model: &clipkd::models::Clip<B>, batch: MicroBatch<B>) -> Tensor<B, 1> {
    let image = model.encode_image(batch.images).unwrap();
    let text = model.encode_text(batch.tokens).unwrap();
    (image.clone() * image).sum() + (text.clone() * text).sum()
}

/// Gradients of every student parameter after one backward pass.
fn check_gradients(json: &str, size: usize, device: &WgpuDevice) {
    let cfg = config(json);
    let data = batch_data(8, size, 4);
    let cpu_dev = Default::default();
    let c = cfg.init_seeded::<CpuAd>(6, &cpu_dev).unwrap();
    let g = cfg.init_seeded::<GpuAd>(6, device).unwrap();
    let gc = gradients(
        &c,
        &square_loss(&c, micro_batch(&data, &cpu_dev)).backward(),
    );
    let gg = gradients(&g, &square_loss(&g, micro_batch(&data, device)).backward());
    assert!(gc.len() > 10, "{} gradients", gc.len());
    let (worst, which) = worst_relative(&gc, &gg);
    println!(
        "{size}px: worst gradient difference {worst:.2e} (tensor {which} of {})",
        gc.len()
    );
    assert!(
        worst < 1e-4,
        "{size}px: gradient {which} differs by {worst:.2e}"
    );
}

/// The exact GELU gradient: with Burn's default `gelu_backward` (the tanh approximation's
/// derivative) the ViT's gradients differed from the CPU's by up to 7.5e-4; now about 6e-7.
#[test]
fn vit_gradients_match_the_cpu() {
    let Some(device) = gpu() else { return };
    check_gradients(VIT, 32, &device);
}

#[test]
#[ignore = "fails on lavapipe (issue 10): ModifiedResNet at 224 px differs from the CPU"]
fn modified_resnet_gradients_match_the_cpu() {
    let Some(device) = gpu() else { return };
    for size in [64, 224] {
        check_gradients(&rn(size), size, &device);
    }
}

/// Three CLIP-KD steps (task + CRD + ICL + FD, a ViT teacher) of a student on both backends
/// from the same weights and data: the same losses, and finite gradient norms.
fn check_training(json: &str, size: usize, tolerance: f32, device: &WgpuDevice) {
    let cfg = config(json);
    let teacher_cfg = teacher(size);
    let cpu_dev = Default::default();
    let losses = LossSetConfig::preset(LossPreset::ClipKd, 16, 24);
    let host_losses = build_on_host(9, |d| losses.init::<Cpu>(d)).unwrap();
    let on_gpu = run_steps::<GpuAd>(&cfg, &teacher_cfg, &losses, &host_losses, size, device);
    let on_cpu = run_steps::<CpuAd>(&cfg, &teacher_cfg, &losses, &host_losses, size, &cpu_dev);
    println!("{size}px: losses CPU {on_cpu:?}, wgpu {on_gpu:?}");
    for (step, (c, g)) in on_cpu.iter().zip(&on_gpu).enumerate() {
        assert!(
            ((c - g) / c).abs() < tolerance,
            "{size}px step {step}: loss {g} on wgpu, {c} on the CPU"
        );
    }
}

#[test]
fn vit_training_steps_match_the_cpu() {
    let Some(device) = gpu() else { return };
    check_training(VIT, 32, 1e-4, &device);
}

#[test]
#[ignore = "fails on lavapipe (issue 10): ModifiedResNet at 224 px differs from the CPU"]
fn modified_resnet_training_steps_match_the_cpu() {
    let Some(device) = gpu() else { return };
    check_training(&rn(224), 224, 1e-3, &device);
}

fn run_steps<B: AutodiffBackend>(
    cfg: &ClipConfig,
    teacher_cfg: &ClipConfig,
    losses: &LossSetConfig,
    host_losses: &clipkd::losses::LossSet<Cpu>,
    size: usize,
    device: &B::Device,
) -> Vec<f32> {
    let teacher = teacher_cfg
        .init_seeded::<B::InnerBackend>(8, device)
        .unwrap();
    let student = cfg.init_seeded::<B>(7, device).unwrap();
    // Under build_on_host's lock: on the CPU the target's own draws share its generator.
    let loss_module = build_on_host(0, |_| {
        copy_parameters(host_losses, losses.init::<B>(device).unwrap())
    })
    .unwrap();
    let mut model = DistillModel::new(student, loss_module);
    let mut optimizer = distill_optimizer(&model, AdamWParams::vit());
    let mut out = Vec::new();
    for step in 0..3 {
        let data = batch_data(8, size, 20 + step);
        let batch = micro_batch::<B::InnerBackend>(&data, device);
        let options = StepOptions {
            compute_grad_norm: true,
            ..StepOptions::new(1e-3)
        };
        let step = train_step(Some(&teacher), model, &mut optimizer, [batch], &options).unwrap();
        let norm: f32 = step.grad_norm.unwrap().into_scalar().elem();
        assert!(norm.is_finite() && norm < 1e6, "gradient norm {norm}");
        out.push(step.terms.total().unwrap().into_scalar().elem());
        model = step.model;
    }
    out
}

/// With no Vulkan driver, `--device wgpu` fails with an error naming the device and the fix
/// (exit 1), not CubeCL's panic (exit 101). Needs no GPU: the Vulkan loader is pointed at a
/// driver list that does not exist.
#[test]
fn no_adapter_is_a_clear_error_not_a_panic() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clipkd"))
        .args([
            "bench", "--device", "wgpu", "--batch", "1", "--steps", "1", "--warmup", "0",
        ])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("device `wgpu`: wgpu found no Vulkan adapter")
            && stderr.contains("mesa-vulkan-drivers"),
        "{stderr}"
    );
}
