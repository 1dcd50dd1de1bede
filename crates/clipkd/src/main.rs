//! The `clipkd` binary: see `clipkd --help`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain: what failed, then why (file, key, field...).
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
