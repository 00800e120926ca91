//! Multi-Similarity loss (Wang et al., 2019, "Multi-Similarity Loss with General Pair Weighting
//! for Deep Metric Learning", CVPR), as pytorch-metric-learning's `MultiSimilarityLoss` computes
//! it without a miner, with the queries as anchors and the document matrix as references:
//!
//! ```text
//! ℓᵢ = 1/α · log(1 + Σ_{p ∈ Pᵢ} exp(−α (S_ip − λ)))
//!    + 1/β · log(1 + Σ_{n ∈ Nᵢ} exp( β (S_in − λ)))          L = mean_i ℓᵢ
//! ```
//!
//! with `S` the (unscaled) similarity, `Pᵢ = {pᵢ}` and `Nᵢ` every other document of the batch
//! (in-batch positives and all hard negatives). Defaults α = 2, β = 50, λ (`base`) = 0.5.

use candle_core::Tensor;
use foil_core::Result;
use serde::{Deserialize, Serialize};

use super::info_nce::Scored;
use super::{diagonal, diagonal_mask, logsumexp, softplus, LossInput, Similarity};

/// Multi-Similarity options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiSimilarity {
    pub alpha: f64,
    pub beta: f64,
    /// λ, the similarity margin.
    pub base: f64,
    pub similarity: Similarity,
}

impl Default for MultiSimilarity {
    fn default() -> Self {
        Self {
            alpha: 2.0,
            beta: 50.0,
            base: 0.5,
            similarity: Similarity::Cosine,
        }
    }
}

/// Multi-Similarity loss (see the module docs).
pub fn multi_similarity(input: &LossInput, opts: &MultiSimilarity) -> Result<Tensor> {
    let scored = Scored::new(input, opts.similarity)?;
    let (b, n) = scored.raw.dims2()?;
    let positive = diagonal(&scored.raw)?;
    let pos_term =
        (softplus(&positive.affine(-opts.alpha, opts.alpha * opts.base)?)? / opts.alpha)?;
    let shifted = scored
        .raw
        .affine(opts.beta, -opts.beta * opts.base)?
        .add(&diagonal_mask(
            b,
            n,
            scored.raw.dtype(),
            scored.raw.device(),
        )?)?;
    let one = Tensor::zeros((b, 1), shifted.dtype(), shifted.device())?;
    let neg_term = (logsumexp(&Tensor::cat(&[&one, &shifted], 1)?)? / opts.beta)?;
    Ok(pos_term.add(&neg_term)?.mean_all()?)
}
