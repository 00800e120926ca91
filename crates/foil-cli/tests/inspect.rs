//! `foil inspect` end to end: the numbers of hand-written fixtures judged by their stored
//! scores (`--judge provenance`) against hand computation, byte-identical reruns, readable
//! errors, a mined demo file, and (when all-MiniLM-L6-v2 is installed) a bi-encoder judge.

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

fn minilm() -> Option<PathBuf> {
    let root = std::env::var_os("FOIL_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/foil/models")))?;
    let dir = root.join("all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run scripts/fetch-models.sh first"
    );
    eprintln!("skipped: all-MiniLM-L6-v2 is not installed");
    None
}

#[test]
fn bi_encoder_judge_measures_diversity() {
    let Some(model) = minilm() else { return };
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
