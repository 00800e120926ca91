//! `foil encode`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use foil::encode::EncodeConfig;
use foil_core::TextKind;

use super::common_args::{InputArgs, RunArgs};
use super::encoder_args::{CacheArgs, EncoderArgs};

#[derive(Debug, Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    encoder: EncoderArgs,
    /// A BEIR corpus.jsonl (passages: title + " " + text) or queries.jsonl.
    #[arg(long)]
    input: PathBuf,
    /// Whether the texts are passages or queries (they get different prompts).
    #[arg(long, value_enum, default_value = "passage")]
    kind: TextKind,
    /// Output folder: header.json, ids.jsonl, vectors.f32 (row-major little-endian f32),
    /// manifest.json. A killed run resumes from what it committed.
    #[arg(long)]
    output: PathBuf,
    /// Encode only the first N records.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    runtime: RunArgs,
    #[command(flatten)]
    policy: InputArgs,
    /// Texts per committed chunk (a killed run loses at most one chunk).
    #[arg(long, default_value_t = foil::encode::CHUNK)]
    chunk_size: usize,
    /// Print a JSON object with the counts and timings on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EncodeArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let encoder = args.encoder.spec().context("give --model")?;
    let config = EncodeConfig {
        encoder,
        input: args.input,
        kind: args.kind,
        output: args.output,
        limit: args.limit,
        cache: args.cache.dir(),
        threads: args.runtime.threads,
        skip_invalid: args.policy.skip_invalid,
        chunk: args.chunk_size,
    };
    let s = foil::encode::run(&config, &args.runtime.progress()).context("encode failed")?;
    let per_s = s.cache.encoded as f64 / s.encode_seconds.max(1e-9);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "texts": s.texts, "resumed": s.resumed, "cache_hits": s.cache.hits,
                "encoded": s.cache.encoded, "dim": s.dim, "encode_seconds": s.encode_seconds,
                "passages_per_s": per_s,
            })
        );
    }
    eprintln!(
        "encode: {} texts ({} resumed, {} from cache, {} encoded) in {:.2}s, {:.1} passages/s, dim {}, {}, {:.2}s total -> {}",
        s.texts,
        s.resumed,
        s.cache.hits,
        s.cache.encoded,
        s.encode_seconds,
        per_s,
        s.dim,
        s.skips.summary(),
        started.elapsed().as_secs_f64(),
        config.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
