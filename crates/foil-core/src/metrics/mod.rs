//! Evaluation of runs against qrels, exactly as trec_eval (and so pytrec_eval and BEIR)
//! computes it.
//!
//! - The ranking of a query is its documents ordered by score descending, ties by document id
//!   descending — trec_eval's order, whatever ranks the run file states.
//! - Binary measures count a document as relevant when its grade is ≥ `relevance_level` (1).
//! - nDCG uses linear gains (the grade; zero for grades ≤ 0 and unjudged documents) and a
//!   log2(rank + 1) discount; the ideal ranking is built from all judged documents with a
//!   positive grade, retrieved or not.
//! - A query is evaluated when it is both judged and in the run; the mean is over those
//!   queries, as pytrec_eval reports and BEIR averages. Judged queries missing from the run are
//!   counted and reported, never dropped silently.
//! - Documents whose id equals the query id are removed first unless `keep_identical_ids`, as
//!   BEIR's `ignore_identical_ids` does.

mod measures;
pub mod significance;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::beir::Qrels;
use crate::trec::Run;

pub use measures::query_measures;

/// A family of measures, each computed at every cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Measure {
    /// Normalized discounted cumulative gain (trec_eval `ndcg_cut`).
    Ndcg,
    /// Mean average precision cut at k (trec_eval `map_cut`).
    Map,
    /// Recall at k (trec_eval `recall`).
    Recall,
    /// Precision at k (trec_eval `P`).
    P,
    /// Reciprocal rank of the first relevant document within the top k (trec_eval
    /// `recip_rank` on the run cut at k; BEIR's `mrr@k`).
    Mrr,
}

impl Measure {
    /// All measures, in report order.
    pub const ALL: [Measure; 5] = [
        Measure::Ndcg,
        Measure::Map,
        Measure::Recall,
        Measure::P,
        Measure::Mrr,
    ];

    /// The lower-case name used in keys such as `ndcg@10`.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Ndcg => "ndcg",
            Measure::Map => "map",
            Measure::Recall => "recall",
            Measure::P => "p",
            Measure::Mrr => "mrr",
        }
    }
}

impl FromStr for Measure {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Measure::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown measure {s:?} (expected one of ndcg, map, recall, p, mrr)")
            })
    }
}

/// A measure at a cutoff, such as `ndcg@10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeasureAt {
    pub measure: Measure,
    pub k: usize,
}

impl fmt::Display for MeasureAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.measure.name(), self.k)
    }
}

/// What to compute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvalConfig {
    pub measures: Vec<Measure>,
    pub cutoffs: Vec<usize>,
    /// The lowest grade that counts as relevant for binary measures.
    pub relevance_level: i32,
    /// Keep documents whose id equals the query id.
    pub keep_identical_ids: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            measures: Measure::ALL.to_vec(),
            cutoffs: vec![1, 3, 5, 10, 100, 1000],
            relevance_level: 1,
            keep_identical_ids: false,
        }
    }
}

impl EvalConfig {
    /// Every (measure, cutoff) pair in report order: measure-major, cutoffs ascending.
    pub fn measures_at(&self) -> Vec<MeasureAt> {
        let mut cutoffs = self.cutoffs.clone();
        cutoffs.sort_unstable();
        cutoffs.dedup();
        self.measures
            .iter()
            .flat_map(|&measure| cutoffs.iter().map(move |&k| MeasureAt { measure, k }))
            .collect()
    }
}

/// The result of evaluating a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The measures, in report order.
    pub measures: Vec<MeasureAt>,
    /// Query id → one value per entry of `measures`.
    pub per_query: BTreeMap<String, Vec<f64>>,
    /// The mean over evaluated queries, one value per entry of `measures`.
    pub mean: Vec<f64>,
    /// Judged queries that have no result in the run (not evaluated).
    pub missing_queries: Vec<String>,
    /// Queries of the run that have no judgments (not evaluated).
    pub unjudged_queries: usize,
    /// Documents removed because their id equals the query id.
    pub identical_ids_removed: usize,
}

impl Evaluation {
    /// The mean of one measure, if it was computed.
    pub fn mean_of(&self, m: MeasureAt) -> Option<f64> {
        self.measures
            .iter()
            .position(|x| *x == m)
            .map(|i| self.mean[i])
    }

    /// Number of evaluated queries.
    pub fn num_queries(&self) -> usize {
        self.per_query.len()
    }
}

/// Evaluates `run` against `qrels`.
pub fn evaluate(qrels: &Qrels, run: &Run, config: &EvalConfig) -> Evaluation {
    let measures = config.measures_at();
    let mut run = run.clone();
    let identical_ids_removed = if config.keep_identical_ids {
        0
    } else {
        run.drop_identical_ids()
    };
    let mut per_query = BTreeMap::new();
    let mut missing_queries = Vec::new();
    for (query, judged) in qrels.iter() {
        match run.get(query) {
            Some(ranking) => {
                let values = query_measures(judged, ranking, &measures, config.relevance_level);
                per_query.insert(query.clone(), values);
            }
            None => missing_queries.push(query.clone()),
        }
    }
    let unjudged_queries = run.iter().filter(|(q, _)| qrels.get(q).is_none()).count();
    let n = per_query.len();
    let mean = (0..measures.len())
        .map(|i| {
            if n == 0 {
                0.0
            } else {
                per_query.values().map(|v: &Vec<f64>| v[i]).sum::<f64>() / n as f64
            }
        })
        .collect();
    Evaluation {
        measures,
        per_query,
        mean,
        missing_queries,
        unjudged_queries,
        identical_ids_removed,
    }
}
