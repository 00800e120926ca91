//! One training step: the batch's texts tokenized and embedded (or, for a cross-encoder, its
//! pairs scored), the loss, and the gradients of the model's variables — in one pass, or as
//! GradCache when `mini_batch` is smaller than the batch.

use candle_core::{backprop::GradStore, Tensor, Var};
use foil_candle::config::SentenceConfig;
use foil_candle::model::{pool, Batch, CandleModel, Dropout};
use foil_candle::tokenizer::TextTokenizer;
use foil_core::rng::SplitMix64;
use foil_core::{Error, Result};
use foil_train::LossInput;

use super::rows::Row;
use super::{ModelType, TrainConfig};

/// What one step needs besides the batch.
pub(super) struct Trainer<'a> {
    pub model: &'a CandleModel,
    /// A cross-encoder's trainable pooler.
    pub pooler: Option<&'a (Var, Var)>,
    pub tokenizer: &'a TextTokenizer,
    pub sentence: &'a SentenceConfig,
    pub config: &'a TrainConfig,
    pub dropout: bool,
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
        let logits = encoder.classify(&hidden, pooler)?.reshape((b, 1 + k))?;
        let loss = self.config.cross_loss.compute(&logits)?;
        let value = loss.to_scalar::<f32>()?;
        Ok((value, loss.backward()?))
    }

    /// The loss of a batch and the gradients of the model's variables.
    pub(super) fn step(&self, batch: &[&Row], seed: u64) -> Result<(f32, GradStore)> {
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
                Some(Tensor::from_vec(flat, (b, k + 1), self.model.device())?)
            }
            None => None,
        };
        let loss_of = |all: &Tensor| -> Result<Tensor> {
            let queries = all.narrow(0, 0, b)?;
            let positives = all.narrow(0, b, b)?;
            let negatives = (k > 0).then(|| all.narrow(0, 2 * b, b * k)).transpose()?;
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
            let all = Tensor::cat(&parts, 0)?;
            let loss = loss_of(&all)?;
            let value = loss.to_scalar::<f32>()?;
            return Ok((value, loss.backward()?));
        }

        // GradCache: embeddings without their graphs, the loss's gradient on them, then each
        // chunk again with its graph.
        let parts = spans
            .iter()
            .enumerate()
            .map(|(c, &(s, e))| self.embed(&ids[s..e], chunk_seed(c)).map(|t| t.detach()))
            .collect::<Result<Vec<_>>>()?;
        let cached = Var::from_tensor(&Tensor::cat(&parts, 0)?)?;
        drop(parts);
        let loss = loss_of(cached.as_tensor())?;
        let value = loss.to_scalar::<f32>()?;
        let embedding_grads = loss.backward()?;
        let g = embedding_grads
            .get(cached.as_tensor())
            .ok_or_else(|| Error::Invalid("the loss does not depend on the embeddings".into()))?
            .clone();
        let mut total: Option<GradStore> = None;
        for (c, &(s, e)) in spans.iter().enumerate() {
            let emb = self.embed(&ids[s..e], chunk_seed(c))?;
            let surrogate = emb.mul(&g.narrow(0, s, e - s)?)?.sum_all()?;
            let grads = surrogate.backward()?;
            total = Some(match total {
                None => grads,
                Some(mut acc) => {
                    for (_, var) in self.model.vars() {
                        if let Some(new) = grads.get(var.as_tensor()) {
                            let sum = match acc.get(var.as_tensor()) {
                                Some(old) => old.add(new)?,
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
