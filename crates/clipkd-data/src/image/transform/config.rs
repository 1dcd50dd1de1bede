//! The settings of open_clip's `image_transform`: size, interpolation, resize mode,
//! normalization, and the train-time crop, with open_clip's defaults and `preprocess_cfg`.

use std::str::FromStr;

use super::pil::Filter;
use crate::DataError;

/// open_clip's `OPENAI_DATASET_MEAN` (R, G, B).
pub const OPENAI_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// open_clip's `OPENAI_DATASET_STD` (R, G, B).
pub const OPENAI_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The resampling filter (`preprocess_cfg.interpolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Interpolation {
    /// PIL's bicubic (Keys a = -0.5, antialiased). open_clip's default.
    #[default]
    Bicubic,
    /// PIL's bilinear (triangle, antialiased).
    Bilinear,
    /// open_clip's `random`: only meaningful to timm's train transforms; open_clip's own eval
    /// transform treats it as bicubic, and so does this crate.
    Random,
}

impl Interpolation {
    /// The filter the eval transform uses (`random` -> bicubic, as open_clip).
    pub(super) fn eval_filter(self) -> Filter {
        match self {
            Interpolation::Bilinear => Filter::Bilinear,
            Interpolation::Bicubic | Interpolation::Random => Filter::Bicubic,
        }
    }

    /// open_clip's name (`bicubic`, `bilinear`, `random`).
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Bicubic => "bicubic",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Random => "random",
        }
    }
}

impl FromStr for Interpolation {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "bicubic" => Ok(Interpolation::Bicubic),
            "bilinear" => Ok(Interpolation::Bilinear),
            "random" => Ok(Interpolation::Random),
            other => Err(DataError::InvalidTransform {
                field: "interpolation",
                reason: format!("{other:?} (expected bicubic, bilinear or random)"),
            }),
        }
    }
}

/// How the eval transform fits the image to the output size (`preprocess_cfg.resize_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ResizeMode {
    /// Resize the shortest side to the output size, then center crop. open_clip's default.
    #[default]
    Shortest,
    /// Resize the longest side to the output size, then center crop or pad with `fill_color`.
    Longest,
    /// Resize to exactly the output size, ignoring the aspect ratio.
    Squash,
}

impl ResizeMode {
    /// open_clip's name (`shortest`, `longest`, `squash`).
    pub fn name(self) -> &'static str {
        match self {
            ResizeMode::Shortest => "shortest",
            ResizeMode::Longest => "longest",
            ResizeMode::Squash => "squash",
        }
    }
}

impl FromStr for ResizeMode {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "shortest" => Ok(ResizeMode::Shortest),
            "longest" => Ok(ResizeMode::Longest),
            "squash" => Ok(ResizeMode::Squash),
            other => Err(DataError::InvalidTransform {
                field: "resize_mode",
                reason: format!("{other:?} (expected shortest, longest or squash)"),
            }),
        }
    }
}

/// Settings of the image transforms: open_clip's `PreprocessCfg` plus the RandomResizedCrop
/// ranges of the train transform. `Default` is OpenAI CLIP at 224 with CLIP-KD's crop scale.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformConfig {
    /// Output `[height, width]`.
    pub size: [usize; 2],
    /// Per-channel mean subtracted after scaling to 0..1.
    pub mean: [f64; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f64; 3],
    /// Resampling filter of the eval transform (the train transform is always bicubic, as in
    /// open_clip).
    pub interpolation: Interpolation,
    /// How the eval transform fits the image.
    pub resize_mode: ResizeMode,
    /// Padding value (every channel, in the file's PIL mode) for [`ResizeMode::Longest`].
    pub fill_color: u8,
    /// RandomResizedCrop area range, as fractions of the image (open_clip/CLIP-KD: 0.9..1.0).
    pub crop_scale: (f64, f64),
    /// RandomResizedCrop aspect-ratio (w/h) range (torchvision's default 3/4..4/3).
    pub crop_ratio: (f64, f64),
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            size: [224, 224],
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
            interpolation: Interpolation::Bicubic,
            resize_mode: ResizeMode::Shortest,
            fill_color: 0,
            crop_scale: (0.9, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }
}

impl TransformConfig {
    /// OpenAI defaults at a square `size`.
    pub fn square(size: usize) -> Self {
        Self::default().with_size(size, size)
    }

    /// Sets the output size (`height`, `width`).
    pub fn with_size(mut self, height: usize, width: usize) -> Self {
        self.size = [height, width];
        self
    }

    /// Sets mean and std.
    pub fn with_mean_std(mut self, mean: [f64; 3], std: [f64; 3]) -> Self {
        self.mean = mean;
        self.std = std;
        self
    }

    /// Sets the eval interpolation.
    pub fn with_interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }

    /// Sets the eval resize mode.
    pub fn with_resize_mode(mut self, resize_mode: ResizeMode) -> Self {
        self.resize_mode = resize_mode;
        self
    }

    /// Sets the RandomResizedCrop area range.
    pub fn with_crop_scale(mut self, min: f64, max: f64) -> Self {
        self.crop_scale = (min, max);
        self
    }

    /// Applies the keys of an open_clip `preprocess_cfg` object (from a model config JSON or
    /// `open_clip.get_preprocess_cfg`): `size` (int or `[h, w]`), `mean` and `std` (number or
    /// 3 numbers), `interpolation`, `resize_mode`, `fill_color`. Other keys and `null`s are
    /// ignored, as open_clip's `merge_preprocess_dict` does.
    pub fn merge_preprocess_cfg(mut self, cfg: &serde_json::Value) -> Result<Self, DataError> {
        let Some(obj) = cfg.as_object() else {
            return Err(DataError::InvalidTransform {
                field: "preprocess_cfg",
                reason: format!("expected a JSON object, got {cfg}"),
            });
        };
        let bad = |field: &'static str, v: &serde_json::Value| DataError::InvalidTransform {
            field,
            reason: format!("unexpected value {v}"),
        };
        let to_usize = |field: &'static str, v: &serde_json::Value| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(field, v))
        };
        let triple = |field: &'static str, v: &serde_json::Value| -> Result<[f64; 3], DataError> {
            if let Some(x) = v.as_f64() {
                return Ok([x; 3]);
            }
            match v
                .as_array()
                .map(|a| a.iter().map(|x| x.as_f64()).collect::<Option<Vec<_>>>())
            {
                Some(Some(a)) if a.len() == 3 => Ok([a[0], a[1], a[2]]),
                Some(Some(a)) if a.len() == 1 => Ok([a[0]; 3]),
                _ => Err(bad(field, v)),
            }
        };
        for (key, v) in obj {
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "size" => {
                    self.size = match v.as_array() {
                        Some(a) if a.len() == 2 => {
                            [to_usize("size", &a[0])?, to_usize("size", &a[1])?]
                        }
                        Some(a) if a.len() == 1 => [to_usize("size", &a[0])?; 2],
                        Some(_) => return Err(bad("size", v)),
                        None => [to_usize("size", v)?; 2],
                    }
                }
                "mean" => self.mean = triple("mean", v)?,
                "std" => self.std = triple("std", v)?,
                "interpolation" => {
                    self.interpolation =
                        v.as_str().ok_or_else(|| bad("interpolation", v))?.parse()?
                }
                "resize_mode" => {
                    self.resize_mode = v.as_str().ok_or_else(|| bad("resize_mode", v))?.parse()?
                }
                "fill_color" => {
                    self.fill_color = v
                        .as_u64()
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or_else(|| bad("fill_color", v))?
                }
                _ => {}
            }
        }
        Ok(self)
    }

    pub(super) fn validate(&self) -> Result<(), DataError> {
        let err = |field, reason: String| Err(DataError::InvalidTransform { field, reason });
        if self.size[0] == 0 || self.size[1] == 0 {
            return err("size", format!("{:?} has a zero side", self.size));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return err("mean", format!("{:?} is not finite", self.mean));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return err("std", format!("{:?} must be finite and non-zero", self.std));
        }
        let (lo, hi) = self.crop_scale;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return err(
                "crop_scale",
                format!("({lo}, {hi}) must satisfy 0 < min <= max"),
            );
        }
        let (lo, hi) = self.crop_ratio;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return err(
                "crop_ratio",
                format!("({lo}, {hi}) must satisfy 0 < min <= max"),
            );
        }
        Ok(())
    }
}
