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

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::order::{below, shuffle};
use super::{ImageSource, IndexedDataset, SampleRef};
use crate::DataError;
use crate::image::DecodedImage;

/// A shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeKind {
    /// A disc.
    Circle,
    /// An axis-aligned square (up to the rotation jitter).
    Square,
    /// An upward-pointing triangle.
    Triangle,
    /// A square standing on a corner.
    Diamond,
    /// A plus sign.
    Cross,
}

impl ShapeKind {
    /// Every shape.
    pub const ALL: [ShapeKind; 5] = [
        ShapeKind::Circle,
        ShapeKind::Square,
        ShapeKind::Triangle,
        ShapeKind::Diamond,
        ShapeKind::Cross,
    ];

    /// The word in captions (`circle`).
    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
            ShapeKind::Diamond => "diamond",
            ShapeKind::Cross => "cross",
        }
    }

    /// Whether the point `(x, y)` (shape coordinates: centre at the origin, radius 1, `y`
    /// pointing down) is inside the shape. The shapes cover similar areas (about 2.2-3.2).
    fn contains(self, x: f32, y: f32) -> bool {
        match self {
            ShapeKind::Circle => x * x + y * y <= 1.0,
            ShapeKind::Square => x.abs() <= 0.886 && y.abs() <= 0.886,
            ShapeKind::Triangle => {
                // Apex (0, -1.2), base at y = 0.75 from x = -1.13 to 1.13.
                (-1.2..=0.75).contains(&y) && x.abs() <= (y + 1.2) * (1.13 / 1.95)
            }
            ShapeKind::Diamond => x.abs() + y.abs() <= 1.25,
            ShapeKind::Cross => {
                (x.abs() <= 0.38 && y.abs() <= 1.1) || (y.abs() <= 0.38 && x.abs() <= 1.1)
            }
        }
    }
}

impl fmt::Display for ShapeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A colour (each image jitters it a little).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeColour {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
    /// Purple.
    Purple,
    /// Orange.
    Orange,
}

impl ShapeColour {
    /// Every colour.
    pub const ALL: [ShapeColour; 6] = [
        ShapeColour::Red,
        ShapeColour::Green,
        ShapeColour::Blue,
        ShapeColour::Yellow,
        ShapeColour::Purple,
        ShapeColour::Orange,
    ];

    /// The word in captions (`red`).
    pub fn name(self) -> &'static str {
        match self {
            ShapeColour::Red => "red",
            ShapeColour::Green => "green",
            ShapeColour::Blue => "blue",
            ShapeColour::Yellow => "yellow",
            ShapeColour::Purple => "purple",
            ShapeColour::Orange => "orange",
        }
    }

    /// The nominal RGB value.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            ShapeColour::Red => [215, 35, 35],
            ShapeColour::Green => [40, 175, 50],
            ShapeColour::Blue => [40, 70, 220],
            ShapeColour::Yellow => [235, 215, 40],
            ShapeColour::Purple => [140, 50, 190],
            ShapeColour::Orange => [245, 135, 25],
        }
    }
}

impl fmt::Display for ShapeColour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A size: the shape's radius as a fraction of the image side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeSize {
    /// Radius 0.13 of the side.
    Small,
    /// Radius 0.19 of the side.
    Medium,
    /// Radius 0.25 of the side.
    Large,
}

impl ShapeSize {
    /// Every size.
    pub const ALL: [ShapeSize; 3] = [ShapeSize::Small, ShapeSize::Medium, ShapeSize::Large];

    /// The word in captions (`small`).
    pub fn name(self) -> &'static str {
        match self {
            ShapeSize::Small => "small",
            ShapeSize::Medium => "medium",
            ShapeSize::Large => "large",
        }
    }

    /// The radius as a fraction of the image side.
    pub fn radius(self) -> f32 {
        match self {
            ShapeSize::Small => 0.13,
            ShapeSize::Medium => 0.19,
            ShapeSize::Large => 0.25,
        }
    }
}

impl fmt::Display for ShapeSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the shape is: a cell of a 3x3 grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapePosition {
    /// Top left.
    TopLeft,
    /// Top, centred horizontally.
    Top,
    /// Top right.
    TopRight,
    /// Left, centred vertically.
    Left,
    /// The centre.
    Centre,
    /// Right, centred vertically.
    Right,
    /// Bottom left.
    BottomLeft,
    /// Bottom, centred horizontally.
    Bottom,
    /// Bottom right.
    BottomRight,
}

impl ShapePosition {
    /// Every position, row by row.
    pub const ALL: [ShapePosition; 9] = [
        ShapePosition::TopLeft,
        ShapePosition::Top,
        ShapePosition::TopRight,
        ShapePosition::Left,
        ShapePosition::Centre,
        ShapePosition::Right,
        ShapePosition::BottomLeft,
        ShapePosition::Bottom,
        ShapePosition::BottomRight,
    ];

    /// The phrase in captions (`in the top left corner`, `at the top`, `in the centre`).
    pub fn phrase(self) -> &'static str {
        match self {
            ShapePosition::TopLeft => "in the top left corner",
            ShapePosition::Top => "at the top",
            ShapePosition::TopRight => "in the top right corner",
            ShapePosition::Left => "on the left",
            ShapePosition::Centre => "in the centre",
            ShapePosition::Right => "on the right",
            ShapePosition::BottomLeft => "in the bottom left corner",
            ShapePosition::Bottom => "at the bottom",
            ShapePosition::BottomRight => "in the bottom right corner",
        }
    }

    /// The cell `(column, row)`, each 0, 1 or 2.
    pub fn cell(self) -> (usize, usize) {
        let i = self as usize;
        (i % 3, i / 3)
    }

    /// The centre of the cell as fractions of the side `(x, y)`: 0.2, 0.5 or 0.8 (so that a
    /// large shape in a corner stays mostly inside the image).
    pub fn centre(self) -> (f32, f32) {
        const AT: [f32; 3] = [0.2, 0.5, 0.8];
        let (c, r) = self.cell();
        (AT[c], AT[r])
    }
}

impl fmt::Display for ShapePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.phrase())
    }
}

/// The caption templates: `{size}`, `{colour}`, `{shape}` and `{position}` (a phrase such as
/// `in the top left corner`) are filled in; each names all four attributes.
pub const CAPTION_TEMPLATES: [&str; 4] = [
    "a {size} {colour} {shape} {position}",
    "{position} there is a {size} {colour} {shape}",
    "a picture of a {size} {colour} {shape} {position}",
    "a {colour} {shape}, {size}, {position}",
];

/// The caption templates the zero-shot prompts are made from: those that put the size before
/// the class name (`a small {}`), so that the article is right for every colour.
pub const ZERO_SHOT_CAPTION_TEMPLATES: [usize; 3] = [0, 1, 2];

/// A zero-shot class: a colour and a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShapeClass {
    /// The colour.
    pub colour: ShapeColour,
    /// The shape.
    pub kind: ShapeKind,
}

impl ShapeClass {
    /// The class name used in prompts (`red circle`).
    pub fn name(&self) -> String {
        format!("{} {}", self.colour.name(), self.kind.name())
    }

    /// The class folder (`red_circle`).
    pub fn folder(&self) -> String {
        format!("{}_{}", self.colour.name(), self.kind.name())
    }
}

impl fmt::Display for ShapeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.colour, self.kind)
    }
}

/// The zero-shot prompt templates of a config (the class name, e.g. `red circle`, goes in
/// `{}`): every caption template of [`ZERO_SHOT_CAPTION_TEMPLATES`] with every size and
/// position filled in (`a small {} in the top left corner`, ...), 81 with the default
/// config. A class's embedding is the mean over them, the way CLIP averages its 80 ImageNet
/// templates over photo contexts; here the contexts are the sizes and positions a class
/// appears in, and the prompts read like the training captions.
pub fn zero_shot_templates(config: &ShapesConfig) -> Vec<String> {
    let mut out = Vec::new();
    for &t in &ZERO_SHOT_CAPTION_TEMPLATES {
        for &size in &config.sizes {
            for &position in &config.positions {
                out.push(
                    CAPTION_TEMPLATES[t]
                        .replace("{size}", size.name())
                        .replace("{colour} {shape}", "{}")
                        .replace("{position}", position.phrase()),
                );
            }
        }
    }
    out
}

/// One image's content: the captioned attributes and the uncaptioned variation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeScene {
    /// The shape.
    pub kind: ShapeKind,
    /// The colour.
    pub colour: ShapeColour,
    /// The size.
    pub size: ShapeSize,
    /// The grid cell.
    pub position: ShapePosition,
    /// Which of [`CAPTION_TEMPLATES`] the caption uses.
    pub template: usize,
    /// Offset of the centre from the cell's centre, as fractions of the side (within ±0.04).
    pub offset: (f32, f32),
    /// Rotation in radians (within ±0.175, i.e. ±10°).
    pub angle: f32,
    /// Per-channel offset added to the colour (within ±20).
    pub colour_jitter: [i16; 3],
    /// The background grey level (70..=190).
    pub background: u8,
    /// Seed of the pixel noise.
    pub noise_seed: u64,
}

impl ShapeScene {
    /// The caption: [`CAPTION_TEMPLATES`]`[template]` filled with the attributes (`a`
    /// becomes `an` before a vowel: "an orange cross").
    pub fn caption(&self) -> String {
        let text = CAPTION_TEMPLATES[self.template % CAPTION_TEMPLATES.len()]
            .replace("{size}", self.size.name())
            .replace("{colour}", self.colour.name())
            .replace("{shape}", self.kind.name())
            .replace("{position}", self.position.phrase());
        let words: Vec<&str> = text.split(' ').collect();
        let fixed: Vec<&str> = words
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let vowel_next = words
                    .get(i + 1)
                    .is_some_and(|n| n.starts_with(['a', 'e', 'i', 'o', 'u']));
                if w == "a" && vowel_next { "an" } else { w }
            })
            .collect();
        fixed.join(" ")
    }

    /// The zero-shot class (colour and shape).
    pub fn class(&self) -> ShapeClass {
        ShapeClass {
            colour: self.colour,
            kind: self.kind,
        }
    }

    /// Renders the scene as `side` x `side` RGB pixels (interleaved, rows top to bottom):
    /// the background, the shape anti-aliased by 4x4 supersampling, then uniform noise of
    /// ±`noise` levels on every sample.
    pub fn render(&self, side: usize, noise: u8) -> Vec<u8> {
        const SUB: usize = 4;
        let s = side as f32;
        let (cx, cy) = self.position.centre();
        let (cx, cy) = ((cx + self.offset.0) * s, (cy + self.offset.1) * s);
        let r = self.size.radius() * s;
        let (sin, cos) = (-self.angle).sin_cos();
        let base = self.colour.rgb();
        let fg: [f32; 3] = std::array::from_fn(|c| {
            (i16::from(base[c]) + self.colour_jitter[c]).clamp(0, 255) as f32
        });
        let bg = f32::from(self.background);
        let mut rng = ChaCha8Rng::seed_from_u64(self.noise_seed);
        let mut out = Vec::with_capacity(side * side * 3);
        for py in 0..side {
            for px in 0..side {
                let mut inside = 0usize;
                for sy in 0..SUB {
                    for sx in 0..SUB {
                        let x = px as f32 + (sx as f32 + 0.5) / SUB as f32 - cx;
                        let y = py as f32 + (sy as f32 + 0.5) / SUB as f32 - cy;
                        let (u, v) = ((x * cos - y * sin) / r, (x * sin + y * cos) / r);
                        inside += usize::from(self.kind.contains(u, v));
                    }
                }
                let a = inside as f32 / (SUB * SUB) as f32;
                for f in fg {
                    let v = a * f + (1.0 - a) * bg;
                    let n = if noise == 0 {
                        0.0
                    } else {
                        below(&mut rng, 2 * u64::from(noise) + 1) as f32 - f32::from(noise)
                    };
                    out.push((v + n).round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        out
    }
}

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

/// The files of a written shapes dataset (see the [module docs](self) for the layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapesFiles {
    /// The folder everything is in (the data root of both CSVs).
    pub root: PathBuf,
    /// The training CSV (`title`, `filepath` relative to `root`).
    pub train_csv: PathBuf,
    /// The held-out image folder (one sub-folder per class).
    pub heldout_dir: PathBuf,
    /// The held-out captions (CSV like `train_csv`).
    pub heldout_csv: PathBuf,
    /// `folder<TAB>class name` lines.
    pub classnames: PathBuf,
    /// The zero-shot templates, one per line.
    pub templates: PathBuf,
    /// The config and the counts.
    pub metadata: PathBuf,
    /// Training images written.
    pub train_samples: usize,
    /// Held-out images written.
    pub heldout_samples: usize,
    /// Zero-shot classes.
    pub classes: usize,
}

/// The file name of the metadata written with a shapes dataset.
pub const SHAPES_METADATA: &str = "dataset.json";

/// Generates both splits of `config` and writes them under `root` as PNG files and CSVs (the
/// layout in the [module docs](self)); existing files of the same names are replaced.
///
/// # Errors
/// An invalid config ([`DataError::DatasetSpec`]); a file or folder that cannot be written or
/// created ([`DataError::Write`], naming it).
pub fn write_shapes_dataset(
    config: &ShapesConfig,
    root: impl AsRef<Path>,
) -> Result<ShapesFiles, DataError> {
    let root = root.as_ref();
    config.validate()?;
    let train = ShapesDataset::generate(config, ShapesSplit::Train)?;
    let heldout = ShapesDataset::generate(config, ShapesSplit::HeldOut)?;
    let side = config.image_size;

    let train_dir = root.join(ShapesSplit::Train.name());
    let heldout_dir = root.join(ShapesSplit::HeldOut.name());
    create_dir(&train_dir)?;
    for class in heldout.classes() {
        create_dir(&heldout_dir.join(class.folder()))?;
    }
    let digits = train.len().max(heldout.len()).max(2).ilog10() as usize + 1;
    let digits = digits.max(6);

    let mut train_rows = Vec::with_capacity(train.len());
    for i in 0..train.len() {
        let rel = format!("{}/{i:0digits$}.png", ShapesSplit::Train.name());
        write_png(&root.join(&rel), side, &train.image(i).to_rgb8())?;
        train_rows.push((train.caption(i), rel));
    }
    let mut heldout_rows = Vec::with_capacity(heldout.len());
    for i in 0..heldout.len() {
        let class = heldout.classes()[heldout.label(i)];
        let rel = format!(
            "{}/{}/{i:0digits$}.png",
            ShapesSplit::HeldOut.name(),
            class.folder()
        );
        write_png(&root.join(&rel), side, &heldout.image(i).to_rgb8())?;
        heldout_rows.push((heldout.caption(i), rel));
    }

    let train_csv = root.join("train.csv");
    write_csv(&train_csv, &train_rows)?;
    let heldout_csv = root.join("heldout.csv");
    write_csv(&heldout_csv, &heldout_rows)?;
    let classnames = root.join("classnames.txt");
    let names: String = heldout
        .classes()
        .iter()
        .map(|c| format!("{}\t{}\n", c.folder(), c.name()))
        .collect();
    write_file(&classnames, names.as_bytes())?;
    let templates = root.join("templates.txt");
    let lines: String = zero_shot_templates(config)
        .iter()
        .map(|t| format!("{t}\n"))
        .collect();
    write_file(&templates, lines.as_bytes())?;

    let files = ShapesFiles {
        root: root.to_path_buf(),
        train_csv,
        heldout_dir,
        heldout_csv,
        classnames,
        templates,
        metadata: root.join(SHAPES_METADATA),
        train_samples: train.len(),
        heldout_samples: heldout.len(),
        classes: heldout.classes().len(),
    };
    let meta = serde_json::json!({
        "config": config,
        "classes": heldout.classes().iter().map(ShapeClass::name).collect::<Vec<_>>(),
        "caption_templates": CAPTION_TEMPLATES,
        "zero_shot_templates": zero_shot_templates(config),
        "files": files,
    });
    let text = serde_json::to_string_pretty(&meta).expect("a JSON value always serializes");
    write_file(&files.metadata, text.as_bytes())?;
    Ok(files)
}

/// A [`DataError::Write`] for `path`.
fn write_error(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |source| DataError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn create_dir(path: &Path) -> Result<(), DataError> {
    std::fs::create_dir_all(path).map_err(write_error(path))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    std::fs::write(path, bytes).map_err(write_error(path))
}

/// A tab-separated CSV with the header `title<TAB>filepath`. Captions never contain tabs, quotes
/// or newlines, so no field needs quoting.
fn write_csv(path: &Path, rows: &[(String, String)]) -> Result<(), DataError> {
    let mut text = String::from("title\tfilepath\n");
    for (caption, file) in rows {
        debug_assert!(!caption.contains(['\t', '"', '\n']));
        text.push_str(caption);
        text.push('\t');
        text.push_str(file);
        text.push('\n');
    }
    write_file(path, text.as_bytes())
}

/// An 8-bit RGB PNG.
fn write_png(path: &Path, side: usize, rgb: &[u8]) -> Result<(), DataError> {
    let mut bytes = Vec::with_capacity(rgb.len() + 256);
    {
        let mut encoder = png::Encoder::new(&mut bytes, side as u32, side as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let png_error = |e: png::EncodingError| write_error(path)(std::io::Error::other(e));
        let mut writer = encoder.write_header().map_err(png_error)?;
        writer.write_image_data(rgb).map_err(png_error)?;
        writer.finish().map_err(png_error)?;
    }
    let mut file = std::fs::File::create(path).map_err(write_error(path))?;
    file.write_all(&bytes).map_err(write_error(path))
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::dataset::{CsvConfig, CsvDataset, ImageFolder};
    use crate::tokenizer::Tokenizer;

    fn small() -> ShapesConfig {
        ShapesConfig {
            train_samples: 120,
            heldout_samples: 90,
            seed: 3,
            ..ShapesConfig::default()
        }
    }

    /// Parses a caption back into its attributes (each word list is unambiguous).
    fn parse_caption(caption: &str) -> (ShapeSize, ShapeColour, ShapeKind, ShapePosition) {
        let words: Vec<&str> = caption
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect();
        let one = |names: Vec<&'static str>| -> usize {
            let hits: Vec<usize> = (0..names.len())
                .filter(|&i| words.contains(&names[i]))
                .collect();
            assert_eq!(
                hits.len(),
                1,
                "caption `{caption}` names {hits:?} of {names:?}"
            );
            hits[0]
        };
        let size = ShapeSize::ALL[one(ShapeSize::ALL.iter().map(|s| s.name()).collect())];
        let colour = ShapeColour::ALL[one(ShapeColour::ALL.iter().map(|c| c.name()).collect())];
        let kind = ShapeKind::ALL[one(ShapeKind::ALL.iter().map(|k| k.name()).collect())];
        let positions: Vec<ShapePosition> = ShapePosition::ALL
            .into_iter()
            .filter(|p| caption.contains(p.phrase()))
            .collect();
        assert_eq!(
            positions.len(),
            1,
            "caption `{caption}`: positions {positions:?}"
        );
        (size, colour, kind, positions[0])
    }

    #[test]
    fn generation_is_deterministic_and_seeded() {
        let a = ShapesDataset::generate(&small(), ShapesSplit::Train).unwrap();
        let b = ShapesDataset::generate(&small(), ShapesSplit::Train).unwrap();
        assert_eq!(a.scenes(), b.scenes());
        for i in 0..a.len() {
            assert_eq!(a.image(i).to_rgb8(), b.image(i).to_rgb8(), "sample {i}");
        }
        // A sample does not depend on how many are generated.
        let mut more = small();
        more.train_samples = 200;
        let c = ShapesDataset::generate(&more, ShapesSplit::Train).unwrap();
        assert_eq!(&c.scenes()[..120], a.scenes());
        // Another seed, other data.
        let mut other = small();
        other.seed = 4;
        let d = ShapesDataset::generate(&other, ShapesSplit::Train).unwrap();
        let same = (0..a.len())
            .filter(|&i| a.image(i).to_rgb8() == d.image(i).to_rgb8())
            .count();
        assert_eq!(same, 0);
        // Pinned values: a change to the generator or the rasterizer shows up here.
        let first = a.caption(0);
        let pixels = a.image(0).to_rgb8();
        let sum: u64 = pixels.iter().map(|&v| u64::from(v)).sum();
        assert_eq!(pixels.len(), 32 * 32 * 3);
        assert_eq!(
            (first.as_str(), sum),
            (PINNED_CAPTION, PINNED_SUM),
            "{first} {sum}"
        );
    }

    const PINNED_CAPTION: &str = "a picture of a medium orange cross in the top left corner";
    const PINNED_SUM: u64 = 448_030;

    #[test]
    fn captions_and_labels_describe_the_image() {
        let config = small();
        for split in [ShapesSplit::Train, ShapesSplit::HeldOut] {
            let ds = ShapesDataset::generate(&config, split).unwrap();
            for i in 0..ds.len() {
                let scene = &ds.scenes()[i];
                let (size, colour, kind, position) = parse_caption(&ds.caption(i));
                assert_eq!(
                    (size, colour, kind, position),
                    (scene.size, scene.colour, scene.kind, scene.position)
                );
                assert_eq!(ds.classes()[ds.label(i)], scene.class());
                let sample = ds.sample(i);
                assert_eq!(sample.label, Some(ds.label(i)));
                assert_eq!(sample.captions, vec![ds.caption(i)]);

                // The pixel at the shape's centre has the shape's colour (up to the colour
                // jitter of ±20 and the noise of ±12), and lies in the cell the caption names.
                let side = config.image_size as f32;
                let rgb = ds.image(i).to_rgb8();
                let (cx, cy) = scene.position.centre();
                let (fx, fy) = ((cx + scene.offset.0) * side, (cy + scene.offset.1) * side);
                let (x, y) = (fx.floor() as usize, fy.floor() as usize);
                let p = (y * config.image_size + x) * 3;
                let nominal = scene.colour.rgb();
                let dist = (0..3)
                    .map(|c| (i16::from(rgb[p + c]) - i16::from(nominal[c])).abs())
                    .max()
                    .unwrap();
                assert!(
                    dist <= 20 + 12 + 1,
                    "sample {i}: centre pixel {:?} vs {nominal:?}",
                    &rgb[p..p + 3]
                );
                let (col, row) = scene.position.cell();
                let cell = |v: f32| (3.0 * v / side) as usize;
                assert_eq!((cell(fx), cell(fy)), (col, row), "sample {i}");
            }
        }
    }

    #[test]
    fn heldout_is_balanced_distinct_and_disjoint_from_train() {
        let config = small();
        let train = ShapesDataset::generate(&config, ShapesSplit::Train).unwrap();
        let heldout = ShapesDataset::generate(&config, ShapesSplit::HeldOut).unwrap();
        let classes = config.classes().len();
        assert_eq!(classes, 30);
        let mut per_class = HashMap::new();
        for i in 0..heldout.len() {
            *per_class.entry(heldout.label(i)).or_insert(0) += 1;
            assert_eq!(heldout.label(i), i % classes);
        }
        assert_eq!(per_class.len(), classes);
        assert!(per_class.values().all(|&n| n == 3));
        // 90 <= 30 classes x 27 (size, position) pairs: every held-out caption's attributes
        // are distinct.
        let combos: HashSet<_> = heldout
            .scenes()
            .iter()
            .map(|s| (s.kind, s.colour, s.size, s.position))
            .collect();
        assert_eq!(combos.len(), heldout.len());
        // No held-out image equals a training image.
        let train_pixels: HashSet<Vec<u8>> =
            (0..train.len()).map(|i| train.image(i).to_rgb8()).collect();
        assert!((0..heldout.len()).all(|i| !train_pixels.contains(&heldout.image(i).to_rgb8())));
        // Train attributes are spread: every colour and shape appears.
        let colours: HashSet<_> = train.scenes().iter().map(|s| s.colour).collect();
        let kinds: HashSet<_> = train.scenes().iter().map(|s| s.kind).collect();
        assert_eq!((colours.len(), kinds.len()), (6, 5));
        // Classes are in ImageFolder order (sorted folder names).
        let folders: Vec<String> = config.classes().iter().map(ShapeClass::folder).collect();
        let mut sorted = folders.clone();
        sorted.sort();
        assert_eq!(folders, sorted);
    }

    #[test]
    fn written_files_are_read_back_by_the_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShapesConfig {
            train_samples: 40,
            heldout_samples: 30,
            colours: vec![ShapeColour::Red, ShapeColour::Blue],
            kinds: vec![ShapeKind::Circle, ShapeKind::Triangle, ShapeKind::Cross],
            ..ShapesConfig::default()
        };
        let files = write_shapes_dataset(&config, dir.path()).unwrap();
        assert_eq!(
            (files.train_samples, files.heldout_samples, files.classes),
            (40, 30, 6)
        );
        let memory = ShapesDataset::generate(&config, ShapesSplit::Train).unwrap();

        let csv = CsvDataset::open_file(
            &files.train_csv,
            Some(files.root.clone()),
            &CsvConfig::default(),
        )
        .unwrap();
        assert_eq!(csv.len(), 40);
        for i in 0..csv.len() {
            let s = csv.sample(i);
            assert_eq!(s.captions, vec![memory.caption(i)]);
            let ImageSource::File(path) = &s.image else {
                panic!("a file sample")
            };
            let decoded = DecodedImage::open(path).unwrap();
            assert_eq!(
                decoded.to_rgb8(),
                memory.image(i).to_rgb8(),
                "PNG round trip {i}"
            );
        }
        let folder = ImageFolder::open(&files.heldout_dir).unwrap();
        let expected: Vec<String> = config.classes().iter().map(ShapeClass::folder).collect();
        assert_eq!(folder.classes(), expected.as_slice());
        assert_eq!(folder.len(), 30);
        let heldout = ShapesDataset::generate(&config, ShapesSplit::HeldOut).unwrap();
        let captions = std::fs::read_to_string(&files.heldout_csv).unwrap();
        let rows: Vec<&str> = captions.lines().skip(1).collect();
        assert_eq!(rows.len(), 30);
        for (i, row) in rows.iter().enumerate() {
            let (caption, file) = row.split_once('\t').unwrap();
            assert_eq!(caption, heldout.caption(i));
            // The file sits in its class folder, and ImageFolder gives it the same label.
            let class = heldout.classes()[heldout.label(i)];
            assert!(
                file.starts_with(&format!("heldout/{}/", class.folder())),
                "{file}"
            );
            let index = (0..folder.len())
                .find(|&k| folder.item(k).0 == files.root.join(file))
                .unwrap();
            assert_eq!(folder.item(index).1, heldout.label(i));
        }
        let names = std::fs::read_to_string(&files.classnames).unwrap();
        assert!(
            names.lines().any(|l| l == "red_circle\tred circle"),
            "{names}"
        );
        let templates = std::fs::read_to_string(&files.templates).unwrap();
        assert_eq!(templates.lines().count(), 3 * 3 * 9);
        assert!(
            templates.lines().all(|t| t.matches("{}").count() == 1),
            "{templates}"
        );
        assert!(
            templates
                .lines()
                .any(|t| t == "a small {} in the top left corner"),
            "{templates}"
        );
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&files.metadata).unwrap()).unwrap();
        assert_eq!(meta["config"]["train_samples"], 40);
    }

    #[test]
    fn captions_fit_a_short_context() {
        // Every template with the longest attribute words stays within 15 tokens with SOT and
        // EOT, so a context of 16 never truncates.
        let tokenizer = Tokenizer::new();
        let config = ShapesConfig::default();
        let mut longest = 0;
        for template in 0..CAPTION_TEMPLATES.len() {
            for &position in &config.positions {
                for &colour in &config.colours {
                    for &kind in &config.kinds {
                        for &size in &config.sizes {
                            let scene = ShapeScene {
                                template,
                                position,
                                colour,
                                kind,
                                size,
                                ..config.scene(ShapesSplit::Train, 0)
                            };
                            let ids = tokenizer.encode(&scene.caption());
                            longest = longest.max(ids.len() + 2);
                        }
                    }
                }
            }
        }
        assert!(longest <= 15, "longest caption: {longest} tokens");
        assert_eq!(
            ShapeScene {
                template: 3,
                colour: ShapeColour::Orange,
                ..config.scene(ShapesSplit::Train, 0)
            }
            .caption()
            .split(' ')
            .next(),
            Some("an")
        );
    }

    #[test]
    fn bad_configs_are_errors_that_name_the_field() {
        let c = ShapesConfig {
            image_size: 8,
            ..ShapesConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("image_size"));
        let mut c = ShapesConfig::default();
        c.kinds.clear();
        assert!(c.validate().unwrap_err().to_string().contains("kinds"));
        let mut c = ShapesConfig::default();
        c.colours.push(ShapeColour::Red);
        assert!(c.validate().unwrap_err().to_string().contains("repeat"));
        let c = ShapesConfig {
            heldout_samples: 0,
            ..ShapesConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("heldout_samples")
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            write_shapes_dataset(&c, dir.path()),
            Err(DataError::DatasetSpec { what }) if what.contains("heldout_samples")
        ));
    }

    #[test]
    fn unwritable_files_are_errors_that_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let e = write_shapes_dataset(
            &ShapesConfig {
                train_samples: 2,
                heldout_samples: 2,
                ..ShapesConfig::default()
            },
            &blocker,
        )
        .unwrap_err();
        match &e {
            DataError::Write { path, .. } => assert!(path.starts_with(&blocker), "{e}"),
            other => panic!("expected DataError::Write, got {other:?}"),
        }
        let message = e.to_string();
        assert!(
            message.contains("cannot write") && message.contains(&*blocker.to_string_lossy()),
            "{message}"
        );
    }
}
