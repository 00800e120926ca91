//! Choosing a query's negatives from its ranked candidates: the filters of
//! sentence-transformers' `mine_hard_negatives` with their meaning, minus its quirks.
//!
//! For one query with positive scores `s_p` (the **lowest** positive's score is the margin
//! reference, so a negative is never closer than the weakest positive allows), a candidate with
//! score `s` at rank `r` (0-based, among candidates that are not positives) is kept when
//!
//! ```text
//! range_min ≤ r < range_max
//! s ≤ max_score,  s ≥ min_score
//! s + absolute_margin ≤ s_p
//! s ≤ s_p − |s_p| · relative_margin        (sign-safe: still below s_p when s_p < 0)
//! ```
//!
//! Unlike sentence-transformers, `range_min` counts raw ranks (not survivors of the other
//! filters), ranks ignore the query's own positives whatever other queries have, and
//! candidates whose text equals a positive's, the query's or an earlier candidate's are
//! rejected, counted, and take no rank.
//! NV-Retriever's TopK-PercPos (Moreira et al., 2024) is `relative_margin = 0.05`:
//! keep negatives scoring at most 95% of the positive.

use std::collections::BTreeMap;

use foil_core::rng::SplitMix64;
use serde::Serialize;

/// How the kept candidates are sampled down to `num_negatives`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum NegativeSampling {
    /// The best-ranked ones.
    Top,
    /// A uniform sample, seeded per query (same seed, same negatives), kept in rank order.
    Random,
}

/// The filters, with sentence-transformers' names and meaning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filters {
    pub range_min: usize,
    pub range_max: usize,
    pub max_score: Option<f32>,
    pub min_score: Option<f32>,
    pub absolute_margin: Option<f32>,
    pub relative_margin: Option<f32>,
    pub num_negatives: usize,
    pub sampling: NegativeSampling,
    pub seed: u64,
}

impl Default for Filters {
    fn default() -> Self {
        Self {
            range_min: 0,
            range_max: 50,
            max_score: None,
            min_score: None,
            absolute_margin: None,
            relative_margin: None,
            num_negatives: 3,
            sampling: NegativeSampling::Top,
            seed: 42,
        }
    }
}

/// Why a candidate was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    Positive,
    SameTextAsPositive,
    SameTextAsQuery,
    DuplicateText,
    BelowRangeMin,
    AboveMaxScore,
    BelowMinScore,
    AbsoluteMargin,
    RelativeMargin,
    NotSampled,
}

/// A candidate negative: corpus index, retrieval score, and whether its text must be excluded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub doc: u32,
    pub score: f32,
    /// Set by the caller when the text equals a positive's, the query's, or an earlier
    /// candidate's.
    pub text_clash: Option<Rejection>,
    pub is_positive: bool,
}

/// A kept negative with its 0-based rank among the non-positive candidates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Chosen {
    pub doc: u32,
    pub score: f32,
    pub rank: usize,
}

/// Counts of rejected candidates by reason.
pub type Rejections = BTreeMap<Rejection, u64>;

impl Filters {
    /// Chooses negatives from `candidates` (best first) for a query whose lowest positive
    /// scores `positive_score`; `query_key` seeds random sampling. Returns the chosen
    /// negatives in rank order and adds to `rejected`.
    pub fn choose(
        &self,
        candidates: &[Candidate],
        positive_score: f32,
        query_key: &str,
        rejected: &mut Rejections,
    ) -> Vec<Chosen> {
        let mut reject = |r: Rejection| *rejected.entry(r).or_default() += 1;
        let mut kept = Vec::new();
        let mut rank = 0usize;
        for c in candidates {
            if c.is_positive {
                reject(Rejection::Positive);
                continue;
            }
            // A candidate with a positive's or the query's text is a positive in disguise: it
            // takes no rank.
            if let Some(clash) = c.text_clash {
                reject(clash);
                continue;
            }
            if rank >= self.range_max {
                break;
            }
            let r = rank;
            rank += 1;
            let s = c.score;
            let why = if r < self.range_min {
                Some(Rejection::BelowRangeMin)
            } else if self.max_score.is_some_and(|m| s > m) {
                Some(Rejection::AboveMaxScore)
            } else if self.min_score.is_some_and(|m| s < m) {
                Some(Rejection::BelowMinScore)
            } else if self.absolute_margin.is_some_and(|m| s + m > positive_score) {
                Some(Rejection::AbsoluteMargin)
            } else if self
                .relative_margin
                .is_some_and(|m| s > positive_score - positive_score.abs() * m)
            {
                Some(Rejection::RelativeMargin)
            } else {
                None
            };
            match why {
                Some(why) => reject(why),
                None => kept.push(Chosen {
                    doc: c.doc,
                    score: s,
                    rank: r,
                }),
            }
        }
        if kept.len() <= self.num_negatives {
            return kept;
        }
        match self.sampling {
            NegativeSampling::Top => {
                let dropped = kept.len() - self.num_negatives;
                *rejected.entry(Rejection::NotSampled).or_default() += dropped as u64;
                kept.truncate(self.num_negatives);
                kept
            }
            NegativeSampling::Random => {
                let mut rng = SplitMix64::new(self.seed ^ fnv1a(query_key));
                let mut idx: Vec<usize> = (0..kept.len()).collect();
                rng.shuffle(&mut idx);
                let mut pick: Vec<usize> = idx[..self.num_negatives].to_vec();
                pick.sort_unstable();
                *rejected.entry(Rejection::NotSampled).or_default() +=
                    (kept.len() - pick.len()) as u64;
                pick.into_iter().map(|i| kept[i]).collect()
            }
        }
    }
}

/// FNV-1a of a string: a stable per-query seed component.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(scores: &[f32]) -> Vec<Candidate> {
        scores
            .iter()
            .enumerate()
            .map(|(i, &score)| Candidate {
                doc: i as u32,
                score,
                text_clash: None,
                is_positive: false,
            })
            .collect()
    }

    #[test]
    fn relative_margin_is_sign_safe() {
        let f = Filters {
            relative_margin: Some(0.05),
            num_negatives: 10,
            ..Default::default()
        };
        let mut r = Rejections::new();
        // Positive at -0.5: threshold -0.525; -0.49 is above the positive and must go.
        let kept = f.choose(&cands(&[-0.49, -0.52, -0.53, -0.6]), -0.5, "q", &mut r);
        assert_eq!(kept.iter().map(|c| c.doc).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(r[&Rejection::RelativeMargin], 2);
        let kept = f.choose(&cands(&[0.96, 0.95, 0.9]), 1.0, "q", &mut r);
        assert_eq!(kept.iter().map(|c| c.doc).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn ranks_skip_positives_and_range_min_counts_raw_ranks() {
        let f = Filters {
            range_min: 1,
            range_max: 3,
            num_negatives: 5,
            ..Default::default()
        };
        let mut c = cands(&[0.9, 0.8, 0.7, 0.6, 0.5]);
        c[1].is_positive = true;
        let mut r = Rejections::new();
        let kept = f.choose(&c, 0.8, "q", &mut r);
        // Non-positive ranks: doc0 → 0 (below range_min), doc2 → 1, doc3 → 2; doc4 is rank 3 = range_max.
        assert_eq!(
            kept,
            vec![
                Chosen {
                    doc: 2,
                    score: 0.7,
                    rank: 1
                },
                Chosen {
                    doc: 3,
                    score: 0.6,
                    rank: 2
                }
            ]
        );
        assert_eq!(r[&Rejection::Positive], 1);
        assert_eq!(r[&Rejection::BelowRangeMin], 1);
    }

    #[test]
    fn absolute_margin_and_score_bounds_are_inclusive() {
        let f = Filters {
            absolute_margin: Some(0.25),
            max_score: Some(0.5),
            min_score: Some(0.125),
            num_negatives: 9,
            ..Default::default()
        };
        let kept = f.choose(
            &cands(&[0.75, 0.5, 0.25, 0.125, 0.0625]),
            0.75,
            "q",
            &mut Rejections::new(),
        );
        assert_eq!(
            kept.iter().map(|c| c.score).collect::<Vec<_>>(),
            [0.5, 0.25, 0.125]
        );
    }

    #[test]
    fn random_sampling_is_seeded_and_keeps_rank_order() {
        let f = Filters {
            sampling: NegativeSampling::Random,
            num_negatives: 3,
            range_max: 20,
            ..Default::default()
        };
        let c = cands(&(0..20).map(|i| 1.0 - i as f32 / 20.0).collect::<Vec<_>>());
        let a = f.choose(&c, 2.0, "q1", &mut Rejections::new());
        let b = f.choose(&c, 2.0, "q1", &mut Rejections::new());
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].rank < w[1].rank));
        let other = Filters {
            seed: 7,
            ..f.clone()
        }
        .choose(&c, 2.0, "q1", &mut Rejections::new());
        assert_ne!(
            a, other,
            "another seed, another sample (with overwhelming probability)"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chosen_negatives_obey_every_filter(
            scores in prop::collection::vec(-1.0f32..1.0, 0..80),
            positives in prop::collection::vec(0usize..80, 0..4),
            clashes in prop::collection::vec(0usize..80, 0..4),
            positive_score in -1.0f32..1.0,
            range_min in 0usize..5,
            range_span in 1usize..40,
            margin in prop::option::of(0.0f32..0.3),
            absolute in prop::option::of(0.0f32..0.3),
            num_negatives in 1usize..8,
            random in any::<bool>(),
        ) {
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let cands: Vec<Candidate> = sorted.iter().enumerate().map(|(i, &score)| Candidate {
                doc: i as u32,
                score,
                text_clash: clashes.contains(&i).then_some(Rejection::DuplicateText),
                is_positive: positives.contains(&i),
            }).collect();
            let f = Filters {
                range_min,
                range_max: range_min + range_span,
                relative_margin: margin,
                absolute_margin: absolute,
                num_negatives,
                sampling: if random { NegativeSampling::Random } else { NegativeSampling::Top },
                ..Default::default()
            };
            let mut rejected = Rejections::new();
            let kept = f.choose(&cands, positive_score, "q", &mut rejected);
            prop_assert!(kept.len() <= num_negatives);
            let mut seen = std::collections::HashSet::new();
            for c in &kept {
                prop_assert!(!positives.contains(&(c.doc as usize)), "a positive was chosen");
                prop_assert!(!clashes.contains(&(c.doc as usize)), "a clashing text was chosen");
                prop_assert!(seen.insert(c.doc), "duplicate negative");
                prop_assert!(c.rank >= range_min && c.rank < range_min + range_span);
                if let Some(m) = margin {
                    prop_assert!(c.score <= positive_score - positive_score.abs() * m);
                }
                if let Some(m) = absolute {
                    prop_assert!(c.score + m <= positive_score);
                }
            }
            prop_assert!(kept.windows(2).all(|w| w[0].rank < w[1].rank));
            let counted: u64 = rejected.values().sum::<u64>() + kept.len() as u64;
            prop_assert!(counted <= cands.len() as u64);
        }
    }
}
