//! `foil experiment` on the demo dataset with all-MiniLM-L6-v2 (installed by
//! scripts/fetch-models.sh), BM25 and dense negatives and a two-step training budget: the
//! report has every pipeline and the baselines, a rerun reuses every step and writes the
//! same report, and a changed training budget reruns only training and evaluation.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{foil, minilm};

fn config(dir: &Path, model: &Path, steps: u32) -> PathBuf {
    let path = dir.join("exp.toml");
    std::fs::write(
        &path,
        format!(
            "data = \"data\"\nencoder = {:?}\nthreads = 2\nembedding_cache = \"\"\n\n\
             [negatives]\nmethods = [\"bm25\", \"dense\"]\nnum_negatives = 1\n\n\
             [train]\nbatch_size = 8\nmax_steps = {steps}\nmax_length = 24\n",
            model.to_str().unwrap()
        ),
    )
    .unwrap();
    path
}

fn steps(out: &Output) -> (u64, u64) {
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("experiment:"))
        .unwrap_or_else(|| panic!("no summary line in {err}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[1].parse().unwrap(), words[4].parse().unwrap())
}

#[test]
fn an_experiment_reports_every_pipeline_and_reruns_only_what_changed() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    foil(&["demo", "--output", tmp.path().to_str().unwrap()]);
    let out = tmp.path().join("out");
    let run = |steps: u32| {
        let exp = config(tmp.path(), &model, steps);
        foil(&[
            "experiment",
            "--config",
            exp.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--no-progress",
        ])
    };
    let first = run(2);
    // queries are given: negatives, inspect, model, run for 2 methods + base and BM25 runs.
    assert_eq!(steps(&first), (10, 0));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for row in [
        "| base (baseline) |",
        "| bm25-retrieval (baseline) |",
        "| bm25 |",
        "| dense |",
    ] {
        assert!(report.contains(row), "{row} missing from\n{report}");
    }
    assert!(report.contains("reconstruction"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let pipelines = json["pipelines"].as_array().unwrap();
    assert_eq!(pipelines.len(), 4);
    for p in pipelines {
        let ndcg = p["ndcg@10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ndcg), "{p}");
        assert_eq!(p["queries"], 25);
    }
    // Trained pipelines carry negative-set statistics; baselines do not.
    assert!(pipelines[2]["statistics"]["eci"].as_f64().is_some());
    assert!(pipelines[0]["statistics"].is_null());
    for file in ["report.html", "ndcg.svg", "ndcg.png", "manifest.json"] {
        assert!(out.join(file).is_file(), "{file}");
    }

    let again = run(2);
    assert_eq!(
        steps(&again),
        (0, 10),
        "an unchanged experiment reruns nothing"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        report
    );

    // Another training budget: negatives, inspections and baseline runs are reused.
    let changed = run(1);
    assert_eq!(steps(&changed), (4, 6));
}

/// The zero-label path with every default: only `data` and `[queries] generate = true` are
/// set, so the default LLM (installed by scripts/fetch-models.sh all) writes the training
/// queries, and every default method, filter, training and evaluation setting runs.
#[test]
fn the_zero_label_path_runs_to_its_report_with_every_default() {
    let Some(_) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    foil(&["demo", "--output", tmp.path().to_str().unwrap()]);
    // A small corpus: the passages the first test queries judge, and their qrels.
    let demo = tmp.path().join("data");
    let small = tmp.path().join("small");
    std::fs::create_dir_all(small.join("qrels")).unwrap();
    let qrels = std::fs::read_to_string(demo.join("qrels/test.tsv")).unwrap();
    let judged: Vec<&str> = qrels
        .lines()
        .filter(|l| !l.starts_with("query-id"))
        .take(10)
        .collect();
    let docs: std::collections::HashSet<&str> = judged
        .iter()
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    let corpus: Vec<String> = std::fs::read_to_string(demo.join("corpus.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            docs.contains(v["_id"].as_str().unwrap())
        })
        .map(String::from)
        .collect();
    assert!(corpus.len() >= 6, "{} passages", corpus.len());
    std::fs::write(small.join("corpus.jsonl"), corpus.join("\n") + "\n").unwrap();
    std::fs::copy(demo.join("queries.jsonl"), small.join("queries.jsonl")).unwrap();
    std::fs::write(
        small.join("qrels/test.tsv"),
        format!("query-id\tcorpus-id\tscore\n{}\n", judged.join("\n")),
    )
    .unwrap();
    let exp = tmp.path().join("exp.toml");
    std::fs::write(&exp, "data = \"small\"\n\n[queries]\ngenerate = true\n").unwrap();
    let out = tmp.path().join("out");
    foil(&[
        "experiment",
        "--config",
        exp.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    let queries = std::fs::read_to_string(out.join("queries/queries.jsonl")).unwrap();
    assert!(!queries.trim().is_empty(), "no query survived the filters");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let names: Vec<&str> = json["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pipeline"].as_str().unwrap())
        .collect();
    let defaults = foil::experiment::ExperimentConfig::read(&exp).unwrap();
    assert_eq!(
        names.len(),
        2 + defaults.negatives.methods.len(),
        "{names:?}"
    );
    for p in json["pipelines"].as_array().unwrap() {
        let ndcg = p["ndcg@10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ndcg), "{p}");
    }
    assert!(out.join("report.md").is_file() && out.join("ndcg.png").is_file());
}

/// A bad setting is named as the experiment's file names it, not by a flag it has no use for.
#[test]
fn a_bad_setting_is_named_by_its_field_in_the_file() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    foil(&["demo", "--output", tmp.path().to_str().unwrap()]);
    let exp = config(tmp.path(), &model, 1);
    let text = std::fs::read_to_string(&exp).unwrap();
    std::fs::write(&exp, text.replace("threads = 2", "threads = 0")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(["experiment", "--config", exp.to_str().unwrap()])
        .args(["--output", tmp.path().join("out").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(": threads: must be at least 1"), "{err}");
    assert!(!err.contains("--threads"), "{err}");
}
