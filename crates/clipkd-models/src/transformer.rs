//! Pre-norm transformer blocks shared by the ViT and the text tower (open_clip's
//! `Transformer` / `ResidualAttentionBlock` with `nn.MultiheadAttention`).
//!
//! Field names follow open_clip's state-dict keys (`ln_1`, `attn`, `ls_1`, `ln_2`, `mlp.c_fc`,
//! `mlp.c_proj`, `ls_2`); the only renamed parameters are the attention's packed input
//! projection (`attn.in_proj_weight` / `in_proj_bias` in PyTorch, a [`Linear`] `attn.in_proj`
//! here) and Burn's `gamma`/`beta` of LayerNorm (see `checkpoint`).

use burn::module::{Initializer, Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, gelu_approximate, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;

use crate::autocast;
use crate::config::{Activation, GeluApproximate};

/// The MLP nonlinearity, resolved from `quick_gelu` and a tower's `act_kwargs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MlpActivation {
    /// Exact GELU (erf).
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// `x * sigmoid(1.702 x)`.
    QuickGelu,
}

impl MlpActivation {
    pub(crate) fn resolve(activation: Activation, approx: GeluApproximate) -> Self {
        match (activation, approx) {
            (Activation::QuickGelu, _) => MlpActivation::QuickGelu,
            (Activation::Gelu, GeluApproximate::None) => MlpActivation::Gelu,
            (Activation::Gelu, GeluApproximate::Tanh) => MlpActivation::GeluTanh,
        }
    }

    fn forward<const D: usize, B: Backend>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            MlpActivation::Gelu => gelu_exact(x),
            MlpActivation::GeluTanh => gelu_approximate(x),
            MlpActivation::QuickGelu => x.clone() * sigmoid(x * 1.702),
        }
    }
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`, with its exact gradient on every backend.
///
/// Burn's fused `gelu` is exact forward, but its backward comes from the backend: Flex's is
/// exact, while Burn 0.21's default `gelu_backward` (which the CubeCL backends, CUDA and wgpu,
/// use) is the derivative of the tanh approximation (off by up to 8.7e-4 near x = 2). Where a
/// gradient is recorded the function is therefore composed from `erf`, whose autodiff
/// derivative is exact: `d/dx = (1 + erf(x/√2))/2 + x·exp(-x²/2)/√(2π)`. Without autodiff
/// (inference, the teacher) the fused kernel runs.
pub(crate) fn gelu_exact<const D: usize, B: Backend>(x: Tensor<B, D>) -> Tensor<B, D> {
    if B::ad_enabled(&x.device()) {
        x.clone() * ((x * core::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5
    } else {
        gelu(x)
    }
}

/// How a tower's blocks are initialised: open_clip leaves the ViT's blocks at PyTorch's module
/// defaults, and gives the text tower explicit normal initialisations.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BlockInit {
    /// PyTorch defaults: `nn.MultiheadAttention` (Xavier-uniform packed input projection,
    /// zero biases, Kaiming-uniform output projection) and `nn.Linear` (uniform ±1/√fan_in).
    TorchDefault,
    /// open_clip's `TextTransformer.init_parameters`: normal with these standard deviations
    /// (biases stay at the PyTorch defaults).
    Normal {
        attn_std: f64,
        proj_std: f64,
        fc_std: f64,
    },
}

/// Everything needed to build a [`Transformer`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransformerSpec {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_width: usize,
    pub ls_init_value: Option<f64>,
    pub activation: MlpActivation,
    pub norm_eps: f64,
    pub init: BlockInit,
}

/// Uniform ±`bound`.
pub(crate) fn uniform(bound: f64) -> Initializer {
    Initializer::Uniform {
        min: -bound,
        max: bound,
    }
}

/// Normal(0, `std`).
pub(crate) fn normal(std: f64) -> Initializer {
    Initializer::Normal { mean: 0.0, std }
}

/// A Burn [`Linear`] (weight stored `[d_in, d_out]`) with explicit initialisers.
pub(crate) fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    weight: Initializer,
    bias: Option<Initializer>,
    device: &B::Device,
) -> Linear<B> {
    Linear {
        weight: weight.init_with([d_in, d_out], Some(d_in), Some(d_out), device),
        bias: bias.map(|b| b.init_with([d_out], Some(d_in), Some(d_out), device)),
    }
}

/// `linear` applied to every token of `x` (`[N, L, d_in]` -> `[N, L, d_out]`) as ONE 2-D
/// product over the `N * L` rows. Numerically the same as `linear.forward(x)`, but Burn's
/// backward for a 3-D input computes the weight gradient as `N` separate `[d_in, d_out]`
/// products (each over only `L` rows) and then sums them; on the 2-D view it is a single
/// `[d_in, N L] x [N L, d_out]` product, without the `N`-fold temporary.
pub(crate) fn linear_tokens<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [n, l, d] = x.dims();
    let y = autocast::linear(linear, x.reshape([n * l, d]));
    let d_out = y.dims()[1];
    y.reshape([n, l, d_out])
}

/// `nn.Linear(d_in, d_out)` with PyTorch's default initialisation (weight and bias uniform
/// ±1/√d_in).
pub(crate) fn torch_linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    let bound = 1.0 / (d_in as f64).sqrt();
    linear(d_in, d_out, uniform(bound), Some(uniform(bound)), device)
}

/// A LayerNorm of width `d` with epsilon `eps` (weight 1, bias 0).
pub(crate) fn layer_norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(d).with_epsilon(eps).init(device)
}

/// open_clip's `LayerScale`: a learned per-channel scale (`gamma`).
#[derive(Module, Debug)]
pub struct LayerScale<B: Backend> {
    /// Per-channel scale, shape `[width]`.
    pub gamma: Param<Tensor<B, 1>>,
}

impl<B: Backend> LayerScale<B> {
    fn new(width: usize, init_value: f64, device: &B::Device) -> Self {
        Self {
            gamma: Initializer::Constant { value: init_value }.init([width], device),
        }
    }

    /// Scales the last dimension.
    ///
    /// # Shapes
    /// - `x`: `[N, L, width]` -> `[N, L, width]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x * self.gamma.val().unsqueeze::<3>()
    }
}

/// Multi-head self-attention with one fused q/k/v projection (PyTorch's
/// `nn.MultiheadAttention`, batch first), computed with Burn's fused `attention` op.
#[derive(Module, Debug)]
pub struct MultiheadAttention<B: Backend> {
    /// Packed q, k, v projection, weight `[width, 3 * width]` (PyTorch's `in_proj_weight`,
    /// transposed) and bias `[3 * width]` (`in_proj_bias`).
    pub in_proj: Linear<B>,
    /// Output projection, weight `[width, width]`.
    pub out_proj: Linear<B>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> MultiheadAttention<B> {
    fn new(width: usize, heads: usize, init: BlockInit, device: &B::Device) -> Self {
        let (in_weight, out_weight) = match init {
            // nn.MultiheadAttention._reset_parameters: xavier_uniform_ on the [3w, w] packed
            // weight (fan_in w, fan_out 3w); out_proj keeps nn.Linear's kaiming_uniform(a=√5).
            BlockInit::TorchDefault => (
                uniform((6.0 / (4 * width) as f64).sqrt()),
                uniform(1.0 / (width as f64).sqrt()),
            ),
            BlockInit::Normal {
                attn_std, proj_std, ..
            } => (normal(attn_std), normal(proj_std)),
        };
        // Both biases are zeroed by nn.MultiheadAttention._reset_parameters.
        Self {
            in_proj: linear(
                width,
                3 * width,
                in_weight,
                Some(Initializer::Zeros),
                device,
            ),
            out_proj: linear(width, width, out_weight, Some(Initializer::Zeros), device),
            heads,
        }
    }

    /// Self-attention over the sequence.
    ///
    /// # Shapes
    /// - `x`: `[N, L, width]` -> `[N, L, width]`
    pub fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let [n, l, d] = x.dims();
        let h = self.heads;
        // One matmul for q, k and v; PyTorch's packed layout is [q | k | v] along the last
        // dimension, each split into heads, so [N, L, 3d] -> [N, L, 3h, d/h] -> [N, 3h, L, d/h].
        let qkv = linear_tokens(&self.in_proj, x)
            .reshape([n, l, 3 * h, d / h])
            .swap_dims(1, 2);
        let q = qkv.clone().narrow(1, 0, h);
        let k = qkv.clone().narrow(1, h, h);
        let v = qkv.narrow(1, 2 * h, h);
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: causal,
        };
        let out = autocast::attention(q, k, v, None, options);
        linear_tokens(&self.out_proj, out.swap_dims(1, 2).reshape([n, l, d]))
    }
}

/// The block's MLP: `c_fc` -> activation -> `c_proj`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Expansion, weight `[width, mlp_width]`.
    pub c_fc: Linear<B>,
    /// Contraction, weight `[mlp_width, width]`.
    pub c_proj: Linear<B>,
    #[module(skip)]
    activation: MlpActivation,
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - `x`: `[N, L, width]` -> `[N, L, width]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = linear_tokens(&self.c_fc, x);
        linear_tokens(&self.c_proj, self.activation.forward(x))
    }
}

/// A pre-norm residual block: `x + ls_1(attn(ln_1(x)))`, then `x + ls_2(mlp(ln_2(x)))`.
#[derive(Module, Debug)]
pub struct ResidualAttentionBlock<B: Backend> {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm<B>,
    /// Self-attention.
    pub attn: MultiheadAttention<B>,
    /// LayerScale after attention (when `ls_init_value` is set).
    pub ls_1: Option<LayerScale<B>>,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// The MLP.
    pub mlp: Mlp<B>,
    /// LayerScale after the MLP (when `ls_init_value` is set).
    pub ls_2: Option<LayerScale<B>>,
}

impl<B: Backend> ResidualAttentionBlock<B> {
    fn new(spec: &TransformerSpec, device: &B::Device) -> Self {
        let w = spec.width;
        let m = spec.mlp_width;
        let (c_fc, c_proj) = match spec.init {
            BlockInit::TorchDefault => (torch_linear(w, m, device), torch_linear(m, w, device)),
            BlockInit::Normal {
                proj_std, fc_std, ..
            } => (
                linear(
                    w,
                    m,
                    normal(fc_std),
                    Some(uniform(1.0 / (w as f64).sqrt())),
                    device,
                ),
                linear(
                    m,
                    w,
                    normal(proj_std),
                    Some(uniform(1.0 / (m as f64).sqrt())),
                    device,
                ),
            ),
        };
        Self {
            ln_1: layer_norm(w, spec.norm_eps, device),
            attn: MultiheadAttention::new(w, spec.heads, spec.init, device),
            ls_1: spec.ls_init_value.map(|v| LayerScale::new(w, v, device)),
            ln_2: layer_norm(w, spec.norm_eps, device),
            mlp: Mlp {
                c_fc,
                c_proj,
                activation: spec.activation,
            },
            ls_2: spec.ls_init_value.map(|v| LayerScale::new(w, v, device)),
        }
    }

    /// # Shapes
    /// - `x`: `[N, L, width]` -> `[N, L, width]`
    pub fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let a = self.attn.forward(self.ln_1.forward(x.clone()), causal);
        let a = match &self.ls_1 {
            Some(ls) => ls.forward(a),
            None => a,
        };
        let x = x + a;
        let m = self.mlp.forward(self.ln_2.forward(x.clone()));
        let m = match &self.ls_2 {
            Some(ls) => ls.forward(m),
            None => m,
        };
        x + m
    }
}

/// A stack of [`ResidualAttentionBlock`]s (open_clip's `Transformer`, key `resblocks.N`).
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// The blocks, in order.
    pub resblocks: Vec<ResidualAttentionBlock<B>>,
}

impl<B: Backend> Transformer<B> {
    pub(crate) fn new(spec: &TransformerSpec, device: &B::Device) -> Self {
        Self {
            resblocks: (0..spec.layers)
                .map(|_| ResidualAttentionBlock::new(spec, device))
                .collect(),
        }
    }

    /// Runs every block; `causal` masks attention to later positions.
    ///
    /// # Shapes
    /// - `x`: `[N, L, width]` -> `[N, L, width]`
    pub fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        self.resblocks
            .iter()
            .fold(x, |x, block| block.forward(x, causal))
    }

    /// [`Transformer::forward`], also returning the output of each block in `taps` (block
    /// indices, in the order asked; an index may repeat).
    ///
    /// # Shapes
    /// - `x`: `[N, L, width]` -> `[N, L, width]` and `taps.len()` tensors `[N, L, width]`
    ///
    /// # Panics
    /// If a tap is not below the number of blocks (callers check names first).
    pub fn forward_with_taps(
        &self,
        x: Tensor<B, 3>,
        causal: bool,
        taps: &[usize],
    ) -> (Tensor<B, 3>, Vec<Tensor<B, 3>>) {
        assert!(
            taps.iter().all(|&t| t < self.resblocks.len()),
            "taps {taps:?} beyond {} blocks",
            self.resblocks.len()
        );
        let mut outputs: Vec<Option<Tensor<B, 3>>> = vec![None; taps.len()];
        let mut x = x;
        for (i, block) in self.resblocks.iter().enumerate() {
            x = block.forward(x, causal);
            for (slot, _) in taps.iter().enumerate().filter(|(_, t)| **t == i) {
                outputs[slot] = Some(x.clone());
            }
        }
        (
            x,
            outputs
                .into_iter()
                .map(|o| o.expect("every tap is a block"))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::TensorData;
    use burn_flex::Flex;

    /// The composed GELU's value and gradient against the closed forms, in f64.
    #[test]
    fn gelu_gradient_is_the_exact_one() {
        let xs: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.1).collect();
        let device = Default::default();
        let x = Tensor::<Autodiff<Flex>, 1>::from_data(
            TensorData::new(xs.clone(), [xs.len()]),
            &device,
        )
        .require_grad();
        let y = gelu_exact(x.clone());
        let grads = y.clone().sum().backward();
        let dx: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let y: Vec<f32> = y.into_data().to_vec().unwrap();
        let (sqrt_2, sqrt_2pi) = (2f64.sqrt(), (2.0 * std::f64::consts::PI).sqrt());
        for ((&x, &y), &dx) in xs.iter().zip(&y).zip(&dx) {
            let x = f64::from(x);
            let cdf = 0.5 * (1.0 + erf(x / sqrt_2));
            let pdf = (-x * x / 2.0).exp() / sqrt_2pi;
            assert!((f64::from(y) - x * cdf).abs() < 2e-6, "gelu({x}) = {y}");
            // The tanh approximation's derivative is off by up to 8.7e-4 here.
            assert!(
                (f64::from(dx) - (cdf + x * pdf)).abs() < 2e-6,
                "gelu'({x}) = {dx}"
            );
        }
    }

    /// erf by its Maclaurin series (|x| <= 4 here: cancellation costs ~1e-9).
    fn erf(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
