//! `foil inspect` end to end: the numbers of hand-written fixtures judged by their stored
//! scores (`--judge provenance`) against hand computation, byte-identical reruns, readable
//! errors, a mined demo file, and (when all-MiniLM-L6-v2 is installed) a bi-encoder judge and
//! the separability of BM25 negatives against templated fakes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/inspect")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(args)
        .output()
        .unwrap()
}

fn foil(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "foil {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn inspect(file: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "inspect",
        file.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    foil(&args)
}

fn report(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn close(v: &Value, expected: f64) {
    let x = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((x - expected).abs() < 1e-6, "{x} != {expected}");
}

const FILES: [&str; 8] = [
    "report.json",
    "report.md",
    "scores.svg",
    "scores.png",
    "margins.svg",
    "margins.png",
    "roc.svg",
    "roc.png",
];

#[test]
fn provenance_numbers_match_hand_computation_and_reruns_are_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let file = fixture("negatives.jsonl");
    let out = inspect(&file, &a, &["--judge", "provenance"]);
    inspect(&file, &b, &["--judge", "provenance"]);
    for name in FILES {
        let x = std::fs::read(a.join(name)).unwrap();
        assert_eq!(x, std::fs::read(b.join(name)).unwrap(), "{name} differs");
    }
    assert_eq!(
        &std::fs::read(a.join("scores.png")).unwrap()[..4],
        b"\x89PNG"
    );

    // Kept: q1 (s+ 0.8; s- 0.6, 0.4, 0.9) and q2 (s+ 0.5; s- 0.5, 0.1); q3 has no negative.
    let r = report(&a);
    assert_eq!(r["input"]["format"], "negatives");
    assert_eq!(r["counts"]["examples"], 2);
    assert_eq!(r["counts"]["negatives"], 5);
    assert_eq!(r["skipped"]["examples"]["no_negative"], 1);
    close(&r["counts"]["negatives_per_example"], 2.5);
    // Margins 0.2, 0.4, -0.1, 0.0, 0.4: two at or above their positive.
    close(&r["safety"]["at_or_above_positive"], 0.4);
    close(&r["safety"]["s"], 0.6);
    close(&r["safety"]["mean_margin"], 0.18);
    assert_eq!(r["safety"]["near_positive"][3]["delta"], 0.1);
    assert_eq!(r["safety"]["near_positive"][3]["count"], 2);
    // Hardness: 0.6/0.8, 0.4/0.8, 1 (clipped), 0.5/0.5, 0.1/0.5 → 3.45 / 5.
    close(&r["hardness"]["h"], 0.69);
    // Pairs won by positives: 0.8 beats 4 of 5; 0.5 beats 2 and ties 1 → 6.5 / 10.
    close(&r["separation"]["auc"], 0.65);
    let eci = 3.5f64.ln() * 2.0 * 0.69 * 0.6 / (0.69 + 0.6);
    close(&r["eci"]["value"], eci);
    assert_eq!(r["eci"]["reconstruction"], true);
    assert!(r["eci"]["note"]
        .as_str()
        .unwrap()
        .contains("reconstruction"));
    assert_eq!(r["diversity"]["measured"], false);
    close(&r["scores"]["positive"]["mean"], 0.65);
    close(&r["scores"]["negative"]["median"], 0.5);
    let counts: u64 = r["histograms"]["scores"]["negative"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(counts, 5);

    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("AUC 0.6500"), "{stdout}");
    assert!(stdout.contains("ECI 0.8041 (reconstruction)"), "{stdout}");
    let md = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(md.contains("| ECI (reconstruction) | 0.8041 |"), "{md}");
    assert!(md.contains("not available"));

    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["stage"], "inspect");
    assert_eq!(manifest["counts"]["skipped_examples.no_negative"], 1);
    assert_eq!(manifest["counts"]["negatives"], 5);
    assert_eq!(manifest["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
    assert!(manifest["config"]["judge_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("provenance"));

    // Without a corpus and an encoder, separability is skipped, saying why.
    assert_eq!(r["separability"]["measured"], false);
    assert!(r["separability"]["note"]
        .as_str()
        .unwrap()
        .contains("no corpus"));
    assert!(md.contains("## Separability from corpus passages\n\nSkipped: no corpus"));
    assert_eq!(manifest["counts"]["separability.negatives"], 0);
}

#[test]
fn flagembedding_margins_use_the_lowest_positive() {
    let tmp = tempfile::tempdir().unwrap();
    inspect(
        &fixture("flagembedding.jsonl"),
        tmp.path(),
        &["--judge", "provenance"],
    );
    let r = report(tmp.path());
    assert_eq!(r["input"]["format"], "flagembedding");
    // s+ = min(0.9, 0.7) = 0.7; s- = 0.3, 0.8.
    close(&r["safety"]["at_or_above_positive"], 0.5);
    close(&r["hardness"]["h"], (0.3 / 0.7 + 1.0) / 2.0);
    close(&r["separation"]["auc"], 0.75);
    let h = (0.3 / 0.7 + 1.0) / 2.0;
    close(&r["eci"]["value"], 3f64.ln() * 2.0 * h * 0.5 / (h + 0.5));
}

#[test]
fn bad_input_is_reported_with_its_location() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("o");
    let o = out_dir.to_str().unwrap();
    let triplet = fixture("triplet.jsonl");
    let r = run(&[
        "inspect",
        triplet.to_str().unwrap(),
        "--judge",
        "provenance",
        "--output",
        o,
    ]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("triplet records carry no scores"), "{err}");

    let bad = fixture("bad_scores.jsonl");
    let r = run(&[
        "inspect",
        bad.to_str().unwrap(),
        "--judge",
        "provenance",
        "--output",
        o,
    ]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("bad_scores.jsonl:2: field \"scores\" has 1 scores, expected 2"),
        "{err}"
    );
    let r = run(&[
        "inspect",
        bad.to_str().unwrap(),
        "--judge",
        "provenance",
        "--output",
        o,
        "--skip-invalid",
    ]);
    assert!(r.status.success());
    assert_eq!(report(&out_dir)["skipped"]["records"]["bad_score"], 1);

    let r = run(&["inspect", triplet.to_str().unwrap(), "--output", o]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("choose a judge"));
}

#[test]
fn inspects_what_mine_writes() {
    let tmp = tempfile::tempdir().unwrap();
    foil(&["demo", "--output", tmp.path().to_str().unwrap()]);
    let data = tmp.path().join("data");
    let mined = tmp.path().join("mined");
    foil(&[
        "mine",
        "--data",
        data.to_str().unwrap(),
        "--retriever",
        "bm25",
        "--num-negatives",
        "3",
        "--range-max",
        "20",
        "--format",
        "n-tuple-scores,triplet",
        "--output",
        mined.to_str().unwrap(),
        "--no-progress",
    ]);
    for (file, format) in [
        ("negatives.jsonl", "negatives"),
        ("n-tuple-scores.jsonl", "n-tuple-scores"),
    ] {
        let out = tmp.path().join(format);
        inspect(
            &mined.join(file),
            &out,
            &["--judge", "provenance", "--max-queries", "5"],
        );
        let r = report(&out);
        assert_eq!(r["input"]["format"], format);
        assert!(r["counts"]["queries"].as_u64().unwrap() <= 5);
        let auc = r["separation"]["auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc));
    }
}

#[test]
fn bi_encoder_judge_measures_diversity() {
    let Some(model) = common::minilm() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    inspect(
        &fixture("triplet.jsonl"),
        &out,
        &["--judge-model", model.to_str().unwrap(), "--no-cache"],
    );
    let r = report(&out);
    assert_eq!(r["input"]["format"], "triplet");
    assert_eq!(r["counts"]["examples"], 1);
    assert_eq!(r["counts"]["negatives"], 2);
    assert_eq!(r["diversity"]["measured"], true);
    let cos = r["diversity"]["mean_pairwise_cosine"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&cos));
    assert!(r["diversity"]["mean_log_det"].as_f64().unwrap() <= 1e-3);
}

/// Writes `foil generate negatives`'s layout (`negatives-corpus.jsonl` + `negatives.jsonl`
/// with null scores) for the train pairs of `data`: one templated fake negative per query,
/// every one opening with the same boilerplate.
fn write_templated_negatives(data: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let queries: std::collections::HashMap<String, String> =
        std::fs::read_to_string(data.join("queries.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let q: Value = serde_json::from_str(l).unwrap();
                (
                    q["_id"].as_str().unwrap().into(),
                    q["text"].as_str().unwrap().into(),
                )
            })
            .collect();
    let (mut corpus, mut negatives) = (String::new(), String::new());
    let mut written = std::collections::HashSet::new();
    let qrels = std::fs::read_to_string(data.join("qrels/train.tsv")).unwrap();
    for line in qrels.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (qid, doc) = (cols[0], cols[1]);
        let id = format!("gen-neg-{qid}-0");
        if written.insert(id.clone()) {
            let text = format!(
                "As an AI language model, here is a passage that looks relevant. It talks about {} in general terms, but it does not answer the question.",
                queries[qid]
            );
            corpus.push_str(&serde_json::json!({"_id": id, "title": "", "text": text}).to_string());
            corpus.push('\n');
        }
        let record = serde_json::json!({
            "query_id": qid, "positive_id": doc, "positive_score": null, "method": "llm",
            "negatives": [{"doc_id": id, "score": null, "rank": 1}],
        });
        negatives.push_str(&record.to_string());
        negatives.push('\n');
    }
    std::fs::write(dir.join("negatives-corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("negatives.jsonl"), negatives).unwrap();
    dir.join("negatives.jsonl")
}

#[test]
fn templated_negatives_are_more_separable_than_bm25_negatives() {
    let Some(model) = common::minilm() else {
        return;
    };
    let model = model.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    foil(&["demo", "--output", tmp.path().to_str().unwrap()]);
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let mined = tmp.path().join("mined");
    foil(&[
        "mine",
        "--data",
        d,
        "--retriever",
        "bm25",
        "--num-negatives",
        "1",
        "--output",
        mined.to_str().unwrap(),
        "--no-progress",
    ]);
    let fakes = write_templated_negatives(&data, &tmp.path().join("generated"));
    let judge = ["--data", d, "--judge-model", model, "--no-cache"];

    let bm25_out = tmp.path().join("bm25");
    inspect(&mined.join("negatives.jsonl"), &bm25_out, &judge);
    let fake_out = tmp.path().join("fake");
    let fake = inspect(&fakes, &fake_out, &judge);
    let (bm25, fakes_report) = (report(&bm25_out), report(&fake_out));
    let auc = |r: &Value| r["separability"]["auc"].as_f64().unwrap();
    eprintln!(
        "separability AUC: BM25 negatives {:.4}, templated fakes {:.4}",
        auc(&bm25),
        auc(&fakes_report)
    );
    assert!(auc(&fakes_report) > 0.95, "{}", auc(&fakes_report));
    assert!(auc(&bm25) < 0.8, "{}", auc(&bm25));
    assert!(auc(&bm25) < auc(&fakes_report));

    for r in [&bm25, &fakes_report] {
        let s = &r["separability"];
        assert_eq!(s["measured"], true);
        assert_eq!(s["folds"], 5);
        assert_eq!(s["seed"], 42);
        assert_eq!(s["encoder"], "all-MiniLM-L6-v2");
        assert_eq!(s["negatives"], s["corpus_passages"]);
        assert!(s["negatives"].as_u64().unwrap() >= 30, "{s}");
    }
    // The generated negatives' texts came from negatives-corpus.jsonl beside the file.
    assert_eq!(fakes_report["counts"]["negatives"], 37);
    assert_eq!(bm25["separability"]["warning"], false);
    assert_eq!(fakes_report["separability"]["warning"], true);
    let md = std::fs::read_to_string(fake_out.join("report.md")).unwrap();
    assert!(
        md.contains("**Warning:** separability AUC 1.0000 ≥ 0.8"),
        "{md}"
    );
    assert!(md.contains("easy to tell apart"), "{md}");
    assert!(String::from_utf8_lossy(&fake.stderr).contains("easy to tell apart"));
    assert!(String::from_utf8_lossy(&fake.stdout).contains("separability AUC 1.0000"));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(fake_out.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["counts"]["separability.negatives"], 35);
    assert_eq!(manifest["seed"], 42);
    assert_eq!(
        manifest["config"]["separability_encoder"],
        "all-MiniLM-L6-v2"
    );
    let inputs: Vec<&str> = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert!(
        inputs.iter().any(|p| p.ends_with("negatives-corpus.jsonl")),
        "{inputs:?}"
    );

    // The same inputs and seed give the same bytes, whatever the threads; another seed other
    // folds and samples.
    let again = tmp.path().join("again");
    let mut one_thread = judge.to_vec();
    one_thread.extend(["--threads", "1"]);
    inspect(&mined.join("negatives.jsonl"), &again, &one_thread);
    for name in ["report.json", "report.md"] {
        assert_eq!(
            std::fs::read(bm25_out.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name} differs"
        );
    }
    // The text format of the same negatives measures the same; a provenance judge with
    // --separability-model too.
    let ntuple = tmp.path().join("ntuple");
    inspect(&mined.join("n-tuple.jsonl"), &ntuple, &judge);
    let provenance = tmp.path().join("provenance");
    inspect(
        &mined.join("negatives.jsonl"),
        &provenance,
        &[
            "--data",
            d,
            "--judge",
            "provenance",
            "--separability-model",
            model,
            "--no-cache",
        ],
    );
    for out in [&ntuple, &provenance] {
        assert_eq!(
            report(out)["separability"]["auc"],
            bm25["separability"]["auc"]
        );
    }
    let seeded = tmp.path().join("seeded");
    let mut other_seed = judge.to_vec();
    other_seed.extend(["--seed", "7"]);
    inspect(&mined.join("negatives.jsonl"), &seeded, &other_seed);
    assert_eq!(report(&seeded)["separability"]["seed"], 7);
}
