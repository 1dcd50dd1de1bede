//! Bit-exact ports of the Pillow 13 code that open_clip's transforms run on PIL images:
//! `Resample.c` (two-pass convolution resize, 8-bit fixed point and 16-bit), the nearest-neighbour
//! resize PIL uses for modes "1" and "P" (`ImagingScaleAffine` in `Geometry.c`), and the mode
//! conversions of `Convert.c` that `resize` and `convert("RGB")` apply (`RGBA -> RGBa` and back,
//! `CMYK -> RGB`, ...).
//!
//! All functions work on a *window* of the resized image: only the output pixels inside the
//! window are computed, and each one is computed exactly as Pillow computes it when it resizes
//! the whole image (the coefficients of an output pixel do not depend on the others).

/// A resampling filter of Pillow's (the two open_clip offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Triangle filter, support 1 (`Image.BILINEAR`).
    Bilinear,
    /// Keys cubic with a = -0.5, support 2 (`Image.BICUBIC`).
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// `bilinear_filter` / `bicubic_filter` of Resample.c, same operation order.
    fn eval(self, x: f64) -> f64 {
        let x = if x < 0.0 { -x } else { x };
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point precision of Pillow's 8-bit resampler: `PRECISION_BITS = 32 - 8 - 2`.
const PRECISION_BITS: u32 = 22;

/// The filter taps of every output position along one axis (`precompute_coeffs`).
pub(crate) struct Coeffs {
    /// Taps per output position (the stride of `weights`).
    ksize: usize,
    /// First input index used by each output position.
    start: Vec<usize>,
    /// Number of input indices used by each output position.
    len: Vec<usize>,
    /// Normalized weights, `ksize` per output position (zero past `len`).
    weights: Vec<f64>,
}

impl Coeffs {
    /// `precompute_coeffs(in_size, 0, in_size, out_size, filter)`: the whole input axis is
    /// resampled to `out_size` positions.
    pub(crate) fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        // Pillow passes the box as C floats; (float)in_size - 0 is exact for any real size.
        let scale = f64::from(in_size as f32) / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0.0f64; out_size * ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let k = &mut weights[xx * ksize..xx * ksize + n];
            let mut ww = 0.0;
            for (x, w) in k.iter_mut().enumerate() {
                *w = filter.eval(((x + xmin) as f64 - center + 0.5) * ss);
                ww += *w;
            }
            if ww != 0.0 {
                for w in k.iter_mut() {
                    *w /= ww;
                }
            }
            start.push(xmin);
            len.push(n);
        }
        Coeffs {
            ksize,
            start,
            len,
            weights,
        }
    }

    /// `normalize_coeffs_8bpc`: weights as 22-bit fixed point, rounded half away from zero.
    fn fixed_point(&self) -> Vec<i32> {
        let one = f64::from(1u32 << PRECISION_BITS);
        self.weights
            .iter()
            .map(|&w| {
                if w < 0.0 {
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                }
            })
            .collect()
    }

    /// Input range `[first, last)` used by output positions `[from, to)`.
    fn input_span(&self, from: usize, to: usize) -> (usize, usize) {
        let first = (from..to).map(|i| self.start[i]).min().unwrap_or(0);
        let last = (from..to)
            .map(|i| self.start[i] + self.len[i])
            .max()
            .unwrap_or(0);
        (first, last)
    }
}

/// A rectangle of output pixels: columns `x0..x1`, rows `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl Window {
    pub(crate) fn width(&self) -> usize {
        self.x1 - self.x0
    }
    pub(crate) fn height(&self) -> usize {
        self.y1 - self.y0
    }
}

/// `clip8(ss)` of Resample.c: `ss >> PRECISION_BITS` clamped to 0..=255.
#[inline(always)]
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's 8-bit two-pass resize of an interleaved image with `C` channels (`width` x `height`,
/// rows `stride` bytes apart) to `out_w` x `out_h`, computing only `win`. Returns the window's
/// pixels, interleaved, `win.width() * C` bytes per row.
///
/// Horizontal pass first into an 8-bit intermediate, then vertical, each pass skipped when its
/// axis keeps its size (as `ImagingResampleInner` does).
#[allow(clippy::too_many_arguments)]
pub(crate) fn resample_u8<const C: usize>(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
    win: Window,
) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `#[target_feature(enable = "avx2")]` function.
        return unsafe {
            resample_u8_avx2::<C>(src, width, height, stride, out_w, out_h, filter, win)
        };
    }
    resample_u8_impl::<C>(src, width, height, stride, out_w, out_h, filter, win)
}

/// [`resample_u8_impl`] compiled for AVX2 (8-lane 32-bit multiplies in the vertical pass; the
/// x86-64 baseline has no 32-bit vector multiply). Same integer arithmetic, same result.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn resample_u8_avx2<const C: usize>(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
    win: Window,
) -> Vec<u8> {
    resample_u8_impl::<C>(src, width, height, stride, out_w, out_h, filter, win)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn resample_u8_impl<const C: usize>(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
    win: Window,
) -> Vec<u8> {
    let need_h = out_w != width;
    let need_v = out_h != height;
    let vert = need_v.then(|| Coeffs::new(height, out_h, filter));
    // Rows of the source that the window needs.
    let (row0, row1) = match &vert {
        Some(v) => v.input_span(win.y0, win.y1),
        None => (win.y0, win.y1),
    };
    // Horizontal pass (or a copy of the window's columns when the width is kept).
    let tmp_w = win.width();
    let mut tmp = vec![0u8; (row1 - row0) * tmp_w * C];
    if need_h {
        let hc = Coeffs::new(width, out_w, filter);
        let kk = hc.fixed_point();
        for (r, y) in (row0..row1).enumerate() {
            let in_row = &src[y * stride..y * stride + width * C];
            let out_row = &mut tmp[r * tmp_w * C..(r + 1) * tmp_w * C];
            for (o, xx) in (win.x0..win.x1).enumerate() {
                let xmin = hc.start[xx];
                let n = hc.len[xx];
                let k = &kk[xx * hc.ksize..xx * hc.ksize + n];
                let (taps, _) = in_row[xmin * C..(xmin + n) * C].as_chunks::<C>();
                let mut ss = [1i32 << (PRECISION_BITS - 1); C];
                for (px, &w) in taps.iter().zip(k) {
                    for c in 0..C {
                        ss[c] += i32::from(px[c]) * w;
                    }
                }
                for c in 0..C {
                    out_row[o * C + c] = clip8(ss[c]);
                }
            }
        }
    } else {
        for (r, y) in (row0..row1).enumerate() {
            let s = y * stride + win.x0 * C;
            tmp[r * tmp_w * C..(r + 1) * tmp_w * C].copy_from_slice(&src[s..s + tmp_w * C]);
        }
    }
    let Some(vc) = vert else {
        return tmp;
    };
    // Vertical pass, a whole output row at a time (integer sums: same result in any order).
    let kk = vc.fixed_point();
    let row_len = tmp_w * C;
    let mut out = vec![0u8; win.height() * row_len];
    let mut acc = vec![0i32; row_len];
    for (o, yy) in (win.y0..win.y1).enumerate() {
        acc.fill(1 << (PRECISION_BITS - 1));
        let ymin = vc.start[yy];
        let n = vc.len[yy];
        for (t, &w) in kk[yy * vc.ksize..yy * vc.ksize + n].iter().enumerate() {
            let r = ymin + t - row0;
            let in_row = &tmp[r * row_len..(r + 1) * row_len];
            for (a, &v) in acc.iter_mut().zip(in_row) {
                *a += i32::from(v) * w;
            }
        }
        for (d, &a) in out[o * row_len..(o + 1) * row_len].iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

/// `ROUND_UP` of Resample.c: round half away from zero, then C's `(int)`.
#[inline(always)]
fn round_up(f: f64) -> i32 {
    (if f >= 0.0 { f + 0.5 } else { f - 0.5 }) as i32
}

/// How `ImagingResample*_16bpc` stores a rounded sum into a 16-bit pixel: low and high byte each
/// clamped to 0..=255 separately.
#[inline(always)]
fn store16(ss_int: i32) -> u16 {
    let lo = (ss_int % 256).clamp(0, 255) as u16;
    let hi = (ss_int >> 8).clamp(0, 255) as u16;
    lo | (hi << 8)
}

/// Pillow's resize of a one-channel 16-bit image (mode `I;16`): double-precision weights,
/// `ROUND_UP`, a 16-bit intermediate. Same windowing as [`resample_u8`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn resample_u16(
    src: &[u16],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
    win: Window,
) -> Vec<u16> {
    let need_h = out_w != width;
    let need_v = out_h != height;
    let vert = need_v.then(|| Coeffs::new(height, out_h, filter));
    let (row0, row1) = match &vert {
        Some(v) => v.input_span(win.y0, win.y1),
        None => (win.y0, win.y1),
    };
    let tmp_w = win.width();
    let mut tmp = vec![0u16; (row1 - row0) * tmp_w];
    if need_h {
        let hc = Coeffs::new(width, out_w, filter);
        for (r, y) in (row0..row1).enumerate() {
            let in_row = &src[y * width..(y + 1) * width];
            for (o, xx) in (win.x0..win.x1).enumerate() {
                let xmin = hc.start[xx];
                let n = hc.len[xx];
                let k = &hc.weights[xx * hc.ksize..xx * hc.ksize + n];
                let mut ss = 0.0f64;
                for (&v, &w) in in_row[xmin..xmin + n].iter().zip(k) {
                    ss += f64::from(v) * w;
                }
                tmp[r * tmp_w + o] = store16(round_up(ss));
            }
        }
    } else {
        for (r, y) in (row0..row1).enumerate() {
            tmp[r * tmp_w..(r + 1) * tmp_w]
                .copy_from_slice(&src[y * width + win.x0..y * width + win.x1]);
        }
    }
    let Some(vc) = vert else {
        return tmp;
    };
    let mut out = vec![0u16; win.height() * tmp_w];
    for (o, yy) in (win.y0..win.y1).enumerate() {
        let ymin = vc.start[yy];
        let n = vc.len[yy];
        let k = &vc.weights[yy * vc.ksize..yy * vc.ksize + n];
        for x in 0..tmp_w {
            let mut ss = 0.0f64;
            for (t, &w) in k.iter().enumerate() {
                ss += f64::from(tmp[(ymin + t - row0) * tmp_w + x]) * w;
            }
            out[o * tmp_w + x] = store16(round_up(ss));
        }
    }
    out
}

/// Source index of every output position of PIL's nearest-neighbour resize along one axis
/// (`ImagingScaleAffine`: `xo = a0 * 0.5`, then `xo += a0` per step, `COORD(xo)`), or `None`
/// where it falls outside the input (Pillow fills those with 0).
pub(crate) fn nearest_indices(in_size: usize, out_size: usize) -> Vec<Option<usize>> {
    let a0 = f64::from(in_size as f32) / out_size as f64;
    let mut xo = a0 * 0.5;
    let mut idx = Vec::with_capacity(out_size);
    for _ in 0..out_size {
        let xin = if xo < 0.0 { -1 } else { xo as i64 };
        idx.push((xin >= 0 && (xin as usize) < in_size).then_some(xin as usize));
        xo += a0;
    }
    idx
}

/// PIL's nearest-neighbour resize (modes "1" and "P") of a one-byte-per-pixel image, window only.
pub(crate) fn resample_nearest(
    src: &[u8],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    win: Window,
) -> Vec<u8> {
    let xs = nearest_indices(width, out_w);
    let ys = nearest_indices(height, out_h);
    let mut out = vec![0u8; win.width() * win.height()];
    for (o, yy) in (win.y0..win.y1).enumerate() {
        let Some(y) = ys[yy] else { continue };
        let row = &src[y * width..(y + 1) * width];
        for (d, xx) in out[o * win.width()..(o + 1) * win.width()]
            .iter_mut()
            .zip(win.x0..win.x1)
        {
            if let Some(x) = xs[xx] {
                *d = row[x];
            }
        }
    }
    out
}

/// `MULDIV255(a, b)` of Imaging.h: `a * b / 255`, rounded.
#[inline(always)]
pub(crate) fn muldiv255(a: u8, b: u8) -> u8 {
    let t = u32::from(a) * u32::from(b) + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// Premultiplies the colour channels by the last (alpha) channel in place (`RGBA -> RGBa`,
/// `LA -> La`: `rgbA2rgba` / `lA2la` of Convert.c).
pub(crate) fn premultiply<const C: usize>(px: &mut [u8]) {
    for p in px.chunks_exact_mut(C) {
        let a = p[C - 1];
        for v in &mut p[..C - 1] {
            *v = muldiv255(*v, a);
        }
    }
}

/// Undoes [`premultiply`] in place (`RGBa -> RGBA`, `La -> LA`: `rgba2rgbA` / `la2lA`).
pub(crate) fn unpremultiply<const C: usize>(px: &mut [u8]) {
    for p in px.chunks_exact_mut(C) {
        let a = u32::from(p[C - 1]);
        if a == 255 || a == 0 {
            continue;
        }
        for v in &mut p[..C - 1] {
            *v = ((255 * u32::from(*v)) / a).min(255) as u8;
        }
    }
}

/// `cmyk2rgb` of Convert.c (on PIL's CMYK, i.e. after the Adobe inversion of JPEG data).
#[inline(always)]
pub(crate) fn cmyk_to_rgb(p: [u8; 4]) -> [u8; 3] {
    let nk = 255 - p[3];
    let ch = |c: u8| nk - muldiv255(c, nk);
    [ch(p[0]), ch(p[1]), ch(p[2])]
}

/// libjpeg's (jdcolor.c) YCbCr -> RGB conversion, 16-bit fixed point with rounding tables.
#[inline(always)]
pub(crate) fn ycc_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    const SCALEBITS: u32 = 16;
    const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
    const fn fix(x: f64) -> i64 {
        (x * (1i64 << SCALEBITS) as f64 + 0.5) as i64
    }
    let (y, cb, cr) = (i64::from(y), i64::from(cb) - 128, i64::from(cr) - 128);
    let r = y + ((fix(1.40200) * cr + ONE_HALF) >> SCALEBITS);
    let g = y + ((-fix(0.34414) * cb + ONE_HALF - fix(0.71414) * cr) >> SCALEBITS);
    let b = y + ((fix(1.77200) * cb + ONE_HALF) >> SCALEBITS);
    [
        r.clamp(0, 255) as u8,
        g.clamp(0, 255) as u8,
        b.clamp(0, 255) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_weights_sum_to_one_and_match_keys_kernel() {
        assert_eq!(Filter::Bicubic.eval(0.0), 1.0);
        assert_eq!(Filter::Bicubic.eval(1.0), 0.0);
        assert_eq!(Filter::Bicubic.eval(0.5), 0.5625);
        assert_eq!(Filter::Bicubic.eval(1.5), -0.0625);
        assert_eq!(Filter::Bicubic.eval(-1.5), -0.0625);
        let c = Coeffs::new(517, 224, Filter::Bicubic);
        for i in 0..224 {
            let s: f64 = c.weights[i * c.ksize..i * c.ksize + c.len[i]].iter().sum();
            assert!((s - 1.0).abs() < 1e-12, "{s}");
        }
        // Fixed point: every row sums to about 1 << 22.
        let kk = c.fixed_point();
        for i in 0..224 {
            let s: i32 = kk[i * c.ksize..(i + 1) * c.ksize].iter().sum();
            assert!((s - (1 << 22)).abs() <= c.ksize as i32, "{s}");
        }
    }

    #[test]
    fn same_size_resample_is_identity() {
        let src: Vec<u8> = (0..7 * 5 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let win = Window {
            x0: 0,
            y0: 0,
            x1: 7,
            y1: 5,
        };
        assert_eq!(
            resample_u8::<3>(&src, 7, 5, 21, 7, 5, Filter::Bicubic, win),
            src
        );
    }

    #[test]
    fn window_equals_crop_of_full_resize() {
        let (w, h) = (53, 41);
        let src: Vec<u8> = (0..w * h * 2).map(|i| ((i * 7919) % 251) as u8).collect();
        let full = Window {
            x0: 0,
            y0: 0,
            x1: 30,
            y1: 20,
        };
        let all = resample_u8::<2>(&src, w, h, w * 2, 30, 20, Filter::Bicubic, full);
        let win = Window {
            x0: 4,
            y0: 3,
            x1: 25,
            y1: 17,
        };
        let part = resample_u8::<2>(&src, w, h, w * 2, 30, 20, Filter::Bicubic, win);
        for y in 0..win.height() {
            for x in 0..win.width() * 2 {
                assert_eq!(part[y * 42 + x], all[(y + 3) * 60 + 8 + x]);
            }
        }
    }

    #[test]
    fn dispatched_and_portable_resamplers_agree() {
        // On AVX2 machines `resample_u8` takes the AVX2 build; the portable one must match it.
        let (w, h) = (97, 61);
        let src: Vec<u8> = (0..w * h * 3).map(|i| ((i * 2971) % 256) as u8).collect();
        for (ow, oh, f) in [(40, 30, Filter::Bicubic), (150, 90, Filter::Bilinear)] {
            let win = Window {
                x0: 3,
                y0: 2,
                x1: ow - 1,
                y1: oh,
            };
            assert_eq!(
                resample_u8::<3>(&src, w, h, w * 3, ow, oh, f, win),
                resample_u8_impl::<3>(&src, w, h, w * 3, ow, oh, f, win)
            );
        }
    }

    #[test]
    fn premultiply_round_trip_matches_pil_formulas() {
        let mut px = [200u8, 100, 0, 128, 10, 20, 30, 0, 255, 255, 255, 255];
        premultiply::<4>(&mut px);
        assert_eq!(px, [100, 50, 0, 128, 0, 0, 0, 0, 255, 255, 255, 255]);
        unpremultiply::<4>(&mut px);
        assert_eq!(px, [199, 99, 0, 128, 0, 0, 0, 0, 255, 255, 255, 255]);
    }

    #[test]
    fn nearest_picks_centres() {
        let idx: Vec<usize> = nearest_indices(10, 4).into_iter().flatten().collect();
        assert_eq!(idx, vec![1, 3, 6, 8]);
        let idx: Vec<usize> = nearest_indices(3, 6).into_iter().flatten().collect();
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn cmyk_and_ycc_conversions() {
        assert_eq!(cmyk_to_rgb([0, 0, 0, 0]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 0, 0, 0]), [0, 255, 255]);
        assert_eq!(cmyk_to_rgb([0, 0, 0, 255]), [0, 0, 0]);
        assert_eq!(ycc_to_rgb(128, 128, 128), [128, 128, 128]);
        assert_eq!(ycc_to_rgb(76, 85, 255), [254, 0, 0]);
    }
}
