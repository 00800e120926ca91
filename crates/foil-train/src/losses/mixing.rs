//! MoCHi hard-negative mixing (Kalantidis et al., 2020, "Hard Negative Mixing for Contrastive
//! Learning", NeurIPS).
//!
//! For query `q` (unit vector) with negatives `n_j` (unit vectors; the positive excluded), rank
//! the negatives by similarity to `q` and keep the `hardest` N. Then synthesise
//!
//! - `synthetic` points `h = h̃ / ‖h̃‖`, `h̃ = α n_a + (1 − α) n_b`, with `a`, `b` drawn
//!   uniformly from the N hardest and `α ~ U[0, 1)`;
//! - `query_synthetic` harder points `h' = h̃' / ‖h̃'‖`, `h̃' = β q + (1 − β) n_c`, with
//!   `β ~ U[0, 0.5)` (MoCHi's s' points).
//!
//! As in MoCHi, the synthetic points are constants: no gradient flows into them (nor into the
//! mixing coefficients or the choice of negatives); the query's similarity to them, `q · h`,
//! does carry gradient into `q`. Their logits join the softmax denominator as extra negatives.
//!
//! Draws come from the caller's [`SplitMix64`] in a fixed order — per query, for each synthetic
//! point `a = below(N)`, `b = below(N)`, `α = next_f64()`; then for each query-mixed point
//! `c = below(N)`, `β = 0.5·next_f64()` — so a run is reproducible (and the golden script
//! replays it). Ranking ties go to the lower column. Mixing is defined on unit vectors, so it
//! needs cosine similarity.

use candle_core::Tensor;
use foil_core::rng::SplitMix64;
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::host;

/// How many negatives MoCHi synthesises per query.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mixing {
    /// N: how many of the hardest negatives are mixed.
    pub hardest: usize,
    /// s: synthetic points mixing two hard negatives.
    pub synthetic: usize,
    /// s': synthetic points mixing the query with a hard negative.
    pub query_synthetic: usize,
}

impl Mixing {
    /// `None` when no point is to be synthesised.
    pub fn new(hardest: usize, synthetic: usize, query_synthetic: usize) -> Option<Self> {
        (synthetic + query_synthetic > 0).then_some(Self {
            hardest,
            synthetic,
            query_synthetic,
        })
    }

    /// The unit-vector similarities `[B, s + s']` of each query to its synthetic negatives.
    ///
    /// `queries` `[B, d]` and `docs` `[N, d]` must be unit rows; `scores` `[B, N]` ranks the
    /// documents (column i is query i's positive and never mixed).
    pub fn logits(
        &self,
        queries: &Tensor,
        docs: &Tensor,
        scores: &Tensor,
        rng: &mut SplitMix64,
    ) -> Result<Tensor> {
        let (b, d) = queries.dims2()?;
        let (n, _) = docs.dims2()?;
        if self.hardest == 0 || n < 2 {
            return Err(Error::Invalid(
                "hard-negative mixing needs at least one negative and hardest ≥ 1".into(),
            ));
        }
        let q = host(queries)?;
        let docs_h = host(docs)?;
        let s = host(scores)?;
        let count = self.synthetic + self.query_synthetic;
        let mut points = Vec::with_capacity(b * count * d);
        for i in 0..b {
            let mut order: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            order.sort_by(|&x, &y| s[i * n + y].total_cmp(&s[i * n + x]).then(x.cmp(&y)));
            order.truncate(self.hardest);
            let top = order.len() as u64;
            let row = |j: usize| &docs_h[j * d..(j + 1) * d];
            let mut push = |mixed: Vec<f64>| {
                let norm = mixed.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                points.extend(mixed.iter().map(|x| x / norm));
            };
            for _ in 0..self.synthetic {
                let a = order[rng.below(top) as usize];
                let c = order[rng.below(top) as usize];
                let alpha = rng.next_f64();
                push(
                    row(a)
                        .iter()
                        .zip(row(c))
                        .map(|(x, y)| alpha * x + (1.0 - alpha) * y)
                        .collect(),
                );
            }
            for _ in 0..self.query_synthetic {
                let c = order[rng.below(top) as usize];
                let beta = 0.5 * rng.next_f64();
                push(
                    q[i * d..(i + 1) * d]
                        .iter()
                        .zip(row(c))
                        .map(|(x, y)| beta * x + (1.0 - beta) * y)
                        .collect(),
                );
            }
        }
        let h =
            Tensor::from_vec(points, (b, count, d), queries.device())?.to_dtype(queries.dtype())?;
        let mixed = queries.unsqueeze(1)?.broadcast_mul(&h)?.sum(2)?;
        Ok(mixed)
    }
}
