//! Fused training operations with backward passes, for [`crate::model`]'s models on the CPU.
//!
//! Written out from candle's primitive operations, a LayerNorm is seven passes over its input,
//! each with its own temporary tensor, and about as many again backward; attention's masked
//! softmax is six passes over a `[B, heads, L, L]` tensor; GELU calls libm's erf element by
//! element. These candle custom operations do each in one parallel pass forward and one backward,
//! with the kernels of [`crate::kernels`]. Their gradients equal the written-out forms' to
//! float32 rounding (the tests below compare them; `tests/grad_parity.rs` compares whole models
//! with PyTorch).
//!
//! They run on the CPU in float32 ([`supported`]); on other devices the models keep the
//! written-out forms. Parameter gradients are summed over fixed blocks of rows in a fixed order,
//! so they do not depend on the number of threads.

use std::sync::Arc;

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use gemm::Parallelism;
use rayon::prelude::*;

mod attention;

pub use attention::attention;

use crate::kernels::{
    add_bias, add_layer_norm, add_rows, bias_activation, bias_gelu_backward, layer_norm_backward,
    masked_softmax_backward_rows, masked_softmax_rows, matmul, scale_by, Activation, Mat,
};

/// Rows per parallel task, and per partial sum of a parameter's gradient.
const ROWS_PER_TASK: usize = 64;

/// Whether the fused operations can run on `t`: a float32 tensor on the CPU.
pub fn supported(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The float32 elements of a contiguous input (`op` names the operation in the error).
pub fn elements<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: the input is not contiguous"),
    }
}

/// Sums per-block partial gradients (each `width` long) in block order.
fn sum_blocks(partials: &[Vec<f32>], width: usize) -> Vec<f32> {
    let mut total = vec![0f32; width];
    for p in partials {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

/// `f(rows, bias)` over blocks of rows of a copy of `y` (rows as wide as `bias`), in parallel:
/// the forward pass of the bias-and-activation operations.
fn with_bias(
    op: &str,
    (y_storage, y_layout): (&CpuStorage, &Layout),
    (b_storage, b_layout): (&CpuStorage, &Layout),
    f: impl Fn(&mut [f32], &[f32]) + Sync + Send,
) -> Result<(CpuStorage, Shape)> {
    let y = elements(y_storage, y_layout, op)?;
    let bias = elements(b_storage, b_layout, op)?;
    let width = bias.len();
    if y_layout.shape().dims().last() != Some(&width) {
        bail!(
            "{op}: input {:?} against a bias of {width}",
            y_layout.shape()
        );
    }
    let mut out = y.to_vec();
    out.par_chunks_mut(ROWS_PER_TASK * width.max(1))
        .for_each(|rows| f(rows, bias));
    Ok((CpuStorage::F32(out), y_layout.shape().clone()))
}

/// A backward pass over rows of `width`: `f(grad, x, sums)` turns each block of the output's
/// gradient into the input's in place, with the matching rows of `x`, and adds the block's
/// contributions to `sums` (`sums` wide: the parameters' gradients). Returns `[rows + sums /
/// width, width]`: the input's gradient, then the parameters', summed over blocks in order.
fn grad_with_sums(
    grad: &[f32],
    x: &[f32],
    width: usize,
    sums: usize,
    f: impl Fn(&mut [f32], &[f32], &mut [f32]) + Sync + Send,
) -> (CpuStorage, Shape) {
    let width = width.max(1);
    let mut out = grad.to_vec();
    let partials: Vec<Vec<f32>> = out
        .par_chunks_mut(ROWS_PER_TASK * width)
        .zip(x.par_chunks(ROWS_PER_TASK * width))
        .map(|(g, x)| {
            let mut block = vec![0f32; sums];
            f(g, x, &mut block);
            block
        })
        .collect();
    out.extend(sum_blocks(&partials, sums));
    let rows = out.len() / width;
    (CpuStorage::F32(out), Shape::from((rows, width)))
}

/// Softmax of attention scores `[B, heads, L, L]` times `scale`, over the keys of each sequence
/// (`lengths[b]` real tokens, right-padded); padding keys get probability 0, as they do under
/// an additive mask of −∞. With `dropout`, the probabilities are then multiplied by its factors
/// (0 or 1 / (1 − p), one per element).
pub fn masked_softmax(
    scores: &Tensor,
    scale: f64,
    lengths: &[usize],
    dropout: Option<Vec<f32>>,
) -> Result<Tensor> {
    if let Some(mask) = &dropout {
        if mask.len() != scores.elem_count() {
            bail!(
                "masked-softmax: {} dropout factors for {:?}",
                mask.len(),
                scores.shape()
            );
        }
    }
    scores.contiguous()?.apply_op1(MaskedSoftmax {
        scale: scale as f32,
        lengths: lengths.into(),
        dropout: dropout.map(Arc::new),
    })
}

/// Inverted dropout `x ⊙ factors` (each 0 or 1 / (1 − p)). The factors belong to the operation,
/// not to the graph, so backward computes no gradient for them.
pub fn dropout(x: &Tensor, factors: Vec<f32>) -> Result<Tensor> {
    if factors.len() != x.elem_count() {
        bail!("dropout: {} factors for {:?}", factors.len(), x.shape());
    }
    x.contiguous()?.apply_op1(Dropout {
        factors: Arc::new(factors),
    })
}

/// LayerNorm over the last dimension with weight `w` and optional bias `b`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let op = LayerNormOp { eps: eps as f32 };
    let x = x.contiguous()?;
    match b {
        Some(b) => x.apply_op3(w, b, op),
        None => x.apply_op2(w, op),
    }
}

/// BERT's erf GELU of `y + bias` (`bias` over the last dimension).
pub fn bias_gelu(y: &Tensor, bias: &Tensor) -> Result<Tensor> {
    y.contiguous()?.apply_op2(bias, BiasGelu)
}

/// `y + bias` over the last dimension. Backward sums the bias's gradient over blocks of rows in
/// parallel; candle's broadcast add sums it on one thread.
pub fn bias_add(y: &Tensor, bias: &Tensor) -> Result<Tensor> {
    y.contiguous()?.apply_op2(bias, BiasAdd)
}

/// `x wᵀ (+ b)` for rows `x` `[N, in]` and a weight `[out, in]`: one node of the graph where
/// candle's operations make three (the transpose, the product, the bias), and backward writes
/// the weight's gradient `gᵀ x` in the weight's own layout.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let ((_, inner), (_, w_inner)) = (x.dims2()?, w.dims2()?);
    if inner != w_inner {
        bail!(
            "linear: input {:?} against a weight {:?}",
            x.shape(),
            w.shape()
        );
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => x.apply_op3(&w, b, LinearOp),
        None => x.apply_op2(&w, LinearOp),
    }
}

/// `(y + bias) ⊙ factors + residual`, or `y + bias + residual` without dropout: the bias of a
/// linear layer, the dropout after it and the residual connection, in one operation.
pub fn bias_dropout_add(
    y: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    factors: Option<Vec<f32>>,
) -> Result<Tensor> {
    if y.shape() != residual.shape() {
        bail!(
            "bias-dropout-add: {:?} against a residual of {:?}",
            y.shape(),
            residual.shape()
        );
    }
    if let Some(f) = &factors {
        if f.len() != y.elem_count() {
            bail!("bias-dropout-add: {} factors for {:?}", f.len(), y.shape());
        }
    }
    let op = BiasDropoutAdd {
        factors: factors.map(Arc::new),
    };
    y.contiguous()?.apply_op3(bias, &residual.contiguous()?, op)
}

#[derive(Clone)]
struct MaskedSoftmax {
    scale: f32,
    lengths: Arc<[usize]>,
    dropout: Option<Arc<Vec<f32>>>,
}

impl MaskedSoftmax {
    /// Runs `f(sequence's elements, its dropout factors, its length)` over the sequences of a
    /// `[B, heads, L, L]` buffer in parallel.
    fn per_sequence(
        &self,
        data: &mut [f32],
        f: impl Fn(&mut [f32], Option<&[f32]>, usize, usize) + Sync + Send,
    ) -> Result<()> {
        let b = self.lengths.len();
        if b == 0 {
            return Ok(());
        }
        if !data.len().is_multiple_of(b) {
            bail!("masked-softmax: {} elements for {b} sequences", data.len());
        }
        let size = (data.len() / b).max(1);
        data.par_chunks_mut(size).enumerate().for_each(|(s, seq)| {
            let mask = self.dropout.as_ref().map(|m| &m[s * size..(s + 1) * size]);
            f(seq, mask, s, self.lengths[s]);
        });
        Ok(())
    }
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = elements(storage, layout, self.name())?;
        let (b, _, _, keys) = layout.shape().dims4()?;
        if b != self.lengths.len() {
            bail!(
                "masked-softmax: {b} sequences but {} lengths",
                self.lengths.len()
            );
        }
        let mut probs = x.to_vec();
        self.per_sequence(&mut probs, |seq, mask, _, n| {
            masked_softmax_rows(seq, keys, n.min(keys), self.scale);
            if let Some(mask) = mask {
                scale_by(seq, mask);
            }
        })?;
        Ok((CpuStorage::F32(probs), layout.shape().clone()))
    }

    fn bwd(&self, scores: &Tensor, _probs: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = MaskedSoftmaxGrad(self.clone());
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(scores, &op)?))
    }
}

/// (gradient of the output, scores) → gradient of the scores.
struct MaskedSoftmaxGrad(MaskedSoftmax);

impl CustomOp2 for MaskedSoftmaxGrad {
    fn name(&self) -> &'static str {
        "masked-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        g_storage: &CpuStorage,
        g_layout: &Layout,
        x_storage: &CpuStorage,
        x_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = elements(g_storage, g_layout, self.name())?;
        let scores = elements(x_storage, x_layout, self.name())?;
        let (_, _, _, keys) = g_layout.shape().dims4()?;
        if g.len() != scores.len() {
            bail!(
                "masked-softmax-grad: {:?} against {:?}",
                g_layout.shape(),
                x_layout.shape()
            );
        }
        let mut grad = g.to_vec();
        let size = g.len() / self.0.lengths.len().max(1);
        let scale = self.0.scale;
        self.0.per_sequence(&mut grad, |seq, mask, s, n| {
            let x = &scores[s * size..(s + 1) * size];
            masked_softmax_backward_rows(seq, x, mask, keys, n.min(keys), scale);
        })?;
        Ok((CpuStorage::F32(grad), g_layout.shape().clone()))
    }
}

struct Dropout {
    factors: Arc<Vec<f32>>,
}

impl Dropout {
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        y.par_chunks_mut(ROWS_PER_TASK * 1024)
            .zip(self.factors.par_chunks(ROWS_PER_TASK * 1024))
            .for_each(|(y, f)| scale_by(y, f));
        y
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = elements(storage, layout, self.name())?;
        Ok((CpuStorage::F32(self.apply(x)), layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // The gradient of x ⊙ f is grad ⊙ f: the same operation.
        let op = Dropout {
            factors: self.factors.clone(),
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// LayerNorm as one operation: `(x, w)` or `(x, w, b)`.
struct LayerNormOp {
    eps: f32,
}

impl LayerNormOp {
    fn forward(
        &self,
        x: &[f32],
        layout: &Layout,
        w: &[f32],
        b: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let h = w.len();
        if layout.shape().dims().last() != Some(&h) {
            bail!(
                "layer-norm: input {:?} against a weight of {h}",
                layout.shape()
            );
        }
        let zeros;
        let b = match b {
            Some(b) => b,
            None => {
                zeros = vec![0f32; h];
                &zeros
            }
        };
        let mut y = x.to_vec();
        y.par_chunks_mut(ROWS_PER_TASK * h)
            .for_each(|rows| add_layer_norm(rows, None, w, b, self.eps));
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    /// The gradients of the input, the weight and the bias.
    fn backward(&self, x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let h = w.elem_count();
        let rows = x.elem_count() / h.max(1);
        let packed =
            x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        Ok((
            packed.narrow(0, 0, rows)?.reshape(x.shape())?,
            packed.narrow(0, rows, 1)?.reshape(h)?,
            packed.narrow(0, rows + 1, 1)?.reshape(h)?,
        ))
    }
}

impl CustomOp2 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        w_storage: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = elements(x_storage, x_layout, "layer-norm")?;
        let w = elements(w_storage, w_layout, "layer-norm")?;
        self.forward(x, x_layout, w, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        w_storage: &CpuStorage,
        w_layout: &Layout,
        b_storage: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = elements(x_storage, x_layout, "layer-norm")?;
        let w = elements(w_storage, w_layout, "layer-norm")?;
        let b = elements(b_storage, b_layout, "layer-norm")?;
        self.forward(x, x_layout, w, Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.backward(x, w, grad)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// (x, w, gradient of the output) → `[rows + 2, H]`: the input's gradient, then the weight's
/// and the bias's as the last two rows.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        w_storage: &CpuStorage,
        w_layout: &Layout,
        g_storage: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = elements(x_storage, x_layout, self.name())?;
        let w = elements(w_storage, w_layout, self.name())?;
        let g = elements(g_storage, g_layout, self.name())?;
        let h = w.len();
        Ok(grad_with_sums(g, x, h, 2 * h, |g, x, sums| {
            let (dw, db) = sums.split_at_mut(h);
            layer_norm_backward(g, x, w, self.eps, dw, db);
        }))
    }
}

/// `gelu(y + bias)` as one operation.
struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }

    fn cpu_fwd(
        &self,
        y_storage: &CpuStorage,
        y_layout: &Layout,
        b_storage: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, bias) = ((y_storage, y_layout), (b_storage, b_layout));
        with_bias(self.name(), y, bias, |rows, bias| {
            bias_activation(rows, bias, Activation::Gelu)
        })
    }

    fn bwd(
        &self,
        y: &Tensor,
        bias: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let width = bias.elem_count();
        let rows = y.elem_count() / width.max(1);
        let packed = y.apply_op3_no_bwd(bias, &grad.contiguous()?, &BiasGeluGrad)?;
        Ok((
            Some(packed.narrow(0, 0, rows)?.reshape(y.shape())?),
            Some(packed.narrow(0, rows, 1)?.reshape(width)?),
        ))
    }
}

/// (y, bias, gradient of the output) → `[rows + 1, W]`: the gradient of `y`, then the bias's.
struct BiasGeluGrad;

impl CustomOp3 for BiasGeluGrad {
    fn name(&self) -> &'static str {
        "bias-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        y_storage: &CpuStorage,
        y_layout: &Layout,
        b_storage: &CpuStorage,
        b_layout: &Layout,
        g_storage: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = elements(y_storage, y_layout, self.name())?;
        let bias = elements(b_storage, b_layout, self.name())?;
        let g = elements(g_storage, g_layout, self.name())?;
        Ok(grad_with_sums(g, y, bias.len(), bias.len(), |g, y, db| {
            bias_gelu_backward(g, y, bias, db)
        }))
    }
}

/// `y + bias` as one operation.
struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(
        &self,
        y_storage: &CpuStorage,
        y_layout: &Layout,
        b_storage: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, bias) = ((y_storage, y_layout), (b_storage, b_layout));
        with_bias(self.name(), y, bias, add_bias)
    }

    fn bwd(
        &self,
        _y: &Tensor,
        bias: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let sums = ColumnSums {
            width: bias.elem_count(),
        };
        let db = grad.apply_op1_no_bwd(&sums)?;
        Ok((Some(grad), Some(db)))
    }
}

/// The thread pool's size, for the matrix products' own parallelism.
fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `x wᵀ (+ b)`: `(x, w)` or `(x, w, b)`.
struct LinearOp;

impl LinearOp {
    fn forward(
        x: &[f32],
        x_layout: &Layout,
        w: &[f32],
        w_layout: &Layout,
        b: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let ((rows, inner), (out, _)) = (x_layout.shape().dims2()?, w_layout.shape().dims2()?);
        if b.is_some_and(|b| b.len() != out) {
            bail!(
                "linear: a bias of {} for {out} outputs",
                b.map_or(0, <[f32]>::len)
            );
        }
        let mut y = vec![0f32; rows * out];
        let (x, w) = (Mat::new(x, rows, inner), Mat::new(w, out, inner));
        matmul(x, w.t(), &mut y, out, false, parallelism());
        if let Some(b) = b {
            y.par_chunks_mut(ROWS_PER_TASK * out.max(1))
                .for_each(|rows| add_bias(rows, b));
        }
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }

    /// The gradients of the input and of the weight (the bias's is the gradient's column sums).
    fn backward(x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let dx = grad.apply_op2_no_bwd(w, &LinearGrad::Input)?;
        let dw = grad.apply_op2_no_bwd(x, &LinearGrad::Weight)?;
        Ok((dx, dw))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        w_storage: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = elements(x_storage, x_layout, "linear")?;
        let w = elements(w_storage, w_layout, "linear")?;
        Self::forward(x, x_layout, w, w_layout, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = Self::backward(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        w_storage: &CpuStorage,
        w_layout: &Layout,
        b_storage: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = elements(x_storage, x_layout, "linear")?;
        let w = elements(w_storage, w_layout, "linear")?;
        let b = elements(b_storage, b_layout, "linear")?;
        Self::forward(x, x_layout, w, w_layout, Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = Self::backward(x, w, grad)?;
        let sums = ColumnSums {
            width: b.elem_count(),
        };
        let db = grad.contiguous()?.apply_op1_no_bwd(&sums)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The gradient `g` `[N, out]` of a linear layer's output against the weight `[out, in]` →
/// the input's `g w`, or against the input `[N, in]` → the weight's `gᵀ x`.
enum LinearGrad {
    Input,
    Weight,
}

impl CustomOp2 for LinearGrad {
    fn name(&self) -> &'static str {
        match self {
            LinearGrad::Input => "linear-grad-input",
            LinearGrad::Weight => "linear-grad-weight",
        }
    }

    fn cpu_fwd(
        &self,
        g_storage: &CpuStorage,
        g_layout: &Layout,
        o_storage: &CpuStorage,
        o_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = elements(g_storage, g_layout, self.name())?;
        let other = elements(o_storage, o_layout, self.name())?;
        let ((rows, out), (o_rows, o_cols)) =
            (g_layout.shape().dims2()?, o_layout.shape().dims2()?);
        let g = Mat::new(g, rows, out);
        let (a, b, shape) = match self {
            // [N, out] · [out, in]
            LinearGrad::Input => (g, Mat::new(other, o_rows, o_cols), (rows, o_cols)),
            // [out, N] · [N, in]
            LinearGrad::Weight => (g.t(), Mat::new(other, o_rows, o_cols), (out, o_cols)),
        };
        if a.cols != b.rows {
            bail!(
                "{}: gradient {:?} against {:?}",
                self.name(),
                g_layout.shape(),
                o_layout.shape()
            );
        }
        let mut result = vec![0f32; shape.0 * shape.1];
        matmul(a, b, &mut result, shape.1, false, parallelism());
        Ok((CpuStorage::F32(result), Shape::from(shape)))
    }
}

/// `(y + bias) ⊙ factors + residual` as one operation.
struct BiasDropoutAdd {
    factors: Option<Arc<Vec<f32>>>,
}

impl CustomOp3 for BiasDropoutAdd {
    fn name(&self) -> &'static str {
        "bias-dropout-add"
    }

    fn cpu_fwd(
        &self,
        y_storage: &CpuStorage,
        y_layout: &Layout,
        b_storage: &CpuStorage,
        b_layout: &Layout,
        r_storage: &CpuStorage,
        r_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = elements(y_storage, y_layout, self.name())?;
        let bias = elements(b_storage, b_layout, self.name())?;
        let residual = elements(r_storage, r_layout, self.name())?;
        let width = bias.len();
        if y_layout.shape().dims().last() != Some(&width) {
            bail!(
                "bias-dropout-add: input {:?} against a bias of {width}",
                y_layout.shape()
            );
        }
        let block = ROWS_PER_TASK * width.max(1);
        let mut out = y.to_vec();
        out.par_chunks_mut(block)
            .zip(residual.par_chunks(block))
            .enumerate()
            .for_each(|(i, (rows, residual))| {
                add_bias(rows, bias);
                if let Some(f) = &self.factors {
                    scale_by(rows, &f[i * block..i * block + rows.len()]);
                }
                rows.iter_mut().zip(residual).for_each(|(x, r)| *x += r);
            });
        Ok((CpuStorage::F32(out), y_layout.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        bias: &Tensor,
        _residual: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dy = match &self.factors {
            Some(factors) => grad.apply_op1_no_bwd(&Dropout {
                factors: factors.clone(),
            })?,
            None => grad.clone(),
        };
        let sums = ColumnSums {
            width: bias.elem_count(),
        };
        let db = dy.apply_op1_no_bwd(&sums)?;
        Ok((Some(dy), Some(db), Some(grad)))
    }
}

/// The column sums `[W]` of a `[rows, W]` buffer, summed over blocks of rows in block order.
struct ColumnSums {
    width: usize,
}

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "column-sums"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = elements(storage, layout, self.name())?;
        let width = self.width.max(1);
        if !g.len().is_multiple_of(width) {
            bail!("column-sums: {:?} is not rows of {width}", layout.shape());
        }
        let partials: Vec<Vec<f32>> = g
            .par_chunks(ROWS_PER_TASK * width)
            .map(|rows| {
                let mut sums = vec![0f32; width];
                add_rows(rows, &mut sums);
                sums
            })
            .collect();
        Ok((
            CpuStorage::F32(sum_blocks(&partials, width)),
            Shape::from(self.width),
        ))
    }
}

#[cfg(test)]
mod tests {
    //! Each fused operation against its written-out form: outputs and the gradients of every
    //! input, through candle's autograd.
    use super::*;
    use candle_core::{Device, Var, D};

    fn random(shape: &[usize], seed: u64, spread: f32) -> Var {
        let mut rng = foil_core::rng::SplitMix64::new(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * spread)
            .collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The largest difference, relative to the reference's largest magnitude (at least 1).
    fn max_diff(a: &Tensor, reference: &Tensor) -> f32 {
        max_abs(&(a - reference).unwrap()) / max_abs(reference).max(1.0)
    }

    /// Compares `fused` with `reference` (same inputs) on their outputs and on the gradients of
    /// `inputs` under a random upstream gradient.
    fn check(
        inputs: &[&Var],
        fused: impl Fn() -> Tensor,
        reference: impl Fn() -> Tensor,
        tolerance: f32,
    ) {
        let (a, b) = (fused(), reference());
        assert!(
            max_diff(&a, &b) < tolerance,
            "outputs differ by {}",
            max_diff(&a, &b)
        );
        let upstream = random(a.dims(), 99, 1.0);
        let ga = (&a * upstream.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (&b * upstream.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (i, v) in inputs.iter().enumerate() {
            let (x, y) = (
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            let diff = max_diff(x, y);
            assert!(diff < tolerance, "input {i}: gradients differ by {diff}");
        }
    }

    #[test]
    fn masked_softmax_matches_the_written_out_form() {
        let (b, heads, l) = (3, 2, 7);
        let lengths = [7, 3, 1];
        let scores = random(&[b, heads, l, l], 1, 4.0);
        let mut mask = vec![0f32; b * l];
        for (s, &n) in lengths.iter().enumerate() {
            mask[s * l..s * l + n].fill(1.0);
        }
        let mask = Tensor::from_vec(mask, (b, 1, 1, l), &Device::Cpu).unwrap();
        let bias = ((mask - 1.0).unwrap() * f32::MAX as f64).unwrap();
        let scale = 0.35;
        let written = || {
            let x = (scores.as_tensor() * scale).unwrap();
            crate::model::softmax(&x.broadcast_add(&bias).unwrap()).unwrap()
        };
        check(
            &[&scores],
            || masked_softmax(scores.as_tensor(), scale, &lengths, None).unwrap(),
            written,
            1e-6,
        );
        // With dropout: the same factors multiplied in by candle.
        let factors = crate::model::Dropout::new(7)
            .factors(b * heads * l * l, 0.3)
            .unwrap();
        assert!(factors.contains(&0.0) && factors.iter().any(|&f| f > 1.0));
        let mask = Tensor::from_vec(factors.clone(), (b, heads, l, l), &Device::Cpu).unwrap();
        check(
            &[&scores],
            || masked_softmax(scores.as_tensor(), scale, &lengths, Some(factors.clone())).unwrap(),
            || written().mul(&mask).unwrap(),
            1e-6,
        );
    }

    #[test]
    fn dropout_factors_are_the_generator_drawn_in_order() {
        // More than one parallel piece, and two calls: the second continues the stream.
        let mut dropout = crate::model::Dropout::new(9);
        let first = dropout.factors(200_001, 0.1).unwrap();
        let second = dropout.factors(3, 0.1).unwrap();
        let mut rng = foil_core::rng::SplitMix64::new(9);
        let keep = 1.0 / 0.9f32;
        let expected: Vec<f32> = (0..200_004)
            .map(|_| if rng.next_f64() < 0.1 { 0.0 } else { keep })
            .collect();
        assert_eq!([first, second].concat(), expected);
    }

    #[test]
    fn dropout_matches_a_product_with_its_factors() {
        let x = random(&[5, 300], 8, 2.0);
        let factors = crate::model::Dropout::new(9).factors(1500, 0.1).unwrap();
        let mask = Tensor::from_vec(factors.clone(), (5, 300), &Device::Cpu).unwrap();
        check(
            &[&x],
            || dropout(x.as_tensor(), factors.clone()).unwrap(),
            || x.as_tensor().mul(&mask).unwrap(),
            1e-7,
        );
    }

    #[test]
    fn layer_norm_matches_the_written_out_form() {
        let x = random(&[2, 70, 24], 2, 3.0);
        let w = random(&[24], 3, 1.0);
        let b = random(&[24], 4, 1.0);
        let written = |b: Option<&Tensor>| {
            let x = x.as_tensor();
            let mean = x.mean_keepdim(D::Minus1).unwrap();
            let centered = x.broadcast_sub(&mean).unwrap();
            let var = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let normed = centered
                .broadcast_div(&(var + 1e-12).unwrap().sqrt().unwrap())
                .unwrap()
                .broadcast_mul(w.as_tensor())
                .unwrap();
            match b {
                Some(b) => normed.broadcast_add(b).unwrap(),
                None => normed,
            }
        };
        check(
            &[&x, &w, &b],
            || layer_norm(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), 1e-12).unwrap(),
            || written(Some(b.as_tensor())),
            1e-5,
        );
        check(
            &[&x, &w],
            || layer_norm(x.as_tensor(), w.as_tensor(), None, 1e-12).unwrap(),
            || written(None),
            1e-5,
        );
    }

    #[test]
    fn bias_gelu_matches_the_written_out_form() {
        let y = random(&[3, 67, 20], 5, 5.0);
        let bias = random(&[20], 6, 1.0);
        check(
            &[&y, &bias],
            || bias_gelu(y.as_tensor(), bias.as_tensor()).unwrap(),
            || {
                y.as_tensor()
                    .broadcast_add(bias.as_tensor())
                    .unwrap()
                    .gelu_erf()
                    .unwrap()
            },
            1e-5,
        );
    }

    #[test]
    fn bias_dropout_add_matches_the_written_out_form() {
        let y = random(&[3, 67, 20], 12, 5.0);
        let bias = random(&[20], 13, 1.0);
        let residual = random(&[3, 67, 20], 14, 2.0);
        let factors = crate::model::Dropout::new(15).factors(3 * 67 * 20, 0.2);
        for factors in [None, factors] {
            let written = || {
                let mut t = y.as_tensor().broadcast_add(bias.as_tensor()).unwrap();
                if let Some(f) = &factors {
                    let f = Tensor::from_slice(f, t.shape(), &Device::Cpu).unwrap();
                    t = t.mul(&f).unwrap();
                }
                t.add(residual.as_tensor()).unwrap()
            };
            check(
                &[&y, &bias, &residual],
                || {
                    let (y, b, r) = (y.as_tensor(), bias.as_tensor(), residual.as_tensor());
                    bias_dropout_add(y, b, r, factors.clone()).unwrap()
                },
                written,
                1e-5,
            );
        }
    }

    #[test]
    fn linear_matches_a_product_with_the_transposed_weight() {
        let x = random(&[130, 24], 16, 2.0);
        let w = random(&[40, 24], 17, 1.0);
        let b = random(&[40], 18, 1.0);
        let written = |bias: bool| {
            let y = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
            match bias {
                true => y.broadcast_add(b.as_tensor()).unwrap(),
                false => y,
            }
        };
        check(
            &[&x, &w, &b],
            || linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor())).unwrap(),
            || written(true),
            1e-5,
        );
        check(
            &[&x, &w],
            || linear(x.as_tensor(), w.as_tensor(), None).unwrap(),
            || written(false),
            1e-5,
        );
    }

    #[test]
    fn bias_add_matches_a_broadcast_add() {
        // 3 × 67 rows: more than one block of rows, and a partial last block.
        let y = random(&[3, 67, 20], 10, 5.0);
        let bias = random(&[20], 11, 1.0);
        check(
            &[&y, &bias],
            || bias_add(y.as_tensor(), bias.as_tensor()).unwrap(),
            || y.as_tensor().broadcast_add(bias.as_tensor()).unwrap(),
            1e-5,
        );
    }
}
