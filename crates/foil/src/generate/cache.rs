//! The generation cache: every answer a generator gave, appended to a JSONL file as it comes,
//! keyed by the SHA-256 of everything that determines it (generator fingerprint, template name
//! and version, step, sampling parameters with the seed, and the messages).
//!
//! A run loads the cache, sends only the requests whose keys are missing, and appends each
//! batch's answers with one write and an fsync. A run killed mid-write leaves a last line
//! without its newline (or not valid JSON): it is dropped, counted and logged, and the file is
//! cut back to its last whole line before anything is appended. Failed requests are not
//! cached, so a rerun retries them. Final outputs are built from the cache in input order, so
//! they do not depend on how many runs it took to fill it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use foil_core::fsutil::hex;
use foil_core::{ChatMessage, Error, Generation, Result, SamplingParams};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

/// One cache line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheRecord {
    pub key: String,
    /// `name@version` of the template.
    pub template: String,
    pub step: String,
    /// The item the request was made for (e.g. `gen-q-<passage>-<n>`), for people reading
    /// the file; not part of the key.
    pub item: String,
    pub generation: Generation,
}

/// The key of a request.
pub fn request_key(
    fingerprint: &str,
    template: &str,
    step: &str,
    params: &SamplingParams,
    messages: &[ChatMessage],
) -> String {
    #[derive(Serialize)]
    struct Keyed<'a> {
        generator: &'a str,
        template: &'a str,
        step: &'a str,
        params: &'a SamplingParams,
        messages: &'a [ChatMessage],
    }
    let json = serde_json::to_vec(&Keyed {
        generator: fingerprint,
        template,
        step,
        params,
        messages,
    })
    .unwrap_or_default();
    hex(&Sha256::digest(&json))
}

/// The cache file, loaded, and open for appending.
pub struct GenerationCache {
    path: PathBuf,
    file: File,
    entries: HashMap<String, Generation>,
    /// Cut-off last lines dropped when loading (a run killed mid-write).
    pub dropped_partial: u64,
    /// Whole lines that were not valid records (skipped).
    pub bad_lines: u64,
}

impl GenerationCache {
    /// Opens (creating) the cache at `path` and loads its records.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut entries = HashMap::new();
        let mut dropped_partial = 0;
        let mut bad_lines = 0;
        // Everything after the last newline is a line cut short.
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            dropped_partial += 1;
            warn!(
                cache = %path.display(),
                bytes = bytes.len() - whole,
                "dropped a cut-off last line of the generation cache (a run was killed mid-write)"
            );
        }
        for (n, line) in bytes[..whole].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<CacheRecord>(line) {
                Ok(record) => {
                    entries.entry(record.key).or_insert(record.generation);
                }
                Err(e) => {
                    bad_lines += 1;
                    warn!(cache = %path.display(), line = n + 1, error = %e, "skipped an invalid line of the generation cache");
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if whole < bytes.len() {
            file.set_len(whole as u64).map_err(|e| Error::io(path, e))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            entries,
            dropped_partial,
            bad_lines,
        })
    }

    /// The cached answer for `key`.
    pub fn get(&self, key: &str) -> Option<&Generation> {
        self.entries.get(key)
    }

    /// Whether `key` is cached.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// How many answers the cache holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends `records` with one write and an fsync, then keeps them in memory.
    pub fn append(&mut self, records: Vec<CacheRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for record in &records {
            serde_json::to_writer(&mut buf, record)
                .map_err(|e| Error::format(&self.path, format!("cannot serialize: {e}")))?;
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        for record in records {
            self.entries.entry(record.key).or_insert(record.generation);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foil_core::FinishReason;

    fn record(key: &str, text: &str) -> CacheRecord {
        CacheRecord {
            key: key.into(),
            template: "t@1".into(),
            step: "query".into(),
            item: "i".into(),
            generation: Generation {
                text: text.into(),
                finish: FinishReason::Stop,
                prompt_tokens: 1,
                completion_tokens: 2,
            },
        }
    }

    #[test]
    fn a_cut_off_last_line_is_dropped_and_the_file_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.jsonl");
        let mut cache = GenerationCache::open(&path).unwrap();
        cache
            .append(vec![record("a", "x"), record("b", "y")])
            .unwrap();
        drop(cache);
        // A kill mid-write: half a line.
        let mut bytes = std::fs::read(&path).unwrap();
        let full = bytes.len();
        let line = serde_json::to_vec(&record("c", "z")).unwrap();
        bytes.extend_from_slice(&line[..line.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();

        let mut cache = GenerationCache::open(&path).unwrap();
        assert_eq!(cache.dropped_partial, 1);
        assert_eq!(cache.len(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full as u64);
        cache
            .append(vec![record("c", "z"), record("a", "other")])
            .unwrap();
        drop(cache);
        let cache = GenerationCache::open(&path).unwrap();
        assert_eq!(
            (cache.dropped_partial, cache.bad_lines, cache.len()),
            (0, 0, 3)
        );
        assert_eq!(cache.get("a").unwrap().text, "x", "the first answer wins");
    }

    #[test]
    fn invalid_whole_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.jsonl");
        let good = serde_json::to_string(&record("a", "x")).unwrap();
        std::fs::write(&path, format!("{{\"oops\n{good}\n")).unwrap();
        let cache = GenerationCache::open(&path).unwrap();
        assert_eq!((cache.bad_lines, cache.len()), (1, 1));
    }

    #[test]
    fn keys_change_with_every_input() {
        let params = SamplingParams::default();
        let messages = vec![ChatMessage::user("hi")];
        let base = request_key("g", "t@1", "query", &params, &messages);
        assert_eq!(base.len(), 64);
        assert_eq!(base, request_key("g", "t@1", "query", &params, &messages));
        let mut seeded = params.clone();
        seeded.seed = 1;
        for other in [
            request_key("h", "t@1", "query", &params, &messages),
            request_key("g", "t@2", "query", &params, &messages),
            request_key("g", "t@1", "write", &params, &messages),
            request_key("g", "t@1", "query", &seeded, &messages),
            request_key("g", "t@1", "query", &params, &[ChatMessage::user("ho")]),
        ] {
            assert_ne!(other, base);
        }
    }
}
