//! Progress display: an `indicatif` bar with ETA, images/s and the latest loss terms when
//! stderr is a terminal, plain log lines otherwise, or nothing.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Always the bar (drawn only on a terminal).
    Bar,
    /// One line per logged step on stderr.
    Lines,
    /// Nothing (errors still go to the caller).
    Quiet,
}

/// The progress display of a run.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Progress {
    /// A display for a run of `total` optimizer steps, `done` of which are done.
    pub fn new(mode: ProgressMode, total: u64, done: u64) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Lines,
            m => m,
        };
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} step {pos}/{len} [{elapsed_precise} < {eta_precise}] {wide_bar} {msg}",
                )
                .expect("a valid progress template")
                .progress_chars("=> "),
            );
            bar.set_position(done);
            bar.reset_eta();
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        Progress {
            bar,
            lines: mode == ProgressMode::Lines,
        }
    }

    /// Moves the bar to `step`.
    pub fn set_step(&self, step: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
        }
    }

    /// Shows the latest numbers (`message`: images/s and loss terms) on the bar, or prints
    /// them as a line.
    pub fn report(&self, step: u64, total: u64, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_string()),
            None if self.lines => eprintln!("step {step}/{total} {message}"),
            None => {}
        }
    }

    /// Prints a line (above the bar when there is one).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.lines => eprintln!("{line}"),
            None => {}
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
