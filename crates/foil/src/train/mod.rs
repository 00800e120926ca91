//! The train stage: fine-tune a BERT bi-encoder on a training table with a contrastive loss,
//! and save a folder that foil and sentence-transformers both load.
//!
//! Rows come from `foil mine` (or any sentence-transformers dataset) in any format of
//! [`crate::formats`] that carries texts — `n-tuple`, `triplet`, `n-tuple-scores` (the scores
//! feed MarginMSE), labeled pairs and lists, FlagEmbedding, Tevatron — as JSON Lines or
//! Parquet. Each epoch is cut into batches by the
//! no-duplicates sampler, seeded by (seed, epoch), so no text is twice in a batch.
//!
//! One step: tokenize the batch's queries, positives and negatives; embed them with
//! [`CandleModel`] (pooling and normalization from the model folder); compute the loss;
//! backpropagate; clip the global gradient norm; update with AdamW under a linear
//! warmup/decay schedule. With `mini_batch` smaller than the batch, the step runs as GradCache
//! (Gao et al., 2021): embeddings of the whole batch are computed in chunks without keeping
//! the graph, the loss's gradient with respect to each embedding is taken, and each chunk is
//! run again with its graph to push that gradient into the weights — the same update as one
//! big forward pass (dropout masks are seeded per chunk, so both passes draw the same ones) at
//! the memory of one chunk.
//!
//! Everything random is seeded from (seed, step), so a run killed after a checkpoint and
//! resumed gives the same weights as an uninterrupted one.
//!
//! The modules, in the order a run uses them: [`rows`] (the training file → rows with K
//! negatives), [`schedule`] (batches and learning rates), [`model`] (base folder, weights,
//! optimizer, resuming), [`step`] (one step's loss and gradients, GradCache), [`checkpoint`],
//! [`evaluate`] (evaluations during training) and [`export`] (the trained folder).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use foil_core::fsutil::write_atomic;
use foil_core::manifest::Manifest;
use foil_core::{Error, Progress, Result};
pub use foil_train::CrossLoss;
use foil_train::{clip_grad_norm, Loss};
use serde::Serialize;
use serde_json::json;

use crate::threads::with_threads;

mod checkpoint;
mod evaluate;
mod export;
mod model;
mod rows;
mod schedule;
mod step;

use checkpoint::save_checkpoint;
use evaluate::Evaluator;
pub use evaluate::{EvalPoint, TrainEval};
use model::{Base, Trainable};
pub use rows::{read_rows, Row};
use schedule::Plan;
use step::Trainer;

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ModelType {
    /// A bi-encoder: queries and passages embedded apart, a contrastive loss on the vectors.
    BiEncoder,
    /// A cross-encoder (`BertForSequenceClassification`, one logit) scoring (query, passage)
    /// pairs; start from a folder made by `foil init-cross-encoder` or a trained one.
    CrossEncoder,
}

/// Configuration of a training run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainConfig {
    pub model_type: ModelType,
    /// The cross-encoder's loss (ignored for bi-encoders, which use `loss`).
    pub cross_loss: CrossLoss,
    /// The model folder to start from (Hugging Face BERT, sentence-transformers layout).
    pub model: PathBuf,
    /// The training table.
    pub train_file: PathBuf,
    /// Output folder: the trained model, `checkpoint/`, `log.jsonl`, `manifest.json`.
    pub output: PathBuf,
    pub loss: Loss,
    /// Rows (queries) per batch.
    pub batch_size: usize,
    /// Texts per forward pass; below the batch's text count the step runs as GradCache.
    pub mini_batch: Option<usize>,
    /// Hard negatives used per row (default: as many as every row has).
    pub max_negatives: Option<usize>,
    pub epochs: usize,
    /// Stop after this many steps (default: all epochs).
    pub max_steps: Option<u64>,
    pub lr: f64,
    /// A cross-encoder's classifier head learns at this rate (default `lr`): a fresh one-logit
    /// head moves at most about the learning rate per AdamW step, so at an encoder's rate it
    /// takes thousands of steps to make logits that rank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_lr: Option<f64>,
    /// Share of the steps spent warming the learning rate up.
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    /// Longest input in tokens (default: the model folder's).
    pub max_length: Option<usize>,
    /// Train with the model's dropout (the usual); off for exact comparisons.
    pub dropout: bool,
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    pub threads: Option<usize>,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with the `cuda` feature).
    pub device: String,
    /// Evaluate on a BEIR split during training.
    pub eval: Option<TrainEval>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model_type: ModelType::BiEncoder,
            cross_loss: CrossLoss::Listwise,
            model: PathBuf::new(),
            train_file: PathBuf::new(),
            output: PathBuf::new(),
            loss: Loss::default(),
            batch_size: 16,
            mini_batch: None,
            max_negatives: None,
            epochs: 1,
            max_steps: None,
            lr: 2e-5,
            head_lr: None,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            max_length: None,
            dropout: true,
            seed: 42,
            checkpoint_every: 50,
            threads: None,
            device: "cpu".into(),
            eval: None,
        }
    }
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub rows: usize,
    pub skipped_rows: BTreeMap<String, u64>,
    pub steps: u64,
    /// Step at which this run started (0, or the checkpoint it resumed from).
    pub resumed_from: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub seconds: f64,
    pub seconds_per_step: f64,
    /// The median time of one step (forward, backward, optimizer) over this run's steps after
    /// its first, which also grows the heap; `None` for a run of fewer than two steps.
    pub median_step_seconds: Option<f64>,
    /// The evaluations during training (see [`TrainEval`]), in step order.
    pub evals: Vec<EvalPoint>,
}

/// Runs the train stage.
pub fn run(config: &TrainConfig, progress: &dyn Progress) -> Result<TrainSummary> {
    // A second process writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(&config.output)?;
    with_threads(config.threads, || train(config, progress))?
}

/// The stage as its steps: the base model → the usable rows → the schedule → the weights
/// (resumed from the checkpoint of this run, if any) → the steps → the log and the manifest.
fn train(config: &TrainConfig, progress: &dyn Progress) -> Result<TrainSummary> {
    let started = Instant::now();
    let base = Base::read(config)?;
    let usable = rows::usable_rows(config)?;
    let plan = schedule::plan(config, &usable.rows);
    let run_id = checkpoint::run_hash(config, &base.dir, usable.k)?;
    std::fs::create_dir_all(&config.output).map_err(|e| Error::io(&config.output, e))?;
    let checkpoint = config.output.join("checkpoint");
    let mut trainable = model::load(config, &base, &checkpoint, &run_id)?;
    let resumed_from = trainable.step;
    let ran = run_steps(
        config,
        &base,
        &usable.rows,
        &plan,
        &mut trainable,
        &run_id,
        progress,
    )?;
    write_log(config, &trainable.losses, &plan)?;
    let seconds = started.elapsed().as_secs_f64();
    let summary = TrainSummary {
        rows: usable.rows.len(),
        skipped_rows: usable.skipped,
        steps: trainable.step,
        resumed_from,
        first_loss: trainable.losses.first().map(|&l| l as f64),
        last_loss: trainable.losses.last().map(|&l| l as f64),
        seconds,
        seconds_per_step: ran.seconds_per_step,
        median_step_seconds: ran.median_step_seconds,
        evals: ran.evals,
    };
    write_manifest(config, &base, usable.k, &summary)?;
    Ok(summary)
}

/// What the steps did besides the weights.
struct Ran {
    evals: Vec<EvalPoint>,
    /// Training time per step, evaluations left out.
    seconds_per_step: f64,
    median_step_seconds: Option<f64>,
}

/// Runs the steps left, checkpointing every `checkpoint_every` steps and evaluating when
/// due; saves the final checkpoint and the trained folder.
fn run_steps(
    config: &TrainConfig,
    base: &Base,
    rows: &[Row],
    plan: &Plan,
    t: &mut Trainable,
    run_id: &str,
    progress: &dyn Progress,
) -> Result<Ran> {
    let checkpoint = config.output.join("checkpoint");
    let cross = config.model_type == ModelType::CrossEncoder;
    let resumed_from = t.step;
    let mut evaluator = match &config.eval {
        Some(eval) => Some(Evaluator::new(
            eval,
            &config.output,
            cross,
            config.max_length,
            config.threads,
            resumed_from,
        )?),
        None => None,
    };
    // The weights as a model folder, for the evaluations and at the end.
    let (model, vars) = (&t.model, &t.vars);
    let save = |dir: &Path| {
        if cross {
            export::save_cross_encoder(vars, base.family(), &base.dir, dir)
        } else {
            export::save_model_folder(model, &base.dir, &base.saved, dir)
        }
    };
    let total = plan.total;
    // Evaluates after `step` when due; returns the seconds it took.
    let mut evaluate = |step: u64| -> Result<f64> {
        let started = Instant::now();
        if let Some(evaluator) = evaluator.as_mut().filter(|e| e.due(step, total)) {
            evaluator.evaluate(step, save)?;
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let trainer = Trainer {
        model,
        pooler: t.pooler.as_ref(),
        tokenizer: &base.tokenizer,
        sentence: &base.sentence,
        config,
        dropout: config.dropout,
    };
    progress.begin("train", Some(total));
    progress.update(t.step);
    // A run killed during the evaluation at its checkpoint does that evaluation first.
    evaluate(t.step)?;
    let mut eval_seconds = 0.0;
    let mut step_seconds: Vec<f64> = Vec::new();
    let step_started = Instant::now();
    while t.step < total {
        let step = t.step;
        let batch: Vec<&Row> = plan.batches[step as usize]
            .iter()
            .map(|&i| &rows[i])
            .collect();
        let seed = config
            .seed
            .wrapping_add(step.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let started = Instant::now();
        let (loss, mut grads) = trainer.step(&batch, seed)?;
        clip_grad_norm(vars, &mut grads, config.max_grad_norm)?;
        t.optimizer.step(&grads, plan.schedule.lr(step))?;
        step_seconds.push(started.elapsed().as_secs_f64());
        t.step += 1;
        t.losses.push(loss);
        progress.update(t.step);
        tracing::debug!(step = t.step, loss, "step");
        let step = t.step;
        if config.checkpoint_every > 0
            && step.is_multiple_of(config.checkpoint_every)
            && step < total
        {
            save_checkpoint(&checkpoint, vars, &t.optimizer, run_id, step, &t.losses)?;
        }
        if step < total {
            eval_seconds += evaluate(step)?;
        }
    }
    progress.end();
    let trained = t.step - resumed_from;
    let train_seconds = step_started.elapsed().as_secs_f64();
    let seconds_per_step = if trained > 0 {
        (train_seconds - eval_seconds) / trained as f64
    } else {
        0.0
    };
    save_checkpoint(&checkpoint, vars, &t.optimizer, run_id, t.step, &t.losses)?;
    evaluate(t.step)?;
    let evals = evaluator.map(Evaluator::into_points).unwrap_or_default();
    save(&config.output)?;
    Ok(Ran {
        evals,
        seconds_per_step,
        median_step_seconds: median(step_seconds.get(1..).unwrap_or_default()),
    })
}

/// The median of `xs`; `None` when empty.
fn median(xs: &[f64]) -> Option<f64> {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(xs[n / 2]),
        _ => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
    }
}

/// `log.jsonl`: every step's loss and learning rate.
fn write_log(config: &TrainConfig, losses: &[f32], plan: &Plan) -> Result<()> {
    let log: String = losses
        .iter()
        .enumerate()
        .map(|(i, l)| {
            format!(
                "{}\n",
                json!({"step": i + 1, "loss": l, "lr": plan.schedule.lr(i as u64)})
            )
        })
        .collect();
    write_atomic(&config.output.join("log.jsonl"), log.as_bytes())
}

/// `manifest.json`: inputs, outputs, seed, counts and timings.
fn write_manifest(config: &TrainConfig, base: &Base, k: usize, s: &TrainSummary) -> Result<()> {
    let mut manifest = Manifest::new("train", serde_json::to_value(config).unwrap_or_default());
    manifest.add_input(&config.train_file)?;
    manifest.add_input(&base.dir.join("model.safetensors"))?;
    manifest.outputs = vec![
        "model.safetensors".into(),
        "log.jsonl".into(),
        "checkpoint/".into(),
    ];
    if !s.evals.is_empty() {
        manifest.outputs.push("eval.jsonl".into());
        manifest
            .counts
            .insert("evaluations".into(), s.evals.len() as u64);
    }
    manifest.seed = Some(config.seed);
    manifest.counts.insert("rows".into(), s.rows as u64);
    manifest.counts.insert("negatives_per_row".into(), k as u64);
    manifest.counts.insert("steps".into(), s.steps);
    for (reason, n) in &s.skipped_rows {
        manifest.counts.insert(format!("skipped_rows.{reason}"), *n);
    }
    manifest.timings.insert("seconds".into(), s.seconds);
    manifest
        .timings
        .insert("seconds_per_step".into(), s.seconds_per_step);
    if let Some(median) = s.median_step_seconds {
        manifest
            .timings
            .insert("median_step_seconds".into(), median);
    }
    manifest.write(&config.output.join("manifest.json"))
}
