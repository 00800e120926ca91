//! The inspect report: the numbers ([`Report`], written as `report.json`), the same as
//! Markdown tables (`report.md`), and the charts (`scores`, `margins`, `roc`, each as SVG and
//! PNG, drawn by `foil-plot`).
//!
//! Per example (a query with its positives and negatives) the reference score s⁺ is the
//! lowest score among its positives, as `foil mine` takes margins; every negative is compared
//! with the s⁺ of its own example.

use std::collections::BTreeMap;

use foil_core::{Embeddings, SkipReport};
use foil_plot::{Chart, Color, Series};
use serde::Serialize;

use super::separability::Separability;
use super::stats::{
    auc, eci, hardness, histogram, log_det_gram, mean_pairwise_cosine, range, roc, summarize, thin,
    Histogram, Summary,
};
use super::{InspectConfig, Judge};
use crate::formats::{Example, Format};

/// The ECI disclaimer carried by every output.
pub const ECI_NOTE: &str = "reconstruction: the published ECI formula is not available; this is ECI = ln(1 + K) * 2HS / (H + S), see docs/inspect.md";

/// At most this many ROC points are kept in the report and the chart.
const ROC_POINTS: usize = 512;

#[derive(Debug, Clone, Serialize)]
pub struct InputInfo {
    pub path: String,
    pub format: Format,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct JudgeInfo {
    /// `provenance`, `bi-encoder` or `cross-encoder`.
    pub kind: String,
    pub name: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    /// Examples inspected (a query with ≥ 1 positive and ≥ 1 negative).
    pub examples: usize,
    /// Distinct queries (by id, else by text) among them.
    pub queries: usize,
    pub positives: usize,
    pub negatives: usize,
    /// K: negatives / examples.
    pub negatives_per_example: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Examples left out, by reason (`no_positive`, `no_negative`, `no_stored_score`).
    pub examples: BTreeMap<String, u64>,
    /// Invalid records skipped under `--skip-invalid`, by reason.
    pub records: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScoreStats {
    /// Every positive's score.
    pub positive: Summary,
    /// Every negative's score.
    pub negative: Summary,
    /// s⁺ − s⁻ per negative.
    pub margin: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScoreHistogram {
    pub edges: Vec<f64>,
    pub positive: Vec<u64>,
    pub negative: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Histograms {
    /// Positives and negatives over the same bins, spanning all their scores.
    pub scores: ScoreHistogram,
    /// Margins s⁺ − s⁻ over their own range.
    pub margin: Histogram,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeltaShare {
    pub delta: f64,
    /// Negatives with s⁻ ≥ s⁺ − δ.
    pub count: usize,
    pub share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Safety {
    /// Share of negatives with s⁻ ≥ s⁺: likely false negatives.
    pub at_or_above_positive: f64,
    /// Shares of negatives with s⁻ ≥ s⁺ − δ.
    pub near_positive: Vec<DeltaShare>,
    /// S: share of negatives strictly below their positive (1 − `at_or_above_positive`).
    pub s: f64,
    /// Mean of s⁺ − s⁻.
    pub mean_margin: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hardness {
    /// H: mean over negatives of h = clip(s⁻ / s⁺, 0, 1) (s⁺ > 0), else 1[s⁻ ≥ s⁺].
    pub h: f64,
    /// Mean negative score (also in `scores.negative.mean`).
    pub mean_negative_score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Separation {
    /// AUC of all positives against all negatives, ties counted half (Mann–Whitney).
    pub auc: Option<f64>,
    /// (false-positive rate, true-positive rate), at most 512 points evenly thinned by index.
    pub roc: Vec<[f64; 2]>,
    /// Points of the full curve (distinct scores + 1).
    pub roc_points: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diversity {
    /// Whether it was measured (bi-encoder judges only).
    pub measured: bool,
    pub note: String,
    /// Examples with ≥ 2 negatives, over which the means run.
    pub examples: usize,
    /// Mean over examples of the mean pairwise cosine of their negatives' unit embeddings.
    pub mean_pairwise_cosine: Option<f64>,
    /// Mean over examples of ln det(G + εI), G the Gram matrix of their negatives.
    pub mean_log_det: Option<f64>,
    /// Mean over examples of ln det(G + εI) / (negatives of the example).
    pub mean_log_det_per_negative: Option<f64>,
    /// ε.
    pub ridge: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Eci {
    pub value: f64,
    /// Always true: the ECI's published formula is not available.
    pub reconstruction: bool,
    pub note: String,
    pub k: f64,
    pub h: f64,
    pub s: f64,
}

/// Everything `foil inspect` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub input: InputInfo,
    pub judge: JudgeInfo,
    pub counts: Counts,
    pub skipped: Skipped,
    pub scores: ScoreStats,
    pub histograms: Histograms,
    pub safety: Safety,
    pub hardness: Hardness,
    pub separation: Separation,
    pub diversity: Diversity,
    pub eci: Eci,
    /// How easily the negatives are told apart from real corpus passages.
    pub separability: Separability,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn opt_mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| mean(v))
}

impl Diversity {
    /// Diversity of each example's negatives from the judge's embeddings (`rows`: the
    /// negatives' rows per example), or a note saying why it is not measured.
    fn of(vectors: Option<&(Embeddings, Vec<Vec<usize>>)>, ridge: f64) -> Diversity {
        match vectors {
            Some((emb, rows)) => {
                let (mut cos, mut ld, mut ldn) = (Vec::new(), Vec::new(), Vec::new());
                for r in rows.iter().filter(|r| r.len() >= 2) {
                    let vs: Vec<&[f32]> = r.iter().map(|&i| emb.row(i)).collect();
                    if let Some(c) = mean_pairwise_cosine(&vs) {
                        cos.push(c);
                    }
                    if let Some(l) = log_det_gram(&vs, ridge) {
                        ld.push(l);
                        ldn.push(l / vs.len() as f64);
                    }
                }
                Diversity {
                    measured: true,
                    note: "judge embeddings of each example's negatives, unit-normalised".into(),
                    examples: cos.len(),
                    mean_pairwise_cosine: opt_mean(&cos),
                    mean_log_det: opt_mean(&ld),
                    mean_log_det_per_negative: opt_mean(&ldn),
                    ridge,
                }
            }
            None => Diversity {
                measured: false,
                note: "omitted: diversity needs embeddings, which only a bi-encoder judge (--judge-model) gives".into(),
                examples: 0,
                mean_pairwise_cosine: None,
                mean_log_det: None,
                mean_log_det_per_negative: None,
                ridge,
            },
        }
    }
}

/// Each negative's margin below its example's lowest positive score, its hardness, and how
/// many negatives come within each delta of the positive.
fn margins(
    positives: &[Vec<f64>],
    negatives: &[Vec<f64>],
    deltas: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let mut margins = Vec::new();
    let mut hard = Vec::new();
    let mut near = vec![0usize; deltas.len()];
    for (p, n) in positives.iter().zip(negatives) {
        let s_pos = p.iter().copied().fold(f64::INFINITY, f64::min);
        for &s_neg in n {
            margins.push(s_pos - s_neg);
            hard.push(hardness(s_pos, s_neg));
            for (c, d) in near.iter_mut().zip(deltas) {
                *c += (s_neg >= s_pos - d) as usize;
            }
        }
    }
    (margins, hard, near)
}

impl Report {
    /// Computes the report from the judge's scores of `examples` (`positives[e]` and
    /// `negatives[e]` in the order of the example's items) and, for a bi-encoder, the
    /// negatives' unit embeddings (`rows[e]`: the embedding row of each negative), with the
    /// separability measured apart.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        config: &InspectConfig,
        format: Format,
        input_sha256: &str,
        examples: &[Example],
        positives: &[Vec<f64>],
        negatives: &[Vec<f64>],
        vectors: Option<&(Embeddings, Vec<Vec<usize>>)>,
        judge_name: &str,
        judge_fingerprint: &str,
        skipped_examples: &BTreeMap<String, u64>,
        skips: &SkipReport,
        separability: Separability,
    ) -> Report {
        let pos_all: Vec<f64> = positives.iter().flatten().copied().collect();
        let neg_all: Vec<f64> = negatives.iter().flatten().copied().collect();
        let (margins, hard, near) = margins(positives, negatives, &config.deltas);
        let n_neg = neg_all.len();
        let share = |c: usize| c as f64 / n_neg.max(1) as f64;
        let at_or_above = margins.iter().filter(|&&m| m <= 0.0).count();
        let s = 1.0 - share(at_or_above);
        let h = mean(&hard);
        let k = n_neg as f64 / examples.len().max(1) as f64;

        let (lo, hi) = range(&[&pos_all, &neg_all]);
        let hp = histogram(&pos_all, lo, hi, config.bins);
        let hn = histogram(&neg_all, lo, hi, config.bins);
        let (mlo, mhi) = range(&[&margins]);
        let curve = roc(&pos_all, &neg_all);

        let diversity = Diversity::of(vectors, config.ridge);

        let mut queries: Vec<&str> = examples.iter().map(Example::query_key).collect();
        queries.sort_unstable();
        queries.dedup();
        let mut records = BTreeMap::new();
        for reasons in skips.counts.values() {
            for (r, n) in reasons {
                *records.entry(r.as_str().to_string()).or_default() += n;
            }
        }
        Report {
            input: InputInfo {
                path: config.input.display().to_string(),
                format,
                sha256: input_sha256.to_string(),
            },
            judge: JudgeInfo {
                kind: match config.judge {
                    Judge::Provenance => "provenance",
                    Judge::BiEncoder { .. } => "bi-encoder",
                    Judge::CrossEncoder { .. } => "cross-encoder",
                }
                .into(),
                name: judge_name.to_string(),
                fingerprint: judge_fingerprint.to_string(),
            },
            counts: Counts {
                examples: examples.len(),
                queries: queries.len(),
                positives: pos_all.len(),
                negatives: n_neg,
                negatives_per_example: k,
            },
            skipped: Skipped {
                examples: skipped_examples.clone(),
                records,
            },
            scores: ScoreStats {
                positive: summarize(&pos_all),
                negative: summarize(&neg_all),
                margin: summarize(&margins),
            },
            histograms: Histograms {
                scores: ScoreHistogram {
                    edges: hp.edges,
                    positive: hp.counts,
                    negative: hn.counts,
                },
                margin: histogram(&margins, mlo, mhi, config.bins),
            },
            safety: Safety {
                at_or_above_positive: share(at_or_above),
                near_positive: config
                    .deltas
                    .iter()
                    .zip(&near)
                    .map(|(&delta, &count)| DeltaShare {
                        delta,
                        count,
                        share: share(count),
                    })
                    .collect(),
                s,
                mean_margin: mean(&margins),
            },
            hardness: Hardness {
                h,
                mean_negative_score: mean(&neg_all),
            },
            separation: Separation {
                auc: auc(&pos_all, &neg_all),
                roc: thin(&curve, ROC_POINTS)
                    .into_iter()
                    .map(|(x, y)| [x, y])
                    .collect(),
                roc_points: curve.len(),
            },
            diversity,
            eci: Eci {
                value: eci(k, h, s),
                reconstruction: true,
                note: ECI_NOTE.into(),
                k,
                h,
                s,
            },
            separability,
        }
    }

    /// The output files: name and bytes.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        let mut out = vec![
            ("report.json".to_string(), json),
            ("report.md".to_string(), self.markdown().into_bytes()),
        ];
        for (name, chart) in [
            ("scores", self.scores_chart()),
            ("margins", self.margins_chart()),
            ("roc", self.roc_chart()),
        ] {
            out.push((format!("{name}.svg"), chart.svg().into_bytes()));
            out.push((format!("{name}.png"), chart.png()));
        }
        out
    }

    /// The one-line summary the CLI prints.
    pub fn summary_line(&self) -> String {
        let mut line = format!(
            "AUC {}, at/above positive {:.2}% (safety S {:.4}), hardness H {:.4}, mean margin {:.4}, ECI {:.4} (reconstruction), K {:.2}",
            fmt(self.separation.auc, 4),
            100.0 * self.safety.at_or_above_positive,
            self.safety.s,
            self.hardness.h,
            self.safety.mean_margin,
            self.eci.value,
            self.counts.negatives_per_example,
        );
        if self.separability.measured {
            line.push_str(&format!(
                ", separability AUC {}",
                fmt(self.separability.auc, 4)
            ));
        }
        line
    }

    /// The separability section of `report.md`: one line with the reading (or why it was
    /// not measured), and a warning line when the AUC reaches the threshold.
    fn separability_markdown(&self) -> String {
        let p = &self.separability;
        let Some(a) = p.auc.filter(|_| p.measured) else {
            return format!("{}.\n", capitalize(&p.note));
        };
        let mut md = format!(
            "Separability AUC {a:.4} ({} negatives vs {} corpus passages, {}-fold cross-validated logistic regression on {} embeddings, seed {}): {}.\n",
            p.negatives,
            p.corpus_passages,
            p.folds,
            p.encoder.as_deref().unwrap_or("?"),
            p.seed,
            p.reading
        );
        if p.warning {
            md.push_str(&format!(
                "\n**Warning:** separability AUC {a:.4} ≥ {}: a retriever trained on these negatives can learn to reject them by their style rather than their relevance.\n",
                p.warn_threshold
            ));
        }
        md
    }

    fn scores_chart(&self) -> Chart {
        let h = &self.histograms.scores;
        let shares = |c: &[u64]| -> Vec<f64> {
            let total = c.iter().sum::<u64>().max(1) as f64;
            c.iter().map(|&x| x as f64 / total).collect()
        };
        let (p, n) = (shares(&h.positive), shares(&h.negative));
        let top = p.iter().chain(&n).copied().fold(0.0, f64::max);
        let mut chart = Chart::new(
            &format!("Judge scores ({})", self.judge.kind),
            "score",
            "share of set",
        );
        chart.x_range = (h.edges[0], h.edges[h.edges.len() - 1]);
        chart.y_range = (0.0, (top * 1.1).max(1e-9));
        chart.series.push(Series::Bars {
            label: format!("positives ({})", self.counts.positives),
            color: Color::BLUE,
            edges: h.edges.clone(),
            heights: p,
        });
        chart.series.push(Series::Bars {
            label: format!("negatives ({})", self.counts.negatives),
            color: Color::ORANGE,
            edges: h.edges.clone(),
            heights: n,
        });
        chart
    }

    fn margins_chart(&self) -> Chart {
        let h = &self.histograms.margin;
        let top = h.counts.iter().copied().max().unwrap_or(0) as f64;
        let mut chart = Chart::new(
            "Margins s+ - s- per negative",
            "margin (positive score - negative score)",
            "negatives",
        );
        let (lo, hi) = (h.edges[0], h.edges[h.edges.len() - 1]);
        chart.x_range = (lo.min(0.0), hi.max(0.0));
        chart.y_range = (0.0, (top * 1.1).max(1.0));
        chart.series.push(Series::Bars {
            label: "negatives".into(),
            color: Color::GREEN,
            edges: h.edges.clone(),
            heights: h.counts.iter().map(|&c| c as f64).collect(),
        });
        chart.series.push(Series::VLine {
            label: "margin 0".into(),
            color: Color::RED,
            x: 0.0,
        });
        chart
    }

    fn roc_chart(&self) -> Chart {
        let mut chart = Chart::new(
            &format!(
                "ROC, positives vs negatives (AUC {})",
                fmt(self.separation.auc, 4)
            ),
            "false positive rate",
            "true positive rate",
        );
        chart.series.push(Series::Line {
            label: "chance".into(),
            color: Color::GRAY,
            points: vec![(0.0, 0.0), (1.0, 1.0)],
            dashed: true,
        });
        chart.series.push(Series::Line {
            label: "judge".into(),
            color: Color::BLUE,
            points: self.separation.roc.iter().map(|p| (p[0], p[1])).collect(),
            dashed: false,
        });
        chart
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let c = &self.counts;
        md.push_str("# foil inspect\n\n");
        md.push_str(&format!(
            "Input `{}` ({}, sha256 `{}`); judge: {} `{}`.\n\n",
            self.input.path,
            self.input.format.name(),
            self.input.sha256,
            self.judge.kind,
            self.judge.name
        ));
        md.push_str(&format!(
            "{} examples over {} queries: {} positives, {} negatives (K = {:.4} negatives per example).\n\n",
            c.examples, c.queries, c.positives, c.negatives, c.negatives_per_example
        ));
        if !self.skipped.examples.is_empty() || !self.skipped.records.is_empty() {
            let list = |m: &BTreeMap<String, u64>| -> String {
                if m.is_empty() {
                    "none".into()
                } else {
                    m.iter()
                        .map(|(r, n)| format!("{r} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            md.push_str(&format!(
                "Skipped examples: {}; skipped records: {}.\n\n",
                list(&self.skipped.examples),
                list(&self.skipped.records)
            ));
        }
        md.push_str("## Summary\n\n| measure | value |\n|---|---:|\n");
        for (name, value) in [
            ("AUC (positives vs negatives)", fmt(self.separation.auc, 4)),
            (
                "negatives at or above their positive",
                format!("{:.2}%", 100.0 * self.safety.at_or_above_positive),
            ),
            ("safety S", format!("{:.4}", self.safety.s)),
            ("hardness H", format!("{:.4}", self.hardness.h)),
            (
                "mean margin s⁺ − s⁻",
                format!("{:.4}", self.safety.mean_margin),
            ),
            ("ECI (reconstruction)", format!("{:.4}", self.eci.value)),
            (
                "separability AUC (negatives vs corpus passages)",
                fmt(self.separability.auc, 4),
            ),
        ] {
            md.push_str(&format!("| {name} | {value} |\n"));
        }
        md.push_str(&format!("\nECI is a {}.\n", ECI_NOTE));

        md.push_str("\n## Score distributions\n\n| | count | mean | std | min | 5% | 25% | median | 75% | 95% | max |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (name, s) in [
            ("positive", &self.scores.positive),
            ("negative", &self.scores.negative),
            ("margin s⁺ − s⁻", &self.scores.margin),
        ] {
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                s.count,
                fmt(s.mean, 4),
                fmt(s.std, 4),
                fmt(s.min, 4),
                fmt(s.q05, 4),
                fmt(s.q25, 4),
                fmt(s.median, 4),
                fmt(s.q75, 4),
                fmt(s.q95, 4),
                fmt(s.max, 4)
            ));
        }

        md.push_str(
            "\n## Safety\n\n| negatives with s⁻ ≥ s⁺ − δ | count | share |\n|---|---:|---:|\n",
        );
        for d in &self.safety.near_positive {
            md.push_str(&format!(
                "| δ = {} | {} | {:.2}% |\n",
                d.delta,
                d.count,
                100.0 * d.share
            ));
        }

        md.push_str("\n## Diversity\n\n");
        let d = &self.diversity;
        if d.measured {
            md.push_str(&format!(
                "Over {} examples with at least two negatives ({}).\n\n| measure | value |\n|---|---:|\n| mean pairwise cosine | {} |\n| mean ln det(G + εI), ε = {} | {} |\n| mean ln det(G + εI) per negative | {} |\n",
                d.examples,
                d.note,
                fmt(d.mean_pairwise_cosine, 4),
                d.ridge,
                fmt(d.mean_log_det, 4),
                fmt(d.mean_log_det_per_negative, 4)
            ));
        } else {
            md.push_str(&format!("{}.\n", capitalize(&d.note)));
        }

        md.push_str("\n## Separability from corpus passages\n\n");
        md.push_str(&self.separability_markdown());

        md.push_str(&format!(
            "\n## ECI (reconstruction)\n\nECI = ln(1 + K) · 2HS / (H + S) = ln(1 + {:.4}) · 2 · {:.4} · {:.4} / ({:.4} + {:.4}) = {:.4}.\n",
            self.eci.k, self.eci.h, self.eci.s, self.eci.h, self.eci.s, self.eci.value
        ));
        md.push_str(
            "\n## Charts\n\n![scores](scores.svg)\n![margins](margins.svg)\n![roc](roc.svg)\n",
        );
        md
    }
}

/// `v` with `d` decimals, or `n/a`.
fn fmt(v: Option<f64>, d: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.d$}"),
        _ => "n/a".into(),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
