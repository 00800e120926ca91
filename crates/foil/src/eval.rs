//! The eval stage: read qrels and runs, compute trec_eval's measures, compare two runs with
//! paired significance tests, and render the results as a table or JSON.

use std::fmt::Write as _;
use std::path::Path;

use foil_core::metrics::significance::{paired_tests, PairedTest};
use foil_core::metrics::{evaluate, EvalConfig, Evaluation, MeasureAt};
use foil_core::{InputPolicy, Qrels, Result, Run, SkipReport};
use serde_json::{json, Map, Value};

/// Reads qrels and a run and evaluates the run.
pub fn evaluate_files(
    qrels: &Path,
    run: &Path,
    config: &EvalConfig,
    policy: InputPolicy,
    skips: &mut SkipReport,
) -> Result<Evaluation> {
    let qrels = Qrels::read(qrels, policy, skips)?;
    let run = Run::read(run, policy, skips)?;
    Ok(evaluate(&qrels, &run, config))
}

/// Two runs evaluated on the queries both were evaluated on, with paired tests per measure.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub measures: Vec<MeasureAt>,
    pub mean_a: Vec<f64>,
    pub mean_b: Vec<f64>,
    pub tests: Vec<PairedTest>,
    /// Queries evaluated in only one of the two runs (left out of the comparison).
    pub unpaired_queries: usize,
}

/// Compares run `b` against run `a`.
pub fn compare(a: &Evaluation, b: &Evaluation, trials: u32, seed: u64) -> Comparison {
    let paired: Vec<&String> = a
        .per_query
        .keys()
        .filter(|q| b.per_query.contains_key(*q))
        .collect();
    let unpaired_queries = a.per_query.len() + b.per_query.len() - 2 * paired.len();
    let mut mean_a = Vec::new();
    let mut mean_b = Vec::new();
    let mut tests = Vec::new();
    for i in 0..a.measures.len() {
        let va: Vec<f64> = paired.iter().map(|q| a.per_query[*q][i]).collect();
        let vb: Vec<f64> = paired.iter().map(|q| b.per_query[*q][i]).collect();
        let n = va.len().max(1) as f64;
        mean_a.push(va.iter().sum::<f64>() / n);
        mean_b.push(vb.iter().sum::<f64>() / n);
        tests.push(paired_tests(&va, &vb, trials, seed));
    }
    Comparison {
        measures: a.measures.clone(),
        mean_a,
        mean_b,
        tests,
        unpaired_queries,
    }
}

/// One JSON object: `{"ndcg@10": 0.67, …, "num_queries": 300}`, with `"per_query"` when asked.
pub fn evaluation_json(eval: &Evaluation, per_query: bool) -> Value {
    let mut obj = Map::new();
    for (m, v) in eval.measures.iter().zip(&eval.mean) {
        obj.insert(m.to_string(), json!(v));
    }
    obj.insert("num_queries".into(), json!(eval.num_queries()));
    obj.insert("missing_queries".into(), json!(eval.missing_queries.len()));
    if per_query {
        let mut pq = Map::new();
        for (q, values) in &eval.per_query {
            let mut row = Map::new();
            for (m, v) in eval.measures.iter().zip(values) {
                row.insert(m.to_string(), json!(v));
            }
            pq.insert(q.clone(), Value::Object(row));
        }
        obj.insert("per_query".into(), Value::Object(pq));
    }
    Value::Object(obj)
}

/// A JSON object per measure: the two means, the difference and both p-values.
pub fn comparison_json(c: &Comparison) -> Value {
    let mut obj = Map::new();
    for (i, m) in c.measures.iter().enumerate() {
        let t = &c.tests[i];
        obj.insert(
            m.to_string(),
            json!({
                "a": c.mean_a[i],
                "b": c.mean_b[i],
                "difference": t.mean_difference,
                "t": t.t_statistic,
                "t_test_p": t.t_test_p,
                "randomization_p": t.randomization_p,
            }),
        );
    }
    obj.insert(
        "num_queries".into(),
        json!(c.tests.first().map_or(0, |t| t.n)),
    );
    obj.insert("unpaired_queries".into(), json!(c.unpaired_queries));
    Value::Object(obj)
}

/// A table with one row per measure family and one column per cutoff.
pub fn evaluation_table(eval: &Evaluation) -> String {
    let mut cutoffs: Vec<usize> = eval.measures.iter().map(|m| m.k).collect();
    cutoffs.sort_unstable();
    cutoffs.dedup();
    let mut out = format!("{:<8}", "measure");
    for k in &cutoffs {
        let _ = write!(out, "{:>9}", format!("@{k}"));
    }
    out.push('\n');
    let mut families: Vec<_> = eval.measures.iter().map(|m| m.measure).collect();
    families.dedup();
    for family in families {
        let _ = write!(out, "{:<8}", family.name());
        for &k in &cutoffs {
            match eval.mean_of(MeasureAt { measure: family, k }) {
                Some(v) => {
                    let _ = write!(out, "{v:>9.4}");
                }
                None => {
                    let _ = write!(out, "{:>9}", "-");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// A table of a comparison: means, difference and p-values per measure.
pub fn comparison_table(c: &Comparison) -> String {
    let mut out = format!(
        "{:<12}{:>9}{:>9}{:>9}{:>10}{:>10}\n",
        "measure", "A", "B", "B-A", "t-test p", "rand. p"
    );
    for (i, m) in c.measures.iter().enumerate() {
        let t = &c.tests[i];
        let _ = writeln!(
            out,
            "{:<12}{:>9.4}{:>9.4}{:>+9.4}{:>10.4}{:>10.4}",
            m.to_string(),
            c.mean_a[i],
            c.mean_b[i],
            t.mean_difference,
            t.t_test_p,
            t.randomization_p
        );
    }
    out
}
