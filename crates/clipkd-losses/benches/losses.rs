//! Bench of the CLIP-KD losses on the CPU (Burn Flex backend, f32).
//!
//! 1. Forward + backward of the paper's recipe (task + CRD 1 + ICL 1 + FD 2000) at N = 1024,
//!    D_s = 512, D_t = 768, and of each other loss alone at the same sizes.
//! 2. GD's memory: clipkd's closed form (`g_k` as one matmul) against a port of CLIP-KD's
//!    `get_grad`, which materializes `N × D × N` tensors. Peak heap is *measured* with a
//!    counting global allocator (bytes allocated above the level before the step, forward +
//!    backward), at N = 256 for the naive form (its N = 1024 peak would be ~10 GiB) and at
//!    N = 256 and 1024 for clipkd's; the naive N = 1024 figure is *computed* from tensor sizes.
//!
//! Run: `cargo bench -p clipkd-losses --bench losses` (about a minute on 2 cores after the
//! build). Prints Markdown tables.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, Tensor};
use burn_flex::Flex;
use clipkd_losses::{
    AfdLossConfig, CrdLossConfig, CrossKdLossConfig, DistillInput, Embeddings, FdLossConfig,
    GdLossConfig, IclLossConfig, LossConfig, LossSet, LossSetConfig, MfdLossConfig,
    OpenClipDistillLossConfig, TaskLossConfig,
};

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

type B = Autodiff<Flex>;

const MIB: f64 = 1024.0 * 1024.0;

/// Peak heap bytes above the current level while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

/// Student leaves and teacher tensors of one batch.
struct Batch {
    s_img: Tensor<B, 2>,
    s_txt: Tensor<B, 2>,
    t_img: Tensor<B, 2>,
    t_txt: Tensor<B, 2>,
}

impl Batch {
    fn new(n: usize, d_s: usize, d_t: usize) -> Self {
        let device = Default::default();
        let randn = |d| Tensor::<B, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
        let t_img = randn(d_t);
        let t_txt = t_img.clone() + randn(d_t);
        let s_img = randn(d_s);
        let s_txt = s_img.clone() + randn(d_s);
        Self {
            s_img: s_img.require_grad(),
            s_txt: s_txt.require_grad(),
            t_img,
            t_txt,
        }
    }

    fn input(&self) -> DistillInput<B> {
        let device = Default::default();
        let student = Embeddings::from_log_scale(
            self.s_img.clone(),
            self.s_txt.clone(),
            Tensor::<B, 1>::from_floats([2.659], &device).require_grad(),
        )
        .unwrap();
        let teacher = Embeddings::from_log_scale(
            self.t_img.clone(),
            self.t_txt.clone(),
            Tensor::from_floats([4.6], &device),
        )
        .unwrap();
        DistillInput::new(student, teacher)
            .unwrap()
            .with_masked_student_image(self.s_img.clone().detach().require_grad())
            .unwrap()
    }
}

/// Forward + backward of `set` on `batch`; returns seconds (reads the gradient back, so the
/// work is done when it returns).
fn step(set: &LossSet<B>, batch: &Batch) -> f64 {
    let start = Instant::now();
    let total = set.forward(&batch.input()).unwrap().total().unwrap();
    let grads = total.backward();
    let g = batch.s_txt.grad(&grads).unwrap(); // every loss here reaches the text side
    let _ = g.into_data();
    start.elapsed().as_secs_f64()
}

fn time(set: &LossSet<B>, batch: &Batch, warmup: usize, runs: usize) -> (f64, f64) {
    for _ in 0..warmup {
        step(set, batch);
    }
    let mut t: Vec<f64> = (0..runs).map(|_| step(set, batch)).collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[t.len() / 2], t[0])
}

/// CLIP-KD's `get_grad`, ported as released: `g_k` through an `N × D × N` tensor.
fn naive_get_grad(p: Tensor<B, 2>, k: Tensor<B, 2>, tau: f32) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [n, d] = p.dims();
    let device = p.device();
    let logits = p.clone().matmul(k.clone().transpose()).div_scalar(tau);
    let diff = softmax(logits, 1) - Tensor::eye(n, &device);
    let grad_p = diff.clone().matmul(k).div_scalar(tau * n as f32);
    // (prob - targets).t().repeat(1, embed_size).view(-1, embed_size, N)
    let repeat = diff.transpose().repeat_dim(1, d).reshape([n, d, n]);
    // (repeat * (p.t() / tau).unsqueeze(0)).sum(-1) / N
    let grad_k = (repeat * p.transpose().div_scalar(tau).unsqueeze::<3>())
        .sum_dim(2)
        .reshape([n, d])
        .div_scalar(n as f32);
    (grad_p, grad_k)
}

/// The whole GD loss in the naive form (student already aligned: normalized `[N, D]`).
fn naive_gd(
    s_img: Tensor<B, 2>,
    s_txt: Tensor<B, 2>,
    t_img: Tensor<B, 2>,
    t_txt: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let (tpi, tkt) = naive_get_grad(t_img.clone(), t_txt.clone(), 100.0);
    let (tpt, tki) = naive_get_grad(t_txt, t_img, 100.0);
    let (spi, skt) = naive_get_grad(s_img.clone(), s_txt.clone(), 14.3);
    let (spt, ski) = naive_get_grad(s_txt, s_img, 14.3);
    let mse = |a: Tensor<B, 2>, b: Tensor<B, 2>| (a - b.detach()).square().mean();
    mse(spi, tpi) + mse(skt, tkt) + mse(spt, tpt) + mse(ski, tki)
}

fn normalized(n: usize, d: usize, grad: bool) -> Tensor<B, 2> {
    let x = Tensor::<B, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &Default::default());
    let x = clipkd_losses::ops::l2_normalize_smooth(x);
    if grad { x.require_grad() } else { x }
}

/// Peak bytes and seconds of GD forward + backward, naive or clipkd, at `n × d`.
fn gd_memory(n: usize, d: usize, naive: bool) -> (usize, f64) {
    let (s_img, s_txt) = (normalized(n, d, true), normalized(n, d, true));
    let (t_img, t_txt) = (normalized(n, d, false), normalized(n, d, false));
    let set = LossSetConfig::new(d, d)
        .add(1.0, LossConfig::Gd(GdLossConfig::new()))
        .init::<B>(&Default::default())
        .unwrap();
    let device = Default::default();
    let mut seconds = 0.0;
    let peak = peak_during(|| {
        let start = Instant::now();
        let loss = if naive {
            naive_gd(s_img.clone(), s_txt.clone(), t_img.clone(), t_txt.clone())
        } else {
            let student = Embeddings::new(
                s_img.clone(),
                s_txt.clone(),
                Tensor::from_floats([14.3], &device),
            )
            .unwrap();
            let teacher = Embeddings::new(
                t_img.clone(),
                t_txt.clone(),
                Tensor::from_floats([100.0], &device),
            )
            .unwrap();
            set.forward(&DistillInput::new(student, teacher).unwrap())
                .unwrap()
                .total()
                .unwrap()
        };
        let grads = loss.backward();
        let _ = s_img.grad(&grads).unwrap().into_data();
        seconds = start.elapsed().as_secs_f64();
    });
    (peak, seconds)
}

fn main() {
    let (n, d_s, d_t) = (1024, 512, 768);
    println!(
        "# clipkd-losses bench (Burn Flex, f32, {} threads)\n",
        rayon_threads()
    );
    println!("## Forward + backward at N = {n}, D_s = {d_s}, D_t = {d_t}\n");
    println!("| losses | median s | min s | peak heap MiB |");
    println!("|---|---|---|---|");
    let batch = Batch::new(n, d_s, d_t);
    let device = Default::default();
    let singles: Vec<(&str, LossSetConfig)> = vec![
        (
            "recipe: task + CRD + ICL + 2000 FD",
            LossSetConfig::clip_kd(d_s, d_t),
        ),
        (
            "task",
            LossSetConfig::new(d_s, d_t).add(1.0, LossConfig::Task(TaskLossConfig::new())),
        ),
        (
            "CRD",
            LossSetConfig::new(d_s, d_t).add(1.0, LossConfig::Crd(CrdLossConfig::new())),
        ),
        (
            "FD",
            LossSetConfig::new(d_s, d_t).add(1.0, LossConfig::Fd(FdLossConfig::new())),
        ),
        (
            "MFD",
            LossSetConfig::new(d_s, d_t).add(1.0, LossConfig::Mfd(MfdLossConfig::new())),
        ),
        (
            "GD",
            LossSetConfig::new(d_s, d_t).add(1.0, LossConfig::Gd(GdLossConfig::new())),
        ),
        (
            "ICL",
            LossSetConfig::new(d_s, d_t).add(1.0, LossConfig::Icl(IclLossConfig::new())),
        ),
        (
            "AFD",
            LossSetConfig::new(d_s, d_t).add(1.0, LossConfig::Afd(AfdLossConfig::new(d_t))),
        ),
        (
            "cross-KD",
            LossSetConfig::new(d_s, d_t).add(1.0, LossConfig::CrossKd(CrossKdLossConfig::new())),
        ),
        (
            "open_clip distill",
            LossSetConfig::new(d_s, d_t).add(
                1.0,
                LossConfig::OpenClipDistill(OpenClipDistillLossConfig::new()),
            ),
        ),
    ];
    for (name, config) in singles {
        let set = config.init::<B>(&device).unwrap();
        let runs = if name.starts_with("recipe") { 7 } else { 3 };
        let (median, min) = time(&set, &batch, 1, runs);
        let peak = peak_during(|| {
            step(&set, &batch);
        });
        println!(
            "| {name} | {median:.3} | {min:.3} | {:.0} |",
            peak as f64 / MIB
        );
    }

    println!("\n## GD memory: clipkd closed form vs CLIP-KD's `get_grad` (forward + backward)\n");
    println!("| N | D | form | peak heap MiB (measured) | seconds |");
    println!("|---|---|---|---|---|");
    let mut naive_256 = 0;
    for (n, d, naive) in [(256, d_t, true), (256, d_t, false), (1024, d_t, false)] {
        let (peak, s) = gd_memory(n, d, naive);
        if naive {
            naive_256 = peak;
        }
        let form = if naive {
            "naive (N×D×N)"
        } else {
            "clipkd (matmul)"
        };
        println!("| {n} | {d} | {form} | {:.1} | {s:.3} |", peak as f64 / MIB);
    }
    let (n, d) = (1024usize, d_t);
    let ndn = (n * d * n * 4) as f64 / MIB;
    println!(
        "| {n} | {d} | naive (N×D×N) | ≈ {:.0} (computed: the N = 256 peak × (1024/256)²) | not run |",
        naive_256 as f64 * 16.0 / MIB
    );
    println!(
        "\nOne N×D×N f32 tensor at N = {n}, D = {d} is {ndn:.0} MiB; each `get_grad` makes two (the \
         repeat and the product) and autograd keeps the student's for backward."
    );
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
