//! What one image shows and says: the attributes of a scene, its caption, its class, and its
//! integer-exact rasterization.

use std::fmt;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::order::below;

use super::*;

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
