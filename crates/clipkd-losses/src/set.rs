//! Composition: a weighted set of losses, built in code or from a config, and the paper's
//! presets.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::builtin::{BuiltinLoss, LossConfig};
use crate::error::LossError;
use crate::input::DistillInput;
use crate::loss::DistillLoss;
use crate::losses::{
    AfdLossConfig, CrdLossConfig, FdLossConfig, GdLossConfig, IclLossConfig, MfdLossConfig,
    OpenClipDistillLossConfig, TaskLossConfig,
};
use crate::projector::{DistillBatch, Projector, ProjectorConfig};
use crate::terms::LossTerms;

/// One entry of a [`LossSetConfig`]: a loss and its weight.
#[derive(Config, Debug)]
pub struct WeightedLossConfig {
    /// The loss.
    pub loss: LossConfig,
    /// Its weight `α` in the total.
    pub weight: f64,
    /// The entry's (and term's) name; `None`: the loss's default name (`"crd"`, `"fd"`, …).
    #[config(default = "None")]
    pub name: Option<String>,
}

impl WeightedLossConfig {
    /// The entry's name.
    pub fn entry_name(&self) -> &str {
        self.name
            .as_deref()
            .unwrap_or_else(|| self.loss.default_name())
    }
}

/// The paper's recipe and ablations, each with the paper's weights (task loss weight 1 always).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossPreset {
    /// Task loss only (no distillation): the "no KD" baseline.
    Baseline,
    /// CLIP-KD: task + CRD (1) + ICL (1) + FD (2000).
    ClipKd,
    /// Ablation: task + CRD (1).
    Crd,
    /// Ablation: task + FD (2000).
    Fd,
    /// Ablation: task + MFD (2000), mask ratio chosen by the trainer (paper: 0.75).
    Mfd,
    /// Ablation: task + GD (1e8, with the released divide-by-scale gradients).
    Gd,
    /// Ablation: task + ICL (1).
    Icl,
    /// Ablation: task + AFD (1).
    Afd,
    /// open_clip's `DistillClipLoss`: task + soft cross entropy to the teacher's logits (1).
    OpenClipDistill,
}

impl LossPreset {
    /// Every preset.
    pub const ALL: [LossPreset; 9] = [
        LossPreset::Baseline,
        LossPreset::ClipKd,
        LossPreset::Crd,
        LossPreset::Fd,
        LossPreset::Mfd,
        LossPreset::Gd,
        LossPreset::Icl,
        LossPreset::Afd,
        LossPreset::OpenClipDistill,
    ];

    /// The preset's name (`"clip_kd"`, …), as parsed by `FromStr`.
    pub fn name(self) -> &'static str {
        match self {
            LossPreset::Baseline => "baseline",
            LossPreset::ClipKd => "clip_kd",
            LossPreset::Crd => "crd",
            LossPreset::Fd => "fd",
            LossPreset::Mfd => "mfd",
            LossPreset::Gd => "gd",
            LossPreset::Icl => "icl",
            LossPreset::Afd => "afd",
            LossPreset::OpenClipDistill => "open_clip_distill",
        }
    }
}

impl fmt::Display for LossPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossPreset {
    type Err = LossError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LossPreset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| LossError::InvalidConfig {
                what: format!("loss preset `{s}`"),
                reason: format!(
                    "unknown; expected one of {}",
                    LossPreset::ALL.map(LossPreset::name).join(", ")
                ),
            })
    }
}

/// Configuration of a [`LossSet`]: the embedding sizes and the weighted losses.
///
/// Serializes to JSON (externally tagged enums), e.g.
/// `{"student_dim": 512, "teacher_dim": 768, "projector_bias": true, "losses": [{"loss": {"Task":
/// {}}, "weight": 1.0, "name": null}, {"loss": {"Fd": {"distance": "Mse"}}, "weight": 2000.0,
/// "name": null}]}`.
#[derive(Config, Debug)]
pub struct LossSetConfig {
    /// The student's embedding size `D_s`.
    pub student_dim: usize,
    /// The teacher's embedding size `D_t`.
    pub teacher_dim: usize,
    /// The weighted losses, in the order their terms are reported.
    #[config(default = "Vec::new()")]
    pub losses: Vec<WeightedLossConfig>,
    /// Whether the projector's layers have a bias (CLIP-KD's do).
    #[config(default = true)]
    pub projector_bias: bool,
}

impl LossSetConfig {
    /// The named preset for a student of embedding size `student_dim` and a teacher of
    /// `teacher_dim`.
    pub fn preset(preset: LossPreset, student_dim: usize, teacher_dim: usize) -> Self {
        let base =
            Self::new(student_dim, teacher_dim).add(1.0, LossConfig::Task(TaskLossConfig::new()));
        match preset {
            LossPreset::Baseline => base,
            LossPreset::ClipKd => base
                .add(1.0, LossConfig::Crd(CrdLossConfig::new()))
                .add(1.0, LossConfig::Icl(IclLossConfig::new()))
                .add(2000.0, LossConfig::Fd(FdLossConfig::new())),
            LossPreset::Crd => base.add(1.0, LossConfig::Crd(CrdLossConfig::new())),
            LossPreset::Fd => base.add(2000.0, LossConfig::Fd(FdLossConfig::new())),
            LossPreset::Mfd => base.add(2000.0, LossConfig::Mfd(MfdLossConfig::new())),
            LossPreset::Gd => base.add(1e8, LossConfig::Gd(GdLossConfig::new())),
            LossPreset::Icl => base.add(1.0, LossConfig::Icl(IclLossConfig::new())),
            LossPreset::Afd => base.add(1.0, LossConfig::Afd(AfdLossConfig::new(teacher_dim))),
            LossPreset::OpenClipDistill => base.add(
                1.0,
                LossConfig::OpenClipDistill(OpenClipDistillLossConfig::new()),
            ),
        }
    }

    /// The paper's CLIP-KD recipe: task + CRD (1) + ICL (1) + FD (2000).
    pub fn clip_kd(student_dim: usize, teacher_dim: usize) -> Self {
        Self::preset(LossPreset::ClipKd, student_dim, teacher_dim)
    }

    /// Appends a loss with its weight, named after the loss.
    pub fn add(mut self, weight: f64, loss: LossConfig) -> Self {
        self.losses.push(WeightedLossConfig::new(loss, weight));
        self
    }

    /// Appends a loss with its weight and an entry name of your choice.
    pub fn add_named(mut self, name: impl Into<String>, weight: f64, loss: LossConfig) -> Self {
        self.losses
            .push(WeightedLossConfig::new(loss, weight).with_name(Some(name.into())));
        self
    }

    /// Reads a configuration from a JSON file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, LossError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LossError::ConfigIo {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| LossError::ConfigParse {
            path: path.to_path_buf(),
            line: source.line(),
            column: source.column(),
            source,
        })
    }

    /// Whether any loss reads the student's masked view (MFD).
    pub fn requires_masked_view(&self) -> bool {
        self.losses.iter().any(|l| l.loss.requires_masked_view())
    }

    /// Checks, when configuring a run, that the student can feed these losses: a set with MFD
    /// needs a student whose vision tower has a masked forward (a ViT). Errors name the entry.
    pub fn check_student(&self, supports_masked_view: bool) -> Result<(), LossError> {
        check_masked(
            supports_masked_view,
            self.losses
                .iter()
                .filter(|l| l.loss.requires_masked_view())
                .map(|l| l.entry_name()),
        )
    }

    /// Checks the configuration: at least one loss, unique names, finite weights, positive
    /// sizes, AFD sized for this teacher, valid temperatures and scales.
    pub fn validate(&self) -> Result<(), LossError> {
        if self.losses.is_empty() {
            return Err(LossError::EmptyLossSet);
        }
        if self.student_dim == 0 || self.teacher_dim == 0 {
            return Err(LossError::InvalidConfig {
                what: "loss set embedding sizes".into(),
                reason: format!(
                    "student_dim {} and teacher_dim {} must be positive",
                    self.student_dim, self.teacher_dim
                ),
            });
        }
        let mut names = HashSet::new();
        for entry in &self.losses {
            let name = entry.entry_name();
            if !names.insert(name) {
                return Err(LossError::DuplicateName { name: name.into() });
            }
            if !entry.weight.is_finite() {
                return Err(LossError::InvalidWeight {
                    name: name.into(),
                    weight: entry.weight,
                });
            }
            entry
                .loss
                .check_sizes(name, self.student_dim, self.teacher_dim)?;
        }
        Ok(())
    }

    /// Creates the loss set on `device`, after [`LossSetConfig::validate`]. The projector is
    /// created only when `D_s != D_t` and some loss reads aligned features.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<LossSet<B>, LossError> {
        self.validate()?;
        let projector = if self.losses.iter().any(|l| l.loss.uses_aligned_features()) {
            ProjectorConfig::new(self.student_dim, self.teacher_dim)
                .with_bias(self.projector_bias)
                .init(device)
        } else {
            Projector::identity()
        };
        let mut set = LossSet::new(projector);
        for entry in &self.losses {
            set = set.with_loss(entry.entry_name(), entry.weight, entry.loss.init(device)?)?;
        }
        Ok(set)
    }
}

fn check_masked<'a>(
    supports_masked_view: bool,
    mut needing: impl Iterator<Item = &'a str>,
) -> Result<(), LossError> {
    match needing.next() {
        Some(name) if !supports_masked_view => {
            Err(LossError::MaskedViewUnsupported { loss: name.into() })
        }
        _ => Ok(()),
    }
}

/// A weighted sum of losses: `L = Σ_k α_k L_k`, with the projector the losses share.
///
/// `forward` aligns the student features once ([`Projector::align`]), runs every loss, and
/// returns each entry's terms multiplied by its weight (named after the entry) in order;
/// [`LossTerms::total`] is the sum to call `backward` on. The weights live here and only here.
///
/// The set is a Burn module: its projector, the losses' layers and learnable scales are its
/// parameters, so the optimizer trains them and a record of the set checkpoints them (CLIP-KD
/// lost them). `L` is [`BuiltinLoss`] unless research code adds its own losses: wrap the
/// built-in ones with [`LossSet::map_losses`] into an enum of yours (see
/// `crates/clipkd-train/examples/custom_loss.rs`).
#[derive(Module, Debug)]
pub struct LossSet<B: Backend, L: Module<B> = BuiltinLoss<B>> {
    projector: Projector<B>,
    losses: Vec<L>,
    names: Vec<String>,
    weights: Vec<f64>,
}

impl<B: Backend, L: Module<B>> LossSet<B, L> {
    /// An empty set around `projector` (use [`Projector::identity`] when `D_s == D_t`).
    pub fn new(projector: Projector<B>) -> Self {
        Self {
            projector,
            losses: Vec::new(),
            names: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// Adds a loss with its weight; `name` names its term (or prefixes them, `name/term`, when the
    /// loss returns several). Errors on a repeated name or a weight that is not finite.
    pub fn with_loss(
        mut self,
        name: impl Into<String>,
        weight: f64,
        loss: L,
    ) -> Result<Self, LossError> {
        let name = name.into();
        if self.names.contains(&name) {
            return Err(LossError::DuplicateName { name });
        }
        if !weight.is_finite() {
            return Err(LossError::InvalidWeight { name, weight });
        }
        self.losses.push(loss);
        self.names.push(name);
        self.weights.push(weight);
        Ok(self)
    }

    /// The same set with every loss converted by `f` (e.g. into an enum that also holds your own
    /// losses); names, weights and the projector are kept.
    pub fn map_losses<M: Module<B>>(self, f: impl FnMut(L) -> M) -> LossSet<B, M> {
        LossSet {
            projector: self.projector,
            losses: self.losses.into_iter().map(f).collect(),
            names: self.names,
            weights: self.weights,
        }
    }

    /// The shared projector.
    pub fn projector(&self) -> &Projector<B> {
        &self.projector
    }

    /// The entries: name, weight, loss.
    pub fn entries(&self) -> impl Iterator<Item = (&str, f64, &L)> {
        self.names
            .iter()
            .zip(&self.weights)
            .zip(&self.losses)
            .map(|((n, w), l)| (n.as_str(), *w, l))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.losses.len()
    }

    /// Whether the set has no entries.
    pub fn is_empty(&self) -> bool {
        self.losses.is_empty()
    }
}

impl<B: Backend, L: Module<B> + DistillLoss<B>> LossSet<B, L> {
    /// The weighted terms of every entry for this input (see the type's documentation).
    pub fn forward(&self, input: &DistillInput<B>) -> Result<LossTerms<B>, LossError> {
        let batch = self.projector.align(input)?;
        self.forward_batch(&batch)
    }

    /// Like [`LossSet::forward`], for an already aligned batch.
    pub fn forward_batch(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        if self.losses.is_empty() {
            return Err(LossError::EmptyLossSet);
        }
        let mut out = LossTerms::new();
        for (name, weight, loss) in self.entries() {
            if loss.requires_masked_view() && batch.masked_image_aligned().is_none() {
                return Err(LossError::MissingMaskedView { loss: name.into() });
            }
            let terms = loss.forward(batch)?;
            let single = terms.len() == 1;
            for term in terms {
                let term_name = if single {
                    name.to_string()
                } else {
                    format!("{name}/{}", term.name)
                };
                out.push(
                    term_name,
                    weight * term.weight,
                    term.value.mul_scalar(weight),
                );
            }
        }
        Ok(out)
    }

    /// Whether any loss reads the student's masked view (MFD).
    pub fn requires_masked_view(&self) -> bool {
        self.losses.iter().any(|l| l.requires_masked_view())
    }

    /// Checks that the student can feed these losses (see [`LossSetConfig::check_student`]).
    pub fn check_student(&self, supports_masked_view: bool) -> Result<(), LossError> {
        check_masked(
            supports_masked_view,
            self.entries()
                .filter(|(_, _, l)| l.requires_masked_view())
                .map(|(n, _, _)| n),
        )
    }
}
