//! What to do with invalid input records, and the report of those that were skipped.
//!
//! By default a bad record is an error naming `file:line`. Under an explicit `--skip-invalid`
//! the record is skipped instead, and the skip is counted by reason here; the count ends up in
//! the command's summary line and in its `manifest.json`, so that nothing disappears silently.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

/// Why a record was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    InvalidUtf8,
    MalformedJson,
    MissingId,
    MissingText,
    EmptyText,
    DuplicateId,
    WrongFieldCount,
    BadRelevance,
    BadScore,
    DuplicateJudgment,
    UnknownQuery,
    UnknownDocument,
}

impl SkipReason {
    /// The snake_case name used in reports and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InvalidUtf8 => "invalid_utf8",
            SkipReason::MalformedJson => "malformed_json",
            SkipReason::MissingId => "missing_id",
            SkipReason::MissingText => "missing_text",
            SkipReason::EmptyText => "empty_text",
            SkipReason::DuplicateId => "duplicate_id",
            SkipReason::WrongFieldCount => "wrong_field_count",
            SkipReason::BadRelevance => "bad_relevance",
            SkipReason::BadScore => "bad_score",
            SkipReason::DuplicateJudgment => "duplicate_judgment",
            SkipReason::UnknownQuery => "unknown_query",
            SkipReason::UnknownDocument => "unknown_document",
        }
    }
}

/// How readers treat invalid records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputPolicy {
    /// Skip (and count) invalid records instead of failing on the first one.
    pub skip_invalid: bool,
}

/// One skipped record, kept as an example for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkipExample {
    pub file: String,
    pub line: u64,
    pub message: String,
}

/// Counts of skipped records by file and reason, with the first few examples of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SkipReport {
    /// file name → reason → count.
    pub counts: BTreeMap<String, BTreeMap<SkipReason, u64>>,
    /// Up to [`SkipReport::MAX_EXAMPLES`] examples per reason.
    pub examples: Vec<SkipExample>,
}

impl SkipReport {
    /// How many example records are kept for each reason.
    pub const MAX_EXAMPLES: usize = 3;

    /// Handles one invalid record under `policy`: returns the error when skipping is not allowed,
    /// otherwise counts the skip and logs it.
    pub fn reject(
        &mut self,
        policy: InputPolicy,
        file: &Path,
        line: u64,
        reason: SkipReason,
        message: String,
    ) -> Result<()> {
        if !policy.skip_invalid {
            return Err(Error::Input {
                file: file.to_path_buf(),
                line,
                reason,
                message,
            });
        }
        let file_name = file.display().to_string();
        tracing::debug!(file = %file_name, line, reason = reason.as_str(), "skipped: {message}");
        let seen = self
            .examples
            .iter()
            .filter(|e| e.message.starts_with(reason.as_str()))
            .count();
        if seen < Self::MAX_EXAMPLES {
            self.examples.push(SkipExample {
                file: file_name.clone(),
                line,
                message: format!("{}: {message}", reason.as_str()),
            });
        }
        *self
            .counts
            .entry(file_name)
            .or_default()
            .entry(reason)
            .or_default() += 1;
        Ok(())
    }

    /// Total number of skipped records.
    pub fn total(&self) -> u64 {
        self.counts.values().flat_map(|m| m.values()).sum()
    }

    /// Total for one reason, over all files.
    pub fn count(&self, reason: SkipReason) -> u64 {
        self.counts.values().filter_map(|m| m.get(&reason)).sum()
    }

    /// Adds another report's counts and examples to this one.
    pub fn merge(&mut self, other: SkipReport) {
        for (file, reasons) in other.counts {
            let entry = self.counts.entry(file).or_default();
            for (reason, n) in reasons {
                *entry.entry(reason).or_default() += n;
            }
        }
        self.examples.extend(other.examples);
    }

    /// A one-line summary such as `skipped 3 (corpus.jsonl: duplicate_id 2, empty_text 1)`,
    /// or `skipped 0`.
    pub fn summary(&self) -> String {
        if self.total() == 0 {
            return "skipped 0".to_string();
        }
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(file, reasons)| {
                let name = Path::new(file)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| file.clone());
                let inner: Vec<String> = reasons
                    .iter()
                    .map(|(r, n)| format!("{} {n}", r.as_str()))
                    .collect();
                format!("{name}: {}", inner.join(", "))
            })
            .collect();
        format!("skipped {} ({})", self.total(), parts.join("; "))
    }
}

/// Quotes a bad value for an error message: JSON-style escaping, cut to 80 characters.
pub fn quote(value: &str) -> String {
    const MAX: usize = 80;
    let mut cut: String = value.chars().take(MAX).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    serde_json::to_string(&cut).unwrap_or_else(|_| format!("{cut:?}"))
}

/// `text` on one line (runs of whitespace become one space), cut to `max_chars` characters
/// with "…": for quoting what a server or a file said in an error message.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_is_one_line_and_cut_at_a_character() {
        assert_eq!(excerpt("a\n  b\tc", 10), "a b c");
        assert_eq!(excerpt("ééééé", 3), "ééé…");
        assert_eq!(excerpt("abc", 3), "abc");
    }

    #[test]
    fn strict_policy_returns_the_error_with_location() {
        let mut report = SkipReport::default();
        let err = report
            .reject(
                InputPolicy::default(),
                Path::new("corpus.jsonl"),
                17,
                SkipReason::MissingId,
                "missing field \"_id\"".into(),
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "corpus.jsonl:17: missing field \"_id\"");
        assert_eq!(report.total(), 0);
    }

    #[test]
    fn skip_policy_counts_by_file_and_reason() {
        let mut report = SkipReport::default();
        let policy = InputPolicy { skip_invalid: true };
        for line in 1..=5 {
            report
                .reject(
                    policy,
                    Path::new("c.jsonl"),
                    line,
                    SkipReason::EmptyText,
                    "x".into(),
                )
                .unwrap();
        }
        report
            .reject(
                policy,
                Path::new("q.jsonl"),
                2,
                SkipReason::DuplicateId,
                "y".into(),
            )
            .unwrap();
        assert_eq!(report.total(), 6);
        assert_eq!(report.count(SkipReason::EmptyText), 5);
        assert_eq!(report.examples.len(), SkipReport::MAX_EXAMPLES + 1);
        assert_eq!(
            report.summary(),
            "skipped 6 (c.jsonl: empty_text 5; q.jsonl: duplicate_id 1)"
        );
    }

    #[test]
    fn quote_escapes_and_truncates() {
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        let long = "x".repeat(100);
        assert_eq!(quote(&long).chars().count(), 80 + 3);
    }
}
