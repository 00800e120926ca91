//! Reading a training file back into examples — a query with its positives and negatives — in
//! every [`Format`], from JSON Lines or Parquet: foil's `negatives.jsonl` (ids and scores),
//! sentence-transformers' `triplet`, `n-tuple`, `n-tuple-scores`, `labeled-pair` and
//! `labeled-list`, FlagEmbedding's `{query, pos, neg}` (optionally with `pos_scores` /
//! `neg_scores`) and Tevatron's `{query_id, query, positive_passages, negative_passages}`.
//!
//! The format is detected from the first record unless given. The labeled pairs of one anchor
//! are merged into one example; triplets that share their anchor and positive are merged on
//! request ([`ReadOptions::merge_triplets`]: `foil inspect` does, `foil train` keeps one row
//! per triplet as sentence-transformers does). A bad record is an error naming `file:line`
//! (the row number for Parquet), or a counted skip under `--skip-invalid`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use foil_core::lines::{Line, LineReader};
use foil_core::skip::quote;
use foil_core::{Error, InputPolicy, Result, SkipReason, SkipReport};
use serde_json::{Map, Value};

use super::Format;

/// A query or passage of an example: its id and/or text, and the score stored in the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    pub id: Option<String>,
    pub text: Option<String>,
    pub score: Option<f32>,
}

/// One training example: a query with its positives and negatives, from `line` of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub line: u64,
    pub query: Item,
    pub positives: Vec<Item>,
    pub negatives: Vec<Item>,
}

impl Example {
    /// What identifies the query: its id, else its text.
    pub fn query_key(&self) -> &str {
        self.query
            .id
            .as_deref()
            .or(self.query.text.as_deref())
            .unwrap_or("")
    }
}

type Bad = (SkipReason, String);

fn field<'a>(r: &'a Map<String, Value>, key: &str) -> Result<&'a Value, Bad> {
    r.get(key)
        .ok_or_else(|| (SkipReason::MissingText, format!("missing field \"{key}\"")))
}

fn string(r: &Map<String, Value>, key: &str) -> Result<String, Bad> {
    match field(r, key)? {
        Value::String(s) => Ok(s.clone()),
        v => Err((
            SkipReason::MissingText,
            format!("field \"{key}\" is not a string: {}", quote(&v.to_string())),
        )),
    }
}

fn number(v: &Value, what: &str) -> Result<f32, Bad> {
    v.as_f64().map(|x| x as f32).ok_or_else(|| {
        (
            SkipReason::BadScore,
            format!("{what} is not a number: {}", quote(&v.to_string())),
        )
    })
}

/// A score that may be `null` (nothing scored the passage).
fn score_or_null(v: &Value, what: &str) -> Result<Option<f32>, Bad> {
    match v {
        Value::Null => Ok(None),
        v => number(v, what).map(Some),
    }
}

fn strings(r: &Map<String, Value>, key: &str) -> Result<Vec<String>, Bad> {
    let bad = |v: &Value| {
        (
            SkipReason::MissingText,
            format!(
                "field \"{key}\" is not a list of strings: {}",
                quote(&v.to_string())
            ),
        )
    };
    match field(r, key)? {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(v)))
            .collect(),
        v => Err(bad(v)),
    }
}

fn numbers(r: &Map<String, Value>, key: &str, len: usize) -> Result<Option<Vec<f32>>, Bad> {
    let Some(v) = r.get(key) else {
        return Ok(None);
    };
    let items = v.as_array().ok_or_else(|| {
        (
            SkipReason::BadScore,
            format!("field \"{key}\" is not a list: {}", quote(&v.to_string())),
        )
    })?;
    if items.len() != len {
        return Err((
            SkipReason::BadScore,
            format!("field \"{key}\" has {} scores, expected {len}", items.len()),
        ));
    }
    items
        .iter()
        .map(|x| number(x, &format!("a score of \"{key}\"")))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A relevance label: 1 (relevant) or 0.
fn label(v: &Value, what: &str) -> Result<bool, Bad> {
    match v.as_f64() {
        Some(1.0) => Ok(true),
        Some(0.0) => Ok(false),
        _ => Err((
            SkipReason::BadScore,
            format!("{what} is not 0 or 1: {}", quote(&v.to_string())),
        )),
    }
}

fn text(t: String) -> Item {
    Item {
        text: Some(t),
        ..Item::default()
    }
}

fn passage(v: &Value, key: &str) -> Result<Item, Bad> {
    let bad = || {
        (
            SkipReason::MissingText,
            format!(
                "an entry of \"{key}\" is not a passage with docid and text: {}",
                quote(&v.to_string())
            ),
        )
    };
    let o = v.as_object().ok_or_else(bad)?;
    let body = o.get("text").and_then(Value::as_str).ok_or_else(bad)?;
    let title = o.get("title").and_then(Value::as_str).unwrap_or("");
    Ok(Item {
        id: o.get("docid").and_then(Value::as_str).map(str::to_string),
        text: Some(if title.is_empty() {
            body.to_string()
        } else {
            format!("{title} {body}")
        }),
        score: None,
    })
}

/// Parses one record of `format` into an example.
fn parse(format: Format, r: &Map<String, Value>, line: u64) -> Result<Example, Bad> {
    let (query, positives, negatives) = match format {
        Format::Negatives => parse_negatives(r)?,
        Format::Triplet => (
            text(string(r, "anchor")?),
            vec![text(string(r, "positive")?)],
            vec![text(string(r, "negative")?)],
        ),
        Format::NTuple => parse_n_tuple(r, false)?,
        Format::NTupleScores => parse_n_tuple(r, true)?,
        Format::LabeledPair => parse_labeled_pair(r)?,
        Format::LabeledList => parse_labeled_list(r)?,
        Format::Flagembedding => parse_flagembedding(r)?,
        Format::Tevatron => parse_tevatron(r)?,
    };
    Ok(Example {
        line,
        query,
        positives,
        negatives,
    })
}

/// A record's query, positives and negatives.
type Parts = (Item, Vec<Item>, Vec<Item>);

/// foil's `negatives.jsonl`: ids and scores, no texts.
fn parse_negatives(r: &Map<String, Value>) -> Result<Parts, Bad> {
    let id = |v: &Value, what: &str| -> Result<String, Bad> {
        v.as_str().map(str::to_string).ok_or_else(|| {
            (
                SkipReason::MissingId,
                format!("{what} is not a string: {}", quote(&v.to_string())),
            )
        })
    };
    let negatives = match field(r, "negatives")? {
        Value::Array(items) => items
            .iter()
            .map(|n| {
                let doc = n.get("doc_id").ok_or_else(|| {
                    (
                        SkipReason::MissingId,
                        format!("a negative has no \"doc_id\": {}", quote(&n.to_string())),
                    )
                })?;
                let score = n.get("score").ok_or_else(|| {
                    (
                        SkipReason::BadScore,
                        format!("a negative has no \"score\": {}", quote(&n.to_string())),
                    )
                })?;
                Ok(Item {
                    id: Some(id(doc, "\"doc_id\"")?),
                    text: None,
                    score: score_or_null(score, "\"score\"")?,
                })
            })
            .collect::<Result<Vec<_>, Bad>>()?,
        v => {
            return Err((
                SkipReason::MalformedJson,
                format!(
                    "field \"negatives\" is not a list: {}",
                    quote(&v.to_string())
                ),
            ))
        }
    };
    Ok((
        Item {
            id: Some(id(field(r, "query_id")?, "\"query_id\"")?),
            ..Item::default()
        },
        vec![Item {
            id: Some(id(field(r, "positive_id")?, "\"positive_id\"")?),
            text: None,
            score: score_or_null(field(r, "positive_score")?, "\"positive_score\"")?,
        }],
        negatives,
    ))
}

/// `n-tuple` (`negative_1…`) and, with `scores`, `n-tuple-scores` (positive first).
fn parse_n_tuple(r: &Map<String, Value>, scores: bool) -> Result<Parts, Bad> {
    let mut negatives = Vec::new();
    for i in 1.. {
        let key = format!("negative_{i}");
        if !r.contains_key(&key) {
            break;
        }
        negatives.push(text(string(r, &key)?));
    }
    let mut positive = text(string(r, "positive")?);
    if scores {
        let scores = numbers(r, "scores", negatives.len() + 1)?
            .ok_or_else(|| (SkipReason::BadScore, "missing field \"scores\"".to_string()))?;
        positive.score = Some(scores[0]);
        for (n, s) in negatives.iter_mut().zip(&scores[1..]) {
            n.score = Some(*s);
        }
    }
    Ok((text(string(r, "anchor")?), vec![positive], negatives))
}

/// `labeled-pair`: one passage, a positive (label 1) or a negative (0); the reader merges a
/// query's pairs.
fn parse_labeled_pair(r: &Map<String, Value>) -> Result<Parts, Bad> {
    let passage = vec![text(string(r, "positive")?)];
    let query = text(string(r, "anchor")?);
    let (positives, negatives) = if label(field(r, "label")?, "\"label\"")? {
        (passage, Vec::new())
    } else {
        (Vec::new(), passage)
    };
    Ok((query, positives, negatives))
}

/// `labeled-list`: the passages of a query with a label each.
fn parse_labeled_list(r: &Map<String, Value>) -> Result<Parts, Bad> {
    let texts = strings(r, "positive")?;
    let labels = match field(r, "labels")? {
        Value::Array(items) if items.len() == texts.len() => items
            .iter()
            .map(|v| label(v, "a label of \"labels\""))
            .collect::<Result<Vec<_>, Bad>>()?,
        v => {
            return Err((
                SkipReason::BadScore,
                format!(
                    "field \"labels\" is not a list of {} labels: {}",
                    texts.len(),
                    quote(&v.to_string())
                ),
            ))
        }
    };
    let (mut positives, mut negatives) = (Vec::new(), Vec::new());
    for (t, relevant) in texts.into_iter().zip(labels) {
        if relevant {
            positives.push(text(t));
        } else {
            negatives.push(text(t));
        }
    }
    Ok((text(string(r, "anchor")?), positives, negatives))
}

/// FlagEmbedding's `{query, pos, neg}`, with `pos_scores` / `neg_scores` where given.
fn parse_flagembedding(r: &Map<String, Value>) -> Result<Parts, Bad> {
    let pos = strings(r, "pos")?;
    let neg = strings(r, "neg")?;
    let pos_scores = numbers(r, "pos_scores", pos.len())?;
    let neg_scores = numbers(r, "neg_scores", neg.len())?;
    let items = |texts: Vec<String>, scores: Option<Vec<f32>>| -> Vec<Item> {
        texts
            .into_iter()
            .enumerate()
            .map(|(i, t)| Item {
                id: None,
                text: Some(t),
                score: scores.as_ref().map(|s| s[i]),
            })
            .collect()
    };
    Ok((
        text(string(r, "query")?),
        items(pos, pos_scores),
        items(neg, neg_scores),
    ))
}

/// Tevatron's `{query_id, query, positive_passages, negative_passages}`.
fn parse_tevatron(r: &Map<String, Value>) -> Result<Parts, Bad> {
    let list = |key: &str| -> Result<Vec<Item>, Bad> {
        match field(r, key)? {
            Value::Array(items) => items.iter().map(|v| passage(v, key)).collect(),
            v => Err((
                SkipReason::MissingText,
                format!("field \"{key}\" is not a list: {}", quote(&v.to_string())),
            )),
        }
    };
    let mut query = text(string(r, "query")?);
    query.id = r
        .get("query_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((
        query,
        list("positive_passages")?,
        list("negative_passages")?,
    ))
}

/// How [`read_training_file`] reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// The file's format (default: detected from the first record).
    pub format: Option<Format>,
    /// Keep the examples of the first this many distinct queries.
    pub max_queries: Option<usize>,
    /// Merge triplets that share their anchor and positive into one example.
    pub merge_triplets: bool,
    pub policy: InputPolicy,
}

/// What [`read_training_file`] found.
#[derive(Debug, Clone)]
pub struct TrainingFile {
    pub format: Format,
    pub examples: Vec<Example>,
    /// Records read (non-empty lines or rows that parsed).
    pub records: u64,
    /// Examples beyond `max_queries` that were left out.
    pub truncated: bool,
}

/// Reads `path` (Parquet by extension, JSON Lines otherwise) into examples.
pub fn read_training_file(
    path: &Path,
    options: &ReadOptions,
    skips: &mut SkipReport,
) -> Result<TrainingFile> {
    let mut format = options.format;
    let mut examples: Vec<Example> = Vec::new();
    // Where the example of a (query, positive) triplet or a labeled pair's query is.
    let mut merged: HashMap<(String, String), usize> = HashMap::new();
    let mut queries: HashSet<String> = HashSet::new();
    let mut records = 0;
    let mut truncated = false;
    for_each_record(path, options.policy, skips, |n, record, skips| {
        let fmt = match format {
            Some(f) => f,
            None => {
                let f = Format::detect(&record).ok_or_else(|| undetected(path, n, &record))?;
                format = Some(f);
                f
            }
        };
        let example = match parse(fmt, &record, n) {
            Ok(e) => e,
            Err((reason, message)) => {
                let message = format!("{message} (reading as {})", fmt.name());
                return skips.reject(options.policy, path, n, reason, message);
            }
        };
        records += 1;
        let key = example.query_key().to_string();
        if !queries.contains(&key) {
            if options.max_queries.is_some_and(|m| queries.len() >= m) {
                truncated = true;
                return Ok(());
            }
            queries.insert(key.clone());
        }
        let merge_key = match fmt {
            Format::Triplet if options.merge_triplets => {
                Some((key, example.positives[0].text.clone().unwrap_or_default()))
            }
            Format::LabeledPair => Some((key, String::new())),
            _ => None,
        };
        match merge_key.as_ref().and_then(|k| merged.get(k)) {
            Some(&i) => {
                let into = &mut examples[i];
                // Merged triplets share their positive; labeled pairs bring one passage each.
                if fmt == Format::LabeledPair {
                    into.positives.extend(example.positives);
                }
                into.negatives.extend(example.negatives);
            }
            None => {
                if let Some(k) = merge_key {
                    merged.insert(k, examples.len());
                }
                examples.push(example);
            }
        }
        Ok(())
    })?;
    Ok(TrainingFile {
        format: format.unwrap_or(Format::Triplet),
        examples,
        records,
        truncated,
    })
}

/// The error for a first record whose fields name no format.
fn undetected(path: &Path, line: u64, record: &Map<String, Value>) -> Error {
    let keys: Vec<&str> = record.keys().map(String::as_str).collect();
    Error::Input {
        file: path.to_path_buf(),
        line,
        reason: SkipReason::MalformedJson,
        message: format!(
            "cannot tell the training format from the fields {} (expected foil's negatives.jsonl, triplet, n-tuple, n-tuple-scores, labeled-pair, labeled-list, flagembedding or tevatron)",
            quote(&keys.join(", "))
        ),
    }
}

/// Calls `f` with each record of a table and its line (row) number. A JSON Lines line that is
/// not a JSON object is rejected under `policy`; a Parquet file is read whole.
fn for_each_record(
    path: &Path,
    policy: InputPolicy,
    skips: &mut SkipReport,
    mut f: impl FnMut(u64, Map<String, Value>, &mut SkipReport) -> Result<()>,
) -> Result<()> {
    if crate::table::is_parquet(path) {
        for (n, record) in crate::table::read_rows(path)? {
            f(n, record, skips)?;
        }
        return Ok(());
    }
    let mut reader = LineReader::open(path)?;
    loop {
        let line = match reader.next_line()? {
            None => return Ok(()),
            Some(Line::Text(t)) => t.to_string(),
            Some(Line::InvalidUtf8 { valid_up_to, .. }) => {
                let n = reader.line_no();
                let message = format!("invalid UTF-8 at byte {valid_up_to}");
                skips.reject(policy, path, n, SkipReason::InvalidUtf8, message)?;
                continue;
            }
        };
        let n = reader.line_no();
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(o)) => f(n, o, skips)?,
            Ok(_) => {
                let message = format!("not a JSON object: {}", quote(&line));
                skips.reject(policy, path, n, SkipReason::MalformedJson, message)?;
            }
            Err(e) => {
                let message = format!("invalid JSON ({e}): {}", quote(&line));
                skips.reject(policy, path, n, SkipReason::MalformedJson, message)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content: &str, policy: InputPolicy) -> Result<(TrainingFile, SkipReport)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(&path, content).unwrap();
        let mut skips = SkipReport::default();
        let options = ReadOptions {
            merge_triplets: true,
            policy,
            ..ReadOptions::default()
        };
        read_training_file(&path, &options, &mut skips).map(|t| (t, skips))
    }

    #[test]
    fn detects_each_format_and_reads_scores() {
        let cases = [
            (
                r#"{"query_id":"q","positive_id":"d","positive_score":2.5,"method":"bm25","negatives":[{"doc_id":"x","score":1.0,"rank":1}]}"#,
                Format::Negatives,
            ),
            (
                r#"{"anchor":"q","positive":"p","negative":"n"}"#,
                Format::Triplet,
            ),
            (
                r#"{"anchor":"q","positive":"p","negative_1":"n","negative_2":"m"}"#,
                Format::NTuple,
            ),
            (
                r#"{"anchor":"q","positive":"p","negative_1":"n","scores":[0.9,0.5]}"#,
                Format::NTupleScores,
            ),
            (
                r#"{"query":"q","pos":["p"],"neg":["n","m"]}"#,
                Format::Flagembedding,
            ),
            (
                r#"{"query_id":"1","query":"q","positive_passages":[{"docid":"d","title":"T","text":"p"}],"negative_passages":[]}"#,
                Format::Tevatron,
            ),
        ];
        for (line, format) in cases {
            let (t, _) = read(line, InputPolicy::default()).unwrap();
            assert_eq!(t.format, format, "{line}");
            assert_eq!(t.examples.len(), 1);
        }
        let (t, _) = read(cases[3].0, InputPolicy::default()).unwrap();
        assert_eq!(t.examples[0].positives[0].score, Some(0.9));
        assert_eq!(t.examples[0].negatives[0].score, Some(0.5));
        let (t, _) = read(cases[5].0, InputPolicy::default()).unwrap();
        assert_eq!(t.examples[0].positives[0].text.as_deref(), Some("T p"));
        // `foil generate negatives` writes null scores: nothing ranked its passages.
        let generated = r#"{"query_id":"q","positive_id":"d","positive_score":null,"method":"llm","negatives":[{"doc_id":"gen-neg-q-0","score":null,"rank":1}]}"#;
        let (t, _) = read(generated, InputPolicy::default()).unwrap();
        assert_eq!(t.format, Format::Negatives);
        assert_eq!(t.examples[0].positives[0].score, None);
        assert_eq!(t.examples[0].negatives[0].score, None);
        assert_eq!(
            t.examples[0].negatives[0].id.as_deref(),
            Some("gen-neg-q-0")
        );
    }

    #[test]
    fn merges_triplets_of_one_anchor_and_positive() {
        let content = "{\"anchor\":\"q\",\"positive\":\"p\",\"negative\":\"a\"}\n{\"anchor\":\"q\",\"positive\":\"p\",\"negative\":\"b\"}\n{\"anchor\":\"q\",\"positive\":\"p2\",\"negative\":\"a\"}\n";
        let (t, _) = read(content, InputPolicy::default()).unwrap();
        assert_eq!(t.examples.len(), 2);
        assert_eq!(t.examples[0].negatives.len(), 2);
    }

    #[test]
    fn bad_records_name_file_and_line_or_are_skipped() {
        let content = "{\"anchor\":\"q\",\"positive\":\"p\",\"negative\":\"a\"}\n\n{\"anchor\":\"q\",\"positive\":\"p\"}\nnot json\n";
        let err = read(content, InputPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("train.jsonl:3: missing field \"negative\" (reading as triplet)"),
            "{err}"
        );
        let (t, skips) = read(content, InputPolicy { skip_invalid: true }).unwrap();
        assert_eq!(t.examples.len(), 1);
        assert_eq!(skips.count(SkipReason::MissingText), 1);
        assert_eq!(skips.count(SkipReason::MalformedJson), 1);
        let err = read("{\"a\":1}\n", InputPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.jsonl:1: cannot tell the training format"),
            "{err}"
        );
    }
}
