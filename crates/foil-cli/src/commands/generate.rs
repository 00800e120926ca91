//! `foil generate queries` and `foil generate negatives`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use foil::encoder_spec::EncoderSpec;
use foil::generate::negatives::{NegativeMode, NegativesConfig};
use foil::generate::queries::{QueriesConfig, RoundTrip, Selection};
use foil::generate::{GeneratorSpec, Sampling, StepStats};
use foil_candle::EncoderOptions;
use foil_core::SamplingParams;

use super::common_args::{InputArgs, RunArgs};
use super::failures::MaxFailed;
use super::mine::FormatArg;

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write synthetic queries for the passages of a BEIR corpus (InPars-style prompts),
    /// filtered (unparseable, empty, too long, copies, duplicates, round trip), as a BEIR split.
    Queries(QueriesArgs),
    /// Write corpus-free hard negatives for the (query, positive) pairs of a split, from the
    /// query alone (two steps) or from the query and its positive.
    Negatives(NegativesArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    command: GenerateCommand,
}

/// The flags that choose and drive a generator.
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    /// `local:PATH_OR_NAME` (a GGUF file, or `smollm2` / `qwen` as installed by
    /// scripts/fetch-models.sh) or `openai` (with --base-url and --model).
    #[arg(long)]
    generator: String,
    /// The OpenAI-compatible server (with or without /v1), for --generator openai.
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// The model name the server knows, for --generator openai.
    #[arg(long)]
    model: Option<String>,
    /// The environment variable that holds the server's API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// Requests in flight at once to the server.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds allowed for one request, from connecting to the last byte of the answer.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Retries of a request after a 408, 429, 5xx, timeout or connection error.
    #[arg(long, default_value_t = 5)]
    max_retries: u32,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = SamplingParams::default().temperature)]
    temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    #[arg(long, default_value_t = SamplingParams::default().top_p)]
    top_p: f32,
    /// The most tokens generated per request (default: 64 for queries, 256 for negatives).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// A built-in template (zero-shot, few-shot, query-only, query-positive) or a template
    /// file (see crates/foil/templates/).
    #[arg(long)]
    template: Option<String>,
    /// Seed of every request (each gets one derived from it and its item) and of --sample.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Requests handed to the generator at once (a local model decodes them together); each
    /// batch's answers are appended to the cache together.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// The generation cache file (default: <output>/cache.jsonl); reruns skip what it holds.
    #[arg(long)]
    cache: Option<PathBuf>,
    #[command(flatten)]
    runtime: RunArgs,
    #[command(flatten)]
    policy: InputArgs,
    /// Failed requests the run may end with and still exit 0: a count or a share (`5%`).
    /// Beyond it the run exits 3; its output holds what succeeded and a rerun resumes.
    #[arg(long, default_value = "0", value_name = "N|P%")]
    max_failed: MaxFailed,
}

impl GeneratorArgs {
    fn spec(&self) -> anyhow::Result<GeneratorSpec> {
        if let Some(model) = self.generator.strip_prefix("local:") {
            if model.is_empty() {
                anyhow::bail!("--generator local: needs a GGUF path or a model name");
            }
            return Ok(GeneratorSpec::Local {
                model: PathBuf::from(model),
                threads: self.runtime.threads,
                max_batch: self.batch_size,
            });
        }
        if self.generator != "openai" {
            anyhow::bail!(
                "--generator must be local:PATH_OR_NAME or openai, not {:?}",
                self.generator
            );
        }
        let (Some(base_url), Some(model)) = (&self.base_url, &self.model) else {
            anyhow::bail!("--generator openai needs --base-url and --model");
        };
        Ok(GeneratorSpec::Openai {
            base_url: base_url.clone(),
            model: model.clone(),
            api_key_env: self.api_key_env.clone(),
            concurrency: self.concurrency,
            timeout_secs: self.timeout,
            max_retries: self.max_retries,
        })
    }

    fn sampling(&self, default_max_tokens: usize) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens.unwrap_or(default_max_tokens),
        }
    }
}

/// The built-in few-shot template of each query style.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum QueryStyleArg {
    /// Questions, keywords and short statements (template `few-shot`).
    Mixed,
    /// Short questions (`few-shot-question`).
    Question,
    /// Three to six keywords (`few-shot-keywords`).
    Keywords,
    /// Short statements the passage supports or refutes (`few-shot-claim`).
    Claim,
}

impl QueryStyleArg {
    fn template(self) -> &'static str {
        match self {
            QueryStyleArg::Mixed => "few-shot",
            QueryStyleArg::Question => "few-shot-question",
            QueryStyleArg::Keywords => "few-shot-keywords",
            QueryStyleArg::Claim => "few-shot-claim",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoundTripArg {
    Bm25,
    Dense,
    None,
}

#[derive(Debug, Args)]
pub struct QueriesArgs {
    /// BEIR folder whose corpus.jsonl gets queries (it stays the corpus of the output split).
    #[arg(long)]
    data: PathBuf,
    /// Output folder: queries.jsonl, qrels/<split>.tsv, rejected.jsonl, manifest.json, cache.jsonl.
    #[arg(long)]
    output: PathBuf,
    /// The name of the qrels split written.
    #[arg(long, default_value = "train")]
    split: String,
    /// Queries generated per passage.
    #[arg(long, default_value_t = 1)]
    per_passage: usize,
    /// Only the first N passages of the corpus.
    #[arg(long, conflicts_with = "sample")]
    limit: Option<usize>,
    /// N passages drawn with --seed (kept in corpus order).
    #[arg(long)]
    sample: Option<usize>,
    /// The style of the built-in few-shot examples (ignored with --template).
    #[arg(long, value_enum, default_value = "mixed")]
    query_style: QueryStyleArg,
    /// Your own examples instead of the template's: a JSON Lines file of
    /// {"passage": …, "query": …} pairs, best taken from the target corpus and its users.
    #[arg(long)]
    examples: Option<PathBuf>,
    /// Cut passages to this many words in the prompt (shorter prompts, faster generation).
    #[arg(long)]
    max_passage_words: Option<usize>,
    /// Keep only this share (0–1] of the queries that pass the text filters: those with the
    /// highest mean token log-probability (InPars' filter).
    #[arg(long)]
    keep_logprob: Option<f32>,
    /// Reject queries with more words than this.
    #[arg(long, default_value_t = 40)]
    max_query_words: usize,
    /// Reject queries whose word 3-grams (words, below three words) are found in the passage
    /// at this share or more.
    #[arg(long, default_value_t = 0.75)]
    max_copy_overlap: f32,
    /// Check only queries of at least this many words for copying (short queries naturally
    /// reuse the passage's terms).
    #[arg(long, default_value_t = 10)]
    copy_min_words: usize,
    /// Keep only queries that find their passage in the top --round-trip-k of this retriever.
    #[arg(long, value_enum, default_value = "bm25")]
    round_trip: RoundTripArg,
    /// How deep the round trip looks for the passage.
    #[arg(long, default_value_t = 10)]
    round_trip_k: usize,
    /// The bi-encoder of --round-trip dense (a folder or an installed model name).
    #[arg(long)]
    round_trip_model: Option<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    generator: GeneratorArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Two steps from the query alone: describe a hard negative, then write it.
    QueryOnly,
    /// From the query and its positive.
    QueryPositive,
}

#[derive(Debug, Args)]
pub struct NegativesArgs {
    /// BEIR folder with queries.jsonl and qrels/<split>.tsv (e.g. `foil generate queries`' output).
    #[arg(long)]
    data: PathBuf,
    /// The corpus holding the positives (default: <data>/corpus.jsonl).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// The qrels split whose (query, positive) pairs get negatives.
    #[arg(long, default_value = "train")]
    split: String,
    /// Output folder.
    #[arg(long)]
    output: PathBuf,
    /// How negatives are prompted.
    #[arg(long, value_enum, default_value = "query-only")]
    mode: ModeArg,
    /// Negatives generated per query (query-only) or per (query, positive) (query-positive).
    #[arg(long, default_value_t = 1)]
    per_query: usize,
    /// Only the first N queries (in id order).
    #[arg(long)]
    limit: Option<usize>,
    /// Reject negatives with fewer words than this.
    #[arg(long, default_value_t = 20)]
    min_words: usize,
    /// Reject negatives whose word 3-grams are found in the query or a positive at this share
    /// or more.
    #[arg(long, default_value_t = 0.5)]
    max_copy_overlap: f32,
    /// Training formats (repeat or comma-separate); negatives.jsonl is always written.
    #[arg(
        long = "format",
        value_enum,
        value_delimiter = ',',
        default_value = "n-tuple"
    )]
    formats: Vec<FormatArg>,
    /// Also write each format as Parquet.
    #[arg(long)]
    parquet: bool,
    /// N of the n-tuple formats (default: --per-query).
    #[arg(long)]
    num_negatives: Option<usize>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    generator: GeneratorArgs,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        GenerateCommand::Queries(a) => queries(a),
        GenerateCommand::Negatives(a) => negatives(a),
    }
}

fn failed(stats: &[&StepStats]) -> u64 {
    stats.iter().flat_map(|s| s.failed.values()).sum::<u64>()
}

fn queries(args: QueriesArgs) -> anyhow::Result<ExitCode> {
    let g = &args.generator;
    let round_trip = match args.round_trip {
        RoundTripArg::None => RoundTrip::None,
        RoundTripArg::Bm25 => RoundTrip::Bm25,
        RoundTripArg::Dense => {
            let model = args
                .round_trip_model
                .clone()
                .context("--round-trip dense needs --round-trip-model")?;
            RoundTrip::Dense {
                encoder: EncoderSpec::Local {
                    model,
                    options: EncoderOptions::default(),
                },
            }
        }
    };
    let config = QueriesConfig {
        data: args.data,
        output: args.output,
        split: args.split,
        generator: g.spec()?,
        template: g
            .template
            .clone()
            .unwrap_or_else(|| args.query_style.template().into()),
        examples: args.examples,
        max_passage_words: args.max_passage_words,
        keep_logprob: args.keep_logprob,
        per_passage: args.per_passage,
        selection: match (args.limit, args.sample) {
            (Some(n), _) => Selection::First(n),
            (None, Some(n)) => Selection::Sample(n),
            (None, None) => Selection::All,
        },
        seed: g.seed,
        sampling: g.sampling(64),
        max_query_words: args.max_query_words,
        max_copy_overlap: args.max_copy_overlap,
        copy_min_words: args.copy_min_words,
        round_trip,
        round_trip_k: args.round_trip_k,
        cache: g.cache.clone(),
        embedding_cache: Some(foil::embedding_cache::default_cache_dir()),
        batch_size: g.batch_size,
        threads: g.runtime.threads,
        skip_invalid: g.policy.skip_invalid,
    };
    let s = foil::generate::queries::run(&config, &g.runtime.progress())
        .context("generating queries failed")?;
    if args.json {
        let out = serde_json::json!({
            "passages": s.passages,
            "requests": s.requests,
            "queries": s.queries,
            "rejected": s.rejected.rejected,
            "cache_hits": s.stats.cached,
            "generated": s.stats.generated,
            "failed": failed(&[&s.stats]),
            "cache_dropped_partial_lines": s.cache_dropped_partial,
        });
        println!("{out}");
    }
    eprintln!(
        "generate queries: {} passages, {} requests ({} cached, {} generated, {} failed): {} queries kept, {} rejected ({}); {:.2}s -> {}",
        s.passages,
        s.requests,
        s.stats.cached,
        s.stats.generated,
        failed(&[&s.stats]),
        s.queries,
        s.rejected.total(),
        s.rejected.summary(),
        s.seconds,
        config.output.display()
    );
    Ok(g.max_failed
        .exit_code("generate queries", failed(&[&s.stats]), s.requests as u64))
}

fn negatives(args: NegativesArgs) -> anyhow::Result<ExitCode> {
    let g = &args.generator;
    let formats = args.formats.iter().map(|&f| f.into()).collect();
    let config = NegativesConfig {
        data: args.data,
        corpus: args.corpus,
        split: args.split,
        output: args.output,
        generator: g.spec()?,
        mode: match args.mode {
            ModeArg::QueryOnly => NegativeMode::QueryOnly,
            ModeArg::QueryPositive => NegativeMode::QueryPositive,
        },
        template: g.template.clone(),
        per_query: args.per_query,
        limit: args.limit,
        seed: g.seed,
        sampling: g.sampling(256),
        describe_sampling: g.sampling(96),
        min_words: args.min_words,
        max_copy_overlap: args.max_copy_overlap,
        formats,
        parquet: args.parquet,
        num_negatives: args.num_negatives,
        cache: g.cache.clone(),
        batch_size: g.batch_size,
        skip_invalid: g.policy.skip_invalid,
    };
    let s = foil::generate::negatives::run(&config, &g.runtime.progress())
        .context("generating negatives failed")?;
    if args.json {
        let out = serde_json::json!({
            "queries": s.queries,
            "pairs": s.pairs,
            "items": s.items,
            "negatives": s.negatives,
            "rejected": s.rejected.rejected,
            "kept_pairs": s.kept_pairs,
            "cache_hits": s.describe.cached + s.write.cached,
            "generated": s.describe.generated + s.write.generated,
            "failed": failed(&[&s.describe, &s.write]),
        });
        println!("{out}");
    }
    eprintln!(
        "generate negatives: {} queries, {} pairs, {} negatives asked: {} kept, {} rejected ({}); {} requests cached, {} generated, {} failed; {} pairs with enough negatives; {}; {:.2}s -> {}",
        s.queries,
        s.pairs,
        s.items,
        s.negatives,
        s.rejected.total(),
        s.rejected.summary(),
        s.describe.cached + s.write.cached,
        s.describe.generated + s.write.generated,
        failed(&[&s.describe, &s.write]),
        s.kept_pairs,
        s.skips.summary(),
        s.seconds,
        config.output.display()
    );
    let requests = s.describe.cached
        + s.describe.generated
        + s.write.cached
        + s.write.generated
        + failed(&[&s.describe, &s.write]) as usize;
    Ok(g.max_failed.exit_code(
        "generate negatives",
        failed(&[&s.describe, &s.write]),
        requests as u64,
    ))
}
