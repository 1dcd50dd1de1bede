//! [`DistillObjective`]: the whole loss module a trainer minimizes.

use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::error::LossError;
use crate::input::DistillInput;
use crate::loss::{DistillLoss, FeatureRequest};
use crate::set::LossSet;
use crate::terms::LossTerms;

/// What a trainer minimizes: the student's and teacher's outputs in, named weighted terms out
/// (their sum is the total). A Burn module, so that its own parameters (projectors, learnable
/// scales) are trained and checkpointed with the student.
///
/// [`LossSet`] is one (any mix of built-in and user losses); implement it directly for a loss
/// module of your own that does not fit the weighted-set shape.
pub trait DistillObjective<B: Backend> {
    /// The weighted terms for this input.
    fn forward(&self, input: &DistillInput<B>) -> Result<LossTerms<B>, LossError>;

    /// Whether the input must carry the student's masked-view image embeddings (MFD).
    fn requires_masked_view(&self) -> bool {
        false
    }

    /// The intermediate features the input must carry (see [`FeatureRequest`]).
    fn feature_requests(&self) -> Vec<FeatureRequest> {
        Vec::new()
    }
}

impl<B: Backend, L: Module<B> + DistillLoss<B>> DistillObjective<B> for LossSet<B, L> {
    fn forward(&self, input: &DistillInput<B>) -> Result<LossTerms<B>, LossError> {
        LossSet::forward(self, input)
    }

    fn requires_masked_view(&self) -> bool {
        LossSet::requires_masked_view(self)
    }

    /// Every entry's requests, each feature name once.
    fn feature_requests(&self) -> Vec<FeatureRequest> {
        let mut out: Vec<FeatureRequest> = Vec::new();
        for (_, _, loss) in self.entries() {
            for request in loss.feature_requests() {
                if !out.contains(&request) {
                    out.push(request);
                }
            }
        }
        out
    }
}
