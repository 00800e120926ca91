//! `foil generate queries`: synthetic queries for the passages of a BEIR corpus.
//!
//! For each chosen passage (all, the first N, or a seeded sample of N) and each `n` below
//! `per_passage`, one chat (the template's `query` step with the passage) is sent with the seed
//! [`derive_seed`]`(seed, ["query", passage id, n])`. Each answer is parsed and filtered in
//! input order ([`filter`](super::filter)): unparseable, empty, longer than `max_query_words`,
//! not query-like (a report sentence, a repetition, an identifier), a copy of its passage
//! (word 3-gram overlap ≥ `max_copy_overlap`, for queries of at least `copy_min_words`
//! words), a duplicate of a query kept before; then, with
//! `keep_logprob`, only that share of the survivors with the highest mean token
//! log-probability (InPars); the rest must find their passage in the top `round_trip_k` of
//! BM25 or a bi-encoder over the whole corpus (round-trip consistency).
//!
//! The prompt shows the template's few-shot examples, or the user's own (`examples`, a JSON
//! Lines file of `{"passage", "query"}` pairs from the target corpus); passages longer than
//! `max_passage_words` words are cut to that length in the prompt.
//!
//! The output folder is a BEIR split whose corpus stays `--data`'s `corpus.jsonl`:
//! `queries.jsonl` (`{_id: "gen-q-<passage>-<n>", text, metadata: {passage_id, n, seed,
//! template, template_version}}`), `qrels/<split>.tsv` (each query → its passage, score 1),
//! `rejected.jsonl` (every rejected answer or failed request, with its reason and raw text),
//! `manifest.json`, and `cache.jsonl`, the generation cache (unless another is named).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use foil_bm25::{Analyzer, Bm25Index, Bm25Params, Bm25Searcher};
use foil_core::beir::{read_jsonl, BeirPaths};
use foil_core::fsutil::AtomicFile;
use foil_core::manifest::Manifest;
use foil_core::rng::SplitMix64;
use foil_core::{
    Document, Error, GenerateError, Generator, InputPolicy, Progress, Qrels, Result, SkipReport,
    TextKind,
};
use foil_dense::{exact_top_k, normalize_rows, TopKOptions};
use serde::Serialize;
use serde_json::json;

use super::answer_cache::GenerationCache;
use super::filter::{normalize, not_a_query, overlap, parse_query, words, Rejection};
use super::template::{Task, Template};
use super::{derive_seed, run_requests, GeneratorSpec, Job, Rejects, Sampling, StepStats, Tally};
use crate::encode::encode_all;
use crate::encoder_spec::EncoderSpec;
use crate::threads::with_threads;

/// Which passages get queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    All,
    /// The first N passages of the corpus.
    First(usize),
    /// N passages drawn without replacement with the run's seed (kept in corpus order).
    Sample(usize),
}

/// How generated queries are checked against the corpus.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum RoundTrip {
    None,
    Bm25,
    Dense { encoder: EncoderSpec },
}

/// Configuration of `foil generate queries`.
#[derive(Debug, Clone, Serialize)]
pub struct QueriesConfig {
    /// A BEIR folder; its `corpus.jsonl` is read (and stays the corpus of the output split).
    pub data: PathBuf,
    pub output: PathBuf,
    /// The qrels split written (`qrels/<split>.tsv`).
    pub split: String,
    pub generator: GeneratorSpec,
    /// A built-in template name or a template file.
    pub template: String,
    /// (passage, query) examples that replace the template's few-shot examples.
    pub examples: Option<PathBuf>,
    /// Passages are cut to this many words in the prompt.
    pub max_passage_words: Option<usize>,
    /// Keep only this share (0–1] of the text-filtered queries, those with the highest mean
    /// token log-probability; `None` keeps all.
    pub keep_logprob: Option<f32>,
    pub per_passage: usize,
    pub selection: Selection,
    pub seed: u64,
    pub sampling: Sampling,
    pub max_query_words: usize,
    pub max_copy_overlap: f32,
    /// Queries with fewer words are not checked for copying: a short query naturally reuses
    /// its passage's terms (a title, a few keywords); a long one that does copies a sentence.
    pub copy_min_words: usize,
    pub round_trip: RoundTrip,
    pub round_trip_k: usize,
    /// The generation cache file (default `<output>/cache.jsonl`).
    pub cache: Option<PathBuf>,
    /// The embedding cache folder for a dense round trip.
    pub embedding_cache: Option<PathBuf>,
    /// Requests handed to the generator at once (and appended to the cache together).
    pub batch_size: usize,
    pub threads: Option<usize>,
    pub skip_invalid: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct QueriesSummary {
    pub passages: usize,
    pub requests: usize,
    pub queries: usize,
    pub rejected: Tally,
    pub stats: StepStats,
    pub cache_dropped_partial: u64,
    pub seconds: f64,
}

/// Runs `foil generate queries` with the configured generator.
pub fn run(config: &QueriesConfig, progress: &dyn Progress) -> Result<QueriesSummary> {
    // A second process writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(&config.output)?;
    with_threads(config.generator.threads(), || {
        let generator = config.generator.load()?;
        execute(config, generator.as_ref(), progress)
    })?
}

/// Runs `foil generate queries` with `generator`.
pub fn run_with(
    config: &QueriesConfig,
    generator: &dyn Generator,
    progress: &dyn Progress,
) -> Result<QueriesSummary> {
    // A second process writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(&config.output)?;
    execute(config, generator, progress)
}

/// The steps of `foil generate queries`: check the settings → read the corpus and choose
/// passages → one request per (passage, sample) → generate through the cache → the text
/// filters → InPars' log-probability filter → the round trip → write queries, qrels,
/// rejections and the manifest.
fn execute(
    config: &QueriesConfig,
    generator: &dyn Generator,
    progress: &dyn Progress,
) -> Result<QueriesSummary> {
    let started = Instant::now();
    let template = check(config)?;
    let template_id = template.id();
    let paths = BeirPaths::new(&config.data);
    let mut skips = SkipReport::default();
    let policy = InputPolicy {
        skip_invalid: config.skip_invalid,
    };
    let docs: Vec<Document> = read_jsonl(&paths.corpus, policy, &mut skips)?;
    let chosen = select(docs.len(), config.selection, config.seed);
    std::fs::create_dir_all(&config.output).map_err(|e| Error::io(&config.output, e))?;

    let fingerprint = generator.fingerprint();
    let jobs = plan_jobs(config, &template, &fingerprint, &docs, &chosen)?;
    let cache_path = config
        .cache
        .clone()
        .unwrap_or_else(|| config.output.join("cache.jsonl"));
    let mut cache = GenerationCache::open(&cache_path)?;
    let (failures, stats) = run_requests(
        generator,
        &mut cache,
        &template_id,
        "query",
        &jobs,
        config.batch_size,
        progress,
    )?;

    let answers = Answers {
        config,
        docs: &docs,
        chosen: &chosen,
        jobs: &jobs,
        cache: &cache,
    };
    let mut rejects = Rejects::default();
    let mut kept = answers.filter(&failures, &mut rejects);
    if let Some(share) = config.keep_logprob {
        kept = answers.keep_most_probable(kept, share, &mut rejects);
    }

    // Round trip: the passage must come back in the top k.
    let round_trip_seconds = Instant::now();
    let passed = with_threads(config.threads, || {
        round_trip(config, &docs, &kept, progress)
    })??;
    let written = answers.write(&template, &kept, &passed, &mut rejects)?;
    let mut counts = BTreeMap::new();
    let tally = rejects.write(
        &config.output.join("rejected.jsonl"),
        jobs.iter().map(|j| j.item.as_str()),
        &mut counts,
    )?;
    let round_trip_secs = round_trip_seconds.elapsed().as_secs_f64();

    let seconds = started.elapsed().as_secs_f64();
    let mut manifest = Manifest::new(
        "generate-queries",
        serde_json::to_value(config).unwrap_or_default(),
    );
    manifest.add_input(&paths.corpus)?;
    super::record_generation(
        &mut manifest,
        &fingerprint,
        &template,
        Some(&config.template),
        &cache_path,
    )?;
    if let Some(path) = &config.examples {
        manifest.add_input(path)?;
    }
    manifest.outputs = vec![
        "queries.jsonl".into(),
        format!("qrels/{}.tsv", config.split),
        "rejected.jsonl".into(),
    ];
    manifest.seed = Some(config.seed);
    manifest.set_skips(&skips);
    let c = &mut manifest.counts;
    c.insert("passages".into(), chosen.len() as u64);
    c.insert("requests".into(), jobs.len() as u64);
    c.insert("queries".into(), written as u64);
    c.extend(counts);
    c.insert("cache.hits".into(), stats.cached as u64);
    c.insert("cache.generated".into(), stats.generated as u64);
    c.insert("cache.dropped_partial_lines".into(), cache.dropped_partial);
    c.insert("cache.invalid_lines".into(), cache.bad_lines);
    c.insert("tokens.prompt".into(), stats.prompt_tokens);
    c.insert("tokens.completion".into(), stats.completion_tokens);
    manifest
        .timings
        .insert("round_trip".into(), round_trip_secs);
    manifest.timings.insert("seconds".into(), seconds);
    manifest.write(&config.output.join("manifest.json"))?;

    Ok(QueriesSummary {
        passages: chosen.len(),
        requests: jobs.len(),
        queries: written,
        rejected: tally,
        stats,
        cache_dropped_partial: cache.dropped_partial,
        seconds,
    })
}

/// Checks the settings and loads the template (with the user's examples, if any).
fn check(config: &QueriesConfig) -> Result<Template> {
    if config.per_passage == 0 {
        return Err(Error::config("per_passage", "must be at least 1"));
    }
    if config.round_trip_k == 0 {
        return Err(Error::config("round_trip_k", "must be at least 1"));
    }
    config.sampling.validate()?;
    if let Some(share) = config.keep_logprob {
        if !(share > 0.0 && share <= 1.0) {
            let message = format!("must be in (0, 1], not {share}");
            return Err(Error::config("keep_logprob", message));
        }
    }
    let template = Template::load_for(&config.template, Task::Queries)?;
    match &config.examples {
        Some(path) => template.with_examples(&super::template::read_examples(path)?),
        None => Ok(template),
    }
}

/// The requests, in output order: `per_passage` samples of one prompt per chosen passage, each
/// with its own seed.
fn plan_jobs(
    config: &QueriesConfig,
    template: &Template,
    fingerprint: &str,
    docs: &[Document],
    chosen: &[usize],
) -> Result<Vec<Job>> {
    let template_id = template.id();
    let mut jobs = Vec::with_capacity(chosen.len() * config.per_passage);
    for &d in chosen {
        let doc = &docs[d];
        let cut = |text: &str| match config.max_passage_words {
            Some(max) => first_words(text, max),
            None => text.to_string(),
        };
        let (full, title, text) = (cut(&doc.full_text()), cut(&doc.title), cut(&doc.text));
        let messages = template.render(
            "query",
            &[
                ("passage", full.as_str()),
                ("title", title.as_str()),
                ("text", text.as_str()),
            ],
        )?;
        for n in 0..config.per_passage {
            let seed = derive_seed(config.seed, &["query", &doc.id, &n.to_string()]);
            let mut params = config.sampling.params(seed);
            params.logprobs = config.keep_logprob.is_some();
            jobs.push(Job::new(
                fingerprint,
                &template_id,
                "query",
                format!("gen-q-{}-{n}", doc.id),
                messages.clone(),
                params,
            ));
        }
    }

    Ok(jobs)
}

/// The answers of a run, for the filters that judge them and the writer of what survives.
struct Answers<'a> {
    config: &'a QueriesConfig,
    docs: &'a [Document],
    chosen: &'a [usize],
    jobs: &'a [Job],
    cache: &'a GenerationCache,
}

impl Answers<'_> {
    /// Parses each answer and keeps the query-like ones, in input order: not empty, not too
    /// long, query-like, not a copy of its passage, not a duplicate.
    fn filter(
        &self,
        failures: &HashMap<String, GenerateError>,
        rejects: &mut Rejects,
    ) -> Vec<Kept> {
        let (config, docs, chosen, jobs, cache) =
            (self.config, self.docs, self.chosen, self.jobs, self.cache);
        let mut kept: Vec<Kept> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for (j, job) in jobs.iter().enumerate() {
            let d = chosen[j / config.per_passage];
            let n = j % config.per_passage;
            let doc = &docs[d];
            let extra = json!({"passage_id": doc.id, "n": n});
            let Some((raw, query)) = rejects.parsed(cache, failures, job, &extra, parse_query)
            else {
                continue;
            };
            let mut reject = |reason, detail: &str| {
                rejects.add(job, reason, detail, Some(raw), None, &extra);
            };
            let count = words(&query).len();
            if count == 0 {
                reject(Rejection::Empty, "no words");
                continue;
            }
            if count > config.max_query_words {
                let detail = format!("{count} words > {}", config.max_query_words);
                reject(Rejection::TooLong, &detail);
                continue;
            }
            if let Some(why) = not_a_query(&query) {
                reject(Rejection::NotAQuery, why);
                continue;
            }
            let copied = overlap(&query, &docs[d].full_text());
            if count >= config.copy_min_words && copied >= config.max_copy_overlap {
                let detail = format!(
                    "overlap {copied:.3} ≥ {} with the passage",
                    config.max_copy_overlap
                );
                reject(Rejection::CopiesPassage, &detail);
                continue;
            }
            if !seen.insert(normalize(&query)) {
                reject(Rejection::Duplicate, "generated before");
                continue;
            }
            kept.push(Kept {
                job: j,
                doc: d,
                n,
                query,
            });
        }

        kept
    }

    /// InPars' filter: the `share` of `kept` with the highest mean log-probability.
    fn keep_most_probable(&self, kept: Vec<Kept>, share: f32, rejects: &mut Rejects) -> Vec<Kept> {
        let (docs, jobs, cache) = (self.docs, self.jobs, self.cache);
        let score = |k: &Kept| cache.get(&jobs[k.job].key).and_then(|g| g.mean_logprob);
        let mut scored: Vec<(usize, f64)> = kept
            .iter()
            .enumerate()
            .filter_map(|(i, k)| score(k).map(|s| (i, s)))
            .collect();
        let unscored = kept.len() - scored.len();
        if unscored > 0 {
            tracing::warn!(
                answers = unscored,
                "answers without log-probabilities (cached before they were recorded, or a server that does not send them) pass the log-probability filter"
            );
        }
        // Highest first; ties by input order.
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let keep = ((scored.len() as f64) * share as f64).ceil() as usize;
        let cutoff = scored.get(keep.saturating_sub(1)).map(|s| s.1);
        let dropped: HashSet<usize> = scored[keep.min(scored.len())..]
            .iter()
            .map(|s| s.0)
            .collect();
        let mut survivors = Vec::with_capacity(kept.len());
        for (i, k) in kept.into_iter().enumerate() {
            if dropped.contains(&i) {
                let job = &jobs[k.job];
                let detail = format!(
                    "mean log-probability {:.3} below the kept {:.0}% (cut-off {:.3})",
                    score(&k).unwrap_or(f64::NAN),
                    share * 100.0,
                    cutoff.unwrap_or(f64::NAN)
                );
                let raw = cache.get(&job.key).map(|g| g.text.as_str());
                let extra = json!({"passage_id": docs[k.doc].id, "n": k.n});
                let line = rejects.add(job, Rejection::LowLogprob, &detail, raw, None, &extra);
                line["query"] = json!(k.query);
            } else {
                survivors.push(k);
            }
        }
        survivors
    }

    /// Writes the queries that passed the round trip (`queries.jsonl` and the split's qrels)
    /// and records the ones that did not; returns how many were written.
    fn write(
        &self,
        template: &Template,
        kept: &[Kept],
        passed: &[bool],
        rejects: &mut Rejects,
    ) -> Result<usize> {
        let (config, docs, jobs, cache) = (self.config, self.docs, self.jobs, self.cache);
        let mut queries_file = AtomicFile::create(&config.output.join("queries.jsonl"))?;
        let queries_path = config.output.join("queries.jsonl");
        let mut qrels = Qrels::default();
        let mut written = 0;
        for (k, item) in kept.iter().enumerate() {
            let job = &jobs[item.job];
            let doc = &docs[item.doc];
            if !passed[k] {
                let detail = format!(
                    "passage not in the top {} ({})",
                    config.round_trip_k,
                    round_trip_name(&config.round_trip)
                );
                let raw = cache.get(&job.key).map(|g| g.text.as_str());
                let extra = json!({"passage_id": doc.id, "n": item.n});
                let line = rejects.add(job, Rejection::RoundTrip, &detail, raw, None, &extra);
                line["query"] = json!(item.query);
                continue;
            }
            let line = json!({
                "_id": job.item,
                "text": item.query,
                "metadata": {
                    "passage_id": doc.id,
                    "n": item.n,
                    "seed": job.request.params.seed,
                    "template": template.name,
                    "template_version": template.version,
                },
            });
            writeln!(queries_file.writer(), "{line}").map_err(|e| Error::io(&queries_path, e))?;
            qrels.insert(job.item.clone(), doc.id.clone(), 1);
            written += 1;
        }
        queries_file.commit()?;
        qrels.write(
            &config
                .output
                .join("qrels")
                .join(format!("{}.tsv", config.split)),
        )?;
        Ok(written)
    }
}

/// A query that passed the text filters.
struct Kept {
    job: usize,
    doc: usize,
    n: usize,
    query: String,
}

fn round_trip_name(round_trip: &RoundTrip) -> &'static str {
    match round_trip {
        RoundTrip::None => "none",
        RoundTrip::Bm25 => "bm25",
        RoundTrip::Dense { .. } => "dense",
    }
}

/// Per kept query: whether its passage is in the top k.
fn round_trip(
    config: &QueriesConfig,
    docs: &[Document],
    kept: &[Kept],
    progress: &dyn Progress,
) -> Result<Vec<bool>> {
    let k = config.round_trip_k;
    let queries: Vec<&str> = kept.iter().map(|q| q.query.as_str()).collect();
    let hits = match &config.round_trip {
        RoundTrip::None => return Ok(vec![true; kept.len()]),
        RoundTrip::Bm25 => {
            progress.begin("index", None);
            let index =
                Bm25Index::build(Analyzer::english(), docs.iter().cloned().map(Ok), &|n| {
                    progress.update(n as u64)
                })?;
            progress.end();
            let searcher = Bm25Searcher::new(index, Bm25Params::default());
            progress.begin("round-trip", Some(queries.len() as u64));
            let hits = searcher.search_many(&queries, k, &|n| progress.update(n as u64));
            progress.end();
            hits
        }
        RoundTrip::Dense { encoder } => {
            let encoder = encoder.load()?;
            let full: Vec<String> = docs.iter().map(Document::full_text).collect();
            let passages: Vec<&str> = full.iter().map(String::as_str).collect();
            let cache = config.embedding_cache.as_deref();
            let mut corpus = encode_all(
                encoder.as_ref(),
                &passages,
                TextKind::Passage,
                cache,
                progress,
            )?;
            let mut q = encode_all(encoder.as_ref(), &queries, TextKind::Query, cache, progress)?;
            normalize_rows(&mut corpus);
            normalize_rows(&mut q);
            exact_top_k(&q, &corpus, k, &TopKOptions::default())
        }
    };
    Ok(kept
        .iter()
        .zip(hits)
        .map(|(item, hits)| hits.iter().any(|h| h.doc as usize == item.doc))
        .collect())
}

/// The first `max` whitespace-separated words of `text`.
fn first_words(text: &str, max: usize) -> String {
    text.split_whitespace()
        .take(max)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The indices of the passages to use, in corpus order.
pub fn select(n: usize, selection: Selection, seed: u64) -> Vec<usize> {
    match selection {
        Selection::All => (0..n).collect(),
        Selection::First(m) => (0..n.min(m)).collect(),
        Selection::Sample(m) => {
            let mut all: Vec<usize> = (0..n).collect();
            SplitMix64::new(seed).shuffle(&mut all);
            all.truncate(m);
            all.sort_unstable();
            all
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeGenerator;
    use super::*;
    use foil_core::NoProgress;

    fn corpus(dir: &std::path::Path) -> PathBuf {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let docs = [
            (
                "d1",
                "Scurvy",
                "Vitamin C deficiency causes scurvy in sailors on long voyages.",
            ),
            (
                "d2",
                "Rickets",
                "Lack of vitamin D softens the bones of growing children.",
            ),
            (
                "d3",
                "Goitre",
                "Iodine deficiency enlarges the thyroid gland in adults.",
            ),
        ];
        let lines: Vec<String> = docs
            .iter()
            .map(|(id, t, x)| json!({"_id": id, "title": t, "text": x}).to_string())
            .collect();
        std::fs::write(data.join("corpus.jsonl"), lines.join("\n") + "\n").unwrap();
        data
    }

    fn config(data: PathBuf, output: PathBuf) -> QueriesConfig {
        QueriesConfig {
            data,
            output,
            split: "train".into(),
            generator: GeneratorSpec::Local {
                model: "unused".into(),
                threads: None,
                max_batch: 1,
            },
            template: "zero-shot".into(),
            examples: None,
            max_passage_words: None,
            keep_logprob: None,
            per_passage: 2,
            selection: Selection::All,
            seed: 7,
            sampling: Sampling {
                temperature: 0.7,
                top_p: 0.9,
                max_tokens: 32,
            },
            max_query_words: 8,
            max_copy_overlap: 0.75,
            copy_min_words: 0,
            round_trip: RoundTrip::Bm25,
            round_trip_k: 1,
            cache: None,
            embedding_cache: None,
            batch_size: 2,
            threads: Some(1),
            skip_invalid: false,
        }
    }

    /// Answers by passage: good queries, a copy, chatter, a too-long query, a duplicate, and a
    /// query that retrieves another passage.
    fn answer(prompt: &str, seed: u64) -> std::result::Result<String, String> {
        let odd = seed % 2 == 1;
        Ok(if prompt.contains("Scurvy") {
            if odd {
                "Query: \"which deficiency leads to scurvy\"".into()
            } else {
                "Vitamin C deficiency causes scurvy".into() // copy
            }
        } else if prompt.contains("Rickets") {
            if odd {
                "Sure! Here is a query".into()
            } else {
                "why do the bones of children with rickets soften when they lack sunlight exposure"
                    .into() // too long
            }
        } else {
            "thyroid enlarged iodine".into() // twice: the second is a duplicate
        })
    }

    #[test]
    fn filters_reject_and_count_and_outputs_are_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let data = corpus(dir.path());
        let out = dir.path().join("out");
        let fake = FakeGenerator::new(answer);
        let summary = run_with(&config(data.clone(), out.clone()), &fake, &NoProgress).unwrap();
        assert_eq!(summary.requests, 6);
        assert_eq!(summary.queries + summary.rejected.total() as usize, 6);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["counts"]["duplicate"], serde_json::Value::Null);
        assert!(manifest["counts"]["rejected.duplicate"].as_u64().unwrap() >= 1);
        let queries = std::fs::read_to_string(out.join("queries.jsonl")).unwrap();
        let rejected = std::fs::read_to_string(out.join("rejected.jsonl")).unwrap();
        for line in queries.lines() {
            let q: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(q["_id"].as_str().unwrap().starts_with("gen-q-"));
            assert_eq!(q["metadata"]["template"], "zero-shot");
        }
        assert_eq!(rejected.lines().count() as u64, summary.rejected.total());
        assert!(rejected.contains(r#"{"item":"gen-q-d3-1","step":"query","reason":"duplicate""#));
        // A second run is all cache hits and gives the same bytes.
        let again = FakeGenerator::new(answer);
        let out2 = dir.path().join("out2");
        let mut c2 = config(data, out2.clone());
        c2.cache = Some(out.join("cache.jsonl"));
        let s2 = run_with(&c2, &again, &NoProgress).unwrap();
        assert_eq!(again.calls.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(s2.stats.cached, 6);
        for f in ["queries.jsonl", "rejected.jsonl", "qrels/train.tsv"] {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(out2.join(f)).unwrap(),
                "{f}"
            );
        }
    }

    #[test]
    fn every_filter_fires_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let data = corpus(dir.path());
        let out = dir.path().join("out");
        // Seeds decide which answer each request gets; check the tally, whatever they are.
        let fake = FakeGenerator::new(|prompt: &str, seed: u64| {
            let _ = seed;
            Ok(if prompt.contains("Scurvy") {
                "Vitamin C deficiency causes scurvy".to_string()
            } else if prompt.contains("Rickets") {
                "Here is a query".to_string()
            } else {
                "which gland grows when iodine is missing".to_string()
            })
        });
        let s = run_with(&config(data, out), &fake, &NoProgress).unwrap();
        let r = &s.rejected.rejected;
        assert_eq!(r.get("copies_passage"), Some(&2));
        assert_eq!(r.get("unparseable"), Some(&2));
        assert_eq!(r.get("duplicate"), Some(&1));
        assert_eq!(s.queries, 1, "the goitre query finds its passage first");
    }

    #[test]
    fn selection_is_seeded_and_in_corpus_order() {
        assert_eq!(select(5, Selection::First(2), 0), [0, 1]);
        assert_eq!(select(2, Selection::First(9), 0), [0, 1]);
        let a = select(100, Selection::Sample(10), 3);
        assert_eq!(a, select(100, Selection::Sample(10), 3));
        assert_ne!(a, select(100, Selection::Sample(10), 4));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(select(3, Selection::Sample(10), 3), [0, 1, 2]);
    }
}
