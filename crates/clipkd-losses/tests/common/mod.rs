//! Shared test helpers: the fixture reader, the autodiff test backend and tolerance checks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// The autodiff test backend.
pub type B = burn::backend::Autodiff<burn_flex::Flex>;
/// The plain test backend.
pub type Inner = burn_flex::Flex;

/// A tensor read from a fixture: shape and f32 values (row-major).
#[derive(Debug, Clone)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Array {
    /// The transpose of a 2-D array (PyTorch `Linear` weights are `[out, in]`, Burn's `[in, out]`).
    pub fn transposed(&self) -> Array {
        let [r, c] = [self.shape[0], self.shape[1]];
        let mut values = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                values[j * r + i] = self.values[i * c + j];
            }
        }
        Array {
            shape: vec![c, r],
            values,
        }
    }

    pub fn tensor<Bk: Backend, const D: usize>(&self, device: &Bk::Device) -> Tensor<Bk, D> {
        Tensor::from_data(
            TensorData::new(self.values.clone(), self.shape.clone()),
            device,
        )
    }
}

/// Directory of the loss fixtures.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/losses")
}

/// All tensors of `tests/fixtures/losses/<case>.safetensors`.
pub fn load_case(case: &str) -> HashMap<String, Array> {
    let path = fixture_dir().join(format!("{case}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    st.iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name} is not f32");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (
                name.to_string(),
                Array {
                    shape: view.shape().to_vec(),
                    values,
                },
            )
        })
        .collect()
}

/// The values of a tensor as `f32`.
pub fn values<Bk: Backend, const D: usize>(t: &Tensor<Bk, D>) -> Vec<f32> {
    t.to_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// `max |a - b| / max |b|`: the relative error of a whole tensor (gradients contain entries
/// near zero, where an element-wise relative error means nothing).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs() as f64));
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
    if scale == 0.0 { diff } else { diff / scale }
}

/// Asserts `rel_err(actual, expected) <= tol`.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], tol: f64) {
    let err = rel_err(actual, expected);
    assert!(
        err <= tol,
        "{what}: relative error {err:.3e} > {tol:.0e}\n actual   {:?}\n expected {:?}",
        &actual[..actual.len().min(6)],
        &expected[..expected.len().min(6)]
    );
}

/// A random `[n, d]` tensor from a fixed seed (simple LCG + Box-Muller, backend independent).
pub fn randn<Bk: Backend>(n: usize, d: usize, seed: u64, device: &Bk::Device) -> Tensor<Bk, 2> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let values: Vec<f32> = (0..n * d)
        .map(|_| {
            let (u1, u2) = (uniform(), uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(values, vec![n, d]), device)
}
