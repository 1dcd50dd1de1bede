//! Parameter counts of a model config, without drawing its weights.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_flex::{Flex, FlexDevice};

use crate::ClipConfig;
use crate::error::ModelError;

/// The parameters of a CLIP model, by tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    /// Every parameter.
    pub total: usize,
    /// The vision tower (`visual.*`).
    pub vision: usize,
    /// The text tower, its token table included (everything but the vision tower and the
    /// logit scale and bias).
    pub text: usize,
    /// The token table (`token_embedding`), part of `text`.
    pub token_table: usize,
}

/// Adds up the parameters' shapes without initialising them (Burn's parameters are lazy),
/// leaving out BatchNorm's running statistics (buffers, which open_clip does not count as
/// parameters; Burn visits them like parameters).
#[derive(Default)]
struct Count {
    total: usize,
    /// The field names from the visited module down.
    path: Vec<String>,
}

impl<B: Backend> ModuleVisitor<B> for Count {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let buffer = matches!(
            self.path.last().map(String::as_str),
            Some("running_mean" | "running_var")
        );
        if !buffer {
            self.total += param.lazy_shape().num_elements();
        }
    }
}

fn count<M: Module<Flex>>(module: &M) -> usize {
    let mut c = Count::default();
    module.visit(&mut c);
    c.total
}

impl ClipConfig {
    /// The model's parameter counts, from its structure alone: the model is built on the CPU
    /// with lazy parameters and their shapes are added up, so no weight is drawn (a ViT-L/14
    /// costs milliseconds).
    pub fn param_counts(&self) -> Result<ParamCounts, ModelError> {
        let model = self.init::<Flex>(&FlexDevice)?;
        let total = count(&model);
        let vision = count(&model.visual);
        let token_table = count(&model.token_embedding);
        let scales = model.logit_scale.lazy_shape().num_elements()
            + model
                .logit_bias
                .as_ref()
                .map_or(0, |b| b.lazy_shape().num_elements());
        Ok(ParamCounts {
            total,
            vision,
            text: total - vision - scales,
            token_table,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// open_clip's counts (`sum(p.numel() for p in model.parameters())`).
    #[test]
    fn counts_match_open_clip() {
        let c = ClipConfig::preset("ViT-B-32")
            .unwrap()
            .param_counts()
            .unwrap();
        assert_eq!(c.total, 151_277_313);
        assert_eq!(c.token_table, 49_408 * 512);
        let rn50 = ClipConfig::preset("RN50").unwrap().param_counts().unwrap();
        assert_eq!(rn50.total, 102_007_137);
    }
}
