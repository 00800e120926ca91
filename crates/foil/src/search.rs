//! The search stage: rank a corpus for the queries judged in `qrels/<split>.tsv` (the queries
//! BEIR evaluates) and write a TREC run with its manifest.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use foil_bm25::{Analyzer, Bm25Index, Bm25Params, Bm25Searcher};
use foil_core::beir::{read_jsonl, BeirPaths, CorpusReader};
use foil_core::fsutil::sha256_file;
use foil_core::lock::{Lock, Mode};
use foil_core::manifest::Manifest;
use foil_core::trec::{Run, ScoredDoc};
use foil_core::{
    Error, Fused, InputPolicy, Progress, Qrels, Query, Result, Retriever, Similarity, SkipReport,
    TextKind,
};
use foil_dense::StoredEmbeddings;
use serde::Serialize;

use crate::encode::encode_all;
use crate::encoder_spec::EncoderSpec;
use crate::retrievers::DenseRetriever;
use crate::threads::with_threads;

/// Which retriever ranks the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum RetrieverKind {
    /// Lucene BM25 over foil's in-memory inverted index.
    Bm25,
    /// A bi-encoder (--model) and exact inner-product search.
    Dense,
    /// BM25 and the bi-encoder (--model), fused by reciprocal rank (k = 60).
    Hybrid,
}

/// Configuration of a search run.
#[derive(Debug, Clone, Serialize)]
pub struct SearchConfig {
    /// A BEIR dataset folder.
    pub data: PathBuf,
    pub split: String,
    pub retriever: RetrieverKind,
    pub top_k: usize,
    /// The TREC run to write; its manifest goes to `<output>.manifest.json`.
    pub output: PathBuf,
    pub bm25: Bm25Params,
    /// Load the BM25 index from this file when it is current, else build and save it there.
    pub index: Option<PathBuf>,
    /// The encoder of dense retrieval.
    pub encoder: Option<EncoderSpec>,
    /// Precomputed passage vectors (an embeddings store written by `foil encode`).
    pub corpus_embeddings: Option<PathBuf>,
    /// The embedding cache folder; `None` disables it.
    pub cache: Option<PathBuf>,
    pub similarity: Similarity,
    pub threads: Option<usize>,
    pub skip_invalid: bool,
    /// The tag written in the run's last column.
    pub tag: String,
}

/// What a search run did.
#[derive(Debug, Clone)]
pub struct SearchSummary {
    pub documents: usize,
    pub queries: usize,
    pub results: usize,
    pub index_loaded: bool,
    pub index_seconds: f64,
    pub search_seconds: f64,
    pub skips: SkipReport,
    pub manifest: PathBuf,
}

/// Where the manifest of a run file goes.
pub fn manifest_path(output: &Path) -> PathBuf {
    foil_core::manifest::manifest_path_of(output)
}

/// Runs the search stage.
pub fn run(config: &SearchConfig, progress: &dyn Progress) -> Result<SearchSummary> {
    let paths = BeirPaths::new(&config.data);
    let qrels_path = paths.qrels(&config.split);
    if !qrels_path.is_file() {
        return Err(Error::Invalid(format!(
            "no qrels for split {:?}: {} does not exist",
            config.split,
            qrels_path.display()
        )));
    }
    let policy = InputPolicy {
        skip_invalid: config.skip_invalid,
    };
    let mut skips = SkipReport::default();
    let mut manifest = Manifest::new("search", serde_json::to_value(config).unwrap_or_default());

    let queries: Vec<Query> = read_jsonl(&paths.queries, policy, &mut skips)?;
    let query_text: HashMap<&str, &str> = queries
        .iter()
        .map(|q| (q.id.as_str(), q.text.as_str()))
        .collect();

    let started = Instant::now();
    let (retriever, index_loaded) = with_threads(config.threads, || {
        build_retriever(config, &paths.corpus, policy, &mut skips, progress)
    })??;
    let index_seconds = started.elapsed().as_secs_f64();

    let doc_ids: HashSet<&str> = (0..retriever.num_docs() as u32)
        .map(|d| retriever.doc_id(d))
        .collect();
    let qrels = Qrels::read_checked(
        &qrels_path,
        policy,
        &mut skips,
        |q| query_text.contains_key(q),
        |d| doc_ids.contains(d),
    )?;
    drop(doc_ids);
    let query_ids: Vec<&str> = qrels.query_ids().collect();
    let texts: Vec<&str> = query_ids.iter().map(|q| query_text[q]).collect();

    let started = Instant::now();
    let hits = with_threads(config.threads, || {
        retriever.search_batch(&texts, config.top_k, progress)
    })??;
    let search_seconds = started.elapsed().as_secs_f64();
    let searcher = &retriever;

    let mut run = Run::default();
    for (query, hits) in query_ids.iter().zip(hits) {
        let docs = hits
            .iter()
            .map(|h| ScoredDoc::new(searcher.doc_id(h.doc), h.score as f64))
            .collect();
        run.insert(*query, docs);
    }
    run.write(&config.output, &config.tag)?;

    manifest.add_input(&paths.corpus)?;
    manifest.add_input(&paths.queries)?;
    manifest.add_input(&qrels_path)?;
    manifest.add_output_file(&config.output)?;
    manifest.set_skips(&skips);
    manifest
        .counts
        .insert("documents".into(), searcher.num_docs() as u64);
    manifest
        .counts
        .insert("queries".into(), query_ids.len() as u64);
    manifest.counts.insert("results".into(), run.len() as u64);
    manifest.counts.insert("skipped".into(), skips.total());
    manifest
        .timings
        .insert("index_seconds".into(), index_seconds);
    manifest
        .timings
        .insert("search_seconds".into(), search_seconds);
    let manifest_file = manifest_path(&config.output);
    manifest.write(&manifest_file)?;

    Ok(SearchSummary {
        documents: searcher.num_docs(),
        queries: query_ids.len(),
        results: run.len(),
        index_loaded,
        index_seconds,
        search_seconds,
        skips,
        manifest: manifest_file,
    })
}

/// The lock file next to a BM25 index file: `<index>.lock`.
fn index_lock_path(index: &Path) -> PathBuf {
    let mut name = index.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    index.with_file_name(name)
}

/// Loads the index from `config.index` when it was built from this corpus with this analyzer;
/// otherwise builds it from the corpus (and saves it there, if a path was given).
fn load_or_build(
    config: &SearchConfig,
    corpus: &Path,
    corpus_sha: &str,
    policy: InputPolicy,
    skips: &mut SkipReport,
    progress: &dyn Progress,
) -> Result<(Bm25Index, bool)> {
    let analyzer = Analyzer::english();
    let source = serde_json::json!({ "corpus": corpus.display().to_string(), "sha256": corpus_sha, "skip_invalid": policy.skip_invalid });
    // One process builds an index file at a time; one that waited for it loads what the other
    // built. A current index that fails its checksum is an error, never silently used.
    let _lock = match &config.index {
        Some(path) => Some(Lock::acquire(&index_lock_path(path), Mode::Exclusive)?),
        None => None,
    };
    if let Some(path) = config.index.as_deref().filter(|p| p.is_file()) {
        match Bm25Index::read_header(path) {
            Ok(header)
                if header.analyzer == analyzer.config()
                    && header.source["sha256"] == source["sha256"]
                    && header.source["skip_invalid"] == source["skip_invalid"] =>
            {
                tracing::info!(index = %path.display(), "loading BM25 index");
                let (index, _) = Bm25Index::load(path)?;
                return Ok((index, true));
            }
            Ok(_) => {
                tracing::warn!(index = %path.display(), "index was built from another corpus or analyzer: rebuilding it")
            }
            Err(e) => tracing::warn!("{e}: rebuilding it"),
        }
    }
    let mut reader = CorpusReader::open(corpus, policy)?;
    progress.begin("index", None);
    let index = Bm25Index::build(analyzer, reader.by_ref(), &|n| progress.update(n as u64))?;
    progress.end();
    skips.merge(reader.into_skips());
    if let Some(path) = &config.index {
        index.save(path, source)?;
        tracing::info!(index = %path.display(), "saved BM25 index");
    }
    Ok((index, false))
}

/// Builds the configured retriever; says whether its index or passage vectors were loaded
/// rather than computed (for a fusion: all of them).
fn build_retriever(
    config: &SearchConfig,
    corpus: &Path,
    policy: InputPolicy,
    skips: &mut SkipReport,
    progress: &dyn Progress,
) -> Result<(Box<dyn Retriever>, bool)> {
    match config.retriever {
        RetrieverKind::Bm25 => {
            let (searcher, loaded) = bm25_retriever(config, corpus, policy, skips, progress)?;
            Ok((Box::new(searcher), loaded))
        }
        RetrieverKind::Dense => {
            let (dense, loaded) = dense_retriever(config, corpus, policy, skips, progress)?;
            Ok((Box::new(dense), loaded))
        }
        RetrieverKind::Hybrid => {
            let (bm25, bm25_loaded) = bm25_retriever(config, corpus, policy, skips, progress)?;
            // The corpus's invalid records were counted once, by the BM25 index.
            let mut again = SkipReport::default();
            let (dense, dense_loaded) =
                dense_retriever(config, corpus, policy, &mut again, progress)?;
            let fused = Fused::new(vec![Box::new(bm25), Box::new(dense)])?;
            Ok((Box::new(fused), bm25_loaded && dense_loaded))
        }
    }
}

/// Loads or builds the BM25 index of the corpus.
fn bm25_retriever(
    config: &SearchConfig,
    corpus: &Path,
    policy: InputPolicy,
    skips: &mut SkipReport,
    progress: &dyn Progress,
) -> Result<(Bm25Searcher, bool)> {
    let corpus_sha = sha256_file(corpus)?;
    let (index, loaded) = load_or_build(config, corpus, &corpus_sha, policy, skips, progress)?;
    Ok((Bm25Searcher::new(index, config.bm25), loaded))
}

/// Loads precomputed passage vectors, or encodes the corpus (through the cache).
fn dense_retriever(
    config: &SearchConfig,
    corpus: &Path,
    policy: InputPolicy,
    skips: &mut SkipReport,
    progress: &dyn Progress,
) -> Result<(DenseRetriever, bool)> {
    let spec = config
        .encoder
        .as_ref()
        .ok_or_else(|| Error::config("encoder", "dense retrieval needs a model"))?;
    let encoder = spec.load()?;
    let (ids, vectors, loaded) = match &config.corpus_embeddings {
        Some(dir) => {
            let stored = StoredEmbeddings::read(dir)?;
            let provenance = &stored.header.provenance;
            if !provenance.matches(&encoder.fingerprint(), TextKind::Passage) {
                return Err(Error::Invalid(format!(
                    "{}: these vectors were made by another encoder, with other settings or for another kind of text ({provenance})",
                    dir.display(),
                )));
            }
            if !stored.header.complete {
                return Err(Error::Invalid(format!(
                    "{}: the encode run that wrote these vectors did not finish",
                    dir.display()
                )));
            }
            (stored.ids, stored.embeddings, true)
        }
        None => {
            let records =
                crate::encode::read_texts(corpus, TextKind::Passage, policy, None, skips)?;
            let texts: Vec<&str> = records.iter().map(|(_, t)| t.as_str()).collect();
            let vectors = encode_all(
                encoder.as_ref(),
                &texts,
                TextKind::Passage,
                config.cache.as_deref(),
                progress,
            )?;
            let ids = records.into_iter().map(|(id, _)| id).collect();
            (ids, vectors, false)
        }
    };
    let cosine = config.similarity == Similarity::Cosine;
    let dense = DenseRetriever::new(ids, vectors, encoder, cosine, config.cache.clone());
    Ok((dense, loaded))
}
