//! Paired significance tests between two systems evaluated on the same queries.
//!
//! - The paired t-test: t = mean(d) / (sd(d) / √n) over the per-query differences d, with n − 1
//!   degrees of freedom; the two-sided p-value is I_{ν/(ν+t²)}(ν/2, 1/2), the regularized
//!   incomplete beta function (Abramowitz & Stegun 26.7.1).
//! - The paired randomization (sign-flip) test (Fisher; Smucker, Allan and Carterette, CIKM
//!   2007): under the null hypothesis each difference is as likely to have either sign, so the
//!   p-value is the share of random sign assignments whose |mean| is at least the observed one,
//!   counted as (hits + 1) / (trials + 1). Seeded, so reruns give the same p-value.

use serde::Serialize;

use crate::rng::SplitMix64;

/// The outcome of both tests for one measure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedTest {
    /// Number of paired queries.
    pub n: usize,
    /// Mean of system B minus mean of system A.
    pub mean_difference: f64,
    pub t_statistic: f64,
    pub t_test_p: f64,
    pub randomization_p: f64,
}

/// Runs both tests on per-query values `a` and `b` (same queries, same order).
pub fn paired_tests(a: &[f64], b: &[f64], trials: u32, seed: u64) -> PairedTest {
    assert_eq!(a.len(), b.len(), "paired tests need the same queries");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let (t_statistic, t_test_p) = paired_t_test(&d);
    PairedTest {
        n: d.len(),
        mean_difference: mean(&d),
        t_statistic,
        t_test_p,
        randomization_p: randomization_test(&d, trials, seed),
    }
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// The t statistic and two-sided p-value of a one-sample t-test of the differences `d` against 0.
/// With no variance the p-value is 1 when the mean is 0 and 0 otherwise.
pub fn paired_t_test(d: &[f64]) -> (f64, f64) {
    let n = d.len();
    if n < 2 {
        return (0.0, 1.0);
    }
    let m = mean(d);
    let var = d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
    if var == 0.0 {
        return if m == 0.0 {
            (0.0, 1.0)
        } else {
            (f64::INFINITY.copysign(m), 0.0)
        };
    }
    let t = m / (var / n as f64).sqrt();
    let nu = (n - 1) as f64;
    let p = regularized_incomplete_beta(nu / (nu + t * t), nu / 2.0, 0.5);
    (t, p.clamp(0.0, 1.0))
}

/// The `level` (0.95) confidence interval of the mean of the differences `d`, from Student's t
/// with n − 1 degrees of freedom: mean ± t·sd/√n. `(NaN, NaN)` with fewer than two values.
pub fn t_interval(d: &[f64], level: f64) -> (f64, f64) {
    let n = d.len();
    if n < 2 {
        return (f64::NAN, f64::NAN);
    }
    let m = mean(d);
    let sd = (d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let half = t_quantile(1.0 - level, (n - 1) as f64) * sd / (n as f64).sqrt();
    (m - half, m + half)
}

/// The t with two-sided tail probability `alpha` under `nu` degrees of freedom (the
/// 1 − alpha/2 quantile), by bisection on the tail probability, which falls as t grows.
fn t_quantile(alpha: f64, nu: f64) -> f64 {
    let tail = |t: f64| regularized_incomplete_beta(nu / (nu + t * t), nu / 2.0, 0.5);
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while tail(hi) > alpha && hi < 1e6 {
        hi *= 2.0;
    }
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if tail(mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The two-sided paired randomization test of the differences `d`.
pub fn randomization_test(d: &[f64], trials: u32, seed: u64) -> f64 {
    if d.is_empty() || trials == 0 {
        return 1.0;
    }
    let observed = d.iter().sum::<f64>().abs();
    // Sums that differ from the observed one only by rounding count as equal.
    let tolerance = 1e-12 * d.iter().map(|x| x.abs()).sum::<f64>().max(1.0);
    let mut rng = SplitMix64::new(seed);
    let mut hits = 0u64;
    for _ in 0..trials {
        let mut sum = 0.0;
        let mut bits = 0u64;
        for (i, x) in d.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.next_u64();
            }
            sum += if bits & 1 == 1 { *x } else { -*x };
            bits >>= 1;
        }
        if sum.abs() >= observed - tolerance {
            hits += 1;
        }
    }
    (hits + 1) as f64 / (trials as f64 + 1.0)
}

/// ln Γ(x) for x > 0, by the Lanczos approximation (g = 7, n = 9), accurate to about 1e-15.
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// I_x(a, b), the regularized incomplete beta function, by its continued fraction evaluated
/// with the modified Lentz method, using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where the
/// fraction converges slowly.
pub fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=500 {
        let m = m as f64;
        // Even step.
        let num = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + num / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        // Odd step.
        let num = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + num / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_of_known_values() {
        assert!((ln_gamma(1.0)).abs() < 1e-13);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
    }

    #[test]
    fn t_quantiles_and_intervals_match_scipy() {
        // scipy.stats.t.ppf(0.975, df) for df = 1, 4, 9, 29.
        for (nu, t) in [
            (1.0, 12.706204736174698),
            (4.0, 2.7764451051977987),
            (9.0, 2.2621571627409915),
            (29.0, 2.045229642132703),
        ] {
            let got = t_quantile(0.05, nu);
            assert!((got - t).abs() < 1e-8 * t, "{nu}: {got}");
        }
        // mean(d) ± t.ppf(0.975, 4)·stdev(d)/√5.
        let d = [0.1, 0.1, -0.05, 0.1, 0.25];
        let (lo, hi) = t_interval(&d, 0.95);
        assert!(
            (lo - -0.031698355).abs() < 1e-8 && (hi - 0.231698355).abs() < 1e-8,
            "{lo} {hi}"
        );
        assert!(t_interval(&[0.1], 0.95).0.is_nan());
    }

    #[test]
    fn t_test_matches_scipy() {
        // scipy.stats.ttest_rel(b, a) for a = [0.1, 0.4, 0.35, 0.8, 0.5], b = [0.2, 0.5, 0.3, 0.9, 0.75]
        // gives statistic 2.1081851067789197, pvalue 0.10270042749551181.
        let a = [0.1, 0.4, 0.35, 0.8, 0.5];
        let b = [0.2, 0.5, 0.3, 0.9, 0.75];
        let r = paired_tests(&a, &b, 1000, 1);
        assert!(
            (r.t_statistic - 2.1081851067789197).abs() < 1e-10,
            "{}",
            r.t_statistic
        );
        assert!(
            (r.t_test_p - 0.10270042749551181).abs() < 1e-10,
            "{}",
            r.t_test_p
        );
    }

    #[test]
    fn randomization_test_is_seeded_and_sensible() {
        let d: Vec<f64> = (0..50)
            .map(|i| if i % 5 == 0 { -0.01 } else { 0.05 })
            .collect();
        let p1 = randomization_test(&d, 2000, 9);
        let p2 = randomization_test(&d, 2000, 9);
        assert_eq!(p1, p2);
        assert!(p1 < 0.01, "{p1}");
        let zero = vec![0.0; 20];
        assert_eq!(randomization_test(&zero, 100, 1), 1.0);
    }
}
