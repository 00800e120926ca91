//! Triplet margin loss (Schroff et al., 2015, "FaceNet"; as sentence-transformers'
//! `TripletLoss`):
//!
//! ```text
//! ℓᵢₖ = max(0, dist(qᵢ, pᵢ) − dist(qᵢ, nᵢₖ) + margin)        L = mean_{i,k} ℓᵢₖ
//! ```
//!
//! over every hard negative k of every query (sentence-transformers takes exactly one), with
//! `dist` the Euclidean distance `‖x − y‖₂` (default, margin 5 as sentence-transformers) or the
//! cosine distance `1 − cos(x, y)`.

use candle_core::{Tensor, D};
use foil_core::Result;
use serde::{Deserialize, Serialize};

use super::{normalize, row_dot, LossInput};

/// The triplet loss's distance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    #[default]
    Euclidean,
    Cosine,
}

/// Triplet options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Triplet {
    pub distance: Distance,
    pub margin: f64,
}

impl Default for Triplet {
    fn default() -> Self {
        Self {
            distance: Distance::Euclidean,
            margin: 5.0,
        }
    }
}

/// Triplet margin loss (see the module docs); needs hard negatives.
pub fn triplet(input: &LossInput, opts: &Triplet) -> Result<Tensor> {
    let negatives = input.require_negatives("triplet")?;
    let q = input.queries;
    let (d_pos, d_neg) = match opts.distance {
        Distance::Euclidean => {
            let pos = q.sub(input.positives)?.sqr()?.sum(D::Minus1)?;
            let neg = q
                .unsqueeze(1)?
                .broadcast_sub(&negatives)?
                .sqr()?
                .sum(D::Minus1)?;
            (pos.sqrt()?, neg.sqrt()?)
        }
        Distance::Cosine => {
            let qn = normalize(q)?;
            let pos = row_dot(&qn, &normalize(input.positives)?)?;
            let neg = qn
                .unsqueeze(1)?
                .broadcast_mul(&normalize(&negatives)?)?
                .sum(D::Minus1)?;
            (pos.affine(-1.0, 1.0)?, neg.affine(-1.0, 1.0)?)
        }
    };
    let rows = d_pos
        .unsqueeze(1)?
        .broadcast_sub(&d_neg)?
        .affine(1.0, opts.margin)?
        .relu()?
        .mean_all()?;
    Ok(rows)
}
