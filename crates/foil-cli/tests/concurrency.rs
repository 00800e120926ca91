//! Several foil processes on one embedding cache at once (all-MiniLM-L6-v2, installed by
//! scripts/fetch-models.sh): concurrent writers store each text once and every vector read
//! back is the one a cache-free run computes; a writer killed with SIGKILL beside another
//! leaves nothing wrong behind; a damaged chunk is named by `foil cache verify` and encoded
//! again by a search instead of being used. Skipped outside CI when the model is absent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{foil, minilm};

fn demo(dir: &Path) -> PathBuf {
    foil(&["demo", "--output", dir.to_str().unwrap()]);
    dir.join("data")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn encode_args(model: &Path, input: &Path, out: &Path, cache: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> = [
        "encode",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--threads",
        "1",
        "--batch-size",
        "8",
        "--chunk-size",
        "8",
        "--max-length",
        "128",
        "--no-progress",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match cache {
        Some(c) => args.extend(["--cache-dir".into(), c.display().to_string()]),
        None => args.push("--no-cache".into()),
    }
    args
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run(args: &[String]) -> Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    foil(&a)
}

/// The one store of a cache folder.
fn store(cache: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn header(store: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(store.join("header.json")).unwrap()).unwrap()
}

/// `foil cache verify --json` of `cache`: (exit code, report of its one store).
fn verify(cache: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(["cache", "verify", "--json", "--cache-dir"])
        .arg(cache)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (out.status.code().unwrap(), report[0].clone())
}

#[test]
fn four_processes_encoding_into_one_cache_store_each_text_once_and_right() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let corpus = demo(&tmp.path().join("demo")).join("corpus.jsonl");
    let cache = tmp.path().join("cache");

    let mut children: Vec<Child> = (0..4)
        .map(|i| {
            spawn(&encode_args(
                &model,
                &corpus,
                &tmp.path().join(format!("o{i}")),
                Some(&cache),
            ))
        })
        .collect();
    for child in children.iter_mut() {
        let out = child.wait().unwrap();
        assert!(out.success());
    }
    // Each text once.
    let store = store(&cache);
    assert_eq!(header(&store)["count"], 120);
    let (code, report) = verify(&cache);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["duplicate_rows"], 0);

    // A fifth run reads everything from the cache: the same bytes as a run without it.
    let cached = json(&run(&encode_args(
        &model,
        &corpus,
        &tmp.path().join("cached"),
        Some(&cache),
    )));
    assert_eq!(
        (cached["cache_hits"].as_u64(), cached["encoded"].as_u64()),
        (Some(120), Some(0))
    );
    run(&encode_args(
        &model,
        &corpus,
        &tmp.path().join("fresh"),
        None,
    ));
    for out in ["cached", "o0", "o1", "o2", "o3"] {
        assert_eq!(
            std::fs::read(tmp.path().join(out).join("vectors.f32")).unwrap(),
            std::fs::read(tmp.path().join("fresh/vectors.f32")).unwrap(),
            "{out}"
        );
    }

    // A second process writing the same output folder is refused at once.
    let mut owner = spawn(&encode_args(
        &model,
        &corpus,
        &tmp.path().join("busy"),
        None,
    ));
    let start = Instant::now();
    while !tmp.path().join("busy/header.json").exists() && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(encode_args(&model, &corpus, &tmp.path().join("busy"), None))
        .output()
        .unwrap();
    owner.kill().unwrap();
    owner.wait().unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("busy: another foil process (pid"), "{err}");
}

#[test]
fn a_writer_killed_beside_another_leaves_the_cache_right() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let corpus = demo(&tmp.path().join("demo")).join("corpus.jsonl");
    let cache = tmp.path().join("cache");

    let mut victim = spawn(&encode_args(
        &model,
        &corpus,
        &tmp.path().join("v"),
        Some(&cache),
    ));
    let mut survivor = spawn(&encode_args(
        &model,
        &corpus,
        &tmp.path().join("s"),
        Some(&cache),
    ));
    // Kill the first once the cache holds a few chunks: it may be encoding or committing.
    let start = Instant::now();
    loop {
        let count = std::fs::read_dir(&cache)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read(e.ok()?.path().join("header.json")).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|h| h["count"].as_u64())
            .unwrap_or(0);
        if count >= 24 || start.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    assert!(survivor.wait().unwrap().success());

    let (code, report) = verify(&cache);
    assert_eq!(code, 0, "{report}");
    assert_eq!(header(&store(&cache))["count"], 120);
    // The killed run resumes; every vector equals a cache-free run's.
    run(&encode_args(
        &model,
        &corpus,
        &tmp.path().join("v"),
        Some(&cache),
    ));
    run(&encode_args(
        &model,
        &corpus,
        &tmp.path().join("fresh"),
        None,
    ));
    for out in ["v", "s"] {
        assert_eq!(
            std::fs::read(tmp.path().join(out).join("vectors.f32")).unwrap(),
            std::fs::read(tmp.path().join("fresh/vectors.f32")).unwrap(),
            "{out}"
        );
    }
}

#[test]
fn a_damaged_chunk_is_named_by_verify_and_encoded_again_by_search() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = demo(&tmp.path().join("demo"));
    let cache = tmp.path().join("cache");
    let search = |out: &str, cache: Option<&Path>| -> Output {
        let mut args = vec![
            "search".to_string(),
            "--data".into(),
            data.display().to_string(),
            "--retriever".into(),
            "dense".into(),
            "--model".into(),
            model.display().to_string(),
            "--output".into(),
            tmp.path().join(out).display().to_string(),
            "--threads".into(),
            "1".into(),
            "--no-progress".into(),
        ];
        match cache {
            Some(c) => args.extend(["--cache-dir".into(), c.display().to_string()]),
            None => args.push("--no-cache".into()),
        }
        run(&args)
    };
    search("fresh.trec", None);
    search("first.trec", Some(&cache));

    // Flip the sign/exponent byte of a vector in the passages' store (the larger one).
    let mut stores: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    stores.sort_by_key(|s| std::cmp::Reverse(header(s)["count"].as_u64().unwrap()));
    let passages = &stores[0];
    let h = header(passages);
    assert_eq!(h["count"], 120);
    let vectors = passages.join("vectors.f32");
    let mut bytes = std::fs::read(&vectors).unwrap();
    bytes[3] ^= 0x40; // row 0, first value: chunk 0
    std::fs::write(&vectors, bytes).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(["cache", "verify", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let key = passages.file_name().unwrap().to_string_lossy().to_string();
    assert!(text.contains(&format!("{key}: PROBLEMS")), "{text}");
    assert!(
        text.contains("vectors.f32: chunk 0 (rows 0..120) is damaged"),
        "{text}"
    );

    // The search drops the damaged chunk, encodes its passages again, and ranks exactly as
    // a search without the cache.
    let again = search("again.trec", Some(&cache));
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(log.contains("is damaged"), "{log}");
    assert_eq!(
        std::fs::read(tmp.path().join("again.trec")).unwrap(),
        std::fs::read(tmp.path().join("fresh.trec")).unwrap()
    );
    // gc drops the damaged chunk and keeps the re-encoded rows.
    foil(&["cache", "gc", "--cache-dir", cache.to_str().unwrap()]);
    let out = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(["cache", "verify", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(header(passages)["count"], 120);
}
