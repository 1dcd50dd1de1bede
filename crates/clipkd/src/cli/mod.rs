//! The `clipkd` command line.

pub mod backend;
pub mod bench;
pub mod completions;
#[cfg(feature = "demo")]
pub mod demo;
pub mod distill;
pub mod download;
pub mod embed;
pub mod eval;
pub mod export;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod kernel_cache;
pub mod model_args;
pub mod models;
pub mod orchestrator;
pub mod output;
pub mod run_options;
pub mod teacher_cache;
pub mod train;

use clap::{Parser, Subcommand};

/// clipkd distills small CLIP models from large frozen teachers (CLIP-KD: CRD, FD, MFD, GD,
/// ICL, AFD), reads and writes open_clip checkpoints, and evaluates them.
#[derive(Debug, Parser)]
#[command(
    name = "clipkd",
    version,
    about = "clipkd distills small CLIP models from large frozen teachers (CLIP-KD), reads and \
             writes open_clip checkpoints, and evaluates them",
    long_about = None,
    after_help = "`clipkd <COMMAND> --help` explains a command; `clipkd demo` shows \
                  distillation at work in a few minutes on a CPU, with no download."
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a teacher and a student with and without CLIP-KD on rendered shapes; compare.
    ///
    /// The built-in demonstration (no download): render a captioned-shapes dataset, train a
    /// teacher, then a student without and with CLIP-KD, and compare them.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// List the bundled model configs (open_clip names) with their sizes.
    Models(models::ModelsArgs),
    /// Embed images and captions with a CLIP model into a safetensors file.
    Embed(embed::EmbedArgs),
    /// Fetch pretrained weights into the Hugging Face cache (for runs offline).
    Download(download::DownloadArgs),
    /// Measure the speed of the CLIP-KD step on a device.
    Bench(bench::BenchArgs),
    /// Evaluate a CLIP checkpoint: zero-shot classification and retrieval, to JSON.
    Eval(eval::EvalArgs),
    /// Distill a student CLIP from a frozen teacher (CLIP-KD).
    Distill(distill::DistillArgs),
    /// Train a student CLIP without a teacher (the no-KD baseline).
    Train(train::TrainArgs),
    /// Export a checkpoint's student as an open_clip state dict (safetensors).
    Export(export::ExportArgs),
    /// Draw a run's plots (loss terms, learning rate, evaluation metrics).
    Plot(run_options::PlotArgs),
    /// Serve the orchestrator that the nodes of a multi-machine run join.
    Orchestrator(orchestrator::OrchestratorArgs),
    /// Store a teacher's outputs once, for `distill --teacher-cache`.
    TeacherCache(teacher_cache::TeacherCacheArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff).
    Man(completions::ManArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args),
        Command::Models(args) => models::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Download(args) => download::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Distill(args) => distill::run(args),
        Command::Train(args) => train::run(args),
        Command::Export(args) => export::run(args),
        Command::Plot(args) => run_options::plot(args),
        Command::Orchestrator(args) => orchestrator::run(args),
        Command::TeacherCache(args) => teacher_cache::run(args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    }
}
