//! Named loss terms: what every loss returns.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, backend::Backend};

use crate::error::LossError;

/// One named scalar term of a loss.
#[derive(Debug, Clone)]
pub struct LossTerm<B: Backend> {
    /// The term's name, e.g. `"crd"`.
    pub name: String,
    /// The weight `value` was multiplied by (1 for a loss's own, unweighted terms).
    pub weight: f64,
    /// The weighted value, shape `[1]`.
    pub value: Tensor<B, 1>,
}

/// An ordered list of named scalar terms and their total.
///
/// A single loss returns its terms unweighted (weight 1); a [`LossSet`](crate::LossSet)
/// returns each entry's terms multiplied by the entry's weight, which is the only place
/// weights are applied.
#[derive(Debug, Clone)]
pub struct LossTerms<B: Backend> {
    terms: Vec<LossTerm<B>>,
}

impl<B: Backend> Default for LossTerms<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> LossTerms<B> {
    /// No terms.
    pub fn new() -> Self {
        Self { terms: Vec::new() }
    }

    /// One unweighted term.
    pub fn single(name: impl Into<String>, value: Tensor<B, 1>) -> Self {
        let mut terms = Self::new();
        terms.push(name, 1.0, value);
        terms
    }

    /// Appends a term whose `value` is already multiplied by `weight`.
    pub fn push(&mut self, name: impl Into<String>, weight: f64, value: Tensor<B, 1>) {
        self.terms.push(LossTerm {
            name: name.into(),
            weight,
            value,
        });
    }

    /// The terms, in order.
    pub fn iter(&self) -> impl Iterator<Item = &LossTerm<B>> {
        self.terms.iter()
    }

    /// The (weighted) value of the term named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor<B, 1>> {
        self.terms.iter().find(|t| t.name == name).map(|t| &t.value)
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether there are no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The sum of all (weighted) terms, shape `[1]`: what to call `backward` on. An empty
    /// list has no total ([`LossError::NoTerms`]).
    pub fn total(&self) -> Result<Tensor<B, 1>, LossError> {
        let mut iter = self.terms.iter();
        let first = iter.next().ok_or(LossError::NoTerms)?.value.clone();
        Ok(iter.fold(first, |acc, t| acc + t.value.clone()))
    }

    /// The terms' values as one `[len]` tensor, in order (one concatenation, on the device).
    pub fn values(&self) -> Result<Tensor<B, 1>, LossError> {
        if self.terms.is_empty() {
            return Err(LossError::NoTerms);
        }
        Ok(Tensor::cat(
            self.terms.iter().map(|t| t.value.clone()).collect(),
            0,
        ))
    }

    /// The terms' values as numbers, for logging: one read-back from the device for all.
    pub fn to_scalars(&self) -> Vec<(String, f64)> {
        let Ok(values) = self.values() else {
            return Vec::new();
        };
        let values: Vec<f64> = values.into_data().iter::<f64>().collect();
        self.terms
            .iter()
            .zip(values)
            .map(|(t, v)| (t.name.clone(), v))
            .collect()
    }

    /// Term-by-term sum with `other` (e.g. over the micro-batches of a step). Both lists must
    /// hold the same names in the same order.
    pub fn plus(self, other: LossTerms<B>) -> Result<Self, LossError> {
        let names = |t: &LossTerms<B>| t.terms.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        if names(&self) != names(&other) {
            return Err(LossError::TermsMismatch {
                left: names(&self),
                right: names(&other),
            });
        }
        Ok(LossTerms {
            terms: self
                .terms
                .into_iter()
                .zip(other.terms)
                .map(|(a, b)| LossTerm {
                    value: a.value + b.value,
                    ..a
                })
                .collect(),
        })
    }

    /// Every value multiplied by `factor` (the weights stay as they were).
    pub fn scale(self, factor: f64) -> Self {
        LossTerms {
            terms: self
                .terms
                .into_iter()
                .map(|t| LossTerm {
                    value: t.value.mul_scalar(factor),
                    ..t
                })
                .collect(),
        }
    }

    /// The terms.
    pub fn into_vec(self) -> Vec<LossTerm<B>> {
        self.terms
    }
}

impl<B: Backend> IntoIterator for LossTerms<B> {
    type Item = LossTerm<B>;
    type IntoIter = std::vec::IntoIter<LossTerm<B>>;

    fn into_iter(self) -> Self::IntoIter {
        self.terms.into_iter()
    }
}

impl<B: AutodiffBackend> LossTerms<B> {
    /// Detached copies of the values on the inner backend (no autodiff graph kept): for
    /// logging and checks after the backward pass.
    pub fn detached(&self) -> LossTerms<B::InnerBackend> {
        LossTerms {
            terms: self
                .terms
                .iter()
                .map(|t| LossTerm {
                    name: t.name.clone(),
                    weight: t.weight,
                    value: t.value.clone().inner(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    #[test]
    fn terms_keep_order_and_sum() {
        let device = Default::default();
        let mut terms = LossTerms::<Flex>::single("a", Tensor::from_floats([1.5], &device));
        terms.push("b", 2.0, Tensor::from_floats([4.0], &device));
        assert_eq!(terms.len(), 2);
        assert_eq!(
            terms.to_scalars(),
            vec![("a".to_string(), 1.5), ("b".to_string(), 4.0)]
        );
        assert_eq!(terms.get("b").unwrap().clone().into_scalar(), 4.0);
        assert!(terms.get("c").is_none());
        assert_eq!(terms.total().unwrap().into_scalar(), 5.5);
        let doubled = terms.clone().plus(terms.clone()).unwrap().scale(0.25);
        assert_eq!(
            doubled.to_scalars(),
            vec![("a".to_string(), 0.75), ("b".to_string(), 2.0)]
        );
        let other = LossTerms::<Flex>::single("c", Tensor::from_floats([1.0], &device));
        let e = terms.plus(other).unwrap_err().to_string();
        assert!(e.contains("\"a\", \"b\"") && e.contains("\"c\""), "{e}");
    }

    #[test]
    fn nothing_has_no_total() {
        let e = LossTerms::<Flex>::new().total().unwrap_err();
        assert!(matches!(e, LossError::NoTerms), "{e}");
        assert!(LossTerms::<Flex>::new().to_scalars().is_empty());
    }
}
