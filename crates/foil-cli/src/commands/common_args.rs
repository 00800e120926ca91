//! Flags that most commands share, declared once and flattened into each command's flags.

use clap::Args;

use crate::progress::Bars;

/// `--threads` and `--no-progress`: how a long-running command uses the machine and the
/// terminal.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker threads (default: the config file's `threads` where the command reads one, else
    /// all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Hide progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

impl RunArgs {
    /// Progress bars on stderr, unless `--no-progress`.
    pub fn progress(&self) -> Bars {
        Bars::new(self.no_progress)
    }
}

/// `--skip-invalid`: what a command does with an invalid input record.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Skip invalid input records (counted in the summary and the manifest) instead of failing
    /// at the first, whose file and line the error names.
    #[arg(long)]
    pub skip_invalid: bool,
}
