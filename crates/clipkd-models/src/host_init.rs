//! Initial weights that do not depend on the backend.
//!
//! Burn draws `Initializer` values with the backend's own generator: for one seed, the CPU and a
//! GPU give different initial weights (the CubeCL backends' PRNG kernel is not the CPU's
//! `StdRng`), so runs cannot be compared or reproduced across devices. Here a module is built
//! once on the CPU backend (Flex), from a seeded generator that is the same on every machine,
//! and its values are copied into the module built for the target backend, parameter by
//! parameter in visiting order (the two are built from one config, so the orders agree).
//! Running statistics (BatchNorm) are copied the same way.
//!
//! Burn's parameters are lazy: `Initializer` draws a value on the first `Param::val`, not when
//! the module is built. [`build_on_host`] therefore draws every parameter (in visiting order)
//! before it releases the generator, and [`copy_parameters`] never draws the target's own
//! values, which would come from a generator another thread may be seeding.

use std::sync::Mutex;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use burn_flex::{Flex, FlexDevice};

use crate::error::ModelError;

/// Runs `draw` with the CPU backend's generator seeded with `seed`, holding one process-wide
/// lock until it returns: the seeded draws made inside are the same on every run and machine.
///
/// Flex's generator is one per process (like every Burn backend's). Calls of this function
/// (and of [`build_on_host`]) wait for each other, so two threads drawing at once each get
/// their seed's values; random draws made elsewhere at the same time (a bare `Tensor::random`
/// on the CPU outside this function) can still interleave with them. Values must be drawn
/// inside `draw`: a lazy parameter returned uninitialised would draw later, from whatever the
/// generator then holds (use [`build_on_host`] for modules). `draw` must not call this function.
pub fn with_host_seed<T>(seed: u64, draw: impl FnOnce(&FlexDevice) -> T) -> T {
    static HOST_RNG: Mutex<()> = Mutex::new(());
    // A panic in another draw leaves nothing half-done that matters here: reseeding resets it.
    let _guard = HOST_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = FlexDevice;
    <Flex as Backend>::seed(&device, seed);
    draw(&device)
}

/// Seeds the CPU backend's generator, builds a module on it and draws every one of its
/// parameters, in visiting order, before releasing the generator: the host half of a
/// backend-independent initialisation ([`copy_parameters`] makes the other half).
///
/// Build several modules in one call (a tuple is a module) to draw them from one seed, one
/// after the other. See [`with_host_seed`] for the lock.
pub fn build_on_host<M, E>(
    seed: u64,
    build: impl FnOnce(&FlexDevice) -> Result<M, E>,
) -> Result<M, E>
where
    M: Module<Flex>,
{
    with_host_seed(seed, |device| {
        let module = build(device)?;
        force_init(&module);
        Ok(module)
    })
}

/// Copies every float parameter (and running statistic) of `host` into `target`, in visiting
/// order, keeping `target`'s parameter ids, devices and `require_grad` flags. The target's own
/// lazy initial values are never drawn (build it anywhere, no lock needed); the copies take the
/// target device's default float dtype.
///
/// # Errors
/// [`ModelError::StructureMismatch`] if the two modules do not have the same number of float
/// parameters with the same shapes in the same order (they were not built from one config).
pub fn copy_parameters<H, B, M>(host: &H, target: M) -> Result<M, ModelError>
where
    H: Module<Flex>,
    B: Backend,
    M: Module<B>,
{
    let mut collect = Collect(Vec::new());
    host.visit(&mut collect);
    let mut shapes = Shapes(Vec::new());
    target.visit(&mut shapes);
    if collect.0.len() != shapes.0.len() {
        return Err(ModelError::StructureMismatch {
            detail: format!(
                "{} float parameters on the host, {} in the target",
                collect.0.len(),
                shapes.0.len()
            ),
        });
    }
    for (index, (data, shape)) in collect.0.iter().zip(&shapes.0).enumerate() {
        if &data.shape.to_vec() != shape {
            return Err(ModelError::StructureMismatch {
                detail: format!(
                    "parameter {index} (visiting order) is {:?} on the host, {shape:?} in the \
                     target",
                    data.shape.to_vec()
                ),
            });
        }
    }
    let mut replace = Replace(collect.0.into_iter());
    Ok(target.map(&mut replace))
}

/// Materialises every lazily initialised parameter (float, int and bool), in visiting order,
/// so that initial values depend only on the generator's state now and a clone never draws new
/// ones (Burn's `Initializer` draws on a parameter's first `Param::val`).
pub fn force_init<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            let _ = param.val();
        }
        fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

struct Collect(Vec<TensorData>);

impl ModuleVisitor<Flex> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
        self.0.push(param.val().into_data());
    }
}

/// Shapes without initialising: `lazy_shape` reads a lazy parameter's declared shape.
struct Shapes(Vec<Vec<usize>>);

impl<B: Backend> ModuleVisitor<B> for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.lazy_shape().to_vec());
    }
}

struct Replace(std::vec::IntoIter<TensorData>);

impl<B: Backend> ModuleMapper<B> for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        // Counts and shapes were checked before mapping.
        let data = self.0.next().expect("one host tensor per target parameter");
        // `transform_for_load` is Burn's loading path: it keeps the id, device and
        // `require_grad` of a lazy parameter without running its initializer.
        let value = Tensor::<B, D>::from_data(data, &param.lazy_device());
        let id = param.id;
        param.transform_for_load(value, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn modules_of_another_shape_are_refused_naming_the_parameter() {
        let host = LinearConfig::new(5, 3).init::<Flex>(&FlexDevice);
        let target: Linear<Flex> = LinearConfig::new(5, 4).init(&FlexDevice);
        let err = copy_parameters(&host, target).unwrap_err().to_string();
        assert!(
            err.contains("parameter 0") && err.contains("[5, 3]"),
            "{err}"
        );
        let no_bias: Linear<Flex> = LinearConfig::new(5, 3).with_bias(false).init(&FlexDevice);
        let err = copy_parameters(&host, no_bias).unwrap_err().to_string();
        assert!(err.contains("2 float parameters on the host, 1"), "{err}");
    }
}
