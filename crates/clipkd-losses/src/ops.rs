//! Tensor functions the losses are built from, public so that research code can build its own
//! losses from the same pieces (and get the same numerics).
//!
//! Conventions: logits are `[n, N]` with the `n` anchor rows of this device against all `N`
//! candidates of the global batch; the positive of anchor row `i` is column `offset + i`.
//! Reductions follow PyTorch's defaults (cross entropy: mean over rows; KL: `batchmean`; MSE:
//! mean over all elements).

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, backend::Backend};

/// Epsilon of [`l2_normalize_smooth`], as `torch.nn.functional.normalize`'s default.
pub const NORM_EPS: f64 = 1e-12;

/// The rows of a gathered global batch that belong to this device.
///
/// Single device: all rows (`offset` 0, `len` N), the default. See
/// [`DistillInput`](crate::DistillInput) for the multi-device contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRows {
    /// Index of this device's first sample in the global batch.
    pub offset: usize,
    /// Number of this device's samples.
    pub len: usize,
}

impl LocalRows {
    /// All `n` rows of a batch (one device).
    pub fn all(n: usize) -> Self {
        Self { offset: 0, len: n }
    }

    /// Whether these rows cover the whole batch of `n` samples.
    pub fn is_all(&self, n: usize) -> bool {
        self.offset == 0 && self.len == n
    }
}

/// Rows divided by their *smoothed* L2 norm: `x / sqrt(‖x‖² + ε²)`, `ε = 1e-12`.
///
/// Not the clamped form `x / max(‖x‖, ε)` of PyTorch's `F.normalize` (and of
/// `clipkd_models::l2_normalize`): the value is the same for every row whose norm is above
/// ~4e-9 in f32 (`‖x‖² + ε²` rounds to `‖x‖²`; in exact arithmetic the relative difference
/// is `ε² / (2‖x‖²)`, 5e-25 for a unit norm). At an all-zero row both give 0, but the
/// gradient differs: here it is the incoming gradient divided by `ε` (finite, as PyTorch's),
/// whereas the clamped form in Burn gives NaN (`0 · ∞` through the `sqrt` at 0). See
/// `docs/losses.md`.
///
/// # Shapes
/// - `x`: `[n, d]` -> `[n, d]`
pub fn l2_normalize_smooth<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn_flex::Flex;

    fn t2(rows: &[&[f32]]) -> Tensor<Flex, 2> {
        let (n, d) = (rows.len(), rows[0].len());
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(flat, vec![n, d]), &Default::default())
    }

    fn scalar(t: Tensor<Flex, 1>) -> f32 {
        t.into_scalar()
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero_rows() {
        let x = l2_normalize_smooth(t2(&[&[3.0, 4.0], &[0.0, 0.0]]));
        let v = x.to_data().to_vec::<f32>().unwrap();
        assert_eq!(v, vec![0.6, 0.8, 0.0, 0.0]);
    }

    /// Away from zero the smooth form is the clamped one (`F.normalize`); at zero its gradient
    /// is the incoming one divided by ε, finite, where the clamped form's is NaN in Burn.
    #[test]
    fn smooth_normalize_equals_the_clamped_form_and_has_a_gradient_at_zero() {
        for norm in [1e-8f32, 1e-3, 1.0, 1e3] {
            let x = t2(&[&[0.6 * norm, -0.8 * norm, 0.0]]);
            let clamped = x.clone() / x.clone().square().sum_dim(1).sqrt().clamp_min(NORM_EPS);
            let smooth = l2_normalize_smooth(x);
            let (a, b) = (
                smooth.to_data().to_vec::<f32>().unwrap(),
                clamped.to_data().to_vec::<f32>().unwrap(),
            );
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() <= 1e-7, "norm {norm}: {a} vs {b}");
            }
        }
        type Ad = burn::backend::Autodiff<Flex>;
        let device = Default::default();
        let x = Tensor::<Ad, 2>::from_floats([[0.0, 0.0]], &device).require_grad();
        let w = Tensor::<Ad, 2>::from_floats([[1.0, -2.0]], &device);
        let grads = (l2_normalize_smooth(x.clone()) * w).sum().backward();
        let g = x.grad(&grads).unwrap().to_data().to_vec::<f32>().unwrap();
        assert_eq!(g, vec![1e12, -2e12]);
    }

    #[test]
    fn cross_entropy_with_offset_picks_the_shifted_diagonal() {
        // rows 1..3 of a 3-sample batch: positives are columns 1 and 2
        let logits = t2(&[&[0.0, 2.0, 0.0], &[1.0, 0.0, 3.0]]);
        let lse = |r: [f32; 3]| r.iter().map(|x| x.exp()).sum::<f32>().ln();
        let expected = ((lse([0.0, 2.0, 0.0]) - 2.0) + (lse([1.0, 0.0, 3.0]) - 3.0)) / 2.0;
        let got = scalar(contrastive_cross_entropy(logits, 1));
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn kl_is_zero_for_equal_logits_and_positive_otherwise() {
        let a = t2(&[&[1.0, -2.0, 0.5], &[0.0, 3.0, 1.0]]);
        assert!(scalar(kl_div_batchmean(a.clone(), a.clone(), 1.0)).abs() < 1e-7);
        let b = t2(&[&[0.0, 0.0, 0.0], &[1.0, 1.0, 1.0]]);
        assert!(scalar(kl_div_batchmean(b, a.clone(), 2.0)) > 0.1);
        // a teacher probability that underflows to 0 contributes 0, not NaN
        let hard = t2(&[&[1e4, -1e4, 0.0], &[0.0, 1e4, -1e4]]);
        assert!(scalar(kl_div_batchmean(a, hard, 1.0)).is_finite());
    }

    #[test]
    fn soft_cross_entropy_of_one_hot_teacher_is_cross_entropy() {
        let s = t2(&[&[1.0, -2.0], &[0.5, 3.0]]);
        let teacher = t2(&[&[1e3, -1e3], &[-1e3, 1e3]]);
        let a = scalar(soft_cross_entropy(s.clone(), teacher));
        let b = scalar(contrastive_cross_entropy(s, 0));
        assert!((a - b).abs() < 1e-6);
    }

    #[test]
    fn local_rows_slice_only_when_partial() {
        let x = t2(&[&[1.0], &[2.0], &[3.0]]);
        let all = local(&x, LocalRows { offset: 0, len: 3 });
        assert_eq!(all.dims(), [3, 1]);
        let part = local(&x, LocalRows { offset: 1, len: 2 });
        assert_eq!(part.to_data().to_vec::<f32>().unwrap(), vec![2.0, 3.0]);
    }
}
