//! The CUDA backend against the CPU (issue 10): the same checks as `wgpu_backend.rs` (initial
//! weights, forward passes, gradients and training steps of a ViT and a ModifiedResNet student,
//! from the same seed), on an NVIDIA GPU, f32, with a tolerance for TF32 (`TOLERANCE`).
//!
//! Needs an NVIDIA driver (CUDA and NVRTC are loaded at run time); builds anywhere with
//! `CUDARC_CUDA_VERSION=13000`:
//! `CUDARC_CUDA_VERSION=13000 cargo test -p clipkd --features cuda --test cuda_backend`
//! (`-- --include-ignored` adds the repros and slow checks). Without a GPU each test prints why
//! and passes, unless `CLIPKD_REQUIRE_CUDA=1`, which turns a missing GPU into a failure. CI has
//! no GPU: there it is compiled and linted, not run.
//!
//! The checks themselves are in `common/gpu_vs_cpu.rs`, shared with `wgpu_backend.rs`.
//!
//! Run once so far (NVIDIA H200, driver 580.159.04, 2026-12-01, `tools/gpu_check.sh`, 130 s
//! limit): NVRTC compiled and autotuned the matmul repro's kernels and the first Bottleneck's
//! steps in that time, no further. Those showed TF32 differences (up to 6.2e-4, see
//! `TOLERANCE`) and one wrong batched matmul shape (see the matmul repro); the rest of the
//! suite on CUDA is still to be run.
#![cfg(feature = "cuda")]

use burn::backend::cuda::CudaDevice;
use clipkd::backend::Cuda;

type Gpu = Cuda;
type GpuDevice = CudaDevice;
const GPU_NAME: &str = "cuda";
/// CubeCL 0.10 runs f32 matmuls and convolutions in TF32 on CUDA whenever autotune picks a
/// tensor-core kernel (`cubek-matmul`'s blueprint.rs; PyTorch's `allow_tf32 = True`): one
/// matmul or convolution differed from the CPU by up to 6.2e-4 on an H200 (unit roundoff of
/// TF32: 4.9e-4), so 2e-3, not wgpu's 1e-4. Not yet checked over the whole suite (see the top
/// of this file).
const TOLERANCE: f32 = 2e-3;

/// CUDA device 0, or `None` (after saying why) where CUDA cannot start: CubeCL panics when
/// there is no driver, so the first allocation is tried under `catch_unwind`.
fn gpu() -> Option<CudaDevice> {
    let device = CudaDevice::new(0);
    let probe = std::panic::catch_unwind(|| {
        burn::tensor::Tensor::<Cuda, 1>::zeros([1], &device).into_data();
    });
    match probe {
        Ok(()) => Some(device),
        Err(_) if std::env::var_os("CLIPKD_REQUIRE_CUDA").is_some() => {
            panic!("CLIPKD_REQUIRE_CUDA is set and CUDA device 0 could not start (see above)")
        }
        Err(_) => {
            eprintln!("skipped: CUDA device 0 could not start (no NVIDIA driver?)");
            None
        }
    }
}

include!("common/gpu_vs_cpu.rs");
