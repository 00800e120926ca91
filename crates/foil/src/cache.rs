//! The embedding cache: vectors of texts already encoded, keyed by everything that determines
//! them — the encoder's fingerprint (weights hash, tokenizer, pooling, normalization, maximum
//! length, prompts), whether the text is a query or a passage, and the text's SHA-256.
//!
//! sentence-transformers' cache key ignores prompts, so a cached passage vector can come back
//! for a query; here the prompt is part of the fingerprint and the kind part of the key. Each
//! (fingerprint, kind) pair has its own store under the cache folder (an append-only
//! [`foil_dense`] embeddings store whose ids are text hashes), so a cache written by one
//! model is never read for another, and an interrupted job keeps every chunk it committed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use foil_core::fsutil::hex;
use foil_core::{Embeddings, Encoder, Result, TextKind};
use foil_dense::store::{EmbeddingsReader, EmbeddingsWriter, StoreSpec};
use foil_dense::EmbeddingsView;
use sha2::{Digest, Sha256};

/// The cache of one (encoder, kind).
pub struct EmbeddingCache {
    dir: PathBuf,
    spec: StoreSpec,
    rows: HashMap<String, usize>,
    vectors: Vec<f32>,
}

/// How many texts were found in the cache and how many were encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: usize,
    pub encoded: usize,
}

fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

impl EmbeddingCache {
    /// Opens (or starts) the cache of `encoder` for `kind` under `root`.
    pub fn open(root: &Path, encoder: &dyn Encoder, kind: TextKind) -> Result<Self> {
        let fingerprint = format!("{}|kind={kind:?}", encoder.fingerprint());
        let dir = root.join(&sha256_hex(&fingerprint)[..24]);
        let spec = StoreSpec {
            dim: encoder.dim(),
            normalized: false,
            encoder: fingerprint,
        };
        let mut rows = HashMap::new();
        let mut vectors = Vec::new();
        if dir.join(foil_dense::store::HEADER_FILE).is_file() {
            let mut reader = EmbeddingsReader::open(&dir)?;
            if reader.header().encoder == spec.encoder && reader.header().dim == spec.dim {
                while let Some((ids, chunk)) = reader.read_chunk(1 << 14)? {
                    for id in ids {
                        let n = rows.len();
                        rows.entry(id).or_insert(n);
                    }
                    vectors.extend_from_slice(&chunk.data);
                }
            }
        }
        tracing::debug!(cache = %dir.display(), entries = rows.len(), "opened embedding cache");
        Ok(Self {
            dir,
            spec,
            rows,
            vectors,
        })
    }

    /// Number of cached texts.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
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
        let mut missing: Vec<usize> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            if !self.rows.contains_key(key) && !seen.contains_key(key.as_str()) {
                seen.insert(key, i);
                missing.push(i);
            }
        }
        let stats = CacheStats {
            hits: texts.len() - missing.len(),
            encoded: missing.len(),
        };
        if !missing.is_empty() {
            let new_texts: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
            let new = encoder.encode(&new_texts, kind)?;
            let new_keys: Vec<&str> = missing.iter().map(|&i| keys[i].as_str()).collect();
            let mut writer = EmbeddingsWriter::resume(&self.dir, &self.spec)?;
            writer.append(&new_keys, EmbeddingsView::new(dim, &new.data))?;
            for (key, row) in new_keys.iter().zip(new.rows()) {
                let n = self.rows.len();
                self.rows.insert(key.to_string(), n);
                self.vectors.extend_from_slice(row);
            }
        }
        let mut out = Vec::with_capacity(texts.len() * dim);
        for key in &keys {
            let r = self.rows[key];
            out.extend_from_slice(&self.vectors[r * dim..(r + 1) * dim]);
        }
        Ok((Embeddings::from_vec(dim, out), stats))
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
