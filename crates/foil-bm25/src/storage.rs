//! The on-disk format of a [`Bm25Index`], so that later stages load an index instead of
//! rebuilding it.
//!
//! ```text
//! "FOILBM25"            8 bytes, magic
//! version               u32, FORMAT_VERSION; a reader refuses other versions
//! header length         u32, then the header: JSON (IndexHeader)
//! doc ids               N × (u32 length, UTF-8 bytes)
//! doc lengths           N × u32
//! terms                 T × (u32 length, UTF-8 bytes), in term-id order
//! offsets               (T + 1) × u64
//! posting documents     P × u32
//! posting frequencies   P × u32
//! "END."                4 bytes, so that a truncated file is detected
//! CRC-32                u32, of every byte before it, so that a damaged file is refused
//! ```
//!
//! Integers are little-endian. The header records the analyzer and a fingerprint of the corpus
//! the index was built from; [`IndexHeader::source`] lets callers tell a stale index from a
//! current one. The file is written atomically. Version 1 had no checksum; it is refused with
//! a message to rebuild (a search that keeps its index in a file rebuilds it).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use foil_core::fsutil::AtomicFile;
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::analyzer::{Analyzer, AnalyzerConfig};
use crate::index::Bm25Index;

const MAGIC: &[u8; 8] = b"FOILBM25";
const TRAILER: &[u8; 4] = b"END.";
/// The version of the format this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;

/// The JSON header of an index file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexHeader {
    pub analyzer: AnalyzerConfig,
    pub num_docs: u64,
    pub num_terms: u64,
    pub num_postings: u64,
    /// What the index was built from (e.g. the corpus path and its SHA-256), as the caller
    /// described it.
    pub source: serde_json::Value,
}

impl Bm25Index {
    /// Writes the index to `path` atomically; `source` describes what it was built from.
    pub fn save(&self, path: &Path, source: serde_json::Value) -> Result<()> {
        let header = IndexHeader {
            analyzer: self.analyzer.config(),
            num_docs: self.doc_ids.len() as u64,
            num_terms: self.terms.len() as u64,
            num_postings: self.docs.len() as u64,
            source,
        };
        let header = serde_json::to_vec(&header).map_err(|e| Error::format(path, e.to_string()))?;
        let mut terms: Vec<&str> = vec![""; self.terms.len()];
        for (term, &id) in &self.terms {
            terms[id as usize] = term;
        }
        let mut file = AtomicFile::create(path)?;
        let mut w = CrcWriter {
            inner: file.writer(),
            crc: crc32fast::Hasher::new(),
        };
        let w = &mut w;
        let io = |e| Error::io(path, e);
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
        w.write_all(&(header.len() as u32).to_le_bytes())
            .map_err(io)?;
        w.write_all(&header).map_err(io)?;
        for id in &self.doc_ids {
            write_str(w, id).map_err(io)?;
        }
        for &len in &self.doc_lengths {
            w.write_all(&len.to_le_bytes()).map_err(io)?;
        }
        for term in terms {
            write_str(w, term).map_err(io)?;
        }
        for &o in &self.offsets {
            w.write_all(&o.to_le_bytes()).map_err(io)?;
        }
        for &d in &self.docs {
            w.write_all(&d.to_le_bytes()).map_err(io)?;
        }
        for &f in &self.freqs {
            w.write_all(&f.to_le_bytes()).map_err(io)?;
        }
        w.write_all(TRAILER).map_err(io)?;
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes()).map_err(io)?;
        file.commit()
    }

    /// Reads only the header of an index file (cheap: for checking whether it is current).
    pub fn read_header(path: &Path) -> Result<IndexHeader> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let mut r = Reader::new(path, &bytes);
        r.header()
    }

    /// Loads an index written by [`Bm25Index::save`].
    pub fn load(path: &Path) -> Result<(Self, IndexHeader)> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let header = Reader::new(path, &bytes).header()?;
        let body = check_trailer(path, &bytes)?;
        let mut r = Reader::new(path, body);
        r.header()?;
        let n = header.num_docs as usize;
        let t = header.num_terms as usize;
        let p = header.num_postings as usize;
        let doc_ids = (0..n).map(|_| r.string()).collect::<Result<Vec<_>>>()?;
        let doc_lengths = r.u32s(n)?;
        let mut terms = HashMap::with_capacity(t);
        for id in 0..t {
            terms.insert(r.string()?, id as u32);
        }
        let offsets = r.u64s(t + 1)?;
        let docs = r.u32s(p)?;
        let freqs = r.u32s(p)?;
        if r.take(TRAILER.len())? != TRAILER || r.pos != body.len() {
            return Err(Error::format(
                path,
                "index file is truncated or has trailing bytes",
            ));
        }
        if offsets.last().copied() != Some(p as u64) || docs.iter().any(|&d| d as usize >= n) {
            return Err(Error::format(
                path,
                "index file is corrupt: postings out of range",
            ));
        }
        let index = Bm25Index {
            analyzer: Analyzer::new(header.analyzer),
            doc_ids,
            doc_lengths,
            terms,
            offsets,
            docs,
            freqs,
        };
        Ok((index, header))
    }
}

/// Checks the trailer's CRC-32 over the rest of the file; returns the bytes it covers.
fn check_trailer<'b>(path: &Path, bytes: &'b [u8]) -> Result<&'b [u8]> {
    let n = bytes.len();
    if n < TRAILER.len() + 4 || &bytes[n - 8..n - 4] != TRAILER {
        return Err(Error::format(
            path,
            "index file is truncated (no trailer): rebuild it",
        ));
    }
    let stored = u32::from_le_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]);
    let actual = crc32fast::hash(&bytes[..n - 4]);
    if stored != actual {
        return Err(Error::format(
            path,
            format!("index file is damaged: CRC-32 {actual:08x}, its trailer records {stored:08x}; rebuild it"),
        ));
    }
    Ok(&bytes[..n - 4])
}

/// A writer that keeps the CRC-32 of what went through it.
struct CrcWriter<'w, W: Write> {
    inner: &'w mut W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// Reads the sections of an index file, failing with a format error at the first problem.
struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(path: &'a Path, bytes: &'a [u8]) -> Self {
        Self {
            path,
            bytes,
            pos: 0,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::format(self.path, "index file is truncated"));
        };
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        let b = self.take(n.saturating_mul(4))?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn u64s(&mut self, n: usize) -> Result<Vec<u64>> {
        let b = self.take(n.saturating_mul(8))?;
        Ok(b.chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        let b = self.take(len)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::format(self.path, "index file is corrupt: invalid UTF-8"))
    }

    fn header(&mut self) -> Result<IndexHeader> {
        if self.take(MAGIC.len()).ok() != Some(MAGIC.as_slice()) {
            return Err(Error::format(self.path, "not a foil BM25 index"));
        }
        let version = self.u32()?;
        if version != FORMAT_VERSION {
            return Err(Error::format(
                self.path,
                format!("BM25 index format version {version}, this foil reads version {FORMAT_VERSION}: rebuild the index"),
            ));
        }
        let len = self.u32()? as usize;
        let json = self.take(len)?;
        serde_json::from_slice(json)
            .map_err(|e| Error::format(self.path, format!("bad index header: {e}")))
    }
}
