//! The ViT vision tower (open_clip's `VisionTransformer`).

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};

use crate::autocast;
use crate::config::{Activation, PosEmbedType, VisionPool, VitConfig, check_embed_dim};
use crate::error::ModelError;
use crate::shape::{check_channels, conv_out, show_range, sizes_giving};
use crate::transformer::{
    BlockInit, MlpActivation, Transformer, TransformerSpec, layer_norm, normal,
};

/// Settings of a [`VisionTransformer`] that are not parameters.
#[derive(Debug, Clone)]
struct VitSettings {
    pool: VisionPool,
    final_ln_after_pool: bool,
    patch_dropout: f64,
    grid: [usize; 2],
}

/// A vision transformer: patchify (`conv1`), prepend the class token, add positional
/// embeddings, `ln_pre`, pre-norm transformer, pool, `ln_post`, project (`x @ proj`).
///
/// Field names are open_clip's state-dict keys under `visual.`.
#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    /// Patch embedding: a convolution with kernel = stride = patch size, no bias;
    /// weight `[width, 3, patch_h, patch_w]`.
    pub conv1: Conv2d<B>,
    /// The class token, `[width]`.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// Positional embeddings, `[1 + grid_h * grid_w, width]` (row 0 is the class token's).
    pub positional_embedding: Param<Tensor<B, 2>>,
    /// LayerNorm before the transformer (absent with `no_ln_pre`).
    pub ln_pre: Option<LayerNorm<B>>,
    /// The residual blocks (bidirectional attention).
    pub transformer: Transformer<B>,
    /// LayerNorm on the pooled token (or on every token before average pooling).
    pub ln_post: LayerNorm<B>,
    /// Output projection, a raw `[width, embed_dim]` matrix applied as `x @ proj`.
    pub proj: Param<Tensor<B, 2>>,
    #[module(skip)]
    settings: VitSettings,
}

impl VitConfig {
    /// Builds the ViT, projecting to `embed_dim`, with `activation` in its MLPs (the top-level
    /// `quick_gelu` of a [`crate::ClipConfig`]), as open_clip's
    /// `_build_vision_tower(embed_dim, vision_cfg, quick_gelu)`. The initialisation is
    /// open_clip's: PyTorch's module defaults, and `class_embedding`, `positional_embedding`
    /// (unless `sin_cos_2d`) and `proj` as `width^-0.5 * randn`. Parameters are created lazily,
    /// so building a tower only to load weights into it is cheap.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`], naming the field, if [`VitConfig::validate`] fails or
    /// `embed_dim` is 0.
    pub fn init<B: Backend>(
        &self,
        embed_dim: usize,
        activation: Activation,
        device: &B::Device,
    ) -> Result<VisionTransformer<B>, ModelError> {
        check_embed_dim(embed_dim)?;
        self.validate()?;
        Ok(VisionTransformer::new(self, embed_dim, activation, device))
    }
}

impl<B: Backend> VisionTransformer<B> {
    /// The tower of a valid config (see [`VitConfig::init`]).
    fn new(
        config: &VitConfig,
        embed_dim: usize,
        activation: Activation,
        device: &B::Device,
    ) -> Self {
        let width = config.width;
        let grid = config.grid_size();
        let scale = (width as f64).powf(-0.5);
        let conv1 = Conv2dConfig::new([3, width], config.patch_size)
            .with_stride(config.patch_size)
            .with_bias(false)
            .init(device);
        let positional_embedding = match config.pos_embed_type {
            PosEmbedType::Learnable => normal(scale).init([grid[0] * grid[1] + 1, width], device),
            PosEmbedType::SinCos2d => {
                let values = sincos_2d(width, grid[0]);
                let tensor = Tensor::from_data(
                    TensorData::new(values, [grid[0] * grid[1] + 1, width]),
                    device,
                );
                Param::from_tensor(tensor).set_require_grad(false)
            }
        };
        let spec = TransformerSpec {
            width,
            layers: config.layers,
            heads: config.heads(),
            mlp_width: config.mlp_width(),
            ls_init_value: config.ls_init_value,
            activation: MlpActivation::resolve(activation, config.gelu_approximate),
            norm_eps: config.norm_eps,
            init: BlockInit::TorchDefault,
        };
        Self {
            conv1,
            class_embedding: normal(scale).init([width], device),
            positional_embedding,
            ln_pre: (!config.no_ln_pre).then(|| layer_norm(width, config.norm_eps, device)),
            transformer: Transformer::new(&spec, device),
            ln_post: layer_norm(width, config.norm_eps, device),
            proj: normal(scale).init([width, embed_dim], device),
            settings: VitSettings {
                pool: config.pool_type,
                final_ln_after_pool: config.final_ln_after_pool,
                patch_dropout: config.patch_dropout,
                grid,
            },
        }
    }

    /// Number of patch tokens per image (class token excluded).
    pub fn num_patches(&self) -> usize {
        self.settings.grid[0] * self.settings.grid[1]
    }

    /// Image embeddings. In training (an autodiff backend, as Burn's `Dropout` and `BatchNorm`
    /// decide) with `patch_dropout > 0`, a random `max(1, int(L * (1 - p)))` patches per image
    /// are kept, as open_clip's `PatchDropout`; in inference all are.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, embed_dim]`
    ///
    /// # Errors
    /// [`ModelError::InputShape`] if the images do not have 3 channels or do not give the patch
    /// grid the tower was built for (see [`VisionTransformer::check_images`]).
    pub fn forward(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, ModelError> {
        self.check_images(images.dims())?;
        let patches = self.patch_tokens(images);
        let [n, l, _] = patches.dims();
        let p = self.settings.patch_dropout;
        let patches = if p > 0.0 && B::ad_enabled(&patches.device()) {
            let keep = ((l as f64 * (1.0 - p)) as usize).max(1);
            let idx = random_keep_indices::<B>(n, l, keep, &patches.device());
            take_tokens(patches, idx)
        } else {
            patches
        };
        Ok(self.head(patches))
    }

    /// Checks an image batch's shape `[N, C, H, W]` without touching its data: `C` must be 3
    /// and `H`, `W` must give, through the patch convolution, the patch grid the tower was
    /// built for (`vision_cfg.image_size / patch_size`: with 16x16 patches and a 14x14 grid,
    /// sides 224 to 239).
    ///
    /// # Errors
    /// [`ModelError::InputShape`], naming the sides that fit.
    pub fn check_images(&self, dims: [usize; 4]) -> Result<(), ModelError> {
        const PART: &str = "ViT vision tower";
        check_channels(PART, dims)?;
        let [_, _, h, w] = dims;
        let grid = self.images_grid([h, w]);
        if grid == self.settings.grid {
            return Ok(());
        }
        let [gh, gw] = self.settings.grid;
        let [kh, kw] = self.conv1.kernel_size;
        let fits = |axis: usize| {
            show_range(sizes_giving(self.settings.grid[axis], |side| {
                self.images_grid([side, side])[axis]
            }))
        };
        Err(ModelError::InputShape {
            part: PART,
            input: "images",
            expected: format!(
                "[N, 3, H, W] with H in {} and W in {}, the sides that give the {gh}x{gw} grid of \
                 {kh}x{kw} patches the model was built for (these images give {}x{}): resize \
                 the images to the model's image size (vision_cfg.image_size)",
                fits(0),
                fits(1),
                grid[0],
                grid[1],
            ),
            got: dims.to_vec(),
        })
    }

    /// The patch grid `conv1` makes of images of sides `[H, W]` (kernel = stride = patch
    /// size, no padding).
    fn images_grid(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        let (k, s) = (self.conv1.kernel_size, self.conv1.stride);
        [conv_out(h, k[0], s[0], 0), conv_out(w, k[1], s[1], 0)]
    }

    /// Image embeddings from a random subset of patches (MAE-style masking, for CLIP-KD's
    /// masked feature distillation): per image, uniform noise is argsorted and the first
    /// `int(L * (1 - mask_ratio))` patches are kept, after their positional embeddings are added;
    /// the class token is always kept. Randomness comes from the backend RNG (`B::seed`).
    /// Patch dropout is not applied on top.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, embed_dim]`
    ///
    /// # Errors
    /// [`ModelError::InvalidMaskRatio`] outside `[0, 1)`; [`ModelError::InputShape`] as
    /// [`VisionTransformer::forward`].
    pub fn forward_masked(
        &self,
        images: Tensor<B, 4>,
        mask_ratio: f64,
    ) -> Result<Tensor<B, 2>, ModelError> {
        if !(0.0..1.0).contains(&mask_ratio) {
            return Err(ModelError::InvalidMaskRatio(mask_ratio));
        }
        self.check_images(images.dims())?;
        let patches = self.patch_tokens(images);
        let [n, l, _] = patches.dims();
        let keep = (l as f64 * (1.0 - mask_ratio)) as usize;
        let idx = random_keep_indices::<B>(n, l, keep, &patches.device());
        Ok(self.head(take_tokens(patches, idx)))
    }

    /// Image embeddings from the given patches only (the deterministic form of
    /// [`VisionTransformer::forward_masked`]). `keep[i]` lists the patch indices (row-major over
    /// the grid, `0..L`) kept for image `i`, in the order they enter the transformer. Indices
    /// out of range are not checked (the backend's gather decides).
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]`, `keep`: `[N, K]` -> `[N, embed_dim]`
    ///
    /// # Errors
    /// [`ModelError::InputShape`] as [`VisionTransformer::forward`];
    /// [`ModelError::InvalidKeepIndices`] if `keep` is not `[N, K]` with `K <= L`.
    pub fn forward_with_keep_indices(
        &self,
        images: Tensor<B, 4>,
        keep: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 2>, ModelError> {
        self.check_images(images.dims())?;
        let n = images.dims()[0];
        let l = self.num_patches();
        let [kn, kk] = keep.dims();
        if kn != n || kk > l {
            return Err(ModelError::InvalidKeepIndices {
                found: [kn, kk],
                batch: n,
                patches: l,
            });
        }
        let patches = self.patch_tokens(images);
        Ok(self.head(take_tokens(patches, keep)))
    }

    /// Patch tokens with their positional embeddings added, of images that passed
    /// [`VisionTransformer::check_images`].
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, L, width]`
    fn patch_tokens(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = autocast::conv2d(&self.conv1, images);
        let [n, w, gh, gw] = x.dims();
        debug_assert_eq!(
            [gh, gw],
            self.settings.grid,
            "check_images lets only the grid pass"
        );
        let x = x.reshape([n, w, gh * gw]).swap_dims(1, 2);
        let pos = self.positional_embedding.val().narrow(0, 1, gh * gw);
        x + pos.unsqueeze::<3>()
    }

    /// Prepends the class token, then runs `ln_pre`, the transformer, pooling and projection.
    ///
    /// # Shapes
    /// - `patches`: `[N, K, width]` -> `[N, embed_dim]`
    fn head(&self, patches: Tensor<B, 3>) -> Tensor<B, 2> {
        self.head_with_taps(patches, &[]).0
    }

    /// Image embeddings and the token outputs of the transformer blocks in `blocks` (open_clip's
    /// `visual.transformer.resblocks.{i}`, class token first): for feature distillation. All
    /// patches are used (no patch dropout), so that two models' tokens correspond.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, embed_dim]` and `blocks.len()` tensors
    ///   `[N, 1 + patches, width]`
    ///
    /// # Errors
    /// [`ModelError::InputShape`] as [`VisionTransformer::forward`].
    ///
    /// # Panics
    /// If a block index is not below `layers`.
    pub fn forward_with_block_outputs(
        &self,
        images: Tensor<B, 4>,
        blocks: &[usize],
    ) -> Result<(Tensor<B, 2>, Vec<Tensor<B, 3>>), ModelError> {
        self.check_images(images.dims())?;
        let patches = self.patch_tokens(images);
        Ok(self.head_with_taps(patches, blocks))
    }

    /// Number of transformer blocks.
    pub fn layers(&self) -> usize {
        self.transformer.resblocks.len()
    }

    fn head_with_taps(
        &self,
        patches: Tensor<B, 3>,
        taps: &[usize],
    ) -> (Tensor<B, 2>, Vec<Tensor<B, 3>>) {
        let [n, _, w] = patches.dims();
        let cls = self.class_embedding.val().unsqueeze::<2>()
            + self.positional_embedding.val().narrow(0, 0, 1);
        let cls = cls.unsqueeze::<3>().expand([n, 1, w]);
        let x = Tensor::cat(vec![cls, patches], 1);
        let x = match &self.ln_pre {
            Some(ln) => ln.forward(x),
            None => x,
        };
        let (x, tapped) = self.transformer.forward_with_taps(x, false, taps);
        let [_, t, _] = x.dims();
        let pooled = match (self.settings.pool, self.settings.final_ln_after_pool) {
            // LayerNorm acts per token, so normalising only the class token is the same as
            // open_clip's normalise-everything-then-pick.
            (VisionPool::Token, _) => self.ln_post.forward(x.narrow(1, 0, 1).reshape([n, w])),
            (VisionPool::Average, true) => self
                .ln_post
                .forward(x.narrow(1, 1, t - 1).mean_dim(1).reshape([n, w])),
            (VisionPool::Average, false) => self
                .ln_post
                .forward(x.narrow(1, 1, t - 1))
                .mean_dim(1)
                .reshape([n, w]),
        };
        (autocast::matmul(pooled, self.proj.val()), tapped)
    }
}

/// Per row, the first `keep` entries of an argsort of uniform noise: a uniformly random subset
/// of `0..l` in random order.
fn random_keep_indices<B: Backend>(
    n: usize,
    l: usize,
    keep: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let noise = Tensor::<B, 2>::random([n, l], Distribution::Default, device);
    noise.argsort(1).narrow(1, 0, keep)
}

/// `tokens[i, keep[i, j], :]` for every `i, j`, as one index-select on the flattened batch.
///
/// # Shapes
/// - `tokens`: `[N, L, W]`, `keep`: `[N, K]` -> `[N, K, W]`
fn take_tokens<B: Backend>(tokens: Tensor<B, 3>, keep: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    let [n, l, w] = tokens.dims();
    let [_, k] = keep.dims();
    let device = tokens.device();
    let offsets = Tensor::<B, 1, Int>::arange(0..n as i64, (&device, keep.dtype()))
        .mul_scalar(l as i64)
        .unsqueeze_dim::<2>(1);
    let flat = (keep + offsets).reshape([n * k]);
    tokens
        .reshape([n * l, w])
        .select(0, flat)
        .reshape([n, k, w])
}

/// open_clip's `get_2d_sincos_pos_embed(width, grid, cls_token=True)`: a zero row for the class
/// token, then per patch (row `i`, column `j`, row-major) `[sin(j w), cos(j w), sin(i w), cos(i w)]`
/// with `w_k = 10000^(-k / (width / 4))`, `k < width / 4`.
fn sincos_2d(width: usize, grid: usize) -> Vec<f32> {
    let quarter = width / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let mut out = vec![0.0f32; width];
    for i in 0..grid {
        for j in 0..grid {
            for coord in [j as f64, i as f64] {
                out.extend(omega.iter().map(|w| (coord * w).sin() as f32));
                out.extend(omega.iter().map(|w| (coord * w).cos() as f32));
            }
        }
    }
    out
}
