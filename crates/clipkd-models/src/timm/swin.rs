//! timm's `SwinTransformer` trunk (`timm/models/swin_transformer.py`, timm 1.0.x): patch
//! embedding (strided convolution + LayerNorm), stages of shifted-window attention blocks with
//! relative position bias (the shifted blocks masked so that tokens attend only within their
//! original region), patch merging at the start of every stage after the first, a final
//! LayerNorm and average pooling over the tokens.
//!
//! Field names are timm's module names (`patch_embed.proj`, `layers.{i}.downsample.reduction`,
//! `layers.{i}.blocks.{j}.attn.relative_position_bias_table`, `norm`), so the Burn paths are the
//! checkpoint keys under `visual.trunk.`. The relative position index and the attention mask
//! are not parameters (timm's non-persistent buffers): they are computed from the geometry.
//! Activations are `[N, H, W, C]` (timm's NHWC) between the stages.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::TimmMlp;
use super::drop_path::drop_path;
use crate::autocast;
use crate::config::TimmSwinConfig;
use crate::transformer::{gelu_exact, layer_norm, linear, normal, uniform};

/// timm's `init_weights_vit_timm` for a `Linear`: weight normal(0, 0.02) (timm's truncation at
/// ±2 never applies at this scale), bias zero.
fn vit_linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    linear(
        d_in,
        d_out,
        normal(0.02),
        bias.then_some(burn::module::Initializer::Zeros),
        device,
    )
}

/// timm's `PatchEmbed` with NHWC output: a `patch x patch` convolution with stride `patch`,
/// then LayerNorm over the channels.
#[derive(Module, Debug)]
pub struct SwinPatchEmbed<B: Backend> {
    /// The patch projection (PyTorch's default `Conv2d` initialisation).
    pub proj: Conv2d<B>,
    /// LayerNorm over the embedding.
    pub norm: LayerNorm<B>,
}

/// timm's `PatchMerging`: each 2x2 neighbourhood concatenated (`4 C`), LayerNorm, then a
/// linear reduction to `2 C` without bias.
#[derive(Module, Debug)]
pub struct PatchMerging<B: Backend> {
    /// LayerNorm over the `4 C` concatenation.
    pub norm: LayerNorm<B>,
    /// `4 C -> 2 C`, no bias.
    pub reduction: Linear<B>,
}

impl<B: Backend> PatchMerging<B> {
    /// # Shapes
    /// - `x`: `[N, H, W, C]` -> `[N, ceil(H/2), ceil(W/2), 2 C]`
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = pad_to_multiple(x, 2);
        let [n, h, w, c] = x.dims();
        // Concatenation order of timm (and of the original Swin): x[0::2, 0::2],
        // x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2], i.e. channel index (dw * 2 + dh) * C + c.
        let x = x
            .reshape([n, h / 2, 2, w / 2, 2, c])
            .permute([0, 1, 3, 4, 2, 5])
            .reshape([n, h / 2, w / 2, 4 * c]);
        autocast::linear(&self.reduction, self.norm.forward(x))
    }
}

/// timm's `WindowAttention`: multi-head attention within each window, with a learned bias per
/// relative position and head.
#[derive(Module, Debug)]
pub struct WindowAttention<B: Backend> {
    /// The bias table, `[(2 window - 1)^2, heads]`.
    pub relative_position_bias_table: Param<Tensor<B, 2>>,
    /// q, k, v projection (`C -> 3 C`, with bias).
    pub qkv: Linear<B>,
    /// Output projection.
    pub proj: Linear<B>,
}

/// The geometry of one block: not parameters.
#[derive(Debug, Clone)]
struct BlockGeometry {
    heads: usize,
    /// The window side (the feature map's side where that is smaller than the configured one).
    window: usize,
    /// The cyclic shift (0 for even blocks and where the map fits one window).
    shift: usize,
    /// The feature map side the block is built for.
    resolution: usize,
    drop_path: f64,
}

/// What the attention of one block adds to its scores, computed once from its geometry (timm's
/// non-persistent buffers): the bias table's row for each pair of window positions, and for a
/// shifted block the region mask of each window.
#[derive(Clone)]
struct AttentionTables {
    /// `[w^2 * w^2]` rows of the bias table ([`relative_position_index`]).
    index: Vec<i64>,
    /// `[windows * w^2 * w^2]` ([`shifted_window_mask`]) and the number of windows.
    mask: Option<(Vec<f32>, usize)>,
}

impl AttentionTables {
    fn new(g: &BlockGeometry) -> Self {
        Self {
            index: relative_position_index(g.window),
            mask: (g.shift > 0).then(|| shifted_window_mask(g.resolution, g.window, g.shift)),
        }
    }
}

impl std::fmt::Debug for AttentionTables {
    // The tables are derived from the geometry; their sizes say enough.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttentionTables")
            .field("index", &self.index.len())
            .field("mask", &self.mask.as_ref().map(|(m, w)| (m.len(), w)))
            .finish()
    }
}

/// timm's `SwinTransformerBlock`: `x + attn(norm1(x))` over (shifted) windows, then
/// `x + mlp(norm2(x))`.
#[derive(Module, Debug)]
pub struct SwinBlock<B: Backend> {
    /// LayerNorm before the attention.
    pub norm1: LayerNorm<B>,
    /// Window attention.
    pub attn: WindowAttention<B>,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm<B>,
    /// The MLP (`fc1`, GELU, `fc2`).
    pub mlp: TimmMlp<B>,
    #[module(skip)]
    geometry: BlockGeometry,
    #[module(skip)]
    tables: AttentionTables,
}

/// timm's `get_relative_position_index`: for each pair of positions of a `w x w` window, the
/// row of the bias table (`(dy + w - 1) * (2 w - 1) + (dx + w - 1)`).
fn relative_position_index(w: usize) -> Vec<i64> {
    let n = w * w;
    let mut index = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dy = (i / w) as i64 - (j / w) as i64 + w as i64 - 1;
            let dx = (i % w) as i64 - (j % w) as i64 + w as i64 - 1;
            index.push(dy * (2 * w as i64 - 1) + dx);
        }
    }
    index
}

/// timm's `get_attn_mask` for a shifted block: `[windows, w^2, w^2]`, 0 where two positions of
/// a window come from the same region of the (padded) map, -100 elsewhere.
fn shifted_window_mask(side: usize, window: usize, shift: usize) -> (Vec<f32>, usize) {
    let padded = side.div_ceil(window) * window;
    // timm labels the 3x3 regions cut at -window and -shift along each axis.
    let region = |p: usize| {
        if p < padded - window {
            0
        } else if p < padded - shift {
            1
        } else {
            2
        }
    };
    let per_side = padded / window;
    let area = window * window;
    let mut mask = Vec::with_capacity(per_side * per_side * area * area);
    for wy in 0..per_side {
        for wx in 0..per_side {
            let labels: Vec<usize> = (0..area)
                .map(|p| {
                    let (y, x) = (wy * window + p / window, wx * window + p % window);
                    region(y) * 3 + region(x)
                })
                .collect();
            for a in &labels {
                for b in &labels {
                    mask.push(if a == b { 0.0 } else { -100.0 });
                }
            }
        }
    }
    (mask, per_side * per_side)
}

/// `torch.roll(x, shifts=(shift, shift), dims=(1, 2))` on `[N, H, W, C]`: the element at `i`
/// moves to `i + shift`. Burn's `roll` moves it to `i - shift` (its `roll(s)` is
/// `torch.roll(-s)`), hence the sign.
fn torch_roll<B: Backend>(x: Tensor<B, 4>, shift: i64) -> Tensor<B, 4> {
    x.roll(&[-shift, -shift], &[1, 2])
}

/// Pads `[N, H, W, C]` with zeros at the bottom and right to multiples of `m`.
fn pad_to_multiple<B: Backend>(x: Tensor<B, 4>, m: usize) -> Tensor<B, 4> {
    let [n, h, w, c] = x.dims();
    let (ph, pw) = (h.div_ceil(m) * m - h, w.div_ceil(m) * m - w);
    let device = x.device();
    let x = if ph > 0 {
        Tensor::cat(vec![x, Tensor::zeros([n, ph, w, c], &device)], 1)
    } else {
        x
    };
    if pw > 0 {
        Tensor::cat(vec![x, Tensor::zeros([n, h + ph, pw, c], &device)], 2)
    } else {
        x
    }
}

impl<B: Backend> SwinBlock<B> {
    fn new(dim: usize, mlp_ratio: f64, geometry: BlockGeometry, device: &B::Device) -> Self {
        let w = geometry.window;
        let hidden = (dim as f64 * mlp_ratio) as usize;
        Self {
            norm1: layer_norm(dim, 1e-5, device),
            attn: WindowAttention {
                relative_position_bias_table: normal(0.02)
                    .init([(2 * w - 1) * (2 * w - 1), geometry.heads], device),
                qkv: vit_linear(dim, 3 * dim, true, device),
                proj: vit_linear(dim, dim, true, device),
            },
            norm2: layer_norm(dim, 1e-5, device),
            mlp: TimmMlp {
                fc1: vit_linear(dim, hidden, true, device),
                fc2: vit_linear(hidden, dim, true, device),
                drop: burn::nn::DropoutConfig::new(0.0).init(),
            },
            tables: AttentionTables::new(&geometry),
            geometry,
        }
    }

    /// The attention branch: shift, window partition, attention with the relative position
    /// bias (and the shift mask), window merge, shift back.
    fn attention(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let g = &self.geometry;
        let [n, h, w, c] = x.dims();
        let device = x.device();
        let shifted = if g.shift > 0 {
            torch_roll(x, -(g.shift as i64))
        } else {
            x
        };
        let win = g.window;
        let padded = pad_to_multiple(shifted, win);
        let [_, hp, wp, _] = padded.dims();
        let (nh, nw, area) = (hp / win, wp / win, win * win);
        let windows = padded
            .reshape([n, nh, win, nw, win, c])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([n * nh * nw, area, c]);

        let heads = g.heads;
        let hd = c / heads;
        let b = n * nh * nw;
        let qkv = autocast::linear(&self.attn.qkv, windows)
            .reshape([b, area, 3, heads, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, heads, area, hd]);
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = autocast::matmul(q.mul_scalar((hd as f64).powf(-0.5)), k.swap_dims(2, 3));
        let index = Tensor::<B, 1, Int>::from_data(
            TensorData::new(self.tables.index.clone(), [area * area]),
            &device,
        );
        let bias = self
            .attn
            .relative_position_bias_table
            .val()
            .select(0, index)
            .reshape([area, area, heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>();
        let mut scores = scores + bias;
        if let Some((mask, windows)) = &self.tables.mask {
            let windows = *windows;
            let mask = Tensor::<B, 4>::from_data(
                TensorData::new(mask.clone(), [1, windows, area, area]),
                &device,
            )
            .unsqueeze_dim::<5>(2);
            scores = (scores.reshape([n, windows, heads, area, area]) + mask)
                .reshape([b, heads, area, area]);
        }
        let attn = softmax(scores, 3);
        let out = autocast::matmul(attn, v)
            .swap_dims(1, 2)
            .reshape([b, area, c]);
        let out = autocast::linear(&self.attn.proj, out)
            .reshape([n, nh, nw, win, win, c])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([n, hp, wp, c])
            .slice([0..n, 0..h, 0..w, 0..c]);
        if g.shift > 0 {
            torch_roll(out, g.shift as i64)
        } else {
            out
        }
    }

    /// # Shapes
    /// - `x`: `[N, H, W, C]` -> the same
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let rate = self.geometry.drop_path;
        let x = x.clone() + drop_path(self.attention(self.norm1.forward(x)), rate);
        let hidden = gelu_exact(autocast::linear(
            &self.mlp.fc1,
            self.norm2.forward(x.clone()),
        ));
        x + drop_path(autocast::linear(&self.mlp.fc2, hidden), rate)
    }
}

/// One stage: patch merging (stages after the first), then the blocks.
#[derive(Module, Debug)]
pub struct SwinStage<B: Backend> {
    /// Patch merging at the stage's start (timm >= 0.9 places it here).
    pub downsample: Option<PatchMerging<B>>,
    /// The blocks (even ones regular, odd ones shifted).
    pub blocks: Vec<SwinBlock<B>>,
}

/// timm's `SwinTransformer` without its classifier.
#[derive(Module, Debug)]
pub struct TimmSwin<B: Backend> {
    /// Patch embedding.
    pub patch_embed: SwinPatchEmbed<B>,
    /// The stages.
    pub layers: Vec<SwinStage<B>>,
    /// Final LayerNorm.
    pub norm: LayerNorm<B>,
    #[module(skip)]
    img_size: usize,
}

impl<B: Backend> TimmSwin<B> {
    /// The trunk of `config`, stochastic depth rising linearly over all blocks from 0 to
    /// `drop_path_rate` (timm's `calculate_drop_path_rates`).
    pub(crate) fn new(config: &TimmSwinConfig, drop_path_rate: f64, device: &B::Device) -> Self {
        let p = config.patch_size;
        let fan_in = 3 * p * p;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let proj = Conv2dConfig::new([3, config.embed_dim], [p, p])
            .with_stride([p, p])
            .with_initializer(uniform(bound))
            .init(device);
        let proj = Conv2d {
            bias: Some(uniform(bound).init([config.embed_dim], device)),
            ..proj
        };
        let total: usize = config.depths.iter().sum();
        let mut index = 0;
        let mut resolution = config.img_size / p;
        let layers = config
            .depths
            .iter()
            .zip(&config.num_heads)
            .enumerate()
            .map(|(i, (&depth, &heads))| {
                let dim = config.stage_dim(i);
                let downsample = (i > 0).then(|| {
                    resolution = resolution.div_ceil(2);
                    let d = config.stage_dim(i - 1);
                    PatchMerging {
                        norm: layer_norm(4 * d, 1e-5, device),
                        reduction: vit_linear(4 * d, dim, false, device),
                    }
                });
                // timm's `_calc_window_shift`: a map no larger than the window is one window.
                let window = config.window_size.min(resolution);
                let blocks = (0..depth)
                    .map(|j| {
                        let shift = if j % 2 == 1 && resolution > config.window_size {
                            config.window_size / 2
                        } else {
                            0
                        };
                        let rate = if total > 1 {
                            drop_path_rate * index as f64 / (total - 1) as f64
                        } else {
                            0.0
                        };
                        index += 1;
                        let geometry = BlockGeometry {
                            heads,
                            window,
                            shift,
                            resolution,
                            drop_path: rate,
                        };
                        SwinBlock::new(dim, config.mlp_ratio, geometry, device)
                    })
                    .collect();
                SwinStage { downsample, blocks }
            })
            .collect();
        Self {
            patch_embed: SwinPatchEmbed {
                proj,
                norm: layer_norm(config.embed_dim, 1e-5, device),
            },
            layers,
            norm: layer_norm(config.num_features(), 1e-5, device),
            img_size: config.img_size,
        }
    }

    /// The side of the images the trunk takes (timm's `img_size`).
    pub fn img_size(&self) -> usize {
        self.img_size
    }

    /// The normalised tokens of the last stage (timm's `forward_features`).
    ///
    /// # Shapes
    /// - `images`: `[N, 3, img_size, img_size]` -> `[N, h, w, num_features]`
    pub fn forward_features(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = autocast::conv2d(&self.patch_embed.proj, images).permute([0, 2, 3, 1]);
        let mut x = self.patch_embed.norm.forward(x);
        for stage in &self.layers {
            if let Some(merge) = &stage.downsample {
                x = merge.forward(x);
            }
            for block in &stage.blocks {
                x = block.forward(x);
            }
        }
        self.norm.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The element at 0 moves to 1, as in `torch.roll(x, 1)`.
    #[test]
    fn torch_roll_moves_forward() {
        let x = Tensor::<burn_flex::Flex, 4>::from_data(
            TensorData::new(vec![0.0f32, 1.0, 2.0], [1, 3, 1, 1]),
            &Default::default(),
        );
        let rolled: Vec<f32> = torch_roll(x, 1).into_data().to_vec().unwrap();
        assert_eq!(rolled, [2.0, 0.0, 1.0]);
    }

    /// timm's index for a 2x2 window (printed by `get_relative_position_index(2, 2)`).
    #[test]
    fn relative_position_index_is_timms() {
        assert_eq!(
            relative_position_index(2),
            [4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
    }

    /// A 4x4 map, window 2, shift 1: the last row and column of windows mix regions.
    #[test]
    fn shifted_window_mask_separates_regions() {
        let (mask, windows) = shifted_window_mask(4, 2, 1);
        assert_eq!(windows, 4);
        // Window 0 (top left) lies in one region: no masking.
        assert!(mask[..16].iter().all(|v| *v == 0.0));
        // Window 3 (bottom right) has four regions: each position sees only itself.
        let last = &mask[48..64];
        for a in 0..4 {
            for b in 0..4 {
                assert_eq!(last[a * 4 + b], if a == b { 0.0 } else { -100.0 });
            }
        }
    }
}
