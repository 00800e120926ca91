//! `foil experiment`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use foil::experiment::ExperimentConfig;

use super::common_args::RunArgs;

#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// The experiment's TOML file (see README: data, encoder, llm, negatives.methods, train…).
    #[arg(long)]
    config: PathBuf,
    /// Output folder; a rerun reuses every step whose inputs and settings did not change.
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    runtime: RunArgs,
}

pub fn run(args: ExperimentArgs) -> anyhow::Result<ExitCode> {
    let mut config = ExperimentConfig::read(&args.config)?;
    if args.runtime.threads.is_some() {
        config.threads = args.runtime.threads;
    }
    let s = foil::experiment::run(&config, &args.output, &args.runtime.progress())
        .context("experiment failed")?;
    println!("| pipeline | nDCG@10 | P@10 | Recall@100 | ECI (reconstruction) |");
    println!("|---|---:|---:|---:|---:|");
    for r in &s.results {
        let m = |k| r.mean(k);
        println!(
            "| {} | {:.4} | {:.4} | {:.4} | {} |",
            r.name,
            m(foil_core::metrics::MeasureAt {
                measure: foil_core::metrics::Measure::Ndcg,
                k: 10
            }),
            m(foil_core::metrics::MeasureAt {
                measure: foil_core::metrics::Measure::P,
                k: 10
            }),
            m(foil_core::metrics::MeasureAt {
                measure: foil_core::metrics::Measure::Recall,
                k: 100
            }),
            r.stats
                .as_ref()
                .map(|s| format!("{:.4}", s.eci))
                .unwrap_or_else(|| "–".into())
        );
    }
    eprintln!(
        "experiment: {} steps run, {} reused; {:.1}s -> {}",
        s.steps_run,
        s.steps_reused,
        s.seconds,
        s.report.display()
    );
    Ok(ExitCode::SUCCESS)
}
