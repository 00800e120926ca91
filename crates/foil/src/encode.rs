//! The encode stage: texts of a BEIR JSONL file → an embeddings store (`header.json`,
//! `ids.jsonl`, `vectors.f32`) and its `manifest.json`.
//!
//! The store is appended chunk by chunk and committed after each, so a killed run resumes
//! where it stopped; vectors already in the embedding cache ([`crate::embedding_cache`]) are not
//! recomputed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use foil_core::beir::{CorpusReader, QueriesReader};
use foil_core::fsutil::sha256_file;
use foil_core::manifest::Manifest;
use foil_core::{Embeddings, Encoder, InputPolicy, Progress, Result, SkipReport, TextKind};
use foil_dense::store::{EmbeddingsWriter, StoreHeader, StoreSpec};
use foil_dense::{EmbeddingsView, Provenance};
use serde::Serialize;

use crate::embedding_cache::{CacheStats, EmbeddingCache};
use crate::encoder_spec::EncoderSpec;
use crate::threads::with_threads;

/// Texts per chunk: the unit of progress, of commits, and of length-sorted batching.
pub const CHUNK: usize = 2048;

/// Configuration of an encode run.
#[derive(Debug, Clone, Serialize)]
pub struct EncodeConfig {
    pub encoder: EncoderSpec,
    /// `corpus.jsonl` (passages: `title + " " + text`) or `queries.jsonl`.
    pub input: PathBuf,
    pub kind: TextKind,
    /// The output store folder.
    pub output: PathBuf,
    /// Encode only the first `limit` records.
    pub limit: Option<usize>,
    /// The embedding cache folder; `None` disables the cache.
    pub cache: Option<PathBuf>,
    pub threads: Option<usize>,
    pub skip_invalid: bool,
    /// Texts per committed chunk (default [`CHUNK`]).
    pub chunk: usize,
}

/// What an encode run did.
#[derive(Debug, Clone)]
pub struct EncodeSummary {
    pub texts: usize,
    /// Rows already in the output from an interrupted run.
    pub resumed: usize,
    pub cache: CacheStats,
    pub encode_seconds: f64,
    pub dim: usize,
    pub skips: SkipReport,
}

/// Reads the (id, text) records of a BEIR JSONL file.
pub fn read_texts(
    path: &Path,
    kind: TextKind,
    policy: InputPolicy,
    limit: Option<usize>,
    skips: &mut SkipReport,
) -> Result<Vec<(String, String)>> {
    let limit = limit.unwrap_or(usize::MAX);
    let records = match kind {
        TextKind::Passage => {
            let mut reader = CorpusReader::open(path, policy)?;
            let docs = reader
                .by_ref()
                .take(limit)
                .map(|d| {
                    d.map(|d| {
                        let text = d.full_text();
                        (d.id, text)
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            skips.merge(reader.into_skips());
            docs
        }
        TextKind::Query => {
            let mut reader = QueriesReader::open(path, policy)?;
            let queries = reader
                .by_ref()
                .take(limit)
                .map(|q| q.map(|q| (q.id, q.text)))
                .collect::<Result<Vec<_>>>()?;
            skips.merge(reader.into_skips());
            queries
        }
    };
    Ok(records)
}

/// Encodes `texts` in chunks, through `cache` when given, reporting progress per chunk.
pub fn encode_texts(
    encoder: &dyn Encoder,
    texts: &[&str],
    kind: TextKind,
    mut cache: Option<&mut EmbeddingCache>,
    chunk_size: usize,
    progress: &dyn Progress,
    mut on_chunk: impl FnMut(usize, &Embeddings) -> Result<()>,
) -> Result<CacheStats> {
    let chunk_size = chunk_size.max(1);
    let mut stats = CacheStats::default();
    progress.begin(
        if kind == TextKind::Query {
            "queries"
        } else {
            "passages"
        },
        Some(texts.len() as u64),
    );
    for (c, chunk) in texts.chunks(chunk_size).enumerate() {
        let vectors = match cache.as_deref_mut() {
            Some(cache) => {
                let (v, s) = cache.encode(encoder, chunk, kind)?;
                stats.hits += s.hits;
                stats.encoded += s.encoded;
                v
            }
            None => {
                stats.encoded += chunk.len();
                encoder.encode(chunk, kind)?
            }
        };
        on_chunk(c * chunk_size, &vectors)?;
        progress.update((c * chunk_size + chunk.len()) as u64);
    }
    progress.end();
    Ok(stats)
}

/// Encodes all of `texts` into one matrix, through the cache under `cache_root` when given.
pub fn encode_all(
    encoder: &dyn Encoder,
    texts: &[&str],
    kind: TextKind,
    cache_root: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Embeddings> {
    let mut cache = match cache_root {
        Some(root) => Some(EmbeddingCache::open(root, encoder, kind)?),
        None => None,
    };
    let mut out = Embeddings::new(encoder.dim());
    encode_texts(
        encoder,
        texts,
        kind,
        cache.as_mut(),
        CHUNK,
        progress,
        |_, v| {
            out.extend(v);
            Ok(())
        },
    )?;
    Ok(out)
}

/// Runs the encode stage.
pub fn run(config: &EncodeConfig, progress: &dyn Progress) -> Result<EncodeSummary> {
    // A second process writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(&config.output)?;
    let policy = InputPolicy {
        skip_invalid: config.skip_invalid,
    };
    let mut skips = SkipReport::default();
    let records = read_texts(&config.input, config.kind, policy, config.limit, &mut skips)?;
    let encoder = config.encoder.load()?;
    let input_sha = sha256_file(&config.input)?;
    let spec = StoreSpec {
        dim: encoder.dim(),
        normalized: false,
        provenance: Provenance::new(encoder.fingerprint(), config.kind)
            .with_input(input_sha, config.limit),
    };
    let mut writer = match StoreHeader::read(&config.output) {
        Ok(h) if !h.matches(&spec) => {
            tracing::info!(output = %config.output.display(), "output holds vectors of another encoder or input, or of an older format: starting over");
            EmbeddingsWriter::create(&config.output, &spec)?
        }
        _ => EmbeddingsWriter::resume(&config.output, &spec)?,
    };
    let resumed = writer.header().count as usize;
    if resumed > 0 {
        tracing::info!(rows = resumed, "resuming an interrupted run");
    }
    let todo = &records[resumed.min(records.len())..];
    let texts: Vec<&str> = todo.iter().map(|(_, t)| t.as_str()).collect();
    let mut cache = match &config.cache {
        Some(root) => Some(EmbeddingCache::open(root, encoder.as_ref(), config.kind)?),
        None => None,
    };
    let started = Instant::now();
    let stats = with_threads(config.threads, || {
        encode_texts(
            encoder.as_ref(),
            &texts,
            config.kind,
            cache.as_mut(),
            config.chunk,
            progress,
            |offset, vectors| {
                let ids: Vec<&str> = todo[offset..offset + vectors.len()]
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect();
                writer.append(&ids, EmbeddingsView::new(vectors.dim, &vectors.data))
            },
        )
    })??;
    let encode_seconds = started.elapsed().as_secs_f64();
    writer.finish()?;

    let mut manifest = Manifest::new("encode", serde_json::to_value(config).unwrap_or_default());
    manifest.add_input(&config.input)?;
    manifest.outputs = vec![
        "header.json".into(),
        "ids.jsonl".into(),
        "vectors.f32".into(),
    ];
    manifest.set_skips(&skips);
    manifest.counts.insert("texts".into(), records.len() as u64);
    manifest.counts.insert("resumed".into(), resumed as u64);
    manifest
        .counts
        .insert("cache_hits".into(), stats.hits as u64);
    manifest
        .counts
        .insert("encoded".into(), stats.encoded as u64);
    manifest.counts.insert("dim".into(), encoder.dim() as u64);
    manifest
        .timings
        .insert("encode_seconds".into(), encode_seconds);
    manifest.write(&config.output.join("manifest.json"))?;
    Ok(EncodeSummary {
        texts: records.len(),
        resumed,
        cache: stats,
        encode_seconds,
        dim: encoder.dim(),
        skips,
    })
}
