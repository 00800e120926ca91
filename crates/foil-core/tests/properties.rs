//! Property tests: measures stay in [0, 1] and reach 1 on the ideal ranking, recall grows with
//! k, and runs and qrels survive a write and a read unchanged.

use std::collections::BTreeMap;

use foil_core::metrics::{evaluate, EvalConfig, Measure, MeasureAt};
use foil_core::trec::ScoredDoc;
use foil_core::{InputPolicy, Qrels, Run, SkipReport};
use proptest::prelude::*;

/// Up to 5 queries, each with up to 12 judgments (grades −1..=3) over 20 documents.
fn qrels_strategy() -> impl Strategy<Value = Qrels> {
    prop::collection::btree_map(
        0..5u8,
        prop::collection::btree_map(0..20u8, -1..=3i32, 1..12),
        1..5,
    )
    .prop_map(|m| {
        let mut q = Qrels::default();
        for (query, docs) in m {
            for (doc, grade) in docs {
                q.insert(format!("q{query}"), format!("d{doc}"), grade);
            }
        }
        q
    })
}

/// Up to 5 queries, each ranking up to 25 of 30 documents with scores that often tie.
fn run_strategy() -> impl Strategy<Value = Run> {
    prop::collection::btree_map(
        0..5u8,
        prop::collection::btree_map(0..30u8, 0..8i32, 0..25),
        0..5,
    )
    .prop_map(|m| {
        let mut run = Run::default();
        for (query, docs) in m {
            let docs = docs
                .into_iter()
                .map(|(d, s)| ScoredDoc::new(format!("d{d}"), s as f64 / 2.0))
                .collect();
            run.insert(format!("q{query}"), docs);
        }
        run
    })
}

proptest! {
    #[test]
    fn measures_lie_in_the_unit_interval(qrels in qrels_strategy(), run in run_strategy()) {
        let eval = evaluate(&qrels, &run, &EvalConfig::default());
        for values in eval.per_query.values() {
            for v in values {
                prop_assert!((0.0..=1.0 + 1e-12).contains(v), "{v}");
            }
        }
    }

    #[test]
    fn the_ideal_ranking_scores_one_and_recall_grows_with_k(qrels in qrels_strategy()) {
        // Rank each query's judged documents by grade: the ideal ranking.
        let mut run = Run::default();
        for (query, docs) in qrels.iter() {
            let ranked = docs.iter().map(|(d, &g)| ScoredDoc::new(d.clone(), g as f64)).collect();
            run.insert(query.clone(), ranked);
        }
        let eval = evaluate(&qrels, &run, &EvalConfig::default());
        for (query, values) in &eval.per_query {
            let has_relevant = qrels.get(query).unwrap().values().any(|&g| g > 0);
            for (m, v) in eval.measures.iter().zip(values) {
                if m.measure == Measure::Ndcg {
                    let expected = if has_relevant { 1.0 } else { 0.0 };
                    prop_assert!((v - expected).abs() < 1e-12, "{query} {m}: {v}");
                }
            }
            let recall_at = |k| values[eval.measures.iter().position(|m| *m == MeasureAt { measure: Measure::Recall, k }).unwrap()];
            prop_assert!(recall_at(1) <= recall_at(3) && recall_at(3) <= recall_at(10) && recall_at(10) <= recall_at(1000));
        }
    }

    #[test]
    fn runs_round_trip_through_files(run in run_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.trec");
        run.write(&path, "t").unwrap();
        let back = Run::read(&path, InputPolicy::default(), &mut SkipReport::default()).unwrap();
        // Queries without results are not representable in a run file.
        let non_empty: BTreeMap<_, _> = run.iter().filter(|(_, d)| !d.is_empty()).collect();
        let back_map: BTreeMap<_, _> = back.iter().collect();
        prop_assert_eq!(non_empty, back_map);
    }

    #[test]
    fn qrels_round_trip_through_files(qrels in qrels_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qrels.tsv");
        qrels.write(&path).unwrap();
        let back = Qrels::read(&path, InputPolicy::default(), &mut SkipReport::default()).unwrap();
        prop_assert_eq!(back, qrels);
    }
}
