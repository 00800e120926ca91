//! Training-data formats: one place that names, detects, reads and writes them all, as JSON
//! Lines or Parquet ([`crate::table`]).
//!
//! - foil's own `negatives.jsonl` ([`Format::Negatives`]): ids and scores with their
//!   provenance, texts left in the BEIR folder. The stages that mine or generate negatives
//!   always write it (see [`negatives_record`]).
//! - sentence-transformers' `triplet`, `n-tuple`, `n-tuple-scores`, `labeled-pair` and
//!   `labeled-list` (its column names), FlagEmbedding's `{query, pos, neg}` and Tevatron's
//!   `{query_id, query, positive_passages, negative_passages}`: the training formats a stage
//!   writes on request, through [`TrainingWriter`].
//!
//! [`read_training_file`] reads any of them back into [`Example`]s — a query with its
//! positives and negatives — which is what `foil inspect` judges and `foil train` trains on.
//!
//! To add a format: a variant here (with its name and how [`Format::detect`] recognises
//! it), its rows in [`write::rows`], its parsing in [`read`], and a case in the round-trip
//! test at the bottom of this file.

pub mod read;
pub mod write;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

pub use read::{read_training_file, Example, Item, ReadOptions, TrainingFile};
pub use write::{rows, Passage, QueryResult, TrainingWriter, Written};

/// A training-data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// foil's `negatives.jsonl`: `{query_id, positive_id, positive_score, method,
    /// negatives: [{doc_id, score, rank}]}`; texts come from the BEIR folder. Scores are
    /// `null` where nothing ranked the passages (`foil generate negatives`).
    Negatives,
    Triplet,
    NTuple,
    NTupleScores,
    LabeledPair,
    LabeledList,
    Flagembedding,
    Tevatron,
}

impl Format {
    pub const ALL: [Format; 8] = [
        Format::Negatives,
        Format::Triplet,
        Format::NTuple,
        Format::NTupleScores,
        Format::LabeledPair,
        Format::LabeledList,
        Format::Flagembedding,
        Format::Tevatron,
    ];

    /// The format's name, also its file name stem.
    pub fn name(self) -> &'static str {
        match self {
            Format::Negatives => "negatives",
            Format::Triplet => "triplet",
            Format::NTuple => "n-tuple",
            Format::NTupleScores => "n-tuple-scores",
            Format::LabeledPair => "labeled-pair",
            Format::LabeledList => "labeled-list",
            Format::Flagembedding => "flagembedding",
            Format::Tevatron => "tevatron",
        }
    }

    /// The format a record's fields announce, if any.
    pub fn detect(record: &Map<String, Value>) -> Option<Format> {
        let has = |k: &str| record.contains_key(k);
        if has("query_id") && has("positive_id") && has("negatives") {
            Some(Format::Negatives)
        } else if has("positive_passages") && has("negative_passages") {
            Some(Format::Tevatron)
        } else if has("query") && has("pos") && has("neg") {
            Some(Format::Flagembedding)
        } else if has("anchor") && has("positive") && has("negative_1") {
            Some(if has("scores") {
                Format::NTupleScores
            } else {
                Format::NTuple
            })
        } else if has("anchor") && has("positive") && has("negative") {
            Some(Format::Triplet)
        } else if has("anchor") && has("positive") && has("labels") {
            Some(Format::LabeledList)
        } else if has("anchor") && has("positive") && has("label") {
            Some(Format::LabeledPair)
        } else {
            None
        }
    }

    /// Whether records of this format carry the scores of the model that mined them.
    pub fn has_scores(self) -> bool {
        matches!(
            self,
            Format::Negatives | Format::NTupleScores | Format::Flagembedding
        )
    }
}

/// One line of `negatives.jsonl`: a (query, positive) pair and its negatives, best first, as
/// `(doc_id, score, rank)`; a score is `null` where nothing ranked the passage.
pub fn negatives_record<'a>(
    query_id: &str,
    positive_id: &str,
    positive_score: Option<f32>,
    method: &str,
    negatives: impl Iterator<Item = (&'a str, Option<f32>, usize)>,
) -> Value {
    json!({
        "query_id": query_id,
        "positive_id": positive_id,
        "positive_score": positive_score,
        "method": method,
        "negatives": negatives
            .map(|(doc_id, score, rank)| json!({"doc_id": doc_id, "score": score, "rank": rank}))
            .collect::<Vec<_>>(),
    })
}

/// How many (query, positive) pairs got all the negatives asked for, and why the others
/// did not; the n-tuple formats leave those out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairCounts {
    pub kept: usize,
    /// `no_negative_left` or `fewer_negatives_than_asked` → pairs.
    pub skipped: BTreeMap<String, u64>,
}

impl PairCounts {
    /// Counts one pair that has `found` negatives of the `wanted`.
    pub fn count(&mut self, found: usize, wanted: usize) {
        let reason = if found >= wanted {
            self.kept += 1;
            return;
        } else if found == 0 {
            "no_negative_left"
        } else {
            "fewer_negatives_than_asked"
        };
        *self.skipped.entry(reason.into()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foil_core::SkipReport;

    fn passage<'a>(id: &'a str, text: &'a str, score: f32) -> Passage<'a> {
        Passage {
            id,
            title: "",
            text,
            full: text,
            score,
        }
    }

    /// Every training format, written as JSON Lines and as Parquet, reads back as the
    /// example it was written from.
    #[test]
    fn every_training_format_round_trips_through_jsonl_and_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let results = [
            QueryResult {
                query_id: "q1",
                query: "what causes scurvy",
                positives: vec![passage("d1", "vitamin C deficiency", 0.9)],
                negatives: vec![
                    passage("d2", "iodine deficiency", 0.5),
                    passage("d3", "iron deficiency", 0.25),
                ],
            },
            QueryResult {
                query_id: "q2",
                query: "why does the thyroid grow",
                positives: vec![passage("d2", "iodine deficiency", 0.75)],
                negatives: vec![
                    passage("d1", "vitamin C deficiency", 0.5),
                    passage("d3", "iron deficiency", -0.5),
                ],
            },
        ];
        let written: Vec<Format> = Format::ALL
            .into_iter()
            .filter(|&f| f != Format::Negatives)
            .collect();
        for parquet in [false, true] {
            let out = dir.path().join(format!("parquet-{parquet}"));
            let mut writer = TrainingWriter::create(&out, &written, 2, parquet).unwrap();
            for r in &results {
                writer.write(r).unwrap();
            }
            let done = writer.finish().unwrap();
            assert_eq!(done.rows["triplet"], 4);
            assert_eq!(done.rows["labeled-pair"], 6);
            for &format in &written {
                let ext = if parquet { "parquet" } else { "jsonl" };
                let path = out.join(format!("{}.{ext}", format.name()));
                let options = ReadOptions {
                    merge_triplets: true,
                    ..ReadOptions::default()
                };
                let mut skips = SkipReport::default();
                let file = read_training_file(&path, &options, &mut skips).unwrap();
                assert_eq!(file.format, format, "{}", path.display());
                assert_eq!(file.examples.len(), 2, "{}", path.display());
                for (e, r) in file.examples.iter().zip(&results) {
                    let texts = |items: &[Item]| -> Vec<String> {
                        items.iter().map(|i| i.text.clone().unwrap()).collect()
                    };
                    assert_eq!(e.query.text.as_deref(), Some(r.query), "{format:?}");
                    let positives: Vec<&str> = r.positives.iter().map(|p| p.full).collect();
                    assert_eq!(texts(&e.positives), positives, "{format:?}");
                    let negatives: Vec<&str> = r.negatives.iter().map(|n| n.full).collect();
                    assert_eq!(texts(&e.negatives), negatives, "{format:?}");
                    if format == Format::NTupleScores {
                        assert_eq!(e.positives[0].score, Some(r.positives[0].score));
                        assert_eq!(e.negatives[1].score, Some(r.negatives[1].score));
                    }
                    if format == Format::Tevatron {
                        assert_eq!(e.query.id.as_deref(), Some(r.query_id));
                        assert_eq!(e.negatives[0].id.as_deref(), Some(r.negatives[0].id));
                    }
                }
                assert_eq!(skips.total(), 0);
            }
        }
    }

    #[test]
    fn negatives_record_keeps_null_scores() {
        let line = negatives_record(
            "q",
            "d",
            None,
            "llm",
            [("n1", None, 1), ("n2", Some(0.5), 2)].into_iter(),
        );
        assert_eq!(
            line.to_string(),
            r#"{"query_id":"q","positive_id":"d","positive_score":null,"method":"llm","negatives":[{"doc_id":"n1","score":null,"rank":1},{"doc_id":"n2","score":0.5,"rank":2}]}"#
        );
    }

    #[test]
    fn pair_counts_name_why_a_pair_is_short() {
        let mut c = PairCounts::default();
        c.count(3, 2);
        c.count(0, 2);
        c.count(1, 2);
        c.count(1, 2);
        assert_eq!(c.kept, 1);
        assert_eq!(c.skipped["no_negative_left"], 1);
        assert_eq!(c.skipped["fewer_negatives_than_asked"], 2);
    }
}
