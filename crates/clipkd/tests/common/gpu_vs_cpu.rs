// The GPU-against-CPU checks shared by `wgpu_backend.rs` and `cuda_backend.rs` (issue 10),
// included (`include!`) by each with `Gpu` (the backend), `GpuDevice`, `GPU_NAME` and `gpu()`
// (the device, or `None` after saying why) and `TOLERANCE` (the relative tolerance of a
// forward, a gradient or a loss: 1e-4 for exact f32, more for TF32) defined there.
// Tolerances: see `wgpu_backend.rs` and `cuda_backend.rs`.

use burn::backend::Autodiff;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Distribution, ElementConversion, Int, Tensor, TensorData};
use clipkd::backend::Cpu;
use clipkd::losses::{LossPreset, LossSetConfig};
use clipkd::models::ClipConfig;
use clipkd::models::host_init::{build_on_host, copy_parameters, with_host_seed};
use clipkd::train::{
    AdamWParams, DistillModel, MicroBatch, StepOptions, distill_optimizer, train_step,
};

type GpuAd = Autodiff<Gpu>;
type CpuAd = Autodiff<Cpu>;

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

/// A seeded model with every Bottleneck's `bn3` gamma set to 1. open_clip initialises them to
/// 0, which makes each Bottleneck's residual branch output 0 and hides its convolutions and
/// BatchNorms (and their gradients) from a comparison; a trained model has them non-zero.
fn seeded<B: Backend>(cfg: &ClipConfig, seed: u64, device: &B::Device) -> clipkd::models::Clip<B> {
    use clipkd::models::VisionTower;
    let mut model = cfg.init_seeded::<B>(seed, device).unwrap();
    if let VisionTower::ModifiedResNet(t) = &mut model.visual {
        for block in t
            .layer1
            .iter_mut()
            .chain(&mut t.layer2)
            .chain(&mut t.layer3)
            .chain(&mut t.layer4)
        {
            let gamma = &block.bn3.gamma;
            let ones = Tensor::ones([gamma.dims()[0]], &gamma.device());
            block.bn3.gamma =
                Param::initialized(gamma.id, ones.set_require_grad(gamma.is_require_grad()));
        }
    }
    model
}

/// A ModifiedResNet config's image tower.
fn resnet_tower<B: Backend>(model: clipkd::models::Clip<B>) -> clipkd::models::ModifiedResNet<B> {
    match model.visual {
        clipkd::models::VisionTower::ModifiedResNet(r) => r,
        clipkd::models::VisionTower::Vit(_) | clipkd::models::VisionTower::Timm(_) => {
            unreachable!("a ModifiedResNet config")
        }
    }
}

/// The tower's Bottlenecks, stage after stage.
fn bottlenecks<B: Backend>(
    tower: &clipkd::models::ModifiedResNet<B>,
) -> Vec<&clipkd::models::resnet::Bottleneck<B>> {
    tower
        .layer1
        .iter()
        .chain(&tower.layer2)
        .chain(&tower.layer3)
        .chain(&tower.layer4)
        .collect()
}

/// The Bottleneck's anti-aliasing average pool (none at stride 1).
fn stride_pool<B: Backend>(x: Tensor<B, 4>, stride: usize) -> Tensor<B, 4> {
    use burn::tensor::module::avg_pool2d;
    if stride > 1 {
        avg_pool2d(x, [stride; 2], [stride; 2], [0, 0], true, false)
    } else {
        x
    }
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
    worst_of(&per_tensor_relative(a, b))
}

/// The largest of per-tensor differences, with its index.
fn worst_of(differences: &[f32]) -> (f32, usize) {
    differences
        .iter()
        .enumerate()
        .fold((0.0, 0), |w, (i, &d)| if d > w.0 { (d, i) } else { w })
}

/// `worst_relative`'s difference for each tensor (the same floor over all of them).
fn per_tensor_relative(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "tensor counts");
    let largest = |x: &[f32]| x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let floor = a.iter().map(|x| largest(x)).fold(1e-30f32, f32::max) * 1e-4;
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| {
            assert_eq!(x.len(), y.len(), "tensor {i} sizes");
            let diff = x
                .iter()
                .zip(y)
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            diff / largest(x).max(floor)
        })
        .collect()
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
    MicroBatch::new(
        Tensor::from_data(data.0.clone(), device),
        Tensor::<B, 2, Int>::from_data(data.1.clone(), device),
    )
}

/// Burn 0.21's row reduction on the GPU, kept as the minimal repro of failure 1 of issue 10:
/// `sum_dim` over rows of 65 535 elements or more returns wrong sums on Mesa's lavapipe (the
/// only candidate its autotune can run there is the `unit` routine: plane and cube routines
/// need subgroup operations, which CubeCL disables for CPU adapters). Right on a real GPU
/// (NVIDIA H200, driver 580.159.04, through its Vulkan driver; 2026-12-01), so the fault is
/// lavapipe's or CubeCL's `unit` path, not a GPU's. clipkd does not depend on it (BatchNorm
/// reduces short rows, `clipkd-models`' batch_norm.rs). Ignored because it fails on lavapipe;
/// run it with `--ignored` to see whether a new Burn or driver fixes it.
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
        let x = Tensor::<Gpu, 2>::from_data(TensorData::new(data, [rows, f]), &device);
        let sums: Vec<f32> = x.sum_dim(1).into_data().to_vec().unwrap();
        let expected: Vec<f32> = (0..rows).map(|r| (f * (r % 7 + 1)) as f32).collect();
        assert_eq!(sums, expected, "[{rows}, {f}].sum_dim(1)");
    }
}

#[test]
fn one_seed_gives_the_same_initial_weights_on_the_cpu_and_the_gpu() {
    let Some(device) = gpu() else { return };
    for json in [VIT.to_string(), rn(224)] {
        let cfg = config(&json);
        let cpu = parameters(&cfg.init_seeded::<Cpu>(11, &Default::default()).unwrap());
        let gpu = parameters(&cfg.init_seeded::<Gpu>(11, &device).unwrap());
        assert_eq!(cpu.len(), gpu.len(), "parameter counts");
        let differing: Vec<usize> = (0..cpu.len()).filter(|&i| cpu[i] != gpu[i]).collect();
        assert!(
            differing.is_empty(),
            "{} of {} initial tensors differ between the CPU and {GPU_NAME} (indices {differing:?})",
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
    let model = seeded::<B>(cfg, 5, device);
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
fn check_embeddings(json: &str, size: usize, device: &GpuDevice) {
    let cfg = config(json);
    let data = batch_data(8, size, 3);
    let cpu = Default::default();
    for (mode, on_cpu, on_gpu) in [
        (
            "inference",
            embed::<Cpu>(&cfg, &data, &cpu),
            embed::<Gpu>(&cfg, &data, device),
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
            worst < TOLERANCE,
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
/// values per stem channel), its 1x1 `conv2d` and its batched matmul are wrong on lavapipe:
/// before clipkd's workarounds the embeddings differed from the CPU's by 2.2e-2 (and by 0.88
/// with the Bottleneck branches open); now 3e-7 (inference) and 1.4e-6 (batch statistics).
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
fn check_gradients(json: &str, size: usize, device: &GpuDevice) {
    let cfg = config(json);
    let data = batch_data(8, size, 4);
    let on_cpu = student_gradients::<CpuAd>(&cfg, &data, &Default::default());
    let differences =
        per_tensor_relative(&on_cpu, &student_gradients::<GpuAd>(&cfg, &data, device));
    print_differences(&format!("{size}px"), &on_cpu, &differences, None);
    let (worst, which) = worst_of(&differences);
    assert!(
        worst < TOLERANCE,
        "{size}px: gradient {which} differs by {worst:.2e}"
    );
}

/// The seed of the model whose gradients `student_gradients` and `exact_gradients` compare.
const GRADIENT_MODEL_SEED: u64 = 6;

/// Every trainable parameter's gradient of `square_loss` for the model of
/// `GRADIENT_MODEL_SEED` (see `seeded`) and `data`.
fn student_gradients<B: AutodiffBackend>(
    cfg: &ClipConfig,
    data: &(TensorData, TensorData),
    device: &B::Device,
) -> Vec<Vec<f32>> {
    let model = seeded::<B>(cfg, GRADIENT_MODEL_SEED, device);
    loss_gradients(&model, micro_batch(data, device))
}

/// Every trainable parameter's gradient of `square_loss` for `model` and `batch`.
fn loss_gradients<B: AutodiffBackend>(
    model: &clipkd::models::Clip<B>,
    batch: MicroBatch<B>,
) -> Vec<Vec<f32>> {
    let grads = gradients(model, &square_loss(model, batch).backward());
    assert!(grads.len() > 10, "{} gradients", grads.len());
    grads
}

/// Casts every float parameter to f64 (Flex computes in the type of its tensors).
struct ToF64;

impl<B: AutodiffBackend> ModuleMapper<B> for ToF64 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| {
            let trained = t.is_require_grad();
            let t = Tensor::<B, D>::from_inner(t.inner().cast(DType::F64));
            if trained { t.require_grad() } else { t }
        })
    }
}

/// `student_gradients` computed on the CPU in f64 (the exact gradient, to f32's precision), for
/// the pixels plus `noise` times a seeded standard normal draw when `noise` is given.
fn exact_gradients(
    cfg: &ClipConfig,
    data: &(TensorData, TensorData),
    noise: Option<(u64, f64)>,
) -> Vec<Vec<f32>> {
    let device = Default::default();
    let model = seeded::<CpuAd>(cfg, GRADIENT_MODEL_SEED, &device).map(&mut ToF64);
    let mut pixels = Tensor::<Cpu, 4>::from_data(data.0.clone(), &device).cast(DType::F64);
    if let Some((seed, scale)) = noise {
        let draw = with_host_seed(seed, |d| {
            Tensor::<Cpu, 4>::random(data.0.shape.clone(), Distribution::Normal(0.0, 1.0), d)
        });
        pixels = pixels + draw.cast(DType::F64).mul_scalar(scale);
    }
    let batch = MicroBatch::new(
        Tensor::from_inner(pixels),
        Tensor::<CpuAd, 2, Int>::from_data(data.1.clone(), &device),
    );
    loss_gradients(&model, batch)
}

/// Prints each tensor whose difference is over `TOLERANCE` (with `allowed`, only those over
/// their allowance), and the worst.
fn print_differences(
    label: &str,
    reference: &[Vec<f32>],
    differences: &[f32],
    allowed: Option<&[f32]>,
) {
    let largest = |x: &[f32]| x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let overall = reference.iter().map(|x| largest(x)).fold(0.0f32, f32::max);
    for (i, &d) in differences.iter().enumerate() {
        let limit = allowed.map_or(TOLERANCE, |a| a[i]);
        if d > limit {
            println!(
                "{label}: gradient {i} ({} values, largest {:.2e}, {:.2e} of the largest of \
                 all) differs by {d:.2e}{}",
                reference[i].len(),
                largest(&reference[i]),
                largest(&reference[i]) / overall,
                allowed.map_or(String::new(), |_| format!(", allowed {limit:.2e}"))
            );
        }
    }
    let (worst, which) = worst_of(differences);
    println!(
        "{label}: worst gradient difference {worst:.2e} (tensor {which} of {})",
        reference.len()
    );
    if let Some(allowed) = allowed {
        let shares: Vec<f32> = differences
            .iter()
            .zip(allowed)
            .map(|(d, a)| d / a)
            .collect();
        let (share, which) = worst_of(&shares);
        let smallest = allowed.iter().copied().fold(f32::INFINITY, f32::min);
        let largest = allowed.iter().copied().fold(0.0, f32::max);
        println!(
            "{label}: at most {share:.2} of the allowance (tensor {which}); allowances \
             {smallest:.1e} to {largest:.1e}"
        );
    }
}

/// The exact GELU gradient: with Burn's default `gelu_backward` (the tanh approximation's
/// derivative) the ViT's gradients differed from the CPU's by up to 7.5e-4; now about 6e-7.
#[test]
fn vit_gradients_match_the_cpu() {
    let Some(device) = gpu() else { return };
    check_gradients(VIT, 32, &device);
}

/// Every gradient of a ModifiedResNet (Bottleneck `bn3` gammas at 1) at 112 pixels, batch 8:
/// its first stage at 28x28 has the shapes of the batched matmul Burn gets wrong on lavapipe
/// (see `conv1x1` in `clipkd-models`' resnet.rs): before the 2-D matmul the gradient of the
/// first `bn3` gamma differed by 1.4 relative there.
#[test]
fn modified_resnet_gradients_match_the_cpu() {
    let Some(device) = gpu() else { return };
    check_gradients(&rn(112), 112, &device);
}

/// The same at 224 pixels (where the stem's BatchNorm reduces 100 352 values per channel),
/// against the exact gradient: the CPU's in f64.
///
/// There the gradient is not a continuous function of the pixels at f32's precision, so it
/// cannot be held to `TOLERANCE`: the exact gradient moves by up to 1.3e-2 of a tensor's scale
/// for input noise of 1e-6 (a seeded draw), but by 1.6e-6 for noise of 1e-7 and 1.8e-7 for
/// 1e-8: it jumps. Of 8 data and model seeds tried, 7 jumped (6.6e-3 to 2.0e-2) at noise 1e-6
/// and all 8 at 1e-5. The likely cause is ReLU kinks: an activation near 0 that rounding moves
/// across it changes the gradient by one position's share, and the last stage has only 8·7·7 =
/// 392 positions per channel. So two f32 implementations may differ there by about 1e-2 however
/// precise each is: on lavapipe the CPU's f32 gradients were within 3.8e-4 of the exact ones and
/// wgpu's within 3.0e-3 (its long sums are less precise: a matmul with K = 100 352 within 9e-6
/// of f64, the CPU's within 6e-7); on an NVIDIA H200 through Vulkan wgpu was 1.86e-2 from that
/// machine's 16-thread CPU, more than a criterion based on the CPU's own move under noise
/// allowed (this check's criterion until 2026-12-02).
///
/// Each tensor's difference from the exact gradient is held to the larger of `TOLERANCE` and
/// 2x the largest move of the exact gradient under input noise (five seeded draws) of
/// `TOLERANCE / 100`: 1e-6 on wgpu, about the GPU's forward error (1.4e-6 on the embeddings);
/// 2e-5 on CUDA, for TF32 (not yet run there). The f32 gradient must be one that the exact
/// gradient of a pixel batch within rounding of this one could be. The allowance is computed in
/// f64, so it is the same on every machine, and the CPU's f32 gradients are held to it too (a
/// check of the criterion). On lavapipe: allowances 1e-4 to 1.2e-1, the CPU's f32 gradients at
/// most 0.02 of theirs, wgpu's 0.16; a gradient off by 2.5x its allowance fails. The H200's
/// logged differences (wgpu against its CPU, `docs/gpu-logs/2026-12-01-h200-wgpu-tests.log`)
/// are at most 0.51 of these allowances, several at 0.50: one jump of one noise draw, so one of
/// that machine's two gradients had crossed the same kink. Not in CI: a kink that none of the
/// draws crosses can still be crossed by a kernel that autotune picks another time.
#[test]
#[ignore = "about 1 minute on lavapipe; see the comment: run with --ignored"]
fn modified_resnet_gradients_at_224_pixels_match_the_exact_ones() {
    let Some(device) = gpu() else { return };
    let cfg = config(&rn(224));
    let data = batch_data(8, 224, 4);
    let exact = exact_gradients(&cfg, &data, None);
    let mut allowed = vec![TOLERANCE; exact.len()];
    let noise = f64::from(TOLERANCE) * 1e-2;
    for seed in 99..104 {
        let moved = per_tensor_relative(&exact, &exact_gradients(&cfg, &data, Some((seed, noise))));
        for (a, m) in allowed.iter_mut().zip(moved) {
            *a = a.max(2.0 * m);
        }
    }
    for (label, got) in [
        (
            "224px cpu f32".to_string(),
            student_gradients::<CpuAd>(&cfg, &data, &Default::default()),
        ),
        (
            format!("224px {GPU_NAME}"),
            student_gradients::<GpuAd>(&cfg, &data, &device),
        ),
    ] {
        let differences = per_tensor_relative(&exact, &got);
        print_differences(&label, &exact, &differences, Some(&allowed));
        for (i, (d, a)) in differences.iter().zip(&allowed).enumerate() {
            assert!(
                d <= a,
                "{label}: gradient {i} differs from the exact one by {d:.2e}, allowed {a:.2e}"
            );
        }
    }
}

/// Three CLIP-KD steps (task + CRD + ICL + FD, a ViT teacher) of a student on both backends
/// from the same weights and data: the same losses, and finite gradient norms.
fn check_training(json: &str, size: usize, tolerance: f32, device: &GpuDevice) {
    let cfg = config(json);
    let teacher_cfg = teacher(size);
    let cpu_dev = Default::default();
    let losses = LossSetConfig::preset(LossPreset::ClipKd, 16, 24);
    let host_losses = build_on_host(9, |d| losses.init::<Cpu>(d)).unwrap();
    let on_gpu = run_steps::<GpuAd>(&cfg, &teacher_cfg, &losses, &host_losses, size, device);
    let on_cpu = run_steps::<CpuAd>(&cfg, &teacher_cfg, &losses, &host_losses, size, &cpu_dev);
    println!("{size}px: losses CPU {on_cpu:?}, {GPU_NAME} {on_gpu:?}");
    for (step, (c, g)) in on_cpu.iter().zip(&on_gpu).enumerate() {
        assert!(
            ((c - g) / c).abs() < tolerance,
            "{size}px step {step}: loss {g} on {GPU_NAME}, {c} on the CPU"
        );
    }
}

#[test]
fn vit_training_steps_match_the_cpu() {
    let Some(device) = gpu() else { return };
    check_training(VIT, 32, TOLERANCE, &device);
}

/// A ModifiedResNet student (Bottleneck `bn3` gammas at 1) at 224 pixels: on lavapipe its
/// losses are within 3e-7 of the CPU's over three steps (410.2118, 276.0067, 202.50896 on the
/// CPU). About 5 minutes there, so CI runs the ViT's steps and the ResNet's embeddings and
/// 112-pixel gradients instead.
#[test]
#[ignore = "about 5 minutes on lavapipe: run with --ignored"]
fn modified_resnet_training_steps_match_the_cpu() {
    let Some(device) = gpu() else { return };
    check_training(&rn(224), 224, TOLERANCE.max(1e-3), &device);
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
    let student = seeded::<B>(cfg, 7, device);
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
        print_compiled_kernels::<B>(out.len(), device);
    }
    out
}

/// With `CUBECL_DEBUG_LOG=FILE`, prints how many kernels CubeCL has compiled so far (the
/// figures of docs/performance.md's first-step counts). A CPU backend compiles none.
fn print_compiled_kernels<B: Backend>(step: usize, device: &B::Device) {
    let Ok(log) = std::env::var("CUBECL_DEBUG_LOG") else {
        return;
    };
    if matches!(
        log.as_str(),
        "stdout" | "stderr" | "0" | "1" | "true" | "false"
    ) {
        return;
    }
    B::sync(device).unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let kernels = text.matches("[START_KERNEL_COMPILATION]").count();
    eprintln!(
        "after step {step} on {}: {kernels} kernels compiled",
        B::name(device)
    );
}

/// The ModifiedResNet's inference forward stage by stage on the CPU and the GPU with Burn's own
/// modules (`Conv2d` for the 1x1 convolutions, `BatchNorm`), printing the worst relative
/// difference after each: the repro of Burn's 1x1 `conv2d` fault (relative error 1.0 at the
/// first Bottleneck's `conv3` and downsample), kept for when Burn fixes it. Seen on lavapipe and
/// on an NVIDIA H200 through its Vulkan driver alike (2026-12-01): CubeCL's fault, not a driver's.
#[test]
#[ignore = "diagnostic for issue 10: prints where the ModifiedResNet leaves the CPU on the GPU"]
fn modified_resnet_stages_against_the_cpu() {
    use burn::tensor::activation::relu;
    use burn::tensor::module::avg_pool2d;
    use clipkd::models::ModifiedResNet;
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
        for (i, block) in bottlenecks(tower).into_iter().enumerate() {
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
    let cpu_dev = Default::default();
    let c = resnet_tower(cfg.init_seeded::<Cpu>(5, &cpu_dev).unwrap());
    let g = resnet_tower(cfg.init_seeded::<Gpu>(5, &device).unwrap());
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

/// Each Bottleneck's steps on the GPU against the CPU, every step fed the CPU's input to that step
/// (so errors do not carry over), with the `bn3` gammas at 1 and in inference: which operation
/// `modified_resnet_embeddings_match_the_cpu` failed on before `conv1x1`.
#[test]
#[ignore = "diagnostic for issue 10: prints which Bottleneck step leaves the CPU on the GPU"]
fn modified_resnet_block_steps_against_the_cpu() {
    use burn::tensor::activation::relu;
    use burn::tensor::module::avg_pool2d;
    use clipkd::models::ModifiedResNet;
    use clipkd::models::resnet::{Bottleneck, conv1x1};
    let Some(device) = gpu() else { return };
    let cpu = burn_flex::FlexDevice;
    let cfg = config(&rn(224));
    let c = resnet_tower(cfg.init_seeded::<Cpu>(6, &cpu).unwrap());
    let g = resnet_tower(cfg.init_seeded::<Gpu>(6, &device).unwrap());
    type Step<B> = fn(&Bottleneck<B>, Tensor<B, 4>) -> Tensor<B, 4>;
    fn steps<B: Backend>() -> Vec<(&'static str, Step<B>)> {
        vec![
            ("conv1 (1x1 matmul)", |b, x| conv1x1(&b.conv1, x)),
            ("bn1 + relu", |b, x| relu(b.bn1.forward(x))),
            ("conv2 (3x3)", |b, x| b.conv2.forward(x)),
            ("bn2 + relu", |b, x| relu(b.bn2.forward(x))),
            ("avg_pool (stride)", |b, x| stride_pool(x, b.stride)),
            ("conv3 (1x1 matmul)", |b, x| conv1x1(&b.conv3, x)),
            ("bn3 (gamma 1)", |b, x| {
                let c = x.dims()[1];
                let mut bn = b.bn3.clone();
                bn.gamma = burn::module::Param::from_tensor(Tensor::ones([c], &x.device()));
                bn.forward(x)
            }),
        ]
    }
    let flat = |d: TensorData| -> Vec<f32> { d.convert::<f32>().to_vec().unwrap() };
    let stem = |t: &ModifiedResNet<Cpu>, x| {
        let x = relu(t.bn1.forward(t.conv1.forward(x)));
        let x = relu(t.bn2.forward(t.conv2.forward(x)));
        let x = relu(t.bn3.forward(t.conv3.forward(x)));
        avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false)
    };
    let data = batch_data(8, 224, 4);
    let mut x = stem(&c, Tensor::from_data(data.0.clone(), &cpu));
    for (i, (bc, bg)) in bottlenecks(&c).into_iter().zip(bottlenecks(&g)).enumerate() {
        let block_input = x.clone();
        let mut y = x.clone();
        for ((name, sc), (_, sg)) in steps::<Cpu>().into_iter().zip(steps::<Gpu>()) {
            let input = y.clone().into_data();
            let out_c = sc(bc, y);
            let out_g = sg(bg, Tensor::from_data(input, &device));
            let (worst, _) = worst_relative(
                &[flat(out_c.clone().into_data())],
                &[flat(out_g.into_data())],
            );
            println!(
                "block {i} {name} {:?}: worst relative difference {worst:.2e}",
                out_c.dims()
            );
            y = out_c;
        }
        if let Some(d) = &bc.downsample {
            let dg = bg.downsample.as_ref().unwrap();
            let pooled = stride_pool(block_input.clone(), d.stride);
            let pg = stride_pool(
                Tensor::<Gpu, 4>::from_data(block_input.clone().into_data(), &device),
                dg.stride,
            );
            let (worst, _) =
                worst_relative(&[flat(pooled.clone().into_data())], &[flat(pg.into_data())]);
            println!("block {i} downsample pool: worst relative difference {worst:.2e}");
            let zc = d.bn.forward(conv1x1(&d.conv, pooled.clone()));
            let zg = dg.bn.forward(conv1x1(
                &dg.conv,
                Tensor::from_data(pooled.into_data(), &device),
            ));
            let (worst, _) = worst_relative(&[flat(zc.into_data())], &[flat(zg.into_data())]);
            println!("block {i} downsample conv + bn: worst relative difference {worst:.2e}");
        }
        x = bc.forward(block_input);
    }
}

/// Batched matmuls `[1 or N, M, K] x [N, K, L]` on the GPU against the CPU: the repro of
/// Burn 0.21's batched-matmul fault (why clipkd's 1x1 convolutions are one 2-D matmul, `conv1x1`
/// in `clipkd-models`' resnet.rs). Prints each shape's worst relative difference and fails when
/// one is over 1e-3 (TF32, which CUDA uses for f32 matmuls, stays under 7e-4 here). Measured on
/// 2026-12-01, relative error 1.0 (wrong) for:
/// - lavapipe and NVIDIA H200 Vulkan alike: `[1|8, 8, 8] x [8, 8, 3136]`, `[1, 16, 8] x [8, 8,
///   3136]`, `[1, 8, 8] x [8, 8, 784]`, `[1, 8, 8] x [2, 8, 3136]`;
/// - CUDA (H200): `[1, 8, 16] x [8, 16, 3136]`.
///
/// So the fault is CubeCL's (its autotune picks another faulty candidate per runtime), not a
/// driver's. Ignored until Burn fixes it.
#[test]
#[ignore = "fails with Burn 0.21 on lavapipe, NVIDIA Vulkan and CUDA (issue 10)"]
fn matmul_shapes_against_the_cpu() {
    let Some(device) = gpu() else { return };
    let cpu = burn_flex::FlexDevice;
    let values = |count: usize, salt: usize| -> Vec<f32> {
        (0..count)
            .map(|i| (((i * 7919 + salt * 104729) % 2003) as f32 / 1001.0) - 1.0)
            .collect()
    };
    let mut wrong = Vec::new();
    for (lhs_batch, n, m, k, l) in [
        (1, 8, 8, 8, 3136),
        (8, 8, 8, 8, 3136),
        (1, 8, 32, 8, 3136),
        (1, 8, 16, 8, 3136),
        (1, 8, 8, 16, 3136),
        (1, 8, 16, 16, 3136),
        (1, 8, 32, 32, 3136),
        (1, 8, 8, 8, 784),
        (1, 8, 8, 8, 196),
        (1, 8, 8, 8, 64),
        (1, 1, 8, 8, 3136),
        (1, 2, 8, 8, 3136),
        (1, 8, 4, 4, 3136),
        (1, 8, 64, 64, 196),
    ] {
        let a = TensorData::new(values(lhs_batch * m * k, 1), [lhs_batch, m, k]);
        let b = TensorData::new(values(n * k * l, 2), [n, k, l]);
        let on_cpu =
            Tensor::<Cpu, 3>::from_data(a.clone(), &cpu).matmul(Tensor::from_data(b.clone(), &cpu));
        let on_gpu = Tensor::<Gpu, 3>::from_data(a, &device).matmul(Tensor::from_data(b, &device));
        let (worst, _) = worst_relative(
            &[on_cpu.into_data().to_vec().unwrap()],
            &[on_gpu.into_data().to_vec().unwrap()],
        );
        println!(
            "[{lhs_batch}, {m}, {k}] x [{n}, {k}, {l}]: worst relative difference {worst:.2e}"
        );
        if worst > 1e-3 {
            wrong.push(format!("[{lhs_batch}, {m}, {k}] x [{n}, {k}, {l}]"));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong batched matmuls on {GPU_NAME}: {wrong:?}"
    );
}
