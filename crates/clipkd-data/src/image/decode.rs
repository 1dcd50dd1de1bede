//! Decoding image files into [`DecodedImage`]: the pixels plus the PIL mode `Image.open` would
//! give the file, because the mode decides how open_clip's transforms resize and convert it.

use std::fs::{File, Metadata};
use std::io::{Cursor, Read};
use std::path::Path;

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

use super::pil;
use crate::DataError;

/// The PNG decoder's own allocations (line buffers, decompressed metadata), in bytes. The
/// output buffer is not counted: [`MAX_IMAGE_PIXELS`] bounds it.
const MAX_DECODED_BYTES: usize = 1 << 30;

/// The most pixels (width x height) an image may claim: PIL's decompression-bomb threshold,
/// `2 * Image.MAX_IMAGE_PIXELS` (above it PIL raises `DecompressionBombError`, at or below it
/// PIL opens the image, so do we). Larger images are refused with
/// [`DataError::ImageTooLarge`] from the header alone, before anything is allocated: a
/// 74-byte PNG can claim 100000x100000 pixels (30 GB).
pub const MAX_IMAGE_PIXELS: u64 = 2 * 89_478_485;

/// The largest image file [`DecodedImage::open`] reads into memory (1 GiB); larger files are
/// refused with [`DataError::ImageFileTooLarge`] before they are read.
pub const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;

/// The PIL mode of a decoded image (what `Image.open(f).mode` says). It decides how the image is
/// resized (PIL resizes in the file's own mode, before `convert("RGB")`) and converted to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PilMode {
    /// `"1"`: bilevel (1-bit PNG). Resized with nearest neighbour, like `"P"`.
    Bilevel,
    /// `"L"`: 8-bit grayscale.
    L,
    /// `"LA"`: grayscale + alpha. Resized premultiplied; `convert("RGB")` drops the alpha.
    /// 16-bit gray + alpha PNGs, which PIL opens as `"RGBA"` with three equal colour channels,
    /// are reported as `La`: their pixels and results are the same.
    La,
    /// `"RGB"`.
    Rgb,
    /// `"RGBA"`: resized premultiplied (`RGBa`); `convert("RGB")` drops the alpha (no
    /// compositing on a background).
    Rgba,
    /// `"P"`: palette indices. Resized with nearest neighbour; converted by palette lookup
    /// (transparency ignored).
    Palette,
    /// `"I;16"`: 16-bit grayscale (16-bit gray PNG). `convert("RGB")` clamps values to 0..=255, so
    /// such images come out mostly white, exactly as in PIL.
    I16,
    /// `"CMYK"`: CMYK JPEG (PIL assumes Adobe's inverted storage). Resized as CMYK, then
    /// converted with PIL's `cmyk2rgb`.
    Cmyk,
}

impl PilMode {
    /// PIL's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            PilMode::Bilevel => "1",
            PilMode::L => "L",
            PilMode::La => "LA",
            PilMode::Rgb => "RGB",
            PilMode::Rgba => "RGBA",
            PilMode::Palette => "P",
            PilMode::I16 => "I;16",
            PilMode::Cmyk => "CMYK",
        }
    }

    /// Samples per pixel as stored in a [`DecodedImage`].
    pub fn channels(self) -> usize {
        match self {
            PilMode::Bilevel | PilMode::L | PilMode::Palette | PilMode::I16 => 1,
            PilMode::La => 2,
            PilMode::Rgb => 3,
            PilMode::Rgba | PilMode::Cmyk => 4,
        }
    }
}

/// Pixel storage: 8-bit samples, or 16-bit for [`PilMode::I16`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

/// A decoded image as PIL holds it after `Image.open`: interleaved samples in its [`PilMode`]
/// (`mode.channels()` per pixel, rows top to bottom, no padding) and, for [`PilMode::Palette`],
/// the palette.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) mode: PilMode,
    pub(crate) samples: Samples,
    /// 256 RGB entries; indices past the file's palette map to black.
    pub(crate) palette: Option<Box<[[u8; 3]; 256]>>,
}

impl DecodedImage {
    /// Reads and decodes an image file (JPEG, PNG, WebP, GIF, BMP; the format is sniffed from
    /// the content, not the extension). Errors name the file.
    ///
    /// Refused before the file is opened or read: a path that is not a regular file
    /// ([`DataError::NotAFile`]: a directory, a FIFO, which would block until a writer
    /// appears, a socket, a device; symlinks are followed) and a file larger than
    /// [`MAX_IMAGE_FILE_BYTES`] ([`DataError::ImageFileTooLarge`]). Then as
    /// [`DecodedImage::from_bytes`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let bytes = read_image_file(path)?;
        Self::from_bytes(&bytes, path)
    }

    /// Decodes an encoded image held in memory; `origin` (a path or a name, e.g. a tar member)
    /// is only used in error messages. An image whose header claims more than
    /// [`MAX_IMAGE_PIXELS`] pixels is refused with [`DataError::ImageTooLarge`] before its
    /// pixels are allocated or decoded.
    pub fn from_bytes(bytes: &[u8], origin: impl AsRef<Path>) -> Result<Self, DataError> {
        let origin = origin.as_ref();
        let format = image::guess_format(bytes).map_err(|_| DataError::ImageFormat {
            path: origin.to_path_buf(),
            what: "not a recognised image format (the first bytes match no known signature)".into(),
        })?;
        let img = match format {
            image::ImageFormat::Jpeg => decode_jpeg(bytes, origin),
            image::ImageFormat::Png => decode_png(bytes, origin),
            image::ImageFormat::WebP | image::ImageFormat::Gif | image::ImageFormat::Bmp => {
                decode_with_image(bytes, format, origin)
            }
            other => Err(DataError::ImageFormat {
                path: origin.to_path_buf(),
                what: format!("{other:?} images are not supported (JPEG, PNG, WebP, GIF, BMP are)"),
            }),
        }?;
        if img.width == 0 || img.height == 0 {
            return Err(DataError::ImageFormat {
                path: origin.to_path_buf(),
                what: format!("empty image ({}x{})", img.width, img.height),
            });
        }
        Ok(img)
    }

    /// An 8-bit RGB image (`width * height * 3` bytes, interleaved), e.g. synthetic data.
    ///
    /// # Panics
    /// If `rgb.len() != width * height * 3` or a side is zero.
    pub fn from_rgb8(width: usize, height: usize, rgb: Vec<u8>) -> Self {
        assert!(width > 0 && height > 0, "empty image {width}x{height}");
        assert_eq!(
            rgb.len(),
            width * height * 3,
            "{width}x{height} RGB needs {} bytes",
            width * height * 3
        );
        DecodedImage {
            width,
            height,
            mode: PilMode::Rgb,
            samples: Samples::U8(rgb),
            palette: None,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The PIL mode the file opens in.
    pub fn mode(&self) -> PilMode {
        self.mode
    }

    /// `Image.convert("RGB")` of the whole image: `width * height * 3` bytes, interleaved.
    pub fn to_rgb8(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.width * self.height * 3];
        for (i, o) in out.chunks_exact_mut(3).enumerate() {
            o.copy_from_slice(&self.pixel_rgb(i));
        }
        out
    }

    /// `convert("RGB")` of pixel `i` (row-major index).
    #[inline]
    pub(crate) fn pixel_rgb(&self, i: usize) -> [u8; 3] {
        match &self.samples {
            Samples::U8(s) => mode_pixel_to_rgb(
                self.mode,
                &s[i * self.mode.channels()..],
                self.palette.as_deref(),
            ),
            Samples::U16(s) => {
                let v = s[i].min(255) as u8;
                [v, v, v]
            }
        }
    }
}

/// `convert("RGB")` of one pixel in `mode` (its first `mode.channels()` samples in `px`).
#[inline(always)]
pub(crate) fn mode_pixel_to_rgb(
    mode: PilMode,
    px: &[u8],
    palette: Option<&[[u8; 3]; 256]>,
) -> [u8; 3] {
    match mode {
        PilMode::Bilevel => {
            let v = if px[0] != 0 { 255 } else { 0 };
            [v, v, v]
        }
        PilMode::L | PilMode::La => [px[0], px[0], px[0]],
        PilMode::Rgb | PilMode::Rgba => [px[0], px[1], px[2]],
        PilMode::Palette => palette.map_or([0, 0, 0], |p| p[usize::from(px[0])]),
        PilMode::I16 => [px[0], px[0], px[0]],
        PilMode::Cmyk => pil::cmyk_to_rgb([px[0], px[1], px[2], px[3]]),
    }
}

/// Reads an image file after checking that it is a regular file of at most
/// [`MAX_IMAGE_FILE_BYTES`] (see [`DecodedImage::open`]).
fn read_image_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    // `metadata` follows symlinks and does not open the file: opening a FIFO would block.
    check_file(path, &std::fs::metadata(path).map_err(io)?)?;
    let file = File::open(path).map_err(io)?;
    // The path may have been replaced or the file grown since: check what was opened, and
    // never read past the limit.
    let meta = file.metadata().map_err(io)?;
    check_file(path, &meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_IMAGE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_IMAGE_FILE_BYTES {
        return Err(DataError::ImageFileTooLarge {
            path: path.to_path_buf(),
            bytes: bytes.len() as u64,
            limit: MAX_IMAGE_FILE_BYTES,
        });
    }
    Ok(bytes)
}

/// Refuses what is not a regular file or is larger than [`MAX_IMAGE_FILE_BYTES`].
fn check_file(path: &Path, meta: &Metadata) -> Result<(), DataError> {
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
            kind: file_kind(&ft),
        });
    }
    if meta.len() > MAX_IMAGE_FILE_BYTES {
        return Err(DataError::ImageFileTooLarge {
            path: path.to_path_buf(),
            bytes: meta.len(),
            limit: MAX_IMAGE_FILE_BYTES,
        });
    }
    Ok(())
}

/// What a file that is not a regular file is, for error messages.
pub(crate) fn file_kind(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Refuses an image whose header claims more than [`MAX_IMAGE_PIXELS`] pixels (PIL counts a
/// zero side as 1; zero sides are refused later anyway).
fn check_pixels(origin: &Path, width: u64, height: u64) -> Result<(), DataError> {
    if width.max(1).saturating_mul(height.max(1)) > MAX_IMAGE_PIXELS {
        return Err(DataError::ImageTooLarge {
            path: origin.to_path_buf(),
            width,
            height,
            limit: MAX_IMAGE_PIXELS,
        });
    }
    Ok(())
}

fn decode_error(
    origin: &Path,
    source: impl std::error::Error + Send + Sync + 'static,
) -> DataError {
    DataError::ImageDecode {
        path: origin.to_path_buf(),
        source: Box::new(source),
    }
}

/// JPEG through `zune-jpeg`. PIL (libjpeg-turbo) modes: one component -> L, YCbCr/RGB -> RGB,
/// CMYK/YCCK -> CMYK (inverted, "CMYK;I").
fn decode_jpeg(bytes: &[u8], origin: &Path) -> Result<DecodedImage, DataError> {
    let options = DecoderOptions::default()
        // Strict: a truncated or corrupt stream is an error (PIL raises "image file is
        // truncated"), not an image padded with gray.
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut probe = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    probe
        .decode_headers()
        .map_err(|e| decode_error(origin, ZuneError(e.to_string())))?;
    if let Some((w, h)) = probe.dimensions() {
        check_pixels(origin, w as u64, h as u64)?;
    }
    let input = probe.input_colorspace().unwrap_or(ColorSpace::YCbCr);
    let (out_cs, mode) = match input {
        ColorSpace::Luma => (ColorSpace::Luma, PilMode::L),
        ColorSpace::YCbCr | ColorSpace::RGB => (ColorSpace::RGB, PilMode::Rgb),
        ColorSpace::CMYK => (ColorSpace::CMYK, PilMode::Cmyk),
        ColorSpace::YCCK => (ColorSpace::YCCK, PilMode::Cmyk),
        other => {
            return Err(DataError::ImageFormat {
                path: origin.to_path_buf(),
                what: format!("JPEG colour space {other:?} is not supported"),
            });
        }
    };
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(
        ZCursor::new(bytes),
        options.jpeg_set_out_colorspace(out_cs),
    );
    let mut px = dec
        .decode()
        .map_err(|e| decode_error(origin, ZuneError(e.to_string())))?;
    let (width, height) = dec.dimensions().unwrap_or((0, 0));
    if input == ColorSpace::YCCK {
        // libjpeg: YCCK -> CMYK is YCbCr -> RGB, then C,M,Y = 255 - R,G,B (K kept); PIL then
        // inverts all four ("CMYK;I"): C,M,Y = R,G,B and K = 255 - K.
        for p in px.chunks_exact_mut(4) {
            let [r, g, b] = pil::ycc_to_rgb(p[0], p[1], p[2]);
            p.copy_from_slice(&[r, g, b, 255 - p[3]]);
        }
    } else if input == ColorSpace::CMYK {
        // PIL's "CMYK;I" raw mode: Adobe stores inverted CMYK.
        for v in &mut px {
            *v = 255 - *v;
        }
    }
    Ok(DecodedImage {
        width,
        height,
        mode,
        samples: Samples::U8(px),
        palette: None,
    })
}

/// A `zune-jpeg` error as a `std::error::Error` (zune's own type is not `Send + Sync` on all
/// versions).
#[derive(Debug)]
struct ZuneError(String);

impl std::fmt::Display for ZuneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JPEG: {}", self.0)
    }
}

impl std::error::Error for ZuneError {}

/// PNG through `png`, without its expansions, mapped to PIL's modes (PngImagePlugin `_MODES`):
/// 1-bit gray -> "1"; 2/4/8-bit gray -> "L" (scaled); 16-bit gray -> "I;16"; RGB(16) -> "RGB"
/// (high byte); palette -> "P"; gray+alpha 8 -> "LA"; gray+alpha 16 -> "RGBA" (high byte, same
/// pixels as "LA"); RGBA(16) -> "RGBA" (high byte). tRNS chunks only annotate in PIL: ignored.
fn decode_png(bytes: &[u8], origin: &Path) -> Result<DecodedImage, DataError> {
    use png::{BitDepth, ColorType};
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: MAX_DECODED_BYTES,
        },
    );
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| decode_error(origin, e))?;
    // `png`'s limits do not cover the output buffer allocated below.
    check_pixels(
        origin,
        u64::from(reader.info().width),
        u64::from(reader.info().height),
    )?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| DataError::ImageFormat {
            path: origin.to_path_buf(),
            what: "PNG too large".into(),
        })?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| decode_error(origin, e))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let line = info.line_size;
    let rows = || (0..h).map(|y| &buf[y * line..(y + 1) * line]);
    let bits = info.bit_depth as u8;
    let unpack = |scale: u8| -> Vec<u8> {
        // Low bit depths: MSB first, each row starts on a byte boundary.
        let per_byte = 8 / bits as usize;
        let mask = (1u16 << bits) as u8 - 1;
        let mut out = Vec::with_capacity(w * h);
        for row in rows() {
            for x in 0..w {
                let byte = row[x / per_byte];
                let shift = 8 - bits as usize * (x % per_byte + 1);
                out.push(((byte >> shift) & mask) * scale);
            }
        }
        out
    };
    let high_bytes = |channels: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(w * h * channels);
        for row in rows() {
            out.extend(row[..w * channels * 2].chunks_exact(2).map(|p| p[0]));
        }
        out
    };
    let copy8 = |channels: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(w * h * channels);
        for row in rows() {
            out.extend_from_slice(&row[..w * channels]);
        }
        out
    };
    let mut palette = None;
    let (mode, samples) = match (info.color_type, info.bit_depth) {
        (ColorType::Grayscale, BitDepth::One) => (PilMode::Bilevel, Samples::U8(unpack(255))),
        (ColorType::Grayscale, BitDepth::Two) => (PilMode::L, Samples::U8(unpack(0x55))),
        (ColorType::Grayscale, BitDepth::Four) => (PilMode::L, Samples::U8(unpack(0x11))),
        (ColorType::Grayscale, BitDepth::Eight) => (PilMode::L, Samples::U8(copy8(1))),
        (ColorType::Grayscale, BitDepth::Sixteen) => {
            let mut out = Vec::with_capacity(w * h);
            for row in rows() {
                out.extend(
                    row[..w * 2]
                        .chunks_exact(2)
                        .map(|p| u16::from_be_bytes([p[0], p[1]])),
                );
            }
            (PilMode::I16, Samples::U16(out))
        }
        (ColorType::Rgb, BitDepth::Eight) => (PilMode::Rgb, Samples::U8(copy8(3))),
        (ColorType::Rgb, BitDepth::Sixteen) => (PilMode::Rgb, Samples::U8(high_bytes(3))),
        (ColorType::GrayscaleAlpha, BitDepth::Eight) => (PilMode::La, Samples::U8(copy8(2))),
        (ColorType::GrayscaleAlpha, BitDepth::Sixteen) => (PilMode::La, Samples::U8(high_bytes(2))),
        (ColorType::Rgba, BitDepth::Eight) => (PilMode::Rgba, Samples::U8(copy8(4))),
        (ColorType::Rgba, BitDepth::Sixteen) => (PilMode::Rgba, Samples::U8(high_bytes(4))),
        (ColorType::Indexed, depth) => {
            let idx = if depth == BitDepth::Eight {
                copy8(1)
            } else {
                unpack(1)
            };
            let mut pal = Box::new([[0u8; 3]; 256]);
            if let Some(p) = &reader.info().palette {
                for (entry, rgb) in pal.iter_mut().zip(p.chunks_exact(3)) {
                    entry.copy_from_slice(rgb);
                }
            }
            palette = Some(pal);
            (PilMode::Palette, Samples::U8(idx))
        }
        (ct, bd) => {
            return Err(DataError::ImageFormat {
                path: origin.to_path_buf(),
                what: format!("invalid PNG colour type / bit depth {ct:?} / {bd:?}"),
            });
        }
    };
    Ok(DecodedImage {
        width: w,
        height: h,
        mode,
        samples,
        palette,
    })
}

/// WebP, GIF, BMP through `image`, mapped to the closest PIL mode by the decoded layout. WebP
/// matches PIL (RGB, or RGBA with alpha). GIF and palette BMPs are palette images ("P") in PIL
/// but come out of `image` as RGB(A) here, so they are resized with the bicubic filter where PIL
/// uses nearest neighbour.
fn decode_with_image(
    bytes: &[u8],
    format: image::ImageFormat,
    origin: &Path,
) -> Result<DecodedImage, DataError> {
    use image::DynamicImage as D;
    use image::ImageDecoder;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    // `image`'s default allocation limit (512 MiB) refuses RGBA images PIL opens; the pixel
    // check below is the real bound (8 bytes per pixel covers RGBA16).
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| decode_error(origin, e))?;
    let (w, h) = decoder.dimensions();
    check_pixels(origin, u64::from(w), u64::from(h))?;
    let img = D::from_decoder(decoder).map_err(|e| decode_error(origin, e))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let high = |v: &[u16]| v.iter().map(|&s| (s >> 8) as u8).collect::<Vec<u8>>();
    let (mode, samples) = match img {
        D::ImageLuma8(b) => (PilMode::L, Samples::U8(b.into_raw())),
        D::ImageLumaA8(b) => (PilMode::La, Samples::U8(b.into_raw())),
        D::ImageRgb8(b) => (PilMode::Rgb, Samples::U8(b.into_raw())),
        D::ImageRgba8(b) => (PilMode::Rgba, Samples::U8(b.into_raw())),
        D::ImageLuma16(b) => (PilMode::I16, Samples::U16(b.into_raw())),
        D::ImageLumaA16(b) => (PilMode::La, Samples::U8(high(&b))),
        D::ImageRgb16(b) => (PilMode::Rgb, Samples::U8(high(&b))),
        D::ImageRgba16(b) => (PilMode::Rgba, Samples::U8(high(&b))),
        other if other.color().has_alpha() => {
            (PilMode::Rgba, Samples::U8(other.into_rgba8().into_raw()))
        }
        other => (PilMode::Rgb, Samples::U8(other.into_rgb8().into_raw())),
    };
    Ok(DecodedImage {
        width: w,
        height: h,
        mode,
        samples,
        palette: None,
    })
}
