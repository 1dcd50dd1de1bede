//! OpenAI's ModifiedResNet vision tower (open_clip's `modified_resnet.py`).
//!
//! BatchNorm is Burn's module with clipkd's forward (`batch_norm.rs`): it normalises with
//! batch statistics and updates its running statistics (unbiased variance, as PyTorch) when the
//! backend is an autodiff backend (training), and uses the running statistics otherwise. So
//! evaluate a student with `model.valid()` (the inner backend), not on the autodiff backend.

use burn::module::{Initializer, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AttentionModuleOptions;

use crate::autocast;
use crate::batch_norm::batch_norm_2d;
use crate::config::{ModifiedResNetConfig, check_embed_dim};
use crate::error::ModelError;
use crate::shape::{check_channels, conv_out, show_range, sizes_giving};
use crate::transformer::{linear, linear_tokens, normal, uniform};

/// `nn.AvgPool2d(k)` (kernel = stride = k, no padding, floor mode).
fn avg_pool<B: Backend>(x: Tensor<B, 4>, k: usize) -> Tensor<B, 4> {
    avg_pool2d(x, [k, k], [k, k], [0, 0], true, false)
}

/// `nn.Conv2d(c_in, c_out, k, padding=k/2, bias=False)` with PyTorch's default initialisation.
fn conv<B: Backend>(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    device: &B::Device,
) -> Conv2d<B> {
    let p = k / 2;
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

/// A 1x1 convolution with stride 1 and no padding (`conv` must be one) as one plain 2-D matmul:
/// `[C_out, C_in] x [C_in, N·H·W]` (the activations' batch axis moved next to the pixels).
///
/// Burn 0.21 on wgpu with Mesa's lavapipe gets both other forms wrong for some shapes: its
/// `conv2d` for a Bottleneck's 8 -> 32 channels at 56x56, batch 8 (relative error 1.0), and the
/// batched matmul `[1, C_out, C_in] x [N, C_in, H·W]` once `C_in` is 8 and `C_out` 8 or 16 with
/// a batch of 2 or more (relative error 1.0; the same kernel is right for a batch of 1). Found
/// by the ignored diagnostics `modified_resnet_block_steps_against_the_cpu` and
/// `matmul_shapes_against_the_cpu` in `crates/clipkd/tests/wgpu_backend.rs`. The weight keeps
/// Burn's `Conv2d` layout `[C_out, C_in, 1, 1]` and its checkpoint key.
pub fn conv1x1<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c_in, h, w] = x.dims();
    let weight = conv.weight.val();
    let c_out = weight.dims()[0];
    let columns = x.swap_dims(0, 1).reshape([c_in, n * h * w]);
    let out = autocast::matmul(weight.reshape([c_out, c_in]), columns)
        .reshape([c_out, n, h, w])
        .swap_dims(0, 1);
    match &conv.bias {
        Some(bias) => out + bias.val().reshape([1, c_out, 1, 1]),
        None => out,
    }
}

fn batch_norm<B: Backend>(c: usize, device: &B::Device) -> BatchNorm<B> {
    BatchNormConfig::new(c).init(device)
}

/// The anti-aliased shortcut: `AvgPool2d(stride)` then a 1x1 convolution and BatchNorm
/// (open_clip's `downsample` Sequential `"-1"`, `"0"`, `"1"`).
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// 1x1 convolution (`downsample.0`).
    pub conv: Conv2d<B>,
    /// BatchNorm (`downsample.1`).
    pub bn: BatchNorm<B>,
    /// Average-pool size before the convolution (1: none).
    pub stride: usize,
}

/// A bottleneck block with the average pool after `conv2` when strided.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    /// 1x1 reduction.
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm<B>,
    /// 3x3 convolution.
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm<B>,
    /// 1x1 expansion (x4).
    pub conv3: Conv2d<B>,
    /// BatchNorm after `conv3` (weight initialised to zero, as open_clip).
    pub bn3: BatchNorm<B>,
    /// Shortcut projection when the shape changes.
    pub downsample: Option<Downsample<B>>,
    /// Spatial stride (done by average pooling).
    pub stride: usize,
}

impl<B: Backend> Bottleneck<B> {
    const EXPANSION: usize = 4;

    fn new(inplanes: usize, planes: usize, stride: usize, device: &B::Device) -> Self {
        let out = planes * Self::EXPANSION;
        let mut bn3 = batch_norm(out, device);
        bn3.gamma = Initializer::Zeros.init([out], device);
        let downsample = (stride > 1 || inplanes != out).then(|| Downsample {
            conv: conv(inplanes, out, 1, 1, device),
            bn: batch_norm(out, device),
            stride,
        });
        Self {
            conv1: conv(inplanes, planes, 1, 1, device),
            bn1: batch_norm(planes, device),
            conv2: conv(planes, planes, 3, 1, device),
            bn2: batch_norm(planes, device),
            conv3: conv(planes, out, 1, 1, device),
            bn3,
            downsample,
            stride,
        }
    }

    /// # Shapes
    /// - `x`: `[N, inplanes, H, W]` -> `[N, 4 * planes, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = relu(batch_norm_2d(&self.bn1, conv1x1(&self.conv1, x.clone())));
        let out = relu(batch_norm_2d(&self.bn2, autocast::conv2d(&self.conv2, out)));
        let out = if self.stride > 1 {
            avg_pool(out, self.stride)
        } else {
            out
        };
        let out = batch_norm_2d(&self.bn3, conv1x1(&self.conv3, out));
        let identity = match &self.downsample {
            Some(d) => {
                let x = if d.stride > 1 {
                    avg_pool(x, d.stride)
                } else {
                    x
                };
                batch_norm_2d(&d.bn, conv1x1(&d.conv, x))
            }
            None => x,
        };
        relu(out + identity)
    }
}

/// QKV attention pooling: the mean token, prepended to the flattened feature map, attends to
/// all positions; its output, projected by `c_proj`, is the embedding.
#[derive(Module, Debug)]
pub struct AttentionPool2d<B: Backend> {
    /// Positional embeddings, `[grid^2 + 1, feature_width]` (row 0: the mean token).
    pub positional_embedding: Param<Tensor<B, 2>>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection to `embed_dim`.
    pub c_proj: Linear<B>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> AttentionPool2d<B> {
    fn new(grid: usize, width: usize, heads: usize, out: usize, device: &B::Device) -> Self {
        // open_clip: positional `randn / sqrt(width)`; the four weights normal(width^-0.5);
        // biases keep nn.Linear's default uniform(±1/sqrt(width)).
        let std = (width as f64).powf(-0.5);
        let bias = Some(uniform(std));
        Self {
            positional_embedding: normal(std).init([grid * grid + 1, width], device),
            k_proj: linear(width, width, normal(std), bias.clone(), device),
            q_proj: linear(width, width, normal(std), bias.clone(), device),
            v_proj: linear(width, width, normal(std), bias.clone(), device),
            c_proj: linear(width, out, normal(std), bias, device),
            heads,
        }
    }

    /// Only the mean token's query is computed: it is the only output open_clip keeps.
    ///
    /// # Shapes
    /// - `x`: `[N, C, H, W]` -> `[N, embed_dim]`
    ///
    /// # Panics
    /// If `H x W` is not the pool's grid; [`ModifiedResNet::forward`] checks its images first.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, h, w] = x.dims();
        let x = x.reshape([n, c, h * w]).swap_dims(1, 2);
        let mean = x.clone().mean_dim(1);
        let x = Tensor::cat(vec![mean, x], 1) + self.positional_embedding.val().unsqueeze::<3>();
        let l = h * w + 1;
        let heads = self.heads;
        let hd = c / heads;
        // Token-flat projections: one weight-gradient product each (see `linear_tokens`).
        let q = linear_tokens(&self.q_proj, x.clone().narrow(1, 0, 1))
            .reshape([n, 1, heads, hd])
            .swap_dims(1, 2);
        let k = linear_tokens(&self.k_proj, x.clone())
            .reshape([n, l, heads, hd])
            .swap_dims(1, 2);
        let v = linear_tokens(&self.v_proj, x)
            .reshape([n, l, heads, hd])
            .swap_dims(1, 2);
        let out = autocast::attention(q, k, v, None, AttentionModuleOptions::default());
        autocast::linear(&self.c_proj, out.reshape([n, c]))
    }
}

/// ModifiedResNet: a 3-convolution stem with average pooling, four stages of
/// [`Bottleneck`]s with anti-aliased (average-pool) downsampling, and [`AttentionPool2d`].
#[derive(Module, Debug)]
pub struct ModifiedResNet<B: Backend> {
    /// Stem convolution 1 (3 -> width/2, stride 2).
    pub conv1: Conv2d<B>,
    /// Stem BatchNorm 1.
    pub bn1: BatchNorm<B>,
    /// Stem convolution 2 (width/2 -> width/2).
    pub conv2: Conv2d<B>,
    /// Stem BatchNorm 2.
    pub bn2: BatchNorm<B>,
    /// Stem convolution 3 (width/2 -> width).
    pub conv3: Conv2d<B>,
    /// Stem BatchNorm 3.
    pub bn3: BatchNorm<B>,
    /// Stage 1 (stride 1).
    pub layer1: Vec<Bottleneck<B>>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<Bottleneck<B>>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<Bottleneck<B>>,
    /// Stage 4 (stride 2).
    pub layer4: Vec<Bottleneck<B>>,
    /// The attention-pool head.
    pub attnpool: AttentionPool2d<B>,
}

impl ModifiedResNetConfig {
    /// Builds the ModifiedResNet, its attention pool projecting to `embed_dim`, as open_clip's
    /// `_build_vision_tower(embed_dim, vision_cfg)` for a list of `layers` (its activations are
    /// ReLUs, so `quick_gelu` does not apply). The initialisation is
    /// `ModifiedResNet.init_parameters`: zero `bn3` weights, attention-pool weights normal
    /// `feature_width^-0.5`, convolutions at PyTorch's defaults. Parameters are created
    /// lazily, so building a tower only to load weights into it is cheap.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`], naming the field, if [`ModifiedResNetConfig::validate`]
    /// fails or `embed_dim` is 0.
    pub fn init<B: Backend>(
        &self,
        embed_dim: usize,
        device: &B::Device,
    ) -> Result<ModifiedResNet<B>, ModelError> {
        check_embed_dim(embed_dim)?;
        self.validate()?;
        Ok(ModifiedResNet::new(self, embed_dim, device))
    }
}

impl<B: Backend> ModifiedResNet<B> {
    /// The tower of a valid config (see [`ModifiedResNetConfig::init`]).
    fn new(config: &ModifiedResNetConfig, embed_dim: usize, device: &B::Device) -> Self {
        let width = config.width;
        let mut inplanes = width;
        let mut stage = |planes: usize, blocks: usize, stride: usize| {
            let mut layer = vec![Bottleneck::new(inplanes, planes, stride, device)];
            inplanes = planes * Bottleneck::<B>::EXPANSION;
            layer.extend((1..blocks).map(|_| Bottleneck::new(inplanes, planes, 1, device)));
            layer
        };
        let layer1 = stage(width, config.layers[0], 1);
        let layer2 = stage(width * 2, config.layers[1], 2);
        let layer3 = stage(width * 4, config.layers[2], 2);
        let layer4 = stage(width * 8, config.layers[3], 2);
        Self {
            conv1: conv(3, width / 2, 3, 2, device),
            bn1: batch_norm(width / 2, device),
            conv2: conv(width / 2, width / 2, 3, 1, device),
            bn2: batch_norm(width / 2, device),
            conv3: conv(width / 2, width, 3, 1, device),
            bn3: batch_norm(width, device),
            layer1,
            layer2,
            layer3,
            layer4,
            attnpool: AttentionPool2d::new(
                config.grid_size(),
                config.feature_width(),
                config.heads(),
                embed_dim,
                device,
            ),
        }
    }

    /// Image embeddings.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, S, S]` (S = `image_size`) -> `[N, embed_dim]`
    ///
    /// # Errors
    /// [`ModelError::InputShape`] if the images do not have 3 channels or do not give the final
    /// feature map the attention pool was built for (see [`ModifiedResNet::check_images`]).
    pub fn forward(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, ModelError> {
        self.check_images(images.dims())?;
        let x = relu(batch_norm_2d(
            &self.bn1,
            autocast::conv2d(&self.conv1, images),
        ));
        let x = relu(batch_norm_2d(&self.bn2, autocast::conv2d(&self.conv2, x)));
        let x = relu(batch_norm_2d(&self.bn3, autocast::conv2d(&self.conv3, x)));
        let mut x = avg_pool(x, 2);
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        Ok(self.attnpool.forward(x))
    }

    /// Checks an image batch's shape `[N, C, H, W]` without touching its data: `C` must be 3
    /// and `H`, `W` must give, through the stem and the stages (total stride 32), the square
    /// final feature map the attention pool was built for (`vision_cfg.image_size / 32`: a 7x7
    /// map for sides 223 to 254).
    ///
    /// # Errors
    /// [`ModelError::InputShape`], naming the sides that fit.
    pub fn check_images(&self, dims: [usize; 4]) -> Result<(), ModelError> {
        const PART: &str = "ModifiedResNet vision tower";
        check_channels(PART, dims)?;
        let [_, _, h, w] = dims;
        let grid = self.grid();
        let map = [self.feature_map_side(h), self.feature_map_side(w)];
        if map == [grid, grid] {
            return Ok(());
        }
        let fits = show_range(sizes_giving(grid, |side| self.feature_map_side(side)));
        Err(ModelError::InputShape {
            part: PART,
            input: "images",
            expected: format!(
                "[N, 3, H, W] with H and W in {fits}, the sides that give the {grid}x{grid} final \
                 feature map the attention pool was built for (these images give {}x{}): resize \
                 the images to the model's image size (vision_cfg.image_size)",
                map[0], map[1],
            ),
            got: dims.to_vec(),
        })
    }

    /// The side of the attention pool's square position grid (its positional embedding has
    /// `grid^2 + 1` rows; the shape is read without initialising the parameter).
    fn grid(&self) -> usize {
        let [positions, _] = self.attnpool.positional_embedding.lazy_shape().dims();
        (positions - 1).isqrt()
    }

    /// The side of the final feature map of images of side `size`, as the forward's
    /// convolutions and pools compute it (0 where a window does not fit).
    fn feature_map_side(&self, size: usize) -> usize {
        // Stem: conv1 (3x3, stride 2, padding 1), conv2 and conv3 (3x3, stride 1, padding 1),
        // then a 2x2 average pool.
        let stem = [(3, 2, 1), (3, 1, 1), (3, 1, 1), (2, 2, 0)];
        let mut side = stem
            .iter()
            .fold(size, |side, &(k, s, p)| conv_out(side, k, s, p));
        // A block's 1x1 and padded 3x3 convolutions keep the size; its stride is a pool.
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            if block.stride > 1 {
                side = conv_out(side, block.stride, block.stride, 0);
            }
        }
        side
    }
}
