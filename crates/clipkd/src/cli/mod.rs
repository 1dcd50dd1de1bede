//! The `clipkd` command line.

pub mod backend;
pub mod bench;
pub mod embed;
pub mod eval;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod kernel_cache;

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
    /// Embed images and captions with a CLIP model (open_clip checkpoint) into a safetensors file.
    Embed(embed::EmbedArgs),
    /// Measure the speed of the CLIP-KD step (teacher forward, student step) on a device.
    Bench(bench::BenchArgs),
    /// Evaluate a CLIP checkpoint: zero-shot classification and image-text retrieval, to JSON.
    Eval(eval::EvalArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
    }
}
