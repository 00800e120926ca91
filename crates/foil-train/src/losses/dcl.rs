//! Decoupled contrastive learning, DCL and DCLW (Yeh et al., 2022, "Decoupled Contrastive
//! Learning", ECCV).
//!
//! InfoNCE with the positive taken out of the denominator, which removes the
//! negative–positive coupling that makes InfoNCE need large batches:
//!
//! ```text
//! ℓᵢ = −wᵢ · zᵢᵢ + log Σ_{j≠i} exp(zᵢⱼ)        zᵢⱼ = s(qᵢ, d_j) / τ,   L = mean_i ℓᵢ
//! ```
//!
//! over the document matrix (in-batch positives of other queries and every hard negative), in
//! the query→document direction only (the paper's SimCLR form also contrasts same-view pairs;
//! retrieval has no second view of a query). DCL has `wᵢ = 1`. DCLW weighs positives with the
//! von Mises–Fisher weighting
//!
//! ```text
//! wᵢ = 2 − exp(sᵢᵢ / σ) / ( (1/B) Σ_k exp(s_kk / σ) ) = 2 − B · softmax_i(sᵢᵢ / σ)
//! ```
//!
//! on the unscaled similarities (σ = 0.5 by default), so that easy positives (already close)
//! weigh less. As in the authors' implementation the weight is differentiated too. MoCHi
//! negatives join the denominator when asked for.

use candle_core::Tensor;
use foil_core::rng::SplitMix64;
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::info_nce::Scored;
use super::{diagonal, diagonal_mask, logsumexp, LossInput, Mixing, Similarity};

/// DCL options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dcl {
    /// 1 / temperature.
    pub scale: f64,
    pub similarity: Similarity,
    /// MoCHi: negatives mixed from the N hardest.
    pub mix_hardest: usize,
    /// MoCHi: synthetic negatives from two hard negatives per query (0: off).
    pub mix_synthetic: usize,
    /// MoCHi: synthetic negatives from the query and a hard negative per query (0: off).
    pub mix_query: usize,
}

impl Default for Dcl {
    fn default() -> Self {
        Self {
            scale: 20.0,
            similarity: Similarity::Cosine,
            mix_hardest: 16,
            mix_synthetic: 0,
            mix_query: 0,
        }
    }
}

/// DCLW options: DCL plus the vMF weighting's σ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dclw {
    /// 1 / temperature.
    pub scale: f64,
    pub similarity: Similarity,
    /// σ of the von Mises–Fisher weighting.
    pub sigma: f64,
    pub mix_hardest: usize,
    pub mix_synthetic: usize,
    pub mix_query: usize,
}

impl Default for Dclw {
    fn default() -> Self {
        Self {
            scale: 20.0,
            similarity: Similarity::Cosine,
            sigma: 0.5,
            mix_hardest: 16,
            mix_synthetic: 0,
            mix_query: 0,
        }
    }
}

fn decoupled(
    input: &LossInput,
    scale: f64,
    similarity: Similarity,
    sigma: Option<f64>,
    mixing: Option<Mixing>,
    rng: &mut SplitMix64,
) -> Result<Tensor> {
    let scored = Scored::new(input, similarity)?;
    let (b, n) = scored.raw.dims2()?;
    if n < 2 && mixing.is_none() {
        return Err(Error::Invalid(
            "dcl needs a negative: a batch of 2 or more, or hard negatives".into(),
        ));
    }
    let logits = (&scored.raw * scale)?;
    let positive = diagonal(&logits)?;
    let mask = diagonal_mask(b, n, logits.dtype(), logits.device())?;
    let mut negatives = logits.add(&mask)?;
    if let Some(extra) = scored.mixed(mixing, similarity, scale, rng)? {
        negatives = Tensor::cat(&[&negatives, &extra], 1)?;
    }
    let positive = match sigma {
        Some(sigma) => {
            let s = (diagonal(&scored.raw)? / sigma)?;
            let max = s.max_keepdim(0)?.detach();
            let e = s.broadcast_sub(&max)?.exp()?;
            let softmax = e.broadcast_div(&e.sum_keepdim(0)?)?;
            let weight = softmax.affine(-(b as f64), 2.0)?;
            positive.mul(&weight)?
        }
        None => positive,
    };
    Ok(logsumexp(&negatives)?.sub(&positive)?.mean_all()?)
}

/// DCL loss (see the module docs).
pub fn dcl(input: &LossInput, opts: &Dcl, rng: &mut SplitMix64) -> Result<Tensor> {
    let mixing = Mixing::new(opts.mix_hardest, opts.mix_synthetic, opts.mix_query);
    decoupled(input, opts.scale, opts.similarity, None, mixing, rng)
}

/// DCLW loss: DCL with von Mises–Fisher weighted positives (see the module docs).
pub fn dclw(input: &LossInput, opts: &Dclw, rng: &mut SplitMix64) -> Result<Tensor> {
    if opts.sigma <= 0.0 {
        return Err(Error::Invalid(format!(
            "dclw sigma must be > 0, got \"{}\"",
            opts.sigma
        )));
    }
    let mixing = Mixing::new(opts.mix_hardest, opts.mix_synthetic, opts.mix_query);
    decoupled(
        input,
        opts.scale,
        opts.similarity,
        Some(opts.sigma),
        mixing,
        rng,
    )
}
