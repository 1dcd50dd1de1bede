//! Stochastic depth (timm's `DropPath`): in training, each sample's residual branch is dropped
//! with probability `rate` and the kept ones are scaled by `1 / (1 - rate)`.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

/// timm's `drop_path(x, rate, training)` with `scale_by_keep`: identity when `rate` is 0 or the
/// backend is not an autodiff backend (evaluation, Burn's training convention).
///
/// # Shapes
/// - `x`: `[N, ...]` -> the same (one Bernoulli draw per sample, broadcast over the rest)
pub fn drop_path<B: Backend, const D: usize>(x: Tensor<B, D>, rate: f64) -> Tensor<B, D> {
    if rate == 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let keep = 1.0 - rate;
    let mut shape = [1; D];
    shape[0] = x.dims()[0];
    let mask = Tensor::<B, D>::random(shape, Distribution::Bernoulli(keep), &x.device());
    x * mask.div_scalar(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn_flex::Flex;

    /// Whole samples are kept (scaled by 1/keep) or zeroed, never single elements; evaluation
    /// leaves the input alone.
    #[test]
    fn drops_whole_samples_in_training_only() {
        let device = Default::default();
        let x = Tensor::<Autodiff<Flex>, 3>::ones([64, 2, 3], &device);
        let y: Vec<f32> = drop_path(x.clone(), 0.5).into_data().to_vec().unwrap();
        let mut kept = 0;
        for sample in y.chunks(6) {
            let first = sample[0];
            assert!(first == 0.0 || first == 2.0, "{first}");
            assert!(sample.iter().all(|v| *v == first));
            kept += (first == 2.0) as usize;
        }
        assert!((10..=54).contains(&kept), "{kept} of 64 kept at rate 0.5");
        let eval = Tensor::<Flex, 3>::ones([4, 2, 3], &device);
        assert_eq!(drop_path(eval.clone(), 0.5).into_data(), eval.into_data());
    }
}
