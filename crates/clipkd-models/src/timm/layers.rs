//! The convolution and BatchNorm helpers of the timm trunks: timm's `create_conv2d` padding and
//! its convolution initialisation (`ResNet.init_weights`, EfficientNet's `_init_weight_goog`
//! and ByobNet's `_init_weights` agree), and the forward every trunk uses.

use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::autocast;
use crate::resnet::conv1x1;
use crate::transformer::normal;

/// `nn.Conv2d(c_in, c_out, k, stride, padding=((stride - 1) + (k - 1)) // 2, groups, bias)`
/// (timm's symmetric padding, `k // 2` for odd kernels) initialised as timm does: weight normal
/// with standard deviation `sqrt(2 / fan_out)`, `fan_out = k^2 c_out / groups`
/// (`kaiming_normal_(mode="fan_out")` for ReLU), bias zero.
pub(crate) fn conv<B: Backend>(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    groups: usize,
    bias: bool,
    device: &B::Device,
) -> Conv2d<B> {
    let p = ((stride - 1) + (k - 1)) / 2;
    let fan_out = k * k * c_out / groups;
    let mut layer = Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_groups(groups)
        .with_bias(bias)
        .with_initializer(normal((2.0 / fan_out as f64).sqrt()))
        .init(device);
    if bias {
        layer.bias = Some(Initializer::Zeros.init([c_out], device));
    }
    layer
}

/// `nn.BatchNorm2d(c)`: weight 1 (0 with `zero`, timm's `zero_init_last`), bias 0.
pub(crate) fn batch_norm<B: Backend>(c: usize, zero: bool, device: &B::Device) -> BatchNorm<B> {
    let mut bn = BatchNormConfig::new(c).init(device);
    if zero {
        bn.gamma = Initializer::Zeros.init([c], device);
    }
    bn
}

/// A convolution's forward: 1x1 stride-1 ungrouped ones as one matrix product ([`conv1x1`],
/// which avoids a wgpu kernel bug), the others as `conv2d`; under the autocast scope either way.
pub(crate) fn apply_conv<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, c_in_per_group, kh, kw] = conv.weight.lazy_shape().dims();
    if kh == 1 && kw == 1 && conv.stride == [1, 1] && c_in_per_group == x.dims()[1] {
        conv1x1(conv, x)
    } else {
        autocast::conv2d(conv, x)
    }
}
