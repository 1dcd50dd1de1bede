//! The `clipkd` command line.

pub mod backend;
pub mod bench;
#[cfg(feature = "demo")]
pub mod demo;
pub mod distill;
pub mod embed;
pub mod eval;
pub mod export;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod kernel_cache;
pub mod models;
pub mod orchestrator;
pub mod run_options;
pub mod teacher_cache;
pub mod train;

use clap::{Parser, Subcommand};

/// Distill small CLIP models from large teachers (CLIP-KD), in pure Rust.
#[derive(Debug, Parser)]
#[command(name = "clipkd", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The built-in demonstration (no download): render a captioned-shapes dataset, train a
    /// teacher, then a student without and with CLIP-KD, and compare them.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// List the bundled model configs (open_clip names) with their sizes.
    Models(models::ModelsArgs),
    /// Embed images and captions with a CLIP model (open_clip checkpoint) into a safetensors file.
    Embed(embed::EmbedArgs),
    /// Measure the speed of the CLIP-KD step (teacher forward, student step) on a device.
    Bench(bench::BenchArgs),
    /// Evaluate a CLIP checkpoint: zero-shot classification and image-text retrieval, to JSON.
    Eval(eval::EvalArgs),
    /// Distill a student CLIP from a frozen teacher (CLIP-KD), from a run config.
    Distill(distill::DistillArgs),
    /// Train a student CLIP without a teacher (the no-KD baseline), from a run config.
    Train(train::TrainArgs),
    /// Export a checkpoint's student as an open_clip state dict (safetensors).
    Export(export::ExportArgs),
    /// Draw PNG plots of a run's loss terms, learning rate and evaluation metrics.
    Plot(run_options::PlotArgs),
    /// Serve the orchestrator the nodes of a run on several machines register with.
    Orchestrator(orchestrator::OrchestratorArgs),
    /// Run a teacher once over the training data and store its outputs for `distill
    /// --teacher-cache`.
    TeacherCache(teacher_cache::TeacherCacheArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args),
        Command::Models(args) => models::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Distill(args) => distill::run(args),
        Command::Train(args) => train::run(args),
        Command::Export(args) => export::run(args),
        Command::Plot(args) => run_options::plot(args),
        Command::Orchestrator(args) => orchestrator::run(args),
        Command::TeacherCache(args) => teacher_cache::run(args),
    }
}
