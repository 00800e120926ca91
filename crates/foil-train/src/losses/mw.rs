//! The Mann–Whitney (MW) loss (Sheikholeslami et al., 2025, "Optimizing What Matters:
//! AUC-Driven Learning for Robust Neural Retrieval", arXiv:2510.00137).
//!
//! The Mann–Whitney U statistic of a batch — the fraction of (positive pair, negative pair)
//! combinations ranked correctly — is its AUC. The MW loss replaces the step function by binary
//! cross-entropy on score differences, which upper-bounds 1 − AUC:
//!
//! ```text
//! P = { zᵢᵢ }            the B positive (query, document) scores of the batch
//! N = { zᵢⱼ : j ≠ i }    every other query × document score of the batch (in-batch and hard)
//! L = 1/(|P|·|N|) Σ_{p∈P} Σ_{n∈N} −log σ(p − n) = mean softplus(n − p)
//! ```
//!
//! with `z = s(q, d) · scale`. Unlike InfoNCE, a query's positive is compared with the negatives
//! of *every* query, so scores become comparable across queries (a global threshold works),
//! which is the point of the paper. What is implemented, precisely: all B × (B·N − B) pairs of
//! one positive score and one negative score of the query × document matrix, equally weighted,
//! `softplus` computed stably; `scale` plays the role of the paper's inverse temperature.

use candle_core::Tensor;
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::info_nce::Scored;
use super::{diagonal, softplus, LossInput, Similarity};

/// MW loss options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mw {
    /// Multiplies similarities before the pairwise differences.
    pub scale: f64,
    pub similarity: Similarity,
}

impl Default for Mw {
    fn default() -> Self {
        Self {
            scale: 20.0,
            similarity: Similarity::Cosine,
        }
    }
}

/// MW loss (see the module docs).
pub fn mw(input: &LossInput, opts: &Mw) -> Result<Tensor> {
    let scored = Scored::new(input, opts.similarity)?;
    let logits = (&scored.raw * opts.scale)?;
    let (b, n) = logits.dims2()?;
    if n < 2 {
        return Err(Error::Invalid(
            "mw needs a negative: a batch of 2 or more, or hard negatives".into(),
        ));
    }
    let off: Vec<u32> = (0..b * n)
        .filter(|&x| x / n != x % n)
        .map(|x| x as u32)
        .collect();
    let off = Tensor::from_vec(off, b * n - b, logits.device())?;
    let negative = logits.flatten_all()?.index_select(&off, 0)?;
    let positive = diagonal(&logits)?;
    let diff = negative
        .unsqueeze(0)?
        .broadcast_sub(&positive.unsqueeze(1)?)?;
    Ok(softplus(&diff)?.mean_all()?)
}
