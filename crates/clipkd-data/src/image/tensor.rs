//! The output of the transforms: normalized CHW `f32` pixels.

/// A preprocessed image: `3 x height x width` normalized values, channel-major (CHW), as
/// open_clip's transforms return for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTensor {
    /// `3 * height * width` values: the R plane, then G, then B.
    pub data: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageTensor {
    /// Channels of every image tensor (RGB).
    pub const CHANNELS: usize = 3;

    /// The shape `[3, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        [Self::CHANNELS, self.height, self.width]
    }

    /// The `height * width` plane of channel `c` (0 = R, 1 = G, 2 = B).
    ///
    /// # Panics
    /// If `c >= 3`.
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }
}

/// `ToTensor` + `Normalize(mean, std)` as a lookup table per channel: entry `v` is
/// `(v as f32 / 255 - mean) / std`, computed in `f32` with the same two roundings as torch
/// (`img.float().div(255)`, then `sub_(mean).div_(std)` with `f32` mean and std), so the values
/// are bit-identical to open_clip's.
#[derive(Debug, Clone)]
pub(crate) struct Normalizer {
    lut: [[f32; 256]; 3],
}

impl Normalizer {
    pub(crate) fn new(mean: [f64; 3], std: [f64; 3]) -> Self {
        let mut lut = [[0.0f32; 256]; 3];
        for c in 0..3 {
            let (m, s) = (mean[c] as f32, std[c] as f32);
            for (v, e) in lut[c].iter_mut().enumerate() {
                *e = (v as f32 / 255.0 - m) / s;
            }
        }
        Normalizer { lut }
    }

    /// Writes interleaved RGB bytes (`plane` pixels) as three normalized planes into `out`
    /// (`3 * plane` values).
    pub(crate) fn write_planes(&self, rgb: &[u8], out: &mut [f32]) {
        let plane = rgb.len() / 3;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            r[i] = self.lut[0][usize::from(px[0])];
            g[i] = self.lut[1][usize::from(px[1])];
            b[i] = self.lut[2][usize::from(px[2])];
        }
    }
}
