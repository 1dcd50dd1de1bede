//! The learning-rate schedule: open_clip's `cosine_lr`, stepped per optimizer step.

use std::f64::consts::PI;

/// Linear warmup from 0 to `base_lr` over `warmup` steps, then cosine decay to 0 at `total`
/// steps, exactly as open_clip's `cosine_lr` (which CLIP-KD uses):
///
/// - `step < warmup`: `base_lr * (step + 1) / warmup`;
/// - otherwise, with `e = step - warmup` and `es = total - warmup`:
///   `0.5 * (1 + cos(π e / es)) * base_lr`.
///
/// Steps count optimizer steps from 0. Where open_clip would divide by zero (`total <= warmup`,
/// a run that never leaves warmup) the rate after warmup is 0, and so it is past `total`
/// (where the cosine would rise again).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Warmup steps.
    pub warmup: u64,
    /// Total optimizer steps of the run.
    pub total: u64,
}

impl CosineSchedule {
    /// The schedule.
    pub fn new(base_lr: f64, warmup: u64, total: u64) -> Self {
        CosineSchedule {
            base_lr,
            warmup,
            total,
        }
    }

    /// The learning rate of optimizer step `step`.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.base_lr * (step + 1) as f64 / self.warmup as f64;
        }
        if self.total <= self.warmup || step >= self.total {
            return 0.0;
        }
        let e = (step - self.warmup) as f64;
        let es = (self.total - self.warmup) as f64;
        0.5 * (1.0 + (PI * e / es).cos()) * self.base_lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_open_clip_cosine_lr() {
        // open_clip.training.scheduler.cosine_lr(opt, 1e-3, warmup_length=4, steps=12):
        // [0.00025, 0.0005, 0.00075, 0.001, 0.001, 0.000962, 0.000854, 0.000691, 0.0005,
        //  0.000309, 0.000146, 0.0000381]
        let s = CosineSchedule::new(1e-3, 4, 12);
        let expected = [
            0.00025,
            0.0005,
            0.00075,
            0.001,
            0.001,
            0.000_961_94,
            0.000_853_55,
            0.000_691_34,
            0.0005,
            0.000_308_66,
            0.000_146_45,
            0.000_038_06,
        ];
        for (step, want) in expected.iter().enumerate() {
            let got = s.lr(step as u64);
            assert!((got - want).abs() < 1e-8, "step {step}: {got} vs {want}");
        }
        // At the end the rate reaches 0, and stays there.
        assert!(s.lr(12).abs() < 1e-12);
        assert_eq!(s.lr(20), 0.0);
    }

    #[test]
    fn never_leaving_warmup_is_not_nan() {
        let s = CosineSchedule::new(1.0, 10, 5);
        assert_eq!(s.lr(0), 0.1);
        assert_eq!(s.lr(4), 0.5);
        assert_eq!(s.lr(10), 0.0);
        let s = CosineSchedule::new(1.0, 0, 4);
        assert_eq!(s.lr(0), 1.0);
        assert_eq!(s.lr(2), 0.5);
    }
}
