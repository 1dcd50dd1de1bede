//! A persistent kernel and autotune cache for the GPU backends, so that warm-up (just-in-time
//! compilation and autotuning, minutes for a ViT-L step) is paid once per machine.
//!
//! CubeCL, under Burn's GPU backends, reads its settings from a `cubecl.toml` (or the
//! `[cubecl]` section of a `burn.toml`) in the working directory or a parent. If the user has
//! one, it wins. Otherwise clipkd sets, before the first kernel runs:
//! - autotune results (every GPU backend) and compiled kernels (CUDA only: CubeCL 0.10 caches
//!   compiled kernels for CUDA and for SPIR-V, never for the WGSL that the `wgpu` feature
//!   compiles, so a wgpu process compiles its kernels again at every start) under
//!   `$CLIPKD_KERNEL_CACHE` (default `$XDG_CACHE_HOME/clipkd/cubecl`, else
//!   `~/.cache/clipkd/cubecl`): copy that folder to another machine with the same GPU and
//!   driver to skip warm-up there too;
//! - with `CLIPKD_CUBECL_LOG=FILE`, one line per kernel compilation and every autotune result
//!   in FILE (to see where a first step's time goes);
//! - CubeCL's own environment overrides (`CUBECL_AUTOTUNE_LEVEL`, `CUBECL_DEBUG_LOG`, ...)
//!   still apply on top.

use std::path::PathBuf;

use cubecl_runtime::config::autotune::AutotuneLogLevel;
use cubecl_runtime::config::cache::CacheConfig;
use cubecl_runtime::config::compilation::CompilationLogLevel;
use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};

/// The files CubeCL reads its settings from (see `cubecl-common`'s `RuntimeConfig`).
const USER_CONFIG_FILES: [&str; 4] = ["cubecl.toml", "CubeCL.toml", "burn.toml", "Burn.toml"];

/// Where clipkd keeps compiled kernels and autotune results.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLIPKD_KERNEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("clipkd").join("cubecl")
}

/// Installs clipkd's CubeCL settings unless the user has a CubeCL config file. Returns the
/// cache folder in use (`None` when the user's file decides). Call before any GPU work.
pub fn configure() -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        if USER_CONFIG_FILES.iter().any(|f| dir.join(f).is_file()) {
            return None;
        }
        if !dir.pop() {
            break;
        }
    }
    let cache = cache_dir();
    let mut config = CubeClRuntimeConfig::default();
    config.autotune.cache = CacheConfig::File(cache.clone());
    config.compilation.cache = Some(CacheConfig::File(cache.clone()));
    if let Some(log) = std::env::var_os("CLIPKD_CUBECL_LOG") {
        let log = PathBuf::from(log);
        config.compilation.logger.level = CompilationLogLevel::Basic;
        config.compilation.logger.file = Some(log.clone());
        config.autotune.logger.level = AutotuneLogLevel::Full;
        config.autotune.logger.file = Some(log);
    }
    CubeClRuntimeConfig::set(config.override_from_env());
    Some(cache)
}
