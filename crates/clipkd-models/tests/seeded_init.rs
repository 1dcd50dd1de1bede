//! Backend-independent seeded initialisation (`host_init`).
//!
//! Every random draw in this binary is made under `with_host_seed`'s lock: the CPU backend's
//! generator is one per process, and an unlocked draw in a test running at the same time would
//! interleave with a seeded build (which is why these tests are not unit tests of the crate).

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use burn_flex::{Flex, FlexDevice};
use clipkd_models::ClipConfig;
use clipkd_models::host_init::{build_on_host, copy_parameters, with_host_seed};

fn weights(linear: &Linear<Flex>) -> Vec<f32> {
    linear.weight.val().into_data().to_vec().unwrap()
}

fn linear(seed: u64) -> Linear<Flex> {
    build_on_host(seed, |d| {
        Ok::<_, ()>(LinearConfig::new(5, 3).init::<Flex>(d))
    })
    .unwrap()
}

#[test]
fn one_seed_gives_the_same_weights_whatever_the_target_backend() {
    let target: Linear<Autodiff<Flex>> = with_host_seed(0, |d| LinearConfig::new(5, 3).init(d));
    let copied = copy_parameters(&linear(7), target).unwrap();
    let again = linear(7);
    assert_eq!(
        copied.weight.val().into_data().to_vec::<f32>().unwrap(),
        weights(&again)
    );
    assert!(
        copied.weight.val().is_require_grad(),
        "trainable stays trainable"
    );
    assert_ne!(
        weights(&linear(8)),
        weights(&again),
        "another seed, other weights"
    );
}

/// Burn's parameters draw on first use: `build_on_host` must draw them before it lets the
/// generator go, or they take whatever the generator holds when first read.
#[test]
fn built_modules_are_drawn_before_the_generator_is_released() {
    let early = linear(7);
    // Reseed and draw before the first read of `early`'s weights.
    let late = with_host_seed(99, |d| {
        let _ = Tensor::<Flex, 1>::random([64], Distribution::Default, d);
        weights(&early)
    });
    assert_eq!(late, weights(&linear(7)));
}

/// The target's own (lazy) initial values are never drawn: on the CPU they would come from the
/// generator a seeded build is using.
#[test]
fn copying_draws_nothing_from_the_targets_generator() {
    let host = linear(3);
    let (after_copy, fresh) = with_host_seed(5, |d| {
        let target: Linear<Flex> = LinearConfig::new(5, 3).init(d);
        let copied = copy_parameters(&host, target).unwrap();
        assert!(copied.weight.is_initialized());
        let after_copy = Tensor::<Flex, 1>::random([8], Distribution::Default, d);
        <Flex as Backend>::seed(d, 5);
        let fresh = Tensor::<Flex, 1>::random([8], Distribution::Default, d);
        (after_copy.into_data(), fresh.into_data())
    });
    after_copy.assert_eq(&fresh, true);
}

/// Several modules from one seed: drawn one after the other in the order given, the second
/// the same as if it were drawn right after the first on its own.
#[test]
fn a_tuple_draws_its_modules_in_order() {
    let (a, b) = build_on_host(4, |d| {
        Ok::<_, ()>((
            LinearConfig::new(5, 3).init::<Flex>(d),
            LinearConfig::new(3, 2).init::<Flex>(d),
        ))
    })
    .unwrap();
    let (a2, b2) = with_host_seed(4, |d| {
        let a: Linear<Flex> = LinearConfig::new(5, 3).init(d);
        let _ = (a.weight.val(), a.bias.as_ref().map(Param::val));
        let b: Linear<Flex> = LinearConfig::new(3, 2).init(d);
        let _ = (b.weight.val(), b.bias.as_ref().map(Param::val));
        (a, b)
    });
    assert_eq!(weights(&a), weights(&a2));
    assert_eq!(
        b.weight.val().into_data().to_vec::<f32>().unwrap(),
        b2.weight.val().into_data().to_vec::<f32>().unwrap()
    );
}

fn all_parameters<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<f32>> {
    struct All(Vec<Vec<f32>>);
    impl<B: Backend> ModuleVisitor<B> for All {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0
                .push(param.val().into_data().convert::<f32>().to_vec().unwrap());
        }
    }
    let mut all = All(Vec::new());
    module.visit(&mut all);
    all.0
}

/// `ClipConfig::init_seeded`: the same seed, the same model (every parameter, running
/// statistics included), here with an autodiff target; another seed, another model.
#[test]
fn a_seeded_clip_is_the_same_twice() {
    for json in [
        r#"{"embed_dim": 8, "vision_cfg": {"image_size": 16, "layers": 1, "width": 16,
            "patch_size": 8, "head_width": 8}, "text_cfg": {"context_length": 6,
            "vocab_size": 32, "width": 16, "heads": 2, "layers": 1}}"#,
        r#"{"embed_dim": 8, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1],
            "width": 8, "head_width": 8}, "text_cfg": {"context_length": 6,
            "vocab_size": 32, "width": 16, "heads": 2, "layers": 1}}"#,
    ] {
        let cfg = ClipConfig::from_open_clip_json_str(json).unwrap();
        let device = FlexDevice;
        let a = all_parameters(&cfg.init_seeded::<Autodiff<Flex>>(11, &device).unwrap());
        let b = all_parameters(&cfg.init_seeded::<Autodiff<Flex>>(11, &device).unwrap());
        let c = all_parameters(&cfg.init_seeded::<Flex>(12, &device).unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
