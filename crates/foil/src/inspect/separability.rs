//! Separability: can a linear probe tell the training file's negatives apart from real corpus
//! passages? Negatives written by an LLM can differ from a corpus by their style (length,
//! phrasing, boilerplate) rather than their relevance, and a retriever trained on them learns
//! that shortcut (*When Hard Negatives Hurt*, 2026). foil embeds the distinct negatives and as
//! many passages drawn from the BEIR corpus (none of them a negative or a positive of the file,
//! by text) with a bi-encoder, trains an L2-regularised logistic regression to tell the two
//! apart, and reports its cross-validated ROC AUC: 0.5 when the sets are indistinguishable,
//! near 1 when the negatives are easy to spot.
//!
//! The probe minimises J(w) = (1/n) Σᵢ ln(1 + exp(−ỹᵢ w·x̃ᵢ)) + (λ/2)‖w₁..w_d‖², with
//! x̃ = (x, 1) (the bias is not penalised) and ỹ = ±1, by Newton's method (the Hessian solved by
//! Cholesky, Armijo backtracking). Folds are stratified: each class is shuffled with
//! [`SplitMix64`] and dealt round-robin. Every held-out item is scored by the model of the
//! other folds, and the AUC is [`auc`] over the pooled out-of-fold scores. Folds run in
//! parallel but each is sequential, so the result is bit-identical whatever the threads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use foil_core::beir::{BeirPaths, CorpusReader};
use foil_core::rng::SplitMix64;
use foil_core::{Embeddings, Encoder, InputPolicy, Progress, Result, SkipReport, TextKind};
use foil_dense::normalize_rows;
use rayon::prelude::*;
use serde::Serialize;

use super::stats::auc;
use crate::encode::encode_all;
use crate::encoder_spec::EncoderSpec;
use crate::formats::{Example, Item};

/// At most this many distinct negatives (and as many corpus passages) are used.
pub const DEFAULT_MAX_PASSAGES: usize = 2000;
/// k of the k-fold cross-validation.
pub const DEFAULT_FOLDS: usize = 5;
/// λ of the probe's penalty (on the mean loss).
pub const DEFAULT_L2: f64 = 1e-3;
/// An AUC at or above this is warned about.
pub const DEFAULT_WARN: f64 = 0.8;

/// Newton iterations at most, and the gradient's largest entry at which they stop.
const MAX_NEWTON: usize = 50;
const GRADIENT_TOLERANCE: f64 = 1e-9;

/// How separability is measured.
#[derive(Debug, Clone, Serialize)]
pub struct SeparabilityConfig {
    /// The encoder; `None` takes the bi-encoder judge's (and skips the measure under another
    /// judge).
    pub model: Option<EncoderSpec>,
    /// At most this many distinct negatives, and as many corpus passages.
    pub max_passages: usize,
    pub folds: usize,
    /// λ of the probe.
    pub l2: f64,
    /// Seeds the samples and the folds.
    pub seed: u64,
    /// An AUC at or above this is warned about.
    pub warn: f64,
}

impl Default for SeparabilityConfig {
    fn default() -> Self {
        SeparabilityConfig {
            model: None,
            max_passages: DEFAULT_MAX_PASSAGES,
            folds: DEFAULT_FOLDS,
            l2: DEFAULT_L2,
            seed: DEFAULT_SEED,
            warn: DEFAULT_WARN,
        }
    }
}

/// The seed when none is given (the seed of `foil mine` and `foil generate`).
pub const DEFAULT_SEED: u64 = 42;

/// The bi-encoder judge's model and its embeddings of the examples' negatives (`rows[e][j]`:
/// the row of negative j of example e), reused when no other encoder is asked for.
#[derive(Clone, Copy)]
pub struct JudgeVectors<'a> {
    pub encoder: &'a dyn Encoder,
    pub embeddings: &'a Embeddings,
    pub rows: &'a [Vec<usize>],
}

/// What [`measure`] found, and what it read.
pub struct Measured {
    pub report: Separability,
    /// The corpus read for the sample.
    pub corpus: Option<PathBuf>,
    /// The encoder's fingerprint.
    pub fingerprint: Option<String>,
}

fn text(item: &Item) -> Option<&str> {
    item.text.as_deref()
}

/// Measures the separability of the negatives of `examples` from passages of the corpus of
/// the BEIR folder `data`. Skipped, with the reason in the note, without a corpus, without an
/// encoder (neither `config.model` nor a bi-encoder judge), without texts, or with fewer than
/// `folds` items on a side. Skips in the corpus are counted in `skips` when `count_skips`.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    config: &SeparabilityConfig,
    data: Option<&Path>,
    examples: &[Example],
    judge: Option<JudgeVectors>,
    cache: Option<&Path>,
    policy: InputPolicy,
    skips: &mut SkipReport,
    count_skips: bool,
    progress: &dyn Progress,
) -> Result<Measured> {
    let mut rng = SplitMix64::new(config.seed);
    let (negative_seed, corpus_seed, fold_seed) = (rng.next_u64(), rng.next_u64(), rng.next_u64());
    let negatives = || examples.iter().flat_map(|e| &e.negatives);
    let (sample, distinct) = sample_distinct(
        negatives().filter_map(text),
        config.max_passages,
        &mut SplitMix64::new(negative_seed),
    );
    let skipped = |note: &str| Measured {
        report: Separability::skipped(format!("skipped: {note}"), distinct, config),
        corpus: None,
        fingerprint: None,
    };
    let Some(data) = data else {
        return Ok(skipped(
            "no corpus to compare with (give the BEIR folder the negatives are for with --data)",
        ));
    };
    if negatives().any(|n| n.text.is_none()) {
        return Ok(skipped("the negatives have no texts"));
    }
    // The encoder asked for, else the judge's, whose embeddings of the negatives are reused.
    let own = config.model.as_ref().map(EncoderSpec::load).transpose()?;
    let (encoder, known): (&dyn Encoder, Option<HashMap<&str, &[f32]>>) = match (&own, judge) {
        (Some(own), _) => (own.as_ref(), None),
        (None, Some(j)) => {
            let rows = examples
                .iter()
                .zip(j.rows)
                .flat_map(|(e, r)| e.negatives.iter().zip(r))
                .filter_map(|(n, &i)| Some((text(n)?, j.embeddings.row(i))))
                .collect();
            (j.encoder, Some(rows))
        }
        (None, None) => {
            return Ok(skipped(
                "no bi-encoder to embed the passages (judge with --judge-model, or give --separability-model)",
            ))
        }
    };

    let exclude: HashSet<&str> = examples
        .iter()
        .flat_map(|e| e.positives.iter().chain(&e.negatives))
        .filter_map(text)
        .collect();
    let corpus_path = BeirPaths::new(data).corpus;
    let mut scratch = SkipReport::default();
    let corpus = sample_corpus(
        &corpus_path,
        &exclude,
        sample.len(),
        &mut SplitMix64::new(corpus_seed),
        policy,
        if count_skips { skips } else { &mut scratch },
    )?;

    let encode = |texts: &[&str]| -> Result<Embeddings> {
        let mut out = encode_all(encoder, texts, TextKind::Passage, cache, progress)?;
        normalize_rows(&mut out);
        Ok(out)
    };
    let corpus_refs: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let corpus_vectors = encode(&corpus_refs)?;
    let own_vectors;
    let mut rows: Vec<&[f32]> = match &known {
        Some(vectors) => sample.iter().map(|t| vectors[t]).collect(),
        None => {
            own_vectors = encode(&sample)?;
            (0..sample.len()).map(|i| own_vectors.row(i)).collect()
        }
    };
    rows.extend((0..corpus.len()).map(|i| corpus_vectors.row(i)));
    let labels: Vec<bool> = (0..rows.len()).map(|i| i < sample.len()).collect();

    progress.begin("separability", Some(config.folds as u64));
    let auc = cross_validated_auc(&rows, &labels, config.folds, config.l2, fold_seed);
    progress.update(config.folds as u64);
    progress.end();

    let counts = (distinct, sample.len(), corpus.len());
    Ok(finding(config, encoder, auc, counts, corpus_path))
}

/// The report of a measured (or, with too few passages, unmeasured) AUC, warning when it
/// reaches the threshold; `counts` are the distinct negatives, the sampled negatives and the
/// corpus passages.
fn finding(
    config: &SeparabilityConfig,
    encoder: &dyn Encoder,
    auc: Option<f64>,
    (distinct, negatives, corpus_passages): (usize, usize, usize),
    corpus_path: PathBuf,
) -> Measured {
    let note = match auc {
        Some(_) => format!(
            "cross-validated logistic regression on {} embeddings, negatives against passages drawn from {}",
            encoder.name(),
            corpus_path.display()
        ),
        None => format!(
            "skipped: {} negatives and {} corpus passages are too few for {} folds",
            negatives,
            corpus_passages,
            config.folds
        ),
    };
    let warning = auc.is_some_and(|a| a >= config.warn);
    if let Some(a) = auc.filter(|_| warning) {
        tracing::warn!(
            auc = a,
            threshold = config.warn,
            encoder = encoder.name(),
            "the negatives are easy to tell apart from corpus passages: a model may learn their style instead of relevance"
        );
    }
    Measured {
        report: Separability {
            measured: auc.is_some(),
            note,
            auc,
            distinct_negatives: distinct,
            negatives,
            corpus_passages,
            folds: config.folds,
            seed: config.seed,
            l2: config.l2,
            encoder: Some(encoder.name().to_string()),
            warn_threshold: config.warn,
            warning,
            reading: auc.map(|a| reading(a, config.warn)).unwrap_or_default(),
        },
        corpus: Some(corpus_path),
        fingerprint: Some(encoder.fingerprint()),
    }
}

/// What measured the separability, or why it was not measured.
#[derive(Debug, Clone, Serialize)]
pub struct Separability {
    pub measured: bool,
    /// How it was measured, or why not.
    pub note: String,
    /// Cross-validated ROC AUC of the probe, negatives against corpus passages.
    pub auc: Option<f64>,
    /// Distinct negatives in the inspected examples.
    pub distinct_negatives: usize,
    /// Negatives used (a seeded sample of at most `max_passages`).
    pub negatives: usize,
    /// Corpus passages used (a seeded sample, as many as the negatives when the corpus has them).
    pub corpus_passages: usize,
    pub folds: usize,
    pub seed: u64,
    /// λ of the probe.
    pub l2: f64,
    /// The encoder's name.
    pub encoder: Option<String>,
    pub warn_threshold: f64,
    /// AUC ≥ `warn_threshold`.
    pub warning: bool,
    /// The AUC in plain words.
    pub reading: String,
}

impl Separability {
    /// A report of a measure that could not be taken.
    pub fn skipped(
        note: impl Into<String>,
        distinct_negatives: usize,
        config: &SeparabilityConfig,
    ) -> Self {
        Separability {
            measured: false,
            note: note.into(),
            auc: None,
            distinct_negatives,
            negatives: 0,
            corpus_passages: 0,
            folds: config.folds,
            seed: config.seed,
            l2: config.l2,
            encoder: None,
            warn_threshold: config.warn,
            warning: false,
            reading: String::new(),
        }
    }
}

/// The plain-language reading of a separability AUC.
pub fn reading(auc: f64, warn: f64) -> String {
    if auc >= warn {
        "the negatives are easy to tell apart from real corpus passages by their embeddings alone: a model may learn that shortcut (style) instead of relevance"
    } else if auc >= 0.7 {
        "the negatives are fairly easy to tell apart from real corpus passages"
    } else if auc >= 0.6 {
        "the negatives are somewhat distinguishable from real corpus passages"
    } else {
        "the negatives are hard to tell apart from real corpus passages (0.5 = indistinguishable)"
    }
    .to_string()
}

/// The distinct `texts` in order of first appearance (their number is the second value), or
/// a seeded sample of `max` of them kept in that order.
pub fn sample_distinct<'a>(
    texts: impl Iterator<Item = &'a str>,
    max: usize,
    rng: &mut SplitMix64,
) -> (Vec<&'a str>, usize) {
    let mut seen = HashSet::new();
    let distinct: Vec<&str> = texts.filter(|t| seen.insert(*t)).collect();
    let total = distinct.len();
    if total <= max {
        return (distinct, total);
    }
    let mut order: Vec<usize> = (0..total).collect();
    rng.shuffle(&mut order);
    order.truncate(max);
    order.sort_unstable();
    (order.into_iter().map(|i| distinct[i]).collect(), total)
}

/// A seeded sample of `m` passages (`title + " " + text`) of the corpus at `path`, read as a
/// stream (reservoir sampling, Algorithm R) and kept in corpus order; a passage whose full
/// text or body is in `exclude` is never drawn. Fewer when the corpus has fewer.
pub fn sample_corpus(
    path: &Path,
    exclude: &HashSet<&str>,
    m: usize,
    rng: &mut SplitMix64,
    policy: InputPolicy,
    skips: &mut SkipReport,
) -> Result<Vec<String>> {
    let mut reader = CorpusReader::open(path, policy)?;
    let mut reservoir: Vec<(usize, String)> = Vec::with_capacity(m);
    let mut eligible = 0usize;
    for doc in reader.by_ref() {
        let doc = doc?;
        let full = doc.full_text();
        if exclude.contains(full.as_str()) || exclude.contains(doc.text.as_str()) {
            continue;
        }
        if reservoir.len() < m {
            reservoir.push((eligible, full));
        } else {
            let j = rng.below(eligible as u64 + 1) as usize;
            if j < m {
                reservoir[j] = (eligible, full);
            }
        }
        eligible += 1;
    }
    skips.merge(reader.into_skips());
    reservoir.sort_unstable_by_key(|(i, _)| *i);
    Ok(reservoir.into_iter().map(|(_, t)| t).collect())
}

/// Stratified folds: each class's items are shuffled and dealt round-robin, the second class
/// continuing where the first stopped, so folds differ in size by at most one.
pub fn assign_folds(labels: &[bool], k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut fold = vec![0; labels.len()];
    let mut next = 0;
    for class in [true, false] {
        let mut items: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        rng.shuffle(&mut items);
        for i in items {
            fold[i] = next % k;
            next += 1;
        }
    }
    fold
}

/// The features with a trailing 1 per row (the bias), `cols` = dimension + 1 entries a row.
struct Design {
    x: Vec<f64>,
    cols: usize,
}

impl Design {
    fn new(rows: &[&[f32]]) -> Design {
        let cols = rows.first().map_or(0, |r| r.len()) + 1;
        let mut x = Vec::with_capacity(rows.len() * cols);
        for r in rows {
            x.extend(r.iter().map(|&v| v as f64));
            x.push(1.0);
        }
        Design { x, cols }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.cols..(i + 1) * self.cols]
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// ln(1 + eᶻ) without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// J(w) over the items `rows`.
fn objective(d: &Design, rows: &[usize], y: &[bool], l2: f64, w: &[f64]) -> f64 {
    let loss: f64 = rows
        .iter()
        .map(|&i| {
            let z = dot(d.row(i), w);
            softplus(if y[i] { -z } else { z })
        })
        .sum();
    let penalty: f64 = w[..d.cols - 1].iter().map(|v| v * v).sum();
    loss / rows.len() as f64 + 0.5 * l2 * penalty
}

/// Solves A x = b for a symmetric positive definite A (row-major, n × n, overwritten by its
/// Cholesky factor); `None` when A is not positive definite.
fn cholesky_solve(a: &mut [f64], n: usize, b: &[f64]) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut diag = a[j * n + j];
        for k in 0..j {
            diag -= a[j * n + k] * a[j * n + k];
        }
        if diag <= 0.0 || !diag.is_finite() {
            return None;
        }
        let l = diag.sqrt();
        a[j * n + j] = l;
        for i in j + 1..n {
            let v = a[i * n + j] - dot(&a[i * n..i * n + j], &a[j * n..j * n + j]);
            a[i * n + j] = v / l;
        }
    }
    // L y = b, then Lᵀ x = y.
    let mut x = b.to_vec();
    for i in 0..n {
        x[i] = (x[i] - dot(&a[i * n..i * n + i], &x[..i])) / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut v = x[i];
        for k in i + 1..n {
            v -= a[k * n + i] * x[k];
        }
        x[i] = v / a[i * n + i];
    }
    Some(x)
}

/// The probe's weights (the bias last) fitted on the items `rows` of `d` with labels `y`.
fn fit(d: &Design, rows: &[usize], y: &[bool], l2: f64) -> Vec<f64> {
    let c = d.cols;
    let n = rows.len() as f64;
    let mut w = vec![0.0; c];
    let mut j = objective(d, rows, y, l2, &w);
    for _ in 0..MAX_NEWTON {
        let mut g = vec![0.0; c];
        let mut h = vec![0.0; c * c];
        for &i in rows {
            let x = d.row(i);
            let p = sigmoid(dot(x, &w));
            let r = p - if y[i] { 1.0 } else { 0.0 };
            let s = p * (1.0 - p);
            for (gk, xk) in g.iter_mut().zip(x) {
                *gk += r * xk;
            }
            // The upper triangle of Σ s·x xᵀ.
            for a in 0..c {
                let sa = s * x[a];
                for (hv, xb) in h[a * c + a..(a + 1) * c].iter_mut().zip(&x[a..]) {
                    *hv += sa * xb;
                }
            }
        }
        for k in 0..c {
            g[k] = g[k] / n + if k + 1 < c { l2 * w[k] } else { 0.0 };
        }
        if g.iter().all(|v| v.abs() < GRADIENT_TOLERANCE) {
            break;
        }
        for a in 0..c {
            for b in a..c {
                let v = h[a * c + b] / n;
                h[a * c + b] = v;
                h[b * c + a] = v;
            }
            // The bias is not penalised; a tiny ridge keeps the matrix invertible.
            h[a * c + a] += if a + 1 < c { l2 } else { 1e-12 };
        }
        let Some(step) = cholesky_solve(&mut h, c, &g) else {
            break;
        };
        let slope = -dot(&g, &step);
        if slope >= 0.0 {
            break;
        }
        let mut t = 1.0;
        let mut moved = false;
        while t > 1e-12 {
            let candidate: Vec<f64> = w.iter().zip(&step).map(|(a, b)| a - t * b).collect();
            let jc = objective(d, rows, y, l2, &candidate);
            if jc <= j + 1e-4 * t * slope {
                w = candidate;
                j = jc;
                moved = true;
                break;
            }
            t *= 0.5;
        }
        if !moved {
            break;
        }
    }
    w
}

/// The gradient of J at `w` (for tests).
#[cfg(test)]
fn gradient(d: &Design, rows: &[usize], y: &[bool], l2: f64, w: &[f64]) -> Vec<f64> {
    let mut g = vec![0.0; d.cols];
    for &i in rows {
        let x = d.row(i);
        let r = sigmoid(dot(x, w)) - if y[i] { 1.0 } else { 0.0 };
        for (gk, xk) in g.iter_mut().zip(x) {
            *gk += r * xk;
        }
    }
    let n = rows.len() as f64;
    (0..d.cols)
        .map(|k| g[k] / n + if k + 1 < d.cols { l2 * w[k] } else { 0.0 })
        .collect()
}

/// The k-fold cross-validated ROC AUC of the probe telling the rows labelled `true` from the
/// rows labelled `false` (ties counted half); `None` when a class has fewer than `folds`
/// rows or `folds` < 2.
pub fn cross_validated_auc(
    rows: &[&[f32]],
    labels: &[bool],
    folds: usize,
    l2: f64,
    seed: u64,
) -> Option<f64> {
    let ones = labels.iter().filter(|&&l| l).count();
    if folds < 2 || ones < folds || labels.len() - ones < folds {
        return None;
    }
    let d = Design::new(rows);
    let fold = assign_folds(labels, folds, &mut SplitMix64::new(seed));
    let held_out: Vec<Vec<(usize, f64)>> = (0..folds)
        .into_par_iter()
        .map(|f| {
            let train: Vec<usize> = (0..labels.len()).filter(|&i| fold[i] != f).collect();
            let w = fit(&d, &train, labels, l2);
            (0..labels.len())
                .filter(|&i| fold[i] == f)
                .map(|i| (i, dot(d.row(i), &w)))
                .collect()
        })
        .collect();
    let mut score = vec![0.0; labels.len()];
    for (i, s) in held_out.into_iter().flatten() {
        score[i] = s;
    }
    let pick = |class: bool| -> Vec<f64> {
        (0..labels.len())
            .filter(|&i| labels[i] == class)
            .map(|i| score[i])
            .collect()
    };
    auc(&pick(true), &pick(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` points of N(mean, σ²I) in `dim` dimensions (Box–Muller), as f32 rows.
    fn cloud(rng: &mut SplitMix64, n: usize, mean: &[f64], sigma: f64) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                mean.iter()
                    .map(|m| {
                        let (u, v) = (1.0 - rng.next_f64(), rng.next_f64());
                        let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
                        (m + sigma * z) as f32
                    })
                    .collect()
            })
            .collect()
    }

    fn two_clouds(shift: f64, seed: u64) -> (Vec<Vec<f32>>, Vec<bool>) {
        let mut rng = SplitMix64::new(seed);
        let dim = 24;
        let a = vec![0.0; dim];
        let mut b = vec![0.0; dim];
        b[0] = shift;
        b[1] = shift;
        let mut rows = cloud(&mut rng, 150, &a, 1.0);
        rows.extend(cloud(&mut rng, 150, &b, 1.0));
        let labels = (0..300).map(|i| i < 150).collect();
        (rows, labels)
    }

    fn cv(rows: &[Vec<f32>], labels: &[bool], seed: u64) -> f64 {
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        cross_validated_auc(&refs, labels, 5, DEFAULT_L2, seed).unwrap()
    }

    #[test]
    fn separated_clouds_give_auc_near_one() {
        let (rows, labels) = two_clouds(4.0, 1);
        let a = cv(&rows, &labels, 7);
        assert!(a > 0.99, "{a}");
    }

    #[test]
    fn identical_distributions_give_auc_near_one_half() {
        for seed in [1, 2, 3] {
            let (rows, labels) = two_clouds(0.0, seed);
            let a = cv(&rows, &labels, 7);
            assert!((a - 0.5).abs() < 0.1, "seed {seed}: {a}");
        }
    }

    #[test]
    fn a_fixed_seed_is_reproducible_bit_for_bit_whatever_the_threads() {
        let (rows, labels) = two_clouds(0.5, 3);
        let run = |threads: usize| {
            crate::threads::with_threads(Some(threads), || cv(&rows, &labels, 11)).unwrap()
        };
        let a = run(1);
        assert_eq!(a.to_bits(), run(1).to_bits());
        assert_eq!(a.to_bits(), run(3).to_bits());
        assert!(a > 0.6 && a < 0.95, "{a}");
        // Another seed deals other folds.
        let mut f1 = assign_folds(&labels, 5, &mut SplitMix64::new(11));
        let f2 = assign_folds(&labels, 5, &mut SplitMix64::new(12));
        assert_ne!(f1, f2);
        // Folds are stratified and balanced.
        for f in 0..5 {
            let of = |class: bool| {
                (0..300)
                    .filter(|&i| labels[i] == class && f1[i] == f)
                    .count()
            };
            assert_eq!((of(true), of(false)), (30, 30));
        }
        f1.sort_unstable();
        assert_eq!(f1[0], 0);
    }

    #[test]
    fn newton_reaches_the_optimum() {
        let (rows, labels) = two_clouds(1.0, 5);
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let d = Design::new(&refs);
        let all: Vec<usize> = (0..rows.len()).collect();
        let w = fit(&d, &all, &labels, 0.01);
        let g = gradient(&d, &all, &labels, 0.01, &w);
        assert!(g.iter().all(|v| v.abs() < 1e-8), "{g:?}");
        // The optimum beats a nudge in any coordinate.
        let j = objective(&d, &all, &labels, 0.01, &w);
        for k in [0, 1, 5, d.cols - 1] {
            let mut v = w.clone();
            v[k] += 1e-3;
            assert!(objective(&d, &all, &labels, 0.01, &v) > j);
        }
        // The shifted coordinates carry the weight.
        assert!(w[0] < -0.2 && w[1] < -0.2, "{w:?}");
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        // [[4, 2], [2, 3]] x = [2, 1] → x = [0.5, 0].
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let x = cholesky_solve(&mut a, 2, &[2.0, 1.0]).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
        assert!(cholesky_solve(&mut [1.0, 2.0, 2.0, 1.0], 2, &[1.0, 1.0]).is_none());
    }

    #[test]
    fn too_few_items_give_none() {
        let rows: Vec<Vec<f32>> = (0..6).map(|i| vec![i as f32]).collect();
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let labels = [true, true, true, false, false, false];
        assert_eq!(cross_validated_auc(&refs, &labels, 5, 1e-3, 0), None);
        assert!(cross_validated_auc(&refs, &labels, 3, 1e-3, 0).is_some());
    }

    #[test]
    fn samples_are_seeded_and_exclude_given_texts() {
        let texts = ["a", "b", "a", "c", "d", "b", "e"];
        let (all, n) = sample_distinct(texts.iter().copied(), 10, &mut SplitMix64::new(1));
        assert_eq!((all, n), (vec!["a", "b", "c", "d", "e"], 5));
        let (s1, _) = sample_distinct(texts.iter().copied(), 3, &mut SplitMix64::new(1));
        let (s2, _) = sample_distinct(texts.iter().copied(), 3, &mut SplitMix64::new(1));
        assert_eq!(s1, s2);
        assert_eq!(s1.len(), 3);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.jsonl");
        let lines: String = (0..50)
            .map(|i| format!("{{\"_id\":\"d{i}\",\"title\":\"\",\"text\":\"passage {i}\"}}\n"))
            .collect();
        std::fs::write(&path, lines).unwrap();
        let exclude: HashSet<&str> = ["passage 3", "passage 7"].into_iter().collect();
        let draw = |seed, m| {
            let mut skips = SkipReport::default();
            let policy = InputPolicy::default();
            let mut rng = SplitMix64::new(seed);
            sample_corpus(&path, &exclude, m, &mut rng, policy, &mut skips).unwrap()
        };
        let a = draw(4, 10);
        assert_eq!(a.len(), 10);
        assert_eq!(a, draw(4, 10));
        assert_ne!(a, draw(5, 10));
        assert!(!a.iter().any(|t| exclude.contains(t.as_str())));
        assert_eq!(draw(4, 100).len(), 48);
    }
}
