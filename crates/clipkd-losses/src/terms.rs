//! Named loss terms: what every loss returns.

use burn::tensor::{Tensor, backend::Backend};

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

    /// The sum of all (weighted) terms, shape `[1]`: what to call `backward` on.
    ///
    /// # Panics
    /// If there are no terms (a [`LossSet`](crate::LossSet) always has at least one).
    pub fn total(&self) -> Tensor<B, 1> {
        let mut iter = self.terms.iter();
        let first = iter
            .next()
            .expect("LossTerms::total called on an empty list of terms")
            .value
            .clone();
        iter.fold(first, |acc, t| acc + t.value.clone())
    }

    /// The terms' values as numbers, for logging (reads the tensors back from the device).
    pub fn to_scalars(&self) -> Vec<(String, f64)> {
        self.terms
            .iter()
            .map(|t| (t.name.clone(), scalar(&t.value)))
            .collect()
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

/// A `[1]` tensor's value as `f64`.
pub(crate) fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    use burn::tensor::ElementConversion;
    t.clone().into_scalar().elem::<f64>()
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
        assert_eq!(terms.total().into_scalar(), 5.5);
    }

    #[test]
    #[should_panic(expected = "empty list of terms")]
    fn total_of_nothing_panics() {
        let _ = LossTerms::<Flex>::new().total();
    }
}
