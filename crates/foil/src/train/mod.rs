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
//! [`TrainableModel`] (pooling and normalization from the model folder); compute the loss;
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{backprop::GradStore, Device, Tensor, Var};
use foil_candle::config::{Family, ModelConfig, Pooling, SentenceConfig};
use foil_candle::model::{pool, Batch, CandleResult, Dropout, TrainableModel};
use foil_candle::tokenizer::TextTokenizer;
use foil_candle::weights::Weights;
use foil_core::fsutil::write_atomic;
use foil_core::manifest::Manifest;
use foil_core::rng::SplitMix64;
use foil_core::{Error, Progress, Result};
use foil_train::{clip_grad_norm, no_duplicates_batches, AdamW, AdamWConfig, LinearSchedule};
use foil_train::{Loss, LossInput};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::formats::{read_training_file, Item, ReadOptions};
use crate::threads::with_threads;

mod evaluate;
use evaluate::Evaluator;
pub use evaluate::{EvalPoint, TrainEval};

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelType {
    /// A bi-encoder: queries and passages embedded apart, a contrastive loss on the vectors.
    BiEncoder,
    /// A cross-encoder (`BertForSequenceClassification`, one logit) scoring (query, passage)
    /// pairs; start from a folder made by `foil init-cross-encoder` or a trained one.
    CrossEncoder,
}

/// The loss of a cross-encoder over a row's logits (positive first, then its negatives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrossLoss {
    /// Softmax cross-entropy over the row's 1 + K logits with the positive as the target
    /// (the listwise loss of Nogueira & Cho's successors, e.g. Gao et al. 2021 "LCE").
    Listwise,
    /// Binary cross-entropy with logits: label 1 for the positive, 0 for each negative.
    Bce,
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
    /// The evaluations during training (see [`TrainEval`]), in step order.
    pub evals: Vec<EvalPoint>,
}

/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub anchor: String,
    pub positive: String,
    pub negatives: Vec<String>,
    /// Teacher scores, positive first (`n-tuple-scores`).
    pub scores: Option<Vec<f32>>,
}

/// Reads a training file in any [`crate::formats::Format`] that carries texts, JSON Lines or
/// Parquet: one row per (query, positive) of each example, with that example's negatives and,
/// where the file stores a score for each of them, the scores (positive first) for MarginMSE.
/// Triplets stay one row each, as sentence-transformers trains them.
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let mut skips = foil_core::SkipReport::default();
    let file = read_training_file(path, &ReadOptions::default(), &mut skips)?;
    let mut rows = Vec::new();
    for example in file.examples {
        let text = |item: &Item| {
            item.text.clone().ok_or_else(|| Error::Input {
                file: path.to_path_buf(),
                line: example.line,
                reason: foil_core::SkipReason::MissingText,
                message: format!(
                    "{} records name passages by id without their texts; train on a format with texts (`foil mine --format n-tuple`)",
                    file.format.name()
                ),
            })
        };
        let anchor = text(&example.query)?;
        let negatives = example
            .negatives
            .iter()
            .map(text)
            .collect::<Result<Vec<_>>>()?;
        let negative_scores: Option<Vec<f32>> = example.negatives.iter().map(|n| n.score).collect();
        for positive in &example.positives {
            let scores = positive
                .score
                .zip(negative_scores.as_ref())
                .map(|(p, n)| std::iter::once(p).chain(n.iter().copied()).collect());
            rows.push(Row {
                anchor: anchor.clone(),
                positive: text(positive)?,
                negatives: negatives.clone(),
                scores,
            });
        }
    }
    Ok(rows)
}

/// Saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// Hash of everything that determines the run; a checkpoint of another run is not resumed.
    run: String,
    step: u64,
    /// Per-step losses (f32, as computed: they survive the JSON round trip exactly).
    losses: Vec<f32>,
}

/// A model folder's files that a trained folder copies unchanged.
const COPIED: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "config_sentence_transformers.json",
];

/// Runs the train stage.
pub fn run(config: &TrainConfig, progress: &dyn Progress) -> Result<TrainSummary> {
    // A second process writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(&config.output)?;
    with_threads(config.threads, || train(config, progress))?
}

fn train(config: &TrainConfig, progress: &dyn Progress) -> Result<TrainSummary> {
    let started = Instant::now();
    let model_dir = crate::encoders::resolve_model(&config.model)?;
    let architecture = ModelConfig::read(&model_dir.join("config.json"))?;
    let mut sentence = SentenceConfig::read(&model_dir, &architecture)?;
    // The saved folder keeps the base's settings; the training length only shapes batches.
    let saved = sentence.clone();
    if let Some(n) = config.max_length {
        sentence.max_length = n.min(architecture.max_tokens());
    }
    let tokenizer = TextTokenizer::load(&model_dir, sentence.max_length)?;

    // Rows with the same number of negatives K (what the loss's tensors need).
    let all = read_rows(&config.train_file)?;
    let min_negatives = all.iter().map(|r| r.negatives.len()).min().unwrap_or(0);
    let k = config.max_negatives.unwrap_or(min_negatives);
    let mut skipped_rows = BTreeMap::new();
    let mut rows = Vec::with_capacity(all.len());
    for mut row in all {
        if row.negatives.len() < k {
            *skipped_rows
                .entry("fewer_negatives_than_used".to_string())
                .or_default() += 1;
            continue;
        }
        row.negatives.truncate(k);
        if let Some(s) = &mut row.scores {
            s.truncate(k + 1);
        }
        rows.push(row);
    }
    if rows.len() < 2 {
        return Err(Error::Invalid(format!(
            "{}: {} usable rows; training needs at least 2",
            config.train_file.display(),
            rows.len()
        )));
    }
    if config.model_type == ModelType::CrossEncoder && k == 0 {
        return Err(Error::Invalid(
            "training a cross-encoder needs rows with hard negatives".into(),
        ));
    }
    if config.model_type == ModelType::BiEncoder && config.loss.needs_negatives() && k == 0 {
        return Err(Error::Invalid(format!(
            "the {} loss needs hard negatives, and the rows have none",
            config.loss.name()
        )));
    }
    if matches!(config.loss, Loss::MarginMse(_)) && rows.iter().any(|r| r.scores.is_none()) {
        return Err(Error::Invalid(
            "margin-mse needs teacher scores (an n-tuple-scores table)".into(),
        ));
    }

    // The whole schedule up front: batches of every epoch.
    let texts: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| {
            std::iter::once(r.anchor.as_str())
                .chain(std::iter::once(r.positive.as_str()))
                .chain(r.negatives.iter().map(String::as_str))
                .collect()
        })
        .collect();
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for epoch in 0..config.epochs.max(1) {
        let seed = foil_core::rng::derive(config.seed, epoch as u64);
        batches.extend(
            no_duplicates_batches(&texts, config.batch_size, seed, false)
                .into_iter()
                .filter(|b| b.len() >= 2),
        );
    }
    let total = config
        .max_steps
        .map_or(batches.len() as u64, |m| m.min(batches.len() as u64));
    let schedule = LinearSchedule {
        base_lr: config.lr,
        warmup_steps: (total as f64 * config.warmup_ratio).round() as u64,
        total_steps: total,
    };
    let run_id = run_hash(config, &model_dir, k)?;

    // The model, and the checkpoint to resume from if it belongs to this run.
    std::fs::create_dir_all(&config.output).map_err(|e| Error::io(&config.output, e))?;
    let checkpoint = config.output.join("checkpoint");
    let state: Option<State> = match std::fs::read(checkpoint.join("state.json")) {
        Ok(bytes) => serde_json::from_slice::<State>(&bytes)
            .ok()
            .filter(|s| s.run == run_id),
        Err(_) => None,
    };
    let device = foil_candle::encoder::parse_device(&config.device)?.unwrap_or(Device::Cpu);
    let weights_dir = if state.is_some() {
        &checkpoint
    } else {
        &model_dir
    };
    let weights = Weights::load(weights_dir, &device)?;
    let cross = config.model_type == ModelType::CrossEncoder;
    let one_logit = match &architecture {
        ModelConfig::Encoder(bert) => {
            (weights.contains("classifier.weight")
                || weights.contains("classifier.out_proj.weight"))
                && bert.labels() == 1
        }
        ModelConfig::ModernBert(_) | ModelConfig::Decoder(_) => false,
    };
    if cross && !one_logit {
        return Err(Error::Invalid(format!(
            "{}: not a one-logit BertForSequenceClassification or \
             XLMRobertaForSequenceClassification folder (make one with `foil init-cross-encoder`)",
            model_dir.display()
        )));
    }
    let model = TrainableModel::new(&architecture, &weights, &device)?;
    // A cross-encoder's pooler (dense + tanh before the classifier) is trained too.
    let pooler = if cross && weights.contains("pooler.dense.weight") {
        let h = architecture.hidden_size();
        let w = Var::from_tensor(weights.get("pooler.dense.weight", &[h, h])?).ce()?;
        let b = Var::from_tensor(weights.get("pooler.dense.bias", &[h])?).ce()?;
        Some((w, b))
    } else {
        None
    };
    drop(weights);
    let mut vars: Vec<(String, Var)> = model.vars().to_vec();
    if let Some((w, b)) = &pooler {
        vars.push(("pooler.dense.weight".into(), w.clone()));
        vars.push(("pooler.dense.bias".into(), b.clone()));
    }
    let mut optimizer = AdamW::new(
        &vars,
        AdamWConfig {
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        },
    );
    if let Some(head_lr) = config.head_lr {
        if !cross {
            return Err(Error::config(
                "head_lr",
                "is for cross-encoders (a bi-encoder has no head)",
            ));
        }
        if config.lr <= 0.0 {
            return Err(Error::config("head_lr", "needs a positive lr"));
        }
        optimizer.scale_lr(|name| name.starts_with("classifier."), head_lr / config.lr);
    }
    let (mut step, mut losses) = match state {
        Some(s) => {
            optimizer.load(&checkpoint.join("optimizer.safetensors"))?;
            tracing::info!(step = s.step, "resuming from {}", checkpoint.display());
            (s.step, s.losses)
        }
        None => (0, Vec::new()),
    };
    let resumed_from = step;

    let trainer = Trainer {
        model: &model,
        pooler: pooler.as_ref(),
        tokenizer: &tokenizer,
        sentence: &sentence,
        config,
        dropout: config.dropout,
    };
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
    let family = match &architecture {
        ModelConfig::Encoder(bert) => bert.family(),
        ModelConfig::ModernBert(_) | ModelConfig::Decoder(_) => Family::Bert,
    };
    let save = |dir: &Path| {
        if cross {
            save_cross_encoder(&vars, family, &model_dir, dir)
        } else {
            save_model_folder(&model, &model_dir, &saved, dir)
        }
    };
    progress.begin("train", Some(total));
    progress.update(step);
    // Evaluates after `step` when due; returns the seconds it took.
    let mut evaluate = |step: u64| -> Result<f64> {
        let started = Instant::now();
        if let Some(evaluator) = evaluator.as_mut().filter(|e| e.due(step, total)) {
            evaluator.evaluate(step, save)?;
        }
        Ok(started.elapsed().as_secs_f64())
    };
    // A run killed during the evaluation at its checkpoint does that evaluation first.
    evaluate(step)?;
    let mut eval_seconds = 0.0;
    let step_started = Instant::now();
    while step < total {
        let batch: Vec<&Row> = batches[step as usize].iter().map(|&i| &rows[i]).collect();
        let seed = config
            .seed
            .wrapping_add(step.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let (loss, mut grads) = trainer.step(&batch, seed)?;
        clip_grad_norm(&vars, &mut grads, config.max_grad_norm)?;
        optimizer.step(&grads, schedule.lr(step))?;
        step += 1;
        losses.push(loss);
        progress.update(step);
        tracing::debug!(step, loss, "step");
        if config.checkpoint_every > 0 && step % config.checkpoint_every == 0 && step < total {
            save_checkpoint(&checkpoint, &vars, &optimizer, &run_id, step, &losses)?;
        }
        if step < total {
            eval_seconds += evaluate(step)?;
        }
    }
    progress.end();
    let trained = step - resumed_from;
    let train_seconds = step_started.elapsed().as_secs_f64();
    let seconds_per_step = if trained > 0 {
        (train_seconds - eval_seconds) / trained as f64
    } else {
        0.0
    };
    save_checkpoint(&checkpoint, &vars, &optimizer, &run_id, step, &losses)?;
    evaluate(step)?;
    let evals = evaluator.map(Evaluator::into_points).unwrap_or_default();
    save(&config.output)?;

    let log: String = losses
        .iter()
        .enumerate()
        .map(|(i, l)| {
            format!(
                "{}\n",
                json!({"step": i + 1, "loss": l, "lr": schedule.lr(i as u64)})
            )
        })
        .collect();
    write_atomic(&config.output.join("log.jsonl"), log.as_bytes())?;
    let seconds = started.elapsed().as_secs_f64();
    let mut manifest = Manifest::new("train", serde_json::to_value(config).unwrap_or_default());
    manifest.add_input(&config.train_file)?;
    manifest.add_input(&model_dir.join("model.safetensors"))?;
    manifest.outputs = vec![
        "model.safetensors".into(),
        "log.jsonl".into(),
        "checkpoint/".into(),
    ];
    if !evals.is_empty() {
        manifest.outputs.push("eval.jsonl".into());
        manifest
            .counts
            .insert("evaluations".into(), evals.len() as u64);
    }
    manifest.seed = Some(config.seed);
    manifest.counts.insert("rows".into(), rows.len() as u64);
    manifest.counts.insert("negatives_per_row".into(), k as u64);
    manifest.counts.insert("steps".into(), step);
    for (reason, n) in &skipped_rows {
        manifest.counts.insert(format!("skipped_rows.{reason}"), *n);
    }
    manifest.timings.insert("seconds".into(), seconds);
    manifest
        .timings
        .insert("seconds_per_step".into(), seconds_per_step);
    manifest.write(&config.output.join("manifest.json"))?;
    Ok(TrainSummary {
        rows: rows.len(),
        skipped_rows,
        steps: step,
        resumed_from,
        first_loss: losses.first().map(|&l| l as f64),
        last_loss: losses.last().map(|&l| l as f64),
        seconds,
        seconds_per_step,
        evals,
    })
}

/// What one step needs besides the batch.
struct Trainer<'a> {
    model: &'a TrainableModel,
    /// A cross-encoder's trainable pooler.
    pooler: Option<&'a (Var, Var)>,
    tokenizer: &'a TextTokenizer,
    sentence: &'a SentenceConfig,
    config: &'a TrainConfig,
    dropout: bool,
}

impl Trainer<'_> {
    /// Embeds token sequences `[n, d]`, with dropout drawn from `seed` when training.
    fn embed(&self, ids: &[Vec<u32>], seed: u64) -> Result<Tensor> {
        let batch = Batch::new(ids, None, self.model.device())?;
        let mut dropout = Dropout::new(seed);
        let hidden = self
            .model
            .forward(&batch, self.dropout.then_some(&mut dropout))?;
        pool(
            &hidden,
            &batch.mask,
            self.sentence.pooling,
            self.sentence.normalize,
        )
    }

    /// A cross-encoder step: every (query, positive) and (query, negative) pair scored in one
    /// pass, the row's logits `[B, 1 + K]` into the listwise or binary loss.
    fn cross_step(&self, batch: &[&Row], seed: u64) -> Result<(f32, GradStore)> {
        let b = batch.len();
        let k = batch[0].negatives.len();
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(b * (1 + k));
        for r in batch {
            pairs.push((&r.anchor, &r.positive));
            pairs.extend(r.negatives.iter().map(|n| (r.anchor.as_str(), n.as_str())));
        }
        let (ids, types): (Vec<Vec<u32>>, Vec<Vec<u32>>) =
            self.tokenizer.encode_pairs(&pairs)?.into_iter().unzip();
        let tensors = Batch::new(&ids, Some(&types), self.model.device())?;
        let mut dropout = Dropout::new(seed);
        let hidden = self
            .model
            .forward(&tensors, self.dropout.then_some(&mut dropout))?;
        let pooler = self.pooler.map(|(w, b)| (w.as_tensor(), b.as_tensor()));
        let encoder = self.model.encoder().ok_or_else(|| {
            Error::Invalid("foil's cross-encoders are BERT-family encoders".into())
        })?;
        let logits = encoder
            .classify(&hidden, pooler)?
            .reshape((b, 1 + k))
            .ce()?;
        let loss = match self.config.cross_loss {
            CrossLoss::Listwise => {
                let max = logits.max_keepdim(1).ce()?.detach();
                let lse = logits
                    .broadcast_sub(&max)
                    .ce()?
                    .exp()
                    .ce()?
                    .sum_keepdim(1)
                    .ce()?
                    .log()
                    .ce()?
                    .add(&max)
                    .ce()?;
                lse.sub(&logits.narrow(1, 0, 1).ce()?)
                    .ce()?
                    .mean_all()
                    .ce()?
            }
            CrossLoss::Bce => {
                // softplus(−z) for the positive, softplus(z) for negatives;
                // softplus(x) = max(x, 0) + ln(1 + e^(−|x|)).
                let mut sign = vec![1f32; b * (1 + k)];
                for row in sign.chunks_mut(1 + k) {
                    row[0] = -1.0;
                }
                let sign = Tensor::from_vec(sign, (b, 1 + k), self.model.device()).ce()?;
                let x = logits.mul(&sign).ce()?;
                let soft = x
                    .relu()
                    .ce()?
                    .add(
                        &((x.abs().ce()?.neg().ce()?.exp().ce()? + 1.0)
                            .ce()?
                            .log()
                            .ce()?),
                    )
                    .ce()?;
                soft.mean_all().ce()?
            }
        };
        let value = loss.to_scalar::<f32>().ce()?;
        Ok((value, loss.backward().ce()?))
    }

    /// The loss of a batch and the gradients of the model's variables.
    fn step(&self, batch: &[&Row], seed: u64) -> Result<(f32, GradStore)> {
        if self.config.model_type == ModelType::CrossEncoder {
            return self.cross_step(batch, seed);
        }
        let b = batch.len();
        let k = batch[0].negatives.len();
        let with_prompt = |prompt: &str, t: &str| format!("{prompt}{t}");
        let mut texts: Vec<String> = batch
            .iter()
            .map(|r| with_prompt(&self.sentence.query_prompt, &r.anchor))
            .collect();
        texts.extend(
            batch
                .iter()
                .map(|r| with_prompt(&self.sentence.passage_prompt, &r.positive)),
        );
        for r in batch {
            texts.extend(
                r.negatives
                    .iter()
                    .map(|n| with_prompt(&self.sentence.passage_prompt, n)),
            );
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids = self.tokenizer.encode(&refs)?;
        // Chunks: queries, then passages, each split into forward passes of `mini_batch`.
        let chunk = self.config.mini_batch.unwrap_or(usize::MAX).max(1);
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for (start, end) in [(0, b), (b, ids.len())] {
            let mut s = start;
            while s < end {
                let e = s.saturating_add(chunk).min(end);
                spans.push((s, e));
                s = e;
            }
        }
        let chunk_seed = |c: usize| seed ^ (c as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
        let teacher = match &batch[0].scores {
            Some(_) => {
                let flat: Vec<f32> = batch
                    .iter()
                    .flat_map(|r| r.scores.clone().unwrap_or_default())
                    .collect();
                Some(Tensor::from_vec(flat, (b, k + 1), self.model.device()).ce()?)
            }
            None => None,
        };
        let loss_of = |all: &Tensor| -> Result<Tensor> {
            let queries = all.narrow(0, 0, b).ce()?;
            let positives = all.narrow(0, b, b).ce()?;
            let negatives = (k > 0)
                .then(|| all.narrow(0, 2 * b, b * k))
                .transpose()
                .ce()?;
            let mut input = LossInput::pairs(&queries, &positives);
            if let Some(n) = &negatives {
                input = input.with_negatives(n);
            }
            if let Some(t) = &teacher {
                input = input.with_teacher(t);
            }
            self.config
                .loss
                .compute(&input, &mut SplitMix64::new(seed ^ 0x5EED))
        };

        if spans.len() <= 2 && self.config.mini_batch.is_none() {
            // One pass with the graph: queries and passages embedded, loss, backward.
            let parts = spans
                .iter()
                .enumerate()
                .map(|(c, &(s, e))| self.embed(&ids[s..e], chunk_seed(c)))
                .collect::<Result<Vec<_>>>()?;
            let all = Tensor::cat(&parts, 0).ce()?;
            let loss = loss_of(&all)?;
            let value = loss.to_scalar::<f32>().ce()?;
            return Ok((value, loss.backward().ce()?));
        }

        // GradCache: embeddings without their graphs, the loss's gradient on them, then each
        // chunk again with its graph.
        let parts = spans
            .iter()
            .enumerate()
            .map(|(c, &(s, e))| self.embed(&ids[s..e], chunk_seed(c)).map(|t| t.detach()))
            .collect::<Result<Vec<_>>>()?;
        let cached = Var::from_tensor(&Tensor::cat(&parts, 0).ce()?).ce()?;
        drop(parts);
        let loss = loss_of(cached.as_tensor())?;
        let value = loss.to_scalar::<f32>().ce()?;
        let embedding_grads = loss.backward().ce()?;
        let g = embedding_grads
            .get(cached.as_tensor())
            .ok_or_else(|| Error::Invalid("the loss does not depend on the embeddings".into()))?
            .clone();
        let mut total: Option<GradStore> = None;
        for (c, &(s, e)) in spans.iter().enumerate() {
            let emb = self.embed(&ids[s..e], chunk_seed(c))?;
            let surrogate = emb.mul(&g.narrow(0, s, e - s).ce()?).ce()?.sum_all().ce()?;
            let grads = surrogate.backward().ce()?;
            total = Some(match total {
                None => grads,
                Some(mut acc) => {
                    for (_, var) in self.model.vars() {
                        if let Some(new) = grads.get(var.as_tensor()) {
                            let sum = match acc.get(var.as_tensor()) {
                                Some(old) => old.add(new).ce()?,
                                None => new.clone(),
                            };
                            acc.insert(var.as_tensor(), sum);
                        }
                    }
                    acc
                }
            });
        }
        Ok((value, total.expect("a batch has at least one chunk")))
    }
}

/// Hash of the inputs and settings that determine the run's weights.
fn run_hash(config: &TrainConfig, model_dir: &Path, k: usize) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(foil_core::fsutil::sha256_file(&config.train_file)?);
    h.update(foil_core::fsutil::sha256_file(
        &model_dir.join("model.safetensors"),
    )?);
    let mut settings = serde_json::to_value(config).unwrap_or_default();
    if let Value::Object(map) = &mut settings {
        for volatile in [
            "output",
            "threads",
            "checkpoint_every",
            "device",
            "eval",
            "model",
            "train_file",
        ] {
            map.remove(volatile);
        }
    }
    h.update(settings.to_string());
    h.update(k.to_le_bytes());
    Ok(foil_core::fsutil::hex(&h.finalize()))
}

/// Writes `checkpoint/` (weights, optimizer state, run state) atomically: a temporary
/// folder renamed over the old one.
fn save_checkpoint(
    dir: &Path,
    vars: &[(String, Var)],
    optimizer: &AdamW,
    run: &str,
    step: u64,
    losses: &[f32],
) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    save_vars(vars, &tmp.join("model.safetensors"), "")?;
    optimizer.save(&tmp.join("optimizer.safetensors"))?;
    let state = State {
        run: run.to_string(),
        step,
        losses: losses.to_vec(),
    };
    write_atomic(
        &tmp.join("state.json"),
        &serde_json::to_vec_pretty(&state).unwrap_or_default(),
    )?;
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Saves variables as safetensors under their names, `prefix` added to every name that is not
/// the classifier's.
fn save_vars(vars: &[(String, Var)], path: &Path, prefix: &str) -> Result<()> {
    let tensors: std::collections::HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| {
            let name = if n.starts_with("classifier.") {
                n.clone()
            } else {
                format!("{prefix}{n}")
            };
            (name, v.as_tensor().clone())
        })
        .collect();
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| Error::format(path, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes a trained cross-encoder as a Hugging Face `…ForSequenceClassification` folder (the
/// encoder's names under the family's prefix — `bert.`, `roberta.`, `mpnet.` — and
/// `classifier.*`), with the base's config and tokenizer.
fn save_cross_encoder(
    vars: &[(String, Var)],
    family: Family,
    base: &Path,
    out: &Path,
) -> Result<()> {
    let prefix = match family {
        Family::Bert => "bert.",
        Family::Roberta => "roberta.",
        Family::MPNet => "mpnet.",
    };
    save_vars(vars, &out.join("model.safetensors"), prefix)?;
    for name in COPIED {
        let from = base.join(name);
        if from.is_file() {
            let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
            write_atomic(&out.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// Writes the trained model as a sentence-transformers folder: the weights, the base folder's
/// config and tokenizer files, and modules.json / 1_Pooling / sentence_bert_config.json
/// describing the pooling and normalization used in training.
fn save_model_folder(
    model: &TrainableModel,
    base: &Path,
    sentence: &SentenceConfig,
    out: &Path,
) -> Result<()> {
    // The trained variables, plus the base's pooler (unused by mean or CLS pooling, but
    // Hugging Face's BertModel expects it).
    let mut tensors = model.tensors();
    let base_weights = Weights::load(base, &Device::Cpu)?;
    for name in ["pooler.dense.weight", "pooler.dense.bias"] {
        if base_weights.contains(name) && !tensors.contains_key(name) {
            let shape = base_weights.shape(name)?;
            tensors.insert(name.to_string(), base_weights.get(name, &shape)?.clone());
        }
    }
    let weights_path = out.join("model.safetensors");
    let tmp = out.join("model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| Error::format(&weights_path, e.to_string()))?;
    std::fs::rename(&tmp, &weights_path).map_err(|e| Error::io(&weights_path, e))?;
    for name in COPIED {
        let from = base.join(name);
        if from.is_file() {
            let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
            write_atomic(&out.join(name), &bytes)?;
        }
    }
    let mode = |p: Pooling| sentence.pooling == p;
    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if sentence.normalize {
        modules.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
        std::fs::create_dir_all(out.join("2_Normalize")).map_err(|e| Error::io(out, e))?;
    }
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    write_atomic(&out.join("modules.json"), &pretty(&json!(modules)))?;
    std::fs::create_dir_all(out.join("1_Pooling")).map_err(|e| Error::io(out, e))?;
    write_atomic(
        &out.join("1_Pooling/config.json"),
        &pretty(&json!({
            "word_embedding_dimension": model.hidden_size(),
            "pooling_mode_cls_token": mode(Pooling::Cls),
            "pooling_mode_mean_tokens": mode(Pooling::Mean),
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
            "pooling_mode_weightedmean_tokens": false,
            "pooling_mode_lasttoken": mode(Pooling::LastToken),
            "include_prompt": true
        })),
    )?;
    write_atomic(
        &out.join("sentence_bert_config.json"),
        &pretty(&json!({"max_seq_length": sentence.max_length, "do_lower_case": false})),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(name: &str, lines: &[serde_json::Value]) -> Result<Vec<Row>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        if crate::table::is_parquet(&path) {
            crate::table::write_parquet(&path, lines)?;
        } else {
            crate::table::write_jsonl(&path, lines)?;
        }
        read_rows(&path)
    }

    #[test]
    fn reads_one_row_per_positive_with_scores_where_every_passage_has_one() {
        let scored = [
            json!({"anchor": "q", "positive": "p", "negative_1": "n1", "negative_2": "n2", "scores": [0.9, 0.5, 0.25]}),
        ];
        let rows = rows_of("t.parquet", &scored).unwrap();
        assert_eq!(
            rows,
            [Row {
                anchor: "q".into(),
                positive: "p".into(),
                negatives: vec!["n1".into(), "n2".into()],
                scores: Some(vec![0.9, 0.5, 0.25]),
            }]
        );
        let tevatron = [
            json!({"query_id": "1", "query": "q", "positive_passages": [{"docid": "a", "title": "T", "text": "p"}, {"docid": "b", "title": "", "text": "p2"}], "negative_passages": [{"docid": "c", "title": "", "text": "n"}]}),
        ];
        let rows = rows_of("t.jsonl", &tevatron).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].positive.as_str(), rows[1].positive.as_str()),
            ("T p", "p2")
        );
        assert_eq!(rows[1].negatives, ["n"]);
        assert_eq!(rows[0].scores, None);
        // Triplets stay one row each (sentence-transformers' sampling), not merged.
        let triplets = [
            json!({"anchor": "q", "positive": "p", "negative": "n1"}),
            json!({"anchor": "q", "positive": "p", "negative": "n2"}),
        ];
        assert_eq!(rows_of("t.jsonl", &triplets).unwrap().len(), 2);
    }

    #[test]
    fn ids_without_texts_are_an_error_naming_the_line() {
        let negatives = [
            json!({"query_id": "q", "positive_id": "d", "positive_score": 1.0, "method": "bm25", "negatives": [{"doc_id": "x", "score": 0.5, "rank": 1}]}),
        ];
        let err = rows_of("negatives.jsonl", &negatives)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("negatives.jsonl:1: negatives records name passages by id"),
            "{err}"
        );
    }
}
