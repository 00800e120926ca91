//! The subcommands; each parses its flags into a stage configuration and calls the stage.

mod cache;
mod common_args;
mod demo;
mod encode;
mod encoder_args;
mod eval;
mod experiment;
mod failures;
mod generate;
mod init_cross_encoder;
mod inspect;
mod judge;
mod judge_args;
mod mine;
mod rerank;
mod search;
mod train;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Look after the embedding cache (or a generation cache file): stats, verify checksums
    /// and alignment, gc (drop damaged chunks, duplicates and uncommitted tails; compact).
    #[command(subcommand_required = true)]
    Cache(cache::CacheArgs),
    /// Print a shell completion script: `foil completions bash > ~/.local/share/bash-completion/completions/foil`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run foil's main job on the built-in demo dataset: write it, search it with BM25, and
    /// evaluate the run.
    Demo(demo::DemoArgs),
    /// Embed the texts of a corpus or queries file with a bi-encoder and store the vectors.
    Encode(encode::EncodeArgs),
    /// Evaluate a TREC run against qrels (nDCG, MAP, recall, P, MRR at several cutoffs), or
    /// compare two runs with paired significance tests.
    Eval(eval::EvalArgs),
    /// Compare ways of getting hard negatives end to end from a TOML file: negatives (LLM,
    /// BM25, dense, cross-encoder) → inspect → train → evaluate → report; resumable.
    Experiment(experiment::ExperimentArgs),
    /// Generate training data with an LLM (local GGUF or an OpenAI-compatible server):
    /// synthetic queries for a corpus, or corpus-free hard negatives for (query, positive) pairs.
    Generate(generate::GenerateArgs),
    /// Write an untrained cross-encoder checkpoint (BertForSequenceClassification, one logit)
    /// from a BERT folder, for tests and as the start of training.
    InitCrossEncoder(init_cross_encoder::InitCrossEncoderArgs),
    /// Judge a training file's negatives before training: score distributions, margins,
    /// likely false negatives, ROC/AUC, diversity and a reconstructed ECI; report + charts.
    Inspect(inspect::InspectArgs),
    /// Judge the relevance of a run's top documents with an LLM (P(relevant) from its yes/no
    /// next-token probabilities) and measure the judge against the qrels (AUC).
    Judge(judge::JudgeCmdArgs),
    /// Mine hard negatives for the (query, positive) pairs of a split: BM25, dense, hybrid,
    /// optional cross-encoder rescoring, sentence-transformers' filters and formats.
    Mine(Box<mine::MineArgs>),
    /// Rescore the top of a TREC run with a cross-encoder and write the reranked run.
    Rerank(rerank::RerankArgs),
    /// Rank a BEIR corpus (BM25 or a dense bi-encoder) for the queries judged in a split and
    /// write a TREC run.
    Search(search::SearchArgs),
    /// Fine-tune a bi-encoder on a training table (foil mine's output or any
    /// sentence-transformers dataset) with a contrastive loss; saves a sentence-transformers folder.
    Train(train::TrainArgs),
}

/// Runs a subcommand; returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Cache(args) => cache::run(args),
        Command::Completions { .. } => unreachable!("main prints completions"),
        Command::Demo(args) => demo::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Generate(args) => generate::run(args),
        Command::InitCrossEncoder(args) => init_cross_encoder::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Judge(args) => judge::run(args),
        Command::Mine(args) => mine::run(*args),
        Command::Rerank(args) => rerank::run(args),
        Command::Search(args) => search::run(args),
        Command::Train(args) => train::run(args),
    }
}
