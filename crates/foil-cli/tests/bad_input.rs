//! Every kind of bad input either fails with exit code 2 and an error naming `file:line` and the
//! bad value, or, under `--skip-invalid`, is skipped, counted by reason in the summary line and
//! the manifest, and the rest of the data is used.
//!
//! Each case overlays one file of `tests/fixtures/bad/<case>/` on the valid dataset
//! `tests/fixtures/mini/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn foil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(args)
        .env("FOIL_LOG", "warn")
        .output()
        .expect("run foil")
}

/// Copies the mini dataset into a temp folder and overlays the files of `case`.
fn dataset(case: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("mini"), dir.path());
    copy_tree(&fixtures().join("bad").join(case), dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs `foil search` on the case's dataset: strict, then with `--skip-invalid`.
fn check_search(case: &str, file: &str, error: &str, reason: &str, queries_left: u64) {
    let dir = dataset(case);
    let data = dir.path().to_str().unwrap();
    let run = dir.path().join("out/run.trec");
    let run_arg = run.to_str().unwrap();

    let out = foil(&[
        "search",
        "--data",
        data,
        "--output",
        run_arg,
        "--no-progress",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
    let expected = format!("{}:{error}", dir.path().join(file).display());
    assert!(
        stderr.contains(&expected),
        "{case}: expected {expected:?} in\n{stderr}"
    );
    assert!(
        !run.exists(),
        "{case}: a failed run must not leave a run file"
    );

    let out = foil(&[
        "search",
        "--data",
        data,
        "--output",
        run_arg,
        "--no-progress",
        "--skip-invalid",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{case}: {stderr}");
    assert!(
        stderr.contains("skipped 1 (") && stderr.contains(&format!("{reason} 1")),
        "{case}: {stderr}"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/run.trec.manifest.json")).unwrap(),
    )
    .unwrap();
    let key = dir.path().join(file).display().to_string();
    assert_eq!(manifest["skipped"][&key][reason], 1, "{case}: {manifest}");
    assert_eq!(manifest["counts"]["skipped"], 1);
    assert_eq!(manifest["counts"]["queries"], queries_left, "{case}");
}

#[test]
fn malformed_json() {
    check_search("malformed_json", "corpus.jsonl", "3: malformed JSON (EOF while parsing a string at line 1 column 36): \"{\\\"_id\\\": \\\"d7\\\", \\\"text\\\": \\\"unterminated}\"", "malformed_json", 3);
}

#[test]
fn missing_id() {
    check_search(
        "missing_id",
        "corpus.jsonl",
        "3: missing field \"_id\": \"{\\\"title\\\": \\\"T\\\", \\\"text\\\": \\\"no id\\\"}\"",
        "missing_id",
        3,
    );
}

#[test]
fn missing_text() {
    check_search(
        "missing_text",
        "corpus.jsonl",
        "3: missing field \"text\"",
        "missing_text",
        3,
    );
}

#[test]
fn duplicate_id() {
    check_search(
        "duplicate_id",
        "corpus.jsonl",
        "3: duplicate document id \"d1\" (first on line 1)",
        "duplicate_id",
        3,
    );
}

#[test]
fn empty_text() {
    check_search(
        "empty_text",
        "corpus.jsonl",
        "3: document \"d7\" has empty text",
        "empty_text",
        3,
    );
}

#[test]
fn invalid_utf8() {
    check_search("invalid_utf8", "corpus.jsonl", "3: invalid UTF-8 at byte 26: \"{\\\"_id\\\": \\\"d7\\\", \\\"text\\\": \\\"caf\u{FFFD} au lait\\\"}\"", "invalid_utf8", 3);
}

#[test]
fn empty_query() {
    check_search(
        "empty_query",
        "queries.jsonl",
        "2: query \"q9\" has empty text",
        "empty_text",
        3,
    );
}

#[test]
fn qrels_wrong_field_count() {
    check_search(
        "qrels_field_count",
        "qrels/test.tsv",
        "3: expected 3 fields (query-id, corpus-id, score), found 2: \"q2\\td2\"",
        "wrong_field_count",
        1,
    );
}

#[test]
fn qrels_bad_relevance() {
    check_search(
        "qrels_bad_relevance",
        "qrels/test.tsv",
        "2: relevance is not an integer: \"high\"",
        "bad_relevance",
        1,
    );
}

#[test]
fn qrels_unknown_query() {
    check_search(
        "qrels_unknown_query",
        "qrels/test.tsv",
        "3: unknown query id \"q9\"",
        "unknown_query",
        1,
    );
}

#[test]
fn qrels_unknown_document() {
    check_search(
        "qrels_unknown_doc",
        "qrels/test.tsv",
        "3: unknown document id \"d77\"",
        "unknown_document",
        1,
    );
}

#[test]
fn qrels_duplicate_judgment() {
    check_search(
        "qrels_duplicate",
        "qrels/test.tsv",
        "4: duplicate judgment for query \"q1\" and document \"d1\" (first on line 2)",
        "duplicate_judgment",
        2,
    );
}

/// Runs `foil eval` on the mini qrels and the case's run file: strict, then `--skip-invalid`.
fn check_eval(case: &str, error: &str, reason: &str) {
    let run = fixtures().join("bad").join(case).join("run.trec");
    let qrels = fixtures().join("mini/qrels/test.tsv");
    let (run_arg, qrels_arg) = (run.to_str().unwrap(), qrels.to_str().unwrap());
    let out = foil(&["eval", "--qrels", qrels_arg, "--run", run_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
    let expected = format!("{}:{error}", run.display());
    assert!(
        stderr.contains(&expected),
        "{case}: expected {expected:?} in\n{stderr}"
    );

    let out = foil(&[
        "eval",
        "--qrels",
        qrels_arg,
        "--run",
        run_arg,
        "--skip-invalid",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{case}: {stderr}");
    assert!(stderr.contains(&format!("{reason} 1")), "{case}: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["num_queries"], 1, "{case}: only q1 is in the run");
}

#[test]
fn run_wrong_field_count() {
    check_eval(
        "run_field_count",
        "2: expected 6 fields (query-id Q0 doc-id rank score tag), found 5: \"q1 Q0 d2 2 3.0\"",
        "wrong_field_count",
    );
}

#[test]
fn run_bad_score() {
    check_eval(
        "run_bad_score",
        "2: score is not a finite number: \"NaN\"",
        "bad_score",
    );
}

#[test]
fn run_duplicate_document() {
    check_eval(
        "run_duplicate_doc",
        "3: document \"d1\" listed twice for query \"q1\" (first on line 1)",
        "duplicate_id",
    );
}
