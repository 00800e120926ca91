//! `foil cache`: what the embedding cache holds ([`stats`]), whether it is intact ([`verify`]:
//! checksums, ids in step with vectors, duplicates, uncommitted tails), and compaction
//! ([`gc`]: drops damaged chunks, duplicates, uncommitted tails and stores of an older format,
//! and rewrites each store compactly). The same for a generation cache file
//! ([`crate::generate::answer_cache`]).
//!
//! `gc` takes each store's users lock exclusively: while any process has the store open it is
//! refused, naming the store and the holder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use foil_core::lock::{Lock, Mode};
use foil_core::{Embeddings, Error, Result};
use foil_dense::store::{
    ChunkRead, EmbeddingsReader, EmbeddingsWriter, StoreHeader, StoreSpec, HEADER_FILE, IDS_FILE,
    VECTORS_FILE,
};
use foil_dense::{EmbeddingsView, Provenance};
use serde::Serialize;

use crate::generate::answer_cache;

/// Rows per chunk of a compacted store.
const GC_CHUNK: usize = 8192;
/// The temporary folder a store is compacted into.
const GC_DIR: &str = ".gc";

/// One store of the cache as `foil cache stats` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct StoreInfo {
    /// The store's folder name (a hash of the encoder's fingerprint and the text kind).
    pub key: String,
    /// What made the vectors, as the header records it.
    pub provenance: Option<Provenance>,
    pub format_version: Option<u32>,
    pub rows: u64,
    pub chunks: usize,
    pub dim: usize,
    /// Bytes the store's files take on disk.
    pub bytes: u64,
}

/// The stores under `root`, by folder name.
pub fn stats(root: &Path) -> Result<Vec<StoreInfo>> {
    store_dirs(root)?
        .into_iter()
        .map(|dir| {
            let header = StoreHeader::read(&dir).ok();
            Ok(StoreInfo {
                key: file_name(&dir),
                provenance: header.as_ref().map(|h| h.provenance.clone()),
                format_version: header.as_ref().map(|h| h.version),
                rows: header.as_ref().map_or(0, |h| h.count),
                chunks: header.as_ref().map_or(0, |h| h.chunks.len()),
                dim: header.as_ref().map_or(0, |h| h.dim),
                bytes: folder_bytes(&dir)?,
            })
        })
        .collect()
}

/// What `foil cache verify` found in one store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreCheck {
    pub key: String,
    pub rows: u64,
    pub chunks: usize,
    /// Damaged chunks: `file: chunk N (rows a..b) is damaged: …`.
    pub damaged: Vec<String>,
    pub damaged_rows: u64,
    /// Rows whose id an earlier row already has.
    pub duplicate_rows: u64,
    /// Bytes past the last commit (a writer killed mid-append, or one appending now).
    pub uncommitted_bytes: u64,
    /// Anything else: an unreadable header, a format without checksums, short data files.
    pub problems: Vec<String>,
}

impl StoreCheck {
    /// No damage, duplicates or other problems (an uncommitted tail is not one).
    pub fn is_ok(&self) -> bool {
        self.damaged.is_empty() && self.duplicate_rows == 0 && self.problems.is_empty()
    }
}

/// Checks every store under `root`.
pub fn verify(root: &Path) -> Result<Vec<StoreCheck>> {
    store_dirs(root)?.iter().map(|d| verify_store(d)).collect()
}

/// Checks one store: every chunk against its checksums and its ids against its vectors,
/// duplicate ids, and bytes past the last commit. Reads under the users lock (shared), so it
/// runs beside processes that use the cache.
pub fn verify_store(dir: &Path) -> Result<StoreCheck> {
    let _users = Lock::acquire(dir, Mode::Shared)?;
    let mut check = StoreCheck {
        key: file_name(dir),
        ..Default::default()
    };
    if !dir.join(HEADER_FILE).exists() {
        return Ok(check);
    }
    let header = match StoreHeader::read(dir) {
        Ok(h) => h,
        Err(e) => {
            check.problems.push(e.to_string());
            return Ok(check);
        }
    };
    check.rows = header.count;
    check.chunks = header.chunks.len();
    if !header.checksummed() {
        check.problems.push(format!(
            "format {} has no checksums (written by an older foil): `foil cache gc` removes it",
            header.version
        ));
    }
    for (name, committed) in [
        (IDS_FILE, header.ids_bytes),
        (VECTORS_FILE, header.vectors_bytes()),
    ] {
        let len = std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        if len < committed {
            check.problems.push(format!(
                "{}: {len} bytes, but header.json commits {committed}",
                dir.join(name).display()
            ));
            return Ok(check);
        }
        check.uncommitted_bytes += len - committed;
    }
    let mut reader = EmbeddingsReader::open_at(dir, header, 0)?;
    let mut seen = HashSet::new();
    while let Some(chunk) = reader.next_chunk()? {
        match chunk {
            ChunkRead::Rows { ids, .. } => {
                for id in ids {
                    if !seen.insert(id) {
                        check.duplicate_rows += 1;
                    }
                }
            }
            ChunkRead::Corrupt(c) => {
                check.damaged_rows += c.rows.end - c.rows.start;
                check.damaged.push(c.into_error().to_string());
            }
        }
    }
    Ok(check)
}

/// What `foil cache gc` did to one store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub key: String,
    pub rows_before: u64,
    pub rows_after: u64,
    pub duplicate_rows: u64,
    pub damaged_rows: u64,
    /// The store was of an older format or unreadable, and was removed.
    pub removed: bool,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Compacts every store under `root`. Refused (nothing changed) when any store is in use by
/// another process.
pub fn gc(root: &Path) -> Result<Vec<GcReport>> {
    let dirs = store_dirs(root)?;
    let locks = dirs
        .iter()
        .map(|d| Lock::require(d, Mode::Exclusive))
        .collect::<Result<Vec<_>>>()?;
    let reports = dirs.iter().map(|d| gc_locked(d)).collect();
    drop(locks);
    reports
}

/// Compacts one store; the caller holds its users lock exclusively.
fn gc_locked(dir: &Path) -> Result<GcReport> {
    let mut report = GcReport {
        key: file_name(dir),
        bytes_before: folder_bytes(dir)?,
        ..Default::default()
    };
    let tmp = dir.join(GC_DIR);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    if !dir.join(HEADER_FILE).exists() {
        report.bytes_after = folder_bytes(dir)?;
        return Ok(report);
    }
    let header = match StoreHeader::read(dir) {
        Ok(h) if h.checksummed() => h,
        other => {
            report.rows_before = other.map_or(0, |h| h.count);
            for name in [HEADER_FILE, IDS_FILE, VECTORS_FILE] {
                let path = dir.join(name);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
            }
            report.removed = true;
            report.bytes_after = folder_bytes(dir)?;
            return Ok(report);
        }
    };
    report.rows_before = header.count;
    let spec = StoreSpec {
        dim: header.dim,
        normalized: header.normalized,
        provenance: header.provenance.clone(),
    };
    let complete = header.complete;

    // The rows worth keeping, in order: the first of each id, from intact chunks.
    let mut seen = HashSet::new();
    let mut ids: Vec<String> = Vec::new();
    let mut kept = Embeddings::new(header.dim);
    let mut reader = EmbeddingsReader::open_at(dir, header, 0)?;
    while let Some(chunk) = reader.next_chunk()? {
        match chunk {
            ChunkRead::Rows {
                ids: chunk_ids,
                embeddings,
            } => {
                for (id, row) in chunk_ids.into_iter().zip(embeddings.rows()) {
                    if seen.insert(id.clone()) {
                        ids.push(id);
                        kept.data.extend_from_slice(row);
                    } else {
                        report.duplicate_rows += 1;
                    }
                }
            }
            ChunkRead::Corrupt(c) => report.damaged_rows += c.rows.end - c.rows.start,
        }
    }

    // Write the compacted store beside the old one, then swap the files: first an empty
    // header (a crash from here on leaves an empty store, never mismatched data), then the
    // data files, then the new header.
    let mut writer = EmbeddingsWriter::create(&tmp, &spec)?;
    let all = EmbeddingsView::from(&kept);
    for (c, names) in ids.chunks(GC_CHUNK).enumerate() {
        let rows = c * GC_CHUNK..c * GC_CHUNK + names.len();
        writer.append(names, all.rows(rows))?;
    }
    if complete {
        writer.finish()?;
    } else {
        drop(writer);
    }
    drop(EmbeddingsWriter::create(dir, &spec)?);
    for name in [IDS_FILE, VECTORS_FILE, HEADER_FILE] {
        std::fs::rename(tmp.join(name), dir.join(name))
            .map_err(|e| Error::io(dir.join(name), e))?;
    }
    std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    report.rows_after = ids.len() as u64;
    report.bytes_after = folder_bytes(dir)?;
    Ok(report)
}

/// What `foil cache verify --generation` found in a generation cache file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenerationCheck {
    pub path: PathBuf,
    /// Whole lines.
    pub lines: u64,
    /// Distinct answers (the first line of each key).
    pub answers: u64,
    /// Lines whose key an earlier line already has.
    pub duplicate_lines: u64,
    /// Lines that are not records or fail their checksum: `line N: reason`.
    pub invalid: Vec<String>,
    /// Records without a checksum (written before checksums).
    pub unverified: u64,
    /// Bytes after the last newline (a writer killed mid-line, or one writing now).
    pub partial_bytes: u64,
    pub bytes: u64,
}

impl GenerationCheck {
    /// No invalid or duplicate lines.
    pub fn is_ok(&self) -> bool {
        self.invalid.is_empty() && self.duplicate_lines == 0
    }
}

/// Checks every line of a generation cache file, beside processes that use it.
pub fn verify_generation(path: &Path) -> Result<GenerationCheck> {
    let _users = Lock::acquire(&answer_cache::users_lock_path(path), Mode::Shared)?;
    let (check, _) = scan_generation(path)?;
    Ok(check)
}

/// What `foil cache gc --generation` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenerationGc {
    pub path: PathBuf,
    pub lines_before: u64,
    pub answers: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Rewrites a generation cache file with the first valid answer of each key, every line with
/// its checksum. Refused while another process has the file open.
pub fn gc_generation(path: &Path) -> Result<GenerationGc> {
    let _users = Lock::require(&answer_cache::users_lock_path(path), Mode::Exclusive)?;
    let (check, records) = scan_generation(path)?;
    let mut file = foil_core::fsutil::AtomicFile::create(path)?;
    for record in &records {
        let mut line = answer_cache::encode_line(record)?;
        line.push(b'\n');
        std::io::Write::write_all(file.writer(), &line).map_err(|e| Error::io(path, e))?;
    }
    file.commit()?;
    Ok(GenerationGc {
        path: path.to_path_buf(),
        lines_before: check.lines,
        answers: records.len() as u64,
        bytes_before: check.bytes,
        bytes_after: std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len(),
    })
}

/// Reads a generation cache file: its check and the first valid record of each key.
fn scan_generation(path: &Path) -> Result<(GenerationCheck, Vec<answer_cache::CacheRecord>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut check = GenerationCheck {
        path: path.to_path_buf(),
        partial_bytes: (bytes.len() - whole) as u64,
        bytes: bytes.len() as u64,
        ..Default::default()
    };
    let mut keys = HashSet::new();
    let mut records = Vec::new();
    for (n, line) in bytes[..whole].split_inclusive(|&b| b == b'\n').enumerate() {
        check.lines += 1;
        let line = &line[..line.len() - 1];
        match answer_cache::decode_line(line) {
            answer_cache::Line::Record(record) => {
                if !serde_json::from_slice::<serde_json::Value>(line)
                    .is_ok_and(|v| v.get("crc32").is_some())
                {
                    check.unverified += 1;
                }
                if keys.insert(record.key.clone()) {
                    records.push(*record);
                } else {
                    check.duplicate_lines += 1;
                }
            }
            answer_cache::Line::Empty => {}
            answer_cache::Line::Invalid(reason) => {
                check
                    .invalid
                    .push(format!("{}:{}: {reason}", path.display(), n + 1))
            }
        }
    }
    check.answers = records.len() as u64;
    Ok((check, records))
}

/// The store folders under the cache root, by name.
fn store_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: no embedding cache here",
            root.display()
        )));
    }
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let path = entry.path();
        if path.is_dir() && !file_name(&path).starts_with('.') {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Bytes of the plain files in `dir` and its subfolders.
fn folder_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
        total += if meta.is_dir() {
            folder_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foil_dense::store::StoredEmbeddings;

    fn spec() -> StoreSpec {
        StoreSpec {
            dim: 2,
            normalized: false,
            provenance: Provenance::new("fake", foil_core::TextKind::Passage),
        }
    }

    fn rows(ids: &[&str], base: f32) -> Embeddings {
        Embeddings::from_vec(2, (0..ids.len() * 2).map(|i| base + i as f32).collect())
    }

    /// A cache root with one store: chunks [a b] [b c] [d], the second damaged, plus a tail.
    fn damaged_cache() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("0123abcd");
        let mut w = EmbeddingsWriter::create(&dir, &spec()).unwrap();
        w.append(&["a", "b"], (&rows(&["a", "b"], 0.0)).into())
            .unwrap();
        w.append(&["b", "a"], (&rows(&["b", "a"], 10.0)).into())
            .unwrap();
        w.append(&["c", "d"], (&rows(&["c", "d"], 20.0)).into())
            .unwrap();
        w.append(&["e"], (&rows(&["e"], 30.0)).into()).unwrap();
        drop(w);
        // Damage chunk 2 (rows 4..6): one byte of its vectors.
        let vectors = dir.join(VECTORS_FILE);
        let mut bytes = std::fs::read(&vectors).unwrap();
        bytes[4 * 8 + 3] ^= 0x40;
        // And a tail a killed writer left.
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&vectors, bytes).unwrap();
        (root, dir)
    }

    #[test]
    fn verify_names_the_damaged_chunk_the_duplicates_and_the_tail() {
        let (root, _) = damaged_cache();
        let checks = verify(root.path()).unwrap();
        assert_eq!(checks.len(), 1);
        let c = &checks[0];
        assert_eq!((c.rows, c.chunks), (7, 4));
        assert_eq!(c.damaged.len(), 1, "{c:?}");
        assert!(
            c.damaged[0].contains("vectors.f32: chunk 2 (rows 4..6) is damaged"),
            "{c:?}"
        );
        assert_eq!(c.damaged_rows, 2);
        assert_eq!(c.duplicate_rows, 2, "b and a again in chunk 1");
        assert_eq!(c.uncommitted_bytes, 3);
        assert!(!c.is_ok());
    }

    #[test]
    fn gc_keeps_the_first_intact_row_of_each_id() {
        let (root, dir) = damaged_cache();
        let reports = gc(root.path()).unwrap();
        let r = &reports[0];
        assert_eq!((r.rows_before, r.rows_after), (7, 3));
        assert_eq!((r.duplicate_rows, r.damaged_rows), (2, 2));
        assert!(r.bytes_after < r.bytes_before);
        let back = StoredEmbeddings::read(&dir).unwrap();
        assert_eq!(back.ids, ["a", "b", "e"]);
        assert_eq!(back.embeddings.data, [0.0, 1.0, 2.0, 3.0, 30.0, 31.0]);
        assert!(!dir.join(GC_DIR).exists());
        let again = &verify(root.path()).unwrap()[0];
        assert!(again.is_ok() && again.uncommitted_bytes == 0, "{again:?}");
    }

    #[test]
    fn gc_is_refused_while_a_store_is_in_use() {
        let (root, dir) = damaged_cache();
        let user = Lock::acquire(&dir, Mode::Shared).unwrap();
        let err = gc(root.path()).unwrap_err().to_string();
        assert!(
            err.contains("0123abcd") && err.contains("another foil process"),
            "{err}"
        );
        assert_eq!(StoreHeader::read(&dir).unwrap().count, 7, "nothing changed");
        drop(user);
        gc(root.path()).unwrap();
    }

    #[test]
    fn gc_removes_a_store_without_checksums() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("old");
        StoredEmbeddings::write(&dir, &spec(), &["a"], (&rows(&["a"], 0.0)).into()).unwrap();
        let text = std::fs::read_to_string(dir.join(HEADER_FILE)).unwrap();
        let v1: String = text
            .replace("\"version\": 3", "\"version\": 1")
            .lines()
            .take_while(|l| !l.contains("\"chunks\""))
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end_matches(',')
            .to_string()
            + "\n}\n";
        std::fs::write(dir.join(HEADER_FILE), v1).unwrap();
        let check = &verify(root.path()).unwrap()[0];
        assert!(check.problems[0].contains("no checksums"), "{check:?}");
        let r = &gc(root.path()).unwrap()[0];
        assert!(
            r.removed && r.rows_before == 1 && r.bytes_after == 0,
            "{r:?}"
        );
        assert_eq!(stats(root.path()).unwrap()[0].rows, 0);
    }

    #[test]
    fn a_generation_cache_is_verified_line_by_line_and_compacted() {
        use foil_core::{FinishReason, Generation};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.jsonl");
        let record = |key: &str, text: &str| answer_cache::CacheRecord {
            key: key.into(),
            template: "t@1".into(),
            step: "query".into(),
            item: key.into(),
            generation: Generation::text(text, FinishReason::Stop, 1, 1),
        };
        let mut text = String::new();
        for r in [record("a", "one"), record("b", "two"), record("a", "three")] {
            text.push_str(std::str::from_utf8(&answer_cache::encode_line(&r).unwrap()).unwrap());
            text.push('\n');
        }
        let text = text.replacen("two", "twx", 1) + "{\"key\":\"c";
        std::fs::write(&path, &text).unwrap();

        let check = verify_generation(&path).unwrap();
        assert_eq!(
            (check.lines, check.answers, check.duplicate_lines),
            (3, 1, 1)
        );
        assert_eq!(check.invalid.len(), 1);
        assert!(
            check.invalid[0].contains("cache.jsonl:2: CRC-32"),
            "{check:?}"
        );
        assert!(check.partial_bytes > 0 && !check.is_ok());

        let users = Lock::acquire(&answer_cache::users_lock_path(&path), Mode::Shared).unwrap();
        assert!(gc_generation(&path).is_err(), "refused while in use");
        drop(users);
        let done = gc_generation(&path).unwrap();
        assert_eq!((done.lines_before, done.answers), (3, 1));
        let after = verify_generation(&path).unwrap();
        assert!(
            after.is_ok() && after.partial_bytes == 0 && after.answers == 1,
            "{after:?}"
        );
        let cache = answer_cache::GenerationCache::open(&path).unwrap();
        assert_eq!(cache.get("a").unwrap().text, "one");
    }
}
