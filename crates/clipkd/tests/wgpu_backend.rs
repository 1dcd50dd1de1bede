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
//! A ModifiedResNet's Bottleneck `bn3` gammas are set to 1 here (open_clip starts them at 0,
//! which hides each Bottleneck's branch from a comparison).
//!
//! The checks themselves are in `common/gpu_vs_cpu.rs`, shared with `cuda_backend.rs`; this
//! file adds two of the `clipkd` command on wgpu (no adapter; the autotune cache).
//!
//! The 224-pixel ModifiedResNet gradients are compared with the exact ones (the CPU's in f64)
//! under an allowance computed in f64, not with the CPU's f32 ones: there the gradient jumps
//! at f32's precision (see `modified_resnet_gradients_at_224_pixels_match_the_exact_ones`).
//!
//! On a real GPU (NVIDIA H200 through its Vulkan driver, 2026-12-01, `tools/gpu_check.sh`)
//! every test passed except the matmul repro and the 224-pixel gradient check of then (against
//! the CPU's f32 gradients, which that check's comment explains); the check of now has not run
//! there yet.
//!
//! Ignored (run with `--ignored`): Burn's own faults kept as repros and diagnostics, and the
//! ModifiedResNet's slowest checks (224-pixel gradients, training steps).
#![cfg(feature = "wgpu")]

use burn::backend::wgpu::WgpuDevice;
use clipkd::backend::{Wgpu, wgpu_adapter};

type Gpu = Wgpu;
type GpuDevice = WgpuDevice;
const GPU_NAME: &str = "wgpu";
/// wgpu computes f32 exactly (no TF32): float summation order alone separates it from the CPU.
const TOLERANCE: f32 = 1e-4;

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

include!("common/gpu_vs_cpu.rs");

mod common;

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

/// Failure 5 of issue 10: wgpu compiles its kernels again in every process (CubeCL 0.10 keeps
/// no WGSL binaries), but clipkd keeps the autotune results under `CLIPKD_KERNEL_CACHE`, so a
/// second process tunes nothing. On lavapipe (this test's model) the first run took 18-31 s,
/// the second 1.0-19 s: the rest is compiling again the kernels autotune chose, and which it
/// chooses (by timing) changes from one cold run to the next.
#[test]
fn a_second_process_reuses_the_autotune_results_of_the_first() {
    if gpu().is_none() {
        return;
    }
    let temp = common::TempDir::new("kernel-cache");
    let dir = &temp.0;
    // A tiny ViT with seeded weights and one 16x16 image, made here (the package has no fixtures).
    let model = dir.join("model.json");
    std::fs::write(&model, VIT).unwrap();
    let weights = dir.join("weights.safetensors");
    let clip = config(VIT)
        .init_seeded::<Cpu>(3, &Default::default())
        .unwrap();
    clipkd::models::save_open_clip(&clip, &weights).unwrap();
    let image = dir.join("image.bmp");
    std::fs::write(&image, bmp_16x16()).unwrap();
    let cache = dir.join("cache");
    let embed = |run: usize| {
        let output = dir.join(format!("embeddings{run}.safetensors"));
        let log = dir.join(format!("cubecl{run}.log"));
        let start = std::time::Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clipkd"))
            .args(["embed", "--device", "wgpu", "--model"])
            .arg(&model)
            .arg("--weights")
            .arg(&weights)
            .arg("--image")
            .arg(&image)
            .arg("--output")
            .arg(&output)
            // No cubecl.toml above a fresh temporary folder: clipkd's settings apply.
            .current_dir(dir)
            .env("CLIPKD_KERNEL_CACHE", &cache)
            .env("CLIPKD_CUBECL_LOG", &log)
            .env_remove("CUBECL_DEBUG_LOG")
            .env_remove("CUBECL_AUTOTUNE_LEVEL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: {stderr}");
        assert!(stderr.contains(&cache.display().to_string()), "{stderr}");
        let bytes = std::fs::read(&output).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let embedding = file.tensor("image_embeds").unwrap().data().to_vec();
        let tuned = std::fs::read_to_string(&log)
            .unwrap()
            .matches("Fastest result")
            .count();
        let seconds = start.elapsed().as_secs_f32();
        println!("run {run}: {seconds:.1} s, {tuned} autotune results computed");
        (embedding, tuned)
    };
    let (first, tuned_first) = embed(1);
    let files = walk(&cache.join("autotune"));
    let (second, tuned_second) = embed(2);
    assert!(tuned_first > 0, "the first run tuned nothing");
    assert!(
        !files.is_empty(),
        "no autotune results under {}",
        cache.display()
    );
    assert_eq!(tuned_second, 0, "the second run tuned again");
    assert_eq!(first, second, "the two runs' embeddings");
}

/// A 16x16 24-bit BMP of a colour gradient.
fn bmp_16x16() -> Vec<u8> {
    let pixels: Vec<u8> = (0..16u32)
        .flat_map(|y| (0..16u32).flat_map(move |x| [x * 16 + y, y * 16, x * y]))
        .map(|v| (v % 256) as u8)
        .collect();
    let mut out = b"BM".to_vec();
    for v in [54 + pixels.len() as u32, 0, 54, 40, 16, 16] {
        out.extend(v.to_le_bytes());
    }
    out.extend(1u16.to_le_bytes()); // planes
    out.extend(24u16.to_le_bytes()); // bits per pixel
    for v in [0, pixels.len() as u32, 2835, 2835, 0, 0] {
        out.extend(v.to_le_bytes());
    }
    out.extend(pixels);
    out
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}
