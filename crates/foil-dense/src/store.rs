//! The on-disk embeddings store: a folder of vectors and their ids, appended chunk by chunk so
//! that a long encoding job killed half-way resumes where it stopped, with a checksum per
//! chunk so that damaged data is never read as vectors.
//!
//! ```text
//! <dir>/header.json   {"format": "foil-embeddings", "version": 3, "dim": 384, "count": 1000,
//!                      "normalized": true, "provenance": {"encoder": "<fingerprint>",
//!                      "kind": "passage"}, "dtype": "f32le",
//!                      "ids_bytes": 9890, "complete": true,
//!                      "chunks": [{"rows": 1000, "ids_bytes": 9890,
//!                                  "ids_crc32": 1234, "vectors_crc32": 5678}]}
//! <dir>/ids.jsonl     one JSON string per row: "doc-17"
//! <dir>/vectors.f32   count × dim little-endian f32, row-major, nothing else
//! <dir>/append.lock   taken by a writer while it commits (see below)
//! ```
//!
//! `header.json` is the commit point. [`EmbeddingsWriter::append`] appends the chunk's ids and
//! vectors to the two data files, syncs them, then replaces `header.json` atomically with the
//! new `count` (rows), `ids_bytes` (committed length of `ids.jsonl`) and the chunk's record:
//! its rows, the length of its ids and the CRC-32 of its ids bytes and of its vector bytes. A
//! process killed during an append leaves the previous header, so readers see the last
//! committed chunk: they read exactly `count` rows and the first `ids_bytes` of `ids.jsonl`
//! and ignore anything after (a partial chunk, possibly ending in a partial row or line), and
//! [`EmbeddingsWriter::resume`] truncates the data files back to the committed lengths before
//! appending again. `complete` is set by [`EmbeddingsWriter::finish`]. `vectors.f32` has no
//! header, so that it can be memory-mapped as a row-major `f32` matrix.
//!
//! Readers check every chunk against its checksums ([`EmbeddingsReader::next_chunk`]): a
//! strict reader ([`StoredEmbeddings::read`], for a store the user named) fails with an error
//! naming the file and the chunk; the embedding cache drops the chunk and recomputes it.
//! Format 1 (no `chunks`, no checksums) is still read, as one unverified chunk; writers do not
//! extend it. Formats 1 and 2 recorded the [`Provenance`] as one string (`encoder`); they are
//! read into the typed record, and a writer that extends a format 2 store rewrites its header
//! as format 3 (nothing else differs).
//!
//! Locks between processes ([`foil_core::lock`]): the folder itself is the users' lock —
//! shared by readers and by processes that append between their other work, exclusive for a
//! writer that owns the store (an `encode` output) or rewrites it (`foil cache gc`) — and
//! `append.lock` serializes the commits of writers that share a store (the embedding cache).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Take, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use foil_core::fsutil::write_atomic;
use foil_core::{Embeddings, Error, Result};
use serde::{Deserialize, Serialize};

use crate::provenance::Provenance;
use crate::vectors::EmbeddingsView;

/// The `format` of every header.
pub const FORMAT: &str = "foil-embeddings";
/// The version of the format this build writes (it also reads versions 1 and 2).
pub const FORMAT_VERSION: u32 = 3;
/// The only element type so far.
pub const DTYPE: &str = "f32le";
pub const HEADER_FILE: &str = "header.json";
pub const IDS_FILE: &str = "ids.jsonl";
pub const VECTORS_FILE: &str = "vectors.f32";
/// The lock file writers that share a store take while they commit.
pub const APPEND_LOCK_FILE: &str = "append.lock";

/// What the vectors of a store are: the part of the header its writer chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    pub dim: usize,
    /// Whether the rows have unit norm.
    pub normalized: bool,
    /// What made the vectors.
    pub provenance: Provenance,
}

/// One committed chunk of a store, as `header.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub rows: u64,
    /// Bytes of `ids.jsonl` the chunk's ids take.
    pub ids_bytes: u64,
    /// CRC-32 (IEEE) of those bytes.
    pub ids_crc32: u32,
    /// CRC-32 of the chunk's `rows × dim × 4` bytes of `vectors.f32`.
    pub vectors_crc32: u32,
}

/// `header.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawHeader")]
pub struct StoreHeader {
    pub format: String,
    pub version: u32,
    pub dim: usize,
    /// Committed rows.
    pub count: u64,
    pub normalized: bool,
    pub provenance: Provenance,
    pub dtype: String,
    /// Committed length of `ids.jsonl` in bytes.
    pub ids_bytes: u64,
    /// Set once the writer finished; false while a job is (or was, when killed) appending.
    pub complete: bool,
    /// The committed chunks in order (empty in format 1, which has no checksums).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRecord>,
}

/// `header.json` as any version wrote it: the provenance as a record (format 3) or a string
/// (`encoder`, formats 1 and 2).
#[derive(Deserialize)]
struct RawHeader {
    format: String,
    version: u32,
    dim: usize,
    count: u64,
    normalized: bool,
    #[serde(default)]
    provenance: Option<Provenance>,
    #[serde(default)]
    encoder: Option<String>,
    dtype: String,
    ids_bytes: u64,
    complete: bool,
    #[serde(default)]
    chunks: Vec<ChunkRecord>,
}

impl TryFrom<RawHeader> for StoreHeader {
    type Error = String;

    fn try_from(raw: RawHeader) -> std::result::Result<Self, String> {
        let provenance = match (raw.provenance, raw.encoder) {
            (Some(p), _) => p,
            (None, Some(s)) => Provenance::parse_legacy(&s).ok_or_else(|| {
                format!("its encoder {s:?} is not a provenance foil wrote; remove the store")
            })?,
            (None, None) => return Err("it records no provenance".into()),
        };
        Ok(StoreHeader {
            format: raw.format,
            version: raw.version,
            dim: raw.dim,
            count: raw.count,
            normalized: raw.normalized,
            provenance,
            dtype: raw.dtype,
            ids_bytes: raw.ids_bytes,
            complete: raw.complete,
            chunks: raw.chunks,
        })
    }
}

impl StoreHeader {
    fn new(spec: &StoreSpec) -> Self {
        Self {
            format: FORMAT.to_string(),
            version: FORMAT_VERSION,
            dim: spec.dim,
            count: 0,
            normalized: spec.normalized,
            provenance: spec.provenance.clone(),
            dtype: DTYPE.to_string(),
            ids_bytes: 0,
            complete: false,
            chunks: Vec::new(),
        }
    }

    /// Reads and checks `<dir>/header.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(HEADER_FILE);
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let header: StoreHeader =
            serde_json::from_slice(&text).map_err(|e| Error::format(&path, e.to_string()))?;
        if header.format != FORMAT {
            return Err(Error::format(
                &path,
                format!("not an embeddings store: format {:?}", header.format),
            ));
        }
        if !(1..=FORMAT_VERSION).contains(&header.version) {
            return Err(Error::format(
                &path,
                format!(
                    "format version {} is not supported (this build reads 1 to {FORMAT_VERSION})",
                    header.version
                ),
            ));
        }
        if header.dtype != DTYPE || header.dim == 0 {
            return Err(Error::format(
                &path,
                format!("unsupported dtype {:?} or dim {}", header.dtype, header.dim),
            ));
        }
        if header.checksummed() {
            let rows: u64 = header.chunks.iter().map(|c| c.rows).sum();
            let ids: u64 = header.chunks.iter().map(|c| c.ids_bytes).sum();
            if (rows, ids) != (header.count, header.ids_bytes) {
                return Err(Error::format(
                    &path,
                    format!(
                        "its chunks hold {rows} rows and {ids} id bytes, but it commits {} and {}",
                        header.count, header.ids_bytes
                    ),
                ));
            }
        }
        Ok(header)
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(HEADER_FILE);
        let mut text =
            serde_json::to_vec_pretty(self).map_err(|e| Error::format(&path, e.to_string()))?;
        text.push(b'\n');
        write_atomic(&path, &text)
    }

    /// Whether the store records a checksum per chunk (format 2 on).
    pub fn checksummed(&self) -> bool {
        self.version >= 2
    }

    /// Committed length of `vectors.f32` in bytes.
    pub fn vectors_bytes(&self) -> u64 {
        self.count.saturating_mul(self.row_bytes())
    }

    fn row_bytes(&self) -> u64 {
        self.dim as u64 * 4
    }

    /// The committed chunks; a format-1 store is one chunk without checksums.
    fn chunk_layout(&self) -> Vec<(ChunkRecord, bool)> {
        if self.checksummed() {
            self.chunks.iter().map(|c| (*c, true)).collect()
        } else if self.count == 0 {
            Vec::new()
        } else {
            let whole = ChunkRecord {
                rows: self.count,
                ids_bytes: self.ids_bytes,
                ids_crc32: 0,
                vectors_crc32: 0,
            };
            vec![(whole, false)]
        }
    }

    /// Whether this store holds vectors as `spec` describes them (and can be appended to).
    pub fn matches(&self, spec: &StoreSpec) -> bool {
        self.spec_mismatch(spec).is_none()
    }

    fn spec_mismatch(&self, spec: &StoreSpec) -> Option<String> {
        if self.dim != spec.dim {
            Some(format!("dim {}, not {}", self.dim, spec.dim))
        } else if self.provenance != spec.provenance {
            Some(format!("{}, not {}", self.provenance, spec.provenance))
        } else if self.normalized != spec.normalized {
            Some(format!(
                "normalized {}, not {}",
                self.normalized, spec.normalized
            ))
        } else if !self.checksummed() {
            Some(format!(
                "format {} (no checksums, written by an older foil)",
                self.version
            ))
        } else {
            None
        }
    }
}

/// Appends rows to a store; see the module documentation for the commit protocol.
///
/// One writer per folder at a time: an owner holds the folder's lock, writers that share a
/// store hold `append.lock` while they append. After an append fails half-way, the writer
/// refuses further appends; [`EmbeddingsWriter::resume`] continues from the last committed
/// chunk.
pub struct EmbeddingsWriter {
    dir: PathBuf,
    header: StoreHeader,
    ids: BufWriter<File>,
    vectors: BufWriter<File>,
    /// An append failed after writing part of its chunk.
    failed: bool,
}

impl EmbeddingsWriter {
    /// Starts an empty store in `dir` (created if needed), replacing any store there.
    pub fn create(dir: &Path, spec: &StoreSpec) -> Result<Self> {
        if spec.dim == 0 {
            return Err(Error::Invalid("embeddings store: dim must be > 0".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // The empty header first: from then on, whatever the data files hold is uncommitted.
        let header = StoreHeader::new(spec);
        header.write(dir)?;
        Self::open_data(dir, header, true)
    }

    /// Continues the store in `dir`: drops what an interrupted append left past the last
    /// committed chunk, and appends after it. Starts a new store if `dir` has none. Fails if
    /// the store holds other vectors (dimension, encoder or normalization differ from `spec`)
    /// or is in format 1.
    pub fn resume(dir: &Path, spec: &StoreSpec) -> Result<Self> {
        if !dir.join(HEADER_FILE).exists() {
            return Self::create(dir, spec);
        }
        let mut header = StoreHeader::read(dir)?;
        if let Some(what) = header.spec_mismatch(spec) {
            return Err(Error::Invalid(format!(
                "{}: the store holds vectors of {what}; remove it or write elsewhere",
                dir.display()
            )));
        }
        for (name, len) in [
            (IDS_FILE, header.ids_bytes),
            (VECTORS_FILE, header.vectors_bytes()),
        ] {
            let path = dir.join(name);
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let actual = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            if actual < len {
                return Err(Error::format(
                    &path,
                    format!("{actual} bytes, but header.json commits {len}"),
                ));
            }
            file.set_len(len).map_err(|e| Error::io(&path, e))?;
        }
        // Format 2 differs only in how it spelled the provenance: the next commit writes 3.
        header.version = FORMAT_VERSION;
        Self::open_data(dir, header, false)
    }

    fn open_data(dir: &Path, header: StoreHeader, truncate: bool) -> Result<Self> {
        let open = |name: &str| -> Result<BufWriter<File>> {
            let path = dir.join(name);
            let file = OpenOptions::new()
                .create(true)
                .append(!truncate)
                .write(true)
                .truncate(truncate)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            Ok(BufWriter::with_capacity(1 << 16, file))
        };
        Ok(Self {
            ids: open(IDS_FILE)?,
            vectors: open(VECTORS_FILE)?,
            dir: dir.to_path_buf(),
            header,
            failed: false,
        })
    }

    /// The header as committed so far (`count` rows).
    pub fn header(&self) -> &StoreHeader {
        &self.header
    }

    /// Appends one chunk (`ids[i]` names row `i` of `vectors`) and commits it: once this
    /// returns, a reader or a resumed writer sees the chunk. Rows must be finite. An empty
    /// chunk commits nothing.
    pub fn append<S: AsRef<str>>(&mut self, ids: &[S], vectors: EmbeddingsView<'_>) -> Result<()> {
        let dim = self.header.dim;
        if ids.len() != vectors.len() {
            return Err(Error::Invalid(format!(
                "{} ids for {} vectors",
                ids.len(),
                vectors.len()
            )));
        }
        if !vectors.is_empty() && vectors.dim != dim {
            return Err(Error::Invalid(format!(
                "vectors of dimension {} for a store of dimension {dim}",
                vectors.dim
            )));
        }
        if let Some(bad) = vectors.data.iter().position(|x| !x.is_finite()) {
            return Err(Error::Invalid(format!(
                "vector of id {:?} has a non-finite value ({})",
                ids[bad / dim].as_ref(),
                vectors.data[bad]
            )));
        }
        if self.failed {
            return Err(Error::Invalid(format!(
                "{}: an earlier append failed; resume the store to continue",
                self.dir.display()
            )));
        }
        if ids.is_empty() {
            return Ok(());
        }
        self.failed = true;
        self.write_chunk(ids, vectors)?;
        self.failed = false;
        Ok(())
    }

    fn write_chunk<S: AsRef<str>>(&mut self, ids: &[S], vectors: EmbeddingsView<'_>) -> Result<()> {
        let ids_path = self.dir.join(IDS_FILE);
        let vectors_path = self.dir.join(VECTORS_FILE);
        let mut ids_bytes = 0u64;
        let mut ids_crc = crc32fast::Hasher::new();
        for id in ids {
            let mut line = serde_json::to_string(id.as_ref())
                .map_err(|e| Error::format(&ids_path, e.to_string()))?;
            line.push('\n');
            self.ids
                .write_all(line.as_bytes())
                .map_err(|e| Error::io(&ids_path, e))?;
            ids_crc.update(line.as_bytes());
            ids_bytes += line.len() as u64;
        }
        let mut vectors_crc = crc32fast::Hasher::new();
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in vectors.data.chunks(1 << 14) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
            vectors_crc.update(&buf);
            self.vectors
                .write_all(&buf)
                .map_err(|e| Error::io(&vectors_path, e))?;
        }
        for (w, path) in [
            (&mut self.ids, &ids_path),
            (&mut self.vectors, &vectors_path),
        ] {
            w.flush().map_err(|e| Error::io(path, e))?;
            w.get_ref().sync_data().map_err(|e| Error::io(path, e))?;
        }
        let mut header = self.header.clone();
        header.count += ids.len() as u64;
        header.ids_bytes += ids_bytes;
        header.complete = false;
        header.chunks.push(ChunkRecord {
            rows: ids.len() as u64,
            ids_bytes,
            ids_crc32: ids_crc.finalize(),
            vectors_crc32: vectors_crc.finalize(),
        });
        header.write(&self.dir)?;
        self.header = header;
        Ok(())
    }

    /// Marks the store complete.
    pub fn finish(mut self) -> Result<StoreHeader> {
        if self.failed {
            return Err(Error::Invalid(format!(
                "{}: an earlier append failed; resume the store to continue",
                self.dir.display()
            )));
        }
        self.header.complete = true;
        self.header.write(&self.dir)?;
        Ok(self.header)
    }
}

/// A committed chunk whose bytes do not match what its header records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The chunk's position in the header.
    pub chunk: usize,
    /// Its rows in the store.
    pub rows: Range<u64>,
    /// The damaged file.
    pub file: PathBuf,
    pub reason: String,
}

impl Corruption {
    /// The error a strict reader reports.
    pub fn into_error(self) -> Error {
        Error::format(
            &self.file,
            format!(
                "chunk {} (rows {}..{}) is damaged: {}",
                self.chunk, self.rows.start, self.rows.end, self.reason
            ),
        )
    }
}

/// One committed chunk as read: its rows, or what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkRead {
    Rows {
        ids: Vec<String>,
        embeddings: Embeddings,
    },
    Corrupt(Corruption),
}

/// Streams the committed chunks of a store, in order, checking each against its checksums.
pub struct EmbeddingsReader {
    dir: PathBuf,
    header: StoreHeader,
    layout: Vec<(ChunkRecord, bool)>,
    ids: Take<BufReader<File>>,
    vectors: Take<BufReader<File>>,
    /// The next chunk to read.
    chunk: usize,
    /// Its first row.
    row: u64,
}

impl EmbeddingsReader {
    /// Opens the store in `dir` (complete or not: check [`StoreHeader::complete`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let header = StoreHeader::read(dir)?;
        Self::open_at(dir, header, 0)
    }

    /// Opens the store in `dir`, as `header` commits it, at its chunk `first_chunk`: a
    /// process that read the first chunks earlier reads only the ones committed since.
    pub fn open_at(dir: &Path, header: StoreHeader, first_chunk: usize) -> Result<Self> {
        let layout = header.chunk_layout();
        let first_chunk = first_chunk.min(layout.len());
        let skip_rows: u64 = layout[..first_chunk].iter().map(|(c, _)| c.rows).sum();
        let skip_ids: u64 = layout[..first_chunk].iter().map(|(c, _)| c.ids_bytes).sum();
        let open = |name: &str, len: u64, skip: u64| -> Result<Take<BufReader<File>>> {
            let path = dir.join(name);
            let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let actual = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            if actual < len {
                return Err(Error::format(
                    &path,
                    format!("{actual} bytes, but header.json commits {len}"),
                ));
            }
            file.seek(SeekFrom::Start(skip))
                .map_err(|e| Error::io(&path, e))?;
            Ok(BufReader::with_capacity(1 << 16, file).take(len - skip))
        };
        Ok(Self {
            ids: open(IDS_FILE, header.ids_bytes, skip_ids)?,
            vectors: open(
                VECTORS_FILE,
                header.vectors_bytes(),
                skip_rows * header.row_bytes(),
            )?,
            dir: dir.to_path_buf(),
            layout,
            header,
            chunk: first_chunk,
            row: skip_rows,
        })
    }

    pub fn header(&self) -> &StoreHeader {
        &self.header
    }

    /// The next committed chunk, checked against its checksums, or `None` after the last.
    /// Damage is a [`ChunkRead::Corrupt`] (the reader goes on with the next chunk); only a
    /// failure to read the files is an error.
    pub fn next_chunk(&mut self) -> Result<Option<ChunkRead>> {
        let Some(&(record, verified)) = self.layout.get(self.chunk) else {
            return Ok(None);
        };
        let index = self.chunk;
        let rows = self.row..self.row + record.rows;
        self.chunk += 1;
        self.row = rows.end;

        let ids_path = self.dir.join(IDS_FILE);
        let vectors_path = self.dir.join(VECTORS_FILE);
        let mut id_bytes = vec![0u8; record.ids_bytes as usize];
        self.ids
            .read_exact(&mut id_bytes)
            .map_err(|e| Error::io(&ids_path, e))?;
        let mut vector_bytes = vec![0u8; (record.rows * self.header.row_bytes()) as usize];
        self.vectors
            .read_exact(&mut vector_bytes)
            .map_err(|e| Error::io(&vectors_path, e))?;
        let corrupt = |file: &Path, reason: String| {
            Ok(Some(ChunkRead::Corrupt(Corruption {
                chunk: index,
                rows: rows.clone(),
                file: file.to_path_buf(),
                reason,
            })))
        };
        if verified {
            let got = crc32fast::hash(&id_bytes);
            if got != record.ids_crc32 {
                return corrupt(
                    &ids_path,
                    format!(
                        "CRC-32 {got:08x}, header.json records {:08x}",
                        record.ids_crc32
                    ),
                );
            }
            let got = crc32fast::hash(&vector_bytes);
            if got != record.vectors_crc32 {
                return corrupt(
                    &vectors_path,
                    format!(
                        "CRC-32 {got:08x}, header.json records {:08x}",
                        record.vectors_crc32
                    ),
                );
            }
        }
        let ids = match parse_ids(&id_bytes, record.rows as usize) {
            Ok(ids) => ids,
            Err(reason) => return corrupt(&ids_path, reason),
        };
        // Writers refuse non-finite values, and a checked chunk is what was written.
        let data: Vec<f32> = vector_bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Some(ChunkRead::Rows {
            ids,
            embeddings: Embeddings::from_vec(self.header.dim, data),
        }))
    }

    /// All remaining rows; damage is an error naming the file and the chunk.
    pub fn read_all(mut self) -> Result<StoredEmbeddings> {
        let mut ids = Vec::new();
        let mut embeddings = Embeddings::new(self.header.dim);
        while let Some(chunk) = self.next_chunk()? {
            match chunk {
                ChunkRead::Rows {
                    ids: chunk_ids,
                    embeddings: e,
                } => {
                    ids.extend(chunk_ids);
                    embeddings.extend(&e);
                }
                ChunkRead::Corrupt(c) => return Err(c.into_error()),
            }
        }
        Ok(StoredEmbeddings {
            header: self.header,
            ids,
            embeddings,
        })
    }
}

/// The ids of one chunk: exactly `rows` lines, each a JSON string.
fn parse_ids(bytes: &[u8], rows: usize) -> std::result::Result<Vec<String>, String> {
    let mut ids = Vec::with_capacity(rows);
    for (n, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let id: String = serde_json::from_slice(line).map_err(|e| {
            format!(
                "line {} of the chunk: {e}: {:?}",
                n + 1,
                String::from_utf8_lossy(line).trim_end()
            )
        })?;
        ids.push(id);
    }
    if ids.len() != rows || bytes.last().is_some_and(|&b| b != b'\n') {
        return Err(format!(
            "{} id lines for {rows} rows (ids and vectors out of step)",
            ids.len()
        ));
    }
    Ok(ids)
}

/// A whole store in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbeddings {
    pub header: StoreHeader,
    pub ids: Vec<String>,
    pub embeddings: Embeddings,
}

impl StoredEmbeddings {
    /// Reads the committed rows of the store in `dir`, checking every chunk. The store is
    /// read under its shared lock: one that another process is writing is refused.
    pub fn read(dir: &Path) -> Result<Self> {
        let _lock = if dir.is_dir() {
            Some(foil_core::lock::Lock::require(
                dir,
                foil_core::lock::Mode::Shared,
            )?)
        } else {
            None
        };
        EmbeddingsReader::open(dir)?.read_all()
    }

    /// Writes a complete store in `dir` in one chunk, replacing any store there.
    pub fn write<S: AsRef<str>>(
        dir: &Path,
        spec: &StoreSpec,
        ids: &[S],
        vectors: EmbeddingsView<'_>,
    ) -> Result<StoreHeader> {
        let mut writer = EmbeddingsWriter::create(dir, spec)?;
        writer.append(ids, vectors)?;
        writer.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foil_core::rng::SplitMix64;

    fn spec(dim: usize) -> StoreSpec {
        StoreSpec {
            dim,
            normalized: true,
            provenance: Provenance::new("fake-encoder@1", foil_core::TextKind::Passage),
        }
    }

    fn rows(seed: u64, n: usize, dim: usize) -> (Vec<String>, Embeddings) {
        let mut rng = SplitMix64::new(seed);
        let ids = (0..n).map(|i| format!("doc-{seed}-{i}")).collect();
        let data = (0..n * dim).map(|_| rng.next_f64() as f32 - 0.5).collect();
        (ids, Embeddings::from_vec(dim, data))
    }

    fn append_raw(path: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn round_trip_in_chunks_and_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let (ids_a, a) = rows(1, 5, 7);
        let (ids_b, b) = rows(2, 4, 7);
        let mut w = EmbeddingsWriter::create(dir.path(), &spec(7)).unwrap();
        w.append(&ids_a, (&a).into()).unwrap();
        w.append::<String>(&[], EmbeddingsView::new(7, &[]))
            .unwrap();
        w.append(&ids_b, (&b).into()).unwrap();
        let header = w.finish().unwrap();
        assert_eq!((header.count, header.dim, header.complete), (9, 7, true));
        assert_eq!(header.provenance.encoder, "fake-encoder@1");

        let all = StoredEmbeddings::read(dir.path()).unwrap();
        assert_eq!(all.header, header);
        assert_eq!(all.ids, [ids_a.clone(), ids_b.clone()].concat());
        let mut both = a.clone();
        both.extend(&b);
        assert_eq!(all.embeddings, both);
        // Little-endian f32, row-major, nothing else.
        let raw = std::fs::read(dir.path().join(VECTORS_FILE)).unwrap();
        assert_eq!(raw.len(), 9 * 7 * 4);
        assert_eq!(raw[..4], a.data[0].to_le_bytes());

        // Streamed chunk by chunk, as committed: the empty append committed nothing.
        let mut reader = EmbeddingsReader::open(dir.path()).unwrap();
        let mut sizes = Vec::new();
        let mut streamed = Embeddings::new(7);
        let mut streamed_ids = Vec::new();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            let ChunkRead::Rows { ids, embeddings } = chunk else {
                panic!("{chunk:?}")
            };
            sizes.push(ids.len());
            streamed_ids.extend(ids);
            streamed.extend(&embeddings);
        }
        assert_eq!(sizes, [5, 4]);
        assert_eq!(
            (streamed_ids, streamed),
            (all.ids.clone(), all.embeddings.clone())
        );

        // A reader that saw the first chunk reads only the second.
        let mut later = EmbeddingsReader::open_at(dir.path(), header.clone(), 1).unwrap();
        let Some(ChunkRead::Rows { ids, embeddings }) = later.next_chunk().unwrap() else {
            panic!()
        };
        assert_eq!((ids, embeddings), (ids_b.clone(), b.clone()));
        assert!(later.next_chunk().unwrap().is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn any_ids_and_chunking_round_trip(
            ids in proptest::collection::vec(proptest::prelude::any::<String>(), 0..12),
            dim in 1usize..5,
            chunk in 1usize..6,
            seed: u64,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut rng = SplitMix64::new(seed);
            let data: Vec<f32> = (0..ids.len() * dim)
                .map(|_| f32::from_bits(rng.next_u64() as u32))
                .map(|x| if x.is_finite() { x } else { 0.5 })
                .collect();
            let e = Embeddings::from_vec(dim, data);
            let mut w = EmbeddingsWriter::create(dir.path(), &spec(dim)).unwrap();
            for (i, names) in ids.chunks(chunk).enumerate() {
                let rows = i * chunk..i * chunk + names.len();
                w.append(names, EmbeddingsView::from(&e).rows(rows)).unwrap();
            }
            w.finish().unwrap();
            let back = StoredEmbeddings::read(dir.path()).unwrap();
            proptest::prop_assert_eq!(&back.ids, &ids);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            proptest::prop_assert_eq!(bits(&back.embeddings.data), bits(&e.data));
        }
    }

    #[test]
    fn odd_ids_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ["quote \" and \\", "line\nbreak", "ünïcödé 文", ""];
        let e = Embeddings::from_vec(
            2,
            vec![1.0, -0.0, f32::MIN_POSITIVE, f32::MAX, 0.5, 2.0, 3.0, 4.0],
        );
        StoredEmbeddings::write(dir.path(), &spec(2), &ids, (&e).into()).unwrap();
        let back = StoredEmbeddings::read(dir.path()).unwrap();
        assert_eq!(back.ids, ids);
        assert_eq!(back.embeddings.data[1].to_bits(), (-0.0f32).to_bits());
        assert_eq!(back.embeddings, e);
    }

    #[test]
    fn a_killed_append_is_ignored_by_readers_and_cut_by_resume() {
        let dir = tempfile::tempdir().unwrap();
        let (ids_a, a) = rows(1, 6, 5);
        let (ids_b, b) = rows(2, 3, 5);
        let mut w = EmbeddingsWriter::create(dir.path(), &spec(5)).unwrap();
        w.append(&ids_a, (&a).into()).unwrap();
        drop(w);
        // A kill in the middle of the next chunk: one whole row and half of the next were
        // written, and an id line and a half; header.json still commits the first chunk.
        append_raw(&dir.path().join(IDS_FILE), b"\"doc-2-0\"\n\"doc-2-");
        let partial: Vec<u8> = b.data[..8].iter().flat_map(|x| x.to_le_bytes()).collect();
        append_raw(&dir.path().join(VECTORS_FILE), &partial[..30]);

        let seen = StoredEmbeddings::read(dir.path()).unwrap();
        assert_eq!(
            (seen.ids.clone(), seen.embeddings.clone()),
            (ids_a.clone(), a.clone())
        );
        assert!(!seen.header.complete);

        let mut w = EmbeddingsWriter::resume(dir.path(), &spec(5)).unwrap();
        assert_eq!(w.header().count, 6);
        w.append(&ids_b, (&b).into()).unwrap();
        w.finish().unwrap();
        let all = StoredEmbeddings::read(dir.path()).unwrap();
        let mut both = a.clone();
        both.extend(&b);
        assert_eq!(all.ids, [ids_a, ids_b].concat());
        assert_eq!(all.embeddings, both);
        assert!(all.header.complete);
        let len = std::fs::metadata(dir.path().join(VECTORS_FILE))
            .unwrap()
            .len();
        assert_eq!(len, 9 * 5 * 4);
    }

    #[test]
    fn resume_without_a_store_creates_one_and_refuses_other_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let (ids, a) = rows(3, 2, 4);
        let mut w = EmbeddingsWriter::resume(dir.path(), &spec(4)).unwrap();
        w.append(&ids, (&a).into()).unwrap();
        drop(w);
        let other = StoreSpec {
            provenance: Provenance::new("other", foil_core::TextKind::Passage),
            ..spec(4)
        };
        let err = EmbeddingsWriter::resume(dir.path(), &other).err().unwrap();
        assert!(
            err.to_string()
                .contains("vectors of passages by fake-encoder@1, not passages by other"),
            "{err}"
        );
        assert!(EmbeddingsWriter::resume(dir.path(), &spec(5)).is_err());
        // create replaces the store.
        let w = EmbeddingsWriter::create(dir.path(), &other).unwrap();
        w.finish().unwrap();
        let back = StoredEmbeddings::read(dir.path()).unwrap();
        assert_eq!((back.header.count, back.ids.len()), (0, 0));
        assert_eq!(
            std::fs::metadata(dir.path().join(IDS_FILE)).unwrap().len(),
            0
        );
    }

    #[test]
    fn bad_appends_and_damaged_stores_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EmbeddingsWriter::create(dir.path(), &spec(2)).unwrap();
        let e = Embeddings::from_vec(2, vec![1.0, 2.0, f32::NAN, 0.0]);
        let err = w.append(&["a", "b"], (&e).into()).err().unwrap();
        assert!(err.to_string().contains("\"b\""), "{err}");
        assert!(w.append(&["a"], (&e).into()).is_err());
        let three = Embeddings::from_vec(3, vec![1.0, 2.0, 3.0]);
        assert!(w.append(&["a"], (&three).into()).is_err());
        assert_eq!(w.header().count, 0);
        let ok = Embeddings::from_vec(2, vec![1.0, 2.0, 3.0, 4.0]);
        w.append(&["a", "b"], (&ok).into()).unwrap();
        w.finish().unwrap();
        assert!(EmbeddingsWriter::create(dir.path(), &spec(0)).is_err());

        // Data files shorter than the header commits.
        let vectors = dir.path().join(VECTORS_FILE);
        let bytes = std::fs::read(&vectors).unwrap();
        std::fs::write(&vectors, &bytes[..10]).unwrap();
        let err = StoredEmbeddings::read(dir.path()).err().unwrap();
        assert!(err.to_string().contains("header.json commits 16"), "{err}");
        std::fs::write(&vectors, &bytes).unwrap();

        // Damaged ids (same length) fail their checksum, naming the file and the chunk.
        let ids = dir.path().join(IDS_FILE);
        std::fs::write(&ids, b"\"a\"\nb  \n").unwrap();
        let err = StoredEmbeddings::read(dir.path()).err().unwrap();
        assert!(
            err.to_string()
                .contains("ids.jsonl: chunk 0 (rows 0..2) is damaged: CRC-32"),
            "{err}"
        );
        std::fs::write(&ids, b"\"a\"\n\"b\"\n").unwrap();
        assert_eq!(StoredEmbeddings::read(dir.path()).unwrap().ids, ["a", "b"]);

        // Another format version.
        let header = dir.path().join(HEADER_FILE);
        let text = std::fs::read_to_string(&header).unwrap();
        std::fs::write(&header, text.replace("\"version\": 3", "\"version\": 4")).unwrap();
        let err = StoredEmbeddings::read(dir.path()).err().unwrap();
        assert!(err.to_string().contains("format version 4"), "{err}");
    }

    /// Flips one bit of `file` at `offset`.
    fn flip(file: &Path, offset: usize) {
        let mut bytes = std::fs::read(file).unwrap();
        bytes[offset] ^= 0x10;
        std::fs::write(file, bytes).unwrap();
    }

    #[test]
    fn a_flipped_byte_is_reported_for_its_chunk_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EmbeddingsWriter::create(dir.path(), &spec(3)).unwrap();
        let mut all = Vec::new();
        for seed in 0..3 {
            let (ids, e) = rows(seed, 4, 3);
            w.append(&ids, (&e).into()).unwrap();
            all.push((ids, e));
        }
        w.finish().unwrap();
        // A byte inside row 5 = chunk 1.
        flip(&dir.path().join(VECTORS_FILE), 5 * 3 * 4 + 2);

        let mut reader = EmbeddingsReader::open(dir.path()).unwrap();
        let mut seen = Vec::new();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            seen.push(chunk);
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen[0],
            ChunkRead::Rows {
                ids: all[0].0.clone(),
                embeddings: all[0].1.clone()
            }
        );
        let ChunkRead::Corrupt(c) = &seen[1] else {
            panic!("{:?}", seen[1])
        };
        assert_eq!((c.chunk, c.rows.clone()), (1, 4..8));
        assert!(c.file.ends_with(VECTORS_FILE));
        assert!(matches!(seen[2], ChunkRead::Rows { .. }));

        let err = StoredEmbeddings::read(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("vectors.f32: chunk 1 (rows 4..8) is damaged"),
            "{err}"
        );
    }

    /// A format 2 header spelled the provenance as one string: it reads as the typed record,
    /// a writer extends the store and commits it as format 3; a string foil never wrote is
    /// refused with a message saying so.
    #[test]
    fn format_2_provenance_strings_are_read_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let (ids, e) = rows(4, 3, 2);
        let kind = foil_core::TextKind::Query;
        let spec = StoreSpec {
            provenance: Provenance::new("m;sha=ab", kind).with_input("00ff", Some(3)),
            ..spec(2)
        };
        StoredEmbeddings::write(dir.path(), &spec, &ids, (&e).into()).unwrap();
        let path = dir.path().join(HEADER_FILE);
        let mut old: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("provenance");
        o.insert("version".into(), 2.into());
        o.insert(
            "encoder".into(),
            "m;sha=ab|kind=Query|input=00ff|limit=Some(3)".into(),
        );
        std::fs::write(&path, old.to_string()).unwrap();

        let back = StoredEmbeddings::read(dir.path()).unwrap();
        assert_eq!(back.header.version, 2);
        assert_eq!(back.header.provenance, spec.provenance);
        assert!(back.header.provenance.matches("m;sha=ab", kind));
        let mut w = EmbeddingsWriter::resume(dir.path(), &spec).unwrap();
        w.append(&ids, (&e).into()).unwrap();
        w.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let new: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(new["version"], 3, "{text}");
        assert_eq!(new.get("encoder"), None, "{text}");
        assert_eq!(new["provenance"]["kind"], "query", "{text}");
        assert_eq!(StoredEmbeddings::read(dir.path()).unwrap().header.count, 6);

        old["encoder"] = "fake-encoder@1".into();
        std::fs::write(&path, old.to_string()).unwrap();
        let err = StoreHeader::read(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("\"fake-encoder@1\" is not a provenance foil wrote"),
            "{err}"
        );
    }

    #[test]
    fn format_1_is_read_unverified_but_not_extended() {
        let dir = tempfile::tempdir().unwrap();
        let (ids, e) = rows(9, 3, 2);
        StoredEmbeddings::write(dir.path(), &spec(2), &ids, (&e).into()).unwrap();
        // Rewrite the header as format 1 wrote it: no chunks.
        let mut header = StoreHeader::read(dir.path()).unwrap();
        header.version = 1;
        header.chunks.clear();
        header.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(HEADER_FILE)).unwrap();
        assert!(!text.contains("chunks"), "{text}");

        let back = StoredEmbeddings::read(dir.path()).unwrap();
        assert_eq!((back.ids, back.embeddings), (ids, e));
        assert!(!back.header.matches(&spec(2)));
        let err = EmbeddingsWriter::resume(dir.path(), &spec(2))
            .err()
            .unwrap();
        assert!(err.to_string().contains("format 1"), "{err}");
    }

    #[test]
    fn a_store_being_written_is_refused_to_strict_readers() {
        let dir = tempfile::tempdir().unwrap();
        let (ids, e) = rows(4, 2, 2);
        StoredEmbeddings::write(dir.path(), &spec(2), &ids, (&e).into()).unwrap();
        let owner = foil_core::lock::Lock::output(dir.path()).unwrap();
        let err = StoredEmbeddings::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another foil process"), "{err}");
        drop(owner);
        assert_eq!(StoredEmbeddings::read(dir.path()).unwrap().ids, ids);
    }
}
