//! Choosing a backend at run time: `--device cpu|cuda[:N]|wgpu[:N]` and `--precision`.
//!
//! Burn picks the backend by type, so a command is written once as a [`BackendTask`], generic
//! over the autodiff backend, and [`dispatch`] instantiates it for the device the user named.
//! Only the backends compiled in (cargo features `flex`, `cuda`, `wgpu`) are offered.

use burn::tensor::backend::AutodiffBackend;

/// A device by name (`--device`, `run.device`): the trainer config's type.
pub use clipkd_train::config::DeviceSpec;

/// The floating-point types of the run: the trainer config's type, parsed from
/// `--precision f32|bf16|f16|pure_bf16|pure_f16`.
pub use clipkd_train::config::Precision;

/// A command written once for any autodiff backend.
pub trait BackendTask {
    /// What the command returns.
    type Output;

    /// Runs the command on backend `B` (its inner backend runs inference without autodiff).
    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<Self::Output>;

    /// Runs the command on several devices of backend `B` (data parallel). By default a
    /// command runs on one device and refuses more.
    fn run_on<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> anyhow::Result<Self::Output>
    where
        Self: Sized,
    {
        match <[B::Device; 1]>::try_from(devices) {
            Ok([device]) => self.run::<B>(device),
            Err(devices) => anyhow::bail!(
                "this command runs on one device; {} were given",
                devices.len()
            ),
        }
    }
}

/// Runs `task` on the backend and precision the user chose, or explains why it cannot.
///
/// The mixed precisions (`bf16`, `f16`) run on the f32 backend inside an autocast scope
/// ([`clipkd::models::autocast`]), so that every model forward of the task (training,
/// evaluation, embedding) computes its matrix products in half precision; the trainer also
/// reads `run.precision` for its own steps and for f16 loss scaling. The `pure_*` precisions
/// make every float tensor half precision: on CUDA a backend whose float type is bf16/f16, on
/// the CPU the f32 backend with its device's default float type set to bf16/f16 (Burn's
/// per-device dtype policy, [`burn::tensor::set_default_dtypes`]), which holds for the rest of
/// the process.
pub fn dispatch<T: BackendTask>(
    device: DeviceSpec,
    precision: Precision,
    task: T,
) -> anyhow::Result<T::Output> {
    dispatch_on(&[device], precision, task)
}

/// Like [`dispatch`], on several devices of one backend (`--devices`, data parallel): the
/// task's [`BackendTask::run_on`].
pub fn dispatch_on<T: BackendTask>(
    devices: &[DeviceSpec],
    precision: Precision,
    task: T,
) -> anyhow::Result<T::Output> {
    use clipkd::models::autocast::autocast;
    let Some(&device) = devices.first() else {
        anyhow::bail!("no device was given");
    };
    if let Some(other) = devices
        .iter()
        .find(|d| std::mem::discriminant(*d) != std::mem::discriminant(&device))
    {
        anyhow::bail!("`{device}` and `{other}` are devices of two backends: choose one");
    }
    let world = devices.len();
    match (device, precision) {
        #[cfg(feature = "flex")]
        (DeviceSpec::Cpu, Precision::F32 | Precision::Bf16 | Precision::F16) => {
            let _scope = autocast(precision.autocast());
            task.run_on::<burn::backend::Autodiff<burn_flex::Flex>>(vec![Default::default(); world])
        }
        #[cfg(feature = "flex")]
        (DeviceSpec::Cpu, Precision::PureBf16 | Precision::PureF16) => {
            type B = burn::backend::Autodiff<burn_flex::Flex>;
            let device = Default::default();
            cpu_half_precision_default::<B>(&device, precision)?;
            task.run_on::<B>(vec![device; world])
        }
        #[cfg(feature = "cuda")]
        (DeviceSpec::Cuda(_), precision) => {
            configure_gpu_runtime("kernel and autotune cache");
            use burn::backend::Cuda;
            use burn::backend::cuda::CudaDevice;
            use burn::tensor::{bf16, f16};
            let devices: Vec<CudaDevice> = devices
                .iter()
                .map(|d| match d {
                    DeviceSpec::Cuda(index) => CudaDevice::new(*index),
                    _ => unreachable!("one backend, checked above"),
                })
                .collect();
            match precision {
                Precision::F32 | Precision::Bf16 | Precision::F16 => {
                    let _scope = autocast(precision.autocast());
                    task.run_on::<burn::backend::Autodiff<Cuda<f32, i32>>>(devices)
                }
                Precision::PureBf16 => {
                    task.run_on::<burn::backend::Autodiff<Cuda<bf16, i32>>>(devices)
                }
                Precision::PureF16 => {
                    task.run_on::<burn::backend::Autodiff<Cuda<f16, i32>>>(devices)
                }
            }
        }
        #[cfg(feature = "wgpu")]
        (DeviceSpec::Wgpu(_), Precision::F32) => {
            configure_gpu_runtime(
                "autotune cache (wgpu compiles its WGSL kernels again in every process)",
            );
            let devices = devices
                .iter()
                .map(|d| match d {
                    DeviceSpec::Wgpu(index) => clipkd::backend::wgpu_adapter::select(*index),
                    _ => unreachable!("one backend, checked above"),
                })
                .collect::<Result<Vec<_>, _>>()?;
            task.run_on::<burn::backend::Autodiff<burn::backend::Wgpu<f32, i32>>>(devices)
        }
        (device, precision) => anyhow::bail!(
            "device `{device}` with precision `{precision}` is not available in this build \
             (compiled backends: {}); rebuild with the matching cargo feature \
             (`flex` for cpu, `cuda`, `wgpu`); wgpu runs f32 only",
            compiled_backends().join(", ")
        ),
    }
}

/// Makes `precision`'s half type (`pure_bf16`, `pure_f16`) the default float type of the CPU
/// device, so that every float tensor the task creates (weights, data, optimizer moments) is
/// half precision. Burn fixes a device's defaults at its first tensor, once per process: a
/// second task with the same precision finds them set; one with another precision is refused.
#[cfg(feature = "flex")]
fn cpu_half_precision_default<B: burn::tensor::backend::Backend>(
    device: &B::Device,
    precision: Precision,
) -> anyhow::Result<()> {
    use burn::tensor::{Element, FloatDType, get_device_settings, set_default_dtypes};
    let float = match precision {
        Precision::PureBf16 => FloatDType::BF16,
        Precision::PureF16 => FloatDType::F16,
        other => anyhow::bail!("precision `{other}` is not an all-half precision"),
    };
    // Reading the settings would fix them: the int type is the backend's own default.
    let int = <B::IntElem as Element>::dtype();
    if set_default_dtypes::<B>(device, float, int).is_err() {
        let current = get_device_settings::<B>(device).float_dtype;
        anyhow::ensure!(
            current == float,
            "precision `{precision}`: the CPU device already creates {current:?} tensors in \
             this process (Burn sets a device's default float type once, before its first \
             tensor); run `{precision}` in a process of its own"
        );
    }
    Ok(())
}

/// Sets up the GPU runtime's caches once per process (see [`super::kernel_cache`]); `what`
/// says what the backend keeps there.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn configure_gpu_runtime(what: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| match super::kernel_cache::configure() {
        Some(dir) => eprintln!("{what}: {}", dir.display()),
        None => eprintln!("GPU runtime settings: from the cubecl.toml / burn.toml found here"),
    });
}

/// The backends compiled into this binary.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg!(feature = "flex") {
        out.push("cpu (f32, bf16, f16, pure_bf16, pure_f16)");
    }
    if cfg!(feature = "cuda") {
        out.push("cuda (f32, bf16, f16, pure_bf16, pure_f16)");
    }
    if cfg!(feature = "wgpu") {
        out.push("wgpu (f32)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!("wgpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Wgpu(None)));
        assert_eq!(
            "wgpu:1".parse::<DeviceSpec>(),
            Ok(DeviceSpec::Wgpu(Some(1)))
        );
        assert!(
            "cuda:x"
                .parse::<DeviceSpec>()
                .unwrap_err()
                .contains("not a device index")
        );
        assert!(
            "tpu"
                .parse::<DeviceSpec>()
                .unwrap_err()
                .contains("unknown device")
        );
    }
}
