//! [`CandleBert`]: BERT on candle tensors with autograd, for fine-tuning.
//!
//! candle-transformers' BERT cannot be trained: its fused LayerNorm has no backward pass and its
//! dropout does nothing, so gradients silently vanish. This model is built only from candle
//! operations that have backward passes (matmul, broadcast arithmetic, exp, sqrt, GELU,
//! index_select), with LayerNorm and softmax written out, and real, seeded dropout. It follows
//! Hugging Face's `BertModel` (and `MPNetModel`, see [`Family`]) operation for operation, so its
//! gradients equal PyTorch's; the golden test `tests/grad_parity.rs` checks every parameter.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use foil_core::rng::SplitMix64;
use foil_core::{Error, Result};
use rayon::prelude::*;

use crate::config::{relative_bucket, BertConfig, Family, ModelConfig, Pooling};
use crate::decoder::CandleDecoder;
use crate::fused;
use crate::kernels;
use crate::modernbert::CandleModernBert;
use crate::weights::Weights;

/// Seeded dropout: each call draws its mask from the generator, so a training run with the same
/// seed drops the same units.
pub struct Dropout {
    rng: SplitMix64,
}

impl Dropout {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
        }
    }

    /// Zeroes each element with probability `p` and scales the rest by 1 / (1 − p).
    pub fn apply(&mut self, x: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        let Some(factors) = self.factors(x.elem_count(), p) else {
            return Ok(x.clone());
        };
        if fused::supported(x) {
            return fused::dropout(x, factors);
        }
        let mask = Tensor::from_vec(factors, x.shape(), x.device())?;
        x.mul(&mask)
    }

    /// The next `n` dropout factors: 0 with probability `p`, else 1 / (1 − p); `None` when `p`
    /// is 0 (no dropout, and no draws).
    pub fn factors(&mut self, n: usize, p: f64) -> Option<Vec<f32>> {
        if p <= 0.0 {
            return None;
        }
        let keep = 1.0 / (1.0 - p) as f32;
        // `next_f64() < p` for each draw, compared as integers, in parallel pieces of the one
        // sequence (the same values as drawn one after another).
        let threshold = (p * (1u64 << 53) as f64).ceil() as u64;
        const PIECE: usize = 1 << 16;
        let mut factors = vec![0f32; n];
        factors
            .par_chunks_mut(PIECE)
            .enumerate()
            .for_each(|(i, piece)| {
                let rng = self.rng.ahead((i * PIECE) as u64);
                kernels::dropout_factors(piece, &rng, threshold, keep);
            });
        self.rng = self.rng.ahead(n as u64);
        Some(factors)
    }
}

/// `x Wᵀ (+ b)` over the last dimension.
pub(crate) struct Linear {
    pub(crate) w: Var,
    pub(crate) b: Option<Var>,
}

impl Linear {
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        linear(x, self.w.as_tensor(), self.b.as_ref().map(Var::as_tensor))
    }

    /// `x Wᵀ` without the bias.
    pub(crate) fn project(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        project(x, self.w.as_tensor())
    }
}

/// `x wᵀ (+ b)` over the last dimension.
fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    if x.rank() == 2 && fused::supported(x) {
        return fused::linear(x, w, b);
    }
    let y = project(x, w)?;
    match b {
        Some(b) if fused::supported(&y) => fused::bias_add(&y, b),
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `x wᵀ` over the last dimension.
fn project(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if x.rank() == 2 {
        // Rows already: no reshapes, which would be nodes of the graph (and buffers in backward).
        return match fused::supported(x) {
            true => fused::linear(x, w, None),
            false => x.matmul(&w.t()?),
        };
    }
    let dims = x.dims().to_vec();
    let (rows, inner) = (
        dims[..dims.len() - 1].iter().product::<usize>(),
        dims[dims.len() - 1],
    );
    let y = x.reshape((rows, inner))?.matmul(&w.t()?)?;
    let mut out_dims = dims;
    let last = out_dims.len() - 1;
    out_dims[last] = w.dims()[0];
    y.reshape(out_dims)
}

pub(crate) struct LayerNorm {
    pub(crate) w: Var,
    /// `None` for LayerNorms without bias (ModernBERT).
    pub(crate) b: Option<Var>,
    pub(crate) eps: f64,
}

impl LayerNorm {
    /// (x − mean) / √(var + eps) · w (+ b) over the last dimension: one fused operation on the
    /// CPU, written out from candle's operations elsewhere (both have backward passes).
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if fused::supported(x) {
            let b = self.b.as_ref().map(Var::as_tensor);
            return fused::layer_norm(x, self.w.as_tensor(), b, self.eps);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let scaled = normed.broadcast_mul(self.w.as_tensor())?;
        match &self.b {
            Some(b) => scaled.broadcast_add(b.as_tensor()),
            None => Ok(scaled),
        }
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    ln1: LayerNorm,
    up: Linear,
    down: Linear,
    ln2: LayerNorm,
}

impl Layer {
    /// The query, key and value projections side by side, `[B, L, 3H]`, as one product (the
    /// three weights are concatenated for it; the gradient flows back to each).
    fn qkv(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let parts = [&self.query, &self.key, &self.value];
        let w = Tensor::cat(&parts.map(|p| p.w.as_tensor()), 0)?;
        let b = match parts.map(|p| p.b.as_ref().map(Var::as_tensor)) {
            [Some(q), Some(k), Some(v)] => Some(Tensor::cat(&[q, k, v], 0)?),
            [None, None, None] => None,
            _ => candle_core::bail!("query, key and value do not all have a bias"),
        };
        linear(x, &w, b.as_ref())
    }
}

/// What every layer's attention needs of a batch.
struct AttentionMasks {
    /// Sequences and tokens per sequence, (B, L).
    batch: (usize, usize),
    /// Additive mask `[B, 1, 1, L]`: 0 for tokens, the most negative float for padding.
    bias: Tensor,
    /// MPNet's relative position bias `[1, heads, L, L]`.
    relative: Option<Tensor>,
    /// Real tokens per sequence where the fused operations run (float32 on the CPU).
    lengths: Option<Vec<usize>>,
}

/// Softmax over the last dimension; the max is detached (softmax is shift-invariant).
pub(crate) fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Scaled dot-product attention of heads `[B, n, L, d]` with an additive bias broadcast to
/// `[B, n, L, L]` and optional dropout on the probabilities; returns the context `[B, L, n·d]`.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    dropout: Option<(&mut Dropout, f64)>,
) -> candle_core::Result<Tensor> {
    let (b, n, l, d) = q.dims4()?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    let mut probs = softmax(&scores.broadcast_add(bias)?)?;
    if let Some((dp, p)) = dropout {
        probs = dp.apply(&probs, p)?;
    }
    probs
        .matmul(v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, l, n * d))
}

/// Rotary position tables `[L, d]` (cos, sin) for positions 0..L, as transformers computes
/// them in float32: frequencies θ^(−2i/d) for the first half of each head, repeated for the
/// second.
pub(crate) fn rotary_tables(
    l: usize,
    d: usize,
    theta: f64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let theta = theta as f32;
    let inv: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / d as f32))
        .collect();
    let mut cos = Vec::with_capacity(l * d);
    let mut sin = Vec::with_capacity(l * d);
    for pos in 0..l {
        for _half in 0..2 {
            for f in &inv {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (l, d), device)?,
        Tensor::from_vec(sin, (l, d), device)?,
    ))
}

/// Rotary positions on heads `[B, n, L, d]`: x·cos + rotate_half(x)·sin, where rotate_half
/// swaps the halves of each head and negates the new first half.
pub(crate) fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let first = x.narrow(D::Minus1, 0, half)?;
    let second = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
    x.broadcast_mul(cos)?.add(&rotated.broadcast_mul(sin)?)
}

/// A BERT-family encoder built from candle operations (optionally with a sequence-classification
/// head): trainable, and the CUDA inference path.
pub struct CandleBert {
    /// Inference only: each layer's output is detached, so that the autograd graph of the
    /// layers before is freed (memory of one layer, not of all).
    inference: bool,
    config: BertConfig,
    device: Device,
    vars: Vec<(String, Var)>,
    word: Var,
    position: Var,
    /// `None` for families without token types (MPNet).
    token_type: Option<Var>,
    /// MPNet's `[buckets, heads]` relative-position attention bias.
    relative_bias: Option<Var>,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
    /// `classifier.weight` / `classifier.bias` of a cross-encoder (BERT), or
    /// `classifier.out_proj.*` of an (XLM-)RoBERTa one (bge-reranker).
    classifier: Option<Linear>,
    /// (XLM-)RoBERTa's `classifier.dense` (+ tanh) before `out_proj`: BERT's pooler by another
    /// name, part of the head.
    head_dense: Option<Linear>,
}

/// A batch of padded token sequences on a device.
pub struct Batch {
    /// `[B, L]` u32 token ids.
    pub ids: Tensor,
    /// `[B, L]` u32 token type ids.
    pub type_ids: Tensor,
    /// `[B, L]` f32: 1 for real tokens, 0 for padding.
    pub mask: Tensor,
}

impl Batch {
    /// Pads `seqs` (and their type ids, zeros when `None`) with id 0 to the longest.
    pub fn new(seqs: &[Vec<u32>], type_ids: Option<&[Vec<u32>]>, device: &Device) -> Result<Self> {
        let b = seqs.len();
        let l = seqs.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; b * l];
        let mut types = vec![0u32; b * l];
        let mut mask = vec![0f32; b * l];
        for (i, s) in seqs.iter().enumerate() {
            ids[i * l..i * l + s.len()].copy_from_slice(s);
            if let Some(t) = type_ids {
                types[i * l..i * l + s.len()].copy_from_slice(&t[i]);
            }
            mask[i * l..i * l + s.len()]
                .iter_mut()
                .for_each(|m| *m = 1.0);
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (b, l), device)?,
            type_ids: Tensor::from_vec(types, (b, l), device)?,
            mask: Tensor::from_vec(mask, (b, l), device)?,
        })
    }
}

impl CandleBert {
    /// Builds the model from loaded weights (copied into fresh variables). Variables are named
    /// as the family's checkpoints name them, so [`CandleBert::save`] writes a folder of the
    /// same family.
    pub fn new(config: &BertConfig, w: &Weights, device: &Device) -> Result<Self> {
        let h = config.hidden_size;
        let i = config.intermediate_size;
        let family = config.family();
        let mut vars = Vec::new();
        let mut var = |bert_name: &str, shape: &[usize]| -> Result<Var> {
            let name = family.tensor_name(bert_name);
            let t = w.get(&name, shape)?.to_device(device)?;
            let v = Var::from_tensor(&t)?;
            vars.push((name, v.clone()));
            Ok(v)
        };
        let word = var("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = var(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = match family {
            Family::Bert | Family::Roberta => Some(var(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?),
            Family::MPNet => None,
        };
        let eps = config.layer_norm_eps;
        let emb_ln = LayerNorm {
            w: var("embeddings.LayerNorm.weight", &[h])?,
            b: Some(var("embeddings.LayerNorm.bias", &[h])?),
            eps,
        };
        let mut layers = Vec::new();
        for l in 0..config.num_hidden_layers {
            let p = |s: &str| format!("encoder.layer.{l}.{s}");
            let mut lin = |s: &str, out: usize, inp: usize| -> Result<Linear> {
                Ok(Linear {
                    w: var(&p(&format!("{s}.weight")), &[out, inp])?,
                    b: Some(var(&p(&format!("{s}.bias")), &[out])?),
                })
            };
            let query = lin("attention.self.query", h, h)?;
            let key = lin("attention.self.key", h, h)?;
            let value = lin("attention.self.value", h, h)?;
            let attn_out = lin("attention.output.dense", h, h)?;
            let up = lin("intermediate.dense", i, h)?;
            let down = lin("output.dense", h, i)?;
            let ln1 = LayerNorm {
                w: var(&p("attention.output.LayerNorm.weight"), &[h])?,
                b: Some(var(&p("attention.output.LayerNorm.bias"), &[h])?),
                eps,
            };
            let ln2 = LayerNorm {
                w: var(&p("output.LayerNorm.weight"), &[h])?,
                b: Some(var(&p("output.LayerNorm.bias"), &[h])?),
                eps,
            };
            layers.push(Layer {
                query,
                key,
                value,
                attn_out,
                ln1,
                up,
                down,
                ln2,
            });
        }
        let relative_bias = match config.relative_buckets() {
            Some(buckets) => Some(var(
                "encoder.relative_attention_bias.weight",
                &[buckets, config.num_attention_heads],
            )?),
            None => None,
        };
        let n = config.labels();
        let mut linear = |name: &str, out: usize| -> Result<Linear> {
            Ok(Linear {
                w: var(&format!("{name}.weight"), &[out, h])?,
                b: Some(var(&format!("{name}.bias"), &[out])?),
            })
        };
        let (classifier, head_dense) = if w.contains("classifier.weight") {
            (Some(linear("classifier", n)?), None)
        } else if w.contains("classifier.out_proj.weight") {
            let dense = linear("classifier.dense", h)?;
            (Some(linear("classifier.out_proj", n)?), Some(dense))
        } else {
            (None, None)
        };
        Ok(Self {
            config: config.clone(),
            inference: false,
            device: device.clone(),
            vars,
            word,
            position,
            token_type,
            relative_bias,
            emb_ln,
            layers,
            classifier,
            head_dense,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Frees each layer's autograd graph as soon as the next layer has its input: for encoding,
    /// where no gradient is taken.
    pub fn set_inference(&mut self, on: bool) {
        self.inference = on;
    }

    /// Every trainable variable with its Hugging Face name, in a fixed order.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Last hidden states `[B, L, H]` of a batch; dropout is applied when `dropout` is given.
    pub fn forward(&self, batch: &Batch, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let c = &self.config;
        let (b, l) = batch.ids.dims2()?;
        let h = c.hidden_size;
        let ids = batch.ids.flatten_all()?;
        let words = self
            .word
            .as_tensor()
            .index_select(&ids, 0)?
            .reshape((b, l, h))?;
        // Padding gets positions too; attention and pooling never read them.
        let positions = self
            .position
            .as_tensor()
            .narrow(0, c.position_offset(), l)?;
        let mut x = words.broadcast_add(&positions)?;
        if let Some(token_type) = &self.token_type {
            let types = token_type
                .as_tensor()
                .index_select(&batch.type_ids.flatten_all()?, 0)?
                .reshape((b, l, h))?;
            x = x.add(&types)?;
        }
        x = self.emb_ln.forward(&x)?;
        if let Some(dp) = dropout.as_deref_mut() {
            x = dp.apply(&x, c.hidden_dropout_prob)?;
        }
        // The layers work on the rows of all tokens, [B·L, H].
        let mut x = x.reshape((b * l, h))?;
        // Additive attention mask: 0 for tokens, the most negative float for padding.
        let masks = AttentionMasks {
            batch: (b, l),
            bias: ((batch.mask.clone() - 1.0)? * f32::MAX as f64)?.reshape((b, 1, 1, l))?,
            relative: match &self.relative_bias {
                Some(table) => Some(self.relative_bias(table, l)?),
                None => None,
            },
            lengths: match fused::supported(&x) {
                true => Some(lengths(&batch.mask)?),
                false => None,
            },
        };
        for layer in &self.layers {
            let ctx = self.self_attention(layer, &x, &masks, dropout.as_deref_mut())?;
            let attn = self.residual(&layer.attn_out, &ctx, &x, dropout.as_deref_mut())?;
            x = layer.ln1.forward(&attn)?;
            let inner = self.intermediate(&layer.up, &x)?;
            let out = self.residual(&layer.down, &inner, &x, dropout.as_deref_mut())?;
            x = layer.ln2.forward(&out)?;
            if self.inference {
                x = x.detach();
            }
        }
        Ok(x.reshape((b, l, h))?)
    }

    /// `dropout(x Wᵀ + b) + residual`: the output projection of an attention or feed-forward
    /// block and its residual connection; on the CPU, one fused operation after the product.
    fn residual(
        &self,
        linear: &Linear,
        x: &Tensor,
        residual: &Tensor,
        dropout: Option<&mut Dropout>,
    ) -> candle_core::Result<Tensor> {
        let p = self.config.hidden_dropout_prob;
        if let (Some(bias), true) = (&linear.b, fused::supported(x)) {
            let factors = dropout.and_then(|dp| dp.factors(residual.elem_count(), p));
            let y = linear.project(x)?;
            return fused::bias_dropout_add(&y, bias.as_tensor(), residual, factors);
        }
        let mut y = linear.forward(x)?;
        if let Some(dp) = dropout {
            y = dp.apply(&y, p)?;
        }
        y.add(residual)
    }

    /// One layer's attention context `[B·L, H]` for hidden states `x` `[B·L, H]`, before its
    /// output projection. On the CPU it
    /// is one QKV product and one fused operation (MPNet, with its relative bias, fuses only the
    /// masked softmax); elsewhere it is written out from candle's operations.
    fn self_attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        masks: &AttentionMasks,
        mut dropout: Option<&mut Dropout>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let ((b, l), h) = (masks.batch, c.hidden_size);
        let (heads, d) = (c.num_attention_heads, c.head_dim());
        let p = c.attention_probs_dropout_prob;
        if let (Some(lengths), None) = (&masks.lengths, &masks.relative) {
            let qkv = layer.qkv(x)?;
            let factors = dropout.and_then(|dp| dp.factors(b * heads * l * l, p));
            return fused::attention(&qkv, heads, lengths, factors);
        }
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, l, heads, d))?.transpose(1, 2)?.contiguous()
        };
        let q = split(layer.query.forward(x)?)?;
        let k = split(layer.key.forward(x)?)?;
        let v = split(layer.value.forward(x)?)?;
        let raw = q.matmul(&k.t()?.contiguous()?)?;
        let scale = 1.0 / (d as f64).sqrt();
        let mut scores = (raw * scale)?;
        if let Some(bias) = &masks.relative {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = match &masks.lengths {
            Some(lengths) => {
                let factors = dropout
                    .as_deref_mut()
                    .and_then(|dp| dp.factors(scores.elem_count(), p));
                fused::masked_softmax(&scores, 1.0, lengths, factors)?
            }
            None => {
                let probs = softmax(&scores.broadcast_add(&masks.bias)?)?;
                match dropout {
                    Some(dp) => dp.apply(&probs, p)?,
                    None => probs,
                }
            }
        };
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * l, h))
    }

    /// The feed-forward block's inner activation `act(x Wᵀ + b)`; erf GELU is one fused
    /// operation on the CPU.
    fn intermediate(&self, up: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
        let act = self.config.hidden_act.as_str();
        if let (Some(bias), "gelu", true) = (&up.b, act, fused::supported(x)) {
            return fused::bias_gelu(&up.project(x)?, bias.as_tensor());
        }
        let inner = up.forward(x)?;
        match act {
            "gelu" => inner.gelu_erf(),
            "relu" => inner.relu(),
            _ => inner.gelu(),
        }
    }

    /// MPNet's attention bias `[1, heads, L, L]` for sequences of length `l`, looked up in the
    /// `[buckets, heads]` table (so its gradient reaches the table).
    fn relative_bias(&self, table: &Var, l: usize) -> candle_core::Result<Tensor> {
        let (buckets, heads) = table.as_tensor().dims2()?;
        let index: Vec<u32> = (0..l)
            .flat_map(|query| (0..l).map(move |key| relative_bucket(query, key, buckets) as u32))
            .collect();
        let index = Tensor::from_vec(index, l * l, &self.device)?;
        table
            .as_tensor()
            .index_select(&index, 0)?
            .reshape((l, l, heads))?
            .permute((2, 0, 1))?
            .contiguous()?
            .unsqueeze(0)
    }

    /// The classifier's logits `[B, labels]` from the `[CLS]` vector (cross-encoders). Hugging
    /// Face's `BertForSequenceClassification` puts the pooler (dense + tanh, passed in as
    /// `pooler`) in between when the checkpoint has one; (XLM-)RoBERTa's head holds its own
    /// dense + tanh.
    pub fn classify(&self, hidden: &Tensor, pooler: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
        let head = self
            .classifier
            .as_ref()
            .ok_or_else(|| Error::Invalid("this checkpoint has no classifier head".into()))?;
        let mut cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        if let Some(dense) = &self.head_dense {
            cls = dense.forward(&cls)?.tanh()?;
        }
        if let Some((w, b)) = pooler {
            cls = cls.matmul(&w.t()?)?.broadcast_add(b)?.tanh()?;
        }
        Ok(head.forward(&cls)?)
    }

    /// Saves the variables as `model.safetensors` under Hugging Face's names.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_vars(&self.vars, path)
    }
}

/// The number of real tokens of each sequence of a right-padded batch's `[B, L]` mask.
pub(crate) fn lengths(mask: &Tensor) -> candle_core::Result<Vec<usize>> {
    let sums: Vec<f32> = mask.sum(1)?.to_device(&Device::Cpu)?.to_vec1()?;
    Ok(sums.into_iter().map(|n| n as usize).collect())
}

/// An additive attention bias `[B, 1, L, L]` for a right-padded batch: 0 where `sees(query,
/// key)` and the key is a real token, `blocked` elsewhere.
pub(crate) fn attention_bias(
    mask: &Tensor,
    blocked: f32,
    sees: impl Fn(usize, usize) -> bool,
) -> candle_core::Result<Tensor> {
    let (b, l) = mask.dims2()?;
    let mut bias = vec![0f32; b * l * l];
    for (s, n) in lengths(mask)?.into_iter().enumerate() {
        for query in 0..l {
            for key in 0..l {
                if key >= n || !sees(query, key) {
                    bias[(s * l + query) * l + key] = blocked;
                }
            }
        }
    }
    Tensor::from_vec(bias, (b, 1, l, l), mask.device())
}

/// Pools hidden states `[B, L, H]` of a right-padded batch into `[B, H]` (mean over real
/// tokens, `[CLS]`, or the last real token) and L2-normalizes them when `normalize`.
pub fn pool(hidden: &Tensor, mask: &Tensor, pooling: Pooling, normalize: bool) -> Result<Tensor> {
    let pooled = match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Mean => {
            let m = mask.unsqueeze(2)?;
            let sum = hidden.broadcast_mul(&m)?.sum(1)?;
            let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
            sum.broadcast_div(&count)?
        }
        Pooling::LastToken => {
            let (b, l, h) = hidden.dims3()?;
            let rows: Vec<u32> = lengths(mask)?
                .iter()
                .enumerate()
                .map(|(i, &n)| (i * l + n.max(1) - 1) as u32)
                .collect();
            let rows = Tensor::from_vec(rows, b, hidden.device())?;
            hidden.reshape((b * l, h))?.index_select(&rows, 0)?
        }
    };
    if normalize {
        let norm = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        Ok(pooled.broadcast_div(&norm)?)
    } else {
        Ok(pooled)
    }
}

/// A transformer of any family foil runs, built from candle operations: a BERT-family encoder,
/// ModernBERT or a decoder embedder. It is what training runs (autograd on any device), and
/// what encodes where the fused CPU path of [`crate::fast`] does not (CUDA, ModernBERT,
/// decoders; `for_inference` drops the autograd graph as it goes). Only BERT-family encoders
/// have a cross-encoder head.
pub enum CandleModel {
    Encoder(CandleBert),
    ModernBert(CandleModernBert),
    Decoder(CandleDecoder),
}

impl CandleModel {
    /// Builds the model of `config` from loaded weights.
    pub fn new(config: &ModelConfig, w: &Weights, device: &Device) -> Result<Self> {
        Ok(match config {
            ModelConfig::Encoder(c) => Self::Encoder(CandleBert::new(c, w, device)?),
            ModelConfig::ModernBert(c) => Self::ModernBert(CandleModernBert::new(c, w, device)?),
            ModelConfig::Decoder(c) => Self::Decoder(CandleDecoder::new(c, w, device)?),
        })
    }

    /// Loads `dir/config.json` and the folder's weights onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config = ModelConfig::read(&dir.join("config.json"))?;
        let weights = Weights::load(dir, device)?;
        Self::new(&config, &weights, device)
    }

    /// For encoding only: frees each layer's autograd graph once the next layer has its input
    /// (peak memory of one layer's activations instead of all of them).
    pub fn for_inference(mut self) -> Self {
        match &mut self {
            Self::Encoder(m) => m.set_inference(true),
            Self::ModernBert(m) => m.set_inference(true),
            Self::Decoder(m) => m.set_inference(true),
        }
        self
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        match self {
            Self::Encoder(m) => m.device(),
            Self::ModernBert(m) => m.device(),
            Self::Decoder(m) => m.device(),
        }
    }

    /// Every trainable variable with its Hugging Face name, in a fixed order.
    pub fn vars(&self) -> &[(String, Var)] {
        match self {
            Self::Encoder(m) => m.vars(),
            Self::ModernBert(m) => m.vars(),
            Self::Decoder(m) => m.vars(),
        }
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Encoder(m) => m.config().hidden_size,
            Self::ModernBert(m) => m.config().hidden_size,
            Self::Decoder(m) => m.config().hidden_size,
        }
    }

    /// Last hidden states `[B, L, H]` of a right-padded batch; dropout when `dropout` is given.
    pub fn forward(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        match self {
            Self::Encoder(m) => m.forward(batch, dropout),
            Self::ModernBert(m) => m.forward(batch, dropout),
            Self::Decoder(m) => m.forward(batch, dropout),
        }
    }

    /// The encoder, for what only encoders do (cross-encoder heads).
    pub fn encoder(&self) -> Option<&CandleBert> {
        match self {
            Self::Encoder(m) => Some(m),
            Self::ModernBert(_) | Self::Decoder(_) => None,
        }
    }

    /// The variables as named tensors, for saving.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Saves the variables as `model.safetensors` under Hugging Face's names.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_vars(self.vars(), path)
    }
}

/// Writes named variables as a float32 safetensors file on the CPU.
fn save_vars(vars: &[(String, Var)], path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| {
            v.as_tensor()
                .to_device(&Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map(|t| (n.clone(), t))
        })
        .collect::<candle_core::Result<_>>()?;
    candle_core::safetensors::save(&tensors, path).map_err(|e| Error::format(path, e.to_string()))
}
