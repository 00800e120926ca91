//! `foil mine`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use foil::formats::Format;
use foil::mine::filter::{Filters, NegativeSampling};
use foil::mine::judged::{FalseNegativeRule, JudgeAction, JudgeRescore, MineJudge};
use foil::mine::{MineConfig, PairsSource};
use foil::search::RetrieverKind;
use foil_bm25::Bm25Params;

use super::common_args::{InputArgs, RunArgs};
use super::encoder_args::{CacheArgs, EncoderArgs};
use super::judge_args::JudgeArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PresetArg {
    /// NV-Retriever's TopK-PercPos: negatives scoring at most 95% of the positive
    /// (relative margin 0.05).
    TopkPercpos,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Triplet,
    NTuple,
    NTupleScores,
    LabeledPair,
    LabeledList,
    Flagembedding,
    Tevatron,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Triplet => Format::Triplet,
            FormatArg::NTuple => Format::NTuple,
            FormatArg::NTupleScores => Format::NTupleScores,
            FormatArg::LabeledPair => Format::LabeledPair,
            FormatArg::LabeledList => Format::LabeledList,
            FormatArg::Flagembedding => Format::Flagembedding,
            FormatArg::Tevatron => Format::Tevatron,
        }
    }
}

#[derive(Debug, Args)]
pub struct MineArgs {
    /// BEIR folder: the corpus to mine from (corpus.jsonl), and, unless --pairs says
    /// otherwise, queries.jsonl and qrels/<split>.tsv whose judgments with grade ≥ 1 are the
    /// (query, positive) pairs.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    /// Pairs from elsewhere: a BEIR-style folder (queries.jsonl + qrels/<split>.tsv, e.g. the
    /// output of `foil generate queries`), or a table with `anchor` and `positive` text columns
    /// (.jsonl or .parquet, as sentence-transformers datasets have).
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// Precomputed passage vectors (a `foil encode` store of the corpus) instead of encoding.
    #[arg(long)]
    corpus_embeddings: Option<PathBuf>,
    /// Precomputed query vectors (a `foil encode` store of the queries, by query id).
    #[arg(long)]
    query_embeddings: Option<PathBuf>,
    /// Also write each format as Parquet.
    #[arg(long)]
    parquet: bool,
    /// Where candidates come from.
    #[arg(long, value_enum, default_value = "dense")]
    retriever: RetrieverKind,
    #[command(flatten)]
    encoder: EncoderArgs,
    /// Rescore candidates and positives with this cross-encoder (BertForSequenceClassification
    /// folder); the filters then apply to its scores.
    #[arg(long)]
    cross_encoder: Option<PathBuf>,
    #[command(flatten)]
    judge: JudgeArgs,
    /// What the judge does: `filter` drops (or, with --judge-action positive, relabels) the
    /// chosen negatives it finds as relevant as the positive; `teacher` also writes its
    /// P(relevant) as the scores (MarginMSE's teacher scores); `rescore` ranks the top
    /// --judge-depth candidates by P(relevant) before the filters, as a cross-encoder would.
    #[arg(long, value_enum, default_value = "filter")]
    judge_use: JudgeUseArg,
    /// A negative is a false negative when P(negative) ≥ P(lowest positive) − this margin.
    #[arg(long, default_value_t = 0.0, conflicts_with = "judge_threshold")]
    judge_margin: f32,
    /// A negative is a false negative when P(negative) ≥ this (instead of the margin rule).
    #[arg(long)]
    judge_threshold: Option<f32>,
    /// Drop false negatives, or make them positives of the query (RLHN).
    #[arg(long, value_enum, default_value = "drop")]
    judge_action: JudgeAction,
    /// Candidates chosen beyond --num-negatives, to replace false negatives.
    #[arg(long, default_value_t = 2)]
    judge_reserve: usize,
    /// Candidates judged per query with --judge-use rescore.
    #[arg(long, default_value_t = 10)]
    judge_depth: usize,
    /// Skip the best `range_min` candidates (raw ranks, positives not counted).
    #[arg(long, default_value_t = Filters::default().range_min)]
    range_min: usize,
    /// Consider only the best `range_max` candidates (positives not counted).
    #[arg(long, default_value_t = Filters::default().range_max)]
    range_max: usize,
    /// Keep candidates scoring at most this.
    #[arg(long)]
    max_score: Option<f32>,
    /// Keep candidates scoring at least this.
    #[arg(long)]
    min_score: Option<f32>,
    /// Keep candidates with score + margin ≤ the lowest positive's score.
    #[arg(long)]
    absolute_margin: Option<f32>,
    /// Keep candidates with score ≤ s_p − |s_p|·margin (s_p: the lowest positive's score).
    #[arg(long)]
    relative_margin: Option<f32>,
    /// Negatives per (query, positive).
    #[arg(long, default_value_t = Filters::default().num_negatives)]
    num_negatives: usize,
    #[arg(long, value_enum, default_value = "top")]
    sampling: NegativeSampling,
    /// Seed of random sampling.
    #[arg(long, default_value_t = Filters::default().seed)]
    seed: u64,
    /// A named filter preset (sets --relative-margin).
    #[arg(long, value_enum)]
    preset: Option<PresetArg>,
    /// Output formats (repeat or comma-separate); negatives.jsonl (provenance) is always written.
    #[arg(
        long = "format",
        value_enum,
        value_delimiter = ',',
        default_value = "n-tuple"
    )]
    formats: Vec<FormatArg>,
    /// Output folder.
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = Bm25Params::default().k1)]
    k1: f32,
    #[arg(long, default_value_t = Bm25Params::default().b)]
    b: f32,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    runtime: RunArgs,
    #[command(flatten)]
    policy: InputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JudgeUseArg {
    Filter,
    Teacher,
    Rescore,
}

pub fn run(args: MineArgs) -> anyhow::Result<ExitCode> {
    let mut relative_margin = args.relative_margin;
    if let Some(PresetArg::TopkPercpos) = args.preset {
        relative_margin = Some(0.05);
    }
    if args.num_negatives == 0 || args.range_min >= args.range_max {
        anyhow::bail!("need --num-negatives ≥ 1 and --range-min < --range-max");
    }
    let pairs = match args.pairs {
        Some(path) if path.is_dir() => PairsSource::Beir {
            dir: path,
            split: args.split,
        },
        Some(path) => PairsSource::Table(path),
        None => PairsSource::Beir {
            dir: args.data.clone(),
            split: args.split,
        },
    };
    let judge_config = args.judge.config(args.runtime.threads)?;
    let (judge, judge_rescore) = match (judge_config, args.judge_use) {
        (None, _) => (None, None),
        (Some(config), JudgeUseArg::Rescore) => (
            None,
            Some(JudgeRescore {
                config,
                depth: args.judge_depth,
            }),
        ),
        (Some(config), use_) => (
            Some(MineJudge {
                config,
                rule: match args.judge_threshold {
                    Some(threshold) => FalseNegativeRule::Absolute { threshold },
                    None => FalseNegativeRule::Relative {
                        margin: args.judge_margin,
                    },
                },
                action: args.judge_action,
                reserve: args.judge_reserve,
                teacher: use_ == JudgeUseArg::Teacher,
            }),
            None,
        ),
    };
    let config = MineConfig {
        judge,
        judge_rescore,
        corpus: args.data.join("corpus.jsonl"),
        pairs,
        corpus_embeddings: args.corpus_embeddings,
        query_embeddings: args.query_embeddings,
        parquet: args.parquet,
        retriever: args.retriever,
        encoder: args.encoder.spec(),
        bm25: Bm25Params {
            k1: args.k1,
            b: args.b,
        },
        cross_encoder: args.cross_encoder,
        filters: Filters {
            range_min: args.range_min,
            range_max: args.range_max,
            max_score: args.max_score,
            min_score: args.min_score,
            absolute_margin: args.absolute_margin,
            relative_margin,
            num_negatives: args.num_negatives,
            sampling: args.sampling,
            seed: args.seed,
        },
        formats: args.formats.iter().map(|&f| f.into()).collect(),
        output: args.output,
        cache: args.cache.dir(),
        threads: args.runtime.threads,
        skip_invalid: args.policy.skip_invalid,
    };
    let s = foil::mine::run(&config, &args.runtime.progress()).context("mining failed")?;
    print!("{}", s.stats);
    let skipped: Vec<String> = s
        .skipped_pairs
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    if !s.judge.is_empty() {
        let counts: Vec<String> = s.judge.iter().map(|(k, v)| format!("{k} {v}")).collect();
        eprintln!("mine: judge: {}", counts.join(", "));
    }
    eprintln!(
        "mine: {} pairs over {} queries: {} kept with {} negatives each, skipped {} ({}); {} negatives; {}; {:.2}s -> {}",
        s.pairs,
        s.queries,
        s.kept_pairs,
        config.filters.num_negatives,
        s.skipped_pairs.values().sum::<u64>(),
        if skipped.is_empty() { "none".into() } else { skipped.join(", ") },
        s.negatives,
        s.skips.summary(),
        s.seconds,
        config.output.display()
    );
    // Pairs the judge could not judge (server errors): a run that could not do all it was
    // asked exits non-zero unless the user allowed that many.
    let unjudged: u64 = s
        .judge
        .iter()
        .filter(|(k, _)| *k == "unjudged" || k.starts_with("unjudged."))
        .map(|(_, v)| v)
        .sum();
    let pairs = s.judge.get("pairs").copied().unwrap_or(0);
    Ok(args
        .judge
        .judge_max_failed
        .exit_code("mine: judge", unjudged, pairs))
}
