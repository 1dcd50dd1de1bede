//! Catching NaN and infinity without a device sync per step.
//!
//! Reading a value back from a GPU waits for all the work queued before it, so the trainer
//! never reads the loss on every step. Instead:
//! - [`LossWatch`] keeps each step's loss terms on the device (one `[T]` tensor a step, made
//!   by a single concatenation) and reads all the steps since the last check in one transfer,
//!   at the points where the trainer reads the device anyway: logged steps, and before every
//!   checkpoint and evaluation. A non-finite term is reported with its step and name.
//! - [`non_finite_count`] sums `x - x` over every weight (0 when all are finite, NaN
//!   otherwise) and the optimizer's moments into one scalar, read once before a checkpoint is
//!   written: a diverging update whose loss was still finite is caught before it is saved.
//!
//! So a checkpoint is only written when every step before it had finite losses and the
//! weights and moments it holds are finite.

use std::collections::HashMap;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::AdamW;
use burn::optim::record::AdaptorRecord;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use clipkd_losses::LossTerms;

use crate::error::TrainError;
use crate::optim::{GroupedAdamW, ParamPaths};

/// The last step a [`LossWatch::check`] read back.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedStep {
    /// The optimizer step (counted from 1).
    pub step: u64,
    /// Its loss terms by name.
    pub terms: Vec<(String, f64)>,
}

/// The loss terms of the steps not yet checked, on the device.
#[derive(Debug)]
pub struct LossWatch<B: Backend> {
    names: Vec<String>,
    pending: Vec<(u64, Tensor<B, 1>)>,
}

impl<B: Backend> Default for LossWatch<B> {
    fn default() -> Self {
        LossWatch {
            names: Vec::new(),
            pending: Vec::new(),
        }
    }
}

impl<B: Backend> LossWatch<B> {
    /// An empty watch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the terms of optimizer step `step` (counted from 1) on the device; no transfer.
    pub fn push(&mut self, step: u64, terms: &LossTerms<B>) {
        if self.names.is_empty() {
            self.names = terms.iter().map(|t| t.name.clone()).collect();
        }
        if let Ok(values) = terms.values() {
            self.pending.push((step, values));
        }
    }

    /// Steps pushed and not yet checked.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Reads every pending step's terms in one transfer and checks them. Returns the last
    /// step's terms by name (`None` when nothing was pending), or
    /// [`TrainError::NonFiniteLoss`] for the first step with a NaN or infinite term.
    pub fn check(&mut self) -> Result<Option<CheckedStep>, TrainError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.pending);
        let steps: Vec<u64> = pending.iter().map(|(s, _)| *s).collect();
        let all = Tensor::cat(pending.into_iter().map(|(_, t)| t).collect(), 0);
        let values: Vec<f64> = all.into_data().iter::<f64>().collect();
        let t = self.names.len();
        let named = |row: &[f64]| -> Vec<(String, f64)> {
            self.names
                .iter()
                .cloned()
                .zip(row.iter().copied())
                .collect()
        };
        for (i, &step) in steps.iter().enumerate() {
            let row = &values[i * t..(i + 1) * t];
            if row.iter().any(|v| !v.is_finite()) {
                // The non-finite terms first: they are the news.
                let mut terms = named(row);
                terms.sort_by_key(|(_, v)| v.is_finite());
                let shown: Vec<String> = terms.iter().map(|(n, v)| format!("{n}={v}")).collect();
                return Err(TrainError::NonFiniteLoss {
                    step,
                    terms: shown.join(", "),
                });
            }
        }
        let last = steps.len() - 1;
        Ok(Some(CheckedStep {
            step: steps[last],
            terms: named(&values[last * t..(last + 1) * t]),
        }))
    }
}

/// Sums `x - x` over every float parameter: 0 when all are finite, NaN otherwise.
struct FiniteProbe<B: Backend> {
    sum: Option<Tensor<B, 1>>,
}

impl<B: Backend> FiniteProbe<B> {
    fn add<const D: usize>(&mut self, x: Tensor<B, D>) {
        let s = (x.clone() - x).sum();
        self.sum = Some(match self.sum.take() {
            None => s,
            Some(acc) => acc + s,
        });
    }
}

impl<B: Backend> ModuleVisitor<B> for FiniteProbe<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.add(param.val());
    }
}

/// Counts the non-finite values of each float parameter (the slow path, after
/// [`FiniteProbe`] found some), by parameter id.
#[derive(Default)]
struct NonFiniteCounts {
    found: Vec<(ParamId, u64)>,
}

impl<B: Backend> ModuleVisitor<B> for NonFiniteCounts {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n: i64 = param
            .val()
            .is_finite()
            .bool_not()
            .int()
            .sum()
            .into_scalar()
            .elem();
        if n > 0 {
            self.found.push((param.id, n as u64));
        }
    }
}

fn describe(found: &[(String, u64)]) -> String {
    let total: u64 = found.iter().map(|(_, n)| n).sum();
    let first: Vec<String> = found
        .iter()
        .take(5)
        .map(|(name, n)| format!("{name}: {n}"))
        .collect();
    format!(
        "{total} values in {} tensors; {}{}",
        found.len(),
        first.join(", "),
        if found.len() > 5 { ", ..." } else { "" }
    )
}

/// Checks that every weight of `model` and every AdamW moment of `optimizer` is finite, with
/// one value read from the device. `step` only goes into the error:
/// [`TrainError::NonFiniteWeights`], naming the tensors.
pub fn check_weights_and_moments<B, M>(
    model: &M,
    optimizer: &GroupedAdamW<B, M>,
    step: u64,
) -> Result<(), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let inner = model.valid();
    let mut probe = FiniteProbe::<B::InnerBackend> { sum: None };
    inner.visit(&mut probe);
    let mut paths = ParamPaths::default();
    model.visit(&mut paths);
    let rank_path: HashMap<ParamId, (usize, String)> = paths
        .params
        .into_iter()
        .map(|(path, rank, id)| (id, (rank, path)))
        .collect();
    let records = optimizer.to_records();
    for group in &records {
        for (id, record) in group {
            if let Some((rank, _)) = rank_path.get(id) {
                add_moments::<B>(&mut probe, record.clone(), *rank);
            }
        }
    }
    let Some(sum) = probe.sum else {
        return Ok(());
    };
    let sum: f64 = sum.into_scalar().elem();
    if sum.is_finite() {
        return Ok(());
    }
    let mut counts = NonFiniteCounts::default();
    inner.visit(&mut counts);
    if !counts.found.is_empty() {
        let named: Vec<(String, u64)> = counts
            .found
            .iter()
            .map(|(id, n)| {
                let path = rank_path
                    .get(id)
                    .map_or_else(|| id.to_string(), |p| p.1.clone());
                (path, *n)
            })
            .collect();
        return Err(TrainError::NonFiniteWeights {
            step,
            what: "weights",
            details: describe(&named),
        });
    }
    let mut found = Vec::new();
    for group in records {
        for (id, record) in group {
            if let Some((rank, path)) = rank_path.get(&id) {
                let mut one = FiniteProbe::<B::InnerBackend> { sum: None };
                add_moments::<B>(&mut one, record, *rank);
                if let Some(s) = one.sum
                    && !s.into_scalar().elem::<f64>().is_finite()
                {
                    found.push((path.clone(), 1));
                }
            }
        }
    }
    Err(TrainError::NonFiniteWeights {
        step,
        what: "optimizer moments",
        details: format!(
            "the AdamW moments of {} tensors: {}",
            found.len(),
            found
                .iter()
                .take(5)
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

type Record<B> = AdaptorRecord<AdamW, B>;

/// Adds the moments of one parameter's AdamW state (rank `rank`) to `probe`.
fn add_moments<B: AutodiffBackend>(
    probe: &mut FiniteProbe<B::InnerBackend>,
    record: Record<B>,
    rank: usize,
) {
    macro_rules! moments {
        ($d:literal) => {{
            let state = record.into_state::<$d>();
            probe.add(state.momentum.moment_1);
            probe.add(state.momentum.moment_2);
        }};
    }
    match rank {
        1 => moments!(1),
        2 => moments!(2),
        3 => moments!(3),
        4 => moments!(4),
        5 => moments!(5),
        6 => moments!(6),
        // Parameters of higher rank do not occur in CLIP models; their moments are not checked.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::TensorData;
    use burn_flex::Flex;

    use crate::optim::{AdamWParams, GroupKind};

    type B = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        layer: Linear<B>,
    }

    fn tiny() -> (Tiny<B>, GroupedAdamW<B, Tiny<B>>) {
        let device = Default::default();
        let model = Tiny {
            layer: LinearConfig::new(3, 2).init::<B>(&device),
        };
        let optim = GroupedAdamW::new(&model, AdamWParams::vit(), |_, _| GroupKind::Decay);
        (model, optim)
    }

    fn terms(values: &[f32]) -> LossTerms<Flex> {
        let mut t = LossTerms::new();
        for (i, v) in values.iter().enumerate() {
            let value = Tensor::from_data(TensorData::new(vec![*v], [1]), &Default::default());
            t.push(["task", "fd"][i], 1.0, value);
        }
        t
    }

    #[test]
    fn the_watch_names_the_first_non_finite_step_and_term() {
        let mut watch = LossWatch::<Flex>::new();
        assert_eq!(watch.check().unwrap(), None);
        watch.push(1, &terms(&[1.0, 2.0]));
        watch.push(2, &terms(&[1.5, 2.5]));
        let last = watch.check().unwrap().unwrap();
        assert_eq!(last.step, 2);
        assert_eq!(last.terms, [("task".into(), 1.5), ("fd".into(), 2.5)]);
        assert_eq!(watch.pending(), 0);
        watch.push(3, &terms(&[1.0, 2.0]));
        watch.push(4, &terms(&[1.0, f32::NAN]));
        watch.push(5, &terms(&[f32::INFINITY, f32::NAN]));
        let e = watch.check().unwrap_err().to_string();
        assert!(e.contains("step 4") && e.contains("fd=NaN, task=1"), "{e}");
    }

    #[test]
    fn non_finite_weights_are_named_with_their_count() {
        let (model, optim) = tiny();
        check_weights_and_moments(&model, &optim, 7).unwrap();
        let model = Tiny {
            layer: Linear {
                weight: model.layer.weight.map(|w| {
                    let mut data = w.to_data().to_vec::<f32>().unwrap();
                    data[1] = f32::INFINITY;
                    data[4] = f32::NAN;
                    Tensor::from_data(TensorData::new(data, [3, 2]), &Default::default())
                }),
                bias: model.layer.bias,
            },
        };
        let e = check_weights_and_moments(&model, &optim, 7)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("weights after step 7") && e.contains("layer.weight: 2"),
            "{e}"
        );
    }

    /// Gradients of 1e30 overflow AdamW's second moment (1e60 > f32::MAX) while the update,
    /// m / sqrt(v), is 0: finite weights, infinite moments. Saving them would poison the run
    /// on resume, so they are caught too.
    #[test]
    fn infinite_moments_behind_finite_weights_are_caught() {
        let (model, mut optim) = tiny();
        let x = Tensor::<B, 2>::ones([1, 3], &Default::default());
        let loss = model.layer.forward(x).sum().mul_scalar(1e30);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(1e-3, model, grads);
        let e = check_weights_and_moments(&model, &optim, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("optimizer moments") && e.contains("layer.weight"),
            "{e}"
        );
    }
}
