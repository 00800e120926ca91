//! The contrastive loss family, one file per loss, each a function from embeddings to a scalar
//! loss tensor that candle's autograd differentiates.
//!
//! Shapes: queries `[B, d]`, positives `[B, d]` (row i is the positive of query i), hard
//! negatives `[B, K, d]` or flattened `[B·K, d]` (row `b·K + k` is negative k of query b).
//! In-batch losses score each query against the document matrix
//! `docs = [positives; negatives]` (`B + B·K` rows), whose column i is query i's positive and
//! every other column a negative.
//!
//! A cross-encoder's losses ([`CrossLoss`]) take the logits of its pairs instead.
//!
//! Every loss works in the dtype of its inputs (f32 for training, f64 for the finite-difference
//! checks). The golden tests (`tests/loss_parity.rs`) compare value and gradients with PyTorch.

mod cross;
mod dcl;
mod info_nce;
mod loss;
mod margin_mse;
mod mixing;
mod multi_similarity;
mod mw;
mod soft_info_nce;
mod triplet;

pub use cross::CrossLoss;
pub use dcl::{dcl, dclw, Dcl, Dclw};
pub use info_nce::{info_nce, InfoNce};
pub use loss::{Loss, LOSS_NAMES};
pub use margin_mse::{margin_mse, MarginMse};
pub use mixing::Mixing;
pub use multi_similarity::{multi_similarity, MultiSimilarity};
pub use mw::{mw, Mw};
pub use soft_info_nce::{soft_info_nce, SoftInfoNce};
pub use triplet::{triplet, Distance, Triplet};

use candle_core::{DType, Device, Tensor, D};
pub use foil_core::Similarity;
use foil_core::{Error, Result};

/// The embeddings as `similarity` sees them: unit rows for cosine (`x / max(‖x‖, 1e-12)`, as
/// PyTorch's `F.normalize`), unchanged for dot.
pub fn prepare(similarity: Similarity, x: &Tensor) -> candle_core::Result<Tensor> {
    match similarity {
        Similarity::Cosine => normalize(x),
        Similarity::Dot => Ok(x.clone()),
    }
}

/// One batch of embeddings (and, for some losses, labels) handed to a loss.
#[derive(Clone, Copy)]
pub struct LossInput<'a> {
    /// `[B, d]`.
    pub queries: &'a Tensor,
    /// `[B, d]`, row i the positive of query i.
    pub positives: &'a Tensor,
    /// Hard negatives, `[B, K, d]` or `[B·K, d]`.
    pub negatives: Option<&'a Tensor>,
    /// MarginMSE's teacher: margins `[B, K]` or scores `[B, 1 + K]` (positive first).
    pub teacher: Option<&'a Tensor>,
    /// Soft-InfoNCE's negative weights: `[B, K]` (hard negatives; in-batch ones weigh 1) or
    /// `[B, B + B·K]` (one per column of the document matrix; the positive's is ignored).
    pub weights: Option<&'a Tensor>,
}

impl<'a> LossInput<'a> {
    /// Queries and positives only (in-batch negatives).
    pub fn pairs(queries: &'a Tensor, positives: &'a Tensor) -> Self {
        Self {
            queries,
            positives,
            negatives: None,
            teacher: None,
            weights: None,
        }
    }

    /// With hard negatives.
    pub fn with_negatives(mut self, negatives: &'a Tensor) -> Self {
        self.negatives = Some(negatives);
        self
    }

    /// With teacher scores or margins (MarginMSE).
    pub fn with_teacher(mut self, teacher: &'a Tensor) -> Self {
        self.teacher = Some(teacher);
        self
    }

    /// With negative weights (Soft-InfoNCE).
    pub fn with_weights(mut self, weights: &'a Tensor) -> Self {
        self.weights = Some(weights);
        self
    }

    /// `(B, d)` after checking that queries and positives agree.
    pub fn dims(&self) -> Result<(usize, usize)> {
        let (b, d) = self.queries.dims2()?;
        let (pb, pd) = self.positives.dims2()?;
        if (pb, pd) != (b, d) {
            return Err(Error::Invalid(format!(
                "positives are [{pb}, {pd}] but queries are [{b}, {d}]"
            )));
        }
        if b == 0 {
            return Err(Error::Invalid("a loss needs at least one query".into()));
        }
        Ok((b, d))
    }

    /// The number of hard negatives per query (0 without negatives).
    pub fn negatives_per_query(&self) -> Result<usize> {
        Ok(match self.negatives_3d()? {
            Some(n) => n.dims3()?.1,
            None => 0,
        })
    }

    /// The hard negatives as `[B, K, d]`.
    pub fn negatives_3d(&self) -> Result<Option<Tensor>> {
        let (b, d) = self.dims()?;
        let Some(n) = self.negatives else {
            return Ok(None);
        };
        let shaped = match n.dims() {
            &[nb, _, nd] if nb == b && nd == d => n.clone(),
            &[rows, nd] if nd == d && rows % b == 0 => n.reshape((b, rows / b, d))?,
            other => {
                return Err(Error::Invalid(format!(
                    "negatives are {other:?}; expected [{b}, K, {d}] or [{b}·K, {d}]"
                )))
            }
        };
        Ok(Some(shaped))
    }

    /// The required hard negatives as `[B, K, d]` with K ≥ 1.
    pub fn require_negatives(&self, loss: &str) -> Result<Tensor> {
        match self.negatives_3d()? {
            Some(n) if n.dims3()?.1 > 0 => Ok(n),
            _ => Err(Error::Invalid(format!("{loss} needs hard negatives"))),
        }
    }

    /// The document matrix `[positives; negatives]`, `[B + B·K, d]`.
    pub fn docs(&self) -> Result<Tensor> {
        let (_, d) = self.dims()?;
        match self.negatives_3d()? {
            Some(n) => {
                let flat = n.reshape(((), d))?;
                Ok(Tensor::cat(&[self.positives, &flat], 0)?)
            }
            None => Ok(self.positives.clone()),
        }
    }
}

/// `x / max(‖x‖₂, 1e-12)` over the last dimension, as `torch.nn.functional.normalize`.
pub fn normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

/// `a · bᵀ`, `[Na, Nb]`.
pub(crate) fn matrix(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.contiguous()?.matmul(&b.t()?)
}

/// Row-wise dot products of two `[N, d]` matrices, `[N]`.
pub(crate) fn row_dot(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.mul(b)?.sum(D::Minus1)
}

/// The diagonal `x[i, i]` of a `[B, N]` matrix (N ≥ B), `[B]`.
pub(crate) fn diagonal(x: &Tensor) -> candle_core::Result<Tensor> {
    let b = x.dims2()?.0;
    let idx = Tensor::arange(0u32, b as u32, x.device())?.unsqueeze(1)?;
    x.gather(&idx, 1)?.squeeze(1)
}

/// `log Σ_j exp(x[i, j])` over the last dimension, with the (detached) row max taken out first.
/// Entries of −∞ contribute nothing.
pub(crate) fn logsumexp(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    x.broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .add(&max)?
        .squeeze(D::Minus1)
}

/// `log(1 + eˣ)`, computed as `max(x, 0) + log(1 + e^−|x|)` so that it never overflows.
pub(crate) fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    let tail = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    x.relu()?.add(&tail)
}

/// A constant `[rows, cols]` tensor from host values, in `dtype` on `device`.
pub(crate) fn constant(
    values: Vec<f64>,
    rows: usize,
    cols: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values, (rows, cols), device)?.to_dtype(dtype)
}

/// `[B, N]` additive mask: −∞ on the diagonal (the positive column), 0 elsewhere.
pub(crate) fn diagonal_mask(
    b: usize,
    n: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut m = vec![0f64; b * n];
    for i in 0..b {
        m[i * n + i] = f64::NEG_INFINITY;
    }
    constant(m, b, n, dtype, device)
}

/// A tensor's values as f64 on the host (for decisions that take no gradient).
pub(crate) fn host(x: &Tensor) -> candle_core::Result<Vec<f64>> {
    x.detach()
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()
}

/// Focal reweighting of per-row cross-entropy terms: `ℓᵢ · (1 − pᵢ)^γ` with `pᵢ = e^−ℓᵢ` the
/// softmax probability of the positive (Lin et al., 2017, "Focal Loss for Dense Object
/// Detection"). The weight is differentiated too, as in the focal loss. γ = 0 leaves the terms.
pub(crate) fn focal(rows: &Tensor, gamma: f64) -> candle_core::Result<Tensor> {
    if gamma == 0.0 {
        return Ok(rows.clone());
    }
    let weight = rows
        .neg()?
        .exp()?
        .affine(-1.0, 1.0)?
        .maximum(0.0)?
        .powf(gamma)?;
    rows.mul(&weight)
}
