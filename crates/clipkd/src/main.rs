//! The `clipkd` binary: see `clipkd --help`.

mod cli;

use std::io::Write;

use clap::Parser;

fn main() -> std::process::ExitCode {
    restore_sigpipe();
    init_logger();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain: what failed, then why (file, key, field...).
            eprintln!("error: {}", error_chain(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Lets a closed stdout (`clipkd distill --list-presets | head -1`) end the process quietly,
/// as for any Unix filter, instead of `println!` panicking on the broken pipe (exit 101).
///
/// Rust ignores SIGPIPE before `main`; restoring its default action covers every `print!` of
/// every command at once, where handling `ErrorKind::BrokenPipe` would need each write site
/// to go through a fallible writer. Nothing else writes to a pipe it could lose (progress and
/// errors go to stderr), and checkpoints are written atomically, so ending at once is safe.
/// Elsewhere (Windows) a broken pipe still fails the write.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread exists; SIG_DFL is a valid
    // action for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Prints the libraries' log records on stderr: `warning: ...` and `error: ...` by default,
/// more with `RUST_LOG` (`RUST_LOG=info`, `RUST_LOG=clipkd_data=debug`, `RUST_LOG=off`).
///
/// While a training progress bar is drawn (indicatif, on a terminal) a record may start on
/// the bar's line until the bar redraws on its next tick; printing above the bar would need
/// the logger to hold the bar (`ProgressBar::suspend`).
fn init_logger() {
    let env = env_logger::Env::default().default_filter_or("warn");
    let _ = env_logger::Builder::from_env(env)
        .format(|out, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            writeln!(out, "{level}: {}", record.args())
        })
        .try_init();
}

/// `err` and its causes joined by `: `, each cause once.
///
/// The project's error types name their cause in their own message and also expose it as
/// `source()` (so that `to_string()` alone says what and why); anyhow's `{:#}` would then
/// print that cause twice, or three times through a context. A cause whose text is already
/// in the line is skipped.
fn error_chain(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
