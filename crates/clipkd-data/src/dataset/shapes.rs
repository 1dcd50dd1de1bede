//! Rendered shapes with captions: a small, download-free image-caption dataset for the
//! `clipkd demo` (and for tests that need images whose content a caption describes exactly).
//! Compiled with the crate's `shapes` feature (off by default).
//!
//! Every image shows one shape ([`ShapeKind`]) of one colour ([`ShapeColour`]) and size
//! ([`ShapeSize`]) at one of nine positions ([`ShapePosition`]) on a grey background with pixel
//! noise; the caption names all four ("a small red circle in the top left corner", from one of
//! a few [templates](CAPTION_TEMPLATES)). A class is a colour and a shape (`red circle`), for
//! zero-shot classification.
//!
//! Two splits, drawn from disjoint random streams:
//! - [`ShapesSplit::Train`]: every attribute drawn uniformly and independently;
//! - [`ShapesSplit::HeldOut`]: balanced over the classes (sample `i` has class `i % classes`),
//!   and within a class the (size, position) pairs are taken from a seeded permutation, so no
//!   two held-out images share all four attributes until every combination has been used.
//!   Captions are then distinct, which makes retrieval R@1 well defined.
//!
//! Everything is a function of the [`ShapesConfig`] (seed included): the same config gives
//! the same pixels and captions on every platform (ChaCha8 streams, integer-exact rasterization
//! with 4x4 supersampling).
//!
//! [`ShapesDataset`] serves a split from memory ([`IndexedDataset`], images already decoded);
//! [`write_shapes_dataset`] writes both splits as files that the ordinary pipeline reads:
//!
//! | file | what | read by |
//! |---|---|---|
//! | `train/000000.png` .. | training images | |
//! | `train.csv` | CLIP-KD CSV (`title`, `filepath` relative to the folder, tab-separated) | [`CsvDataset`](super::CsvDataset) |
//! | `heldout/<colour>_<shape>/000000.png` .. | held-out images, one folder per class | [`ImageFolder`](super::ImageFolder) |
//! | `heldout.csv` | held-out captions, same CSV format | [`RetrievalDataset`](super::RetrievalDataset) |
//! | `classnames.txt` | `folder<TAB>name` per class (`red_circle<TAB>red circle`) | zero-shot class names |
//! | `templates.txt` | zero-shot prompt templates, one per line ([`zero_shot_templates`]) | zero-shot templates |
//! | `dataset.json` | the config and the counts | |

mod files;
mod scene;

pub use files::{SHAPES_METADATA, ShapesFiles, write_shapes_dataset};
pub use scene::{
    CAPTION_TEMPLATES, ShapeClass, ShapeColour, ShapeKind, ShapePosition, ShapeScene, ShapeSize,
    ZERO_SHOT_CAPTION_TEMPLATES, zero_shot_templates,
};

use std::fmt;
use std::sync::Arc;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::order::{below, shuffle};
use super::{ImageSource, IndexedDataset, SampleRef};
use crate::DataError;
use crate::image::DecodedImage;

/// A split of the shapes dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapesSplit {
    /// Training pairs: attributes drawn independently.
    Train,
    /// Held-out pairs: balanced classes, distinct attribute combinations.
    HeldOut,
}

impl ShapesSplit {
    /// `train` or `heldout` (folder and file names).
    pub fn name(self) -> &'static str {
        match self {
            ShapesSplit::Train => "train",
            ShapesSplit::HeldOut => "heldout",
        }
    }
}

impl fmt::Display for ShapesSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to generate. Defaults: 32 px, 6000 training and 540 held-out images (30 classes x 18,
/// every held-out image with its own attribute combination), every colour, shape, size and
/// position, noise ±12, seed 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShapesConfig {
    /// Image side in pixels.
    pub image_size: usize,
    /// Training images.
    pub train_samples: usize,
    /// Held-out images.
    pub heldout_samples: usize,
    /// The seed of everything.
    pub seed: u64,
    /// Uniform pixel noise amplitude, in levels (0: none).
    pub noise: u8,
    /// The colours used.
    pub colours: Vec<ShapeColour>,
    /// The shapes used.
    pub kinds: Vec<ShapeKind>,
    /// The sizes used.
    pub sizes: Vec<ShapeSize>,
    /// The positions used.
    pub positions: Vec<ShapePosition>,
}

impl Default for ShapesConfig {
    fn default() -> Self {
        ShapesConfig {
            image_size: 32,
            train_samples: 6000,
            heldout_samples: 540,
            seed: 0,
            noise: 12,
            colours: ShapeColour::ALL.to_vec(),
            kinds: ShapeKind::ALL.to_vec(),
            sizes: ShapeSize::ALL.to_vec(),
            positions: ShapePosition::ALL.to_vec(),
        }
    }
}

impl ShapesConfig {
    /// The smallest image side accepted (a small shape is then about 4 pixels across).
    pub const MIN_IMAGE_SIZE: usize = 16;

    /// Checks the sizes and lists; errors name the field.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |what: String| Err(DataError::DatasetSpec { what });
        if self.image_size < Self::MIN_IMAGE_SIZE {
            return bad(format!(
                "shapes dataset: image_size {} is below the minimum {}",
                self.image_size,
                Self::MIN_IMAGE_SIZE
            ));
        }
        if self.train_samples == 0 || self.heldout_samples == 0 {
            return bad(format!(
                "shapes dataset: train_samples ({}) and heldout_samples ({}) must be at least 1",
                self.train_samples, self.heldout_samples
            ));
        }
        for (field, len) in [
            ("colours", self.colours.len()),
            ("kinds", self.kinds.len()),
            ("sizes", self.sizes.len()),
            ("positions", self.positions.len()),
        ] {
            if len == 0 {
                return bad(format!("shapes dataset: `{field}` is empty"));
            }
        }
        fn distinct<T: PartialEq>(items: &[T]) -> bool {
            items
                .iter()
                .enumerate()
                .all(|(i, a)| items[..i].iter().all(|b| a != b))
        }
        if !(distinct(&self.colours)
            && distinct(&self.kinds)
            && distinct(&self.sizes)
            && distinct(&self.positions))
        {
            return bad("shapes dataset: `colours`, `kinds`, `sizes` and `positions` must not repeat an item".into());
        }
        Ok(())
    }

    /// The zero-shot classes (every colour with every shape) in label order: sorted by folder
    /// name, as [`ImageFolder`](super::ImageFolder) numbers its classes.
    pub fn classes(&self) -> Vec<ShapeClass> {
        let mut classes: Vec<ShapeClass> = self
            .colours
            .iter()
            .flat_map(|&colour| {
                self.kinds
                    .iter()
                    .map(move |&kind| ShapeClass { colour, kind })
            })
            .collect();
        classes.sort_by_key(ShapeClass::folder);
        classes
    }

    /// Distinct (size, position) pairs per class: how many held-out images of one class can
    /// have distinct captions.
    pub fn combinations_per_class(&self) -> usize {
        self.sizes.len() * self.positions.len()
    }

    /// The scene of sample `index` of `split`. Each sample has its own random stream, so a
    /// sample does not depend on how many others are generated.
    pub fn scene(&self, split: ShapesSplit, index: usize) -> ShapeScene {
        let mut rng = stream(self.seed, split, index as u64);
        let pick = |rng: &mut ChaCha8Rng, n: usize| below(rng, n as u64) as usize;
        let (colour, kind, size, position) = match split {
            ShapesSplit::Train => (
                self.colours[pick(&mut rng, self.colours.len())],
                self.kinds[pick(&mut rng, self.kinds.len())],
                self.sizes[pick(&mut rng, self.sizes.len())],
                self.positions[pick(&mut rng, self.positions.len())],
            ),
            ShapesSplit::HeldOut => {
                let classes = self.classes();
                let class = classes[index % classes.len()];
                let round = index / classes.len();
                let combos = self.combinations_per_class();
                // Within a class, the pairs come from a permutation seeded by the class (and
                // the pass over them), so rounds use each pair once before repeating.
                let mut order: Vec<usize> = (0..combos).collect();
                let pass = (round / combos) as u64;
                let class_index = (index % classes.len()) as u64;
                shuffle(
                    &mut order,
                    &mut stream(
                        self.seed,
                        ShapesSplit::HeldOut,
                        (1 << 48) | (class_index << 24) | pass,
                    ),
                );
                let combo = order[round % combos];
                (
                    class.colour,
                    class.kind,
                    self.sizes[combo / self.positions.len()],
                    self.positions[combo % self.positions.len()],
                )
            }
        };
        let template = pick(&mut rng, CAPTION_TEMPLATES.len());
        let offset = (uniform(&mut rng, 0.04), uniform(&mut rng, 0.04));
        let angle = uniform(&mut rng, 0.0);
        let colour_jitter = std::array::from_fn(|_| below(&mut rng, 41) as i16 - 20);
        let background = 70 + below(&mut rng, 121) as u8;
        ShapeScene {
            kind,
            colour,
            size,
            position,
            template,
            offset,
            angle,
            colour_jitter,
            background,
            noise_seed: rng.next_u64(),
        }
    }
}

/// The random stream of `(seed, split, index)`: a ChaCha8 key made of the three words, each
/// passed through SplitMix64's finalizer with its own constant.
fn stream(seed: u64, split: ShapesSplit, index: u64) -> ChaCha8Rng {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let words = [
        mix(seed ^ 0x5348_4150_4553_0001),
        mix(split as u64 ^ 0x5348_4150_4553_0002),
        mix(index ^ 0x5348_4150_4553_0003),
        0x5348_4150_4553_0004,
    ];
    let mut key = [0u8; 32];
    for (chunk, w) in key.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// A uniform value in `[-amplitude, amplitude]` on a grid of 2^24 steps (exact in `f32`).
fn uniform(rng: &mut ChaCha8Rng, amplitude: f32) -> f32 {
    let unit = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
    (2.0 * unit - 1.0) * amplitude
}

/// One split of the shapes dataset in memory: scenes, rendered images, captions and labels.
/// As an [`IndexedDataset`], sample `i` has the caption of its scene and its class label
/// (position in [`ShapesConfig::classes`]).
#[derive(Debug, Clone)]
pub struct ShapesDataset {
    split: ShapesSplit,
    classes: Vec<ShapeClass>,
    scenes: Vec<ShapeScene>,
    labels: Vec<usize>,
    images: Vec<Arc<DecodedImage>>,
}

impl ShapesDataset {
    /// Generates and renders `split` (its size from the config).
    pub fn generate(config: &ShapesConfig, split: ShapesSplit) -> Result<Self, DataError> {
        config.validate()?;
        let len = match split {
            ShapesSplit::Train => config.train_samples,
            ShapesSplit::HeldOut => config.heldout_samples,
        };
        let classes = config.classes();
        let side = config.image_size;
        let scenes: Vec<ShapeScene> = (0..len).map(|i| config.scene(split, i)).collect();
        let labels = scenes
            .iter()
            .map(|s| {
                classes
                    .iter()
                    .position(|c| *c == s.class())
                    .expect("a scene's class is one of the config's")
            })
            .collect();
        let images = render_all(&scenes, side, config.noise);
        Ok(ShapesDataset {
            split,
            classes,
            scenes,
            labels,
            images,
        })
    }

    /// The split.
    pub fn split(&self) -> ShapesSplit {
        self.split
    }

    /// The classes in label order.
    pub fn classes(&self) -> &[ShapeClass] {
        &self.classes
    }

    /// The scenes.
    pub fn scenes(&self) -> &[ShapeScene] {
        &self.scenes
    }

    /// The label of sample `index`.
    pub fn label(&self, index: usize) -> usize {
        self.labels[index]
    }

    /// The rendered image of sample `index`.
    pub fn image(&self, index: usize) -> &Arc<DecodedImage> {
        &self.images[index]
    }

    /// The caption of sample `index`.
    pub fn caption(&self, index: usize) -> String {
        self.scenes[index].caption()
    }
}

/// Renders every scene, on up to 4 threads (rendering is per pixel and independent).
fn render_all(scenes: &[ShapeScene], side: usize, noise: u8) -> Vec<Arc<DecodedImage>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let chunk = scenes.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = scenes
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|s| {
                            Arc::new(DecodedImage::from_rgb8(side, side, s.render(side, noise)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("rendering does not panic"))
            .collect()
    })
}

impl IndexedDataset for ShapesDataset {
    fn len(&self) -> usize {
        self.scenes.len()
    }

    fn sample(&self, index: usize) -> SampleRef {
        assert!(
            index < self.scenes.len(),
            "index {index} out of range ({})",
            self.scenes.len()
        );
        SampleRef {
            id: index as u64,
            key: format!("shapes/{}:{index}", self.split),
            image: ImageSource::Decoded(self.images[index].clone()),
            captions: vec![self.scenes[index].caption()],
            label: Some(self.labels[index]),
        }
    }
}

#[cfg(test)]
mod tests;
