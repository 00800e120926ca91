//! The statistics `foil inspect` reports, each a pure function with its definition here:
//! distribution summaries, histograms, the ROC curve and its AUC, the diversity of a set of
//! embeddings (mean pairwise cosine, log-determinant of the Gram matrix) and the reconstructed
//! ECI.

use serde::Serialize;

/// Count, mean, sample standard deviation (n − 1 in the denominator; `null` below two values),
/// minimum, quantiles and maximum of a set of values. Quantile q is the linear interpolation
/// between the order statistics at rank q·(n − 1) (numpy's default, pandas' `describe`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub q05: Option<f64>,
    pub q25: Option<f64>,
    pub median: Option<f64>,
    pub q75: Option<f64>,
    pub q95: Option<f64>,
    pub max: Option<f64>,
}

/// The summary of `values`.
pub fn summarize(values: &[f64]) -> Summary {
    let n = values.len();
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |p: f64| -> Option<f64> {
        if n == 0 {
            return None;
        }
        let pos = p * (n - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        Some(s[lo] + (s[hi] - s[lo]) * (pos - lo as f64))
    };
    let mean = (n > 0).then(|| s.iter().sum::<f64>() / n as f64);
    let std = mean
        .filter(|_| n > 1)
        .map(|m| (s.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    Summary {
        count: n,
        mean,
        std,
        min: s.first().copied(),
        q05: q(0.05),
        q25: q(0.25),
        median: q(0.5),
        q75: q(0.75),
        q95: q(0.95),
        max: s.last().copied(),
    }
}

/// Equal-width bins of a "nice" width w aligned on multiples of w, so that 0 and round
/// numbers are edges: w is the smallest of 1, 2, 2.5 or 5 × 10^k giving at most `max_bins`
/// bins from ⌊lo/w⌋·w to ⌈hi/w⌉·w; bin j holds the values v with j·w ≤ v < (j+1)·w, the last
/// bin also v = hi. Values outside `[lo, hi]` are not counted. When hi ≤ lo there is one bin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// `bins + 1` edges.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

/// The histogram of `values` over `[lo, hi]` in at most `max_bins` (≥ 1) nice bins.
pub fn histogram(values: &[f64], lo: f64, hi: f64, max_bins: usize) -> Histogram {
    let max_bins = max_bins.max(1) as i64;
    if !(lo.is_finite() && hi.is_finite()) {
        return Histogram {
            edges: vec![0.0, 1.0],
            counts: vec![0],
        };
    }
    let hi = hi.max(lo);
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let raw = span / max_bins as f64;
    let mut mag = 10f64.powf(raw.log10().floor());
    let (w, k0, k1) = 'search: loop {
        for m in [1.0, 2.0, 2.5, 5.0] {
            let w = m * mag;
            if w < raw {
                continue;
            }
            let k0 = (lo / w).floor() as i64;
            let k1 = ((hi / w).ceil() as i64).max(k0 + 1);
            if k1 - k0 <= max_bins {
                break 'search (w, k0, k1);
            }
        }
        mag *= 10.0;
    };
    let bins = (k1 - k0) as usize;
    let edges = (k0..=k1).map(|k| k as f64 * w).collect();
    let mut counts = vec![0u64; bins];
    for &v in values {
        if !(lo..=hi).contains(&v) {
            continue;
        }
        let j = ((v / w).floor() as i64 - k0).clamp(0, bins as i64 - 1);
        counts[j as usize] += 1;
    }
    Histogram { edges, counts }
}

/// The smallest and largest of the values of all `sets` (`(0, 0)` when there are none).
pub fn range(sets: &[&[f64]]) -> (f64, f64) {
    let mut it = sets.iter().flat_map(|s| s.iter().copied());
    let Some(first) = it.next() else {
        return (0.0, 0.0);
    };
    it.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The area under the ROC curve of `pos` against `neg`: the probability that a random positive
/// scores above a random negative, ties counted half. Computed by the rank-sum
/// (Mann–Whitney U) formula with mid-ranks for ties:
/// AUC = (R⁺ − n⁺(n⁺ + 1)/2) / (n⁺ · n⁻), R⁺ the sum of the positives' ranks in the pooled
/// sample (ranks from 1, ascending). `None` when either side is empty.
pub fn auc(pos: &[f64], neg: &[f64]) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = pos
        .iter()
        .map(|&s| (s, true))
        .chain(neg.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mid = (i + j) as f64 / 2.0 + 1.0;
        let positives = all[i..=j].iter().filter(|x| x.1).count();
        rank_sum += mid * positives as f64;
        i = j + 1;
    }
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    Some((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

/// The ROC curve: (false-positive rate, true-positive rate) as the threshold falls through the
/// distinct scores, from (0, 0) to (1, 1); tied scores move both rates at once, so the
/// trapezoidal area under the curve equals [`auc`].
pub fn roc(pos: &[f64], neg: &[f64]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, bool)> = pos
        .iter()
        .map(|&s| (s, true))
        .chain(neg.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (np, nn) = (pos.len().max(1) as f64, neg.len().max(1) as f64);
    let mut out = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            if all[j].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        out.push((fp as f64 / nn, tp as f64 / np));
        i = j;
    }
    out
}

/// At most `max` points of `curve`, evenly spaced by index, keeping the first and the last.
pub fn thin(curve: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if curve.len() <= max.max(2) {
        return curve.to_vec();
    }
    let max = max.max(2);
    let last = curve.len() - 1;
    (0..max).map(|k| curve[k * last / (max - 1)]).collect()
}

/// The mean cosine similarity over the n(n − 1)/2 pairs of `rows` (unit vectors), `None` for
/// fewer than two rows.
pub fn mean_pairwise_cosine(rows: &[&[f32]]) -> Option<f64> {
    let n = rows.len();
    if n < 2 {
        return None;
    }
    let mut sum = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            sum += dot(rows[i], rows[j]);
        }
    }
    Some(sum / (n * (n - 1) / 2) as f64)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// ln det(G + εI) with G the Gram matrix of `rows` (G_ij = ⟨r_i, r_j⟩), by Cholesky in f64.
/// For unit vectors it is at most 0 plus the ridge's share, 0 meaning orthogonal, and falls
/// towards n·ln ε as the rows collapse onto one another. `None` for no rows or when the
/// matrix is not positive definite (only possible with ε ≤ 0).
pub fn log_det_gram(rows: &[&[f32]], ridge: f64) -> Option<f64> {
    let n = rows.len();
    if n == 0 {
        return None;
    }
    let mut g = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = dot(rows[i], rows[j]) + if i == j { ridge } else { 0.0 };
            g[i * n + j] = v;
            g[j * n + i] = v;
        }
    }
    // In-place Cholesky: the lower triangle becomes L with G = L Lᵀ.
    let mut log_det = 0.0;
    for j in 0..n {
        let mut d = g[j * n + j];
        for k in 0..j {
            d -= g[j * n + k] * g[j * n + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let l = d.sqrt();
        g[j * n + j] = l;
        log_det += 2.0 * l.ln();
        for i in j + 1..n {
            let mut v = g[i * n + j];
            for k in 0..j {
                v -= g[i * n + k] * g[j * n + k];
            }
            g[i * n + j] = v / l;
        }
    }
    Some(log_det)
}

/// One negative's hardness h ∈ [0, 1] against its positive's score: clip(s⁻ / s⁺, 0, 1) when
/// s⁺ > 0; when s⁺ ≤ 0 the ratio means nothing and h is 1 if s⁻ ≥ s⁺, else 0.
pub fn hardness(s_pos: f64, s_neg: f64) -> f64 {
    if s_pos > 0.0 {
        (s_neg / s_pos).clamp(0.0, 1.0)
    } else if s_neg >= s_pos {
        1.0
    } else {
        0.0
    }
}

/// The reconstructed ECI (its published formula is not available):
/// ECI = ln(1 + K) · 2·H·S / (H + S), the harmonic mean of hardness H ∈ [0, 1] and safety
/// S ∈ [0, 1] scaled by the log of the mean number of negatives per example K; 0 when
/// H + S = 0. Bounded by ln(1 + K).
pub fn eci(k: f64, h: f64, s: f64) -> f64 {
    if h + s <= 0.0 {
        0.0
    } else {
        (1.0 + k).ln() * 2.0 * h * s / (h + s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_auc(pos: &[f64], neg: &[f64]) -> f64 {
        let mut wins = 0.0;
        for p in pos {
            for n in neg {
                wins += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        wins / (pos.len() * neg.len()) as f64
    }

    fn trapezoid(curve: &[(f64, f64)]) -> f64 {
        curve
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum()
    }

    #[test]
    fn auc_counts_ties_half_like_the_pair_count() {
        let pos = [0.9, 0.5, 0.5, 0.3];
        let neg = [0.5, 0.3, 0.3, 0.1, 0.9];
        let a = auc(&pos, &neg).unwrap();
        assert!((a - brute_auc(&pos, &neg)).abs() < 1e-12);
        assert!((a - trapezoid(&roc(&pos, &neg))).abs() < 1e-12);
        assert_eq!(auc(&[1.0], &[1.0]), Some(0.5));
        assert_eq!(auc(&[2.0, 3.0], &[1.0]), Some(1.0));
        assert_eq!(auc(&[], &[1.0]), None);
        // Pseudo-random scores on a coarse grid, so that ties are common.
        let mut x = 12345u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % 7) as f64 / 7.0
        };
        let pos: Vec<f64> = (0..37).map(|_| next()).collect();
        let neg: Vec<f64> = (0..53).map(|_| next()).collect();
        let a = auc(&pos, &neg).unwrap();
        assert!((a - brute_auc(&pos, &neg)).abs() < 1e-12);
        assert!((a - trapezoid(&roc(&pos, &neg))).abs() < 1e-12);
    }

    #[test]
    fn log_det_of_known_gram_matrices() {
        // Orthonormal rows: G = I, det(I + εI) = (1 + ε)^n.
        let e1 = [1.0f32, 0.0, 0.0];
        let e2 = [0.0f32, 1.0, 0.0];
        let ld = log_det_gram(&[&e1, &e2], 0.0).unwrap();
        assert!(ld.abs() < 1e-12);
        let ld = log_det_gram(&[&e1, &e2], 0.5).unwrap();
        assert!((ld - 2.0 * 1.5f64.ln()).abs() < 1e-12);
        // G = [[1, 0.6], [0.6, 1]]: det = 1 − 0.36 = 0.64.
        let a = [1.0f32, 0.0];
        let b = [0.6f32, 0.8];
        let ld = log_det_gram(&[&a, &b], 0.0).unwrap();
        assert!((ld - 0.64f64.ln()).abs() < 1e-6);
        // Two equal rows: det([[1+ε, 1], [1, 1+ε]]) = (1+ε)² − 1 = 2ε + ε².
        let eps = 1e-4;
        let ld = log_det_gram(&[&a, &a], eps).unwrap();
        assert!((ld - (2.0 * eps + eps * eps).ln()).abs() < 1e-6);
        assert_eq!(log_det_gram(&[&a, &a], 0.0), None);
        // 3x3 with a hand-computed determinant: rows (1,0,0), (1,1,0), (1,1,1):
        // G = [[1,1,1],[1,2,2],[1,2,3]], det = 1.
        let r = [[1.0f32, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]];
        let ld = log_det_gram(&[&r[0], &r[1], &r[2]], 0.0).unwrap();
        assert!(ld.abs() < 1e-12);
    }

    #[test]
    fn pairwise_cosine() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        let c = [0.6f32, 0.8];
        assert_eq!(mean_pairwise_cosine(&[&a]), None);
        let m = mean_pairwise_cosine(&[&a, &b, &c]).unwrap();
        assert!((m - (0.0 + 0.6 + 0.8) / 3.0).abs() < 1e-6);
    }

    #[test]
    fn eci_formula_and_bounds() {
        assert_eq!(eci(3.0, 0.0, 0.0), 0.0);
        assert!((eci(3.0, 1.0, 1.0) - 4f64.ln()).abs() < 1e-12);
        // H = 0.5, S = 0.75: harmonic mean 0.6; K = 1: ln 2.
        assert!((eci(1.0, 0.5, 0.75) - 2f64.ln() * 0.6).abs() < 1e-12);
        assert_eq!(hardness(0.8, 0.4), 0.5);
        assert_eq!(hardness(0.8, 0.9), 1.0);
        assert_eq!(hardness(0.8, -0.1), 0.0);
        assert_eq!(hardness(-0.2, -0.1), 1.0);
        assert_eq!(hardness(-0.2, -0.3), 0.0);
    }

    #[test]
    fn histogram_binning_edges() {
        let h = histogram(&[0.0, 0.24, 0.25, 0.5, 0.99, 1.0, 1.5, -0.1], 0.0, 1.0, 4);
        assert_eq!(h.edges, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(h.counts, vec![2, 1, 1, 2]);
        let h = histogram(&[2.0, 2.0], 2.0, 2.0, 2);
        assert_eq!(h.edges, vec![2.0, 3.0]);
        assert_eq!(h.counts, vec![2]);
        // Zero is an edge: a margin of exactly 0 falls in the bin starting at 0.
        let h = histogram(&[-0.1, 0.0, 0.4], -0.1, 0.4, 40);
        assert_eq!(h.edges.len(), h.counts.len() + 1);
        assert!(h.counts.len() <= 40);
        let zero = h.edges.iter().position(|&e| e == 0.0).unwrap();
        assert_eq!(h.counts[zero], 1);
        assert_eq!(h.counts.iter().sum::<u64>(), 3);
    }

    #[test]
    fn summary_quantiles() {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.count, 4);
        assert_eq!(s.mean, Some(2.5));
        assert_eq!(s.median, Some(2.5));
        assert_eq!(s.q25, Some(1.75));
        assert!((s.std.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(summarize(&[]).mean, None);
        assert_eq!(summarize(&[1.0]).std, None);
    }

    #[test]
    fn thinning_keeps_endpoints() {
        let c: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, i as f64)).collect();
        let t = thin(&c, 4);
        assert_eq!(t, vec![(0.0, 0.0), (3.0, 3.0), (6.0, 6.0), (9.0, 9.0)]);
        assert_eq!(thin(&c, 20), c);
    }
}
