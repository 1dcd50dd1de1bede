//! Dynamic loss scaling for f16 mixed precision, as PyTorch's `GradScaler` (CLIP-KD trains
//! with fp16 autocast and one).
//!
//! f16 keeps values down to about 6e-8 (6e-5 at full precision): many gradients of a CLIP
//! model are smaller and would flush to zero in the f16 matrix products of the backward. The
//! loss is therefore multiplied by a large scale before the backward, and the f32 gradients
//! divided by it before the optimizer. When the scaled gradients overflow (an infinity or NaN
//! anywhere), the step is skipped (no parameter or optimizer state changes) and the scale is
//! halved; after `GROWTH_INTERVAL` finite steps in a row it is doubled. The constants are
//! GradScaler's defaults.

use serde::{Deserialize, Serialize};

/// The scale of a fresh run (GradScaler's `init_scale`, 2^16).
pub const INITIAL_SCALE: f64 = 65536.0;
/// The factor applied after `GROWTH_INTERVAL` finite steps in a row.
pub const GROWTH_FACTOR: f64 = 2.0;
/// The factor applied after an overflowing step.
pub const BACKOFF_FACTOR: f64 = 0.5;
/// Finite steps in a row before the scale grows.
pub const GROWTH_INTERVAL: u32 = 2000;

/// The scaler's state: part of a checkpoint, so that a resumed f16 run scales its losses as
/// the uninterrupted run would.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The factor the next step's loss is multiplied by.
    pub scale: f64,
    /// Finite steps in a row since the scale last changed.
    pub growth_tracker: u32,
    /// Steps skipped so far because their gradients overflowed.
    pub skipped_steps: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self::new()
    }
}

impl LossScaler {
    /// A fresh scaler at [`INITIAL_SCALE`].
    pub fn new() -> Self {
        LossScaler {
            scale: INITIAL_SCALE,
            growth_tracker: 0,
            skipped_steps: 0,
        }
    }

    /// Updates the scale after a step: `overflowed` when the step was skipped because its
    /// scaled gradients were not finite.
    pub fn update(&mut self, overflowed: bool) {
        if overflowed {
            self.scale *= BACKOFF_FACTOR;
            self.growth_tracker = 0;
            self.skipped_steps += 1;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == GROWTH_INTERVAL {
                self.scale *= GROWTH_FACTOR;
                self.growth_tracker = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_overflow_and_doubles_after_the_growth_interval() {
        let mut s = LossScaler::new();
        s.update(true);
        assert_eq!((s.scale, s.skipped_steps), (INITIAL_SCALE / 2.0, 1));
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(false);
        }
        assert_eq!(s.scale, INITIAL_SCALE / 2.0);
        s.update(false);
        assert_eq!((s.scale, s.growth_tracker), (INITIAL_SCALE, 0));
        // An overflow resets the run of finite steps.
        for _ in 0..10 {
            s.update(false);
        }
        s.update(true);
        assert_eq!(
            (s.scale, s.growth_tracker, s.skipped_steps),
            (INITIAL_SCALE / 2.0, 0, 2)
        );
    }
}
