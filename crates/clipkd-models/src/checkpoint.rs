//! open_clip checkpoints: import from `.safetensors` and PyTorch `.pt` / `.pth` / `.bin`
//! (zip and legacy formats, read with `burn-store`), export to an open_clip `.safetensors`
//! state dict.
//!
//! # Key mapping
//!
//! Burn field names follow open_clip's module tree, so a Burn parameter path (enum variant
//! names such as `Vit` skipped) is the open_clip key except for these rules, applied in order:
//!
//! | Burn | open_clip | why |
//! |---|---|---|
//! | `<LayerNorm or BatchNorm>.gamma` / `.beta` | `.weight` / `.bias` | Burn's names for the affine parameters |
//! | `….attn.in_proj.weight` / `.bias` | `….attn.in_proj_weight` / `_bias` | `nn.MultiheadAttention` stores the packed q/k/v projection as raw parameters |
//! | `….downsample.conv.…` / `….downsample.bn.…` | `….downsample.0.…` / `….downsample.1.…` | a torch `Sequential` (`"-1"` is the parameter-free `AvgPool2d`) |
//!
//! Layouts: every Burn `Linear` weight is `[in, out]` and is transposed to PyTorch's
//! `[out, in]`; `logit_scale` / `logit_bias` are `[1]` in Burn and `[]` in open_clip (`[1]`
//! with `nonscalar_logit_scale`). Export adds every BatchNorm's `num_batches_tracked` (int64
//! 0-d, value 0: Burn does not count batches, and with PyTorch's default momentum the counter
//! does not affect the math).
//!
//! # Import rules
//!
//! - The format is detected from the file's first bytes, not its extension.
//! - A state dict nested under `state_dict` (open_clip and CLIP-KD training checkpoints) is
//!   found automatically; a `module.` prefix (DistributedDataParallel) is stripped.
//! - Weights stored as f16, bf16, f32 or f64 are cast to the backend's float type.
//! - `logit_scale` / `logit_bias` are accepted as `[]` or `[1]` (as open_clip's loader does).
//! - timm towers: the key layout of older timm versions is upgraded first, as timm's own
//!   `checkpoint_filter_fn` does (`crate::timm::legacy_keys`: Swin's patch merging moved to
//!   the next stage, its persistent index and mask buffers dropped).
//! - Ignored on purpose: `*.num_batches_tracked` of the model's BatchNorms (see above);
//!   `attn_mask` (a non-persistent buffer in open_clip, rebuilt from the config);
//!   `input_resolution`, `context_length`, `vocab_size` (metadata in OpenAI's archives, which
//!   open_clip also drops).
//! - Anything else that does not match is an error listing every missing, unexpected and
//!   mis-shaped key ([`ModelError::KeyMismatch`]). `logit_bias` in a file whose config has no
//!   `init_logit_bias` is such an unexpected key.
//! - NaN or infinite weights (in any stored float type, or f64 values beyond f32's range) are
//!   an error naming the keys and how many values ([`ModelError::NonFiniteWeights`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::sync::LazyLock;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Shape, Tensor, TensorData, get_device_settings};
use burn_store::{
    ModuleSnapshot, ModuleStore, PytorchStore, SafetensorsStore, TensorSnapshot,
    TensorSnapshotError,
};
use regex::Regex;
use safetensors::tensor::TensorView;

use crate::clip::Clip;
use crate::config::{ClipConfig, VisionConfig};
use crate::error::{KeyReport, ModelError, ShapeMismatch};

/// Renames from a Burn parameter path to an open_clip key (after the norm rename), in order.
/// See the module docs for the full table.
static KEY_RULES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // nn.MultiheadAttention keeps the packed q/k/v projection as raw parameters.
        (r"\.attn\.in_proj\.(weight|bias)$", ".attn.in_proj_$1"),
        // ModifiedResNet's shortcut is a Sequential: "-1" AvgPool2d, "0" conv, "1" BatchNorm.
        (r"\.downsample\.conv\.", ".downsample.0."),
        (r"\.downsample\.bn\.", ".downsample.1."),
    ]
    .into_iter()
    .map(|(pattern, replacement)| (Regex::new(pattern).expect("valid regex"), replacement))
    .collect()
});

/// Top-level keys some checkpoints carry that are not parameters (see the module docs).
const IGNORED_KEYS: &[&str] = &[
    "attn_mask",
    "input_resolution",
    "context_length",
    "vocab_size",
];

/// Element type of a tensor in an exported open_clip state dict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    /// 32-bit float (every parameter and running statistic).
    F32,
    /// 64-bit integer (BatchNorm's `num_batches_tracked`).
    I64,
}

/// One entry of an open_clip state dict: key, shape and element type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// open_clip key, e.g. `visual.transformer.resblocks.0.attn.in_proj_weight`.
    pub key: String,
    /// Shape in open_clip's layout.
    pub shape: Vec<usize>,
    /// Element type as exported.
    pub dtype: StoredDType,
}

/// How a Burn tensor's layout differs from its open_clip counterpart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Same shape and element order.
    Same,
    /// A `Linear` weight: Burn `[in, out]`, PyTorch `[out, in]`.
    Transposed,
    /// `logit_scale` / `logit_bias`: Burn `[1]`, open_clip `[]`.
    Scalar,
}

/// One float parameter of the model and where it goes in open_clip.
#[derive(Debug, Clone)]
struct Slot {
    burn_path: Vec<String>,
    containers: Vec<String>,
    burn_shape: Vec<usize>,
    key: String,
    torch_shape: Vec<usize>,
    layout: Layout,
    /// For a BatchNorm's `running_var`: the key of its `num_batches_tracked`.
    batch_counter: Option<String>,
    /// The value, when collected for export.
    data: Option<TensorData>,
}

/// Walks a module like burn-store's collector (enum variant names skipped), recording every
/// float parameter's path and lazy shape, and optionally its value.
struct SlotCollector {
    path: Vec<String>,
    containers: Vec<String>,
    nonscalar_logit_scale: bool,
    with_values: bool,
    slots: Vec<Slot>,
}

impl<B: Backend> ModuleVisitor<B> for SlotCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.containers.pop();
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let burn_shape = param.lazy_shape().to_vec();
        let data = self.with_values.then(|| param.val().into_data());
        let slot = make_slot(
            self.path.clone(),
            self.containers.clone(),
            burn_shape,
            self.nonscalar_logit_scale,
            data,
        );
        self.slots.push(slot);
    }

    fn visit_int<const D: usize>(&mut self, _param: &Param<Tensor<B, D, Int>>) {
        unreachable!("clipkd models have no integer parameters")
    }

    fn visit_bool<const D: usize>(&mut self, _param: &Param<Tensor<B, D, Bool>>) {
        unreachable!("clipkd models have no boolean parameters")
    }
}

/// The innermost struct or enum holding the parameter (`Vec` wrappers skipped), e.g.
/// `Struct:Linear`.
fn module_type(containers: &[String]) -> &str {
    containers
        .iter()
        .rev()
        .find(|c| c.starts_with("Struct:") || c.starts_with("Enum:"))
        .map(String::as_str)
        .unwrap_or("")
}

fn make_slot(
    mut burn_path: Vec<String>,
    containers: Vec<String>,
    burn_shape: Vec<usize>,
    nonscalar_logit_scale: bool,
    data: Option<TensorData>,
) -> Slot {
    let kind = module_type(&containers);
    let is_norm = matches!(kind, "Struct:LayerNorm" | "Struct:BatchNorm");
    let param = burn_path.last().cloned().unwrap_or_default();
    let mut torch_path = burn_path.clone();
    if is_norm {
        // Rule 1: Burn's gamma / beta are PyTorch's weight / bias.
        match param.as_str() {
            "gamma" => *torch_path.last_mut().unwrap() = "weight".into(),
            "beta" => *torch_path.last_mut().unwrap() = "bias".into(),
            _ => {}
        }
    }
    let mut key = torch_path.join(".");
    for (re, replacement) in KEY_RULES.iter() {
        key = re.replace(&key, *replacement).into_owned();
    }
    let layout = if kind == "Struct:Linear" && param == "weight" && burn_shape.len() == 2 {
        Layout::Transposed
    } else if (key == "logit_scale" || key == "logit_bias") && !nonscalar_logit_scale {
        Layout::Scalar
    } else {
        Layout::Same
    };
    let torch_shape = match layout {
        Layout::Same => burn_shape.clone(),
        Layout::Transposed => vec![burn_shape[1], burn_shape[0]],
        Layout::Scalar => vec![],
    };
    let batch_counter = (kind == "Struct:BatchNorm" && param == "running_var").then(|| {
        let mut prefix = key.clone();
        prefix.truncate(key.len() - "running_var".len());
        format!("{prefix}num_batches_tracked")
    });
    burn_path.shrink_to_fit();
    Slot {
        burn_path,
        containers,
        burn_shape,
        key,
        torch_shape,
        layout,
        batch_counter,
        data,
    }
}

fn collect_slots<B: Backend>(clip: &Clip<B>, with_values: bool) -> Vec<Slot> {
    let mut collector = SlotCollector {
        path: Vec::new(),
        containers: Vec::new(),
        nonscalar_logit_scale: clip.config().nonscalar_logit_scale,
        with_values,
        slots: Vec::new(),
    };
    clip.visit(&mut collector);
    collector.slots
}

/// The open_clip state dict that [`save_open_clip`] writes for this model (and that
/// [`load_open_clip`] expects): every key with its shape and element type, in model order.
/// Parameters are not materialised, so this is cheap even for large lazy models.
pub fn open_clip_state_dict_spec<B: Backend>(clip: &Clip<B>) -> Vec<TensorSpec> {
    let mut specs = Vec::new();
    for slot in collect_slots(clip, false) {
        specs.push(TensorSpec {
            key: slot.key.clone(),
            shape: slot.torch_shape.clone(),
            dtype: StoredDType::F32,
        });
        if let Some(counter) = slot.batch_counter {
            specs.push(TensorSpec {
                key: counter,
                shape: vec![],
                dtype: StoredDType::I64,
            });
        }
    }
    specs
}

/// Builds the model from `config` and loads an open_clip checkpoint into it (see the module
/// docs for formats and rules).
pub fn load_open_clip<B: Backend>(
    path: impl AsRef<Path>,
    config: &ClipConfig,
    device: &B::Device,
) -> Result<Clip<B>, ModelError> {
    config.init::<B>(device)?.load_open_clip_weights(path)
}

impl<B: Backend> Clip<B> {
    /// Replaces every parameter with the values of an open_clip checkpoint (see the
    /// [`checkpoint`](crate::checkpoint) module docs). Fails, listing every missing,
    /// unexpected and mis-shaped key, unless the file matches this model exactly, and
    /// refuses NaN or infinite weights.
    pub fn load_open_clip_weights(mut self, path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let mut source = read_state_dict(path)?;
        if let VisionConfig::Timm(timm) = &self.config().vision {
            crate::timm::legacy_keys::upgrade(&timm.trunk, &mut source);
        }
        let slots = collect_slots(&self, false);
        let device = self.logit_scale.lazy_device();
        let target: DType = get_device_settings::<B>(&device).float_dtype.into();

        let expected: HashMap<&str, &Slot> = slots.iter().map(|s| (s.key.as_str(), s)).collect();
        let counters: HashMap<&str, ()> = slots
            .iter()
            .filter_map(|s| s.batch_counter.as_deref().map(|k| (k, ())))
            .collect();
        let mut report = KeyReport::default();
        for (key, snapshot) in &source {
            let found = snapshot.shape.to_vec();
            if let Some(slot) = expected.get(key.as_str()) {
                let shape_ok = found == slot.torch_shape
                    || (slot.layout == Layout::Scalar && found == [1])
                    || (slot.layout == Layout::Same
                        && slot.torch_shape == [1]
                        && found.is_empty()
                        && (key == "logit_scale" || key == "logit_bias"));
                if !shape_ok {
                    report.mismatched.push(ShapeMismatch {
                        key: key.clone(),
                        expected: slot.torch_shape.clone(),
                        found,
                    });
                } else if !matches!(
                    snapshot.dtype,
                    DType::F64 | DType::F32 | DType::F16 | DType::BF16
                ) {
                    report
                        .bad_dtype
                        .push(format!("{key}: {:?}", snapshot.dtype));
                }
            } else if counters.contains_key(key.as_str()) || IGNORED_KEYS.contains(&key.as_str()) {
                // Deliberately ignored (module docs).
            } else {
                report.unexpected.push(key.clone());
            }
        }
        for slot in &slots {
            if !source.contains_key(&slot.key) {
                report.missing.push(slot.key.clone());
            }
        }
        if report.unexpected.iter().any(|k| k == "logit_bias") {
            report.notes.push(
                "the file has a logit_bias: set init_logit_bias in the model config".to_string(),
            );
        }
        if !report.is_empty() {
            return Err(ModelError::KeyMismatch {
                path: path.to_path_buf(),
                report: Box::new(report),
            });
        }

        let mut by_burn_path = HashMap::new();
        // Filled while `apply` reads each tensor: (key, non-finite count), in model order.
        let non_finite: Rc<RefCell<Vec<(String, usize)>>> = Rc::default();
        let snapshots: Vec<TensorSnapshot> = slots
            .iter()
            .map(|slot| {
                by_burn_path.insert(slot.burn_path.join("."), slot.key.clone());
                let source = source[&slot.key].clone_data_fn();
                let layout = slot.layout;
                let burn_shape = slot.burn_shape.clone();
                let (key, non_finite) = (slot.key.clone(), Rc::clone(&non_finite));
                let data_fn = Rc::new(move || {
                    let data = source()?;
                    let (data, bad) = to_burn_layout(data, layout, &burn_shape, target)?;
                    if bad > 0 {
                        non_finite.borrow_mut().push((key.clone(), bad));
                    }
                    Ok(data)
                });
                TensorSnapshot::from_closure(
                    data_fn,
                    target,
                    Shape::from(slot.burn_shape.clone()),
                    slot.burn_path.clone(),
                    slot.containers.clone(),
                    ParamId::new(),
                )
            })
            .collect();
        let result = self.apply(snapshots, None, None, true);
        if let Some(error) = result.errors.first() {
            let message = error.to_string();
            let key = by_burn_path
                .iter()
                .find(|(burn, _)| message.contains(burn.as_str()))
                .map(|(_, key)| key.clone())
                .unwrap_or_default();
            return Err(ModelError::TensorData {
                path: path.to_path_buf(),
                key,
                message,
            });
        }
        let non_finite = non_finite.take();
        if !non_finite.is_empty() {
            return Err(ModelError::NonFiniteWeights {
                path: path.to_path_buf(),
                total: non_finite.iter().map(|(_, n)| n).sum(),
                tensors: non_finite,
            });
        }
        if !result.missing.is_empty() {
            return Err(ModelError::KeyMismatch {
                path: path.to_path_buf(),
                report: Box::new(KeyReport {
                    missing: result
                        .missing
                        .iter()
                        .map(|(p, _)| by_burn_path.get(p).cloned().unwrap_or_else(|| p.clone()))
                        .collect(),
                    ..KeyReport::default()
                }),
            });
        }
        Ok(self)
    }
}

/// Converts a stored tensor to the Burn parameter's layout and element type; also returns how
/// many of its values are not finite.
fn to_burn_layout(
    data: TensorData,
    layout: Layout,
    burn_shape: &[usize],
    target: DType,
) -> Result<(TensorData, usize), TensorSnapshotError> {
    let shape = data.shape.to_vec();
    let values: Vec<f32> = data
        .convert_dtype(DType::F32)
        .into_vec::<f32>()
        .map_err(|e| TensorSnapshotError::DataError(format!("{e:?}")))?;
    // Counted on the f32 copy every stored type passes through: f16 / bf16 / f64 NaN and
    // infinities stay non-finite, and an f64 beyond f32's range becomes infinite (it would
    // be in the model too).
    let non_finite = values.iter().filter(|v| !v.is_finite()).count();
    let values = match layout {
        Layout::Transposed => transpose(&values, shape[0], shape[1]),
        Layout::Same | Layout::Scalar => values,
    };
    let data = TensorData::new(values, burn_shape.to_vec()).convert_dtype(target);
    Ok((data, non_finite))
}

/// Row-major transpose of a `rows x cols` matrix.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Which reader a file needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Safetensors,
    Pytorch,
}

fn detect_format(path: &Path) -> Result<Format, ModelError> {
    use std::io::Read;
    let io = |source| ModelError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    };
    let mut head = [0u8; 9];
    let mut file = std::fs::File::open(path).map_err(io)?;
    let n = file.read(&mut head).map_err(io)?;
    // safetensors: an 8-byte little-endian header length, then the JSON header.
    if n == 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    // torch.save: a zip archive ("PK"), a legacy pickle (protocol opcode 0x80) or a tar file.
    Ok(Format::Pytorch)
}

/// Reads every tensor of a checkpoint as open_clip keys: nested `state_dict` resolved,
/// `module.` stripped.
fn read_state_dict(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>, ModelError> {
    let format_error = |message: String| ModelError::CheckpointFormat {
        path: path.to_path_buf(),
        message,
    };
    let raw: BTreeMap<String, TensorSnapshot> = match detect_format(path)? {
        Format::Safetensors => SafetensorsStore::from_file(path)
            .get_all_snapshots()
            .map_err(|e| format_error(e.to_string()))?
            .clone(),
        Format::Pytorch => {
            let nested = PytorchStore::from_file(path)
                .with_top_level_key("state_dict")
                .get_all_snapshots()
                .cloned();
            match nested {
                Ok(map) => map,
                Err(_) => PytorchStore::from_file(path)
                    .get_all_snapshots()
                    .map_err(|e| format_error(e.to_string()))?
                    .clone(),
            }
        }
    };
    // A flattened nested checkpoint ("state_dict.visual...") keeps only its state dict, as
    // open_clip's `load_state_dict` does.
    let nested = raw.keys().any(|k| k.starts_with("state_dict."));
    let mut out = BTreeMap::new();
    for (key, snapshot) in raw {
        let key = if nested {
            match key.strip_prefix("state_dict.") {
                Some(rest) => rest.to_string(),
                None => continue,
            }
        } else {
            key
        };
        let key = key
            .strip_prefix("module.")
            .map(str::to_string)
            .unwrap_or(key);
        out.insert(key, snapshot);
    }
    if out.is_empty() {
        return Err(format_error("no tensors found".to_string()));
    }
    Ok(out)
}

/// Writes the model as an open_clip state dict in safetensors format: exact open_clip key
/// names and shapes, f32 weights (int64 `num_batches_tracked`), metadata `format: pt`.
/// open_clip loads it with `model.load_state_dict(safetensors.torch.load_file(path),
/// strict=True)`.
pub fn save_open_clip<B: Backend>(
    clip: &Clip<B>,
    path: impl AsRef<Path>,
) -> Result<(), ModelError> {
    let path = path.as_ref();
    let mut buffers: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = Vec::new();
    for slot in collect_slots(clip, true) {
        let data = slot.data.expect("collected with values");
        let shape = data.shape.to_vec();
        let values: Vec<f32> = data
            .convert_dtype(DType::F32)
            .into_vec::<f32>()
            .map_err(|e| ModelError::TensorData {
                path: path.to_path_buf(),
                key: slot.key.clone(),
                message: format!("{e:?}"),
            })?;
        let values = match slot.layout {
            Layout::Transposed => transpose(&values, shape[0], shape[1]),
            Layout::Same | Layout::Scalar => values,
        };
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((slot.key, slot.torch_shape, safetensors::Dtype::F32, bytes));
        if let Some(counter) = slot.batch_counter {
            buffers.push((
                counter,
                vec![],
                safetensors::Dtype::I64,
                0i64.to_le_bytes().to_vec(),
            ));
        }
    }
    let views = buffers
        .iter()
        .map(|(key, shape, dtype, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (key.clone(), view))
                .map_err(|source| ModelError::SafetensorsWrite {
                    path: path.to_path_buf(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|source| {
        ModelError::SafetensorsWrite {
            path: path.to_path_buf(),
            source,
        }
    })
}
