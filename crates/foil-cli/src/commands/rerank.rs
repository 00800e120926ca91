//! `foil rerank`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use foil::rerank::RerankConfig;
use foil_candle::CrossEncoderOptions;

use super::common_args::RunArgs;

#[derive(Debug, Args)]
pub struct RerankArgs {
    /// BEIR folder with the corpus and queries of the run.
    #[arg(long)]
    data: PathBuf,
    /// The TREC run to rerank.
    #[arg(long)]
    run: PathBuf,
    /// The cross-encoder (BertForSequenceClassification folder, one logit).
    #[arg(long)]
    cross_encoder: PathBuf,
    /// Documents rescored per query (the rest are left out of the output).
    #[arg(long, default_value_t = 100)]
    top_k: usize,
    /// The reranked run.
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = CrossEncoderOptions::default().batch_size)]
    batch_size: usize,
    /// Longest (query, passage) pair in tokens (default 512).
    #[arg(long)]
    max_length: Option<usize>,
    /// cpu (fused CPU kernels), cuda or cuda:N (needs a build with --features cuda).
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    runtime: RunArgs,
}

pub fn run(args: RerankArgs) -> anyhow::Result<ExitCode> {
    let config = RerankConfig {
        data: args.data,
        run: args.run,
        cross_encoder: args.cross_encoder,
        top_k: args.top_k,
        output: args.output,
        batch_size: args.batch_size,
        max_length: args.max_length,
        threads: args.runtime.threads,
        device: args.device,
    };
    let s = foil::rerank::run(&config, &args.runtime.progress()).context("reranking failed")?;
    eprintln!(
        "rerank: {} queries, {} pairs in {:.1}s ({:.0} pairs/s) -> {}",
        s.queries,
        s.pairs,
        s.seconds,
        s.pairs as f64 / s.seconds.max(1e-9),
        config.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
