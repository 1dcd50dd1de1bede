//! Generated data for throughput tests (open_clip's `--dataset-type synthetic`).

use std::sync::Arc;

use super::{ImageSource, IndexedDataset, SampleRef};
use crate::image::DecodedImage;

/// `len` samples of generated RGB images with one caption, needing no file: open_clip's
/// `SyntheticDataset` (which uses one black image and `"Dummy caption"`), with a few distinct
/// images so that batches are not constant. Sample `i` uses image `i % variants`: a colour
/// gradient whose hue depends on the variant. Images are decoded already, so the loader's cost
/// is the transform and the tokenizer.
#[derive(Debug, Clone)]
pub struct SyntheticDataset {
    len: usize,
    caption: String,
    images: Vec<Arc<DecodedImage>>,
}

impl SyntheticDataset {
    /// The default caption, as open_clip.
    pub const CAPTION: &'static str = "Dummy caption";

    /// `len` samples of `width` x `height` images (8 variants), captioned
    /// [`Self::CAPTION`].
    ///
    /// # Panics
    /// If a side is zero.
    pub fn new(len: usize, width: usize, height: usize) -> Self {
        const VARIANTS: usize = 8;
        let images = (0..VARIANTS)
            .map(|v| {
                let mut rgb = Vec::with_capacity(width * height * 3);
                for y in 0..height {
                    for x in 0..width {
                        let gx = (x * 255 / width.max(2).saturating_sub(1).max(1)) as u8;
                        let gy = (y * 255 / height.max(2).saturating_sub(1).max(1)) as u8;
                        let tint = (v * 255 / (VARIANTS - 1)) as u8;
                        rgb.extend_from_slice(&[gx, gy, tint]);
                    }
                }
                Arc::new(DecodedImage::from_rgb8(width, height, rgb))
            })
            .collect();
        SyntheticDataset {
            len,
            caption: Self::CAPTION.to_string(),
            images,
        }
    }

    /// Replaces the caption.
    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = caption.into();
        self
    }
}

impl IndexedDataset for SyntheticDataset {
    fn len(&self) -> usize {
        self.len
    }

    fn sample(&self, index: usize) -> SampleRef {
        assert!(
            index < self.len,
            "index {index} out of range ({})",
            self.len
        );
        SampleRef {
            id: index as u64,
            key: format!("synthetic:{index}"),
            image: ImageSource::Decoded(self.images[index % self.images.len()].clone()),
            captions: vec![self.caption.clone()],
            label: None,
        }
    }
}
