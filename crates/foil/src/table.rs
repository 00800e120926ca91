//! Training tables as JSON Lines or Parquet: rows are JSON objects either way.
//!
//! Training data moves between tools as tables (sentence-transformers and Hugging Face
//! datasets read Parquet; FlagEmbedding and Tevatron read JSON Lines). foil builds rows as
//! JSON objects and this module stores them: [`write_parquet`] infers a Parquet schema from
//! the rows (strings, integers, floats, lists of those, and lists of records of strings such as
//! Tevatron's passages), and [`read_rows`] reads either format back into objects, numbering
//! rows from 1 for error messages.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use foil_core::fsutil::AtomicFile;
use foil_core::lines::{Line, LineReader};
use foil_core::SkipReason;
use foil_core::{Error, Result};
use parquet::basic::{Compression, ConvertedType, Repetition, Type as Physical};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde_json::{Map, Value};

/// Rows per Parquet row group: bounds the memory of a writer.
const ROW_GROUP: usize = 8192;

/// Whether `path` names a Parquet file (by extension).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// The type of one column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Str,
    Int,
    Float,
    StrList,
    IntList,
    FloatList,
    /// A list of records whose fields (these, in this order) are strings.
    RecordList(Vec<String>),
}

impl Column {
    /// The type of a value; an empty list reads as a list of strings.
    fn of(value: &Value) -> Option<Column> {
        Some(match value {
            Value::String(_) => Column::Str,
            Value::Number(n) if n.is_i64() => Column::Int,
            Value::Number(_) => Column::Float,
            Value::Array(items) => match items.first() {
                Some(Value::String(_)) | None => Column::StrList,
                Some(Value::Number(n)) if n.is_i64() => Column::IntList,
                Some(Value::Number(_)) => Column::FloatList,
                Some(Value::Object(record))
                    if record.values().all(Value::is_string) && !record.is_empty() =>
                {
                    Column::RecordList(record.keys().cloned().collect())
                }
                _ => return None,
            },
            _ => return None,
        })
    }

    /// A column's type: that of its first row, or of the first non-empty list when the first
    /// rows hold empty lists.
    fn infer<'a>(mut values: impl Iterator<Item = &'a Value>) -> Option<Column> {
        let first = Column::of(values.next()?)?;
        if first != Column::StrList {
            return Some(first);
        }
        let later = values
            .find(|v| v.as_array().is_some_and(|a| !a.is_empty()))
            .and_then(Column::of);
        Some(match later {
            Some(c) if c.is_list() => c,
            _ => first,
        })
    }

    /// Whether `v` can be stored in a column of this type.
    fn accepts(&self, v: &Value) -> bool {
        let empty_list = v.as_array().is_some_and(Vec::is_empty);
        match self {
            Column::Float => v.is_number(),
            Column::FloatList => v.is_array(),
            Column::RecordList(_) => v
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_object)),
            kind => Column::of(v).as_ref() == Some(kind) || (kind.is_list() && empty_list),
        }
    }

    fn is_list(&self) -> bool {
        matches!(
            self,
            Column::StrList | Column::IntList | Column::FloatList | Column::RecordList(_)
        )
    }

    /// The leaf columns Parquet stores: one, or one per field of a record list.
    fn leaves(&self) -> Vec<Option<&str>> {
        match self {
            Column::RecordList(fields) => fields.iter().map(|f| Some(f.as_str())).collect(),
            _ => vec![None],
        }
    }

    /// The Parquet type: required scalars, and required lists in the standard three-level
    /// layout (`group (LIST) { repeated group list { required element } }`), where the
    /// element of a record list is a group of required strings.
    fn parquet_type(&self, name: &str) -> Result<Type> {
        let leaf = |name: &str, repetition: Repetition| -> parquet::errors::Result<Type> {
            let (physical, converted) = match self {
                Column::Str | Column::StrList | Column::RecordList(_) => {
                    (Physical::BYTE_ARRAY, ConvertedType::UTF8)
                }
                Column::Int | Column::IntList => (Physical::INT64, ConvertedType::NONE),
                Column::Float | Column::FloatList => (Physical::DOUBLE, ConvertedType::NONE),
            };
            Type::primitive_type_builder(name, physical)
                .with_converted_type(converted)
                .with_repetition(repetition)
                .build()
        };
        let element = || match self {
            Column::RecordList(fields) => fields
                .iter()
                .map(|f| leaf(f, Repetition::REQUIRED).map(Arc::new))
                .collect::<parquet::errors::Result<Vec<_>>>()
                .and_then(|fields| {
                    Type::group_type_builder("element")
                        .with_repetition(Repetition::REQUIRED)
                        .with_fields(fields)
                        .build()
                }),
            _ => leaf("element", Repetition::REQUIRED),
        };
        let built = if self.is_list() {
            element()
                .and_then(|element| {
                    Type::group_type_builder("list")
                        .with_repetition(Repetition::REPEATED)
                        .with_fields(vec![Arc::new(element)])
                        .build()
                })
                .and_then(|list| {
                    Type::group_type_builder(name)
                        .with_converted_type(ConvertedType::LIST)
                        .with_repetition(Repetition::REQUIRED)
                        .with_fields(vec![Arc::new(list)])
                        .build()
                })
        } else {
            leaf(name, Repetition::REQUIRED)
        };
        built.map_err(|e| Error::Invalid(format!("Parquet schema for column {name:?}: {e}")))
    }
}

/// Writes JSON-object rows as one JSON line each, atomically.
pub fn write_jsonl(path: &Path, rows: &[Value]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    for row in rows {
        writeln!(file.writer(), "{row}").map_err(|e| Error::io(path, e))?;
    }
    file.commit()
}

/// Writes JSON-object rows as a Parquet file (Snappy-compressed), atomically. The schema
/// comes from the first row: every row must have the same keys with values of the same kind.
/// No rows gives a file with no columns.
pub fn write_parquet(path: &Path, rows: &[Value]) -> Result<()> {
    let pq = |e: parquet::errors::ParquetError| Error::format(path, e.to_string());
    let first = rows.first().and_then(Value::as_object);
    let mut columns: Vec<(String, Column)> = Vec::new();
    if let Some(first) = first {
        for (name, value) in first {
            let values = rows.iter().filter_map(|r| r.get(name.as_str()));
            let column = Column::infer(values).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: column {name:?} holds {value}, which has no Parquet type here",
                    path.display()
                ))
            })?;
            columns.push((name.clone(), column));
        }
    }
    // The leaf columns in schema order: (column, field of a record list).
    let leaves: Vec<(&str, &Column, Option<&str>)> = columns
        .iter()
        .flat_map(|(name, column)| {
            column
                .leaves()
                .into_iter()
                .map(move |field| (name.as_str(), column, field))
        })
        .collect();
    let fields = columns
        .iter()
        .map(|(name, column)| column.parquet_type(name).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    let schema = Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
        .map_err(pq)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(concat!("foil ", env!("CARGO_PKG_VERSION")).to_string())
        .build();
    let mut file = AtomicFile::create(path)?;
    {
        let mut writer =
            SerializedFileWriter::new(file.writer(), Arc::new(schema), Arc::new(properties))
                .map_err(pq)?;
        for (group, chunk) in rows.chunks(ROW_GROUP).enumerate() {
            let mut row_group = writer.next_row_group().map_err(pq)?;
            let mut c = 0;
            while let Some(mut column_writer) = row_group.next_column().map_err(pq)? {
                let (name, kind, field) = leaves[c];
                let values = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, row)| {
                        let v = row.get(name).filter(|v| kind.accepts(v));
                        v.ok_or_else(|| {
                            Error::Invalid(format!(
                                "{}: row {}: column {name:?} is missing or not like the first row's",
                                path.display(),
                                group * ROW_GROUP + i + 1
                            ))
                        })
                    })
                    .collect::<Result<Vec<&Value>>>()?;
                write_column(column_writer.untyped(), kind, field, &values, path)?;
                column_writer.close().map_err(pq)?;
                c += 1;
            }
            row_group.close().map_err(pq)?;
        }
        writer.close().map_err(pq)?;
    }
    file.commit()
}

/// Writes one column chunk: values, and for lists the definition and repetition levels
/// (an empty list is one entry with definition level 0). For a record list, `field` names the
/// records' field this leaf column holds.
fn write_column(
    writer: &mut ColumnWriter,
    kind: &Column,
    field: Option<&str>,
    values: &[&Value],
    path: &Path,
) -> Result<()> {
    let mut def = Vec::new();
    let mut rep = Vec::new();
    let mut items: Vec<&Value> = Vec::new();
    if kind.is_list() {
        for v in values {
            let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
            if list.is_empty() {
                def.push(0);
                rep.push(0);
            }
            for (i, item) in list.iter().enumerate() {
                def.push(1);
                rep.push(if i == 0 { 0 } else { 1 });
                match field {
                    Some(f) => items.push(item.get(f).unwrap_or(&Value::Null)),
                    None => items.push(item),
                }
            }
        }
    } else {
        items.extend(values);
    }
    let (def, rep) = if kind.is_list() {
        (Some(def.as_slice()), Some(rep.as_slice()))
    } else {
        (None, None)
    };
    let bad = |what: &str| {
        Error::Invalid(format!(
            "{}: a list holds a non-{what} value",
            path.display()
        ))
    };
    let written = match writer {
        ColumnWriter::ByteArrayColumnWriter(w) => {
            let strings = items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(|s| ByteArray::from(s.as_bytes().to_vec()))
                        .ok_or_else(|| bad("string"))
                })
                .collect::<Result<Vec<_>>>()?;
            w.write_batch(&strings, def, rep)
        }
        ColumnWriter::Int64ColumnWriter(w) => {
            let ints = items
                .iter()
                .map(|v| v.as_i64().ok_or_else(|| bad("integer")))
                .collect::<Result<Vec<_>>>()?;
            w.write_batch(&ints, def, rep)
        }
        ColumnWriter::DoubleColumnWriter(w) => {
            let floats = items
                .iter()
                .map(|v| v.as_f64().ok_or_else(|| bad("number")))
                .collect::<Result<Vec<_>>>()?;
            w.write_batch(&floats, def, rep)
        }
        _ => unreachable!("only string, int64 and double columns are declared"),
    };
    written.map_err(|e| Error::format(path, e.to_string()))?;
    Ok(())
}

/// Reads a JSON Lines file of objects; blank lines are ignored, anything else that is not a
/// JSON object is an error naming `file:line`.
fn read_jsonl_objects(path: &Path) -> Result<Vec<(u64, Map<String, Value>)>> {
    let mut reader = LineReader::open(path)?;
    let mut out = Vec::new();
    loop {
        let no = reader.line_no() + 1;
        let Some(line) = reader.next_line()? else {
            break;
        };
        let text = match line {
            Line::Text(t) => t,
            Line::InvalidUtf8 { valid_up_to, .. } => {
                return Err(Error::Input {
                    file: path.to_path_buf(),
                    line: no,
                    reason: SkipReason::InvalidUtf8,
                    message: format!("invalid UTF-8 after byte {valid_up_to}"),
                })
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => out.push((no, map)),
            Ok(_) | Err(_) => {
                return Err(Error::Input {
                    file: path.to_path_buf(),
                    line: no,
                    reason: SkipReason::MalformedJson,
                    message: format!("not a JSON object: {}", foil_core::skip::quote(text)),
                })
            }
        }
    }
    Ok(out)
}

/// Reads a table (Parquet by extension, JSON Lines otherwise) as (row number, object) pairs;
/// row numbers count from 1 (the line number for JSON Lines).
pub fn read_rows(path: &Path) -> Result<Vec<(u64, Map<String, Value>)>> {
    if !is_parquet(path) {
        return read_jsonl_objects(path);
    }
    let pq = |e: parquet::errors::ParquetError| Error::format(path, e.to_string());
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(pq)?;
    let mut out = Vec::with_capacity(reader.metadata().file_metadata().num_rows().max(0) as usize);
    for (i, row) in reader.into_iter().enumerate() {
        match row.map_err(pq)?.to_json_value() {
            Value::Object(map) => out.push((i as u64 + 1, map)),
            other => {
                return Err(Error::format(
                    path,
                    format!("row {}: not a record: {other}", i + 1),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parquet_stores_lists_of_records_typed_by_the_first_non_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tevatron.parquet");
        let rows = vec![
            json!({"query_id": "1", "negative_passages": []}),
            json!({"query_id": "2", "negative_passages": [
                {"docid": "d1", "title": "T", "text": "one"},
                {"docid": "d2", "title": "", "text": "two"},
            ]}),
        ];
        write_parquet(&path, &rows).unwrap();
        let back: Vec<Value> = read_rows(&path)
            .unwrap()
            .into_iter()
            .map(|(_, r)| Value::Object(r))
            .collect();
        assert_eq!(back, rows);
        let missing = vec![
            json!({"p": [{"docid": "d1", "text": "x"}]}),
            json!({"p": [{"docid": "d2"}]}),
        ];
        let err = write_parquet(&path, &missing).unwrap_err().to_string();
        assert!(err.contains("non-string"), "{err}");
    }

    #[test]
    fn parquet_round_trips_every_column_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let rows = vec![
            json!({"anchor": "q1", "label": 1, "score": 0.5, "positive": ["a", "b"], "labels": [1, 0], "scores": [0.25, -1.5]}),
            json!({"anchor": "q2 ünï", "label": 0, "score": 2, "positive": [], "labels": [0], "scores": []}),
        ];
        write_parquet(&path, &rows).unwrap();
        let back = read_rows(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0, 1);
        assert_eq!(Value::Object(back[0].1.clone()), rows[0]);
        assert_eq!(back[1].1["anchor"], "q2 ünï");
        assert_eq!(back[1].1["score"], 2.0);
        assert_eq!(back[1].1["positive"], json!([]));
        assert_eq!(back[1].1["scores"], json!([]));
        assert_eq!(back[1].1["labels"], json!([0]));
    }

    #[test]
    fn parquet_is_byte_identical_for_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<Value> = (0..20_000)
            .map(|i| json!({"anchor": format!("query {i}"), "negative_1": "x"}))
            .collect();
        let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        write_parquet(&a, &rows).unwrap();
        write_parquet(&b, &rows).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(read_rows(&a).unwrap().len(), 20_000);
    }

    #[test]
    fn rows_unlike_the_first_are_an_error_naming_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let rows = vec![json!({"anchor": "q"}), json!({"anchor": 3})];
        let err = write_parquet(&path, &rows).unwrap_err().to_string();
        assert!(err.contains("row 2") && err.contains("anchor"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn a_file_that_is_not_parquet_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        std::fs::write(&path, b"{\"anchor\": 1}\n").unwrap();
        let err = read_rows(&path).unwrap_err().to_string();
        assert!(err.contains("t.parquet"), "{err}");
    }
}
