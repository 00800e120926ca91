//! `foil inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use foil::encoder_spec::EncoderSpec;
use foil::formats::Format;
use foil::inspect::separability::{self, SeparabilityConfig};
use foil::inspect::{InspectConfig, Judge, DEFAULT_DELTAS, DEFAULT_RIDGE};
use foil_candle::EncoderOptions;

use super::common_args::{InputArgs, RunArgs};
use super::encoder_args::CacheArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Detect the format from the first record.
    Auto,
    /// foil's negatives.jsonl (ids and scores; texts from --data).
    Negatives,
    Triplet,
    NTuple,
    NTupleScores,
    LabeledPair,
    LabeledList,
    Flagembedding,
    Tevatron,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JudgeArg {
    /// The scores stored in the file by the model that mined it (negatives.jsonl,
    /// n-tuple-scores, FlagEmbedding with pos_scores/neg_scores); no model runs.
    Provenance,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The training file: foil's negatives.jsonl, or any training format `foil mine` writes
    /// (triplet, n-tuple, n-tuple-scores, labeled-pair, labeled-list, FlagEmbedding,
    /// Tevatron), as JSON Lines or Parquet.
    file: PathBuf,
    /// The training file's format.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// Judge with a bi-encoder (cosine similarity): a Hugging Face / sentence-transformers
    /// folder or the name of an installed model (e.g. all-MiniLM-L6-v2).
    #[arg(long, value_name = "NAME_OR_DIR")]
    judge_model: Option<PathBuf>,
    /// Judge with a cross-encoder (BertForSequenceClassification folder or installed name).
    #[arg(long, value_name = "NAME_OR_DIR", conflicts_with = "judge_model")]
    cross_encoder: Option<PathBuf>,
    /// Judge with the scores stored in the file instead of a model.
    #[arg(long, value_enum, conflicts_with_all = ["judge_model", "cross_encoder"])]
    judge: Option<JudgeArg>,
    /// The BEIR folder a negatives.jsonl was mined from (its corpus.jsonl and queries.jsonl
    /// give the texts a model judge needs); its corpus is also what the negatives'
    /// separability is measured against.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The bi-encoder that embeds negatives and corpus passages for separability (default:
    /// the --judge-model; without either, separability is skipped).
    #[arg(long, value_name = "NAME_OR_DIR")]
    separability_model: Option<PathBuf>,
    /// Warn when the separability AUC (negatives vs corpus passages) is at least this.
    #[arg(long, default_value_t = separability::DEFAULT_WARN)]
    separability_warn: f64,
    /// Separability uses at most this many distinct negatives (a seeded sample), and as many
    /// corpus passages.
    #[arg(long, default_value_t = separability::DEFAULT_MAX_PASSAGES)]
    separability_max: usize,
    /// Seed of the separability samples and folds.
    #[arg(long, default_value_t = separability::DEFAULT_SEED)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    output: PathBuf,
    /// Inspect only the examples of the first N distinct queries.
    #[arg(long)]
    max_queries: Option<usize>,
    /// Histogram bins.
    #[arg(long, default_value_t = foil::inspect::DEFAULT_BINS)]
    bins: usize,
    /// Texts (or pairs) per forward pass of the judge model.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Longest input in tokens (default: the model's).
    #[arg(long)]
    max_length: Option<usize>,
    /// cpu (fused CPU kernels), cuda or cuda:N for the judge model (needs a build with
    /// --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    runtime: RunArgs,
    #[command(flatten)]
    policy: InputArgs,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let bi_encoder = |model: &PathBuf| EncoderSpec::Local {
        model: model.clone(),
        options: EncoderOptions {
            batch_size: Some(args.batch_size),
            max_length: args.max_length,
            device: Some(args.device.clone()),
            ..EncoderOptions::default()
        },
    };
    let judge = match (&args.judge, &args.judge_model, &args.cross_encoder) {
        (Some(JudgeArg::Provenance), _, _) => Judge::Provenance,
        (None, Some(model), _) => Judge::BiEncoder {
            encoder: bi_encoder(model),
        },
        (None, None, Some(model)) => Judge::CrossEncoder {
            model: model.clone(),
            batch_size: args.batch_size,
            max_length: args.max_length,
            device: (args.device != "cpu").then(|| args.device.clone()),
        },
        (None, None, None) => anyhow::bail!(
            "choose a judge: --judge-model NAME_OR_DIR, --cross-encoder DIR or --judge provenance"
        ),
    };
    if args.bins == 0 {
        anyhow::bail!("--bins must be at least 1");
    }
    if args.separability_max == 0 {
        anyhow::bail!("--separability-max must be at least 1");
    }
    if !args.separability_warn.is_finite() {
        anyhow::bail!(
            "--separability-warn must be a number, got {}",
            args.separability_warn
        );
    }
    let separability = SeparabilityConfig {
        model: args.separability_model.as_ref().map(bi_encoder),
        max_passages: args.separability_max,
        seed: args.seed,
        warn: args.separability_warn,
        ..SeparabilityConfig::default()
    };
    let format = match args.format {
        FormatArg::Auto => None,
        FormatArg::Negatives => Some(Format::Negatives),
        FormatArg::Triplet => Some(Format::Triplet),
        FormatArg::NTuple => Some(Format::NTuple),
        FormatArg::NTupleScores => Some(Format::NTupleScores),
        FormatArg::LabeledPair => Some(Format::LabeledPair),
        FormatArg::LabeledList => Some(Format::LabeledList),
        FormatArg::Flagembedding => Some(Format::Flagembedding),
        FormatArg::Tevatron => Some(Format::Tevatron),
    };
    let config = InspectConfig {
        input: args.file,
        format,
        judge,
        data: args.data,
        output: args.output,
        max_queries: args.max_queries,
        bins: args.bins,
        deltas: DEFAULT_DELTAS.to_vec(),
        ridge: DEFAULT_RIDGE,
        separability,
        cache: args.cache.dir(),
        threads: args.runtime.threads,
        skip_invalid: args.policy.skip_invalid,
    };
    let s = foil::inspect::run(&config, &args.runtime.progress())
        .with_context(|| format!("inspecting {} failed", config.input.display()))?;
    let r = &s.report;
    println!("{}", r.summary_line());
    let skipped: u64 = r.skipped.examples.values().sum();
    eprintln!(
        "inspect: {} examples over {} queries ({} positives, {} negatives), skipped {} examples; {}; judge {} ({}); {:.2}s -> {}",
        r.counts.examples,
        r.counts.queries,
        r.counts.positives,
        r.counts.negatives,
        skipped,
        s.skips.summary(),
        r.judge.kind,
        r.judge.name,
        s.seconds,
        config.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
