//! The BM25 index against a direct computation of Lucene's formula, and the index file format.

use std::collections::HashMap;

use foil_bm25::norms::{decode_length, encode_length};
use foil_bm25::{Analyzer, Bm25Index, Bm25Params, Bm25Searcher};
use foil_core::{Document, Error};

fn corpus() -> Vec<Document> {
    let texts = [
        ("a", "Vitamin D", "Vitamin D deficiency is linked to fractures; vitamin supplements help."),
        ("b", "", "Fractures of the hip are common in older adults with low bone density."),
        ("c", "Sleep", "Short sleep raises the risk of obesity. Sleep sleep sleep."),
        ("d", "Coffee", "Coffee and tea contain caffeine, which delays sleep."),
        ("e", "Exercise", "Exercise improves bone density and memory in older adults and children alike, and it is cheap."),
        ("f", "", "Nothing relevant here at all."),
    ];
    texts
        .iter()
        .map(|(id, title, text)| Document {
            id: id.to_string(),
            title: title.to_string(),
            text: text.to_string(),
        })
        .collect()
}

fn build(docs: &[Document]) -> Bm25Index {
    Bm25Index::build(Analyzer::english(), docs.iter().cloned().map(Ok), &|_| {}).unwrap()
}

/// Lucene's BM25 computed naively in f64 from the analyzed texts.
fn reference_scores(docs: &[Document], query: &str, params: Bm25Params) -> Vec<(String, f64)> {
    let analyzer = Analyzer::english();
    let tokens: Vec<Vec<String>> = docs
        .iter()
        .map(|d| analyzer.tokens(&d.full_text()))
        .collect();
    let n = docs.len() as f64;
    let avgdl = tokens.iter().map(Vec::len).sum::<usize>() as f64 / n;
    let mut scores = Vec::new();
    for (doc, toks) in docs.iter().zip(&tokens) {
        let dl = decode_length(encode_length(toks.len() as u32)) as f64;
        let mut score = 0.0;
        for term in analyzer.tokens(query) {
            let df = tokens.iter().filter(|t| t.contains(&term)).count() as f64;
            let tf = toks.iter().filter(|t| **t == term).count() as f64;
            if tf == 0.0 {
                continue;
            }
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            let k1 = params.k1 as f64;
            let b = params.b as f64;
            score += idf * tf / (tf + k1 * (1.0 - b + b * dl / avgdl));
        }
        if score > 0.0 {
            scores.push((doc.id.clone(), score));
        }
    }
    scores.sort_by(|x, y| y.1.partial_cmp(&x.1).unwrap().then(y.0.cmp(&x.0)));
    scores
}

#[test]
fn scores_equal_lucenes_formula() {
    let docs = corpus();
    for params in [Bm25Params::default(), Bm25Params { k1: 1.2, b: 0.75 }] {
        let searcher = Bm25Searcher::new(build(&docs), params);
        for query in [
            "vitamin fractures",
            "older adults bone density",
            "sleep sleep coffee",
            "the of and",
        ] {
            let hits = searcher.search(query, 10);
            let expected = reference_scores(&docs, query, params);
            let got: Vec<(String, f64)> = hits
                .iter()
                .map(|h| (searcher.index().doc_id(h.doc).to_string(), h.score as f64))
                .collect();
            assert_eq!(
                got.len(),
                expected.len(),
                "{query}: {got:?} vs {expected:?}"
            );
            for ((gid, gs), (eid, es)) in got.iter().zip(&expected) {
                assert_eq!(gid, eid, "{query}: {got:?} vs {expected:?}");
                assert!(
                    (gs - es).abs() < 1e-5 * es.max(1.0),
                    "{query} {gid}: {gs} vs {es}"
                );
            }
        }
    }
}

#[test]
fn top_k_cuts_and_ties_go_to_the_larger_id() {
    let docs: Vec<Document> = ["x1", "x3", "x2"]
        .iter()
        .map(|id| Document {
            id: id.to_string(),
            title: String::new(),
            text: "identical text".into(),
        })
        .collect();
    let searcher = Bm25Searcher::new(build(&docs), Bm25Params::default());
    let ids: Vec<&str> = searcher
        .search("identical", 2)
        .iter()
        .map(|h| searcher.index().doc_id(h.doc))
        .collect();
    assert_eq!(ids, ["x3", "x2"]);
    assert!(searcher.search("absent", 5).is_empty());
}

#[test]
fn batch_search_equals_single_search_in_query_order() {
    let docs = corpus();
    let searcher = Bm25Searcher::new(build(&docs), Bm25Params::default());
    let queries = ["vitamin", "sleep coffee", "bone", "nothing"];
    let batch = searcher.search_many(&queries, 3, &|_| {});
    for (q, hits) in queries.iter().zip(&batch) {
        assert_eq!(hits, &searcher.search(q, 3));
    }
}

#[test]
fn index_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bm25.idx");
    let index = build(&corpus());
    index
        .save(&path, serde_json::json!({"sha256": "abc"}))
        .unwrap();
    let (loaded, header) = Bm25Index::load(&path).unwrap();
    assert_eq!(loaded, index);
    assert_eq!(header.source["sha256"], "abc");
    assert_eq!(header.num_docs, 6);
    // Saving twice gives the same bytes.
    let first = std::fs::read(&path).unwrap();
    build(&corpus())
        .save(&path, serde_json::json!({"sha256": "abc"}))
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), first);
}

#[test]
fn damaged_or_foreign_index_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bm25.idx");
    build(&corpus()).save(&path, serde_json::json!({})).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = Bm25Index::load(&path).unwrap_err();
    assert!(
        matches!(err, Error::Format { .. }) && err.to_string().contains("truncated"),
        "{err}"
    );

    // One flipped bit anywhere is caught by the checksum, and the error names the file.
    for at in [20, bytes.len() / 2, bytes.len() - 9] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x01;
        std::fs::write(&path, &flipped).unwrap();
        let err = Bm25Index::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("bm25.idx")
                && (err.contains("damaged") || err.contains("bad index header")),
            "byte {at}: {err}"
        );
    }

    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&path, &newer).unwrap();
    let err = Bm25Index::load(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("format version 99, this foil reads version 2"),
        "{err}"
    );

    std::fs::write(&path, b"something else entirely").unwrap();
    assert!(Bm25Index::load(&path)
        .unwrap_err()
        .to_string()
        .contains("not a foil BM25 index"));
}

#[test]
fn postings_hold_term_frequencies() {
    let index = build(&corpus());
    let (docs, freqs) = index.postings("sleep").unwrap();
    let by_doc: HashMap<&str, u32> = docs
        .iter()
        .zip(freqs)
        .map(|(&d, &f)| (index.doc_id(d), f))
        .collect();
    assert_eq!(by_doc["c"], 5); // title "Sleep" + 4 in the text
    assert_eq!(by_doc["d"], 1);
    assert!(
        index.postings("the").is_none(),
        "stop words are not indexed"
    );
}
