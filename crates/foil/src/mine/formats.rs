//! The training-data formats `foil mine` writes, one JSON object per line:
//! sentence-transformers' `triplet`, `n-tuple`, `n-tuple-scores`, `labeled-pair` and
//! `labeled-list` (its column names), FlagEmbedding's `{query, pos, neg}` and Tevatron's
//! `{query_id, query, positive_passages, negative_passages}`.

use serde::Serialize;
use serde_json::{json, Map, Value};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Triplet,
    NTuple,
    NTupleScores,
    LabeledPair,
    LabeledList,
    Flagembedding,
    Tevatron,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::Triplet,
        Format::NTuple,
        Format::NTupleScores,
        Format::LabeledPair,
        Format::LabeledList,
        Format::Flagembedding,
        Format::Tevatron,
    ];

    /// sentence-transformers' own formats, which are also written as Parquet on request.
    pub fn is_sentence_transformers(self) -> bool {
        !matches!(self, Format::Flagembedding | Format::Tevatron)
    }

    /// The format's name, also its file name stem.
    pub fn name(self) -> &'static str {
        match self {
            Format::Triplet => "triplet",
            Format::NTuple => "n-tuple",
            Format::NTupleScores => "n-tuple-scores",
            Format::LabeledPair => "labeled-pair",
            Format::LabeledList => "labeled-list",
            Format::Flagembedding => "flagembedding",
            Format::Tevatron => "tevatron",
        }
    }
}

/// A passage as the formats see it.
#[derive(Debug, Clone)]
pub struct Passage<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub text: &'a str,
    /// `title + " " + text`, what the model saw.
    pub full: &'a str,
    pub score: f32,
}

/// One query's mining result: its positives and its negatives (best first).
pub struct QueryResult<'a> {
    pub query_id: &'a str,
    pub query: &'a str,
    pub positives: Vec<Passage<'a>>,
    pub negatives: Vec<Passage<'a>>,
}

/// The JSON lines of `format` for one query; `num_negatives` is N of the n-tuple formats (rows
/// with fewer negatives are not written: the caller counts them).
pub fn rows(format: Format, r: &QueryResult, num_negatives: usize) -> Vec<Value> {
    let mut out = Vec::new();
    match format {
        Format::Triplet => {
            for p in &r.positives {
                for n in &r.negatives {
                    out.push(json!({"anchor": r.query, "positive": p.full, "negative": n.full}));
                }
            }
        }
        Format::NTuple | Format::NTupleScores => {
            if r.negatives.len() < num_negatives {
                return out;
            }
            for p in &r.positives {
                let mut row = Map::new();
                row.insert("anchor".into(), json!(r.query));
                row.insert("positive".into(), json!(p.full));
                for (i, n) in r.negatives.iter().take(num_negatives).enumerate() {
                    row.insert(format!("negative_{}", i + 1), json!(n.full));
                }
                if format == Format::NTupleScores {
                    let scores: Vec<f32> = std::iter::once(p.score)
                        .chain(r.negatives.iter().take(num_negatives).map(|n| n.score))
                        .collect();
                    row.insert("scores".into(), json!(scores));
                }
                out.push(Value::Object(row));
            }
        }
        Format::LabeledPair => {
            for p in &r.positives {
                out.push(json!({"anchor": r.query, "positive": p.full, "label": 1}));
            }
            for n in &r.negatives {
                out.push(json!({"anchor": r.query, "positive": n.full, "label": 0}));
            }
        }
        Format::LabeledList => {
            if r.negatives.is_empty() {
                return out;
            }
            for p in &r.positives {
                let texts: Vec<&str> = std::iter::once(p.full)
                    .chain(r.negatives.iter().map(|n| n.full))
                    .collect();
                let labels: Vec<u8> = std::iter::once(1)
                    .chain(r.negatives.iter().map(|_| 0))
                    .collect();
                out.push(json!({"anchor": r.query, "positive": texts, "labels": labels}));
            }
        }
        Format::Flagembedding => {
            let pos: Vec<&str> = r.positives.iter().map(|p| p.full).collect();
            let neg: Vec<&str> = r.negatives.iter().map(|n| n.full).collect();
            out.push(json!({"query": r.query, "pos": pos, "neg": neg}));
        }
        Format::Tevatron => {
            let passage = |p: &Passage| json!({"docid": p.id, "title": p.title, "text": p.text});
            out.push(json!({
                "query_id": r.query_id,
                "query": r.query,
                "positive_passages": r.positives.iter().map(passage).collect::<Vec<_>>(),
                "negative_passages": r.negatives.iter().map(passage).collect::<Vec<_>>(),
            }));
        }
    }
    out
}
