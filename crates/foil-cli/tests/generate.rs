//! `foil generate queries|negatives` against a loopback OpenAI-compatible chat mock: faults
//! (429 with Retry-After, 500, stalls, truncated JSON, wrong schemas) end as outputs or
//! recorded failures; a run killed with SIGKILL resumes from its cache to the same bytes; the
//! API key reaches no log line, file or error.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use foil_test_support::{chat_completion, MockServer, Reply, Request};
use serde_json::Value;

// ---------------------------------------------------------------- the mock model

/// The scripted completion of `request`.
fn ok(request: &Request) -> Reply {
    chat_completion(&completion(request), 50, 9)
}

fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The mock "model": a deterministic function of the prompt and the seed that sometimes
/// writes a good query, and sometimes a copy, chatter, or nothing, like a small model.
fn completion(request: &Request) -> String {
    let prompt = request.last_message();
    let seed = request.seed();
    if let Some(passage) = prompt.strip_prefix("Passage: ") {
        let w = words(passage);
        return match seed % 5 {
            0 | 3 => format!(
                "Query: \"does {} affect {} {}\"",
                w[0].to_lowercase(),
                w[w.len() / 2],
                w[w.len() - 1]
            ),
            1 => w[..12.min(w.len())].join(" "),
            2 => "Sure! Here is a query about the passage.".into(),
            _ => String::new(),
        };
    }
    if prompt.contains("Describe, in one sentence") {
        return format!("A study of a related population, variant {}.", seed % 3);
    }
    if let Some(rest) = prompt.strip_prefix("Search query: ") {
        let query = rest.lines().next().unwrap_or("");
        return format!(
            "Researchers examined {} in a different setting, variant {}. The cohort was small and the follow up was short, so the findings were inconclusive and did not address the question directly.",
            words(query).last().unwrap_or(&"x"),
            seed % 7
        );
    }
    "unexpected prompt".into()
}

// ---------------------------------------------------------------- helpers

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/generate")
}

fn foil_with(args: &[String], env: &[(&str, &str)]) -> Output {
    let out = foil_unchecked(args, env);
    assert!(
        out.status.success(),
        "foil {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn queries_args(mock: &MockServer, output: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "generate",
        "queries",
        "--data",
        fixture().to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--generator",
        "openai",
        "--base-url",
        &mock.url(),
        "--model",
        "mock-chat",
        "--api-key-env",
        "FOIL_GENERATE_TEST_KEY_NEVER_SET",
        "--per-passage",
        "2",
        "--seed",
        "7",
        "--timeout",
        "1",
        "--max-retries",
        "2",
        "--no-progress",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs foil without asserting its exit status.
fn foil_unchecked(args: &[String], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_foil"));
    cmd.args(args).env("FOIL_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Faults by passage title: each transient one once, two permanent ones.
fn faulty(request: &Request, seen: usize) -> Reply {
    let p = request.last_message();
    let once = |r: Reply| if seen == 0 { r } else { ok(request) };
    if p.contains("Zinc") {
        once(
            Reply::status(429, r#"{"error": {"message": "rate limited"}}"#)
                .header("Retry-After", "0"),
        )
    } else if p.contains("Sleep restriction") {
        once(Reply::status(500, "boom"))
    } else if p.contains("Coral") {
        once(Reply::stall(Duration::from_millis(1500)))
    } else if p.contains("Statins") {
        once(ok(request).truncated())
    } else if p.contains("Gut microbiota") {
        Reply::ok(r#"{"result": "no choices here"}"#)
    } else if p.contains("Malaria") {
        Reply::status(503, "down for good")
    } else {
        ok(request)
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn faults_end_as_outputs_or_recorded_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let mock = MockServer::start(faulty);
    let out = tmp.path().join("gen");
    // 4 of the 24 requests fail for good: the run keeps the rest and exits 3 (incomplete).
    let run = foil_unchecked(
        &queries_args(&mock, &out, &["--concurrency", "3", "--batch-size", "5"]),
        &[],
    );
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("4 of 24 requests failed"));
    let s = summary(&run);
    assert_eq!(s["requests"], 24);
    let queries = lines(&out.join("queries.jsonl"));
    let rejected = lines(&out.join("rejected.jsonl"));
    assert_eq!(s["queries"].as_u64().unwrap() as usize, queries.len());
    assert_eq!(
        queries.len() + rejected.len(),
        24,
        "every request is accounted for"
    );
    let m = manifest(&out);
    assert_eq!(m["counts"]["rejected.failed.bad_response"], 2, "{m:#}");
    assert_eq!(m["counts"]["rejected.failed.http_503"], 2, "{m:#}");
    assert_eq!(m["counts"]["requests"], 24);
    let counted: u64 = m["counts"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("rejected."))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted + m["counts"]["queries"].as_u64().unwrap(), 24);
    assert_eq!(m["config"]["template_name"], "few-shot");
    assert!(m["config"]["generator_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("openai-chat:"));
    assert_eq!(m["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
    for r in &rejected {
        assert!(r["reason"].is_string() && r["item"].is_string(), "{r}");
        if r["reason"] == "failed" {
            assert!(r["raw"].is_null());
            assert!(
                r["error"].as_str().unwrap().contains("gave up after"),
                "{r}"
            );
        } else {
            assert!(r["raw"].is_string(), "{r}");
        }
    }
    // The qrels map each kept query to its passage.
    let qrels = std::fs::read_to_string(out.join("qrels/train.tsv")).unwrap();
    assert_eq!(qrels.lines().count(), queries.len() + 1);
    for q in &queries {
        let line = format!(
            "{}\t{}\t1",
            q["_id"].as_str().unwrap(),
            q["metadata"]["passage_id"].as_str().unwrap()
        );
        assert!(qrels.contains(&line), "{line}");
    }
    // Failed requests are not cached: a rerun retries just those. Allowing 4 failures (or
    // 20% of 24) lets it exit 0; 10% does not.
    let rerun =
        |allow: &str| foil_unchecked(&queries_args(&mock, &out, &["--max-failed", allow]), &[]);
    let again = rerun("4");
    assert!(again.status.success());
    let again = summary(&again);
    assert_eq!(again["cache_hits"], 20);
    assert_eq!(again["failed"], 4);
    assert_eq!(rerun("10%").status.code(), Some(3));
    assert!(rerun("20%").status.success());
}

#[test]
fn a_killed_run_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let mock = MockServer::start(|r, _| ok(r).delayed(Duration::from_millis(120)));
    let extra = ["--concurrency", "1", "--batch-size", "1"];
    let full = tmp.path().join("full");
    let first = summary(&foil_with(&queries_args(&mock, &full, &extra), &[]));
    assert_eq!(first["generated"], 24);

    let killed = tmp.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(queries_args(&mock, &killed, &extra))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cache = killed.join("cache.jsonl");
    let start = Instant::now();
    loop {
        let n = std::fs::read_to_string(&cache)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 5 || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed.join("queries.jsonl").exists(),
        "killed before the end"
    );
    // A write cut short by the kill.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&cache)
        .unwrap();
    f.write_all(br#"{"key":"0123","template":"few-sh"#).unwrap();
    drop(f);

    let resumed = summary(&foil_with(&queries_args(&mock, &killed, &extra), &[]));
    let hits = resumed["cache_hits"].as_u64().unwrap();
    assert!((5..24).contains(&hits), "{resumed}");
    assert_eq!(resumed["generated"].as_u64().unwrap(), 24 - hits);
    assert_eq!(resumed["cache_dropped_partial_lines"], 1);
    for f in ["queries.jsonl", "qrels/train.tsv", "rejected.jsonl"] {
        assert_eq!(
            std::fs::read(full.join(f)).unwrap(),
            std::fs::read(killed.join(f)).unwrap(),
            "{f} differs"
        );
    }
    // Nothing duplicated in the cache: one line per request.
    let keys: Vec<String> = lines(&cache)
        .iter()
        .map(|l| l["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 24);
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 24);
    // A third run sends nothing.
    let before = mock.requests().len();
    let third = summary(&foil_with(&queries_args(&mock, &killed, &extra), &[]));
    assert_eq!(third["cache_hits"], 24);
    assert_eq!(mock.requests().len(), before);
}

#[test]
fn the_api_key_reaches_only_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = format!("sk-foil-gen-{}-5e2d7a", std::process::id());
    let echo = secret.clone();
    let mock = MockServer::start(move |request, seen| {
        let auth = request.header("authorization").unwrap_or("").to_string();
        let p = request.last_message();
        if p.contains("Zinc") && seen == 0 {
            Reply::status(500, format!("internal error for {auth}"))
        } else if p.contains("Coral") {
            Reply::status(
                401,
                format!(r#"{{"error": {{"message": "Incorrect API key provided: {echo}."}}}}"#),
            )
        } else if p.contains("Graphene") && seen == 0 {
            Reply::status(429, format!("slow down, {echo}")).header("Retry-After", "0")
        } else {
            ok(request)
        }
    });
    let out = tmp.path().join("gen");
    let mut args = queries_args(&mock, &out, &["-vv", "--max-failed", "2"]);
    let at = args.iter().position(|a| a == "--api-key-env").unwrap();
    args[at + 1] = "FOIL_GENERATE_TEST_KEY".into();
    let run = foil_with(
        &args,
        &[("FOIL_GENERATE_TEST_KEY", &secret), ("FOIL_LOG", "trace")],
    );
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(stderr.contains("request failed, retrying"), "{stderr}");
    assert!(stderr.contains("[redacted]"), "{stderr}");
    assert!(mock
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(format!("Bearer {secret}").as_str())));
    let m = manifest(&out);
    assert_eq!(m["counts"]["rejected.failed.http_401"], 2);
    let mut places = vec![
        ("stderr".to_string(), stderr),
        (
            "stdout".to_string(),
            String::from_utf8_lossy(&run.stdout).into_owned(),
        ),
    ];
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            places.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    assert!(places.len() >= 6, "{places:?}");
    for (place, text) in places {
        assert!(!text.contains(&secret), "the key is in {place}");
        assert!(!text.contains("5e2d7a"), "part of the key is in {place}");
    }
}

#[test]
fn negatives_are_written_in_mines_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let mock = MockServer::start(|r, _| ok(r));
    let queries = tmp.path().join("queries");
    foil_with(
        &queries_args(&mock, &queries, &["--round-trip", "none"]),
        &[],
    );
    let kept = lines(&queries.join("queries.jsonl")).len();
    assert!(kept >= 3, "only {kept} queries kept");
    for mode in ["query-only", "query-positive"] {
        let out = tmp.path().join(mode);
        let args: Vec<String> = [
            "generate",
            "negatives",
            "--data",
            queries.to_str().unwrap(),
            "--corpus",
            fixture().join("corpus.jsonl").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--mode",
            mode,
            "--per-query",
            "2",
            "--generator",
            "openai",
            "--base-url",
            &mock.url(),
            "--model",
            "mock-chat",
            "--api-key-env",
            "FOIL_GENERATE_TEST_KEY_NEVER_SET",
            "--format",
            "triplet,n-tuple,flagembedding,tevatron",
            "--no-progress",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let s = summary(&foil_with(&args, &[]));
        assert_eq!(s["items"].as_u64().unwrap() as usize, kept * 2, "{s}");
        let corpus = lines(&out.join("negatives-corpus.jsonl"));
        let rejected = lines(&out.join("rejected.jsonl"));
        assert_eq!(corpus.len() + rejected.len(), kept * 2, "{mode}: {s}");
        assert!(!corpus.is_empty(), "{mode}: {s}");
        for d in &corpus {
            assert!(d["_id"].as_str().unwrap().starts_with("gen-neg-"));
            assert!(d["text"].as_str().unwrap().split(' ').count() >= 20);
        }
        let native = lines(&out.join("negatives.jsonl"));
        assert_eq!(native.len(), kept, "one line per (query, positive)");
        assert!(native.iter().all(|l| l["method"] == "llm"));
        let ids: HashSet<&str> = corpus.iter().map(|d| d["_id"].as_str().unwrap()).collect();
        for l in &native {
            for n in l["negatives"].as_array().unwrap() {
                assert!(ids.contains(n["doc_id"].as_str().unwrap()));
            }
        }
        let triplet = lines(&out.join("triplet.jsonl"));
        assert_eq!(triplet.len(), corpus.len());
        assert!(triplet[0]["anchor"].is_string() && triplet[0]["negative"].is_string());
        let flag = lines(&out.join("flagembedding.jsonl"));
        assert_eq!(flag.len(), kept);
        assert!(out.join("n-tuple.jsonl").is_file() && out.join("tevatron.jsonl").is_file());
        let m = manifest(&out);
        assert_eq!(m["stage"], "generate-negatives");
        assert_eq!(m["config"]["template_name"], mode);
        // The same command again: all from the cache, same bytes.
        let before = std::fs::read(out.join("negatives-corpus.jsonl")).unwrap();
        let again = summary(&foil_with(&args, &[]));
        assert_eq!(again["generated"], 0);
        assert_eq!(
            std::fs::read(out.join("negatives-corpus.jsonl")).unwrap(),
            before
        );
    }
}

/// Waits until `path` holds at least `n` lines (or a minute passed).
fn wait_for_lines(path: &Path, n: usize) {
    let start = Instant::now();
    while std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < n
        && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn runs_sharing_one_cache_file_store_each_answer_once_even_when_one_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let mock = MockServer::start(|r, _| ok(r).delayed(Duration::from_millis(100)));
    let extra = ["--concurrency", "1", "--batch-size", "2"];
    let reference = tmp.path().join("reference");
    foil_with(&queries_args(&mock, &reference, &extra), &[]);

    let shared = tmp.path().join("shared/cache.jsonl");
    let with_cache = |out: &Path| {
        let mut args = queries_args(&mock, out, &extra);
        args.extend(["--cache".to_string(), shared.display().to_string()]);
        args
    };
    let spawn = |out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_foil"))
            .args(with_cache(out))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    // Three runs on one cache file; c is killed (SIGKILL) half-way.
    let mut run_a = spawn(&a);
    let mut run_b = spawn(&b);
    let mut run_c = spawn(&c);
    wait_for_lines(&shared, 6);
    run_c.kill().unwrap();
    run_c.wait().unwrap();

    // A second process writing a's folder is refused at once, naming it.
    let refused = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(with_cache(&a))
        .output()
        .unwrap();
    let a_done = run_a.wait().unwrap();
    let b_done = run_b.wait().unwrap();
    assert!(a_done.success() && b_done.success());
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&a.display().to_string()) && stderr.contains("another foil process"),
        "{stderr}"
    );

    // The killed run finishes from the shared cache.
    let resumed = summary(&foil_with(&with_cache(&c), &[]));
    assert_eq!(resumed["cache_hits"], 24, "{resumed}");
    for out in [&a, &b, &c] {
        for f in ["queries.jsonl", "qrels/train.tsv", "rejected.jsonl"] {
            assert_eq!(
                std::fs::read(reference.join(f)).unwrap(),
                std::fs::read(out.join(f)).unwrap(),
                "{f} of {} differs from a run alone",
                out.display()
            );
        }
    }
    // Each answer once: no line lost, none written twice.
    let keys: Vec<String> = lines(&shared)
        .iter()
        .map(|l| l["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 24, "{keys:?}");
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 24);
    let verify = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(["cache", "verify", "--generation"])
        .arg(&shared)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
