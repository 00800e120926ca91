//! `foil encode` and dense `foil search` with all-MiniLM-L6-v2 (installed by
//! scripts/fetch-models.sh): resuming after SIGKILL, the embedding cache's key, byte-identical
//! reruns. Skipped outside CI when the model is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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

/// `foil encode --json` of `input` into `out` with the embedding cache in `cache`, plus `extra`.
fn encode_cached(model: &Path, input: &Path, out: &Path, cache: &Path, extra: &[&str]) -> Output {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let mut args = vec!["encode".to_string(), "--model".into(), path(model)];
    args.extend(["--input".into(), path(input), "--output".into(), path(out)]);
    args.extend(["--cache-dir".into(), path(cache), "--json".into()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    foil(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_killed_encode_resumes_to_the_same_bytes() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let corpus = demo(tmp.path()).join("corpus.jsonl");
    let model = model.to_str().unwrap();
    let corpus = corpus.to_str().unwrap();
    let full = tmp.path().join("full");
    let args = |out: &Path| {
        vec![
            "encode".to_string(),
            "--model".into(),
            model.into(),
            "--input".into(),
            corpus.into(),
            "--output".into(),
            out.to_str().unwrap().into(),
            "--no-cache".into(),
            "--chunk-size".into(),
            "8".into(),
            "--threads".into(),
            "1".into(),
            "--json".into(),
        ]
    };
    let a: Vec<String> = args(&full);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_eq!(json(&foil(&a))["texts"], 120);

    // Start again elsewhere and kill it with SIGKILL once at least one chunk is committed.
    let killed = tmp.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(args(&killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let count = std::fs::read(killed.join("header.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|h| h["count"].as_u64())
            .unwrap_or(0);
        if count >= 8 || start.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let a: Vec<String> = args(&killed);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let resumed = json(&foil(&a));
    let done = resumed["resumed"].as_u64().unwrap();
    assert!((8..120).contains(&done), "resumed {done} rows");
    assert_eq!(resumed["encoded"].as_u64().unwrap(), 120 - done);
    for f in ["ids.jsonl", "vectors.f32", "header.json"] {
        assert_eq!(
            std::fs::read(full.join(f)).unwrap(),
            std::fs::read(killed.join(f)).unwrap(),
            "{f} differs"
        );
    }
}

#[test]
fn the_cache_is_keyed_by_prompt_and_kind() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let queries = demo(tmp.path()).join("queries.jsonl");
    let cache = tmp.path().join("cache");
    let run = |prompt: &str, kind: &str, out: &str| {
        let extra = ["--kind", kind, "--query-prompt", prompt];
        json(&encode_cached(
            &model,
            &queries,
            &tmp.path().join(out),
            &cache,
            &extra,
        ))
    };
    let first = run("query: ", "query", "a");
    assert_eq!(
        (first["cache_hits"].as_u64(), first["encoded"].as_u64()),
        (Some(0), Some(60))
    );
    let again = run("query: ", "query", "b");
    assert_eq!(
        (again["cache_hits"].as_u64(), again["encoded"].as_u64()),
        (Some(60), Some(0))
    );
    assert_eq!(
        std::fs::read(tmp.path().join("a/vectors.f32")).unwrap(),
        std::fs::read(tmp.path().join("b/vectors.f32")).unwrap()
    );
    let other_prompt = run("question: ", "query", "c");
    assert_eq!(
        other_prompt["cache_hits"], 0,
        "another prompt must not hit the cache"
    );
    let as_passages = run("query: ", "passage", "d");
    assert_eq!(
        as_passages["cache_hits"], 0,
        "passages must not hit the queries' cache"
    );
}

#[test]
fn bf16_vectors_are_cached_apart_from_float32_ones() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let queries = demo(tmp.path()).join("queries.jsonl");
    let cache = tmp.path().join("cache");
    let run = |precision: &str, out: &str| {
        let out = tmp.path().join(out);
        encode_cached(&model, &queries, &out, &cache, &["--precision", precision])
    };
    let vectors = |out: &str| std::fs::read(tmp.path().join(out).join("vectors.f32")).unwrap();
    assert_eq!(json(&run("f32", "f32"))["encoded"], 60);
    let bf16 = run("bf16", "bf16");
    if !foil_candle::fast::bf16_available() {
        // No AMX or AVX-512 BF16: float32 runs, says so, and is the float32 cache's business.
        let stderr = String::from_utf8_lossy(&bf16.stderr);
        assert!(stderr.contains("bf16 needs"), "{stderr}");
        assert_eq!(json(&bf16)["cache_hits"], 60);
        return;
    }
    assert_eq!(
        json(&bf16)["encoded"],
        60,
        "bf16 must not read float32 vectors"
    );
    assert_ne!(vectors("f32"), vectors("bf16"));
    // A second bf16 run reads the bf16 entries: the same bytes.
    assert_eq!(json(&run("bf16", "again"))["cache_hits"], 60);
    assert_eq!(vectors("bf16"), vectors("again"));
    let floats = |bytes: Vec<u8>| -> Vec<f32> {
        let words = bytes.chunks_exact(4);
        words
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let (a, b) = (floats(vectors("f32")), floats(vectors("bf16")));
    for (x, y) in a.chunks_exact(384).zip(b.chunks_exact(384)) {
        let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        let norm = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt();
        assert!(dot / (norm(x) * norm(y)) > 0.999);
    }
}

#[test]
fn dense_search_on_the_demo_beats_chance_and_reruns_identically() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = demo(tmp.path());
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
    let run1 = tmp.path().join("dense1.trec");
    let run2 = tmp.path().join("dense2.trec");
    foil(&[
        "search",
        "--data",
        d,
        "--retriever",
        "dense",
        "--model",
        m,
        "--no-cache",
        "--output",
        run1.to_str().unwrap(),
    ]);
    // Precomputed vectors give the same run.
    let emb = tmp.path().join("emb");
    foil(&[
        "encode",
        "--model",
        m,
        "--input",
        data.join("corpus.jsonl").to_str().unwrap(),
        "--output",
        emb.to_str().unwrap(),
        "--no-cache",
    ]);
    foil(&[
        "search",
        "--data",
        d,
        "--retriever",
        "dense",
        "--model",
        m,
        "--corpus-embeddings",
        emb.to_str().unwrap(),
        "--no-cache",
        "--output",
        run2.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&run1).unwrap(), std::fs::read(&run2).unwrap());
    let eval = json(&foil(&[
        "eval",
        "--qrels",
        data.join("qrels/test.tsv").to_str().unwrap(),
        "--run",
        run1.to_str().unwrap(),
        "--json",
    ]));
    let ndcg = eval["ndcg@10"].as_f64().unwrap();
    assert!(ndcg > 0.6, "MiniLM on the demo test split: nDCG@10 {ndcg}");
}

/// A TREC run as query → [(doc, score)] in file order.
fn read_run(path: &Path) -> std::collections::BTreeMap<String, Vec<(String, f64)>> {
    let mut run: std::collections::BTreeMap<String, Vec<(String, f64)>> = Default::default();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        run.entry(f[0].to_string())
            .or_default()
            .push((f[2].to_string(), f[4].parse().unwrap()));
    }
    run
}

/// Runs `foil search` on split `split` of `data` with `retriever` (and `model`), keeping
/// `top_k` per query, into `dir`; returns the run.
fn search_run(
    dir: &Path,
    data: &str,
    model: &str,
    split: &str,
    retriever: &str,
    top_k: usize,
) -> std::collections::BTreeMap<String, Vec<(String, f64)>> {
    let out = dir.join(format!("{split}-{retriever}.trec"));
    foil(&[
        "search",
        "--data",
        data,
        "--split",
        split,
        "--retriever",
        retriever,
        "--model",
        model,
        "--top-k",
        &top_k.to_string(),
        "--no-cache",
        "--output",
        out.to_str().unwrap(),
    ]);
    read_run(&out)
}

/// The reciprocal-rank-fusion score (k = 60) of `doc` over ranked lists: the sum of
/// 1 / (60 + rank) over the lists it is in (ranks from 1).
fn rrf_score(lists: &[&Vec<(String, f64)>], doc: &str) -> f64 {
    lists
        .iter()
        .filter_map(|list| list.iter().position(|(id, _)| id == doc))
        .map(|rank| 1.0 / (60.0 + rank as f64 + 1.0))
        .sum()
}

/// `--retriever hybrid` is reciprocal rank fusion (k = 60) of the BM25 and the dense run: each
/// document's score is the sum of 1 / (60 + rank) over the lists it is in, and the run keeps
/// the best `--top-k`.
#[test]
fn hybrid_search_fuses_the_bm25_and_dense_runs_by_reciprocal_rank() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = demo(tmp.path());
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
    let search = |retriever| search_run(tmp.path(), d, m, "test", retriever, 10);
    let (bm25, dense, hybrid) = (search("bm25"), search("dense"), search("hybrid"));
    assert_eq!(hybrid.len(), dense.len());
    for (query, fused_run) in &hybrid {
        let lists = [&bm25[query], &dense[query]];
        let expected: std::collections::HashMap<&str, f64> = lists
            .iter()
            .flat_map(|list| list.iter())
            .map(|(doc, _)| (doc.as_str(), rrf_score(&lists, doc)))
            .collect();
        assert_eq!(fused_run.len(), 10.min(expected.len()), "query {query}");
        for pair in fused_run.windows(2) {
            assert!(pair[0].1 >= pair[1].1, "query {query}: not best first");
        }
        for (doc, score) in fused_run {
            assert!(
                (score - expected[doc.as_str()]).abs() < 1e-6,
                "query {query} doc {doc}"
            );
        }
        // Nothing left out scores above the last document kept.
        let last = fused_run.last().unwrap().1;
        let kept: std::collections::HashSet<&str> =
            fused_run.iter().map(|(doc, _)| doc.as_str()).collect();
        for (doc, score) in &expected {
            assert!(
                kept.contains(doc) || *score <= last + 1e-9,
                "query {query}: {doc} left out"
            );
        }
    }
}

/// `foil mine --retriever hybrid` scores each candidate by reciprocal rank fusion of the BM25
/// and dense rankings (the same rankings `foil search` gives for the split's queries, at the
/// depth mining retrieves: range_max + positives + 16).
#[test]
fn hybrid_mining_scores_candidates_by_reciprocal_rank() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = demo(tmp.path());
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
    let depth = 10 + 1 + 16; // one positive per demo query
    let search = |retriever| search_run(tmp.path(), d, m, "train", retriever, depth);
    let (bm25, dense) = (search("bm25"), search("dense"));
    let mined = tmp.path().join("mined");
    foil(&[
        "mine",
        "--data",
        d,
        "--split",
        "train",
        "--retriever",
        "hybrid",
        "--model",
        m,
        "--range-max",
        "10",
        "--num-negatives",
        "3",
        "--no-cache",
        "--output",
        mined.to_str().unwrap(),
    ]);
    let mut checked = 0;
    for line in std::fs::read_to_string(mined.join("negatives.jsonl"))
        .unwrap()
        .lines()
    {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let query = row["query_id"].as_str().unwrap();
        for negative in row["negatives"].as_array().unwrap() {
            let doc = negative["doc_id"].as_str().unwrap();
            let expected = rrf_score(&[&bm25[query], &dense[query]], doc);
            let score = negative["score"].as_f64().unwrap();
            assert!(
                (score - expected).abs() < 1e-6,
                "query {query} doc {doc}: {score} vs {expected}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} negatives checked");
}

/// `foil mine` with precomputed corpus and query vectors gives exactly the output of mining
/// with the model, and refuses vectors made for the other kind of text.
#[test]
fn mining_from_precomputed_vectors_equals_encoding() {
    let Some(model) = minilm() else { return };
    let model = model.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = demo(tmp.path());
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    for (input, kind, out) in [
        ("corpus.jsonl", "passage", "corpus-vectors"),
        ("queries.jsonl", "query", "query-vectors"),
    ] {
        foil(&[
            "encode",
            "--model",
            model,
            "--input",
            data.join(input).to_str().unwrap(),
            "--kind",
            kind,
            "--output",
            &path(out),
            "--no-cache",
            "--no-progress",
        ]);
    }
    let mine = |out: &str, extra: &[&str]| -> Output {
        let mut args = vec![
            "mine",
            "--data",
            data.to_str().unwrap(),
            "--model",
            model,
            "--retriever",
            "dense",
            "--num-negatives",
            "3",
            "--format",
            "n-tuple-scores",
            "--output",
            out,
            "--no-cache",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_foil"))
            .args(&args)
            .output()
            .unwrap()
    };
    let encoded = mine(&path("encoded"), &[]);
    assert!(encoded.status.success());
    let (corpus, queries) = (path("corpus-vectors"), path("query-vectors"));
    let loaded = mine(
        &path("loaded"),
        &[
            "--corpus-embeddings",
            &corpus,
            "--query-embeddings",
            &queries,
        ],
    );
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    for file in ["negatives.jsonl", "n-tuple-scores.jsonl"] {
        assert_eq!(
            std::fs::read(tmp.path().join("encoded").join(file)).unwrap(),
            std::fs::read(tmp.path().join("loaded").join(file)).unwrap(),
            "{file}"
        );
    }
    let swapped = mine(&path("swapped"), &["--corpus-embeddings", &queries]);
    assert!(!swapped.status.success());
    let err = String::from_utf8_lossy(&swapped.stderr);
    assert!(err.contains("query-vectors"), "{err}");
    assert!(err.contains("another kind of text (queries by "), "{err}");
}
