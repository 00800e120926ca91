//! The losses of a cross-encoder over the logits it gives a row's pairs: `[B, 1 + K]`, the
//! (query, positive) pair first, then the (query, negative) pairs.
//!
//! - [`CrossLoss::Listwise`]: softmax cross-entropy over the row's 1 + K logits with the
//!   positive as the target (the "localized contrastive estimation" of Gao et al. 2021), i.e.
//!   `logsumexp(z) − z₀`, averaged over rows — PyTorch's `cross_entropy(z, 0)`.
//! - [`CrossLoss::Bce`]: binary cross-entropy with logits, label 1 for the positive and 0 for
//!   each negative, averaged over the `B·(1 + K)` pairs — PyTorch's
//!   `binary_cross_entropy_with_logits`, computed as `softplus(−z₀)` and `softplus(zₖ)` with
//!   `softplus(x) = max(x, 0) + ln(1 + e^(−|x|))`, which never overflows.
//!
//! The golden test (`tests/cross_loss_parity.rs`) compares value and gradient with PyTorch.

use candle_core::Tensor;
use foil_core::Result;
use serde::{Deserialize, Serialize};

/// The loss of a cross-encoder over a row's logits (positive first, then its negatives).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrossLoss {
    /// Softmax cross-entropy over the row's 1 + K logits with the positive as the target.
    #[default]
    Listwise,
    /// Binary cross-entropy with logits: label 1 for the positive, 0 for each negative.
    Bce,
}

impl CrossLoss {
    /// The loss of `logits` `[B, 1 + K]`, a scalar.
    pub fn compute(self, logits: &Tensor) -> Result<Tensor> {
        match self {
            CrossLoss::Listwise => Ok(listwise(logits)?),
            CrossLoss::Bce => Ok(bce(logits)?),
        }
    }
}

/// `mean_b(logsumexp(z_b) − z_b0)`, with the row maximum taken out before `exp`.
fn listwise(logits: &Tensor) -> candle_core::Result<Tensor> {
    let positive = logits.narrow(1, 0, 1)?.squeeze(1)?;
    super::logsumexp(logits)?.sub(&positive)?.mean_all()
}

/// `mean(softplus(sign · z))` with sign −1 for the positive column and +1 for the others.
fn bce(logits: &Tensor) -> candle_core::Result<Tensor> {
    let (b, n) = logits.dims2()?;
    let mut sign = vec![1f64; b * n];
    for row in sign.chunks_mut(n) {
        row[0] = -1.0;
    }
    let sign = Tensor::from_vec(sign, (b, n), logits.device())?.to_dtype(logits.dtype())?;
    let x = logits.mul(&sign)?;
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    x.relu()?.add(&tail)?.mean_all()
}
