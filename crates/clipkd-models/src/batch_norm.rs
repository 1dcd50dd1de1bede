//! BatchNorm over `[N, C, H, W]` as PyTorch's `nn.BatchNorm2d`, on Burn's `BatchNorm` module
//! (so its parameters, running statistics and checkpoint keys stay Burn's).
//!
//! Burn's training forward reduces each channel as one row of `N·H·W` elements
//! (`swap_dims(0, 1).reshape([C, N·H·W]).mean_dim(1)`). On the wgpu backend with Mesa's lavapipe,
//! Burn 0.21's reduction returns wrong sums for rows of 65 535 elements or more (issue 10; the
//! repro is `row_reductions_of_65535_elements_or_more` in `crates/clipkd/tests/wgpu_backend.rs`),
//! which a ModifiedResNet stem reaches at batch 8 and 224 pixels (8·112·112 = 100 352). Here the
//! statistics are means of means over W, then H, then N: rows of at most max(N, H, W) elements,
//! exact in real arithmetic (the groups are equal-sized), and with no transposed copy of the
//! activations.
//!
//! The running variance is updated with the unbiased batch variance, as PyTorch does (Burn's
//! own forward uses the biased one).

use burn::nn::BatchNorm;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The BatchNorm forward: batch statistics (and a running-statistics update) on an autodiff
/// backend, as PyTorch in `train()` mode; the running statistics otherwise (`eval()`).
pub(crate) fn batch_norm_2d<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if !B::ad_enabled(&x.device()) {
        return bn.forward(x);
    }
    let [n, c, h, w] = x.dims();
    let mean = per_channel_mean(x.clone());
    let centered = x - mean.clone();
    let var = per_channel_mean(centered.clone().square());

    let count = (n * h * w) as f64;
    let unbiased = if count > 1.0 {
        count / (count - 1.0)
    } else {
        1.0
    };
    let device = mean.device();
    let update = |state: &burn::module::RunningState<Tensor<B, 1>>, batch: Tensor<B, 4>, scale| {
        let old = state.value_sync().to_device(&device);
        let new = old.mul_scalar(1.0 - bn.momentum)
            + batch.detach().reshape([c]).mul_scalar(bn.momentum * scale);
        state.update(new.detach());
    };
    update(&bn.running_mean, mean, 1.0);
    update(&bn.running_var, var.clone(), unbiased);

    let std = var.add_scalar(bn.epsilon).sqrt();
    centered / std * bn.gamma.val().reshape([1, c, 1, 1]) + bn.beta.val().reshape([1, c, 1, 1])
}

/// The mean of each channel of `[N, C, H, W]`, as `[1, C, 1, 1]`.
fn per_channel_mean<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.mean_dim(3).mean_dim(2).mean_dim(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Distribution, TensorData};
    use burn_flex::Flex;

    type B = Autodiff<Flex>;

    /// Against the closed form on one channel layout, in f64, and PyTorch's running update.
    #[test]
    fn normalises_with_batch_statistics_and_updates_the_running_ones_as_pytorch() {
        let device = Default::default();
        let [n, c, h, w] = [3, 2, 4, 5];
        let bn = BatchNormConfig::new(c).init::<B>(&device);
        let x = Tensor::<B, 4>::random([n, c, h, w], Distribution::Normal(1.0, 2.0), &device);
        let y = batch_norm_2d(&bn, x.clone());
        let xs: Vec<f32> = x.into_data().to_vec().unwrap();
        let ys: Vec<f32> = y.into_data().to_vec().unwrap();
        let running_mean: Vec<f32> = bn.running_mean.value_sync().into_data().to_vec().unwrap();
        let running_var: Vec<f32> = bn.running_var.value_sync().into_data().to_vec().unwrap();
        for ch in 0..c {
            let idx: Vec<usize> = (0..n)
                .flat_map(|i| (0..h * w).map(move |p| (i * c + ch) * h * w + p))
                .collect();
            let m = idx.iter().map(|&i| f64::from(xs[i])).sum::<f64>() / idx.len() as f64;
            let v = idx
                .iter()
                .map(|&i| (f64::from(xs[i]) - m).powi(2))
                .sum::<f64>()
                / idx.len() as f64;
            for &i in &idx {
                let expected = (f64::from(xs[i]) - m) / (v + 1e-5).sqrt();
                assert!(
                    (f64::from(ys[i]) - expected).abs() < 1e-5,
                    "{} vs {expected}",
                    ys[i]
                );
            }
            let unbiased = v * idx.len() as f64 / (idx.len() - 1) as f64;
            assert!(
                (f64::from(running_mean[ch]) - 0.1 * m).abs() < 1e-5,
                "running mean {} vs {}",
                running_mean[ch],
                0.1 * m
            );
            assert!(
                (f64::from(running_var[ch]) - (0.9 + 0.1 * unbiased)).abs() < 1e-5,
                "running var {} vs {}",
                running_var[ch],
                0.9 + 0.1 * unbiased
            );
        }
    }

    /// The same values and gradients as Burn's own BatchNorm forward (which reduces one row per
    /// channel); only the running variance's update differs (unbiased here).
    #[test]
    fn matches_burns_forward_and_gradients() {
        let device = Default::default();
        let bn = BatchNormConfig::new(3).init::<B>(&device);
        let data =
            Tensor::<Flex, 4>::random([2, 3, 6, 7], Distribution::Default, &device).into_data();
        let grads_of = |ours: bool| {
            let x = Tensor::<B, 4>::from_data(data.clone(), &device).require_grad();
            let y = if ours {
                batch_norm_2d(&bn, x.clone())
            } else {
                bn.forward(x.clone())
            };
            let weights = Tensor::<B, 4>::from_data(
                TensorData::new(
                    (0..252).map(|i| (i % 5) as f32).collect::<Vec<_>>(),
                    [2, 3, 6, 7],
                ),
                &device,
            );
            let g = (y.clone() * weights).sum().backward();
            (y.into_data(), x.grad(&g).unwrap().into_data())
        };
        let (y_ours, g_ours) = grads_of(true);
        let (y_burn, g_burn) = grads_of(false);
        y_ours.assert_approx_eq::<f32>(&y_burn, burn::tensor::Tolerance::absolute(1e-5));
        g_ours.assert_approx_eq::<f32>(&g_burn, burn::tensor::Tolerance::absolute(1e-5));
    }
}
