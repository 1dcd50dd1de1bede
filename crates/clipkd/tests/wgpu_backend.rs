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
//! Ignored (run with `--ignored`): Burn's own faults on lavapipe kept as repros and diagnostics,
//! the ModifiedResNet checks that still fail there (its Bottlenecks' `bn3` path once the gammas
//! are not 0, and one gamma gradient; issue 10) and its training steps (about ten minutes).
#![cfg(feature = "wgpu")]

use burn::backend::Autodiff;
use burn::backend::wgpu::WgpuDevice;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use clipkd::backend::{Cpu, Wgpu, wgpu_adapter};
use clipkd::losses::{LossPreset, LossSetConfig};
use clipkd::models::ClipConfig;
use clipkd::models::host_init::{build_on_host, copy_parameters, with_host_seed};
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
/// magnitude (at least 1e-4 of the largest over all tensors, so that a gradient that is zero in
/// exact arithmetic, such as an attention key bias's, compares float noise to that scale), with
/// the index of the worst tensor.
fn worst_relative(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "tensor counts");
    let largest = |x: &[f32]| x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let floor = a.iter().map(|x| largest(x)).fold(1e-30f32, f32::max) * 1e-4;
    let mut worst = (0.0f32, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.len(), y.len(), "tensor {i} sizes");
        let scale = largest(x).max(floor);
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
    let pixels = with_host_seed(seed, |d| {
        Tensor::<Cpu, 4>::random([n, 3, size, size], Distribution::Normal(0.0, 1.0), d).into_data()
    });
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

/// At 224 pixels and batch 8, where Burn's reduction (BatchNorm's statistics over 100 352
/// values per stem channel) and its 1x1 `conv2d` are wrong on lavapipe: before clipkd's
/// workarounds the embeddings differed from the CPU's by 2.2e-2; now 3.1e-7 (inference) and
/// 1.1e-6 (batch statistics). With open_clip's initialisation (every `bn3` gamma 0) this does
/// not see the Bottlenecks' third convolution: see
/// `modified_resnet_with_open_bottlenecks_matches_the_cpu`, which still fails.
#[test]
fn modified_resnet_embeddings_match_the_cpu() {
    let Some(device) = gpu() else { return };
    check_embeddings(&rn(224), 224, &device);
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
    for i in 0..gc.len() {
        let (d, _) = worst_relative(&gc[i..=i], &gg[i..=i]);
        if d > 1e-4 {
            println!(
                "{size}px: gradient {i} ({} values) differs by {d:.2e}",
                gc[i].len()
            );
        }
    }
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

/// Fails on lavapipe at 224 pixels for one tensor only: the gradient of the first stage's first
/// `bn3.weight` (BatchNorm gamma, 32 values) differs by 1.4 relative; every other gradient is
/// within 4e-6, and at 64 pixels all are (issue 10, not found yet: the reductions autodiff uses
/// for it are right alone, see `axis_reductions_against_the_cpu`). About 4 minutes.
#[test]
#[ignore = "fails on lavapipe (issue 10): one BatchNorm gamma gradient at 224 px"]
fn modified_resnet_gradients_match_the_cpu() {
    let Some(device) = gpu() else { return };
    for size in [224, 64] {
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

/// Passes on lavapipe (losses within 1.2e-5 of the CPU's over three steps) but takes about ten
/// minutes there, so CI runs the ViT's steps and the ResNet's embeddings instead.
#[test]
#[ignore = "about 10 minutes on lavapipe: run with --ignored"]
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
    let loss_module = copy_parameters(host_losses, losses.init::<B>(device).unwrap()).unwrap();
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

/// The ModifiedResNet's inference forward stage by stage on the CPU and wgpu, printing the
/// worst relative difference after each: where the 224-pixel mismatch on lavapipe starts.
#[test]
#[ignore = "diagnostic for issue 10: prints where the ModifiedResNet leaves the CPU on wgpu"]
fn modified_resnet_stages_against_the_cpu() {
    use burn::tensor::activation::relu;
    use burn::tensor::module::avg_pool2d;
    use clipkd::models::{ModifiedResNet, VisionTower};
    let Some(device) = gpu() else { return };
    fn stages<B: Backend>(tower: &ModifiedResNet<B>, x: Tensor<B, 4>) -> Vec<(String, Vec<f32>)> {
        let flat = |t: &Tensor<B, 4>| t.clone().into_data().convert::<f32>().to_vec().unwrap();
        let mut out = Vec::new();
        let x = tower.conv1.forward(x);
        out.push(("conv1".to_string(), flat(&x)));
        let x = relu(tower.bn1.forward(x));
        out.push(("bn1+relu".to_string(), flat(&x)));
        let x = tower.conv2.forward(x);
        out.push(("conv2".to_string(), flat(&x)));
        let x = relu(tower.bn2.forward(x));
        let x = tower.conv3.forward(x);
        out.push(("conv3".to_string(), flat(&x)));
        let x = relu(tower.bn3.forward(x));
        let mut x = avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false);
        out.push(("avgpool".to_string(), flat(&x)));
        for (i, block) in tower
            .layer1
            .iter()
            .chain(&tower.layer2)
            .chain(&tower.layer3)
            .chain(&tower.layer4)
            .enumerate()
        {
            if i == 0 {
                let y = tower.layer1[0].conv1.forward(x.clone());
                out.push(("block 0 conv1 (1x1)".to_string(), flat(&y)));
                let y = relu(block.bn1.forward(y));
                let y = block.conv2.forward(y);
                out.push(("block 0 conv2 (3x3)".to_string(), flat(&y)));
                let y = block.conv3.forward(relu(block.bn2.forward(y)));
                out.push(("block 0 conv3 (1x1)".to_string(), flat(&y)));
                let y = block.bn3.forward(y);
                out.push(("block 0 bn3".to_string(), flat(&y)));
                if let Some(d) = &block.downsample {
                    let [n, c, h, w] = x.dims();
                    let weight = d.conv.weight.val();
                    let c_out = weight.dims()[0];
                    let by_matmul = weight
                        .reshape([1, c_out, c])
                        .matmul(x.clone().reshape([n, c, h * w]))
                        .reshape([n, c_out, h, w]);
                    out.push((
                        "block 0 downsample as a matmul".to_string(),
                        flat(&by_matmul),
                    ));
                    let z = d.conv.forward(x.clone());
                    out.push(("block 0 downsample conv (1x1)".to_string(), flat(&z)));
                    let z = d.bn.forward(z);
                    out.push(("block 0 downsample bn".to_string(), flat(&z)));
                    let sum = y + z;
                    out.push(("block 0 sum".to_string(), flat(&sum)));
                }
            }
            x = block.forward(x);
            out.push((format!("block {i}"), flat(&x)));
        }
        let e = tower.attnpool.forward(x);
        out.push((
            "attnpool".to_string(),
            e.into_data().convert::<f32>().to_vec().unwrap(),
        ));
        out
    }
    let cfg = config(&rn(224));
    let data = batch_data(8, 224, 3);
    fn tower<B: Backend>(model: clipkd::models::Clip<B>) -> ModifiedResNet<B> {
        match model.visual {
            VisionTower::ModifiedResNet(r) => r,
            VisionTower::Vit(_) => unreachable!("a ModifiedResNet config"),
        }
    }
    let cpu_dev = Default::default();
    let c = tower(cfg.init_seeded::<Cpu>(5, &cpu_dev).unwrap());
    let g = tower(cfg.init_seeded::<Wgpu>(5, &device).unwrap());
    let sc = stages(&c, Tensor::from_data(data.0.clone(), &cpu_dev));
    let sg = stages(&g, Tensor::from_data(data.0.clone(), &device));
    for ((name, a), (_, b)) in sc.iter().zip(&sg) {
        let (worst, _) = worst_relative(std::slice::from_ref(a), std::slice::from_ref(b));
        println!(
            "{name}: {} values, worst relative difference {worst:.2e}",
            a.len()
        );
    }
}

/// Burn 0.21's reductions of a `[8, 32, 56, 56]` tensor along each axis on wgpu against the
/// CPU: the sums autodiff uses to reduce a broadcast per-channel factor's gradient (BatchNorm's
/// gamma in a ModifiedResNet's first stage at 224 pixels).
#[test]
#[ignore = "diagnostic for issue 10: prints which axis reductions are wrong on wgpu"]
fn axis_reductions_against_the_cpu() {
    let Some(device) = gpu() else { return };
    let shape = [8, 32, 56, 56];
    let full: Vec<f32> = (0..8 * 32 * 56 * 56u64)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let cpu =
        Tensor::<Cpu, 4>::from_data(TensorData::new(full.clone(), shape), &Default::default());
    let gpu = Tensor::<Wgpu, 4>::from_data(TensorData::new(full, shape), &device);
    fn other<B: Backend>(t: &Tensor<B, 4>) -> Tensor<B, 4> {
        t.clone().flip([3]).add_scalar(-0.5)
    }
    fn chain<B: Backend>(t: &Tensor<B, 4>) -> Vec<f32> {
        let y = (t.clone() * other(t)).sum_dim(0).sum_dim(2).sum_dim(3);
        y.into_data().to_vec().unwrap()
    }
    fn flat<B: Backend>(t: &Tensor<B, 4>) -> Vec<f32> {
        let y = (t.clone() * other(t))
            .reshape([8, 32, 3136])
            .sum_dim(0)
            .sum_dim(2);
        y.into_data().to_vec().unwrap()
    }
    let (worst, _) = worst_relative(&[chain(&cpu)], &[chain(&gpu)]);
    println!("(x * y).sum_dim(0).sum_dim(2).sum_dim(3): worst relative difference {worst:.2e}");
    let (worst, _) = worst_relative(&[flat(&cpu)], &[flat(&gpu)]);
    println!(
        "(x * y) as [8, 32, 3136], sum_dim(0).sum_dim(2): worst relative difference {worst:.2e}"
    );
    for dim in 0..4 {
        let a: Vec<f32> = cpu.clone().sum_dim(dim).into_data().to_vec().unwrap();
        let b: Vec<f32> = gpu.clone().sum_dim(dim).into_data().to_vec().unwrap();
        let (worst, _) = worst_relative(std::slice::from_ref(&a), &[b]);
        println!(
            "sum_dim({dim}) of {shape:?}: {} outputs, worst relative difference {worst:.2e}",
            a.len()
        );
    }
}

/// A ModifiedResNet's embeddings in training mode (batch statistics) with every Bottleneck's
/// `bn3` gamma set to 1: at initialisation those gammas are 0, which hides the third
/// convolution and its BatchNorm from `modified_resnet_embeddings_match_the_cpu`. Fails on
/// lavapipe (issue 10, open): 2.5e-3 in inference, 0.88 with batch statistics, so the
/// Bottleneck's `bn3` path (1x1 convolution as a matmul, then batch statistics) is still wrong
/// there, while the stem's and `bn1`/`bn2`'s batch statistics are right.
#[test]
#[ignore = "fails on lavapipe (issue 10): the Bottleneck's bn3 path once its gamma is not 0"]
fn modified_resnet_with_open_bottlenecks_matches_the_cpu() {
    use clipkd::models::VisionTower;
    let Some(device) = gpu() else { return };
    fn opened<B: Backend>(mut model: clipkd::models::Clip<B>) -> clipkd::models::Clip<B> {
        if let VisionTower::ModifiedResNet(t) = &mut model.visual {
            for block in t
                .layer1
                .iter_mut()
                .chain(&mut t.layer2)
                .chain(&mut t.layer3)
                .chain(&mut t.layer4)
            {
                let c = block.bn3.gamma.dims()[0];
                let device = block.bn3.gamma.device();
                block.bn3.gamma = burn::module::Param::from_tensor(Tensor::ones([c], &device));
            }
        }
        model
    }
    let cfg = config(&rn(224));
    let data = batch_data(8, 224, 4);
    let cpu = Default::default();
    let run = |model_cpu, model_gpu| {
        let c: clipkd::models::Clip<CpuAd> = opened(model_cpu);
        let g: clipkd::models::Clip<GpuAd> = opened(model_gpu);
        let ec = c
            .encode_image(micro_batch::<CpuAd>(&data, &cpu).images)
            .unwrap();
        let eg = g
            .encode_image(micro_batch::<GpuAd>(&data, &device).images)
            .unwrap();
        let ec: Vec<f32> = ec.into_data().to_vec().unwrap();
        let eg: Vec<f32> = eg.into_data().to_vec().unwrap();
        worst_relative(&[ec], &[eg]).0
    };
    let c: clipkd::models::Clip<Cpu> = opened(cfg.init_seeded::<Cpu>(6, &cpu).unwrap());
    let g: clipkd::models::Clip<Wgpu> = opened(cfg.init_seeded::<Wgpu>(6, &device).unwrap());
    let ec: Vec<f32> = c
        .encode_image(micro_batch::<Cpu>(&data, &cpu).images)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let eg: Vec<f32> = g
        .encode_image(micro_batch::<Wgpu>(&data, &device).images)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let inference = worst_relative(&[ec], &[eg]).0;
    println!("224px inference, bn3 gammas 1: worst relative difference {inference:.2e}");
    let worst = run(
        cfg.init_seeded::<CpuAd>(6, &cpu).unwrap(),
        cfg.init_seeded::<GpuAd>(6, &device).unwrap(),
    );
    println!("224px training mode, bn3 gammas 1: worst relative difference {worst:.2e}");
    assert!(
        inference < 1e-4 && worst < 1e-4,
        "embeddings differ by {inference:.2e} / {worst:.2e}"
    );
}
