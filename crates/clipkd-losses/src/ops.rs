//! Tensor functions the losses are built from, public so that research code can build its own
//! losses from the same pieces (and get the same numerics).
//!
//! Conventions: logits are `[n, N]` with the `n` anchor rows of this device against all `N`
//! candidates of the global batch; the positive of anchor row `i` is column `offset + i`.
//! Reductions follow PyTorch's defaults (cross entropy: mean over rows; KL: `batchmean`; MSE:
//! mean over all elements).

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, backend::Backend};

use crate::input::LocalRows;

/// Epsilon of [`l2_normalize`], as `torch.nn.functional.normalize`'s default.
pub const NORM_EPS: f64 = 1e-12;

/// Rows divided by their L2 norm.
///
/// Computes `x / sqrt(‖x‖² + ε²)` with `ε = 1e-12`: the same value as PyTorch's
/// `x / max(‖x‖, ε)` for every row with a norm above ~1e-6 (in f32), and with a finite
/// gradient (zero) for an all-zero row, where PyTorch's is undefined.
///
/// # Shapes
/// - `x`: `[n, d]` -> `[n, d]`
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x
        .clone()
        .square()
        .sum_dim(1)
        .add_scalar(NORM_EPS * NORM_EPS)
        .sqrt();
    x / norm
}

/// This device's rows of a global-batch tensor (no copy when they are all the rows).
pub fn local<B: Backend>(x: &Tensor<B, 2>, rows: LocalRows) -> Tensor<B, 2> {
    if rows.is_all(x.dims()[0]) {
        x.clone()
    } else {
        x.clone().narrow(0, rows.offset, rows.len)
    }
}

/// `scale · anchors · candidatesᵀ`, with a `[1]` scale tensor (gradient flows to it).
///
/// # Shapes
/// - `anchors`: `[n, d]`, `candidates`: `[N, d]`, `scale`: `[1]` -> `[n, N]`
pub fn scaled_similarity<B: Backend>(
    anchors: Tensor<B, 2>,
    candidates: Tensor<B, 2>,
    scale: &Tensor<B, 1>,
) -> Tensor<B, 2> {
    anchors.matmul(candidates.transpose()) * scale.clone().unsqueeze::<2>()
}

/// Cross entropy of contrastive logits whose positive for row `i` is column `offset + i`
/// (`F.cross_entropy(logits, arange(n) + offset)`, mean over rows).
///
/// # Shapes
/// - `logits`: `[n, N]` with `offset + n <= N` -> `[1]`
pub fn contrastive_cross_entropy<B: Backend>(logits: Tensor<B, 2>, offset: usize) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let device = logits.device();
    let targets = Tensor::<B, 1, Int>::arange(offset as i64..(offset + n) as i64, &device)
        .unsqueeze_dim::<2>(1);
    log_softmax(logits, 1).gather(1, targets).mean().neg()
}

/// `KL(softmax(teacher / T) ‖ softmax(student / T)) · T²` with `batchmean` reduction (sum over
/// all elements divided by the number of rows), as CLIP-KD's `DistillKL`.
///
/// The teacher's probabilities are taken as `exp(log_softmax)`, so a probability that
/// underflows to 0 contributes 0 (PyTorch's `xlogy` convention) and the result stays finite
/// for any finite logits.
///
/// # Shapes
/// - `student_logits`, `teacher_logits`: `[n, N]` -> `[1]`
pub fn kl_div_batchmean<B: Backend>(
    student_logits: Tensor<B, 2>,
    teacher_logits: Tensor<B, 2>,
    temperature: f64,
) -> Tensor<B, 1> {
    let [n, _] = student_logits.dims();
    let log_p_t = log_softmax(teacher_logits.div_scalar(temperature), 1);
    let log_p_s = log_softmax(student_logits.div_scalar(temperature), 1);
    (log_p_t.clone().exp() * (log_p_t - log_p_s))
        .sum()
        .div_scalar(n as f64)
        .mul_scalar(temperature * temperature)
}

/// Soft cross entropy `-Σ softmax(teacher) · log_softmax(student)`, mean over rows (open_clip's
/// `DistillClipLoss.dist_loss`).
///
/// # Shapes
/// - `student_logits`, `teacher_logits`: `[n, N]` -> `[1]`
pub fn soft_cross_entropy<B: Backend>(
    student_logits: Tensor<B, 2>,
    teacher_logits: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [n, _] = student_logits.dims();
    let p_t = log_softmax(teacher_logits, 1).exp();
    (p_t * log_softmax(student_logits, 1))
        .sum()
        .div_scalar(n as f64)
        .neg()
}

/// Mean squared error over all elements (`F.mse_loss`).
///
/// # Shapes
/// - `a`, `b`: `[n, d]` -> `[1]`
pub fn mse<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 1> {
    (a - b).square().mean()
}

/// Mean over rows of `1 - cos(a_i, b_i)` for rows that are already unit vectors.
///
/// # Shapes
/// - `a`, `b`: `[n, d]` (L2-normalized rows) -> `[1]`
pub fn cosine_distance_normalized<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 1> {
    (a * b).sum_dim(1).mean().neg().add_scalar(1.0)
}
