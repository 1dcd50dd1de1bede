//! open_clip's `image_transform` (eval and train) on a [`DecodedImage`].

use rand::Rng;

use super::decode::{DecodedImage, PilMode, Samples, mode_pixel_to_rgb};
use super::pil::{self, Filter, Window};
use super::tensor::{ImageTensor, Normalizer};
use crate::DataError;

mod config;

pub use config::{Interpolation, OPENAI_MEAN, OPENAI_STD, ResizeMode, TransformConfig};

/// A crop rectangle in source pixels (torchvision's `(i, j, h, w)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// What the eval transform does to an image of a given size: resize the whole image to
/// `resized`, then take the output-sized window at (`crop_top`, `crop_left`) of the resized
/// image; parts of the window outside it are padding (`fill_color`, [`ResizeMode::Longest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvalGeometry {
    /// Size after the resize, `[height, width]` (equal to the input: no resampling).
    pub resized: [usize; 2],
    /// Row of the resized image at the window's top (negative: padding above).
    pub crop_top: i64,
    /// Column of the resized image at the window's left (negative: padding on the left).
    pub crop_left: i64,
}

/// Python's `round(n / 2)` for an integer `n` (ties to even).
fn half_round_even(n: i64) -> i64 {
    (n as f64 / 2.0).round_ties_even() as i64
}

/// torchvision's `center_crop` / open_clip's `center_crop_or_pad` offset along one axis: pad
/// `(crop - size) // 2` before when the crop is larger, then `round((padded - crop) / 2)`.
fn center_offset(size: usize, crop: usize) -> i64 {
    if crop > size {
        -(((crop - size) / 2) as i64)
    } else {
        half_round_even((size - crop) as i64)
    }
}

/// open_clip's `ResizeKeepRatio.get_params` without the random parts: `longest` 0 fits the
/// shortest side, 1 the longest.
fn keep_ratio_size(height: usize, width: usize, target: [usize; 2], longest: bool) -> [usize; 2] {
    let ratio_h = height as f64 / target[0] as f64;
    let ratio_w = width as f64 / target[1] as f64;
    let ratio = if longest {
        ratio_h.max(ratio_w)
    } else {
        ratio_h.min(ratio_w)
    };
    [
        (height as f64 / ratio).round_ties_even() as usize,
        (width as f64 / ratio).round_ties_even() as usize,
    ]
}

/// Python's `round` of a non-negative float, as an integer.
fn round_even(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// open_clip's eval and train image transforms, with the normalization table precomputed.
/// Cheap to share between threads (`&self` methods only).
#[derive(Debug, Clone)]
pub struct ImageTransform {
    config: TransformConfig,
    norm: Normalizer,
}

impl ImageTransform {
    /// Checks `config` (non-zero size, finite non-zero std, ordered crop ranges) and builds the
    /// transform.
    pub fn new(config: TransformConfig) -> Result<Self, DataError> {
        config.validate()?;
        let norm = Normalizer::new(config.mean, config.std);
        Ok(ImageTransform { config, norm })
    }

    /// The settings.
    pub fn config(&self) -> &TransformConfig {
        &self.config
    }

    /// Output shape `[3, height, width]`.
    pub fn output_shape(&self) -> [usize; 3] {
        [
            ImageTensor::CHANNELS,
            self.config.size[0],
            self.config.size[1],
        ]
    }

    /// Values per output image (`3 * height * width`): the slice length `*_into` expect.
    pub fn output_len(&self) -> usize {
        ImageTensor::CHANNELS * self.config.size[0] * self.config.size[1]
    }

    /// How the eval transform resizes and crops an image of `width` x `height` (open_clip
    /// `image_transform(size, is_train=False)` with the configured resize mode).
    pub fn eval_geometry(&self, width: usize, height: usize) -> EvalGeometry {
        let [th, tw] = self.config.size;
        let resized = match self.config.resize_mode {
            ResizeMode::Shortest if th == tw => {
                // torchvision Resize(int): shortest side -> size, long side truncated.
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                let new_long = th * long / short;
                if width <= height {
                    [new_long, th]
                } else {
                    [th, new_long]
                }
            }
            ResizeMode::Shortest => keep_ratio_size(height, width, [th, tw], false),
            ResizeMode::Longest => keep_ratio_size(height, width, [th, tw], true),
            ResizeMode::Squash => [th, tw],
        };
        EvalGeometry {
            resized,
            crop_top: center_offset(resized[0], th),
            crop_left: center_offset(resized[1], tw),
        }
    }

    /// The eval filter: open_clip's non-square `shortest` path (`ResizeKeepRatio`) always uses
    /// bicubic; the others use the configured interpolation.
    fn eval_filter(&self) -> Filter {
        let [th, tw] = self.config.size;
        if self.config.resize_mode == ResizeMode::Shortest && th != tw {
            Filter::Bicubic
        } else {
            self.config.interpolation.eval_filter()
        }
    }

    /// The eval transform: resize, center crop (or pad), `convert("RGB")`, ToTensor, Normalize.
    pub fn eval(&self, img: &DecodedImage) -> ImageTensor {
        let mut data = vec![0.0; self.output_len()];
        self.eval_into(img, &mut data);
        self.tensor(data)
    }

    /// [`eval`](Self::eval) written into `out` (e.g. one image's slot of a batch buffer).
    ///
    /// # Panics
    /// If `out.len() != self.output_len()`.
    pub fn eval_into(&self, img: &DecodedImage, out: &mut [f32]) {
        let g = self.eval_geometry(img.width, img.height);
        let full = CropBox {
            top: 0,
            left: 0,
            height: img.height,
            width: img.width,
        };
        self.render(
            img,
            full,
            g.resized,
            self.eval_filter(),
            g.crop_top,
            g.crop_left,
            out,
        );
    }

    /// torchvision's `RandomResizedCrop.get_params`: up to 10 tries of a random area fraction in
    /// `crop_scale` and a log-uniform aspect ratio in `crop_ratio`, then the fallback center
    /// crop. The box always lies inside the image.
    pub fn sample_crop<R: Rng + ?Sized>(
        &self,
        width: usize,
        height: usize,
        rng: &mut R,
    ) -> CropBox {
        let area = (width * height) as f64;
        let (s0, s1) = self.config.crop_scale;
        let (r0, r1) = self.config.crop_ratio;
        let (l0, l1) = (r0.ln(), r1.ln());
        for _ in 0..10 {
            let target_area = area * (s0 + (s1 - s0) * rng.random::<f64>());
            let aspect = (l0 + (l1 - l0) * rng.random::<f64>()).exp();
            let w = round_even((target_area * aspect).sqrt());
            let h = round_even((target_area / aspect).sqrt());
            if 0 < w && w as usize <= width && 0 < h && h as usize <= height {
                let (w, h) = (w as usize, h as usize);
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return CropBox {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < r0 {
            (width, (round_even(width as f64 / r0) as usize).min(height))
        } else if in_ratio > r1 {
            ((round_even(height as f64 * r1) as usize).min(width), height)
        } else {
            (width, height)
        };
        CropBox {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }

    /// The train transform (open_clip `is_train=True`, CLIP-KD's augmentation):
    /// RandomResizedCrop (bicubic) with boxes drawn from `rng`, `convert("RGB")`, ToTensor,
    /// Normalize. No flips.
    pub fn train<R: Rng + ?Sized>(&self, img: &DecodedImage, rng: &mut R) -> ImageTensor {
        let mut data = vec![0.0; self.output_len()];
        self.train_into(img, rng, &mut data);
        self.tensor(data)
    }

    /// [`train`](Self::train) written into `out`; returns the crop box it drew.
    ///
    /// # Panics
    /// If `out.len() != self.output_len()`.
    pub fn train_into<R: Rng + ?Sized>(
        &self,
        img: &DecodedImage,
        rng: &mut R,
        out: &mut [f32],
    ) -> CropBox {
        let crop = self.sample_crop(img.width, img.height, rng);
        self.resized_crop_into(img, crop, out);
        crop
    }

    /// torchvision's `F.resized_crop(img, top, left, h, w, size, BICUBIC)` (crop, then resize the
    /// crop to the output size), then `convert("RGB")`, ToTensor, Normalize: the train transform
    /// with a given box.
    pub fn resized_crop(&self, img: &DecodedImage, crop: CropBox) -> ImageTensor {
        let mut data = vec![0.0; self.output_len()];
        self.resized_crop_into(img, crop, &mut data);
        self.tensor(data)
    }

    /// [`resized_crop`](Self::resized_crop) written into `out`.
    ///
    /// # Panics
    /// If the box is empty or not inside the image, or `out.len() != self.output_len()`.
    pub fn resized_crop_into(&self, img: &DecodedImage, crop: CropBox, out: &mut [f32]) {
        assert!(
            crop.width > 0
                && crop.height > 0
                && crop.left + crop.width <= img.width
                && crop.top + crop.height <= img.height,
            "crop box {crop:?} is not inside the {}x{} image",
            img.width,
            img.height
        );
        self.render(img, crop, self.config.size, Filter::Bicubic, 0, 0, out);
    }

    fn tensor(&self, data: Vec<f32>) -> ImageTensor {
        ImageTensor {
            data,
            height: self.config.size[0],
            width: self.config.size[1],
        }
    }

    /// Resizes the `view` of `img` to `resized` (`[h, w]`) in the image's own PIL mode, takes the
    /// output-sized window at (`top`, `left`) of the result (padding outside it with
    /// `fill_color`), converts to RGB and normalizes into `out`.
    #[allow(clippy::too_many_arguments)]
    fn render(
        &self,
        img: &DecodedImage,
        view: CropBox,
        resized: [usize; 2],
        filter: Filter,
        top: i64,
        left: i64,
        out: &mut [f32],
    ) {
        let [oh, ow] = self.config.size;
        assert_eq!(
            out.len(),
            self.output_len(),
            "output slice has {} values, the transform makes 3x{oh}x{ow}",
            out.len()
        );
        let [rh, rw] = resized;
        // The part of the output window that lies on the resized image.
        let clip = |off: i64, n: usize, size: usize| {
            let a = off.clamp(0, size as i64) as usize;
            let b = (off + n as i64).clamp(0, size as i64) as usize;
            (a, b.max(a))
        };
        let (x0, x1) = clip(left, ow, rw);
        let (y0, y1) = clip(top, oh, rh);
        let win = Window { x0, y0, x1, y1 };
        let win_rgb = if win.width() > 0 && win.height() > 0 {
            resize_window_rgb(img, view, resized, filter, win)
        } else {
            Vec::new()
        };
        let covers = win.width() == ow && win.height() == oh;
        if covers {
            self.norm.write_planes(&win_rgb, out);
            return;
        }
        // Padding: `fill_color` in every channel of the source mode, then converted.
        let fill = [self.config.fill_color; 4];
        let fill_rgb = match img.mode {
            PilMode::I16 => [fill[0]; 3],
            mode => mode_pixel_to_rgb(mode, &fill, img.palette.as_deref()),
        };
        let mut rgb = vec![0u8; oh * ow * 3];
        for y in 0..oh {
            for x in 0..ow {
                let (ry, rx) = (y as i64 + top, x as i64 + left);
                let px = if ry >= y0 as i64 && ry < y1 as i64 && rx >= x0 as i64 && rx < x1 as i64 {
                    let i = ((ry as usize - y0) * win.width() + (rx as usize - x0)) * 3;
                    [win_rgb[i], win_rgb[i + 1], win_rgb[i + 2]]
                } else {
                    fill_rgb
                };
                rgb[(y * ow + x) * 3..(y * ow + x) * 3 + 3].copy_from_slice(&px);
            }
        }
        self.norm.write_planes(&rgb, out);
    }
}

/// The window `win` of `img`'s `view` resized to `resized` the way PIL resizes the image's mode,
/// converted to interleaved RGB (`convert("RGB")`).
fn resize_window_rgb(
    img: &DecodedImage,
    view: CropBox,
    resized: [usize; 2],
    filter: Filter,
    win: Window,
) -> Vec<u8> {
    let [rh, rw] = resized;
    let same = rh == view.height && rw == view.width;
    let mode = img.mode;
    let c = mode.channels();
    let palette = img.palette.as_deref();
    let to_rgb = |px: &[u8]| -> Vec<u8> {
        let mut rgb = Vec::with_capacity(px.len() / c * 3);
        match mode {
            PilMode::Rgb => rgb.extend_from_slice(px),
            _ => {
                for p in px.chunks_exact(c) {
                    rgb.extend_from_slice(&mode_pixel_to_rgb(mode, p, palette));
                }
            }
        }
        rgb
    };
    match &img.samples {
        Samples::U16(s) => {
            // "I;16": 16-bit resampling, then convert("RGB") clamps to 0..=255.
            let sub = crop_samples(s, img.width, 1, view);
            let out = if same {
                crop_samples(&sub, view.width, 1, window_box(win))
            } else {
                pil::resample_u16(&sub, view.width, view.height, rw, rh, filter, win)
            };
            out.iter()
                .flat_map(|&v| {
                    let b = v.min(255) as u8;
                    [b, b, b]
                })
                .collect()
        }
        Samples::U8(s) => {
            if same {
                let b = CropBox {
                    top: view.top + win.y0,
                    left: view.left + win.x0,
                    height: win.height(),
                    width: win.width(),
                };
                return to_rgb(&crop_samples(s, img.width, c, b));
            }
            let offset = (view.top * img.width + view.left) * c;
            let stride = img.width * c;
            let (vw, vh) = (view.width, view.height);
            let px = match mode {
                PilMode::Bilevel | PilMode::Palette => {
                    let sub = crop_samples(s, img.width, 1, view);
                    pil::resample_nearest(&sub, vw, vh, rw, rh, win)
                }
                PilMode::L => {
                    pil::resample_u8::<1>(&s[offset..], vw, vh, stride, rw, rh, filter, win)
                }
                PilMode::Rgb => {
                    pil::resample_u8::<3>(&s[offset..], vw, vh, stride, rw, rh, filter, win)
                }
                PilMode::Cmyk => {
                    pil::resample_u8::<4>(&s[offset..], vw, vh, stride, rw, rh, filter, win)
                }
                PilMode::La => {
                    let mut sub = crop_samples(s, img.width, 2, view);
                    pil::premultiply::<2>(&mut sub);
                    let mut px = pil::resample_u8::<2>(&sub, vw, vh, vw * 2, rw, rh, filter, win);
                    pil::unpremultiply::<2>(&mut px);
                    px
                }
                PilMode::Rgba => {
                    let mut sub = crop_samples(s, img.width, 4, view);
                    pil::premultiply::<4>(&mut sub);
                    let mut px = pil::resample_u8::<4>(&sub, vw, vh, vw * 4, rw, rh, filter, win);
                    pil::unpremultiply::<4>(&mut px);
                    px
                }
                PilMode::I16 => unreachable!("I;16 images hold 16-bit samples"),
            };
            to_rgb(&px)
        }
    }
}

fn window_box(win: Window) -> CropBox {
    CropBox {
        top: win.y0,
        left: win.x0,
        height: win.height(),
        width: win.width(),
    }
}

/// The `b` rectangle of an interleaved image `width` pixels wide with `c` samples per pixel.
fn crop_samples<T: Copy>(s: &[T], width: usize, c: usize, b: CropBox) -> Vec<T> {
    let mut out = Vec::with_capacity(b.width * b.height * c);
    for y in b.top..b.top + b.height {
        let start = (y * width + b.left) * c;
        out.extend_from_slice(&s[start..start + b.width * c]);
    }
    out
}
