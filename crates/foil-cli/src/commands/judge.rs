//! `foil judge`: an LLM's relevance judgments of the top of a run, measured against the qrels.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use foil::judge::JudgeRunConfig;

use super::common_args::RunArgs;
use super::judge_args::JudgeArgs;

#[derive(Debug, Args)]
pub struct JudgeCmdArgs {
    /// BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).
    #[arg(long)]
    data: PathBuf,
    /// The split whose queries are judged (and whose qrels measure the judge).
    #[arg(long, default_value = "test")]
    split: String,
    /// A TREC run: its top --top-k documents per query are judged.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Documents judged per query from the run.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Also judge every positive of the qrels, found by the run or not.
    #[arg(long)]
    with_positives: bool,
    /// Only N queries of the split, drawn with --seed.
    #[arg(long)]
    sample: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    judge: JudgeArgs,
    /// Output folder: judgments.jsonl (query, document, rank, qrels grade, P(relevant)),
    /// run.trec (the judged documents ranked by P(relevant)), manifest.json.
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    runtime: RunArgs,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: JudgeCmdArgs) -> anyhow::Result<ExitCode> {
    let judge = args
        .judge
        .config(args.runtime.threads)?
        .context("give --judge MODEL (smollm2, qwen, a GGUF file, or openai)")?;
    let config = JudgeRunConfig {
        data: args.data,
        split: args.split,
        run: args.run,
        top_k: args.top_k,
        with_positives: args.with_positives,
        sample: args.sample,
        seed: args.seed,
        judge,
        output: args.output,
        threads: args.runtime.threads,
    };
    let s = foil::judge::run(&config, &args.runtime.progress()).context("judging failed")?;
    let failed: u64 = s.stats.failed.values().sum();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "queries": s.queries, "pairs": s.pairs, "judged": s.judged, "failed": s.stats.failed,
                "auc": s.auc, "positives": s.positives, "non_positives": s.non_positives,
                "non_positives_judged_relevant": s.non_positives_relevant,
                "cache_hits": s.stats.requests.cached, "seconds": s.seconds,
            })
        );
    }
    eprintln!(
        "judge: {} queries, {} pairs ({} judged, {} failed, {} from cache): AUC {} over {} positives and {} non-positives, {} of non-positives judged relevant; {:.1}s ({:.2} pairs/s) -> {}",
        s.queries,
        s.pairs,
        s.judged,
        failed,
        s.stats.requests.cached,
        s.auc.map_or("n/a".into(), |a| format!("{a:.4}")),
        s.positives,
        s.non_positives,
        s.non_positives_relevant
            .map_or("n/a".into(), |r| format!("{:.1}%", 100.0 * r)),
        s.seconds,
        s.stats.requests.generated as f64 / s.seconds.max(1e-9),
        config.output.display()
    );
    // A run that could not judge every pair it was asked to exits non-zero.
    Ok(args
        .judge
        .judge_max_failed
        .exit_code("judge", failed, s.pairs as u64))
}
