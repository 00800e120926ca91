//! The rows a run trains on: read from a training file in any format of
//! [`crate::formats`], then cut to the same number of negatives K (what the loss's tensors
//! need) and checked against the model type and the loss.

use std::collections::BTreeMap;
use std::path::Path;

use foil_core::{Error, Result};
use foil_train::Loss;

use super::{ModelType, TrainConfig};
use crate::formats::{read_training_file, Item, ReadOptions};

/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub anchor: String,
    pub positive: String,
    pub negatives: Vec<String>,
    /// Teacher scores, positive first (`n-tuple-scores`).
    pub scores: Option<Vec<f32>>,
}

/// Reads a training file in any [`crate::formats::Format`] that carries texts, JSON Lines or
/// Parquet: one row per (query, positive) of each example, with that example's negatives and,
/// where the file stores a score for each of them, the scores (positive first) for MarginMSE.
/// Triplets stay one row each, as sentence-transformers trains them.
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let mut skips = foil_core::SkipReport::default();
    let file = read_training_file(path, &ReadOptions::default(), &mut skips)?;
    let mut rows = Vec::new();
    for example in file.examples {
        let text = |item: &Item| {
            item.text.clone().ok_or_else(|| Error::Input {
                file: path.to_path_buf(),
                line: example.line,
                reason: foil_core::SkipReason::MissingText,
                message: format!(
                    "{} records name passages by id without their texts; train on a format with texts (`foil mine --format n-tuple`)",
                    file.format.name()
                ),
            })
        };
        let anchor = text(&example.query)?;
        let negatives = example
            .negatives
            .iter()
            .map(text)
            .collect::<Result<Vec<_>>>()?;
        let negative_scores: Option<Vec<f32>> = example.negatives.iter().map(|n| n.score).collect();
        for positive in &example.positives {
            let scores = positive
                .score
                .zip(negative_scores.as_ref())
                .map(|(p, n)| std::iter::once(p).chain(n.iter().copied()).collect());
            rows.push(Row {
                anchor: anchor.clone(),
                positive: text(positive)?,
                negatives: negatives.clone(),
                scores,
            });
        }
    }
    Ok(rows)
}

/// The rows of a run, each with K negatives, and the rows left out by reason.
pub(super) struct Usable {
    pub rows: Vec<Row>,
    /// Negatives per row.
    pub k: usize,
    pub skipped: BTreeMap<String, u64>,
}

/// Reads the training file and keeps the rows with K negatives (`max_negatives`, else as
/// many as every row has), truncating the others' negatives and scores to K.
pub(super) fn usable_rows(config: &TrainConfig) -> Result<Usable> {
    let all = read_rows(&config.train_file)?;
    let min_negatives = all.iter().map(|r| r.negatives.len()).min().unwrap_or(0);
    let k = config.max_negatives.unwrap_or(min_negatives);
    let mut skipped = BTreeMap::new();
    let mut rows = Vec::with_capacity(all.len());
    for mut row in all {
        if row.negatives.len() < k {
            *skipped
                .entry("fewer_negatives_than_used".to_string())
                .or_default() += 1;
            continue;
        }
        row.negatives.truncate(k);
        if let Some(s) = &mut row.scores {
            s.truncate(k + 1);
        }
        rows.push(row);
    }
    if rows.len() < 2 {
        return Err(Error::Invalid(format!(
            "{}: {} usable rows; training needs at least 2",
            config.train_file.display(),
            rows.len()
        )));
    }
    if config.model_type == ModelType::CrossEncoder && k == 0 {
        return Err(Error::Invalid(
            "training a cross-encoder needs rows with hard negatives".into(),
        ));
    }
    if config.model_type == ModelType::BiEncoder && config.loss.needs_negatives() && k == 0 {
        return Err(Error::Invalid(format!(
            "the {} loss needs hard negatives, and the rows have none",
            config.loss.name()
        )));
    }
    if matches!(config.loss, Loss::MarginMse(_)) && rows.iter().any(|r| r.scores.is_none()) {
        return Err(Error::Invalid(
            "margin-mse needs teacher scores (an n-tuple-scores table)".into(),
        ));
    }
    Ok(Usable { rows, k, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows_of(name: &str, lines: &[serde_json::Value]) -> Result<Vec<Row>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        if crate::table::is_parquet(&path) {
            crate::table::write_parquet(&path, lines)?;
        } else {
            crate::table::write_jsonl(&path, lines)?;
        }
        read_rows(&path)
    }

    #[test]
    fn reads_one_row_per_positive_with_scores_where_every_passage_has_one() {
        let scored = [
            json!({"anchor": "q", "positive": "p", "negative_1": "n1", "negative_2": "n2", "scores": [0.9, 0.5, 0.25]}),
        ];
        let rows = rows_of("t.parquet", &scored).unwrap();
        assert_eq!(
            rows,
            [Row {
                anchor: "q".into(),
                positive: "p".into(),
                negatives: vec!["n1".into(), "n2".into()],
                scores: Some(vec![0.9, 0.5, 0.25]),
            }]
        );
        let tevatron = [
            json!({"query_id": "1", "query": "q", "positive_passages": [{"docid": "a", "title": "T", "text": "p"}, {"docid": "b", "title": "", "text": "p2"}], "negative_passages": [{"docid": "c", "title": "", "text": "n"}]}),
        ];
        let rows = rows_of("t.jsonl", &tevatron).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].positive.as_str(), rows[1].positive.as_str()),
            ("T p", "p2")
        );
        assert_eq!(rows[1].negatives, ["n"]);
        assert_eq!(rows[0].scores, None);
        // Triplets stay one row each (sentence-transformers' sampling), not merged.
        let triplets = [
            json!({"anchor": "q", "positive": "p", "negative": "n1"}),
            json!({"anchor": "q", "positive": "p", "negative": "n2"}),
        ];
        assert_eq!(rows_of("t.jsonl", &triplets).unwrap().len(), 2);
    }

    #[test]
    fn ids_without_texts_are_an_error_naming_the_line() {
        let negatives = [
            json!({"query_id": "q", "positive_id": "d", "positive_score": 1.0, "method": "bm25", "negatives": [{"doc_id": "x", "score": 0.5, "rank": 1}]}),
        ];
        let err = rows_of("negatives.jsonl", &negatives)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("negatives.jsonl:1: negatives records name passages by id"),
            "{err}"
        );
    }
}
