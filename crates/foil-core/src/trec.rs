//! TREC run files: `query-id Q0 doc-id rank score tag`, one retrieved document per line.
//!
//! [`Run`] holds, per query, the retrieved documents and their scores. Ranks written in a file
//! are ignored when reading, as trec_eval ignores them: the order is always score descending,
//! ties broken by document id descending (byte order), which is trec_eval's order. Writing uses
//! the same order, so what foil writes is what any evaluator ranks.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::Result;
use crate::fsutil::AtomicFile;
use crate::lines::{Line, LineReader};
use crate::skip::{quote, InputPolicy, SkipReason, SkipReport};

/// A retrieved document and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredDoc {
    pub doc_id: String,
    pub score: f64,
}

impl ScoredDoc {
    pub fn new(doc_id: impl Into<String>, score: f64) -> Self {
        Self {
            doc_id: doc_id.into(),
            score,
        }
    }
}

/// trec_eval's ranking order: score descending, then document id descending.
pub fn trec_order(a: &ScoredDoc, b: &ScoredDoc) -> Ordering {
    b.score
        .partial_cmp(&a.score)
        .unwrap_or(Ordering::Equal)
        .then_with(|| b.doc_id.cmp(&a.doc_id))
}

/// A document as listed in a run file: id, score, line number.
type Listed = (String, f64, u64);

/// Retrieved documents per query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    queries: BTreeMap<String, Vec<ScoredDoc>>,
}

impl Run {
    /// Sets the documents retrieved for `query`, replacing earlier ones; they are kept in
    /// trec_eval order.
    pub fn insert(&mut self, query: impl Into<String>, mut docs: Vec<ScoredDoc>) {
        docs.sort_by(trec_order);
        self.queries.insert(query.into(), docs);
    }

    /// The ranking of one query, in trec_eval order.
    pub fn get(&self, query: &str) -> Option<&[ScoredDoc]> {
        self.queries.get(query).map(Vec::as_slice)
    }

    /// Queries in id order with their rankings.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<ScoredDoc>)> {
        self.queries.iter()
    }

    /// Number of queries.
    pub fn num_queries(&self) -> usize {
        self.queries.len()
    }

    /// Number of (query, document) lines.
    pub fn len(&self) -> usize {
        self.queries.values().map(Vec::len).sum()
    }

    /// True when no query has a result.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every document whose id equals its query's id (BEIR does this before
    /// evaluating, because some datasets list a query's own text in the corpus); returns how
    /// many were removed.
    pub fn drop_identical_ids(&mut self) -> usize {
        let mut removed = 0;
        for (query, docs) in self.queries.iter_mut() {
            let before = docs.len();
            docs.retain(|d| d.doc_id != *query);
            removed += before - docs.len();
        }
        removed
    }

    /// Reads a TREC run file. Lines with a wrong number of fields, a score that is not a finite
    /// number, or a document listed twice for one query are invalid. A run foil wrote is
    /// first checked against the SHA-256 its manifest records ([`crate::manifest::check_output`]).
    pub fn read(path: &Path, policy: InputPolicy, skips: &mut SkipReport) -> Result<Self> {
        crate::manifest::check_output(path)?;
        let mut lines = LineReader::open(path)?;
        // Per query: (document, score, line), checked for duplicates once the file is read.
        let mut queries: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
        let mut current: Option<(String, Vec<Listed>)> = None;
        loop {
            let line_no = lines.line_no() + 1;
            let line = match lines.next_line()? {
                None => break,
                Some(Line::Text(t)) if t.trim().is_empty() => continue,
                Some(Line::Text(t)) => t,
                Some(Line::InvalidUtf8 { valid_up_to, lossy }) => {
                    let message = format!("invalid UTF-8 at byte {valid_up_to}: {}", quote(&lossy));
                    skips.reject(policy, path, line_no, SkipReason::InvalidUtf8, message)?;
                    continue;
                }
            };
            let mut fields = [""; 6];
            let mut count = 0;
            for field in line.split_whitespace() {
                if count < 6 {
                    fields[count] = field;
                }
                count += 1;
            }
            if count != 6 {
                let message = format!(
                    "expected 6 fields (query-id Q0 doc-id rank score tag), found {count}: {}",
                    quote(line)
                );
                skips.reject(policy, path, line_no, SkipReason::WrongFieldCount, message)?;
                continue;
            }
            let score = match fields[4].parse::<f64>() {
                Ok(s) if s.is_finite() => s,
                _ => {
                    let message = format!("score is not a finite number: {}", quote(fields[4]));
                    skips.reject(policy, path, line_no, SkipReason::BadScore, message)?;
                    continue;
                }
            };
            // Run files are grouped by query; keep the current query's list at hand.
            if current.as_ref().is_none_or(|(q, _)| q != fields[0]) {
                if let Some((q, docs)) = current.take() {
                    queries.entry(q).or_default().extend(docs);
                }
                current = Some((fields[0].to_string(), Vec::new()));
            }
            if let Some((_, docs)) = current.as_mut() {
                docs.push((fields[2].to_string(), score, line_no));
            }
        }
        if let Some((q, docs)) = current.take() {
            queries.entry(q).or_default().extend(docs);
        }

        // A document listed twice for a query is invalid; the first listing is kept. Report
        // duplicates in file order.
        let mut duplicates: Vec<(u64, u64, String, String)> = Vec::new();
        let mut run = Run::default();
        for (query, mut docs) in queries {
            docs.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
            let mut kept: Vec<ScoredDoc> = Vec::with_capacity(docs.len());
            let mut first_line = 0;
            for (doc, score, line) in docs {
                if kept.last().is_some_and(|k| k.doc_id == doc) {
                    duplicates.push((line, first_line, query.clone(), doc));
                } else {
                    first_line = line;
                    kept.push(ScoredDoc::new(doc, score));
                }
            }
            kept.sort_by(trec_order);
            run.queries.insert(query, kept);
        }
        duplicates.sort();
        for (line, first, query, doc) in duplicates {
            let message = format!(
                "document {} listed twice for query {} (first on line {first})",
                quote(&doc),
                quote(&query)
            );
            skips.reject(policy, path, line, SkipReason::DuplicateId, message)?;
        }
        Ok(run)
    }

    /// Writes the run atomically, ranks from 1 in trec_eval order, `tag` in the last column.
    pub fn write(&self, path: &Path, tag: &str) -> Result<()> {
        let mut file = AtomicFile::create(path)?;
        {
            let w = file.writer();
            for (query, docs) in &self.queries {
                for (rank, doc) in docs.iter().enumerate() {
                    writeln!(
                        w,
                        "{query} Q0 {} {} {} {tag}",
                        doc.doc_id,
                        rank + 1,
                        doc.score
                    )
                    .map_err(|e| crate::Error::io(path, e))?;
                }
            }
        }
        file.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_are_ordered_by_doc_id_descending() {
        let mut run = Run::default();
        run.insert(
            "q",
            vec![
                ScoredDoc::new("a", 1.0),
                ScoredDoc::new("c", 1.0),
                ScoredDoc::new("b", 2.0),
            ],
        );
        let ids: Vec<&str> = run
            .get("q")
            .unwrap()
            .iter()
            .map(|d| d.doc_id.as_str())
            .collect();
        assert_eq!(ids, ["b", "c", "a"]);
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.trec");
        let mut run = Run::default();
        run.insert(
            "q1",
            vec![
                ScoredDoc::new("d1", 0.1),
                ScoredDoc::new("d2", 13.47826099395752),
            ],
        );
        run.insert("q2", vec![ScoredDoc::new("d1", -3.0)]);
        run.write(&path, "foil").unwrap();
        let back = Run::read(&path, InputPolicy::default(), &mut SkipReport::default()).unwrap();
        assert_eq!(back, run);
    }
}
