//! The `foil` binary end to end on the demo and mini datasets: determinism, index reuse, eval
//! output and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn foil(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(args)
        .env("FOIL_LOG", "info")
        .output()
        .expect("run foil");
    out
}

fn ok(args: &[&str]) -> Output {
    let out = foil(args);
    assert!(
        out.status.success(),
        "foil {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn demo_data(dir: &Path) -> String {
    ok(&["demo", "--output", dir.to_str().unwrap()]);
    dir.join("data").to_str().unwrap().to_string()
}

#[test]
fn search_output_is_byte_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_data(dir.path());
    let mut runs = Vec::new();
    for threads in ["1", "2", "2"] {
        let out = dir
            .path()
            .join(format!("run-{threads}-{}.trec", runs.len()));
        ok(&[
            "search",
            "--data",
            &data,
            "--split",
            "train",
            "--threads",
            threads,
            "--output",
            out.to_str().unwrap(),
        ]);
        runs.push(std::fs::read(&out).unwrap());
    }
    assert!(!runs[0].is_empty());
    assert!(runs.iter().all(|r| *r == runs[0]));
}

#[test]
fn the_index_is_reused_while_the_corpus_is_unchanged_and_rebuilt_after() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("qrels")).unwrap();
    for f in ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"] {
        std::fs::copy(fixtures().join("mini").join(f), data.join(f)).unwrap();
    }
    let index = dir.path().join("bm25.idx");
    let run = dir.path().join("run.trec");
    let args = |_: ()| {
        vec![
            "search".to_string(),
            "--data".into(),
            data.to_str().unwrap().into(),
            "--index".into(),
            index.to_str().unwrap().into(),
            "--output".into(),
            run.to_str().unwrap().into(),
        ]
    };
    let run_with = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        String::from_utf8_lossy(&ok(&a).stderr).into_owned()
    };
    assert!(run_with(args(())).contains("built index"));
    let first = std::fs::read(&run).unwrap();
    assert!(run_with(args(())).contains("loaded index"));
    assert_eq!(
        std::fs::read(&run).unwrap(),
        first,
        "a loaded index ranks like a fresh one"
    );

    // Change the corpus: the stale index must not be used.
    let mut corpus = std::fs::read_to_string(data.join("corpus.jsonl")).unwrap();
    corpus.push_str("{\"_id\": \"d9\", \"text\": \"vitamin D vitamin D fractures fractures\"}\n");
    std::fs::write(data.join("corpus.jsonl"), corpus).unwrap();
    let log = run_with(args(()));
    assert!(
        log.contains("rebuilding") && log.contains("built index"),
        "{log}"
    );
    let run_text = std::fs::read_to_string(&run).unwrap();
    assert!(
        run_text.lines().next().unwrap().starts_with("q1 Q0 d9 1 "),
        "{run_text}"
    );
}

#[test]
fn search_writes_a_manifest_with_inputs_counts_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_data(dir.path());
    let run = dir.path().join("r.trec");
    ok(&[
        "search",
        "--data",
        &data,
        "--top-k",
        "7",
        "--k1",
        "1.2",
        "--output",
        run.to_str().unwrap(),
    ]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.trec.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["stage"], "search");
    assert_eq!(m["config"]["top_k"], 7);
    assert!((m["config"]["bm25"]["k1"].as_f64().unwrap() - 1.2).abs() < 1e-6);
    assert_eq!(m["counts"]["documents"], 120);
    assert_eq!(m["counts"]["queries"], 25);
    assert_eq!(m["counts"]["results"], 25 * 7);
    assert_eq!(m["inputs"].as_array().unwrap().len(), 3);
    assert_eq!(m["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn eval_json_has_lower_case_keys_and_agrees_with_the_table() {
    let qrels = fixtures().join("eval/hand.qrels.tsv");
    let run = fixtures().join("eval/hand.run.trec");
    let out = ok(&[
        "eval",
        "--qrels",
        qrels.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "ndcg@10",
        "p@10",
        "recall@100",
        "map@100",
        "mrr@10",
        "ndcg@1000",
    ] {
        assert!(json[key].is_f64(), "missing {key}: {json}");
    }
    assert_eq!(json["num_queries"], 4);
    assert_eq!(json["missing_queries"], 1);
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("eval/hand.golden.json")).unwrap())
            .unwrap();
    assert!(
        (json["ndcg@10"].as_f64().unwrap() - golden["mean"]["ndcg@10"].as_f64().unwrap()).abs()
            < 1e-12
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 judged queries have no results"),
        "{stderr}"
    );
    assert!(
        stderr.contains("removed 1 results whose document id equals the query id"),
        "{stderr}"
    );
}

#[test]
fn keep_identical_ids_changes_the_result() {
    let qrels = fixtures().join("eval/hand.qrels.tsv");
    let run = fixtures().join("eval/hand.run.trec");
    let value = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--qrels",
            qrels.to_str().unwrap(),
            "--run",
            run.to_str().unwrap(),
            "--json",
            "--per-query",
        ];
        args.extend_from_slice(extra);
        let json: serde_json::Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
        json["per_query"]["q2"]["mrr@10"].as_f64().unwrap()
    };
    assert!((value(&[]) - 1.0 / 3.0).abs() < 1e-12);
    assert!((value(&["--keep-identical-ids"]) - 1.0 / 4.0).abs() < 1e-12);
}

#[test]
fn compare_reports_paired_tests_and_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_data(dir.path());
    let a = dir.path().join("a.trec");
    let b = dir.path().join("b.trec");
    ok(&["search", "--data", &data, "--output", a.to_str().unwrap()]);
    ok(&[
        "search",
        "--data",
        &data,
        "--b",
        "1.0",
        "--k1",
        "3.0",
        "--output",
        b.to_str().unwrap(),
    ]);
    let qrels = format!("{data}/qrels/test.tsv");
    let args = [
        "eval",
        "--qrels",
        &qrels,
        "--compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        "--trials",
        "2000",
    ];
    let first: serde_json::Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    let second: serde_json::Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    assert_eq!(first, second, "the same seed gives the same p-values");
    let ndcg = &first["ndcg@10"];
    let diff = ndcg["b"].as_f64().unwrap() - ndcg["a"].as_f64().unwrap();
    assert!((ndcg["difference"].as_f64().unwrap() - diff).abs() < 1e-12);
    for p in ["t_test_p", "randomization_p"] {
        let p = ndcg[p].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{p}");
    }
    assert_eq!(first["num_queries"], 25);

    // Comparing a run with itself: no difference, p = 1.
    let same = [
        "eval",
        "--qrels",
        &qrels,
        "--compare",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
        "--json",
    ];
    let same: serde_json::Value = serde_json::from_slice(&ok(&same).stdout).unwrap();
    assert_eq!(same["ndcg@10"]["t_test_p"], 1.0);
    assert_eq!(same["ndcg@10"]["randomization_p"], 1.0);
}

#[test]
fn fail_below_exits_with_status_one() {
    let qrels = fixtures().join("eval/hand.qrels.tsv");
    let run = fixtures().join("eval/hand.run.trec");
    let (q, r) = (qrels.to_str().unwrap(), run.to_str().unwrap());
    assert_eq!(
        foil(&[
            "eval",
            "--qrels",
            q,
            "--run",
            r,
            "--fail-below",
            "ndcg@10=0.1"
        ])
        .status
        .code(),
        Some(0)
    );
    let out = foil(&[
        "eval",
        "--qrels",
        q,
        "--run",
        r,
        "--fail-below",
        "ndcg@10=0.99",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check failed: ndcg@10"));
    assert_eq!(
        foil(&["eval", "--qrels", q, "--run", r, "--fail-below", "bogus"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn missing_files_and_splits_are_errors_with_exit_code_two() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_data(dir.path());
    let out = foil(&[
        "search",
        "--data",
        &data,
        "--split",
        "dev",
        "--output",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no qrels for split \"dev\""));
    let out = foil(&[
        "eval",
        "--qrels",
        "/nonexistent/qrels.tsv",
        "--run",
        "/nonexistent/run",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/qrels.tsv: No such file"));
}

/// The library names a bad setting by its configuration field; the command line shows the
/// flag that sets it.
#[test]
fn a_bad_setting_is_named_by_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_data(dir.path());
    let out = dir.path().join("run.trec");
    for (args, expected) in [
        (
            vec!["--threads", "0"],
            "foil: search failed: --threads: must be at least 1",
        ),
        (
            vec!["--retriever", "dense"],
            "--model: dense retrieval needs a model",
        ),
    ] {
        let mut all = vec!["search", "--data", &data, "--output", out.to_str().unwrap()];
        all.extend(args);
        let o = foil(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(expected), "{all:?}: {err}");
    }
}

#[test]
fn version_names_the_commit_features_and_kernels() {
    let out = ok(&["--version"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("foil {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    for line in ["features: cuda ", "encoder kernels: ", "GGUF kernels: "] {
        assert!(text.contains(line), "{line:?} missing from {text}");
    }
}

#[test]
fn completion_scripts_cover_every_subcommand_and_survive_a_closed_pipe() {
    let out = ok(&["completions", "bash"]);
    let script = String::from_utf8_lossy(&out.stdout);
    for command in ["experiment", "judge", "mine", "generate", "completions"] {
        assert!(script.contains(command), "{command} missing");
    }
    assert!(ok(&["completions", "zsh"])
        .stdout
        .starts_with(b"#compdef foil"));
    // A reader that stops at once (`| head -1`): no panic, exit 0.
    let mut child = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(["completions", "fish"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
