//! foil's evaluator against golden values computed by pytrec_eval
//! (`scripts/golden/make_eval_golden.py`): every measure, every query, to 1e-9.

use std::path::{Path, PathBuf};

use foil_core::metrics::{evaluate, EvalConfig};
use foil_core::{InputPolicy, Qrels, Run, SkipReport};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/eval")
        .join(name)
}

fn shared(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(path)
}

/// Evaluates `run` on `qrels` and compares every per-query value and mean with the golden file.
fn check(qrels: &Path, run: &Path, golden: &Path) {
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden).expect("golden file")).expect("golden JSON");
    let policy = InputPolicy::default();
    let qrels = Qrels::read(qrels, policy, &mut SkipReport::default()).expect("qrels");
    let run = Run::read(run, policy, &mut SkipReport::default()).expect("run");
    let eval = evaluate(&qrels, &run, &EvalConfig::default());

    let expected = golden["per_query"].as_object().expect("per_query");
    let got: Vec<&String> = eval.per_query.keys().collect();
    let want: Vec<&String> = expected.keys().collect();
    assert_eq!(got, want, "evaluated queries differ from pytrec_eval's");
    let mut compared = 0;
    for (query, values) in &eval.per_query {
        for (measure, value) in eval.measures.iter().zip(values) {
            let key = measure.to_string();
            let reference = expected[query][&key]
                .as_f64()
                .unwrap_or_else(|| panic!("golden lacks {key}"));
            assert!(
                (value - reference).abs() <= 1e-9,
                "query {query} {key}: foil {value}, pytrec_eval {reference}"
            );
            compared += 1;
        }
    }
    for (measure, value) in eval.measures.iter().zip(&eval.mean) {
        let reference = golden["mean"][measure.to_string()].as_f64().expect("mean");
        assert!(
            (value - reference).abs() <= 1e-9,
            "mean {measure}: foil {value}, pytrec_eval {reference}"
        );
    }
    assert_eq!(compared, want.len() * 30);
}

/// Ties, unjudged documents, graded and negative judgments, a query with no relevant document,
/// a judged query missing from the run, a run query without judgments, and a document whose id
/// equals its query's.
#[test]
fn hand_made_run_matches_pytrec_eval() {
    check(
        &fixture("hand.qrels.tsv"),
        &fixture("hand.run.trec"),
        &fixture("hand.golden.json"),
    );
}

/// foil's BM25 run on SciFact test (top 100), evaluated on the shared qrels.
#[test]
fn scifact_bm25_run_matches_pytrec_eval() {
    let qrels = shared("scifact/qrels/test.tsv");
    if !qrels.is_file() {
        // Plain `cargo test` works without the shared data; CI must have it.
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing in CI",
            qrels.display()
        );
        eprintln!("skipped: {} is not present", qrels.display());
        return;
    }
    check(
        &qrels,
        &fixture("scifact-bm25-top100.trec"),
        &fixture("scifact-bm25-top100.golden.json"),
    );
}
