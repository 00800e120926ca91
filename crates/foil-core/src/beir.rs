//! The BEIR data layout: `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`.
//!
//! Readers stream: a corpus of millions of lines is parsed one line at a time and never held
//! as one string. Every rejected record either fails the read with `file:line` and the bad value
//! quoted, or, under [`InputPolicy::skip_invalid`], is counted in a [`SkipReport`].
//!
//! Accepted: LF or CRLF line endings, a UTF-8 byte order mark, `_id` as a string or an integer,
//! `title` absent or null, qrels with or without a header line, in BEIR's three tab-separated
//! columns (`query-id corpus-id score`) or TREC's four (`query-id 0 doc-id relevance`), graded
//! relevance, and zero or negative judgments (kept: they mark judged non-relevant documents).
//! Blank lines are not records and are passed over.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::fsutil::AtomicFile;
use crate::lines::{Line, LineReader};
use crate::skip::{quote, InputPolicy, SkipReason, SkipReport};

/// A corpus passage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    /// Empty when the record has no title.
    pub title: String,
    pub text: String,
}

impl Document {
    /// The text retrievers see: `title + " " + text` as BEIR builds it, or `text` alone when
    /// there is no title.
    pub fn full_text(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            let mut s = String::with_capacity(self.title.len() + 1 + self.text.len());
            s.push_str(&self.title);
            s.push(' ');
            s.push_str(&self.text);
            s
        }
    }
}

/// A query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub id: String,
    pub text: String,
}

/// `_id` may be written as a string or as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Str(String),
    Int(i64),
    Uint(u64),
}

#[derive(Deserialize)]
struct RawRecord {
    #[serde(rename = "_id")]
    id: Option<IdValue>,
    title: Option<String>,
    text: Option<String>,
}

/// A record type of a BEIR JSONL file.
pub trait JsonlRecord: Sized {
    /// What the file holds, for messages ("document", "query").
    const KIND: &'static str;
    /// Builds the record, or says why it is invalid.
    fn from_fields(
        id: String,
        title: Option<String>,
        text: String,
    ) -> Result<Self, (SkipReason, String)>;
    /// The record's id.
    fn id(&self) -> &str;
}

impl JsonlRecord for Document {
    const KIND: &'static str = "document";

    fn from_fields(
        id: String,
        title: Option<String>,
        text: String,
    ) -> Result<Self, (SkipReason, String)> {
        let title = title.unwrap_or_default();
        if title.trim().is_empty() && text.trim().is_empty() {
            return Err((
                SkipReason::EmptyText,
                format!("document {} has empty text", quote(&id)),
            ));
        }
        Ok(Document { id, title, text })
    }

    fn id(&self) -> &str {
        &self.id
    }
}

impl JsonlRecord for Query {
    const KIND: &'static str = "query";

    fn from_fields(
        id: String,
        _title: Option<String>,
        text: String,
    ) -> Result<Self, (SkipReason, String)> {
        if text.trim().is_empty() {
            return Err((
                SkipReason::EmptyText,
                format!("query {} has empty text", quote(&id)),
            ));
        }
        Ok(Query { id, text })
    }

    fn id(&self) -> &str {
        &self.id
    }
}

/// Streams the records of a BEIR JSONL file (`corpus.jsonl` or `queries.jsonl`).
///
/// Yields valid records in file order. Invalid ones end the iteration with an error, or are
/// counted in [`JsonlReader::skips`] under [`InputPolicy::skip_invalid`]. Duplicate ids are
/// invalid: the first occurrence is kept.
pub struct JsonlReader<T> {
    lines: LineReader<BufReader<File>>,
    policy: InputPolicy,
    skips: SkipReport,
    first_seen: HashMap<String, u64>,
    done: bool,
    _record: PhantomData<T>,
}

/// Streams `corpus.jsonl`.
pub type CorpusReader = JsonlReader<Document>;
/// Streams `queries.jsonl`.
pub type QueriesReader = JsonlReader<Query>;

impl<T: JsonlRecord> JsonlReader<T> {
    /// Opens a JSONL file.
    pub fn open(path: &Path, policy: InputPolicy) -> Result<Self> {
        Ok(Self {
            lines: LineReader::open(path)?,
            policy,
            skips: SkipReport::default(),
            first_seen: HashMap::new(),
            done: false,
            _record: PhantomData,
        })
    }

    /// The records skipped so far.
    pub fn skips(&self) -> &SkipReport {
        &self.skips
    }

    /// Consumes the reader and returns its skip report.
    pub fn into_skips(self) -> SkipReport {
        self.skips
    }

    /// Reads the next valid record.
    fn read_next(&mut self) -> Result<Option<T>> {
        loop {
            let policy = self.policy;
            let (line_no, parsed) = {
                let Some(line) = self.lines.next_line()? else {
                    return Ok(None);
                };
                let parsed = match line {
                    Line::InvalidUtf8 { valid_up_to, lossy } => Err((
                        SkipReason::InvalidUtf8,
                        format!("invalid UTF-8 at byte {valid_up_to}: {}", quote(&lossy)),
                    )),
                    Line::Text(text) if text.trim().is_empty() => continue,
                    Line::Text(text) => parse_record::<T>(text),
                };
                (self.lines.line_no(), parsed)
            };
            let path = self.lines.path().to_path_buf();
            match parsed {
                Ok(record) => match self.first_seen.get(record.id()) {
                    Some(&first) => {
                        let message = format!(
                            "duplicate {} id {} (first on line {first})",
                            T::KIND,
                            quote(record.id())
                        );
                        self.skips.reject(
                            policy,
                            &path,
                            line_no,
                            SkipReason::DuplicateId,
                            message,
                        )?;
                    }
                    None => {
                        self.first_seen.insert(record.id().to_string(), line_no);
                        return Ok(Some(record));
                    }
                },
                Err((reason, message)) => {
                    self.skips.reject(policy, &path, line_no, reason, message)?;
                }
            }
        }
    }
}

fn parse_record<T: JsonlRecord>(line: &str) -> Result<T, (SkipReason, String)> {
    let raw: RawRecord = serde_json::from_str(line).map_err(|e| {
        (
            SkipReason::MalformedJson,
            format!("malformed JSON ({e}): {}", quote(line)),
        )
    })?;
    let id = match raw.id {
        None => {
            return Err((
                SkipReason::MissingId,
                format!("missing field \"_id\": {}", quote(line)),
            ))
        }
        Some(IdValue::Str(s)) => s,
        Some(IdValue::Int(i)) => i.to_string(),
        Some(IdValue::Uint(u)) => u.to_string(),
    };
    if id.trim().is_empty() {
        return Err((
            SkipReason::MissingId,
            format!("empty \"_id\": {}", quote(line)),
        ));
    }
    let Some(text) = raw.text else {
        return Err((
            SkipReason::MissingText,
            format!("missing field \"text\": {}", quote(line)),
        ));
    };
    T::from_fields(id, raw.title, text)
}

impl<T: JsonlRecord> Iterator for JsonlReader<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_next() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads a whole JSONL file into memory, adding its skips to `skips`.
pub fn read_jsonl<T: JsonlRecord>(
    path: &Path,
    policy: InputPolicy,
    skips: &mut SkipReport,
) -> Result<Vec<T>> {
    let mut reader = JsonlReader::<T>::open(path, policy)?;
    let records = reader.by_ref().collect::<Result<Vec<T>>>()?;
    skips.merge(reader.into_skips());
    Ok(records)
}

/// Relevance judgments: query id → document id → graded relevance.
///
/// Zero and negative grades are kept; measures treat them as judged non-relevant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qrels {
    judgments: BTreeMap<String, BTreeMap<String, i32>>,
}

impl Qrels {
    /// Builds qrels from (query, document, relevance) triples; a later triple for the same pair
    /// replaces an earlier one.
    pub fn from_triples<'a>(triples: impl IntoIterator<Item = (&'a str, &'a str, i32)>) -> Self {
        let mut qrels = Qrels::default();
        for (q, d, r) in triples {
            qrels.insert(q.to_string(), d.to_string(), r);
        }
        qrels
    }

    /// Adds one judgment; returns the previous grade of the pair, if any.
    pub fn insert(&mut self, query: String, doc: String, relevance: i32) -> Option<i32> {
        self.judgments
            .entry(query)
            .or_default()
            .insert(doc, relevance)
    }

    /// The judgments of one query.
    pub fn get(&self, query: &str) -> Option<&BTreeMap<String, i32>> {
        self.judgments.get(query)
    }

    /// Iterates over queries in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, i32>)> {
        self.judgments.iter()
    }

    /// The judged query ids, in order.
    pub fn query_ids(&self) -> impl Iterator<Item = &str> {
        self.judgments.keys().map(String::as_str)
    }

    /// Number of judged queries.
    pub fn num_queries(&self) -> usize {
        self.judgments.len()
    }

    /// Number of judgments.
    pub fn num_judgments(&self) -> usize {
        self.judgments.values().map(BTreeMap::len).sum()
    }

    /// Writes the qrels in BEIR's layout (header line, tab-separated, queries and documents in
    /// id order), atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut file = AtomicFile::create(path)?;
        let w = file.writer();
        let io = |e| crate::Error::io(path, e);
        writeln!(w, "query-id\tcorpus-id\tscore").map_err(io)?;
        for (query, docs) in &self.judgments {
            for (doc, grade) in docs {
                writeln!(w, "{query}\t{doc}\t{grade}").map_err(io)?;
            }
        }
        file.commit()
    }

    /// Reads a qrels file, accepting every query and document id.
    pub fn read(path: &Path, policy: InputPolicy, skips: &mut SkipReport) -> Result<Self> {
        Self::read_checked(path, policy, skips, |_| true, |_| true)
    }

    /// Reads a qrels file; judgments naming a query for which `is_query` is false or a document
    /// for which `is_doc` is false are invalid.
    pub fn read_checked(
        path: &Path,
        policy: InputPolicy,
        skips: &mut SkipReport,
        is_query: impl Fn(&str) -> bool,
        is_doc: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        let mut lines = LineReader::open(path)?;
        let mut qrels = Qrels::default();
        let mut first_seen: HashMap<(String, String), u64> = HashMap::new();
        let mut columns: Option<usize> = None;
        loop {
            let line = match lines.next_line()? {
                None => break,
                Some(Line::Text(t)) if t.trim().is_empty() => continue,
                Some(Line::Text(t)) => t.to_string(),
                Some(Line::InvalidUtf8 { valid_up_to, lossy }) => {
                    let message = format!("invalid UTF-8 at byte {valid_up_to}: {}", quote(&lossy));
                    skips.reject(
                        policy,
                        path,
                        lines.line_no(),
                        SkipReason::InvalidUtf8,
                        message,
                    )?;
                    continue;
                }
            };
            let line_no = lines.line_no();
            let fields: Vec<&str> = if line.contains('\t') {
                line.split('\t').map(str::trim).collect()
            } else {
                line.split_whitespace().collect()
            };
            let relevance = fields.last().and_then(|f| f.parse::<i32>().ok());
            if line_no == 1 && relevance.is_none() && matches!(fields.len(), 3 | 4) {
                continue; // a header line such as "query-id\tcorpus-id\tscore"
            }
            let expected = *columns.get_or_insert(if fields.len() == 4 { 4 } else { 3 });
            if fields.len() != expected {
                let what = if expected == 3 {
                    "3 fields (query-id, corpus-id, score)"
                } else {
                    "4 fields (query-id, iteration, doc-id, relevance)"
                };
                let message = format!("expected {what}, found {}: {}", fields.len(), quote(&line));
                skips.reject(policy, path, line_no, SkipReason::WrongFieldCount, message)?;
                continue;
            }
            let (query, doc) = (fields[0], fields[expected - 2]);
            let Some(relevance) = relevance else {
                let message = format!(
                    "relevance is not an integer: {}",
                    quote(fields[expected - 1])
                );
                skips.reject(policy, path, line_no, SkipReason::BadRelevance, message)?;
                continue;
            };
            if query.is_empty() || doc.is_empty() {
                let message = format!("empty query or document id: {}", quote(&line));
                skips.reject(policy, path, line_no, SkipReason::MissingId, message)?;
                continue;
            }
            if !is_query(query) {
                let message = format!("unknown query id {}", quote(query));
                skips.reject(policy, path, line_no, SkipReason::UnknownQuery, message)?;
                continue;
            }
            if !is_doc(doc) {
                let message = format!("unknown document id {}", quote(doc));
                skips.reject(policy, path, line_no, SkipReason::UnknownDocument, message)?;
                continue;
            }
            let key = (query.to_string(), doc.to_string());
            if let Some(&first) = first_seen.get(&key) {
                let message = format!(
                    "duplicate judgment for query {} and document {} (first on line {first})",
                    quote(query),
                    quote(doc)
                );
                skips.reject(
                    policy,
                    path,
                    line_no,
                    SkipReason::DuplicateJudgment,
                    message,
                )?;
                continue;
            }
            first_seen.insert(key.clone(), line_no);
            qrels.insert(key.0, key.1, relevance);
        }
        Ok(qrels)
    }
}

/// The paths of a BEIR dataset folder.
#[derive(Debug, Clone)]
pub struct BeirPaths {
    pub corpus: PathBuf,
    pub queries: PathBuf,
    pub qrels_dir: PathBuf,
}

impl BeirPaths {
    /// The standard layout under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            corpus: dir.join("corpus.jsonl"),
            queries: dir.join("queries.jsonl"),
            qrels_dir: dir.join("qrels"),
        }
    }

    /// `qrels/<split>.tsv`.
    pub fn qrels(&self, split: &str) -> PathBuf {
        self.qrels_dir.join(format!("{split}.tsv"))
    }
}

/// One split of a BEIR dataset in memory: the corpus, the queries, and the split's qrels
/// checked against both (a judgment naming an unknown query or document is invalid input: an
/// error naming the qrels line, or a counted skip under `--skip-invalid`).
#[derive(Debug)]
pub struct Split {
    pub docs: Vec<Document>,
    pub queries: Vec<Query>,
    pub qrels: Qrels,
    /// The files read: corpus, queries, qrels.
    pub files: Vec<PathBuf>,
}

impl Split {
    /// Reads split `split` of the BEIR folder `paths` (its corpus, queries and
    /// `qrels/<split>.tsv`).
    pub fn load(
        paths: &BeirPaths,
        split: &str,
        policy: InputPolicy,
        skips: &mut SkipReport,
    ) -> Result<Self> {
        Self::load_with_corpus(paths, &paths.corpus, split, policy, skips)
    }

    /// [`Split::load`] with the corpus read from `corpus` instead of the folder's.
    pub fn load_with_corpus(
        paths: &BeirPaths,
        corpus: &Path,
        split: &str,
        policy: InputPolicy,
        skips: &mut SkipReport,
    ) -> Result<Self> {
        let docs: Vec<Document> = read_jsonl(corpus, policy, skips)?;
        let queries: Vec<Query> = read_jsonl(&paths.queries, policy, skips)?;
        let qrels_path = paths.qrels(split);
        let qrels = {
            let doc_ids: std::collections::HashSet<&str> =
                docs.iter().map(|d| d.id.as_str()).collect();
            let query_ids: std::collections::HashSet<&str> =
                queries.iter().map(|q| q.id.as_str()).collect();
            Qrels::read_checked(
                &qrels_path,
                policy,
                skips,
                |q| query_ids.contains(q),
                |d| doc_ids.contains(d),
            )?
        };
        Ok(Split {
            docs,
            queries,
            qrels,
            files: vec![corpus.to_path_buf(), paths.queries.clone(), qrels_path],
        })
    }

    /// Each judged query with its relevant documents (grade ≥ 1) as indices into `docs`, in
    /// query id order; a query judged only non-relevant has no pair and is left out.
    pub fn positives(&self) -> Vec<(&Query, Vec<usize>)> {
        let doc_index: HashMap<&str, usize> = self
            .docs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.as_str(), i))
            .collect();
        let query_index: HashMap<&str, &Query> =
            self.queries.iter().map(|q| (q.id.as_str(), q)).collect();
        self.qrels
            .iter()
            .filter_map(|(qid, judged)| {
                let positives: Vec<usize> = judged
                    .iter()
                    .filter(|(_, &grade)| grade >= 1)
                    .map(|(d, _)| doc_index[d.as_str()])
                    .collect();
                (!positives.is_empty()).then(|| (query_index[qid.as_str()], positives))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        path
    }

    #[test]
    fn reads_corpus_with_bom_crlf_numeric_ids_and_missing_titles() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "corpus.jsonl",
            b"\xEF\xBB\xBF{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"x\"}\r\n\r\n{\"_id\": 7, \"text\": \"y\", \"metadata\": {}}\r\n{\"_id\": \"d3\", \"title\": null, \"text\": \"z\"}",
        );
        let docs: Vec<Document> =
            read_jsonl(&path, InputPolicy::default(), &mut SkipReport::default()).unwrap();
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d1", "7", "d3"]);
        assert_eq!(docs[0].full_text(), "T x");
        assert_eq!(docs[1].full_text(), "y");
        assert_eq!(docs[2].full_text(), "z");
    }

    #[test]
    fn qrels_header_graded_negative_and_trec_format() {
        let dir = tempfile::tempdir().unwrap();
        let beir = write(
            &dir,
            "a.tsv",
            b"query-id\tcorpus-id\tscore\r\nq1\td1\t2\r\nq1\td2\t0\r\nq2\td1\t-1\r\n",
        );
        let qrels = Qrels::read(&beir, InputPolicy::default(), &mut SkipReport::default()).unwrap();
        assert_eq!(qrels.num_queries(), 2);
        assert_eq!(qrels.get("q1").unwrap()["d1"], 2);
        assert_eq!(qrels.get("q1").unwrap()["d2"], 0);
        assert_eq!(qrels.get("q2").unwrap()["d1"], -1);
        let trec = write(&dir, "b.txt", b"q1 0 d1 1\nq1 0 d2 3\n");
        let qrels = Qrels::read(&trec, InputPolicy::default(), &mut SkipReport::default()).unwrap();
        assert_eq!(qrels.get("q1").unwrap()["d2"], 3);
    }

    #[test]
    fn a_split_checks_its_qrels_and_lists_positives_in_query_order() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir,
            "corpus.jsonl",
            b"{\"_id\": \"d1\", \"text\": \"one\"}\n{\"_id\": \"d2\", \"text\": \"two\"}\n",
        );
        write(
            &dir,
            "queries.jsonl",
            b"{\"_id\": \"q2\", \"text\": \"b\"}\n{\"_id\": \"q1\", \"text\": \"a\"}\n{\"_id\": \"q3\", \"text\": \"c\"}\n",
        );
        std::fs::create_dir(dir.path().join("qrels")).unwrap();
        write(
            &dir,
            "qrels/test.tsv",
            b"q2\td2\t1\nq1\td1\t2\nq1\td2\t1\nq3\td1\t0\n",
        );
        write(
            &dir,
            "qrels/bad.tsv",
            b"q1\td1\t1\nq1\tnope\t1\nq9\td1\t1\n",
        );
        let paths = BeirPaths::new(dir.path());
        let mut skips = SkipReport::default();
        let split = Split::load(&paths, "test", InputPolicy::default(), &mut skips).unwrap();
        let positives: Vec<(&str, Vec<usize>)> = split
            .positives()
            .into_iter()
            .map(|(q, p)| (q.id.as_str(), p))
            .collect();
        // q3 is judged only non-relevant: no pair.
        assert_eq!(positives, [("q1", vec![0, 1]), ("q2", vec![1])]);
        assert_eq!(split.files[2], dir.path().join("qrels/test.tsv"));

        let err = Split::load(&paths, "bad", InputPolicy::default(), &mut skips).unwrap_err();
        assert!(err.to_string().contains("bad.tsv:2"), "{err}");
        let skip = InputPolicy { skip_invalid: true };
        let mut skips = SkipReport::default();
        let split = Split::load(&paths, "bad", skip, &mut skips).unwrap();
        assert_eq!((split.qrels.num_judgments(), skips.total()), (1, 2));
    }
}
