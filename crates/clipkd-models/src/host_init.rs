//! Initial weights that do not depend on the backend.
//!
//! Burn draws `Initializer` values with the backend's own generator: for one seed, the CPU and a
//! GPU give different initial weights (the CubeCL backends' PRNG kernel is not the CPU's
//! `StdRng`), so runs cannot be compared or reproduced across devices. Here a module is built
//! once on the CPU backend (Flex), from a seeded generator that is the same on every machine,
//! and its values are copied into the module built for the target backend, parameter by
//! parameter in visiting order (the two are built from one config, so the orders agree).
//! Running statistics (BatchNorm) are copied the same way.

use std::sync::Mutex;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_flex::{Flex, FlexDevice};

use crate::error::ModelError;

/// Seeds the CPU backend's generator and builds a module on it: the host half of a
/// backend-independent initialisation ([`copy_parameters`] makes the other half).
///
/// Flex's generator is one per process (like every Burn backend's). Calls of this function
/// hold one process-wide lock from seeding to the end of `build`, so that two threads building
/// at once each get their seed's draws; random draws made elsewhere at the same time (a bare
/// `Tensor::random` on the CPU) can still interleave. `build` must not call this function.
pub fn build_on_host<M, E>(
    seed: u64,
    build: impl FnOnce(&FlexDevice) -> Result<M, E>,
) -> Result<M, E> {
    static HOST_RNG: Mutex<()> = Mutex::new(());
    // A panic in another build leaves nothing half-done that matters here: reseeding resets it.
    let _guard = HOST_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = FlexDevice;
    <Flex as Backend>::seed(&device, seed);
    build(&device)
}

/// Copies every float parameter (and running statistic) of `host` into `target`, in visiting
/// order, keeping `target`'s parameter ids, devices, dtypes and `require_grad` flags.
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

struct Collect(Vec<TensorData>);

impl ModuleVisitor<Flex> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
        self.0.push(param.val().into_data());
    }
}

struct Shapes(Vec<Vec<usize>>);

impl<B: Backend> ModuleVisitor<B> for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().dims().to_vec());
    }
}

struct Replace(std::vec::IntoIter<TensorData>);

impl<B: Backend> ModuleMapper<B> for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        // Counts and shapes were checked before mapping.
        let data = self.0.next().expect("one host tensor per target parameter");
        param.map(|old| {
            let require_grad = old.is_require_grad();
            let value = Tensor::<B, D>::from_data(data, &old.device()).cast(old.dtype());
            if require_grad {
                value.require_grad()
            } else {
                value
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn one_seed_gives_the_same_weights_whatever_the_target_backend() {
        let host = |seed| {
            build_on_host(seed, |d| {
                Ok::<_, ModelError>(LinearConfig::new(5, 3).init::<Flex>(d))
            })
            .unwrap()
        };
        let device = FlexDevice;
        let target: Linear<Autodiff<Flex>> = LinearConfig::new(5, 3).init(&device);
        let copied = copy_parameters(&host(7), target).unwrap();
        let again = host(7);
        copied
            .weight
            .val()
            .into_data()
            .assert_eq(&again.weight.val().into_data(), true);
        assert!(
            copied.weight.val().is_require_grad(),
            "trainable stays trainable"
        );
        let other = host(8);
        assert_ne!(
            other.weight.val().into_data().to_vec::<f32>().unwrap(),
            again.weight.val().into_data().to_vec::<f32>().unwrap(),
            "another seed, other weights"
        );
    }

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
