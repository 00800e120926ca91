//! `foil demo`: foil's main job on the built-in dataset, end to end, with nothing to download.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use foil::eval::{evaluate_files, evaluation_json, evaluation_table};
use foil::search::{RetrieverKind, SearchConfig};
use foil_bm25::Bm25Params;
use foil_core::fsutil::write_atomic;
use foil_core::metrics::{EvalConfig, Measure};
use foil_core::Similarity;
use foil_core::{InputPolicy, SkipReport};

use super::common_args::RunArgs;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the dataset, runs and results.
    #[arg(long, default_value = "foil-demo")]
    output: PathBuf,
    #[command(flatten)]
    runtime: RunArgs,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // A second demo writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(&args.output)?;
    let data = foil::demo::write_dataset(&args.output.join("data"))
        .context("cannot write the demo dataset")?;
    tracing::info!(data = %data.display(), "wrote the built-in demo dataset (120 passages, 60 queries)");

    let run = args.output.join("runs/bm25-test.trec");
    let config = SearchConfig {
        data: data.clone(),
        split: "test".into(),
        retriever: RetrieverKind::Bm25,
        top_k: 100,
        output: run.clone(),
        bm25: Bm25Params::default(),
        index: Some(args.output.join("index/bm25.idx")),
        encoder: None,
        corpus_embeddings: None,
        cache: None,
        similarity: Similarity::Cosine,
        threads: args.runtime.threads,
        skip_invalid: false,
        tag: "foil-bm25".into(),
    };
    let summary = foil::search::run(&config, &args.runtime.progress()).context("search failed")?;

    let eval_config = EvalConfig {
        measures: vec![
            Measure::Ndcg,
            Measure::Recall,
            Measure::P,
            Measure::Mrr,
            Measure::Map,
        ],
        cutoffs: vec![1, 10, 100],
        ..EvalConfig::default()
    };
    let qrels = data.join("qrels/test.tsv");
    let eval = evaluate_files(
        &qrels,
        &run,
        &eval_config,
        InputPolicy::default(),
        &mut SkipReport::default(),
    )?;
    let json = serde_json::to_vec_pretty(&evaluation_json(&eval, true))?;
    let eval_path = args.output.join("eval/bm25-test.json");
    write_atomic(&eval_path, &json)?;

    println!(
        "BM25 on the demo test split ({} queries, {} passages):\n",
        eval.num_queries(),
        summary.documents
    );
    print!("{}", evaluation_table(&eval));
    eprintln!(
        "demo: {} documents, {} queries, run {}, metrics {}, {:.2}s",
        summary.documents,
        summary.queries,
        run.display(),
        eval_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
