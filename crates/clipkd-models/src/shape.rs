//! Input-shape checks of the forward entry points: from `dims()` only (no device read), before
//! any compute, so that a wrong image size or an over-long token tensor is a
//! [`ModelError::InputShape`] instead of a panic deep in a convolution or a broadcast.

use std::ops::RangeInclusive;

use crate::error::ModelError;

/// Channels the vision towers take (RGB).
pub(crate) const IMAGE_CHANNELS: usize = 3;

/// The output side of a convolution or pooling window over `size` (dilation 1, floor mode):
/// Burn's `calculate_conv_output_size`, but 0 where the window does not fit at all (Burn would
/// underflow there).
pub(crate) fn conv_out(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    match (size + 2 * padding).checked_sub(kernel) {
        Some(room) => room / stride + 1,
        None => 0,
    }
}

/// The input sides that `out` (non-decreasing, unbounded) maps to `target`, for the error
/// message; `None` if it jumps over `target`.
pub(crate) fn sizes_giving(
    target: usize,
    out: impl Fn(usize) -> usize,
) -> Option<RangeInclusive<usize>> {
    let first_reaching = |t: usize| {
        let mut hi = 1usize;
        while out(hi) < t {
            hi = hi.checked_mul(2)?;
        }
        let mut lo = 0;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if out(mid) >= t {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(lo)
    };
    let lo = first_reaching(target)?;
    let hi = first_reaching(target + 1)?.checked_sub(1)?;
    (out(lo) == target && lo <= hi).then_some(lo..=hi)
}

/// A range of sizes for a message (`a..=b`), `?` when no size works.
pub(crate) fn show_range(range: Option<RangeInclusive<usize>>) -> String {
    match range {
        Some(r) => format!("{}..={}", r.start(), r.end()),
        None => "?".to_string(),
    }
}

/// The error for images with other than [`IMAGE_CHANNELS`] channels.
pub(crate) fn check_channels(part: &'static str, dims: [usize; 4]) -> Result<(), ModelError> {
    if dims[1] == IMAGE_CHANNELS {
        return Ok(());
    }
    Err(ModelError::InputShape {
        part,
        input: "images",
        expected: format!(
            "[N, {IMAGE_CHANNELS}, H, W]: {IMAGE_CHANNELS} channels (RGB pixels), not {}",
            dims[1]
        ),
        got: dims.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_out_is_burns_arithmetic_where_the_window_fits() {
        // kernel = stride = 16, no padding: floor(size / 16).
        assert_eq!(conv_out(224, 16, 16, 0), 14);
        assert_eq!(conv_out(239, 16, 16, 0), 14);
        assert_eq!(conv_out(240, 16, 16, 0), 15);
        assert_eq!(conv_out(15, 16, 16, 0), 0);
        // 3x3, stride 2, padding 1: ceil(size / 2).
        assert_eq!(conv_out(7, 3, 2, 1), 4);
        assert_eq!(conv_out(8, 3, 2, 1), 4);
        assert_eq!(conv_out(1, 3, 2, 1), 1);
    }

    #[test]
    fn sizes_giving_inverts_a_monotone_map() {
        assert_eq!(
            sizes_giving(14, |s| conv_out(s, 16, 16, 0)),
            Some(224..=239)
        );
        assert_eq!(sizes_giving(1, |s| conv_out(s, 16, 16, 0)), Some(16..=31));
        // Jumps over odd values: none gives 3.
        assert_eq!(sizes_giving(3, |s| 2 * (s / 5)), None);
    }
}
