//! Mixed precision for clipkd's models, as PyTorch's `torch.autocast`: inside an [`autocast`]
//! scope, the models run their matrix products, convolutions and attention in a lower
//! floating-point type (bf16 or f16) and everything else in the type of their inputs (f32).
//!
//! Burn 0.21 has no autocast, so the models call the helpers of this module at each of those
//! ops ([`linear`], [`matmul`], [`conv2d`], [`attention`]). Inside a scope a helper casts its
//! operands (activations and weights) to the compute type, runs the op, and casts the result
//! back to the type of its activation input; outside a scope it is the plain Burn op. The casts
//! are differentiable, so the backward runs the same ops in the compute type and hands f32
//! gradients to f32 parameters: the parameters (the "master weights") and the optimizer never
//! leave f32.
//!
//! | runs in the compute type (bf16/f16) | runs in f32 |
//! |---|---|
//! | linear layers (q/k/v and output projections, MLP, attention pooling, text projection), other matrix products of the towers, convolutions (patch embedding, ResNet), attention (scores, softmax and weighted sum, in Burn's fused op) | LayerNorm, BatchNorm, GELU/QuickGELU/ReLU, residual additions, pooling, embeddings, normalisation of the embeddings, the logit scale, every loss |
//!
//! PyTorch's autocast keeps an op's output in the compute type, so the activations between
//! two matrix products are bf16 there; here every op returns f32 (its output is cast back),
//! which costs a cast per op and is at least as precise. The losses, including their matrix
//! products (the `[N, N]` logits) and projectors, stay in f32 (PyTorch's autocast would run
//! those products in bf16).
//!
//! The scope is per thread, like PyTorch's: a trainer enters it around the forward of the
//! teacher and the student and leaves it before the losses.

use std::cell::Cell;

use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Tensor};

thread_local! {
    static COMPUTE: Cell<Option<DType>> = const { Cell::new(None) };
}

/// The scope entered by [`autocast`]; leaving it (dropping it) restores the previous type.
#[must_use = "the scope ends when this guard is dropped"]
#[derive(Debug)]
pub struct Autocast {
    previous: Option<DType>,
}

impl Drop for Autocast {
    fn drop(&mut self) {
        COMPUTE.with(|c| c.set(self.previous));
    }
}

/// Enters an autocast scope on this thread: until the guard is dropped, the models' matrix
/// products, convolutions and attention run in `dtype`. `None` (or `Some(DType::F32)`) leaves
/// every op in its input type, which is how a scope can be switched off inside another.
pub fn autocast(dtype: Option<DType>) -> Autocast {
    let dtype = dtype.filter(|d| *d != DType::F32);
    Autocast {
        previous: COMPUTE.with(|c| c.replace(dtype)),
    }
}

/// The compute type of the current scope on this thread (`None` outside any scope).
pub fn compute_dtype() -> Option<DType> {
    COMPUTE.with(|c| c.get())
}

/// `x` in type `dtype` (no op when it already is).
fn to<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

/// A [`Linear`] layer applied to `x` (any rank, the last dimension is the features).
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let Some(compute) = compute_dtype() else {
        return layer.forward(x);
    };
    let out = x.dtype();
    let y = burn::tensor::module::linear(
        to(x, compute),
        to(layer.weight.val(), compute),
        layer.bias.as_ref().map(|b| to(b.val(), compute)),
    );
    to(y, out)
}

/// The matrix product `a · b` (batched as Burn's `matmul`).
pub fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let Some(compute) = compute_dtype() else {
        return a.matmul(b);
    };
    let out = a.dtype();
    to(to(a, compute).matmul(to(b, compute)), out)
}

/// A [`Conv2d`] layer applied to `x` (`[N, C, H, W]`).
pub fn conv2d<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let Some(compute) = compute_dtype() else {
        return layer.forward(x);
    };
    let out = x.dtype();
    // The layer with its parameters cast (the casts stay in the autodiff graph, so the
    // gradients still reach the f32 parameters); Burn's forward then computes the padding.
    let lowered = Conv2d {
        weight: layer.weight.clone().map(|w| to(w, compute)),
        bias: layer.bias.clone().map(|b| b.map(|b| to(b, compute))),
        ..layer.clone()
    };
    to(lowered.forward(to(x, compute)), out)
}

/// Burn's fused attention (`softmax(q kᵀ · scale + bias) v`, masked), as
/// [`burn::tensor::module::attention`].
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    let Some(compute) = compute_dtype() else {
        return burn::tensor::module::attention(q, k, v, mask, None, options);
    };
    let out = q.dtype();
    let y = burn::tensor::module::attention(
        to(q, compute),
        to(k, compute),
        to(v, compute),
        mask,
        None,
        options,
    );
    to(y, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore_the_previous_type() {
        assert_eq!(compute_dtype(), None);
        {
            let _outer = autocast(Some(DType::BF16));
            assert_eq!(compute_dtype(), Some(DType::BF16));
            {
                let _inner = autocast(None);
                assert_eq!(compute_dtype(), None);
            }
            assert_eq!(compute_dtype(), Some(DType::BF16));
            let _f32 = autocast(Some(DType::F32));
            assert_eq!(compute_dtype(), None, "f32 is no autocast");
        }
        assert_eq!(compute_dtype(), None);
    }
}
