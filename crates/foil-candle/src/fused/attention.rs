//! Multi-head self-attention of a training batch as one operation.
//!
//! Written out from candle's operations, a layer's attention splits the query, key and value
//! projections into heads (three copies), transposes the keys (a fourth), keeps the scores, the
//! probabilities and the dropped-out probabilities as separate `[B, heads, L, L]` tensors, and
//! merges the heads again; backward repeats each copy, and candle's autograd adds a zeroed
//! buffer for every one of them. This operation reads the heads in place from the fused QKV
//! projection `[B, L, 3H]`, keeps only the probabilities for backward, and multiplies by the
//! keys and values of the real tokens only (`lengths[b]` of the `L`), one sequence per task.

use std::sync::{Arc, OnceLock};

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::elements;
use crate::kernels::{masked_softmax_rows, matmul, scale_by, softmax_backward_rows, Mat};

/// Self-attention over `qkv` `[B·L, 3H]` (each token's query, key and value projections, heads
/// side by side in each; the B = `lengths.len()` sequences one after another, L tokens each) →
/// the context `[B·L, H]` (heads side by side), with scores scaled by 1/√(H / heads). Sequence
/// `b` attends to its first `lengths[b]` tokens (right padding), as an additive mask of −∞ on
/// the rest would make it. With `dropout`, the probabilities are multiplied by its factors,
/// `[B, heads, L, L]` row-major, before they weight the values.
pub fn attention(
    qkv: &Tensor,
    heads: usize,
    lengths: &[usize],
    dropout: Option<Vec<f32>>,
) -> Result<Tensor> {
    let (rows, width) = qkv.dims2()?;
    let b = lengths.len();
    if heads == 0 || !width.is_multiple_of(3 * heads) || b == 0 || !rows.is_multiple_of(b) {
        bail!(
            "attention: {:?} does not split into {heads} heads of query, key and value for {b} \
             sequences",
            qkv.shape()
        );
    }
    let l = rows / b;
    if let Some(factors) = &dropout {
        if factors.len() != b * heads * l * l {
            bail!(
                "attention: {} dropout factors for {b} sequences of {l} tokens and {heads} heads",
                factors.len()
            );
        }
    }
    qkv.contiguous()?.apply_op1(Attention {
        heads,
        lengths: lengths.iter().map(|&n| n.min(l)).collect(),
        dropout: dropout.map(Arc::new),
        probs: Arc::new(OnceLock::new()),
    })
}

#[derive(Clone)]
struct Attention {
    heads: usize,
    lengths: Arc<[usize]>,
    dropout: Option<Arc<Vec<f32>>>,
    /// The probabilities of the forward pass, `[B, heads, L, L]` before dropout, for backward.
    /// Each operation in the graph is its own instance, so this is set once, by its forward.
    probs: Arc<OnceLock<Vec<f32>>>,
}

/// The sizes of one batch.
#[derive(Clone, Copy)]
struct Dims {
    /// Tokens per sequence (with padding).
    l: usize,
    /// Hidden size: the width of the context, a third of QKV's.
    h: usize,
    heads: usize,
    /// Width of one head.
    d: usize,
}

impl Dims {
    fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }

    /// One head's queries, keys or values (`part` 0, 1 or 2) of a sequence's `[L, 3H]` rows,
    /// for its first `rows` tokens.
    fn part<'a>(&self, seq: &'a [f32], part: usize, head: usize, rows: usize) -> Mat<'a> {
        Mat::strided(
            &seq[part * self.h + head * self.d..],
            rows,
            self.d,
            3 * self.h,
        )
    }
}

impl Attention {
    fn dims(&self, layout: &Layout) -> Result<Dims> {
        let (rows, width) = layout.shape().dims2()?;
        let l = rows / self.lengths.len();
        let h = width / 3;
        Ok(Dims {
            l,
            h,
            heads: self.heads,
            d: h / self.heads,
        })
    }

    /// The probabilities of `probs` (one head's `[L, L]`) after dropout: `probs` itself without
    /// dropout, else their product with the head's factors in `buffer`.
    fn dropped<'a>(&self, probs: &'a [f32], block: usize, buffer: &'a mut [f32]) -> &'a [f32] {
        match &self.dropout {
            None => probs,
            Some(factors) => {
                let size = probs.len();
                buffer.copy_from_slice(probs);
                scale_by(buffer, &factors[block * size..(block + 1) * size]);
                buffer
            }
        }
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = elements(storage, layout, self.name())?;
        let dims = self.dims(layout)?;
        let Dims { l, h, heads, d } = dims;
        let b = self.lengths.len();
        let mut ctx = vec![0f32; b * l * h];
        let mut probs = vec![0f32; b * heads * l * l];
        ctx.par_chunks_mut(l * h)
            .zip(probs.par_chunks_mut(heads * l * l))
            .enumerate()
            .for_each(|(s, (out, probs))| {
                let n = self.lengths[s];
                if n == 0 {
                    return;
                }
                let seq = &qkv[s * l * 3 * h..(s + 1) * l * 3 * h];
                let mut buffer = vec![0f32; if self.dropout.is_some() { l * l } else { 0 }];
                for (head, p) in probs.chunks_exact_mut(l * l).enumerate() {
                    // Scores of every query against the real keys, rows L apart.
                    let (q, k) = (dims.part(seq, 0, head, l), dims.part(seq, 1, head, n));
                    matmul(q, k.t(), p, l, false, Parallelism::None);
                    masked_softmax_rows(p, l, n, dims.scale());
                    let weights = self.dropped(p, s * heads + head, &mut buffer);
                    let v = dims.part(seq, 2, head, n);
                    let weights = Mat::strided(weights, l, n, l);
                    matmul(
                        weights,
                        v,
                        &mut out[head * d..],
                        h,
                        false,
                        Parallelism::None,
                    );
                }
            });
        if self.probs.set(probs).is_err() {
            bail!("attention: the operation ran forward twice");
        }
        Ok((CpuStorage::F32(ctx), Shape::from((b * l, h))))
    }

    fn bwd(&self, qkv: &Tensor, _ctx: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = AttentionGrad(self.clone());
        Ok(Some(qkv.apply_op2_no_bwd(&grad.contiguous()?, &op)?))
    }
}

/// (QKV, gradient of the context) → gradient of QKV.
struct AttentionGrad(Attention);

impl CustomOp2 for AttentionGrad {
    fn name(&self) -> &'static str {
        "attention-grad"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        g_storage: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = &self.0;
        let qkv = elements(x_storage, x_layout, self.name())?;
        let grad = elements(g_storage, g_layout, self.name())?;
        let Some(probs) = op.probs.get() else {
            bail!("attention-grad: backward before forward");
        };
        let dims = op.dims(x_layout)?;
        let Dims { l, h, heads, d } = dims;
        let b = op.lengths.len();
        if grad.len() != b * l * h {
            bail!("attention-grad: gradient {:?}", g_layout.shape());
        }
        let scale = dims.scale();
        let mut dqkv = vec![0f32; qkv.len()];
        dqkv.par_chunks_mut(l * 3 * h)
            .enumerate()
            .for_each(|(s, out)| {
                let n = op.lengths[s];
                if n == 0 {
                    return;
                }
                let seq = &qkv[s * l * 3 * h..(s + 1) * l * 3 * h];
                let g = &grad[s * l * h..(s + 1) * l * h];
                let mut buffer = vec![0f32; if op.dropout.is_some() { l * l } else { 0 }];
                let mut ds = vec![0f32; l * l];
                for head in 0..heads {
                    let block = s * heads + head;
                    let p = &probs[block * l * l..(block + 1) * l * l];
                    let g_head = Mat::strided(&g[head * d..], l, d, h);
                    // The values': (dropped probabilities)ᵀ · grad.
                    let weights = Mat::strided(op.dropped(p, block, &mut buffer), l, n, l);
                    let dv = &mut out[2 * h + head * d..];
                    matmul(weights.t(), g_head, dv, 3 * h, false, Parallelism::None);
                    // The probabilities': grad · valuesᵀ; then the scores' through dropout
                    // and softmax (columns past n stay 0: their probabilities are 0).
                    let v = dims.part(seq, 2, head, n);
                    matmul(g_head, v.t(), &mut ds, l, false, Parallelism::None);
                    let mask = op
                        .dropout
                        .as_ref()
                        .map(|f| &f[block * l * l..(block + 1) * l * l]);
                    softmax_backward_rows(&mut ds, p, mask, l, n, scale);
                    // The queries' and the keys'.
                    let scores_grad = Mat::strided(&ds, l, n, l);
                    let k = dims.part(seq, 1, head, n);
                    let q = dims.part(seq, 0, head, l);
                    let dq = &mut out[head * d..];
                    matmul(scores_grad, k, dq, 3 * h, false, Parallelism::None);
                    let dk = &mut out[h + head * d..];
                    matmul(scores_grad.t(), q, dk, 3 * h, false, Parallelism::None);
                }
            });
        Ok((CpuStorage::F32(dqkv), x_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::attention;
    use crate::model::{softmax, Dropout};

    fn random(shape: &[usize], seed: u64) -> Var {
        let mut rng = foil_core::rng::SplitMix64::new(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Attention written out from candle's operations, with an additive mask.
    fn written_out(
        qkv: &Tensor,
        heads: usize,
        lengths: &[usize],
        factors: Option<&[f32]>,
    ) -> candle_core::Result<Tensor> {
        let (rows, width) = qkv.dims2()?;
        let (b, h) = (lengths.len(), width / 3);
        let (l, d) = (rows / b, h / heads);
        let split = |part: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(1, part * h, h)?
                .reshape((b, l, heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let mut bias = vec![0f32; b * l];
        for (s, &n) in lengths.iter().enumerate() {
            bias[s * l + n..(s + 1) * l].fill(f32::NEG_INFINITY);
        }
        let bias = Tensor::from_vec(bias, (b, 1, 1, l), qkv.device())?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (d as f64).sqrt())?;
        let mut probs = softmax(&scores.broadcast_add(&bias)?)?;
        if let Some(f) = factors {
            probs = probs.mul(&Tensor::from_slice(f, probs.shape(), qkv.device())?)?;
        }
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * l, h))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn attention_matches_the_written_out_form_with_and_without_dropout() {
        let (b, l, heads, d) = (3, 7, 2, 4);
        let lengths = [7, 3, 1];
        let qkv = random(&[b * l, 3 * heads * d], 21);
        let upstream = random(&[b * l, heads * d], 22);
        let factors = Dropout::new(5).factors(b * heads * l * l, 0.3).unwrap();
        for factors in [None, Some(factors)] {
            let fused = attention(qkv.as_tensor(), heads, &lengths, factors.clone()).unwrap();
            let reference =
                written_out(qkv.as_tensor(), heads, &lengths, factors.as_deref()).unwrap();
            assert!(max_diff(&fused, &reference) < 1e-5, "outputs differ");
            let grad = |out: &Tensor| {
                let loss = (out * upstream.as_tensor()).unwrap().sum_all().unwrap();
                loss.backward().unwrap().get(&qkv).unwrap().clone()
            };
            let (ga, gb) = (grad(&fused), grad(&reference));
            let diff = max_diff(&ga, &gb);
            assert!(diff < 1e-5, "gradients differ by {diff}");
            // The keys and values of padding tokens get no gradient.
            // (sequence 1's tokens 3..7 are rows 10..14).
            let padded = ga.narrow(0, l + 3, 4).unwrap();
            let kv = padded.narrow(1, heads * d, 2 * heads * d).unwrap();
            assert_eq!(max_diff(&kv, &kv.zeros_like().unwrap()), 0.0);
        }
    }
}
