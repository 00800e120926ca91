//! Writing the training formats: the rows of one query's result in each format, and
//! [`TrainingWriter`], which writes the files of the formats a stage was asked for.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use foil_core::fsutil::AtomicFile;
use foil_core::{Error, Result};
use serde_json::{json, Map, Value};

use super::Format;

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
        // Written by the stage itself: it carries the method and each score's provenance.
        Format::Negatives => {}
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

/// The files of the training formats a stage writes: `<format>.jsonl` for each, and
/// `<format>.parquet` too when asked. JSON Lines are written as rows come; Parquet, whose
/// columns are written per row group, at the end from rows kept in memory.
pub struct TrainingWriter {
    dir: PathBuf,
    num_negatives: usize,
    outputs: Vec<Output>,
}

struct Output {
    format: Format,
    path: PathBuf,
    jsonl: AtomicFile,
    rows: u64,
    parquet: Option<Vec<Value>>,
}

/// What a [`TrainingWriter`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Format name → rows.
    pub rows: BTreeMap<String, u64>,
    /// The files, relative to the folder, in the order of the formats (JSON Lines, then
    /// Parquet).
    pub files: Vec<String>,
}

impl TrainingWriter {
    /// Opens a file per format in `dir`; `num_negatives` is N of the n-tuple formats.
    pub fn create(
        dir: &Path,
        formats: &[Format],
        num_negatives: usize,
        parquet: bool,
    ) -> Result<TrainingWriter> {
        if formats.contains(&Format::Negatives) {
            return Err(Error::Invalid(
                "formats: negatives.jsonl is always written; it is not a training format to ask for"
                    .into(),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let outputs = formats
            .iter()
            .map(|&format| {
                let path = dir.join(format!("{}.jsonl", format.name()));
                Ok(Output {
                    format,
                    jsonl: AtomicFile::create(&path)?,
                    path,
                    rows: 0,
                    parquet: parquet.then(Vec::new),
                })
            })
            .collect::<Result<_>>()?;
        Ok(TrainingWriter {
            dir: dir.to_path_buf(),
            num_negatives,
            outputs,
        })
    }

    /// Writes one query's rows in every format.
    pub fn write(&mut self, result: &QueryResult) -> Result<()> {
        for out in &mut self.outputs {
            for row in rows(out.format, result, self.num_negatives) {
                writeln!(out.jsonl.writer(), "{row}").map_err(|e| Error::io(&out.path, e))?;
                out.rows += 1;
                if let Some(kept) = &mut out.parquet {
                    kept.push(row);
                }
            }
        }
        Ok(())
    }

    /// Commits every file.
    pub fn finish(self) -> Result<Written> {
        let mut written = Written::default();
        for out in self.outputs {
            out.jsonl.commit()?;
            let name = out.format.name();
            written.rows.insert(name.to_string(), out.rows);
            written.files.push(format!("{name}.jsonl"));
            if let Some(rows) = out.parquet {
                let file = format!("{name}.parquet");
                crate::table::write_parquet(&self.dir.join(&file), &rows)?;
                written.files.push(file);
            }
        }
        Ok(written)
    }
}
