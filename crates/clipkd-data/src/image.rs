//! Image decoding and open_clip's preprocessing, numerically matching open_clip 3.3.0
//! (torchvision 0.2x transforms on Pillow 13 images).
//!
//! ```no_run
//! use clipkd_data::image::{DecodedImage, ImageTransform, TransformConfig};
//! # fn main() -> Result<(), clipkd_data::DataError> {
//! let transform = ImageTransform::new(TransformConfig::default())?; // OpenAI CLIP, 224
//! let img = DecodedImage::open("photo.jpg")?;
//! let eval = transform.eval(&img); // [3, 224, 224], CHW, normalized
//! let mut rng = rand::rng();
//! let mut batch = vec![0.0f32; 8 * transform.output_len()];
//! transform.train_into(&img, &mut rng, &mut batch[..transform.output_len()]);
//! # let _ = eval; Ok(()) }
//! ```
//!
//! # What is reproduced, and how closely
//! - **Modes.** PIL resizes an image in the mode the file opens in and only then
//!   `convert("RGB")`s it, so [`DecodedImage`] keeps that mode ([`PilMode`]): RGBA and LA are
//!   resized premultiplied (`RGBa`), palette and 1-bit images with nearest neighbour, 16-bit
//!   gray (`I;16`) in 16 bits and then clamped to 255, CMYK in CMYK. `convert("RGB")` drops
//!   alpha (no compositing), looks palettes up ignoring transparency, keeps the high byte of
//!   16-bit RGB(A) samples.
//! - **Resize.** A port of Pillow's `Resample.c`: the same filter weights, 22-bit fixed point,
//!   horizontal pass then vertical through an 8-bit intermediate. Bit-exact.
//! - **Geometry.** torchvision's `Resize(int)` (long side truncated), open_clip's
//!   `ResizeKeepRatio` (non-square sizes, `longest`), `CenterCrop` offsets rounded half to even
//!   as Python's `round`, padding as `center_crop_or_pad`; RandomResizedCrop's sampling
//!   algorithm with a caller-provided RNG (the draws differ from torch's RNG, the algorithm does
//!   not).
//! - **Normalize.** A per-channel lookup of `(v / 255 - mean) / std` in `f32`: bit-exact.
//! - **Decoding.** PNG, WebP (lossless and lossy): identical pixels to Pillow. JPEG is decoded
//!   by `zune-jpeg`, which differs from libjpeg-turbo (Pillow's decoder) by a few levels on some
//!   pixels: its IDCT (±1 on about 1% of samples) and, for subsampled chroma (4:2:0, 4:2:2),
//!   its fancy upsampling (up to ±3 on 10-25% of samples). Other formats are decoded by `image`;
//!   GIF and palette BMPs come out as RGB(A) rather than PIL's `P`, so they are resized with the
//!   interpolation filter instead of nearest neighbour.
//!
//! EXIF orientation is not applied (PIL's `Image.open` does not either). JPEGs are decoded at
//! full size (no DCT-domain downscaling), which is what PIL does without `draft()`.
//!
//! # Limits
//! An image whose header claims more than [`MAX_IMAGE_PIXELS`] pixels (PIL's
//! `DecompressionBombError` threshold) is refused before anything is allocated, whatever its
//! format; [`DecodedImage::open`] also refuses paths that are not regular files (a FIFO would
//! block) and files larger than [`MAX_IMAGE_FILE_BYTES`], before reading them.

mod decode;
mod pil;
mod tensor;
mod transform;

pub(crate) use decode::file_kind;
pub use decode::{DecodedImage, MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS, PilMode};
pub use tensor::ImageTensor;
pub use transform::{
    CropBox, EvalGeometry, ImageTransform, Interpolation, OPENAI_MEAN, OPENAI_STD, ResizeMode,
    TransformConfig,
};
