//! `clipkd completions SHELL` and `clipkd man`: shell completions and a man page, generated
//! from the command line's own definitions.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// Options of `clipkd completions`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  clipkd completions bash > ~/.local/share/bash-completion/completions/clipkd
  clipkd completions zsh > ~/.zfunc/_clipkd
  clipkd completions fish > ~/.config/fish/completions/clipkd.fish")]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish, powershell.
    pub shell: Shell,
}

/// Prints the completion script for `args.shell`.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "clipkd", &mut std::io::stdout());
    Ok(())
}

/// Options of `clipkd man`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Example:
  clipkd man > clipkd.1 && man ./clipkd.1")]
pub struct ManArgs {}

/// Prints the man page (roff) of `clipkd`.
pub fn man(_args: ManArgs) -> anyhow::Result<()> {
    let page = clap_mangen::Man::new(Cli::command());
    page.render(&mut std::io::stdout())?;
    Ok(())
}
