//! The generation cache: every answer a generator gave, appended to a JSONL file as it comes,
//! keyed by the SHA-256 of everything that determines it (generator fingerprint, template name
//! and version, step, sampling parameters with the seed, and the messages).
//!
//! A run loads the cache, sends only the requests whose keys are missing, and appends each
//! batch's answers with one write and an fsync. Each line carries the CRC-32 of its record
//! (`crc32`, over the record's JSON without that field): a damaged line is dropped with a
//! warning and its request made again. A run killed mid-write leaves a last line without its
//! newline: it is dropped, counted and logged, and the file is cut back to its last whole line
//! before anything is appended. Failed requests are not cached, so a rerun retries them.
//! Final outputs are built from the cache in input order, so they do not depend on how many
//! runs it took to fill it.
//!
//! Several processes may share one cache file. Each holds `<cache>.lock` shared while it has
//! the cache open (so that `foil cache gc --generation` never rewrites a file in use) and
//! appends under an exclusive lock on the cache file itself: it first reads what others
//! appended since it last looked and leaves out the answers they already gave, so no answer
//! is lost or written twice, and [`GenerationCache::refresh`] lets a run skip requests another
//! run answered meanwhile.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use foil_core::fsutil::hex;
use foil_core::lock::{Lock, Mode};
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
    /// Bytes of the file read so far (always the end of a whole line).
    offset: u64,
    /// Cut-off last lines dropped when loading (a run killed mid-write).
    pub dropped_partial: u64,
    /// Whole lines that were not valid records, or failed their checksum (skipped).
    pub bad_lines: u64,
    /// Lines read so far (for line numbers in warnings).
    lines: u64,
    // Held while the cache is open; see the module documentation.
    _users: Lock,
}

/// One line of a cache file, checked.
#[derive(Debug)]
pub enum Line {
    Record(Box<CacheRecord>),
    /// Blank.
    Empty,
    /// Not a record (`Err`), or a record whose checksum does not match.
    Invalid(String),
}

/// The bytes of one cache line for `record`, checksum included, newline excluded.
pub fn encode_line(record: &CacheRecord) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(record)
        .map_err(|e| Error::Invalid(format!("cannot serialize a generation: {e}")))?;
    let crc = crc32fast::hash(&body);
    let mut line = body;
    line.pop(); // the closing brace
    line.extend_from_slice(format!(",\"crc32\":{crc}}}").as_bytes());
    Ok(line)
}

/// Parses and checks one line. The checksum covers the line's own bytes with the
/// `,"crc32":N` suffix taken out (never a re-serialization, which need not give the same
/// bytes); a line without `crc32` (written before checksums) is accepted.
pub fn decode_line(line: &[u8]) -> Line {
    const FIELD: &[u8] = b",\"crc32\":";
    if line.iter().all(u8::is_ascii_whitespace) {
        return Line::Empty;
    }
    let trimmed = line.trim_ascii_end();
    let suffix = trimmed.strip_suffix(b"}").and_then(|body| {
        let at = body.windows(FIELD.len()).rposition(|w| w == FIELD)?;
        let digits = &body[at + FIELD.len()..];
        let stored: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        Some((at, stored))
    });
    if let Some((at, stored)) = suffix {
        let mut body = trimmed[..at].to_vec();
        body.push(b'}');
        let actual = crc32fast::hash(&body);
        if actual != stored {
            return Line::Invalid(format!(
                "CRC-32 {actual}, the line records {stored}: the line is damaged"
            ));
        }
        return match serde_json::from_slice::<CacheRecord>(&body) {
            Ok(r) => Line::Record(Box::new(r)),
            Err(e) => Line::Invalid(e.to_string()),
        };
    }
    match serde_json::from_slice::<CacheRecord>(line) {
        Ok(r) => Line::Record(Box::new(r)),
        Err(e) => Line::Invalid(e.to_string()),
    }
}

/// The lock file of a cache file: `<cache>.lock`.
pub fn users_lock_path(cache: &Path) -> PathBuf {
    let mut name = cache.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    cache.with_file_name(name)
}

impl GenerationCache {
    /// Opens (creating) the cache at `path` and loads its records.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let users = Lock::acquire(&users_lock_path(path), Mode::Shared)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut cache = Self {
            path: path.to_path_buf(),
            file,
            entries: HashMap::new(),
            offset: 0,
            dropped_partial: 0,
            bad_lines: 0,
            lines: 0,
            _users: users,
        };
        cache.lock()?;
        let loaded = cache.read_new(true);
        cache.unlock()?;
        loaded?;
        Ok(cache)
    }

    fn lock(&self) -> Result<()> {
        self.file.lock().map_err(|e| Error::io(&self.path, e))
    }

    fn unlock(&self) -> Result<()> {
        self.file.unlock().map_err(|e| Error::io(&self.path, e))
    }

    /// Reads the whole lines appended since the last read. With the file locked (`locked`),
    /// a last line without its newline is a killed writer's: it is dropped and cut off.
    /// Without the lock it may be a line being written: it is left for a later read.
    fn read_new(&mut self, locked: bool) -> Result<()> {
        let len = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        if len < self.offset {
            // Rewritten by `foil cache gc` (which needs everyone gone: cannot happen while we
            // hold the users lock); read it again from the start.
            self.entries.clear();
            self.offset = 0;
            self.lines = 0;
        }
        if len == self.offset {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity((len - self.offset) as usize);
        let mut file = &self.file;
        file.seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.take(len - self.offset).read_to_end(&mut bytes))
            .map_err(|e| Error::io(&self.path, e))?;
        // Everything after the last newline is a line cut short (or still being written).
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() && locked {
            self.dropped_partial += 1;
            warn!(
                cache = %self.path.display(),
                bytes = bytes.len() - whole,
                "dropped a cut-off last line of the generation cache (a run was killed mid-write)"
            );
            self.file
                .set_len(self.offset + whole as u64)
                .map_err(|e| Error::io(&self.path, e))?;
        }
        for line in bytes[..whole].split_inclusive(|&b| b == b'\n') {
            self.lines += 1;
            match decode_line(&line[..line.len() - 1]) {
                Line::Record(record) => {
                    let record = *record;
                    self.entries.entry(record.key).or_insert(record.generation);
                }
                Line::Empty => {}
                Line::Invalid(e) => {
                    self.bad_lines += 1;
                    warn!(cache = %self.path.display(), line = self.lines, error = %e, "skipped an invalid line of the generation cache; its request is made again");
                }
            }
        }
        self.offset += whole as u64;
        Ok(())
    }

    /// Reads the answers other processes appended since the last look.
    pub fn refresh(&mut self) -> Result<()> {
        self.read_new(false)
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

    /// Appends `records` with one write and an fsync, leaving out those whose keys another
    /// process appended first, then keeps them in memory. Returns how many were left out.
    pub fn append(&mut self, records: Vec<CacheRecord>) -> Result<usize> {
        if records.is_empty() {
            return Ok(0);
        }
        self.lock()?;
        let result = self.append_locked(records);
        let unlocked = self.unlock();
        let others = result?;
        unlocked?;
        Ok(others)
    }

    fn append_locked(&mut self, records: Vec<CacheRecord>) -> Result<usize> {
        self.read_new(true)?;
        let mut buf = Vec::new();
        let mut others = 0;
        let mut new = Vec::with_capacity(records.len());
        for record in records {
            if self.entries.contains_key(&record.key) {
                others += 1;
                continue;
            }
            buf.extend_from_slice(&encode_line(&record)?);
            buf.push(b'\n');
            new.push(record);
        }
        if buf.is_empty() {
            return Ok(others);
        }
        let mut file = &self.file;
        file.write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.offset += buf.len() as u64;
        self.lines += new.len() as u64;
        for record in new {
            self.entries.entry(record.key).or_insert(record.generation);
        }
        Ok(others)
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
            generation: Generation::text(text, FinishReason::Stop, 1, 2),
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

    #[test]
    fn a_damaged_line_fails_its_checksum_and_is_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.jsonl");
        let mut cache = GenerationCache::open(&path).unwrap();
        cache
            .append(vec![record("a", "answer one"), record("b", "answer two")])
            .unwrap();
        drop(cache);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().all(|l| l.contains("\"crc32\":")), "{text}");
        // One changed letter that keeps the line valid JSON.
        std::fs::write(&path, text.replacen("answer one", "answer onf", 1)).unwrap();
        let mut cache = GenerationCache::open(&path).unwrap();
        assert_eq!((cache.bad_lines, cache.len()), (1, 1));
        assert!(!cache.contains("a"));
        assert_eq!(cache.append(vec![record("a", "again")]).unwrap(), 0);
        drop(cache);
        let cache = GenerationCache::open(&path).unwrap();
        assert_eq!(cache.get("a").unwrap().text, "again");
    }

    #[test]
    fn the_checksum_covers_the_bytes_not_a_reserialization() {
        // A record whose float a parse + print cycle may not give back byte for byte.
        let mut r = record("k", "q");
        r.generation.mean_logprob = Some(-0.123_456_789_012_345_67);
        let line = encode_line(&r).unwrap();
        let mut edited = String::from_utf8(line.clone()).unwrap();
        assert!(matches!(decode_line(edited.as_bytes()), Line::Record(_)));
        // Spelling the same number differently changes the bytes: the line is refused.
        let at = edited.find("\"mean_logprob\":").unwrap() + "\"mean_logprob\":".len();
        let end = at + edited[at..].find('}').unwrap();
        edited.insert(end, '0');
        assert!(
            matches!(decode_line(edited.as_bytes()), Line::Invalid(_)),
            "{edited}"
        );
        // A line written by a version that kept keys in another order still checks out.
        let text = String::from_utf8(line).unwrap();
        assert!(text.ends_with(&format!(
            ",\"crc32\":{}}}",
            crc32fast::hash(&serde_json::to_vec(&r).unwrap())
        )));
    }

    #[test]
    fn lines_round_trip_and_old_lines_without_a_checksum_are_read() {
        let r = record("k", "line\nbreak \"quoted\" ünï");
        let line = encode_line(&r).unwrap();
        let Line::Record(back) = decode_line(&line) else {
            panic!()
        };
        assert_eq!(back.generation.text, r.generation.text);
        let old = serde_json::to_vec(&r).unwrap();
        assert!(matches!(decode_line(&old), Line::Record(_)));
        assert!(matches!(decode_line(b"  "), Line::Empty));
        assert!(matches!(decode_line(b"{\"key\""), Line::Invalid(_)));
    }

    #[test]
    fn two_writers_of_one_file_store_each_answer_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.jsonl");
        let mut a = GenerationCache::open(&path).unwrap();
        let mut b = GenerationCache::open(&path).unwrap();
        assert_eq!(a.append(vec![record("x", "from a")]).unwrap(), 0);
        // b had not seen x: it leaves its own x out and keeps a's.
        assert_eq!(
            b.append(vec![record("x", "from b"), record("y", "from b")])
                .unwrap(),
            1
        );
        assert_eq!(b.get("x").unwrap().text, "from a");
        a.refresh().unwrap();
        assert_eq!(a.get("y").unwrap().text, "from b");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn a_line_being_written_is_left_alone_by_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.jsonl");
        let mut a = GenerationCache::open(&path).unwrap();
        a.append(vec![record("x", "1")]).unwrap();
        // Another writer, holding the file's lock, is half-way through its line.
        let writer = OpenOptions::new().append(true).open(&path).unwrap();
        writer.lock().unwrap();
        let line = encode_line(&record("y", "2")).unwrap();
        (&writer).write_all(&line[..10]).unwrap();
        a.refresh().unwrap();
        assert!(!a.contains("y"));
        (&writer).write_all(&line[10..]).unwrap();
        (&writer).write_all(b"\n").unwrap();
        writer.unlock().unwrap();
        a.refresh().unwrap();
        assert_eq!(a.get("y").unwrap().text, "2");
        assert_eq!(a.dropped_partial, 0);
    }
}
