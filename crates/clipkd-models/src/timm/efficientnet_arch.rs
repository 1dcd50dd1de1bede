//! The block list of a timm `EfficientNetBuilder` model: timm's architecture strings
//! (`ir_r2_k3_s2_e6_c24_se0.25`), decoded and scaled as `decode_arch_def` and
//! `EfficientNetBuilder` do (timm 1.0.x, `_efficientnet_builder.py`), for the block types the
//! EfficientNet and MobileNetV3 models use (`ds`, `dsa`, `ir`, `cn`).

use crate::config::{EfficientNetArch, TimmEfficientNetConfig, make_divisible};

/// An activation of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `nn.ReLU` (`nre`).
    Relu,
    /// `nn.Hardswish` (`nhs`, MobileNetV3's default).
    HardSwish,
    /// `nn.SiLU` (`nsw`, EfficientNet's default).
    Silu,
}

/// The gate of a squeeze-excitation module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `sigmoid` (EfficientNet).
    Sigmoid,
    /// `hard_sigmoid`, `relu6(x + 3) / 6` (MobileNetV3).
    HardSigmoid,
}

/// A squeeze-excitation module: `x * gate(expand(act(reduce(mean_hw(x)))))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeSpec {
    /// The reduced width (`conv_reduce` output).
    pub channels: usize,
    /// The activation between the two 1x1 convolutions.
    pub act: Act,
    /// The gate.
    pub gate: Gate,
}

/// The kind of a block, with what only it has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BlockKind {
    /// `DepthwiseSeparableConv` (`ds`; `dsa` has an activation after the pointwise convolution
    /// and never a skip): depthwise, SE, pointwise.
    DepthwiseSeparable {
        /// Activation after the pointwise convolution's BatchNorm.
        pw_act: bool,
    },
    /// `InvertedResidual` (`ir`, MBConv): pointwise expansion to `mid` channels, depthwise,
    /// SE, pointwise projection.
    InvertedResidual {
        /// The expanded width, `make_divisible(in * exp_ratio)`.
        mid: usize,
    },
    /// `ConvBnAct` (`cn`): one convolution, BatchNorm, activation.
    ConvBnAct,
}

/// One block as the builder makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    /// What kind of block.
    pub kind: BlockKind,
    /// Input channels.
    pub in_chs: usize,
    /// Output channels.
    pub out_chs: usize,
    /// The depthwise (or `cn`) kernel size.
    pub kernel: usize,
    /// Stride of the depthwise (or `cn`) convolution.
    pub stride: usize,
    /// The block's activation.
    pub act: Act,
    /// Squeeze-excitation, if the block has one.
    pub se: Option<SeSpec>,
    /// Whether the input is added to the output.
    pub skip: bool,
    /// Stochastic-depth rate of the block.
    pub drop_path: f64,
}

/// The whole trunk: stem, blocks per stage, head.
#[derive(Debug, Clone, PartialEq)]
pub struct EfficientNetSpec {
    /// Stem convolution width (3x3, stride 2).
    pub stem: usize,
    /// The model's activation (stem, head, blocks without their own).
    pub act: Act,
    /// The blocks of each stage.
    pub stages: Vec<Vec<BlockSpec>>,
    /// The 1x1 head convolution's width.
    pub head: usize,
    /// MobileNetV3: the head convolution comes after the pooling, with a bias and no norm;
    /// EfficientNet: before it, without bias, with BatchNorm.
    pub head_after_pool: bool,
}

const EFFICIENTNET: &[&[&str]] = &[
    &["ds_r1_k3_s1_e1_c16_se0.25"],
    &["ir_r2_k3_s2_e6_c24_se0.25"],
    &["ir_r2_k5_s2_e6_c40_se0.25"],
    &["ir_r3_k3_s2_e6_c80_se0.25"],
    &["ir_r3_k5_s1_e6_c112_se0.25"],
    &["ir_r4_k5_s2_e6_c192_se0.25"],
    &["ir_r1_k3_s1_e6_c320_se0.25"],
];

const MOBILENETV3_SMALL: &[&[&str]] = &[
    &["ds_r1_k3_s2_e1_c16_se0.25_nre"],
    &["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],
    &["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"],
    &["ir_r2_k5_s1_e3_c48_se0.25"],
    &["ir_r3_k5_s2_e6_c96_se0.25"],
    &["cn_r1_k1_s1_c576"],
];

const MOBILENETV3_LARGE: &[&[&str]] = &[
    &["ds_r1_k3_s1_e1_c16_nre"],
    &["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
    &["ir_r3_k5_s2_e3_c40_se0.25_nre"],
    &[
        "ir_r1_k3_s2_e6_c80",
        "ir_r1_k3_s1_e2.5_c80",
        "ir_r2_k3_s1_e2.3_c80",
    ],
    &["ir_r2_k3_s1_e6_c112_se0.25"],
    &["ir_r3_k5_s2_e6_c160_se0.25"],
    &["cn_r1_k1_s1_c960"],
];

/// One architecture string, decoded.
#[derive(Debug, Clone)]
struct BlockDef {
    kind: String,
    repeat: usize,
    kernel: usize,
    stride: usize,
    exp_ratio: Option<f64>,
    out: usize,
    se_ratio: f64,
    act: Option<Act>,
    noskip: bool,
    skip: bool,
}

/// timm's `_decode_block_str` for the options these models use.
fn decode(block: &str) -> BlockDef {
    let mut ops = block.split('_');
    let kind = ops.next().expect("a block type").to_string();
    let mut def = BlockDef {
        kind,
        repeat: 1,
        kernel: 1,
        stride: 1,
        exp_ratio: None,
        out: 0,
        se_ratio: 0.0,
        act: None,
        noskip: false,
        skip: false,
    };
    for op in ops {
        let number = |prefix: &str| op[prefix.len()..].parse::<f64>().expect(block);
        match op {
            "noskip" => def.noskip = true,
            "skip" => def.skip = true,
            "nre" => def.act = Some(Act::Relu),
            "nhs" => def.act = Some(Act::HardSwish),
            "nsw" => def.act = Some(Act::Silu),
            _ if op.starts_with("se") => def.se_ratio = number("se"),
            _ if op.starts_with('r') => def.repeat = number("r") as usize,
            _ if op.starts_with('k') => def.kernel = number("k") as usize,
            _ if op.starts_with('s') => def.stride = number("s") as usize,
            _ if op.starts_with('e') => def.exp_ratio = Some(number("e")),
            _ if op.starts_with('c') => def.out = number("c") as usize,
            _ => panic!("unsupported option `{op}` in timm block string `{block}`"),
        }
    }
    def
}

/// timm's `_scale_stage_depth` with `depth_trunc="ceil"`: the stage's total repeats times the
/// multiplier, rounded up, spread over its definitions from the last one (Python's `round`,
/// halves to even).
fn scale_stage(defs: Vec<BlockDef>, multiplier: f64) -> Vec<BlockDef> {
    let repeats: Vec<usize> = defs.iter().map(|d| d.repeat).collect();
    let mut total = repeats.iter().sum::<usize>();
    let mut scaled_total = (total as f64 * multiplier).ceil() as usize;
    let mut scaled = Vec::with_capacity(repeats.len());
    for &r in repeats.iter().rev() {
        let rs =
            ((r as f64 / total as f64 * scaled_total as f64).round_ties_even() as usize).max(1);
        scaled.push(rs);
        total -= r;
        scaled_total = scaled_total.saturating_sub(rs);
    }
    scaled.reverse();
    defs.into_iter()
        .zip(scaled)
        .flat_map(|(d, n)| std::iter::repeat_n(d, n))
        .collect()
}

impl TimmEfficientNetConfig {
    /// The trunk this config builds, block by block, as timm's builder makes it.
    pub fn spec(&self, drop_path_rate: f64) -> EfficientNetSpec {
        let (arch, act, stem, se_from_exp, gate, se_act) = match self.arch {
            EfficientNetArch::EfficientNet => {
                (EFFICIENTNET, Act::Silu, 32, false, Gate::Sigmoid, None)
            }
            EfficientNetArch::MobileNetV3Small => (
                MOBILENETV3_SMALL,
                Act::HardSwish,
                16,
                true,
                Gate::HardSigmoid,
                Some(Act::Relu),
            ),
            EfficientNetArch::MobileNetV3Large => (
                MOBILENETV3_LARGE,
                Act::HardSwish,
                16,
                true,
                Gate::HardSigmoid,
                Some(Act::Relu),
            ),
        };
        let mobilenet = self.arch != EfficientNetArch::EfficientNet;
        let fix_stem = mobilenet && self.channel_multiplier < 0.75;
        let stem = if fix_stem {
            stem
        } else {
            self.round_channels(stem)
        };
        let stages: Vec<Vec<BlockDef>> = arch
            .iter()
            .map(|stage| {
                let defs = stage.iter().map(|s| decode(s)).collect();
                scale_stage(defs, self.depth_multiplier)
            })
            .collect();
        let total: usize = stages.iter().map(Vec::len).sum();
        let mut index = 0;
        let mut in_chs = stem;
        let stages = stages
            .into_iter()
            .map(|defs| {
                defs.into_iter()
                    .enumerate()
                    .map(|(i, def)| {
                        let stride = if i == 0 { def.stride } else { 1 };
                        let out_chs = self.round_channels(def.out);
                        let block_act = def.act.unwrap_or(act);
                        let exp_ratio = def.exp_ratio.unwrap_or(1.0);
                        let kind = match def.kind.as_str() {
                            "ds" => BlockKind::DepthwiseSeparable { pw_act: false },
                            "dsa" => BlockKind::DepthwiseSeparable { pw_act: true },
                            "ir" => BlockKind::InvertedResidual {
                                mid: make_divisible(in_chs as f64 * exp_ratio, 8),
                            },
                            "cn" => BlockKind::ConvBnAct,
                            other => panic!("unsupported timm block type `{other}`"),
                        };
                        // The SE module sees the depthwise output: `mid` channels (ir) or the
                        // input channels (ds). Its ratio is of the block input unless
                        // `se_from_exp` (timm divides by the expansion ratio).
                        let se = (def.se_ratio > 0.0).then(|| {
                            let se_in = match kind {
                                BlockKind::InvertedResidual { mid } => mid,
                                _ => in_chs,
                            };
                            let ratio = if se_from_exp {
                                def.se_ratio
                            } else {
                                def.se_ratio / exp_ratio
                            };
                            let raw = se_in as f64 * ratio;
                            SeSpec {
                                channels: if mobilenet {
                                    make_divisible(raw, 8)
                                } else {
                                    raw.round_ties_even() as usize
                                },
                                act: se_act.unwrap_or(block_act),
                                gate,
                            }
                        });
                        let same_shape = stride == 1 && in_chs == out_chs;
                        let skip = match kind {
                            BlockKind::DepthwiseSeparable { pw_act } => {
                                same_shape && !def.noskip && !pw_act
                            }
                            BlockKind::InvertedResidual { .. } => same_shape && !def.noskip,
                            BlockKind::ConvBnAct => same_shape && def.skip,
                        };
                        let block = BlockSpec {
                            kind,
                            in_chs,
                            out_chs,
                            kernel: def.kernel,
                            stride,
                            act: block_act,
                            se,
                            skip,
                            drop_path: drop_path_rate * index as f64 / total as f64,
                        };
                        index += 1;
                        in_chs = out_chs;
                        block
                    })
                    .collect()
            })
            .collect();
        EfficientNetSpec {
            stem,
            act,
            stages,
            head: self.num_features(),
            head_after_pool: mobilenet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TimmTrunkConfig;

    fn spec(name: &str) -> EfficientNetSpec {
        match TimmTrunkConfig::named(name).unwrap() {
            TimmTrunkConfig::EfficientNet(e) => e.spec(0.0),
            other => panic!("{other:?}"),
        }
    }

    /// Widths, depths, SE sizes and skips against timm 1.0.31's modules (printed there with
    /// `timm.create_model(name)`).
    #[test]
    fn named_models_have_timms_blocks() {
        let b0 = spec("efficientnet_b0");
        assert_eq!(b0.stem, 32);
        assert_eq!(
            b0.stages.iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 2, 2, 3, 3, 4, 1]
        );
        let first = &b0.stages[0][0];
        assert_eq!((first.in_chs, first.out_chs), (32, 16));
        assert_eq!(first.se.unwrap().channels, 8);
        let ir = &b0.stages[1][0];
        assert_eq!(ir.kind, BlockKind::InvertedResidual { mid: 96 });
        assert_eq!(ir.se.unwrap().channels, 4);
        assert!(!ir.skip && b0.stages[1][1].skip);
        assert_eq!(b0.head, 1280);

        let small = spec("mobilenetv3_small_100");
        assert_eq!(small.stem, 16);
        assert_eq!(
            small.stages.iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 2, 3, 2, 3, 1]
        );
        let mids: Vec<usize> = small
            .stages
            .iter()
            .flatten()
            .filter_map(|b| match b.kind {
                BlockKind::InvertedResidual { mid } => Some(mid),
                _ => None,
            })
            .collect();
        assert_eq!(mids, [72, 88, 96, 240, 240, 120, 144, 288, 576, 576]);
        assert_eq!(small.stages[0][0].se.unwrap().channels, 8);
        assert_eq!(small.stages[2][0].se.unwrap().channels, 24);
        assert_eq!(small.stages[5][0].out_chs, 576);
        assert_eq!(small.head, 1024);
        // Below 0.75 the stem stays 16 wide.
        assert_eq!(spec("mobilenetv3_small_050").stem, 16);
        assert_eq!(spec("mobilenetv3_small_075").stem, 16);
    }

    #[test]
    fn stage_depth_scales_as_timm() {
        let defs = |repeats: &[usize]| {
            repeats
                .iter()
                .map(|r| decode(&format!("ir_r{r}_k3_s1_e1_c8")))
                .collect::<Vec<_>>()
        };
        // ceil(4 * 0.34) = 2 over [1, 3]: from the back, round(3/4 * 2) = 2 (halves to even: 1.5
        // -> 2), then the first keeps at least 1.
        assert_eq!(scale_stage(defs(&[1, 3]), 0.34).len(), 3);
        assert_eq!(scale_stage(defs(&[2]), 1.1).len(), 3);
        assert_eq!(scale_stage(defs(&[1]), 0.1).len(), 1);
    }
}
