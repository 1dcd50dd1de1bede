//! Autodiff graphs built on several threads at once keep every gradient: the data-parallel
//! peers (`clipkd_train::distributed`) are threads of one process, each building its own
//! graph while another runs `backward()`.
//!
//! Burn 0.21.0's autodiff lost gradients there (tracel-ai/burn#5573): a `backward()` ends by
//! sweeping every graph of the process for unused nodes, and `cat` released its inputs' node
//! handles before registering its own step, so a graph whose only live handles were `cat`'s
//! inputs looked unused for the length of the copy and another thread's sweep deleted its
//! steps; the leaf behind it came back with no gradient, or a partial one (a ViT's class
//! token goes through `cat`: 1 in about 50 four-peer test runs ended 2e-3 away from one
//! device). `third_party/burn-autodiff` holds the handles until the step is registered. This
//! test loses a gradient within its first few hundred rounds without that fix (here, on 2
//! cores, in every run tried).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::Autodiff;
use burn::tensor::{Distribution, Tensor};
use burn_flex::{Flex, FlexDevice};

type B = Autodiff<Flex>;

/// Large enough that `cat`'s copy takes a while (the window of the race).
const SIZE: usize = 384;
const ROUNDS: usize = 150;
const BUILDERS: usize = 3;
const SWEEPERS: usize = 3;

fn leaf(device: &FlexDevice) -> Tensor<B, 2> {
    Tensor::<B, 2>::from_inner(Tensor::random(
        [SIZE, SIZE],
        Distribution::Normal(0.0, 1.0),
        device,
    ))
    .require_grad()
}

/// One round on a builder thread: a leaf that has been through one `backward()` already (so
/// its next op starts a graph of its own), then `sum(cat([3 a, b]))`, whose gradient for `a`
/// is 3 everywhere.
fn round(device: &FlexDevice) -> Result<(), String> {
    let a = leaf(device);
    let _ = a.clone().sum().backward();
    let b = leaf(device);
    let loss = Tensor::cat(vec![a.clone().mul_scalar(3.0), b], 0).sum();
    let grads = loss.backward();
    let Some(grad) = a.grad(&grads) else {
        return Err("the leaf has no gradient".into());
    };
    let wrong = grad
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?
        .iter()
        .filter(|&&g| g != 3.0)
        .count();
    if wrong > 0 {
        return Err(format!(
            "{wrong} of {} gradient values are not 3",
            SIZE * SIZE
        ));
    }
    Ok(())
}

#[test]
fn concurrent_backward_passes_keep_every_gradient_of_a_graph_built_through_cat() {
    let stop = Arc::new(AtomicBool::new(false));
    let sweepers: Vec<_> = (0..SWEEPERS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let device = Default::default();
                let mut passes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let x = Tensor::<B, 1>::from_inner(Tensor::random(
                        [8],
                        Distribution::Default,
                        &device,
                    ))
                    .require_grad();
                    let _ = x.clone().mul(x).sum().backward();
                    passes += 1;
                }
                passes
            })
        })
        .collect();
    let builders: Vec<_> = (0..BUILDERS)
        .map(|_| {
            std::thread::spawn(move || {
                let device = Default::default();
                let mut failures = Vec::new();
                for r in 0..ROUNDS {
                    if let Err(e) = round(&device) {
                        failures.push(format!("round {r}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = builders
        .into_iter()
        .flat_map(|h| h.join().expect("builder thread"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    let passes: u64 = sweepers
        .into_iter()
        .map(|h| h.join().expect("sweeper thread"))
        .sum();
    println!(
        "{} rounds on {BUILDERS} threads beside {passes} backward passes on {SWEEPERS}: {} lost",
        BUILDERS * ROUNDS,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} rounds lost gradient values, e.g. {}",
        failures.len(),
        BUILDERS * ROUNDS,
        failures[0]
    );
}
