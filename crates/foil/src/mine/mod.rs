//! The mine stage: hard negatives for the (query, positive) pairs of a BEIR split, retrieved
//! with BM25, a bi-encoder, or both fused (reciprocal-rank fusion), optionally rescored by a
//! cross-encoder, filtered ([`filter`]) and written in the training formats of [`formats`],
//! with every negative's provenance in `negatives.jsonl`, statistics, and a manifest.
//!
//! Pairs are keyed by query id (sentence-transformers merges queries by text), every positive
//! of a query is excluded from its negatives, and margins are taken against its lowest-scoring
//! positive.

pub mod filter;
pub mod judged;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use foil_bm25::{Analyzer, Bm25Index, Bm25Params, Bm25Searcher};
use foil_candle::{CrossEncoder, CrossEncoderOptions};
use foil_core::beir::{read_jsonl, BeirPaths, Split};
use foil_core::fsutil::AtomicFile;
use foil_core::manifest::Manifest;
use foil_core::retriever::{reciprocal_rank_fusion, RRF_K};
use foil_core::{
    Document, Embeddings, Encoder, Error, Hit, InputPolicy, Progress, Reranker, Result, SkipReason,
    SkipReport, TextKind,
};
use foil_dense::{dot, exact_top_k, normalize_rows, StoredEmbeddings, TopKOptions};
use serde::Serialize;

use crate::encode::encode_all;
use crate::encoder_spec::EncoderSpec;
use crate::formats::{negatives_record, Format, PairCounts, Passage, QueryResult, TrainingWriter};
use crate::search::RetrieverKind;
use crate::threads::with_threads;
use filter::{Candidate, Chosen, Filters, Rejection, Rejections};

/// Where the (query, positive) pairs come from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PairsSource {
    /// `queries.jsonl` and `qrels/<split>.tsv` of a BEIR folder — the data folder itself, or
    /// the output of `foil generate queries`; judgments with grade ≥ 1 are pairs.
    Beir { dir: PathBuf, split: String },
    /// A table (JSON Lines or Parquet) with `anchor` and `positive` text columns, as
    /// sentence-transformers datasets have. Rows with the same anchor text are one query;
    /// positives are matched to corpus passages by exact text, and added to the corpus when
    /// missing (as sentence-transformers does).
    Table(PathBuf),
}

/// Configuration of a mining run.
#[derive(Debug, Clone, Serialize)]
pub struct MineConfig {
    /// The corpus to mine from (BEIR `corpus.jsonl`).
    pub corpus: PathBuf,
    pub pairs: PairsSource,
    pub retriever: RetrieverKind,
    pub encoder: Option<EncoderSpec>,
    /// Precomputed passage vectors (a `foil encode` store) instead of encoding the corpus;
    /// every corpus passage must have one.
    pub corpus_embeddings: Option<PathBuf>,
    /// Precomputed query vectors, by query id.
    pub query_embeddings: Option<PathBuf>,
    pub bm25: Bm25Params,
    /// Rescore the candidates (and positives) with this cross-encoder; filters then use its scores.
    pub cross_encoder: Option<PathBuf>,
    /// Judge the chosen negatives (and the positives) with an LLM and drop or relabel the
    /// ones it finds relevant ([`judged`]).
    pub judge: Option<judged::MineJudge>,
    /// Rescore the top candidates (and positives) with an LLM judge's P(relevant) instead of a
    /// cross-encoder; filters then use its scores.
    pub judge_rescore: Option<judged::JudgeRescore>,
    pub filters: Filters,
    pub formats: Vec<Format>,
    /// Also write each format as Parquet.
    pub parquet: bool,
    /// Output folder.
    pub output: PathBuf,
    pub cache: Option<PathBuf>,
    pub threads: Option<usize>,
    pub skip_invalid: bool,
}

/// What a mining run did.
#[derive(Debug, Clone)]
pub struct MineSummary {
    pub pairs: usize,
    pub queries: usize,
    pub negatives: usize,
    /// Rows (query, positive) written in full, and skipped by reason.
    pub kept_pairs: usize,
    pub skipped_pairs: BTreeMap<String, u64>,
    pub rejections: Rejections,
    pub stats: String,
    pub seconds: f64,
    pub skips: SkipReport,
    /// What the LLM judge did (`dropped`, `made_positive`, `unjudged`, …), when there was one.
    pub judge: BTreeMap<String, u64>,
}

/// Retrieval extra depth beyond `range_max + positives`, for candidates whose text clashes.
const EXTRA: usize = 16;

/// A query to mine for, with the corpus indices of its positives.
#[derive(Debug, Clone)]
struct MineQuery {
    id: String,
    text: String,
    positives: Vec<u32>,
}

/// The corpus and the queries with their positives, as read from the inputs.
struct Inputs {
    docs: Vec<Document>,
    queries: Vec<MineQuery>,
    /// (query, positive) pairs in the input, including those counted in `skipped_pairs`.
    pairs: usize,
    skipped_pairs: BTreeMap<String, u64>,
    files: Vec<PathBuf>,
}

/// Reads the corpus and the pairs.
fn read_inputs(config: &MineConfig, policy: InputPolicy, skips: &mut SkipReport) -> Result<Inputs> {
    match &config.pairs {
        PairsSource::Beir { dir, split } => read_beir(config, dir, split, policy, skips),
        PairsSource::Table(path) => read_table(config, path, policy, skips),
    }
}

/// The queries of a BEIR split with their positives (grade ≥ 1), in query id order.
fn read_beir(
    config: &MineConfig,
    dir: &Path,
    split: &str,
    policy: InputPolicy,
    skips: &mut SkipReport,
) -> Result<Inputs> {
    let data = Split::load_with_corpus(&BeirPaths::new(dir), &config.corpus, split, policy, skips)?;
    let mut pairs = 0;
    let queries = data
        .positives()
        .into_iter()
        .map(|(query, positives)| {
            pairs += positives.len();
            MineQuery {
                id: query.id.clone(),
                text: query.text.clone(),
                positives: positives.into_iter().map(|d| d as u32).collect(),
            }
        })
        .collect();
    Ok(Inputs {
        docs: data.docs,
        queries,
        pairs,
        skipped_pairs: BTreeMap::new(),
        files: data.files,
    })
}

/// The (anchor, positive) rows of a training table; a positive not in the corpus becomes a
/// document of its own.
fn read_table(
    config: &MineConfig,
    path: &Path,
    policy: InputPolicy,
    skips: &mut SkipReport,
) -> Result<Inputs> {
    let mut docs: Vec<Document> = read_jsonl(&config.corpus, policy, skips)?;
    let mut skipped_pairs = BTreeMap::new();
    let mut queries: Vec<MineQuery> = Vec::new();
    let mut pairs = 0;
    let mut by_text: HashMap<String, u32> = HashMap::new();
    for (i, d) in docs.iter().enumerate() {
        by_text.entry(d.full_text()).or_insert(i as u32);
    }
    let mut query_index: HashMap<String, usize> = HashMap::new();
    for (line, row) in crate::table::read_rows(path)? {
        let field = |name: &str| row.get(name).and_then(|v| v.as_str());
        let (Some(anchor), Some(positive)) = (field("anchor"), field("positive")) else {
            skips.reject(
                policy,
                path,
                line,
                SkipReason::MissingText,
                "needs text columns \"anchor\" and \"positive\"".into(),
            )?;
            continue;
        };
        if anchor.trim().is_empty() || positive.trim().is_empty() {
            skips.reject(
                policy,
                path,
                line,
                SkipReason::EmptyText,
                "empty anchor or positive".into(),
            )?;
            continue;
        }
        pairs += 1;
        let doc = *by_text.entry(positive.to_string()).or_insert_with(|| {
            docs.push(Document {
                id: format!("positive-{}", docs.len()),
                title: String::new(),
                text: positive.to_string(),
            });
            docs.len() as u32 - 1
        });
        let q = *query_index.entry(anchor.to_string()).or_insert_with(|| {
            queries.push(MineQuery {
                id: format!("anchor-{}", queries.len() + 1),
                text: anchor.to_string(),
                positives: Vec::new(),
            });
            queries.len() - 1
        });
        if queries[q].positives.contains(&doc) {
            *skipped_pairs
                .entry("duplicate_pair".to_string())
                .or_default() += 1;
        } else {
            queries[q].positives.push(doc);
        }
    }
    Ok(Inputs {
        docs,
        queries,
        pairs,
        skipped_pairs,
        files: vec![config.corpus.clone(), path.to_path_buf()],
    })
}

/// Runs the mine stage: read inputs → retrieve and rescore candidates → choose negatives →
/// let the judge relabel them → write the outputs → write the manifest.
pub fn run(config: &MineConfig, progress: &dyn Progress) -> Result<MineSummary> {
    let started = Instant::now();
    // A second process writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(&config.output)?;
    let policy = InputPolicy {
        skip_invalid: config.skip_invalid,
    };
    let mut skips = SkipReport::default();
    let Inputs {
        docs,
        queries: mut work,
        pairs,
        mut skipped_pairs,
        files,
    } = read_inputs(config, policy, &mut skips)?;
    let full: Vec<String> = docs.iter().map(Document::full_text).collect();

    let Scored {
        candidates,
        mut positive_scores,
        rescore_counts,
    } = score_candidates(config, &docs, &full, &work, progress)?;
    let (mut chosen, rejections) =
        choose_negatives(config, &full, &work, &candidates, &positive_scores);

    // False negatives by the LLM judge: dropped, or made positives; or the judge's scores as
    // teacher scores.
    let judge_report = match &config.judge {
        Some(judge) => Some(with_threads(config.threads, || {
            judged::apply(
                judge,
                &crate::judge::LlmJudge::load(&judge.config)?,
                config.filters.num_negatives,
                &full,
                judged::Selection {
                    queries: &mut work,
                    chosen: &mut chosen,
                    positive_scores: &mut positive_scores,
                },
                progress,
            )
        })??),
        None => None,
    };

    let mined = Mined {
        docs: &docs,
        full: &full,
        work: &work,
        chosen: &chosen,
        positive_scores: &positive_scores,
        judge: judge_report.as_ref(),
    };
    let written = write_outputs(config, &mined, &mut skipped_pairs)?;

    let seconds = started.elapsed().as_secs_f64();
    let mut judge_counts: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(report) = &judge_report {
        judge_counts.extend(report.counts().map(|(k, v)| (k.to_string(), v)));
    }
    let summary = MineSummary {
        pairs,
        queries: work.len(),
        negatives: written.negatives,
        kept_pairs: written.kept_pairs,
        skipped_pairs,
        rejections,
        stats: written.stats,
        seconds,
        skips,
        judge: judge_counts
            .clone()
            .into_iter()
            .chain(rescore_counts.clone())
            .collect(),
    };
    write_manifest(
        config,
        &files,
        &summary,
        &written.rows,
        &judge_counts,
        &rescore_counts,
        written.outputs,
    )?;
    Ok(summary)
}

/// Each query's candidates (best first) and the scores of its positives, from the retriever,
/// then rescored by the cross-encoder or the LLM judge when asked.
struct Scored {
    candidates: Vec<Vec<Hit>>,
    positive_scores: Vec<Vec<f32>>,
    /// What the judge's rescoring did, by name.
    rescore_counts: BTreeMap<String, u64>,
}

fn score_candidates(
    config: &MineConfig,
    docs: &[Document],
    full: &[String],
    work: &[MineQuery],
    progress: &dyn Progress,
) -> Result<Scored> {
    let max_pos = work.iter().map(|w| w.positives.len()).max().unwrap_or(0);
    let depth = config.filters.range_max + max_pos + EXTRA;
    let texts: Vec<&str> = work.iter().map(|w| w.text.as_str()).collect();
    let (mut candidates, mut positive_scores) = with_threads(config.threads, || {
        retrieve(config, docs, full, &texts, work, depth, progress)
    })??;

    if let Some(dir) = &config.cross_encoder {
        let ce = CrossEncoder::load(
            &crate::encoder_spec::resolve_model(dir)?,
            &CrossEncoderOptions::default(),
        )?;
        with_threads(config.threads, || {
            rescore(
                &ce,
                full,
                &texts,
                work,
                &mut candidates,
                &mut positive_scores,
                progress,
            )
        })??;
    }

    let mut rescore_counts = BTreeMap::new();
    if let Some(r) = &config.judge_rescore {
        rescore_counts = with_threads(config.threads, || {
            judged::rescore(
                &crate::judge::LlmJudge::load(&r.config)?,
                r.depth,
                full,
                work,
                &mut candidates,
                &mut positive_scores,
                progress,
            )
        })??;
    }
    Ok(Scored {
        candidates,
        positive_scores,
        rescore_counts,
    })
}

/// Chooses each query's negatives from its candidates (with a judge, a reserve to replace the
/// ones it drops), counting every rejected candidate by reason.
fn choose_negatives(
    config: &MineConfig,
    full: &[String],
    work: &[MineQuery],
    candidates: &[Vec<Hit>],
    positive_scores: &[Vec<f32>],
) -> (Vec<Vec<Chosen>>, Rejections) {
    let mut choosing = config.filters.clone();
    if let Some(judge) = &config.judge {
        choosing.num_negatives += judge.reserve;
    }
    let mut rejections = Rejections::new();
    let mut chosen: Vec<Vec<Chosen>> = Vec::with_capacity(work.len());
    for (i, q) in work.iter().enumerate() {
        let cands = label_candidates(full, q, &candidates[i]);
        let lowest = positive_scores[i]
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        chosen.push(choosing.choose(&cands, lowest, &q.id, &mut rejections));
    }
    (chosen, rejections)
}

/// A query's candidates with what disqualifies them before any score filter: being a
/// positive, or having the text of a positive, of an earlier candidate, or of the query.
fn label_candidates(full: &[String], q: &MineQuery, hits: &[Hit]) -> Vec<Candidate> {
    let (qtext, positives) = (q.text.as_str(), &q.positives);
    let mut seen_texts: HashMap<&str, ()> = HashMap::new();
    for &p in positives {
        seen_texts.insert(full[p as usize].as_str(), ());
    }
    hits.iter()
        .map(|h| {
            let text = full[h.doc as usize].as_str();
            let is_positive = positives.contains(&h.doc);
            let text_clash = if is_positive {
                None
            } else if seen_texts.contains_key(text) {
                Some(if positives.iter().any(|&p| full[p as usize] == text) {
                    Rejection::SameTextAsPositive
                } else {
                    Rejection::DuplicateText
                })
            } else if text.trim() == qtext.trim() {
                Some(Rejection::SameTextAsQuery)
            } else {
                None
            };
            if !is_positive {
                seen_texts.insert(text, ());
            }
            Candidate {
                doc: h.doc,
                score: h.score,
                text_clash,
                is_positive,
            }
        })
        .collect()
}

/// What the outputs are written from.
struct Mined<'a> {
    docs: &'a [Document],
    full: &'a [String],
    work: &'a [MineQuery],
    chosen: &'a [Vec<Chosen>],
    positive_scores: &'a [Vec<f32>],
    judge: Option<&'a judged::JudgeReport>,
}

impl Mined<'_> {
    /// The method recorded in each row of `negatives.jsonl`.
    fn method(config: &MineConfig) -> String {
        let mut method = format!("{:?}", config.retriever).to_lowercase();
        if config.cross_encoder.is_some() {
            method.push_str("+cross-encoder");
        }
        if config.judge_rescore.is_some() {
            method.push_str("+judge-rescored");
        }
        if config.judge.is_some() {
            method.push_str("+judge");
        }
        method
    }

    fn passage(&self, d: u32, score: f32) -> Passage<'_> {
        let doc = &self.docs[d as usize];
        Passage {
            id: &doc.id,
            title: &doc.title,
            text: &doc.text,
            full: &self.full[d as usize],
            score,
        }
    }
}

/// What [`write_outputs`] wrote.
struct Written {
    kept_pairs: usize,
    negatives: usize,
    /// Rows per training format.
    rows: BTreeMap<String, u64>,
    /// The files written, by name.
    outputs: Vec<String>,
    stats: String,
}

/// Writes `negatives.jsonl`, each asked training format (JSON Lines, and Parquet when asked)
/// and `stats.txt`, each atomically; counts pairs left with fewer negatives than asked.
fn write_outputs(
    config: &MineConfig,
    mined: &Mined,
    skipped_pairs: &mut BTreeMap<String, u64>,
) -> Result<Written> {
    std::fs::create_dir_all(&config.output).map_err(|e| Error::io(&config.output, e))?;
    let n = config.filters.num_negatives;
    let method = Mined::method(config);
    let docs = mined.docs;
    let native_path = config.output.join("negatives.jsonl");
    let mut native = AtomicFile::create(&native_path)?;
    let mut training = TrainingWriter::create(&config.output, &config.formats, n, config.parquet)?;
    let mut pairs = PairCounts::default();
    let mut negatives_written = 0;
    let (mut pos_all, mut neg_all, mut diff_all) = (Vec::new(), Vec::new(), Vec::new());
    for (i, q) in mined.work.iter().enumerate() {
        let negs = &mined.chosen[i];
        for (p, &pos) in q.positives.iter().enumerate() {
            let ps = mined.positive_scores[i][p];
            pos_all.push(ps);
            let negatives = negs
                .iter()
                .map(|c| (docs[c.doc as usize].id.as_str(), Some(c.score), c.rank));
            let mut line =
                negatives_record(&q.id, &docs[pos as usize].id, Some(ps), &method, negatives);
            if let Some(report) = mined.judge {
                report.annotate(&mut line, i, p, docs);
            }
            writeln!(native.writer(), "{line}").map_err(|e| Error::io(&native_path, e))?;
            pairs.count(negs.len(), n);
            for c in negs.iter().take(n) {
                neg_all.push(c.score);
                diff_all.push(ps - c.score);
            }
        }
        negatives_written += negs.len();
        training.write(&QueryResult {
            query_id: &q.id,
            query: &q.text,
            positives: q
                .positives
                .iter()
                .enumerate()
                .map(|(p, &d)| mined.passage(d, mined.positive_scores[i][p]))
                .collect(),
            negatives: negs.iter().map(|c| mined.passage(c.doc, c.score)).collect(),
        })?;
    }
    native.commit()?;
    let written = training.finish()?;
    for (reason, count) in pairs.skipped {
        *skipped_pairs.entry(reason).or_default() += count;
    }
    let kept_pairs = pairs.kept;
    let rows = written.rows;
    let mut outputs = vec!["negatives.jsonl".to_string()];
    outputs.extend(written.files);
    outputs.push("stats.txt".to_string());
    let stats = stats_table(&pos_all, &neg_all, &diff_all);
    foil_core::fsutil::write_atomic(&config.output.join("stats.txt"), stats.as_bytes())?;
    Ok(Written {
        kept_pairs,
        negatives: negatives_written,
        rows,
        outputs,
        stats,
    })
}

/// Writes `manifest.json`: inputs, outputs, seed, skips, counts and the time taken.
fn write_manifest(
    config: &MineConfig,
    files: &[PathBuf],
    summary: &MineSummary,
    rows: &BTreeMap<String, u64>,
    judge_counts: &BTreeMap<String, u64>,
    rescore_counts: &BTreeMap<String, u64>,
    outputs: Vec<String>,
) -> Result<()> {
    let mut manifest = Manifest::new("mine", serde_json::to_value(config).unwrap_or_default());
    for file in files {
        manifest.add_input(file)?;
    }
    manifest.outputs = outputs;
    manifest.seed = Some(config.filters.seed);
    manifest.set_skips(&summary.skips);
    let counts = &mut manifest.counts;
    counts.insert("pairs".into(), summary.pairs as u64);
    counts.insert("queries".into(), summary.queries as u64);
    counts.insert("kept_pairs".into(), summary.kept_pairs as u64);
    for (reason, count) in &summary.skipped_pairs {
        counts.insert(format!("skipped_pairs.{reason}"), *count);
    }
    for (reason, count) in &summary.rejections {
        let name = serde_json::to_value(reason).unwrap_or_default();
        counts.insert(
            format!("rejected_candidates.{}", name.as_str().unwrap_or("?")),
            *count,
        );
    }
    for (format, count) in rows {
        counts.insert(format!("rows.{format}"), *count);
    }
    for (name, count) in judge_counts {
        counts.insert(format!("judge.{name}"), *count);
    }
    for (name, count) in rescore_counts {
        counts.insert(format!("judge_rescore.{name}"), *count);
    }
    manifest.timings.insert("seconds".into(), summary.seconds);
    manifest.write(&config.output.join("manifest.json"))
}

/// Per query: candidates (best first) and the scores of its positives.
type Retrieved = (Vec<Vec<Hit>>, Vec<Vec<f32>>);

/// Each query's candidates (best first, `depth` of them) and the scores of its positives.
fn retrieve(
    config: &MineConfig,
    docs: &[Document],
    full: &[String],
    queries: &[&str],
    work: &[MineQuery],
    depth: usize,
    progress: &dyn Progress,
) -> Result<Retrieved> {
    let bm25 = || -> Result<Retrieved> {
        progress.begin("index", None);
        let index = Bm25Index::build(Analyzer::english(), docs.iter().cloned().map(Ok), &|n| {
            progress.update(n as u64)
        })?;
        progress.end();
        let searcher = Bm25Searcher::new(index, config.bm25);
        progress.begin("search", Some(queries.len() as u64));
        let hits = searcher.search_many(queries, depth, &|n| progress.update(n as u64));
        progress.end();
        let pos = work
            .iter()
            .map(|q| {
                q.positives
                    .iter()
                    .map(|&p| searcher.score_doc(&q.text, p))
                    .collect()
            })
            .collect();
        Ok((hits, pos))
    };
    let dense = || -> Result<Retrieved> {
        let precomputed = config.corpus_embeddings.is_some() && config.query_embeddings.is_some();
        let encoder = match &config.encoder {
            Some(spec) => Some(spec.load()?),
            None if precomputed => None,
            None => {
                return Err(Error::config(
                    "encoder",
                    "dense and hybrid mining need a bi-encoder or precomputed corpus and \
                     query embeddings",
                ))
            }
        };
        let vectors = |texts: &[&str],
                       ids: &[&str],
                       stored: Option<&PathBuf>,
                       kind: TextKind|
         -> Result<Embeddings> {
            let mut out = match (stored, &encoder) {
                (Some(dir), _) => load_aligned(dir, ids, encoder.as_deref(), kind)?,
                (None, Some(encoder)) => encode_all(
                    encoder.as_ref(),
                    texts,
                    kind,
                    config.cache.as_deref(),
                    progress,
                )?,
                (None, None) => unreachable!("checked above"),
            };
            normalize_rows(&mut out);
            Ok(out)
        };
        let passages: Vec<&str> = full.iter().map(String::as_str).collect();
        let doc_ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        let corpus = vectors(
            &passages,
            &doc_ids,
            config.corpus_embeddings.as_ref(),
            TextKind::Passage,
        )?;
        let query_ids: Vec<&str> = work.iter().map(|q| q.id.as_str()).collect();
        let q = vectors(
            queries,
            &query_ids,
            config.query_embeddings.as_ref(),
            TextKind::Query,
        )?;
        if q.dim != corpus.dim {
            return Err(Error::Invalid(format!(
                "query vectors have {} dimensions, passage vectors {}",
                q.dim, corpus.dim
            )));
        }
        progress.begin("top-k", None);
        let hits = exact_top_k(&q, &corpus, depth, &TopKOptions::default());
        progress.end();
        let pos = work
            .iter()
            .enumerate()
            .map(|(i, w)| {
                w.positives
                    .iter()
                    .map(|&p| dot(q.row(i), corpus.row(p as usize)))
                    .collect()
            })
            .collect();
        Ok((hits, pos))
    };
    match config.retriever {
        RetrieverKind::Bm25 => bm25(),
        RetrieverKind::Dense => dense(),
        RetrieverKind::Hybrid => Ok(fuse(&bm25()?.0, &dense()?.0, work, depth)),
    }
}

/// BM25's and the bi-encoder's candidates fused by reciprocal rank, `depth` per query; a
/// positive outside both lists gets the score it would have just past them.
fn fuse(bm25: &[Vec<Hit>], dense: &[Vec<Hit>], work: &[MineQuery], depth: usize) -> Retrieved {
    let floor = 2.0 / (RRF_K + depth as f32 + 1.0);
    let mut hits = Vec::with_capacity(work.len());
    let mut pos = Vec::with_capacity(work.len());
    for (i, q) in work.iter().enumerate() {
        let mut fused = reciprocal_rank_fusion(&[&bm25[i], &dense[i]]);
        pos.push(
            q.positives
                .iter()
                .map(|&p| fused.iter().find(|h| h.doc == p).map_or(floor, |h| h.score))
                .collect(),
        );
        fused.truncate(depth);
        hits.push(fused);
    }
    (hits, pos)
}

/// Loads a `foil encode` store and returns its vectors in the order of `ids`. With an
/// encoder, the store must have been written by it (same fingerprint) for this kind of text.
fn load_aligned(
    dir: &Path,
    ids: &[&str],
    encoder: Option<&dyn Encoder>,
    kind: TextKind,
) -> Result<Embeddings> {
    let stored = StoredEmbeddings::read(dir)?;
    if let Some(encoder) = encoder {
        let provenance = &stored.header.provenance;
        if !provenance.matches(&encoder.fingerprint(), kind) {
            return Err(Error::Invalid(format!(
                "{}: these vectors were made by another encoder, with other settings or for \
                 another kind of text ({provenance})",
                dir.display(),
            )));
        }
    }
    if !stored.header.complete {
        return Err(Error::Invalid(format!(
            "{}: the encode run that wrote these vectors did not finish",
            dir.display()
        )));
    }
    if stored
        .ids
        .iter()
        .map(String::as_str)
        .eq(ids.iter().copied())
    {
        return Ok(stored.embeddings);
    }
    let row: HashMap<&str, usize> = stored
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let dim = stored.embeddings.dim;
    let mut data = Vec::with_capacity(ids.len() * dim);
    for id in ids {
        let r = row.get(id).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no vector for {:?} (the store has {} rows)",
                dir.display(),
                id,
                stored.ids.len()
            ))
        })?;
        data.extend_from_slice(stored.embeddings.row(*r));
    }
    Ok(Embeddings::from_vec(dim, data))
}

/// Replaces candidate and positive scores with the cross-encoder's, and re-sorts candidates.
fn rescore(
    ce: &dyn Reranker,
    full: &[String],
    queries: &[&str],
    work: &[MineQuery],
    candidates: &mut [Vec<Hit>],
    positive_scores: &mut [Vec<f32>],
    progress: &dyn Progress,
) -> Result<()> {
    progress.begin("rerank", Some(queries.len() as u64));
    for (i, q) in queries.iter().enumerate() {
        let mut pairs: Vec<(&str, &str)> = candidates[i]
            .iter()
            .map(|h| (*q, full[h.doc as usize].as_str()))
            .collect();
        pairs.extend(
            work[i]
                .positives
                .iter()
                .map(|&p| (*q, full[p as usize].as_str())),
        );
        let scores = ce.score(&pairs)?;
        let n = candidates[i].len();
        for (h, s) in candidates[i].iter_mut().zip(&scores[..n]) {
            h.score = *s;
        }
        positive_scores[i] = scores[n..].to_vec();
        candidates[i].sort_by(|x, y| y.score.total_cmp(&x.score).then(x.doc.cmp(&y.doc)));
        progress.update(i as u64 + 1);
    }
    progress.end();
    Ok(())
}

/// sentence-transformers' statistics table: positive and negative score distributions and
/// their difference.
pub fn stats_table(pos: &[f32], neg: &[f32], diff: &[f32]) -> String {
    fn describe(v: &[f32]) -> Vec<f64> {
        if v.is_empty() {
            return vec![f64::NAN; 8];
        }
        let mut s: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        s.sort_by(f64::total_cmp);
        let n = s.len() as f64;
        let mean = s.iter().sum::<f64>() / n;
        let std = if s.len() > 1 {
            (s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            f64::NAN
        };
        let q = |p: f64| {
            let pos = p * (n - 1.0);
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
        };
        vec![
            mean,
            s[(s.len() - 1) / 2],
            std,
            s[0],
            q(0.25),
            q(0.5),
            q(0.75),
            s[s.len() - 1],
        ]
    }
    let (p, n, d) = (describe(pos), describe(neg), describe(diff));
    let mut out = format!(
        "{:<6} {:>14} {:>14} {:>14}\n",
        "Metric", "Positive", "Negative", "Difference"
    );
    out.push_str(&format!(
        "{:<6} {:>14} {:>14} {:>14}\n",
        "Count",
        pos.len(),
        neg.len(),
        ""
    ));
    for (i, name) in ["Mean", "Median", "Std", "Min", "25%", "50%", "75%", "Max"]
        .iter()
        .enumerate()
    {
        out.push_str(&format!(
            "{:<6} {:>14.4} {:>14.4} {:>14.4}\n",
            name, p[i], n[i], d[i]
        ));
    }
    out
}
