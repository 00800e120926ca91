//! `foil train`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use clap::Args;
use foil::train::{CrossLoss, ModelType, TrainConfig, TrainEval};
use foil_train::Loss;

use super::common_args::RunArgs;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training table: sentence-transformers n-tuple, triplet or n-tuple-scores columns, or
    /// FlagEmbedding's {query, pos, neg}; .jsonl or .parquet (e.g. `foil mine` output).
    train_file: PathBuf,
    /// The model to start from: a name under the models folder or a folder path.
    #[arg(long, default_value = "all-MiniLM-L6-v2")]
    model: PathBuf,
    /// Output folder: the trained sentence-transformers folder, checkpoint/, log.jsonl.
    #[arg(long)]
    output: PathBuf,
    /// What to train: a bi-encoder, or a cross-encoder (start from `foil init-cross-encoder`).
    #[arg(long, value_enum, default_value = "bi-encoder")]
    model_type: ModelType,
    /// The loss. Bi-encoders: infonce (= mnrl), dcl, dclw, mw, soft-infonce,
    /// multi-similarity, triplet, margin-mse, with options, e.g. "infonce:scale=20,symmetric=true"
    /// (default infonce). Cross-encoders: listwise (default) or bce.
    #[arg(long)]
    loss: Option<String>,
    /// Rows (queries) per batch.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    /// Texts per forward pass; smaller than the batch's text count runs GradCache.
    #[arg(long)]
    mini_batch: Option<usize>,
    /// Hard negatives per row (default: as many as every row has).
    #[arg(long)]
    max_negatives: Option<usize>,
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Stop after this many steps.
    #[arg(long)]
    max_steps: Option<u64>,
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    /// Cross-encoders: the classifier head's learning rate (default: --lr). A fresh head
    /// trained at an encoder's rate needs thousands of steps; e.g. 100× --lr for small data.
    #[arg(long)]
    head_lr: Option<f64>,
    #[arg(long, default_value_t = TrainConfig::default().warmup_ratio)]
    warmup_ratio: f64,
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    weight_decay: f64,
    #[arg(long, default_value_t = TrainConfig::default().max_grad_norm)]
    max_grad_norm: f64,
    /// Longest input in tokens (default: the model's).
    #[arg(long)]
    max_length: Option<usize>,
    /// Train without dropout (for exact comparisons).
    #[arg(long)]
    no_dropout: bool,
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Checkpoint every N steps (0: only at the end); a rerun resumes from the checkpoint.
    #[arg(long, default_value_t = TrainConfig::default().checkpoint_every)]
    checkpoint_every: u64,
    #[command(flatten)]
    runtime: RunArgs,
    /// Train on `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value_t = TrainConfig::default().device)]
    device: String,
    /// Evaluate on this BEIR folder during training (nDCG@10, MAP@10, MRR@10, Recall@100 to
    /// eval.jsonl): a bi-encoder by dense retrieval, a cross-encoder by reranking BM25's top k.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// The split of `--eval-data` to evaluate on.
    #[arg(long, default_value = "test", requires = "eval_data")]
    eval_split: String,
    /// Evaluate every N steps as well as after the last (0: only after the last).
    #[arg(long, default_value_t = 0, requires = "eval_data")]
    eval_every: u64,
    /// Documents retrieved, or reranked by a cross-encoder, per query when evaluating.
    #[arg(long, default_value_t = 100, requires = "eval_data")]
    eval_top_k: usize,
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let (model_type, loss, cross_loss) = match args.model_type {
        ModelType::BiEncoder => (
            ModelType::BiEncoder,
            Loss::from_str(args.loss.as_deref().unwrap_or("infonce")).context("--loss")?,
            CrossLoss::Listwise,
        ),
        ModelType::CrossEncoder => (
            ModelType::CrossEncoder,
            Loss::default(),
            match args.loss.as_deref().unwrap_or("listwise") {
                "listwise" => CrossLoss::Listwise,
                "bce" => CrossLoss::Bce,
                other => {
                    anyhow::bail!("--loss {other:?}: a cross-encoder trains with listwise or bce")
                }
            },
        ),
    };
    let config = TrainConfig {
        model_type,
        cross_loss,
        model: args.model,
        train_file: args.train_file,
        output: args.output,
        loss,
        batch_size: args.batch_size,
        mini_batch: args.mini_batch,
        max_negatives: args.max_negatives,
        epochs: args.epochs,
        max_steps: args.max_steps,
        lr: args.lr,
        head_lr: args.head_lr,
        warmup_ratio: args.warmup_ratio,
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        max_length: args.max_length,
        dropout: !args.no_dropout,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        threads: args.runtime.threads,
        device: args.device,
        eval: args.eval_data.map(|data| TrainEval {
            data,
            split: args.eval_split,
            every: args.eval_every,
            top_k: args.eval_top_k,
        }),
    };
    let s = foil::train::run(&config, &args.runtime.progress()).context("training failed")?;
    let skipped: u64 = s.skipped_rows.values().sum();
    eprintln!(
        "train: {} rows, skipped {}; steps {} (resumed at {}); loss {:.4} -> {:.4}; {:.2} s/step; {:.1}s -> {}",
        s.rows,
        skipped,
        s.steps,
        s.resumed_from,
        s.first_loss.unwrap_or(f64::NAN),
        s.last_loss.unwrap_or(f64::NAN),
        s.seconds_per_step,
        s.seconds,
        config.output.display()
    );
    for p in &s.evals {
        eprintln!(
            "eval: step {:>6}  nDCG@10 {:.4}  MAP@10 {:.4}  MRR@10 {:.4}  Recall@100 {:.4}  ({} queries)",
            p.step, p.ndcg_at_10, p.map_at_10, p.mrr_at_10, p.recall_at_100, p.queries
        );
    }
    Ok(ExitCode::SUCCESS)
}
