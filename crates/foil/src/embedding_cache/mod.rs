//! The embedding cache: vectors of texts already encoded, keyed by everything that determines
//! them — the encoder's fingerprint (weights hash, tokenizer, pooling, normalization, maximum
//! length, prompts), whether the text is a query or a passage, and the text's SHA-256.
//!
//! sentence-transformers' cache key ignores prompts, so a cached passage vector can come back
//! for a query; here the prompt is part of the fingerprint and the kind part of the key. Each
//! (fingerprint, kind) pair has its own store under the cache folder (an append-only
//! [`foil_dense`] embeddings store whose ids are text hashes), so a cache written by one
//! model is never read for another, and an interrupted job keeps every chunk it committed.
//!
//! Several processes share a cache safely (see [`foil_dense::store`] for the locks):
//! - each holds the store's users lock (shared) while it has the cache open, so that
//!   `foil cache gc` never rewrites a store someone is using;
//! - before encoding it reads the chunks other processes committed since it last looked, and
//!   encodes only what is still missing;
//! - it commits under the store's append lock, after reading again what was committed while it
//!   encoded and leaving out the texts another process committed first: every text is stored
//!   once, however many processes encode it at the same time;
//! - every chunk is checked against its CRC-32 when read; a damaged chunk is dropped with a
//!   warning and its texts are encoded again — a wrong vector never leaves the cache.
//!
//! [`admin`] holds `foil cache stats | verify | gc`.

pub mod admin;

pub use foil_dense::Provenance;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use foil_core::fsutil::hex;
use foil_core::lock::{Lock, Mode};
use foil_core::{Embeddings, Encoder, Error, Result, TextKind};
use foil_dense::store::{
    ChunkRead, ChunkRecord, EmbeddingsReader, EmbeddingsWriter, StoreHeader, StoreSpec,
    APPEND_LOCK_FILE, HEADER_FILE,
};
use foil_dense::EmbeddingsView;
use sha2::{Digest, Sha256};

/// The store format the cache's folder names are keyed by: a cache written by a foil whose
/// stores had no checksums lives in other folders and is never read.
const STORE_KEY: &str = "store-format=2";

/// The cache of one (encoder, kind).
pub struct EmbeddingCache {
    dir: PathBuf,
    spec: StoreSpec,
    rows: HashMap<String, usize>,
    vectors: Vec<f32>,
    /// The chunks of the store read so far, as its header recorded them.
    loaded: Vec<ChunkRecord>,
    /// Rows of damaged chunks that were dropped (their texts are encoded again).
    damaged_rows: u64,
    // Held while the cache is open: `foil cache gc` waits for no one.
    _users: Lock,
}

/// How many texts were found in the cache and how many were encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: usize,
    pub encoded: usize,
    /// Texts this process encoded that another process committed first (not stored twice).
    pub committed_by_others: usize,
}

fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

/// The folder of the cache of `encoder` for `kind` under `root`, and the provenance its
/// store records. The folder name hashes the provenance's format-2 spelling, so caches made
/// before format 3 are found.
pub fn store_dir(root: &Path, encoder: &dyn Encoder, kind: TextKind) -> (PathBuf, Provenance) {
    let provenance = Provenance::new(encoder.fingerprint(), kind);
    let key = format!("{}|{STORE_KEY}", provenance.legacy_string());
    (root.join(&sha256_hex(&key)[..24]), provenance)
}

impl EmbeddingCache {
    /// Opens (or starts) the cache of `encoder` for `kind` under `root`.
    pub fn open(root: &Path, encoder: &dyn Encoder, kind: TextKind) -> Result<Self> {
        let (dir, provenance) = store_dir(root, encoder, kind);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let users = Lock::acquire(&dir, Mode::Shared)?;
        let mut cache = Self {
            dir,
            spec: StoreSpec {
                dim: encoder.dim(),
                normalized: false,
                provenance,
            },
            rows: HashMap::new(),
            vectors: Vec::new(),
            loaded: Vec::new(),
            damaged_rows: 0,
            _users: users,
        };
        cache.refresh()?;
        tracing::debug!(cache = %cache.dir.display(), entries = cache.rows.len(), "opened embedding cache");
        Ok(cache)
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of cached texts.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows of damaged chunks dropped so far.
    pub fn damaged_rows(&self) -> u64 {
        self.damaged_rows
    }

    /// Reads the chunks committed since the last look. Committed chunks are never changed
    /// while anyone holds the users lock, so this needs no other lock.
    fn refresh(&mut self) -> Result<()> {
        if !self.dir.join(HEADER_FILE).is_file() {
            return Ok(());
        }
        let header = StoreHeader::read(&self.dir)?;
        if header.provenance != self.spec.provenance || header.dim != self.spec.dim {
            return Err(Error::format(
                self.dir.join(HEADER_FILE),
                format!(
                    "the cache folder holds vectors of another encoder ({}, dim {}); remove the folder",
                    header.provenance, header.dim
                ),
            ));
        }
        if header.chunks.len() < self.loaded.len()
            || header.chunks[..self.loaded.len()] != self.loaded[..]
        {
            // Rewritten since we read it (cannot happen while we hold the users lock, but
            // then the only safe answer is to read it all again).
            self.rows.clear();
            self.vectors.clear();
            self.loaded.clear();
        }
        if header.chunks.len() == self.loaded.len() {
            return Ok(());
        }
        let first = self.loaded.len();
        let chunks = header.chunks.clone();
        let mut reader = EmbeddingsReader::open_at(&self.dir, header, first)?;
        while let Some(chunk) = reader.next_chunk()? {
            match chunk {
                ChunkRead::Rows { ids, embeddings } => {
                    for (id, row) in ids.into_iter().zip(embeddings.rows()) {
                        if !self.rows.contains_key(&id) {
                            self.rows.insert(id, self.rows.len());
                            self.vectors.extend_from_slice(row);
                        }
                    }
                }
                ChunkRead::Corrupt(c) => {
                    self.damaged_rows += c.rows.end - c.rows.start;
                    tracing::warn!(
                        cache = %self.dir.display(),
                        "{}; its texts are encoded again (`foil cache gc` removes the chunk)",
                        c.into_error()
                    );
                }
            }
        }
        self.loaded = chunks;
        Ok(())
    }

    /// Encodes `texts` with `encoder`, taking cached vectors where there are some and adding
    /// the new ones to the cache.
    pub fn encode(
        &mut self,
        encoder: &dyn Encoder,
        texts: &[&str],
        kind: TextKind,
    ) -> Result<(Embeddings, CacheStats)> {
        let dim = self.spec.dim;
        let keys: Vec<String> = texts.iter().map(|t| sha256_hex(t)).collect();
        self.refresh()?;
        let mut missing: Vec<usize> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            if !self.rows.contains_key(key) && !seen.contains_key(key.as_str()) {
                seen.insert(key, i);
                missing.push(i);
            }
        }
        let mut stats = CacheStats {
            hits: texts.len() - missing.len(),
            encoded: missing.len(),
            committed_by_others: 0,
        };
        if !missing.is_empty() {
            let new_texts: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
            let new = encoder.encode(&new_texts, kind)?;
            stats.committed_by_others = self.commit(&missing, &keys, &new)?;
        }
        let mut out = Vec::with_capacity(texts.len() * dim);
        for key in &keys {
            let r = self.rows[key];
            out.extend_from_slice(&self.vectors[r * dim..(r + 1) * dim]);
        }
        Ok((Embeddings::from_vec(dim, out), stats))
    }

    /// Appends the vectors of `keys[missing[i]]` (row `i` of `new`) that no other process
    /// committed meanwhile; returns how many others had committed.
    fn commit(&mut self, missing: &[usize], keys: &[String], new: &Embeddings) -> Result<usize> {
        let dim = self.spec.dim;
        let _append = Lock::acquire(&self.dir.join(APPEND_LOCK_FILE), Mode::Exclusive)?;
        self.refresh()?;
        let mut ids: Vec<&str> = Vec::with_capacity(missing.len());
        let mut data: Vec<f32> = Vec::with_capacity(missing.len() * dim);
        let mut others = 0;
        for (&i, row) in missing.iter().zip(new.rows()) {
            if self.rows.contains_key(&keys[i]) {
                others += 1;
            } else {
                ids.push(&keys[i]);
                data.extend_from_slice(row);
            }
        }
        if others > 0 {
            tracing::debug!(cache = %self.dir.display(), texts = others, "another process committed these first");
        }
        if ids.is_empty() {
            return Ok(others);
        }
        // Holding the append lock: what lies past the last commit is a killed writer's and is
        // cut off by resume.
        let mut writer = EmbeddingsWriter::resume(&self.dir, &self.spec)?;
        writer.append(&ids, EmbeddingsView::new(dim, &data))?;
        self.loaded = writer.header().chunks.clone();
        for (key, row) in ids.iter().zip(data.chunks_exact(dim)) {
            self.rows.insert(key.to_string(), self.rows.len());
            self.vectors.extend_from_slice(row);
        }
        Ok(others)
    }
}

/// The default cache folder: `$FOIL_CACHE/embeddings`, else `~/.cache/foil/embeddings`.
pub fn default_cache_dir() -> PathBuf {
    let root = std::env::var_os("FOIL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".cache/foil"))
                .unwrap_or_else(|| PathBuf::from(".cache/foil"))
        });
    root.join("embeddings")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Vectors from the text's bytes; counts the texts it encodes.
    struct CountingEncoder(AtomicUsize);

    impl Encoder for CountingEncoder {
        fn name(&self) -> &str {
            "counting"
        }
        fn dim(&self) -> usize {
            3
        }
        fn fingerprint(&self) -> String {
            "counting@1".into()
        }
        fn encode(&self, texts: &[&str], _: TextKind) -> Result<Embeddings> {
            self.0.fetch_add(texts.len(), Ordering::SeqCst);
            let data = texts
                .iter()
                .flat_map(|t| {
                    let b = t.as_bytes();
                    [b.len() as f32, b[0] as f32, b[b.len() - 1] as f32]
                })
                .collect();
            Ok(Embeddings::from_vec(3, data))
        }
    }

    fn encoder() -> CountingEncoder {
        CountingEncoder(AtomicUsize::new(0))
    }

    #[test]
    fn two_users_of_one_store_store_each_text_once() {
        let root = tempfile::tempdir().unwrap();
        let enc = encoder();
        let mut a = EmbeddingCache::open(root.path(), &enc, TextKind::Passage).unwrap();
        let mut b = EmbeddingCache::open(root.path(), &enc, TextKind::Passage).unwrap();
        let (va, sa) = a
            .encode(&enc, &["x", "yy", "x"], TextKind::Passage)
            .unwrap();
        assert_eq!((sa.hits, sa.encoded), (1, 2));
        // b opened before a committed; it sees a's commit before encoding.
        let (vb, sb) = b.encode(&enc, &["yy", "zzz"], TextKind::Passage).unwrap();
        assert_eq!((sb.hits, sb.encoded, sb.committed_by_others), (1, 1, 0));
        assert_eq!(vb.row(0), va.row(1));
        let store = foil_dense::StoredEmbeddings::read(a.dir());
        // a still holds the store open (shared): a strict read beside it is fine.
        let store = store.unwrap();
        assert_eq!(store.ids.len(), 3, "x, yy, zzz once each");
        assert_eq!(enc.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn texts_another_process_committed_while_this_one_encoded_are_not_appended() {
        let root = tempfile::tempdir().unwrap();
        let enc = encoder();
        let mut a = EmbeddingCache::open(root.path(), &enc, TextKind::Query).unwrap();
        let mut b = EmbeddingCache::open(root.path(), &enc, TextKind::Query).unwrap();
        // Both found "q1" missing and encoded it; a commits first.
        let keys = vec![sha256_hex("q1"), sha256_hex("q2")];
        let new = enc.encode(&["q1", "q2"], TextKind::Query).unwrap();
        assert_eq!(
            a.commit(&[0], &keys, &enc.encode(&["q1"], TextKind::Query).unwrap())
                .unwrap(),
            0
        );
        assert_eq!(b.commit(&[0, 1], &keys, &new).unwrap(), 1);
        let store = foil_dense::StoredEmbeddings::read(a.dir()).unwrap();
        assert_eq!(store.ids, keys);
        assert_eq!(store.header.chunks.len(), 2);
    }

    #[test]
    fn a_damaged_chunk_is_encoded_again_not_returned() {
        let root = tempfile::tempdir().unwrap();
        let enc = encoder();
        let mut cache = EmbeddingCache::open(root.path(), &enc, TextKind::Passage).unwrap();
        let (first, _) = cache
            .encode(&enc, &["abc", "de"], TextKind::Passage)
            .unwrap();
        let dir = cache.dir().to_path_buf();
        drop(cache);
        let vectors = dir.join(foil_dense::store::VECTORS_FILE);
        let mut bytes = std::fs::read(&vectors).unwrap();
        bytes[1] ^= 0x7f;
        std::fs::write(&vectors, bytes).unwrap();

        let mut cache = EmbeddingCache::open(root.path(), &enc, TextKind::Passage).unwrap();
        assert_eq!((cache.len(), cache.damaged_rows()), (0, 2));
        let (again, stats) = cache
            .encode(&enc, &["abc", "de"], TextKind::Passage)
            .unwrap();
        assert_eq!((stats.hits, stats.encoded), (0, 2));
        assert_eq!(again, first);
        assert_eq!(enc.0.load(Ordering::SeqCst), 4);
    }
}
