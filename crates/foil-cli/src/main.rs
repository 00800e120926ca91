//! The `foil` command: parses flags, sets up logging and progress, calls a stage, and prints
//! one summary line. Exit codes: 0 success, 1 a check the user asked for failed, 2 error,
//! 3 incomplete: more LLM requests failed than `--max-failed` allows (a rerun resumes).

mod commands;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

use commands::Command;

/// foil builds, judges and uses training data for dense retrievers.
#[derive(Debug, Parser)]
#[command(name = "foil", version, about, propagate_version = true)]
struct Cli {
    /// Log more (-v: debug, -vv: trace); the FOIL_LOG environment variable overrides this.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Log only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FOIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
}

fn main() -> ExitCode {
    foil_core::process::keep_freed_memory();
    let matches = Cli::command().long_version(long_version()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Command::Completions { shell } = cli.command {
        return print_completions(shell);
    }
    init_logging(cli.verbose, cli.quiet);
    // `foil experiment` takes its settings from a TOML file, whose names the errors keep.
    let flags = !matches!(cli.command, Command::Experiment(_));
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("foil: {}", describe(&err, flags));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line (as `{:#}` prints them); with `flags`, a setting the
/// library names by its configuration field is shown as the flag that sets it.
fn describe(err: &anyhow::Error, flags: bool) -> String {
    let causes: Vec<String> = err
        .chain()
        .map(|cause| match cause.downcast_ref::<foil_core::Error>() {
            Some(foil_core::Error::Config { field, message }) if flags => {
                format!("{}: {message}", flag_of(field))
            }
            _ => cause.to_string(),
        })
        .collect();
    causes.join(": ")
}

/// The flag that sets a configuration field: `per_query` → `--per-query`,
/// `eval.data` → `--eval-data`; the encoder is chosen by `--model`.
fn flag_of(field: &str) -> String {
    match field {
        "encoder" => "--model".into(),
        f => format!("--{}", f.replace(['.', '_'], "-")),
    }
}

/// Writes the completion script for `shell` to stdout; a reader that stops early (`| head`)
/// is not an error.
fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    use std::io::Write as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "foil", &mut script);
    match std::io::stdout().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("foil: cannot write the completion script: {e}");
            ExitCode::from(2)
        }
    }
}

/// `foil --version`: the version, the commit it was built from, its features and the kernels
/// this CPU gets.
fn long_version() -> &'static str {
    let text = format!(
        "{} (commit {}, {} build)\nfeatures: cuda {}\nencoder kernels: {}\nGGUF kernels: {}",
        env!("CARGO_PKG_VERSION"),
        env!("FOIL_GIT_COMMIT"),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        if cfg!(feature = "cuda") { "on" } else { "off" },
        foil_candle::kernels::instruction_set(),
        foil_llm::quantized_kernels(),
    );
    Box::leak(text.into_boxed_str())
}
