//! The rerank stage: rescore the top of a TREC run with a cross-encoder and write the new run.
//!
//! For each query of the run, its first `top_k` documents (trec_eval order) are scored as
//! (query text, `title + " " + text`) pairs by the cross-encoder; the output run holds those
//! documents ordered by the cross-encoder's score. Documents below `top_k` are left out, so
//! measures at cutoffs above `top_k` are not comparable with the input run's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use foil_candle::{CrossEncoder, CrossEncoderOptions};
use foil_core::beir::{read_jsonl, BeirPaths, CorpusReader};
use foil_core::manifest::Manifest;
use foil_core::trec::ScoredDoc;
use foil_core::{Document, Error, InputPolicy, Progress, Query, Reranker, Result, Run, SkipReport};
use serde::Serialize;

use crate::threads::with_threads;

/// The texts a scorer of (query, passage) pairs needs: query text and passage text (`title +
/// " " + text`) by id, read from a BEIR folder.
pub(crate) struct Texts {
    pub queries: HashMap<String, String>,
    pub passages: HashMap<String, String>,
}

impl Texts {
    pub(crate) fn read(
        paths: &BeirPaths,
        policy: InputPolicy,
        skips: &mut SkipReport,
    ) -> Result<Self> {
        let queries: Vec<Query> = read_jsonl(&paths.queries, policy, skips)?;
        let mut passages = HashMap::new();
        for doc in CorpusReader::open(&paths.corpus, policy)? {
            let doc: Document = doc?;
            passages.insert(doc.id.clone(), doc.full_text());
        }
        Ok(Texts {
            queries: queries.into_iter().map(|q| (q.id, q.text)).collect(),
            passages,
        })
    }
}

/// Configuration of a rerank run.
#[derive(Debug, Clone, Serialize)]
pub struct RerankConfig {
    /// The BEIR folder with the corpus and the queries of the run.
    pub data: PathBuf,
    pub run: PathBuf,
    pub cross_encoder: PathBuf,
    /// Documents rescored per query.
    pub top_k: usize,
    pub output: PathBuf,
    pub batch_size: usize,
    pub max_length: Option<usize>,
    pub threads: Option<usize>,
    /// `cpu` (the fused CPU path, also when `None`), `cuda` or `cuda:N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// What a rerank run did.
#[derive(Debug, Clone)]
pub struct RerankSummary {
    pub queries: usize,
    pub pairs: usize,
    pub seconds: f64,
}

/// Runs the rerank stage.
pub fn run(config: &RerankConfig, progress: &dyn Progress) -> Result<RerankSummary> {
    let started = Instant::now();
    let policy = InputPolicy::default();
    let mut skips = SkipReport::default();
    let paths = BeirPaths::new(&config.data);
    let Texts {
        queries: query_text,
        passages: full,
    } = Texts::read(&paths, policy, &mut skips)?;
    let input = Run::read(&config.run, policy, &mut skips)?;
    let dir = crate::encoder_spec::resolve_model(&config.cross_encoder)?;
    let ce = CrossEncoder::load(
        &dir,
        &CrossEncoderOptions {
            batch_size: config.batch_size,
            max_length: config.max_length,
            device: config.device.clone(),
            ..CrossEncoderOptions::default()
        },
    )?;
    let mut output = Run::default();
    let mut pairs_scored = 0;
    progress.begin("rerank", Some(input.num_queries() as u64));
    with_threads(config.threads, || -> Result<()> {
        for (i, (qid, ranked)) in input.iter().enumerate() {
            let q = query_text.get(qid.as_str()).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: query {qid:?} of the run is not in {}",
                    config.run.display(),
                    paths.queries.display()
                ))
            })?;
            let top = &ranked[..ranked.len().min(config.top_k)];
            let pairs = top
                .iter()
                .map(|d| {
                    full.get(d.doc_id.as_str())
                        .map(|t| (q.as_str(), t.as_str()))
                        .ok_or_else(|| {
                            Error::Invalid(format!(
                                "{}: document {:?} of the run is not in the corpus",
                                config.run.display(),
                                d.doc_id
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            let scores = ce.score(&pairs)?;
            pairs_scored += pairs.len();
            output.insert(
                qid.clone(),
                top.iter()
                    .zip(scores)
                    .map(|(d, s)| ScoredDoc::new(d.doc_id.clone(), s as f64))
                    .collect(),
            );
            progress.update(i as u64 + 1);
        }
        Ok(())
    })??;
    progress.end();
    output.write(&config.output, "foil-rerank")?;
    let seconds = started.elapsed().as_secs_f64();
    let mut manifest = Manifest::new("rerank", serde_json::to_value(config).unwrap_or_default());
    manifest.add_input(&config.run)?;
    manifest.add_input(&paths.corpus)?;
    manifest.add_input(&paths.queries)?;
    manifest.add_output_file(&config.output)?;
    manifest
        .counts
        .insert("queries".into(), output.num_queries() as u64);
    manifest.counts.insert("pairs".into(), pairs_scored as u64);
    manifest.timings.insert("seconds".into(), seconds);
    manifest.write(&crate::search::manifest_path(&config.output))?;
    Ok(RerankSummary {
        queries: output.num_queries(),
        pairs: pairs_scored,
        seconds,
    })
}
