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
//! The checks themselves are in `common/gpu_vs_cpu.rs`, shared with `cuda_backend.rs`.
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
