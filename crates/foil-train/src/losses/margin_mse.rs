//! MarginMSE (Hofstätter et al., 2020, "Improving Efficient Neural Ranking Models with
//! Cross-Architecture Knowledge Distillation"), as sentence-transformers' `MarginMSELoss`:
//!
//! ```text
//! L = mean_{i,k} ( (s(qᵢ, pᵢ) − s(qᵢ, nᵢₖ)) − Mᵢₖ )²
//! ```
//!
//! with `M` the teacher's margins: [`LossInput::teacher`] gives them as `[B, K]`, or as teacher
//! scores `[B, 1 + K]` (positive first) whose margins `tᵢ₀ − tᵢₖ` are taken. The teacher is a
//! constant. Dot-product similarity by default, as sentence-transformers.

use candle_core::{Tensor, D};
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::{prepare, row_dot, LossInput, Similarity};

/// MarginMSE options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarginMse {
    pub similarity: Similarity,
}

impl Default for MarginMse {
    fn default() -> Self {
        Self {
            similarity: Similarity::Dot,
        }
    }
}

/// MarginMSE loss (see the module docs); needs hard negatives and teacher margins or scores.
pub fn margin_mse(input: &LossInput, opts: &MarginMse) -> Result<Tensor> {
    let negatives = input.require_negatives("margin-mse")?;
    let (b, k, _) = negatives.dims3()?;
    let teacher = input
        .teacher
        .ok_or_else(|| Error::Invalid("margin-mse needs teacher scores".into()))?
        .detach()
        .to_dtype(input.queries.dtype())?;
    let target = match teacher.dims() {
        &[tb, tk] if tb == b && tk == k => teacher,
        &[tb, tk] if tb == b && tk == k + 1 => teacher
            .narrow(1, 0, 1)?
            .broadcast_sub(&teacher.narrow(1, 1, k)?)?,
        other => {
            return Err(Error::Invalid(format!(
                "margin-mse teacher is {other:?}; expected margins [{b}, {k}] or scores [{b}, {}]",
                k + 1
            )))
        }
    };
    let q = prepare(opts.similarity, input.queries)?;
    let p = prepare(opts.similarity, input.positives)?;
    let n = prepare(opts.similarity, &negatives)?;
    let pos = row_dot(&q, &p)?;
    let neg = q.unsqueeze(1)?.broadcast_mul(&n)?.sum(D::Minus1)?;
    let margin = pos.unsqueeze(1)?.broadcast_sub(&neg)?;
    Ok(margin.sub(&target)?.sqr()?.mean_all()?)
}
