//! Soft-InfoNCE (Li et al., 2023, "Rethinking Negative Pairs in Code Search", EMNLP): InfoNCE
//! whose negatives enter the denominator with given weights, so that likely false negatives
//! (high BM25 or teacher score) count less:
//!
//! ```text
//! ℓᵢ = −log( exp(zᵢᵢ) / (exp(zᵢᵢ) + Σ_{j≠i} wᵢⱼ exp(zᵢⱼ)) )      zᵢⱼ = s(qᵢ, d_j) / τ
//! L = mean_i ℓᵢ
//! ```
//!
//! computed as `logsumexp_j(zᵢⱼ + log wᵢⱼ) − zᵢᵢ` with `log wᵢᵢ = 0`. The weights are constants
//! (no gradient) and must be finite and ≥ 0 (a weight of 0 removes that negative). They come as
//! [`LossInput::weights`]: `[B, K]` for the hard negatives (in-batch negatives weigh 1) or
//! `[B, B + B·K]`, one per column of the document matrix. Normalising raw scores into weights
//! (e.g. the paper's `w ∝ 1 − sim`, or a softmax over teacher scores times the number of
//! negatives) is the caller's choice. With all weights 1 this is InfoNCE. MoCHi negatives, when
//! asked for, weigh 1; `focal_gamma` as in [`InfoNce`](super::InfoNce).

use candle_core::Tensor;
use foil_core::rng::SplitMix64;
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::info_nce::{cross_entropy_rows, Scored};
use super::{constant, focal, host, LossInput, Mixing, Similarity};

/// Soft-InfoNCE options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoftInfoNce {
    /// 1 / temperature.
    pub scale: f64,
    pub similarity: Similarity,
    /// Focal γ (0: off).
    pub focal_gamma: f64,
    /// MoCHi: negatives mixed from the N hardest.
    pub mix_hardest: usize,
    /// MoCHi: synthetic negatives from two hard negatives per query (0: off).
    pub mix_synthetic: usize,
    /// MoCHi: synthetic negatives from the query and a hard negative per query (0: off).
    pub mix_query: usize,
}

impl Default for SoftInfoNce {
    fn default() -> Self {
        Self {
            scale: 20.0,
            similarity: Similarity::Cosine,
            focal_gamma: 0.0,
            mix_hardest: 16,
            mix_synthetic: 0,
            mix_query: 0,
        }
    }
}

/// The additive log-weights `[B, N]` of the document matrix's columns.
fn log_weights(input: &LossInput, b: usize, k: usize) -> Result<Tensor> {
    let w = input
        .weights
        .ok_or_else(|| Error::Invalid("soft-infonce needs negative weights".into()))?;
    let n = b + b * k;
    let values = host(w)?;
    if let Some(bad) = values.iter().find(|x| !x.is_finite() || **x < 0.0) {
        return Err(Error::Invalid(format!(
            "soft-infonce weights must be finite and ≥ 0, got \"{bad}\""
        )));
    }
    let mut log_w = vec![0f64; b * n];
    match w.dims() {
        &[wb, wk] if wb == b && wk == k => {
            for i in 0..b {
                for j in 0..k {
                    log_w[i * n + b + i * k + j] = values[i * k + j].ln();
                }
            }
        }
        &[wb, wn] if wb == b && wn == n => {
            for i in 0..b {
                for j in 0..n {
                    if j != i {
                        log_w[i * n + j] = values[i * n + j].ln();
                    }
                }
            }
        }
        other => {
            return Err(Error::Invalid(format!(
                "soft-infonce weights are {other:?}; expected [{b}, {k}] or [{b}, {n}]"
            )))
        }
    }
    Ok(constant(
        log_w,
        b,
        n,
        input.queries.dtype(),
        input.queries.device(),
    )?)
}

/// Soft-InfoNCE loss (see the module docs).
pub fn soft_info_nce(
    input: &LossInput,
    opts: &SoftInfoNce,
    rng: &mut SplitMix64,
) -> Result<Tensor> {
    let (b, _) = input.dims()?;
    let k = input.negatives_per_query()?;
    let log_w = log_weights(input, b, k)?;
    let scored = Scored::new(input, opts.similarity)?;
    let mixing = Mixing::new(opts.mix_hardest, opts.mix_synthetic, opts.mix_query);
    let extra = scored.mixed(mixing, opts.similarity, opts.scale, rng)?;
    let rows = cross_entropy_rows(&scored, opts.scale, Some(&log_w), extra.as_ref())?;
    Ok(focal(&rows, opts.focal_gamma)?.mean_all()?)
}
