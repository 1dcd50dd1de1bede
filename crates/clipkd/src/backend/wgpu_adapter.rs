//! Choosing the wgpu adapter for `--device wgpu[:N]`.
//!
//! CubeCL panics when no adapter fits ("No possible adapter available", then a `RecvError` from
//! its server thread), and its `DiscreteGpu(N)` counts discrete GPUs only, so `wgpu:0` fails on
//! a machine whose one adapter is integrated or a CPU driver (Mesa's lavapipe). Here the
//! adapters are listed first through wgpu itself: `wgpu` takes wgpu's preferred one,
//! `wgpu:N` the N-th of the list (any type), and an error names the device asked for and
//! every adapter found.

use burn::backend::wgpu::WgpuDevice;
use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};

/// Why no wgpu device could be chosen: the device asked for, and what exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AdapterError(String);

macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(AdapterError(format!($($arg)*)))
    };
}

/// One adapter as wgpu lists it: its name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    /// The driver's name for it (`NVIDIA H100`, `llvmpipe (LLVM 15.0.6, 256 bits)`, ...).
    pub name: String,
    /// Discrete, integrated, virtual, CPU or other.
    pub kind: wgpu::DeviceType,
}

/// The adapters of the graphics API CubeCL uses on this platform (Vulkan on Linux and
/// Windows, Metal on macOS), in wgpu's order.
pub fn list() -> (wgpu::Backend, Vec<Adapter>) {
    let backend = <AutoGraphicsApi as GraphicsApi>::backend();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = futures_lite::future::block_on(instance.enumerate_adapters(backend.into()))
        .iter()
        .map(|a| {
            let info = a.get_info();
            Adapter {
                name: info.name,
                kind: info.device_type,
            }
        })
        .collect();
    (backend, adapters)
}

/// The CubeCL device for `--device wgpu` (`index` None) or `wgpu:N`, or why there is none.
pub fn select(index: Option<usize>) -> Result<WgpuDevice, AdapterError> {
    let (backend, adapters) = list();
    pick(index, &adapters, &format!("{backend:?}"))
}

/// [`select`] on a given list (`api` names the graphics API, for the messages).
pub fn pick(
    index: Option<usize>,
    adapters: &[Adapter],
    api: &str,
) -> Result<WgpuDevice, AdapterError> {
    let asked = match index {
        Some(i) => format!("wgpu:{i}"),
        None => "wgpu".to_string(),
    };
    if adapters.is_empty() {
        bail!(
            "device `{asked}`: wgpu found no {api} adapter on this machine. Install the GPU's \
             {api} driver (on Linux without a GPU, Mesa's software driver lavapipe works: \
             `apt install mesa-vulkan-drivers`), or use `--device cpu`"
        );
    }
    let Some(i) = index else {
        return Ok(WgpuDevice::DefaultDevice);
    };
    let Some(chosen) = adapters.get(i) else {
        bail!(
            "device `{asked}`: there is no adapter {i}; wgpu found {} {api} adapter(s): {}",
            adapters.len(),
            describe(adapters)
        );
    };
    // CubeCL numbers adapters within their type; "other" adapters are reached through
    // `DiscreteGpu(k)` once k is past the discrete ones.
    let nth_of_kind = |kind| adapters[..i].iter().filter(|a| a.kind == kind).count();
    use wgpu::DeviceType as T;
    Ok(match chosen.kind {
        T::DiscreteGpu => WgpuDevice::DiscreteGpu(nth_of_kind(T::DiscreteGpu)),
        T::IntegratedGpu => WgpuDevice::IntegratedGpu(nth_of_kind(T::IntegratedGpu)),
        T::VirtualGpu => WgpuDevice::VirtualGpu(nth_of_kind(T::VirtualGpu)),
        T::Cpu if nth_of_kind(T::Cpu) == 0 => WgpuDevice::Cpu,
        T::Other
            if adapters.iter().filter(|a| a.kind == T::DiscreteGpu).count()
                <= nth_of_kind(T::Other) =>
        {
            WgpuDevice::DiscreteGpu(nth_of_kind(T::Other))
        }
        _ => bail!(
            "device `{asked}`: adapter {i} ({}) cannot be selected by number through CubeCL; \
             adapters found: {}",
            chosen.name,
            describe(adapters)
        ),
    })
}

fn describe(adapters: &[Adapter]) -> String {
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| format!("wgpu:{i} = {} ({:?})", a.name, a.kind))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::DeviceType as T;

    fn adapter(name: &str, kind: T) -> Adapter {
        Adapter {
            name: name.into(),
            kind,
        }
    }

    #[test]
    fn no_adapter_is_an_error_naming_the_device_and_the_fix() {
        let err = pick(None, &[], "Vulkan").unwrap_err().to_string();
        assert!(
            err.starts_with("device `wgpu`: wgpu found no Vulkan adapter"),
            "{err}"
        );
        assert!(
            err.contains("mesa-vulkan-drivers") && err.contains("--device cpu"),
            "{err}"
        );
    }

    #[test]
    fn an_index_counts_every_adapter_and_maps_to_its_type() {
        let list = [
            adapter("iGPU", T::IntegratedGpu),
            adapter("big", T::DiscreteGpu),
            adapter("llvmpipe", T::Cpu),
            adapter("big 2", T::DiscreteGpu),
        ];
        let pick = |i| pick(Some(i), &list, "Vulkan").unwrap();
        assert_eq!(pick(0), WgpuDevice::IntegratedGpu(0));
        assert_eq!(pick(1), WgpuDevice::DiscreteGpu(0));
        assert_eq!(pick(2), WgpuDevice::Cpu);
        assert_eq!(pick(3), WgpuDevice::DiscreteGpu(1));
        let lavapipe_only = [adapter("llvmpipe", T::Cpu)];
        assert_eq!(
            super::pick(Some(0), &lavapipe_only, "Vulkan").unwrap(),
            WgpuDevice::Cpu
        );
        assert_eq!(
            super::pick(None, &lavapipe_only, "Vulkan").unwrap(),
            WgpuDevice::DefaultDevice
        );
    }

    #[test]
    fn an_index_past_the_list_names_what_exists() {
        let list = [adapter("llvmpipe", T::Cpu)];
        let err = pick(Some(2), &list, "Vulkan").unwrap_err().to_string();
        assert_eq!(
            err,
            "device `wgpu:2`: there is no adapter 2; wgpu found 1 Vulkan adapter(s): \
             wgpu:0 = llvmpipe (Cpu)"
        );
    }
}
