//! InfoNCE, a.k.a. MultipleNegativesRankingLoss (van den Oord et al., 2018, "Representation
//! Learning with Contrastive Predictive Coding"; Henderson et al., 2017, "Efficient Natural
//! Language Response Suggestion for Smart Reply").
//!
//! With `s(q, d)` the similarity, `τ = 1 / scale`, and `D` the document matrix (every positive
//! and every hard negative of the batch):
//!
//! ```text
//! ℓᵢ = −log( exp(s(qᵢ, pᵢ)/τ) / Σ_{d ∈ D} exp(s(qᵢ, d)/τ) )       L = mean_i ℓᵢ
//! ```
//!
//! exactly as sentence-transformers' `MultipleNegativesRankingLoss`. With `symmetric` the
//! passage→query direction `ℓ'ᵢ = −log(exp(s(pᵢ, qᵢ)/τ) / Σ_j exp(s(pᵢ, q_j)/τ))` is added and
//! `L = mean_i (ℓᵢ + ℓ'ᵢ) / 2`, as `MultipleNegativesSymmetricRankingLoss` (one softmax per
//! direction; the backward direction sees only the queries).
//!
//! Options: `focal_gamma` γ weighs each row's term by `(1 − pᵢ)^γ`, `pᵢ` the softmax
//! probability of the positive (per direction); `mix_synthetic` / `mix_query` add MoCHi
//! negatives ([`Mixing`]) to the query→document denominator.

use candle_core::Tensor;
use foil_core::rng::SplitMix64;
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::{diagonal, focal, logsumexp, matrix, prepare, LossInput, Mixing, Similarity};

/// InfoNCE / MultipleNegativesRanking options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfoNce {
    /// 1 / temperature.
    pub scale: f64,
    pub similarity: Similarity,
    /// Adds the passage→query direction.
    pub symmetric: bool,
    /// Focal γ (0: off).
    pub focal_gamma: f64,
    /// MoCHi: negatives mixed from the N hardest.
    pub mix_hardest: usize,
    /// MoCHi: synthetic negatives from two hard negatives per query (0: off).
    pub mix_synthetic: usize,
    /// MoCHi: synthetic negatives from the query and a hard negative per query (0: off).
    pub mix_query: usize,
}

impl Default for InfoNce {
    fn default() -> Self {
        Self {
            scale: 20.0,
            similarity: Similarity::Cosine,
            symmetric: false,
            focal_gamma: 0.0,
            mix_hardest: 16,
            mix_synthetic: 0,
            mix_query: 0,
        }
    }
}

/// Embeddings as the similarity sees them and the unscaled query×document scores.
pub(crate) struct Scored {
    pub queries: Tensor,
    pub positives: Tensor,
    pub docs: Tensor,
    /// `[B, N]` similarities, column i the positive of query i.
    pub raw: Tensor,
}

impl Scored {
    pub fn new(input: &LossInput, similarity: Similarity) -> Result<Self> {
        input.dims()?;
        let queries = prepare(similarity, input.queries)?;
        let positives = prepare(similarity, input.positives)?;
        let docs = prepare(similarity, &input.docs()?)?;
        let raw = matrix(&queries, &docs)?;
        Ok(Self {
            queries,
            positives,
            docs,
            raw,
        })
    }

    /// The scaled logits of MoCHi's synthetic negatives `[B, s + s']`, or `None`.
    pub fn mixed(
        &self,
        mixing: Option<Mixing>,
        similarity: Similarity,
        scale: f64,
        rng: &mut SplitMix64,
    ) -> Result<Option<Tensor>> {
        let Some(m) = mixing else { return Ok(None) };
        if similarity != Similarity::Cosine {
            return Err(Error::Invalid(
                "hard-negative mixing needs cosine similarity".into(),
            ));
        }
        let logits = m.logits(&self.queries, &self.docs, &self.raw, rng)?;
        Ok(Some((logits * scale)?))
    }
}

/// Per-query cross-entropy terms `logsumexp_j(zᵢⱼ + log wᵢⱼ) − zᵢᵢ`, `[B]`, with `z` the scaled
/// scores, `log w` optional additive log-weights `[B, N]`, plus MoCHi columns.
pub(crate) fn cross_entropy_rows(
    scored: &Scored,
    scale: f64,
    log_weights: Option<&Tensor>,
    extra: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let logits = (&scored.raw * scale)?;
    let positive = diagonal(&logits)?;
    let mut all = match log_weights {
        Some(w) => logits.add(w)?,
        None => logits,
    };
    if let Some(extra) = extra {
        all = Tensor::cat(&[&all, extra], 1)?;
    }
    logsumexp(&all)?.sub(&positive)
}

/// The passage→query terms `[B]` of the symmetric loss.
pub(crate) fn backward_rows(scored: &Scored, scale: f64) -> candle_core::Result<Tensor> {
    let logits = (matrix(&scored.positives, &scored.queries)? * scale)?;
    logsumexp(&logits)?.sub(&diagonal(&logits)?)
}

impl InfoNce {
    pub(crate) fn mixing(&self) -> Option<Mixing> {
        Mixing::new(self.mix_hardest, self.mix_synthetic, self.mix_query)
    }
}

/// InfoNCE / MultipleNegativesRanking loss (see the module docs); `rng` feeds MoCHi mixing.
pub fn info_nce(input: &LossInput, opts: &InfoNce, rng: &mut SplitMix64) -> Result<Tensor> {
    let scored = Scored::new(input, opts.similarity)?;
    let extra = scored.mixed(opts.mixing(), opts.similarity, opts.scale, rng)?;
    let rows = cross_entropy_rows(&scored, opts.scale, None, extra.as_ref())?;
    let mut rows = focal(&rows, opts.focal_gamma)?;
    if opts.symmetric {
        let back = focal(&backward_rows(&scored, opts.scale)?, opts.focal_gamma)?;
        rows = (rows.add(&back)? * 0.5)?;
    }
    Ok(rows.mean_all()?)
}
