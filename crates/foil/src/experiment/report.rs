//! The experiment's report: a table of measures per pipeline with paired significance against
//! the base model, the negative-set statistics, their rank correlation with nDCG@10, and a
//! chart — as Markdown, a static HTML page and JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use foil_core::fsutil::write_atomic;
use foil_core::metrics::significance::{paired_tests, t_interval};
use foil_core::metrics::{Evaluation, Measure, MeasureAt};
use foil_core::Result;
use foil_plot::{Chart, Color, Series};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{by_pipeline, spearman, ExperimentConfig};
use crate::inspect::report::Report;

/// A negative set's statistics under the judge (the base bi-encoder), from `foil inspect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    /// The reconstructed ECI (see docs/inspect.md).
    pub eci: f64,
    pub auc: Option<f64>,
    /// Share of negatives strictly below their positive.
    pub safety: f64,
    pub hardness: f64,
    /// Share of negatives at or above their positive (likely false negatives).
    pub at_or_above_positive: f64,
    pub mean_margin: f64,
    pub mean_negative_score: f64,
    pub mean_pairwise_cosine: Option<f64>,
    /// Cross-validated AUC of a probe telling the negatives from corpus passages (0.5: not
    /// separable; near 1: the negatives give themselves away by their style).
    #[serde(default)]
    pub separability: Option<f64>,
}

impl Statistics {
    pub fn from_report(r: &Report) -> Self {
        Statistics {
            eci: r.eci.value,
            auc: r.separation.auc,
            safety: r.safety.s,
            hardness: r.hardness.h,
            at_or_above_positive: r.safety.at_or_above_positive,
            mean_margin: r.safety.mean_margin,
            mean_negative_score: r.hardness.mean_negative_score,
            mean_pairwise_cosine: r.diversity.mean_pairwise_cosine,
            separability: r.separability.auc,
        }
    }
}

/// Reads one statistic of a pipeline's negative set.
type StatisticOf = fn(&Statistics) -> Option<f64>;

/// One row of the report.
///
/// Every row is averaged over the same queries: all the test qrels judge relevant documents
/// for. A query a run has no results for counts 0, as `trec_eval -c` counts it (`foil eval`
/// on its own keeps pytrec_eval's default, the queries the run answered), so that a retriever
/// that finds nothing for some queries (BM25 on queries of stop words only) does not look
/// better for it, and the paired tests compare the same queries as the means.
#[derive(Debug, Clone)]
pub struct PipelineResult {
    pub name: String,
    pub stats: Option<Statistics>,
    pub eval: Evaluation,
    /// The judged queries the row is averaged over.
    judged: Vec<String>,
}

const NDCG10: MeasureAt = MeasureAt {
    measure: Measure::Ndcg,
    k: 10,
};
const P10: MeasureAt = MeasureAt {
    measure: Measure::P,
    k: 10,
};
const R100: MeasureAt = MeasureAt {
    measure: Measure::Recall,
    k: 100,
};

impl PipelineResult {
    /// A row for `eval`, averaged over the `judged` queries.
    pub fn new(name: &str, stats: Option<Statistics>, eval: Evaluation, judged: &[String]) -> Self {
        PipelineResult {
            name: name.to_string(),
            stats,
            eval,
            judged: judged.to_vec(),
        }
    }

    /// The mean of a measure over the judged queries, 0 for a query without results (NaN
    /// when the measure was not computed).
    pub fn mean(&self, m: MeasureAt) -> f64 {
        if !self.eval.measures.contains(&m) || self.judged.is_empty() {
            return f64::NAN;
        }
        let ids: Vec<&String> = self.judged.iter().collect();
        self.values(m, &ids).iter().sum::<f64>() / ids.len() as f64
    }

    /// Judged queries the run has no results for.
    pub fn missing(&self) -> usize {
        self.judged
            .iter()
            .filter(|q| !self.eval.per_query.contains_key(*q))
            .count()
    }

    /// Per-query values of `m` for the queries in `ids`.
    fn values(&self, m: MeasureAt, ids: &[&String]) -> Vec<f64> {
        let i = self.eval.measures.iter().position(|x| *x == m);
        ids.iter()
            .map(|q| match (i, self.eval.per_query.get(*q)) {
                (Some(i), Some(v)) => v[i],
                _ => 0.0,
            })
            .collect()
    }
}

/// Paired test of `b` against `a` on nDCG@10 over the judged queries (0 where a run has no
/// results): (difference, p).
fn versus(a: &PipelineResult, b: &PipelineResult) -> (f64, f64) {
    let ids: Vec<&String> = a.judged.iter().collect();
    if ids.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let t = paired_tests(&a.values(NDCG10, &ids), &b.values(NDCG10, &ids), 10_000, 42);
    (t.mean_difference, t.t_test_p)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

/// Writes report.md, report.html, report.json and the nDCG@10 chart; returns report.md's path.
pub fn write(
    dir: &Path,
    config: &ExperimentConfig,
    base: &PipelineResult,
    bm25: &PipelineResult,
    pipelines: &mut [PipelineResult],
) -> Result<PathBuf> {
    let mut md = String::new();
    write_header(&mut md, config);
    let rows_json = write_table(&mut md, base, bm25, pipelines);
    let correlations = write_correlations(&mut md, pipelines);
    write_chart(dir, base, bm25, pipelines)?;
    let _ = writeln!(
        md,
        "\n![Change in nDCG@10 against the base model, with 95% intervals](ndcg.svg)\n\n\
         Negative-set reports: `inspect/<pipeline>/report.md`."
    );

    let json = json!({
        "config": config,
        "pipelines": rows_json,
        "spearman_with_ndcg@10": correlations,
        "eci_note": "ECI here is a reconstruction: ln(1+K)·2HS/(H+S).",
    });
    write_atomic(
        &dir.join("report.json"),
        &serde_json::to_vec_pretty(&json).unwrap_or_default(),
    )?;
    write_atomic(&dir.join("report.html"), html(&md).as_bytes())?;
    let path = dir.join("report.md");
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// The title and the settings.
fn write_header(md: &mut String, config: &ExperimentConfig) {
    let _ = writeln!(md, "# foil experiment\n");
    let _ = writeln!(
        md,
        "Data `{}` (train split `{}`, test split `{}`), base model `{}`, LLM `{}`, training: \
         loss `{}`, batch {}, {} epoch(s){}, seed {}.\n",
        config.data.display(),
        config.train_split,
        config.test_split,
        config.encoder,
        match &config.llm {
            Some(super::LlmSetting::Local(m)) => m.clone(),
            Some(super::LlmSetting::Served(s)) => format!("{} at {}", s.model, s.base_url),
            None => "none".into(),
        },
        config.train.loss,
        config.train.batch_size,
        config.train.epochs,
        config
            .train
            .max_steps
            .map(|s| format!(", at most {s} steps"))
            .unwrap_or_default(),
        config.seed
    );
}

/// The table of every pipeline (baselines first) and its notes; returns its rows as JSON.
fn write_table(
    md: &mut String,
    base: &PipelineResult,
    bm25: &PipelineResult,
    pipelines: &[PipelineResult],
) -> Vec<Value> {
    let _ = writeln!(
        md,
        "| pipeline | nDCG@10 | P@10 | Recall@100 | Δ nDCG@10 vs base | p (paired t) | queries without results | ECI† | AUC | safety | hardness | ≥ positive | separability‡ |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut rows_json = Vec::new();
    for (r, is_baseline) in std::iter::once((base, true))
        .chain(std::iter::once((bm25, true)))
        .chain(pipelines.iter().map(|p| (p, false)))
    {
        let (diff, p) = if is_baseline && r.name == "base" {
            (None, None)
        } else {
            let (d, p) = versus(base, r);
            (Some(d), Some(p))
        };
        let s = r.stats.as_ref();
        let _ = writeln!(
            md,
            "| {}{} | {:.4} | {:.4} | {:.4} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            if is_baseline { " (baseline)" } else { "" },
            r.mean(NDCG10),
            r.mean(P10),
            r.mean(R100),
            fmt(diff, 4),
            fmt(p, 4),
            r.missing(),
            fmt(s.map(|s| s.eci), 4),
            fmt(s.and_then(|s| s.auc), 4),
            fmt(s.map(|s| s.safety), 4),
            fmt(s.map(|s| s.hardness), 4),
            fmt(s.map(|s| s.at_or_above_positive), 4),
            fmt(s.and_then(|s| s.separability), 3),
        );
        rows_json.push(json!({
            "pipeline": r.name,
            "baseline": is_baseline,
            "ndcg@10": r.mean(NDCG10),
            "p@10": r.mean(P10),
            "recall@100": r.mean(R100),
            "queries": r.judged.len(),
            "queries_without_results": r.missing(),
            "vs_base": {"ndcg@10_difference": diff, "t_test_p": p},
            "statistics": s,
        }));
    }
    let _ = writeln!(
        md,
        "\nEvery row is averaged over the {} test queries with a relevant document; a query a run \
         has no results for counts 0 (as `trec_eval -c`), and the paired tests use the same queries.\n\n\
         † ECI is a reconstruction (ln(1+K)·2HS/(H+S)); its published formula is not available. \
         Statistics are judged by the base model (docs/inspect.md).\n\n\
         ‡ Separability: cross-validated AUC of a linear probe telling the negatives from random \
         corpus passages by their base-model embeddings (0.5: indistinguishable; near 1: the \
         negatives give themselves away by style, a shortcut the model can learn).\n",
        base.judged.len()
    );
    rows_json
}

/// How well each statistic of the negatives ordered the pipelines by nDCG@10 (Spearman);
/// returns the correlations by statistic.
fn write_correlations(md: &mut String, pipelines: &[PipelineResult]) -> Map<String, Value> {
    let ndcg: std::collections::BTreeMap<String, f64> = pipelines
        .iter()
        .map(|r| (r.name.clone(), r.mean(NDCG10)))
        .collect();
    let statistics: [(&str, StatisticOf); 6] = [
        ("ECI (reconstruction)", |s| Some(s.eci)),
        ("AUC", |s| s.auc),
        ("safety", |s| Some(s.safety)),
        ("hardness", |s| Some(s.hardness)),
        ("mean margin", |s| Some(s.mean_margin)),
        ("mean negative score", |s| Some(s.mean_negative_score)),
    ];
    let _ = writeln!(
        md,
        "## Did the statistics predict the order?\n\nSpearman rank correlation with nDCG@10 over the {} trained pipelines (needs ≥ 3):\n",
        pipelines.len()
    );
    let _ = writeln!(md, "| statistic | Spearman ρ |\n|---|---:|");
    let mut correlations = serde_json::Map::new();
    for (name, f) in statistics {
        let values = by_pipeline(pipelines, f);
        let (a, b): (Vec<f64>, Vec<f64>) = values
            .iter()
            .filter_map(|(k, v)| ndcg.get(k).map(|n| (*v, *n)))
            .unzip();
        let rho = spearman(&a, &b);
        let _ = writeln!(md, "| {name} | {} |", fmt(rho, 3));
        correlations.insert(name.to_string(), json!(rho));
    }
    correlations
}

/// `ndcg.svg` and `ndcg.png`: each pipeline's paired change in nDCG@10 against the base model.
fn write_chart(
    dir: &Path,
    base: &PipelineResult,
    bm25: &PipelineResult,
    pipelines: &[PipelineResult],
) -> Result<()> {
    // The chart answers "did fine-tuning help?": per pipeline, its paired change in nDCG@10
    // against the base model with a 95% interval, and BM25 as a reference line. (The built-in
    // font has no '@'.)
    let ids: Vec<&String> = base.judged.iter().collect();
    let change = |r: &PipelineResult| -> (f64, f64, f64) {
        let d: Vec<f64> = r
            .values(NDCG10, &ids)
            .iter()
            .zip(base.values(NDCG10, &ids))
            .map(|(b, a)| b - a)
            .collect();
        let mean = d.iter().sum::<f64>() / d.len().max(1) as f64;
        let (lo, hi) = t_interval(&d, 0.95);
        (mean, lo, hi)
    };
    let changes: Vec<(f64, f64, f64)> = pipelines.iter().map(change).collect();
    let bm25_change = change(bm25).0;
    let mut chart = Chart::new(
        "nDCG at 10 after fine-tuning minus the base model's (test split)",
        "pipeline (the negatives it was fine-tuned on)",
        "change in nDCG at 10",
    );
    chart.width = chart.width.max(160 * pipelines.len() as u32 + 200).max(840);
    chart.categories = pipelines.iter().map(|p| p.name.clone()).collect();
    chart.x_range = (-0.5, pipelines.len().max(1) as f64 - 0.5);
    let (lo, hi) = changes
        .iter()
        .flat_map(|&(m, lo, hi)| [m, lo, hi])
        .chain([0.0, bm25_change])
        .filter(|v| v.is_finite())
        .fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * 0.12).max(1e-3);
    chart.y_range = (lo - pad, hi + pad);
    chart.series.push(Series::HLine {
        label: format!("base {:.3}", base.mean(NDCG10)),
        color: Color::GRAY,
        y: 0.0,
    });
    chart.series.push(Series::HLine {
        label: format!("BM25 {:+.3}", bm25_change),
        color: Color::BLACK,
        y: bm25_change,
    });
    chart.series.push(Series::Intervals {
        label: "mean, 95% interval".into(),
        color: Color::BLUE,
        points: changes
            .iter()
            .enumerate()
            .map(|(i, &(m, lo, hi))| (i as f64, m, lo, hi))
            .collect(),
    });
    write_atomic(&dir.join("ndcg.svg"), chart.svg().as_bytes())?;
    write_atomic(&dir.join("ndcg.png"), &chart.png())?;
    Ok(())
}

/// A static page from the report's Markdown subset (headings, paragraphs, tables, images).
fn html(md: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>foil experiment</title>\n\
         <style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child,th:first-child{text-align:left}</style>\n\
         </head><body>\n",
    );
    let mut in_table = false;
    for line in md.lines() {
        if line.starts_with('|') {
            if line.starts_with("|---") {
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                out.push_str("<table>\n");
                in_table = true;
            }
            out.push_str("<tr>");
            for c in cells {
                let _ = write!(out, "<{tag}>{}</{tag}>", escape(c));
            }
            out.push_str("</tr>\n");
            continue;
        }
        if in_table {
            out.push_str("</table>\n");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(out, "<h2>{}</h2>", escape(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(out, "<h1>{}</h1>", escape(h));
        } else if let Some(rest) = line.strip_prefix("![") {
            if let Some((alt, src)) = rest.split_once("](") {
                let _ = writeln!(
                    out,
                    "<p><img alt=\"{}\" src=\"{}\"></p>",
                    escape(alt),
                    escape(src.trim_end_matches(')'))
                );
            }
        } else if !line.trim().is_empty() {
            let _ = writeln!(out, "<p>{}</p>", escape(line));
        }
    }
    if in_table {
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(per_query: &[(&str, f64)]) -> Evaluation {
        let per_query: std::collections::BTreeMap<String, Vec<f64>> = per_query
            .iter()
            .map(|(q, v)| (q.to_string(), vec![*v]))
            .collect();
        let mean = vec![per_query.values().map(|v| v[0]).sum::<f64>() / per_query.len() as f64];
        Evaluation {
            measures: vec![NDCG10],
            per_query,
            mean,
            missing_queries: Vec::new(),
            unjudged_queries: 0,
            identical_ids_removed: 0,
        }
    }

    #[test]
    fn rows_are_averaged_over_every_judged_query() {
        let judged: Vec<String> = ["q1", "q2", "q3", "q4"].map(String::from).to_vec();
        let base = PipelineResult::new(
            "base",
            None,
            eval(&[("q1", 0.5), ("q2", 0.5), ("q3", 0.5), ("q4", 0.5)]),
            &judged,
        );
        // Finds nothing for q4: pytrec_eval's mean over q1..q3 would be 0.6.
        let bm25 = PipelineResult::new(
            "bm25",
            None,
            eval(&[("q1", 0.6), ("q2", 0.6), ("q3", 0.6)]),
            &judged,
        );
        assert!((bm25.eval.mean[0] - 0.6).abs() < 1e-12);
        assert!((bm25.mean(NDCG10) - 0.45).abs() < 1e-12);
        assert_eq!((bm25.missing(), base.missing()), (1, 0));
        // The paired difference is over the same four queries as the means.
        let (diff, _) = versus(&base, &bm25);
        assert!(
            (diff - (bm25.mean(NDCG10) - base.mean(NDCG10))).abs() < 1e-12,
            "{diff}"
        );
        assert!(bm25.mean(P10).is_nan());
    }

    #[test]
    fn the_main_table_has_as_many_headers_as_cells_and_a_chart() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("exp.toml");
        std::fs::write(&toml, "data = \"d\"\n").unwrap();
        let config = ExperimentConfig::read(&toml).unwrap();
        let judged: Vec<String> = ["q1", "q2", "q3"].map(String::from).to_vec();
        let run = |name: &str, v: f64| {
            PipelineResult::new(
                name,
                None,
                eval(&[("q1", v), ("q2", v + 0.1), ("q3", v - 0.1)]),
                &judged,
            )
        };
        let (base, bm25) = (run("base", 0.5), run("bm25-retrieval", 0.6));
        let path = write(dir.path(), &config, &base, &bm25, &mut [run("bm25", 0.55)]).unwrap();
        let md = std::fs::read_to_string(path).unwrap();
        let table: Vec<&str> = md
            .lines()
            .skip_while(|l| !l.starts_with("| pipeline"))
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert_eq!(table.len(), 5, "header, rule, base, BM25, one pipeline");
        let cells = |l: &str| l.matches('|').count();
        assert!(
            table.iter().all(|l| cells(l) == cells(table[0])),
            "{table:#?}"
        );
        assert!(table[0].contains("separability"));
        let svg = std::fs::read_to_string(dir.path().join("ndcg.svg")).unwrap();
        assert!(svg.contains(">bm25</text>"), "the pipeline is a category");
    }
}
