//! [`FastBert`]: BERT inference on the CPU with fused kernels and no padding.
//!
//! Sequences of a batch are packed one after another (no padding tokens at all), so the dense
//! layers are single matrix products over all tokens of the batch, and attention runs per
//! sequence on its own length. Weights are laid out once at load time: the query, key and value
//! projections are concatenated into one matrix (one product instead of three) with the
//! 1/√d attention scale folded into the query rows. Bias, GELU, residual and LayerNorm are fused
//! passes over each output. MPNet ([`Family::MPNet`]) differs only in its position numbering, no
//! token types, and a relative-position bias added to the attention scores. The result equals
//! the candle model of [`crate::model`] and Hugging Face's `BertModel` / `MPNetModel` to
//! float32 rounding.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::amx::{self, PackedWeight};
use crate::config::{relative_bucket, BertConfig, Family};
use crate::dpbf16::{self, PackedPairs};
use crate::kernels::{
    add_bias, add_layer_norm, bias_activation, matmul, softmax_rows, Activation, Mat,
};
use crate::weights::Weights;
use foil_core::Result;

/// The arithmetic of the dense layers' products; everything else stays float32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 throughout (the reference).
    #[default]
    F32,
    /// Weights and activations rounded to bfloat16 for the dense products, float32 sums, on
    /// AMX tiles ([`amx`]) or else with AVX-512 BF16 ([`dpbf16`]); on CPUs with neither, `F32`.
    Bf16,
}

/// Whether this CPU can run [`Precision::Bf16`]: AMX ([`amx::available`]) or AVX-512 BF16
/// ([`dpbf16::available`]).
pub fn bf16_available() -> bool {
    amx::available() || dpbf16::available()
}

/// A dense layer's weight `[out, in]`: float32, or rounded to bfloat16 and packed for AMX
/// tiles or for AVX-512 BF16.
enum Dense {
    F32 {
        w: Vec<f32>,
        out: usize,
        inner: usize,
    },
    Amx(PackedWeight),
    Dpbf16(PackedPairs),
}

impl Dense {
    fn new(w: Vec<f32>, out: usize, inner: usize) -> Self {
        Dense::F32 { w, out, inner }
    }

    /// `w` `[out, inner]` rounded to bfloat16 and packed for the CPU's unit: AMX where it has
    /// it, else AVX-512 BF16. Needs [`bf16_available`].
    fn bf16(w: &[f32], out: usize, inner: usize) -> Self {
        if amx::available() {
            Dense::Amx(PackedWeight::new(w, out, inner))
        } else {
            Dense::Dpbf16(PackedPairs::new(w, out, inner))
        }
    }

    /// `y = x wᵀ` for `rows` rows of `x`.
    fn apply(&self, x: &[f32], rows: usize, y: &mut [f32], par: Parallelism) {
        match self {
            Dense::F32 { w, out, inner } => {
                let (x, w) = (Mat::new(x, rows, *inner), Mat::new(w, *out, *inner));
                matmul(x, w.t(), y, *out, false, par);
            }
            Dense::Amx(packed) => amx::matmul(x, rows, packed, y),
            Dense::Dpbf16(packed) => dpbf16::matmul(x, rows, packed, y),
        }
    }
}

struct Layer {
    /// `[3H, H]`: query (pre-scaled), key and value projections.
    qkv_w: Dense,
    qkv_b: Vec<f32>,
    out_w: Dense,
    out_b: Vec<f32>,
    ln1_w: Vec<f32>,
    ln1_b: Vec<f32>,
    up_w: Dense,
    up_b: Vec<f32>,
    down_w: Dense,
    down_b: Vec<f32>,
    ln2_w: Vec<f32>,
    ln2_b: Vec<f32>,
}

/// A BERT encoder laid out for fast CPU inference.
pub struct FastBert {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    /// The longest sequence, in tokens.
    max_tokens: usize,
    /// Position-table row of the first token.
    position_offset: usize,
    eps: f32,
    activation: Activation,
    word: Vec<f32>,
    position: Vec<f32>,
    /// `None` for families without token types (MPNet).
    token_type: Option<Vec<f32>>,
    /// MPNet's attention bias by head and distance: row `head`, column `key − query +
    /// max_tokens − 1`.
    relative_bias: Option<Vec<f32>>,
    emb_ln_w: Vec<f32>,
    emb_ln_b: Vec<f32>,
    layers: Vec<Layer>,
    /// Whether attention's scores `q kᵀ` are also a bfloat16 product (at `Precision::Bf16`).
    bf16_scores: bool,
}

/// Rows per task in parallel element-wise passes.
const ROWS_PER_TASK: usize = 64;

impl FastBert {
    /// Lays out the weights of `config` for inference.
    pub fn new(config: &BertConfig, w: &Weights) -> Result<Self> {
        let h = config.hidden_size;
        let i = config.intermediate_size;
        let scale = 1.0 / (config.head_dim() as f32).sqrt();
        let family = config.family();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = |s: &str| family.tensor_name(&format!("encoder.layer.{l}.{s}"));
            let mut qkv_w = w.vec(&p("attention.self.query.weight"), &[h, h])?;
            qkv_w.iter_mut().for_each(|x| *x *= scale);
            qkv_w.extend(w.vec(&p("attention.self.key.weight"), &[h, h])?);
            qkv_w.extend(w.vec(&p("attention.self.value.weight"), &[h, h])?);
            let mut qkv_b = w.vec(&p("attention.self.query.bias"), &[h])?;
            qkv_b.iter_mut().for_each(|x| *x *= scale);
            qkv_b.extend(w.vec(&p("attention.self.key.bias"), &[h])?);
            qkv_b.extend(w.vec(&p("attention.self.value.bias"), &[h])?);
            layers.push(Layer {
                qkv_w: Dense::new(qkv_w, 3 * h, h),
                qkv_b,
                out_w: Dense::new(w.vec(&p("attention.output.dense.weight"), &[h, h])?, h, h),
                out_b: w.vec(&p("attention.output.dense.bias"), &[h])?,
                ln1_w: w.vec(&p("attention.output.LayerNorm.weight"), &[h])?,
                ln1_b: w.vec(&p("attention.output.LayerNorm.bias"), &[h])?,
                up_w: Dense::new(w.vec(&p("intermediate.dense.weight"), &[i, h])?, i, h),
                up_b: w.vec(&p("intermediate.dense.bias"), &[i])?,
                down_w: Dense::new(w.vec(&p("output.dense.weight"), &[h, i])?, h, i),
                down_b: w.vec(&p("output.dense.bias"), &[h])?,
                ln2_w: w.vec(&p("output.LayerNorm.weight"), &[h])?,
                ln2_b: w.vec(&p("output.LayerNorm.bias"), &[h])?,
            });
        }
        let max_tokens = config.max_tokens();
        let heads = config.num_attention_heads;
        let relative_bias = match config.relative_buckets() {
            None => None,
            Some(buckets) => {
                let table = w.vec("encoder.relative_attention_bias.weight", &[buckets, heads])?;
                let width = 2 * max_tokens - 1;
                let mut by_distance = vec![0f32; heads * width];
                for column in 0..width {
                    // key − query = column − (max_tokens − 1).
                    let (query, key) = (max_tokens - 1, column);
                    let bucket = relative_bucket(query, key, buckets);
                    for head in 0..heads {
                        by_distance[head * width + column] = table[bucket * heads + head];
                    }
                }
                Some(by_distance)
            }
        };
        let token_type = if config.family() == Family::MPNet {
            None
        } else {
            Some(w.vec(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?)
        };
        Ok(Self {
            hidden: h,
            heads,
            intermediate: i,
            max_tokens,
            position_offset: config.position_offset(),
            eps: config.layer_norm_eps as f32,
            activation: match config.hidden_act.as_str() {
                "gelu" => Activation::Gelu,
                "relu" => Activation::Relu,
                _ => Activation::GeluTanh,
            },
            word: w.vec("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: w.vec(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type,
            relative_bias,
            emb_ln_w: w.vec("embeddings.LayerNorm.weight", &[h])?,
            emb_ln_b: w.vec("embeddings.LayerNorm.bias", &[h])?,
            layers,
            bf16_scores: false,
        })
    }

    /// This encoder with its dense products at `precision`; returns the precision it will run
    /// at: `Bf16` needs [`bf16_available`], and falls back to `F32` without it. AMX is used
    /// where the CPU has both.
    pub fn set_precision(&mut self, precision: Precision) -> Precision {
        if precision == Precision::F32 || !bf16_available() {
            return Precision::F32;
        }
        for layer in &mut self.layers {
            for dense in [
                &mut layer.qkv_w,
                &mut layer.out_w,
                &mut layer.up_w,
                &mut layer.down_w,
            ] {
                if let Dense::F32 { w, out, inner } = dense {
                    *dense = Dense::bf16(w, *out, *inner);
                }
            }
        }
        self.bf16_scores = true;
        Precision::Bf16
    }

    /// The hidden size.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Runs the encoder on a batch of token sequences (each at most [`BertConfig::max_tokens`]
    /// long, token type 0 unless `token_types` gives them) and returns the last hidden states of
    /// all tokens, packed: rows `offsets[s]..offsets[s + 1]` belong to sequence `s`.
    pub fn forward(
        &self,
        seqs: &[&[u32]],
        token_types: Option<&[&[u32]]>,
    ) -> (Vec<f32>, Vec<usize>) {
        let h = self.hidden;
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        offsets.push(0);
        for s in seqs {
            assert!(
                s.len() <= self.max_tokens,
                "sequence longer than the position table"
            );
            offsets.push(offsets.last().copied().unwrap_or(0) + s.len());
        }
        let total = *offsets.last().unwrap_or(&0);
        let threads = rayon::current_num_threads().max(1);
        let par = if threads > 1 {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        };

        // Embeddings: word + position + token type, then LayerNorm.
        let mut x = vec![0f32; total * h];
        for (s, ids) in seqs.iter().enumerate() {
            for (p, &id) in ids.iter().enumerate() {
                let row = &mut x[(offsets[s] + p) * h..(offsets[s] + p + 1) * h];
                let word = &self.word[id as usize * h..(id as usize + 1) * h];
                let at = p + self.position_offset;
                let pos = &self.position[at * h..(at + 1) * h];
                for j in 0..h {
                    row[j] = word[j] + pos[j];
                }
                if let Some(table) = &self.token_type {
                    // One row (RoBERTa): every token is type 0, whatever the tokenizer says.
                    let t = match token_types {
                        Some(tt) if table.len() > h => tt[s][p] as usize,
                        _ => 0,
                    };
                    let typ = &table[t * h..(t + 1) * h];
                    row.iter_mut().zip(typ).for_each(|(x, t)| *x += t);
                }
            }
        }
        par_rows(&mut x, h, |rows| {
            add_layer_norm(rows, None, &self.emb_ln_w, &self.emb_ln_b, self.eps)
        });

        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        let mut up = vec![0f32; total * self.intermediate];
        for layer in &self.layers {
            // Q, K, V in one product.
            layer.qkv_w.apply(&x, total, &mut qkv, par);
            par_rows(&mut qkv, 3 * h, |rows| add_bias(rows, &layer.qkv_b));
            self.attention(&qkv, &offsets, &mut ctx);
            // Output projection, residual, LayerNorm.
            layer.out_w.apply(&ctx, total, &mut tmp, par);
            par_rows_with(&mut tmp, &x, h, |rows, res| {
                add_bias(rows, &layer.out_b);
                add_layer_norm(rows, Some(res), &layer.ln1_w, &layer.ln1_b, self.eps);
            });
            std::mem::swap(&mut x, &mut tmp);
            // Feed-forward: up, bias + activation, down, residual, LayerNorm.
            let i = self.intermediate;
            layer.up_w.apply(&x, total, &mut up, par);
            par_rows(&mut up, i, |rows| {
                bias_activation(rows, &layer.up_b, self.activation)
            });
            layer.down_w.apply(&up, total, &mut tmp, par);
            par_rows_with(&mut tmp, &x, h, |rows, res| {
                add_bias(rows, &layer.down_b);
                add_layer_norm(rows, Some(res), &layer.ln2_w, &layer.ln2_b, self.eps);
            });
            std::mem::swap(&mut x, &mut tmp);
        }
        (x, offsets)
    }

    /// Multi-head self-attention of every sequence, in parallel over sequences; `qkv` holds
    /// rows of [q | k | v] per token, `ctx` receives the concatenated heads.
    fn attention(&self, qkv: &[f32], offsets: &[usize], ctx: &mut [f32]) {
        let h = self.hidden;
        let d = h / self.heads;
        let mut slices: Vec<(usize, &mut [f32])> = Vec::with_capacity(offsets.len());
        let mut rest = ctx;
        for s in 0..offsets.len() - 1 {
            let (head, tail) = rest.split_at_mut((offsets[s + 1] - offsets[s]) * h);
            slices.push((s, head));
            rest = tail;
        }
        slices.into_par_iter().for_each(|(s, out)| {
            let (start, len) = (offsets[s], offsets[s + 1] - offsets[s]);
            if len == 0 {
                return;
            }
            let rows = &qkv[start * 3 * h..(start + len) * 3 * h];
            let mut scores = vec![0f32; len * len];
            for head in 0..self.heads {
                let v = Mat::strided(&rows[2 * h + head * d..], len, d, 3 * h);
                if self.bf16_scores {
                    let keys = Dense::bf16(&gather(rows, h + head * d, len, d, 3 * h), len, d);
                    let queries = gather(rows, head * d, len, d, 3 * h);
                    keys.apply(&queries, len, &mut scores, Parallelism::None);
                } else {
                    let q = Mat::strided(&rows[head * d..], len, d, 3 * h);
                    let k = Mat::strided(&rows[h + head * d..], len, d, 3 * h);
                    matmul(q, k.t(), &mut scores, len, false, Parallelism::None);
                }
                if let Some(bias) = &self.relative_bias {
                    let width = 2 * self.max_tokens - 1;
                    let by_distance = &bias[head * width..(head + 1) * width];
                    for (query, row) in scores.chunks_exact_mut(len).enumerate() {
                        // Column of (query, key 0): 0 − query + max_tokens − 1.
                        let first = self.max_tokens - 1 - query;
                        row.iter_mut()
                            .zip(&by_distance[first..first + len])
                            .for_each(|(s, b)| *s += b);
                    }
                }
                softmax_rows(&mut scores, len);
                matmul(
                    Mat::new(&scores, len, len),
                    v,
                    &mut out[head * d..],
                    h,
                    false,
                    Parallelism::None,
                );
            }
        });
    }
}

/// `rows` × `width` values of `data` from `offset` on, `stride` apart, as one contiguous matrix.
fn gather(data: &[f32], offset: usize, rows: usize, width: usize, stride: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * width);
    for r in 0..rows {
        let start = offset + r * stride;
        out.extend_from_slice(&data[start..start + width]);
    }
    out
}

/// Applies `f` to chunks of whole rows of `data` in parallel.
fn par_rows(data: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    data.par_chunks_mut(ROWS_PER_TASK * width).for_each(&f);
}

/// Like [`par_rows`], with the matching rows of `other`.
fn par_rows_with(
    data: &mut [f32],
    other: &[f32],
    width: usize,
    f: impl Fn(&mut [f32], &[f32]) + Sync,
) {
    data.par_chunks_mut(ROWS_PER_TASK * width)
        .zip(other.par_chunks(ROWS_PER_TASK * width))
        .for_each(|(a, b)| f(a, b));
}
