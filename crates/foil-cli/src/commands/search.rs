//! `foil search`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use foil::search::{RetrieverKind, SearchConfig};
use foil_bm25::Bm25Params;
use foil_core::Similarity;

use super::common_args::{InputArgs, RunArgs};
use super::encoder_args::{CacheArgs, EncoderArgs};

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).
    #[arg(long)]
    data: PathBuf,
    /// The split whose judged queries are searched.
    #[arg(long, default_value = "test")]
    split: String,
    /// The retriever.
    #[arg(long, value_enum, default_value = "bm25")]
    retriever: RetrieverKind,
    /// Number of documents retrieved per query.
    #[arg(long, default_value_t = 1000)]
    top_k: usize,
    /// The TREC run file to write (its manifest goes to <OUTPUT>.manifest.json).
    #[arg(long)]
    output: PathBuf,
    /// BM25 term-frequency saturation k1 (Anserini's default).
    #[arg(long, default_value_t = Bm25Params::default().k1)]
    k1: f32,
    /// BM25 length normalization b (Anserini's default).
    #[arg(long, default_value_t = Bm25Params::default().b)]
    b: f32,
    /// BM25 index file: loaded when it was built from this corpus, otherwise built and saved.
    #[arg(long)]
    index: Option<PathBuf>,
    #[command(flatten)]
    runtime: RunArgs,
    #[command(flatten)]
    policy: InputArgs,
    /// The tag written in the run's last column.
    #[arg(long, default_value = "foil")]
    tag: String,
    #[command(flatten)]
    encoder: EncoderArgs,
    /// Dense: precomputed passage vectors (a folder written by `foil encode`).
    #[arg(long)]
    corpus_embeddings: Option<PathBuf>,
    /// Dense: similarity of query and passage vectors.
    #[arg(long, value_enum, default_value = "cosine")]
    similarity: Similarity,
    #[command(flatten)]
    cache: CacheArgs,
}

pub fn run(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let config = SearchConfig {
        data: args.data,
        split: args.split,
        retriever: args.retriever,
        top_k: args.top_k,
        output: args.output,
        bm25: Bm25Params {
            k1: args.k1,
            b: args.b,
        },
        index: args.index,
        encoder: args.encoder.spec(),
        corpus_embeddings: args.corpus_embeddings,
        cache: args.cache.dir(),
        similarity: args.similarity,
        threads: args.runtime.threads,
        skip_invalid: args.policy.skip_invalid,
        tag: args.tag,
    };
    let summary = foil::search::run(&config, &args.runtime.progress()).context("search failed")?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "search: {} documents ({} index/vectors in {:.2}s), {} queries, {} results in {:.2}s ({:.0} queries/s), {}, {:.2}s total -> {}",
        summary.documents,
        if summary.index_loaded { "loaded" } else { "built" },
        summary.index_seconds,
        summary.queries,
        summary.results,
        summary.search_seconds,
        summary.queries as f64 / summary.search_seconds.max(1e-9),
        summary.skips.summary(),
        seconds,
        config.output.display(),
    );
    Ok(ExitCode::SUCCESS)
}
