//! `foil mine` end to end with BM25 on the demo dataset (no model needed): no negative is a
//! positive or shares a positive's text, no duplicates, kept + skipped = pairs, every format's
//! columns, and byte-identical output for the same seed.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

fn foil(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "foil {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn mine(data: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "mine",
        "--data",
        data.to_str().unwrap(),
        "--split",
        "train",
        "--retriever",
        "bm25",
        "--num-negatives",
        "3",
        "--range-max",
        "20",
        "--relative-margin",
        "0.05",
        "--format",
        "triplet,n-tuple,n-tuple-scores,labeled-pair,labeled-list,flagembedding,tevatron",
        "--output",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    foil(&args);
}

#[test]
fn mined_negatives_are_valid_counted_and_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    foil(&["demo", "--output", tmp.path().to_str().unwrap()]);
    let data = tmp.path().join("data");
    let out = tmp.path().join("mined");
    mine(&data, &out, &[]);

    let corpus: std::collections::HashMap<String, String> = lines(&data.join("corpus.jsonl"))
        .into_iter()
        .map(|d| {
            (
                d["_id"].as_str().unwrap().to_string(),
                format!(
                    "{} {}",
                    d["title"].as_str().unwrap(),
                    d["text"].as_str().unwrap()
                ),
            )
        })
        .collect();
    let qrels = std::fs::read_to_string(data.join("qrels/train.tsv")).unwrap();
    let mut positives: std::collections::HashMap<String, HashSet<String>> = Default::default();
    let mut pairs = 0;
    for line in qrels.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f[2].parse::<i32>().unwrap() >= 1 {
            positives
                .entry(f[0].into())
                .or_default()
                .insert(f[1].into());
            pairs += 1;
        }
    }
    let native = lines(&out.join("negatives.jsonl"));
    assert_eq!(
        native.len(),
        pairs,
        "one provenance row per (query, positive)"
    );
    for row in &native {
        let q = row["query_id"].as_str().unwrap();
        let pos = &positives[q];
        let pos_texts: HashSet<&str> = pos.iter().map(|p| corpus[p].as_str()).collect();
        let mut seen = HashSet::new();
        let ps = row["positive_score"].as_f64().unwrap();
        for n in row["negatives"].as_array().unwrap() {
            let id = n["doc_id"].as_str().unwrap();
            assert!(!pos.contains(id), "{q}: negative {id} is a positive");
            assert!(
                !pos_texts.contains(corpus[id].as_str()),
                "{q}: negative {id} has a positive's text"
            );
            assert!(seen.insert(id), "{q}: duplicate negative {id}");
            let s = n["score"].as_f64().unwrap();
            assert!(
                s <= ps - ps.abs() * 0.05 + 1e-6,
                "{q}: relative margin violated"
            );
            assert!(n["rank"].as_u64().is_some());
        }
        assert_eq!(row["method"], "bm25");
    }

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let counts = manifest["counts"].as_object().unwrap();
    let skipped: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("skipped_pairs."))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        counts["kept_pairs"].as_u64().unwrap() + skipped,
        pairs as u64,
        "kept + skipped = pairs"
    );
    assert_eq!(counts["pairs"].as_u64().unwrap(), pairs as u64);

    let ntuple = lines(&out.join("n-tuple.jsonl"));
    assert_eq!(ntuple.len() as u64, counts["kept_pairs"].as_u64().unwrap());
    let keys: Vec<&String> = ntuple[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "anchor",
            "positive",
            "negative_1",
            "negative_2",
            "negative_3"
        ]
    );
    assert_eq!(
        lines(&out.join("n-tuple-scores.jsonl"))[0]["scores"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let t = &lines(&out.join("triplet.jsonl"))[0];
    assert!(t["anchor"].is_string() && t["positive"].is_string() && t["negative"].is_string());
    let lp = lines(&out.join("labeled-pair.jsonl"));
    assert!(lp.iter().any(|r| r["label"] == 1) && lp.iter().any(|r| r["label"] == 0));
    let ll = &lines(&out.join("labeled-list.jsonl"))[0];
    assert_eq!(ll["labels"][0], 1);
    assert_eq!(
        ll["positive"].as_array().unwrap().len(),
        ll["labels"].as_array().unwrap().len()
    );
    let fe = &lines(&out.join("flagembedding.jsonl"))[0];
    assert!(fe["query"].is_string() && fe["pos"].is_array() && fe["neg"].is_array());
    let tv = &lines(&out.join("tevatron.jsonl"))[0];
    assert!(tv["positive_passages"][0]["docid"].is_string() && tv["negative_passages"].is_array());

    // Same inputs and seed: byte-identical; random sampling too; another seed differs.
    let again = tmp.path().join("again");
    mine(&data, &again, &[]);
    for f in [
        "negatives.jsonl",
        "n-tuple.jsonl",
        "triplet.jsonl",
        "tevatron.jsonl",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }
    let (r1, r2, r3) = (
        tmp.path().join("r1"),
        tmp.path().join("r2"),
        tmp.path().join("r3"),
    );
    mine(&data, &r1, &["--sampling", "random", "--seed", "5"]);
    mine(&data, &r2, &["--sampling", "random", "--seed", "5"]);
    mine(&data, &r3, &["--sampling", "random", "--seed", "6"]);
    let read = |d: &Path| std::fs::read(d.join("negatives.jsonl")).unwrap();
    assert_eq!(read(&r1), read(&r2));
    assert_ne!(read(&r1), read(&r3));
}

/// Pairs given as a sentence-transformers-style table (JSON Lines written here, Parquet
/// written by pyarrow) mine exactly what the same pairs from qrels mine; `--parquet` writes
/// every sentence-transformers format as Parquet with the JSON Lines' rows.
#[test]
fn pairs_from_tables_mine_like_qrels_and_parquet_output_matches_jsonl() {
    let tmp = tempfile::tempdir().unwrap();
    foil(&["demo", "--output", tmp.path().to_str().unwrap()]);
    let data = tmp.path().join("data");
    let from_qrels = tmp.path().join("from-qrels");
    mine(&data, &from_qrels, &["--parquet"]);

    // The same pairs as a JSON Lines table, in foil's pair order (query id, document id).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/mine/demo_train_pairs.parquet");
    let pairs = foil::table::read_rows(&fixture).unwrap();
    assert_eq!(pairs.len(), 37);
    let jsonl = tmp.path().join("pairs.jsonl");
    let rows: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(_, row)| serde_json::Value::Object(row.clone()))
        .collect();
    foil::table::write_jsonl(&jsonl, &rows).unwrap();

    for (name, pairs) in [("jsonl", &jsonl), ("parquet", &fixture)] {
        let out = tmp.path().join(format!("from-{name}"));
        mine(&data, &out, &["--pairs", pairs.to_str().unwrap()]);
        for format in ["n-tuple", "triplet", "labeled-list", "flagembedding"] {
            assert_eq!(
                std::fs::read(out.join(format!("{format}.jsonl"))).unwrap(),
                std::fs::read(from_qrels.join(format!("{format}.jsonl"))).unwrap(),
                "{format} from the {name} table differs from the qrels' rows"
            );
        }
    }

    for format in [
        "triplet",
        "n-tuple",
        "n-tuple-scores",
        "labeled-pair",
        "labeled-list",
        "flagembedding",
        "tevatron",
    ] {
        let parquet: Vec<serde_json::Value> =
            foil::table::read_rows(&from_qrels.join(format!("{format}.parquet")))
                .unwrap()
                .into_iter()
                .map(|(_, row)| serde_json::Value::Object(row))
                .collect();
        let jsonl = lines(&from_qrels.join(format!("{format}.jsonl")));
        assert_eq!(parquet.len(), jsonl.len(), "{format}");
        for (p, j) in parquet.iter().zip(&jsonl) {
            for (key, value) in j.as_object().unwrap() {
                match (value, &p[key]) {
                    // Scores are f32 in JSON and f64 in Parquet.
                    (serde_json::Value::Array(a), serde_json::Value::Array(b))
                        if a.first().is_some_and(|v| v.is_f64()) =>
                    {
                        for (x, y) in a.iter().zip(b) {
                            assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-6);
                        }
                    }
                    (a, b) => assert_eq!(a, b, "{format}: column {key}"),
                }
            }
        }
    }
}

/// A table row without the columns is an error naming the file and line.
#[test]
fn a_pairs_table_without_anchor_is_an_error_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    foil(&["demo", "--output", tmp.path().to_str().unwrap()]);
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"anchor\": \"a\", \"positive\": \"b\"}\n{\"query\": \"a\", \"positive\": \"b\"}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args([
            "mine",
            "--data",
            tmp.path().join("data").to_str().unwrap(),
            "--pairs",
            pairs.to_str().unwrap(),
            "--retriever",
            "bm25",
            "--output",
            tmp.path().join("o").to_str().unwrap(),
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pairs.jsonl:2:"), "{err}");
    assert!(err.contains("anchor"), "{err}");
}
