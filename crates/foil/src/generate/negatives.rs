//! `foil generate negatives`: corpus-free hard negatives written by an LLM for the (query,
//! positive) pairs of a BEIR split (judgments with grade ≥ 1).
//!
//! - `query-only` (two steps, after *Don't Retrieve, Generate: Prompting LLMs for Synthetic
//!   Training Data in Dense Retrieval*): for each query and each `n` below `per_query`, the
//!   model first describes in one sentence a passage that looks relevant but does not answer
//!   the query (`describe` step), then writes that passage (`write` step). A query's negatives
//!   serve all its positives.
//! - `query-positive`: for each (query, positive) pair and each `n`, the model writes a passage
//!   on the positive's topic that does not answer the query.
//!
//! Each passage is parsed and filtered in input order ([`filter`](super::filter)):
//! unparseable, empty, shorter than `min_words`, a copy of its query or of one of the query's
//! positives (word 3-gram overlap ≥ `max_copy_overlap`), a duplicate of a negative kept before.
//!
//! Outputs: `negatives-corpus.jsonl` (the synthetic passages, ids `gen-neg-<qid>-<n>`),
//! `negatives.jsonl` (per query and positive, in `foil mine`'s provenance format with method
//! `llm`; scores are `null`: nothing ranked them), one `<format>.jsonl` per training format
//! (written by [`crate::formats`], so they match `foil mine`'s), `rejected.jsonl`,
//! `manifest.json` and the generation cache `cache.jsonl`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use foil_core::beir::{BeirPaths, Split};
use foil_core::fsutil::AtomicFile;
use foil_core::manifest::Manifest;
use foil_core::{
    ChatMessage, Document, Error, GenerateError, Generator, InputPolicy, Progress, Query, Result,
    SamplingParams, SkipReport,
};
use serde::Serialize;
use serde_json::json;

use super::answer_cache::GenerationCache;
use super::filter::{normalize, overlap, parse_description, parse_passage, words, Rejection};
use super::template::{Task, Template};
use super::{derive_seed, run_requests, GeneratorSpec, Job, Rejects, Sampling, StepStats, Tally};
use crate::formats::{negatives_record, Format, PairCounts, Passage, QueryResult, TrainingWriter};

/// How negatives are prompted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeMode {
    QueryOnly,
    QueryPositive,
}

impl NegativeMode {
    /// The built-in template of the mode.
    pub fn default_template(self) -> &'static str {
        match self {
            NegativeMode::QueryOnly => "query-only",
            NegativeMode::QueryPositive => "query-positive",
        }
    }

    fn task(self) -> Task {
        match self {
            NegativeMode::QueryOnly => Task::NegativesQueryOnly,
            NegativeMode::QueryPositive => Task::NegativesQueryPositive,
        }
    }
}

/// Configuration of `foil generate negatives`.
#[derive(Debug, Clone, Serialize)]
pub struct NegativesConfig {
    /// A BEIR folder with `queries.jsonl` and `qrels/<split>.tsv`.
    pub data: PathBuf,
    /// The corpus the positives are in (default `<data>/corpus.jsonl`).
    pub corpus: Option<PathBuf>,
    pub split: String,
    pub output: PathBuf,
    pub generator: GeneratorSpec,
    pub mode: NegativeMode,
    /// A built-in template name or a template file (default: the mode's).
    pub template: Option<String>,
    /// Negatives generated per query (query-only) or per pair (query-positive).
    pub per_query: usize,
    /// Only the first N queries (in id order).
    pub limit: Option<usize>,
    pub seed: u64,
    /// Sampling of the passage-writing step.
    pub sampling: Sampling,
    /// Sampling of the describing step (query-only).
    pub describe_sampling: Sampling,
    pub min_words: usize,
    pub max_copy_overlap: f32,
    pub formats: Vec<Format>,
    /// Also write each format as Parquet.
    pub parquet: bool,
    /// N of the n-tuple formats (default `per_query`).
    pub num_negatives: Option<usize>,
    /// The generation cache file (default `<output>/cache.jsonl`).
    pub cache: Option<PathBuf>,
    pub batch_size: usize,
    pub skip_invalid: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct NegativesSummary {
    pub queries: usize,
    pub pairs: usize,
    /// Negatives asked for (items).
    pub items: usize,
    pub negatives: usize,
    pub rejected: Tally,
    pub describe: StepStats,
    pub write: StepStats,
    pub kept_pairs: usize,
    pub seconds: f64,
    pub skips: SkipReport,
}

/// One negative to generate.
struct Item {
    id: String,
    query: usize,
    /// The positive it was generated from (query-positive).
    positive: Option<usize>,
    n: usize,
}

/// Runs `foil generate negatives` with the configured generator.
pub fn run(config: &NegativesConfig, progress: &dyn Progress) -> Result<NegativesSummary> {
    // A second process writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(&config.output)?;
    crate::threads::with_threads(config.generator.threads(), || {
        let generator = config.generator.load()?;
        execute(config, generator.as_ref(), progress)
    })?
}

/// Runs `foil generate negatives` with `generator`.
pub fn run_with(
    config: &NegativesConfig,
    generator: &dyn Generator,
    progress: &dyn Progress,
) -> Result<NegativesSummary> {
    // A second process writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(&config.output)?;
    execute(config, generator, progress)
}

/// The inputs every step reads: the split, each query's positives, and the items.
struct Plan<'a> {
    config: &'a NegativesConfig,
    docs: &'a [Document],
    /// Each document as retrievers see it (`title + " " + text`).
    full: Vec<String>,
    /// (query, positives) in query id order.
    work: Vec<(&'a Query, Vec<usize>)>,
    /// The negatives to generate, in output order.
    items: Vec<Item>,
}

impl Plan<'_> {
    fn qtext(&self, item: &Item) -> &str {
        self.work[item.query].0.text.as_str()
    }

    fn qid(&self, item: &Item) -> &str {
        self.work[item.query].0.id.as_str()
    }
}

/// The steps of `foil generate negatives`: check the settings → read the split → plan the
/// items → (query-only) describe what a negative should be → write the passages → filter them
/// → write the corpus of negatives, the training rows and the manifest.
fn execute(
    config: &NegativesConfig,
    generator: &dyn Generator,
    progress: &dyn Progress,
) -> Result<NegativesSummary> {
    let started = Instant::now();
    let template = check(config)?;
    let template_id = template.id();
    let policy = InputPolicy {
        skip_invalid: config.skip_invalid,
    };
    let mut skips = SkipReport::default();
    let paths = BeirPaths::new(&config.data);
    let corpus_path = config.corpus.clone().unwrap_or(paths.corpus.clone());
    let data = Split::load_with_corpus(&paths, &corpus_path, &config.split, policy, &mut skips)?;
    let plan = plan(config, &data);
    let pairs: usize = plan.work.iter().map(|w| w.1.len()).sum();

    std::fs::create_dir_all(&config.output).map_err(|e| Error::io(&config.output, e))?;
    let cache_path = config
        .cache
        .clone()
        .unwrap_or_else(|| config.output.join("cache.jsonl"));
    let mut cache = GenerationCache::open(&cache_path)?;
    let mut requests = Requests {
        generator,
        fingerprint: generator.fingerprint(),
        template: &template,
        template_id: &template_id,
        cache: &mut cache,
        rejects: Rejects::default(),
        progress,
    };
    let (descriptions, describe_stats) = match config.mode {
        NegativeMode::QueryOnly => describe(&plan, &mut requests)?,
        NegativeMode::QueryPositive => (vec![None; plan.items.len()], StepStats::default()),
    };
    let (accepted, write_stats) = write_passages(&plan, &descriptions, &mut requests)?;
    let Requests {
        fingerprint,
        rejects,
        ..
    } = requests;

    write_corpus(&plan, &template, &descriptions, &accepted)?;
    let rows = write_training_rows(&plan, &accepted)?;

    let mut counts = BTreeMap::new();
    let tally = rejects.write(
        &config.output.join("rejected.jsonl"),
        plan.items.iter().map(|it| it.id.as_str()),
        &mut counts,
    )?;

    let seconds = started.elapsed().as_secs_f64();
    let summary = NegativesSummary {
        queries: plan.work.len(),
        pairs,
        items: plan.items.len(),
        negatives: accepted.iter().flatten().count(),
        rejected: tally,
        describe: describe_stats,
        write: write_stats,
        kept_pairs: rows.kept_pairs,
        seconds,
        skips,
    };
    let mut manifest = Manifest::new(
        "generate-negatives",
        serde_json::to_value(config).unwrap_or_default(),
    );
    for file in &data.files {
        manifest.add_input(file)?;
    }
    super::record_generation(
        &mut manifest,
        &fingerprint,
        &template,
        config.template.as_deref(),
        &cache_path,
    )?;
    manifest.outputs = ["negatives-corpus.jsonl", "negatives.jsonl"]
        .iter()
        .map(|s| s.to_string())
        .chain(rows.files.iter().cloned())
        .chain(std::iter::once("rejected.jsonl".to_string()))
        .collect();
    manifest.seed = Some(config.seed);
    manifest.set_skips(&summary.skips);
    let c = &mut manifest.counts;
    c.insert("queries".into(), summary.queries as u64);
    c.insert("pairs".into(), pairs as u64);
    c.insert("items".into(), summary.items as u64);
    c.insert("negatives".into(), summary.negatives as u64);
    c.extend(counts);
    c.insert("kept_pairs".into(), rows.kept_pairs as u64);
    for (reason, n) in &rows.skipped_pairs {
        c.insert(format!("skipped_pairs.{reason}"), *n);
    }
    for (format, n) in &rows.rows {
        c.insert(format!("rows.{format}"), *n);
    }
    for (step, s) in [("describe", &summary.describe), ("write", &summary.write)] {
        c.insert(format!("cache.hits.{step}"), s.cached as u64);
        c.insert(format!("cache.generated.{step}"), s.generated as u64);
        c.insert(format!("tokens.prompt.{step}"), s.prompt_tokens);
        c.insert(format!("tokens.completion.{step}"), s.completion_tokens);
    }
    c.insert("cache.dropped_partial_lines".into(), cache.dropped_partial);
    c.insert("cache.invalid_lines".into(), cache.bad_lines);
    manifest.timings.insert("seconds".into(), seconds);
    manifest.write(&config.output.join("manifest.json"))?;
    Ok(summary)
}

/// Checks the settings and loads the template.
fn check(config: &NegativesConfig) -> Result<Template> {
    if config.per_query == 0 {
        return Err(Error::config("per_query", "must be at least 1"));
    }
    if config.formats.contains(&Format::NTupleScores) {
        return Err(Error::Invalid(
            "n-tuple-scores needs retrieval scores, which generated negatives do not have".into(),
        ));
    }
    config.sampling.validate()?;
    config.describe_sampling.validate()?;
    let name = config.template.as_deref();
    Template::load_for(
        name.unwrap_or(config.mode.default_template()),
        config.mode.task(),
    )
}

/// The queries with their positives (at most `limit` of them) and the negatives to generate
/// for each: `per_query` per query (query-only) or per (query, positive) pair.
fn plan<'a>(config: &'a NegativesConfig, data: &'a Split) -> Plan<'a> {
    let mut work = data.positives();
    if let Some(limit) = config.limit {
        work.truncate(limit);
    }
    let mut items: Vec<Item> = Vec::new();
    for (w, (q, positives)) in work.iter().enumerate() {
        let qid = &q.id;
        match config.mode {
            NegativeMode::QueryOnly => {
                for n in 0..config.per_query {
                    items.push(Item {
                        id: format!("gen-neg-{qid}-{n}"),
                        query: w,
                        positive: None,
                        n,
                    });
                }
            }
            NegativeMode::QueryPositive => {
                for (p, &pos) in positives.iter().enumerate() {
                    for k in 0..config.per_query {
                        items.push(Item {
                            id: format!("gen-neg-{qid}-{}", p * config.per_query + k),
                            query: w,
                            positive: Some(pos),
                            n: k,
                        });
                    }
                }
            }
        }
    }
    Plan {
        config,
        docs: &data.docs,
        full: data.docs.iter().map(Document::full_text).collect(),
        work,
        items,
    }
}

/// What sends a step's requests: the generator, through the cache, counting rejected answers.
struct Requests<'a> {
    generator: &'a dyn Generator,
    fingerprint: String,
    template: &'a Template,
    template_id: &'a str,
    cache: &'a mut GenerationCache,
    rejects: Rejects,
    progress: &'a dyn Progress,
}

impl Requests<'_> {
    fn job(
        &self,
        step: &str,
        item: &Item,
        messages: Vec<ChatMessage>,
        params: SamplingParams,
    ) -> Job {
        Job::new(
            &self.fingerprint,
            self.template_id,
            step,
            item.id.clone(),
            messages,
            params,
        )
    }

    fn run(
        &mut self,
        step: &str,
        jobs: &[Job],
        batch_size: usize,
    ) -> Result<(HashMap<String, GenerateError>, StepStats)> {
        run_requests(
            self.generator,
            self.cache,
            self.template_id,
            step,
            jobs,
            batch_size,
            self.progress,
        )
    }
}

/// Step 1 (query-only): what a negative for each item should be about.
fn describe(plan: &Plan, requests: &mut Requests) -> Result<(Vec<Option<String>>, StepStats)> {
    let config = plan.config;
    let mut jobs = Vec::with_capacity(plan.items.len());
    for item in &plan.items {
        let messages = requests
            .template
            .render("describe", &[("query", plan.qtext(item))])?;
        let seed = derive_seed(
            config.seed,
            &["describe", plan.qid(item), &item.n.to_string()],
        );
        jobs.push(requests.job(
            "describe",
            item,
            messages,
            config.describe_sampling.params(seed),
        ));
    }
    let (failures, stats) = requests.run("describe", &jobs, config.batch_size)?;
    let mut descriptions = vec![None; plan.items.len()];
    for (i, (item, job)) in plan.items.iter().zip(&jobs).enumerate() {
        let extra = json!({"query_id": plan.qid(item), "n": item.n});
        descriptions[i] = requests
            .rejects
            .parsed(requests.cache, &failures, job, &extra, parse_description)
            .map(|(_, description)| description);
    }
    Ok((descriptions, stats))
}

/// Step 2: the passages, parsed and filtered in input order (too short, a copy of the query
/// or of a positive, a duplicate); `None` for an item without an accepted passage.
fn write_passages(
    plan: &Plan,
    descriptions: &[Option<String>],
    requests: &mut Requests,
) -> Result<(Vec<Option<String>>, StepStats)> {
    let config = plan.config;
    let mut jobs: Vec<(usize, Job)> = Vec::new();
    for (i, item) in plan.items.iter().enumerate() {
        let (messages, seed) = match config.mode {
            NegativeMode::QueryOnly => {
                let Some(description) = &descriptions[i] else {
                    continue;
                };
                (
                    requests.template.render(
                        "write",
                        &[("query", plan.qtext(item)), ("description", description)],
                    )?,
                    derive_seed(config.seed, &["write", plan.qid(item), &item.n.to_string()]),
                )
            }
            NegativeMode::QueryPositive => {
                let pos = item.positive.unwrap_or(0);
                (
                    requests.template.render(
                        "write",
                        &[
                            ("query", plan.qtext(item)),
                            ("positive", plan.full[pos].as_str()),
                        ],
                    )?,
                    derive_seed(
                        config.seed,
                        &[
                            "write",
                            plan.qid(item),
                            &plan.docs[pos].id,
                            &item.n.to_string(),
                        ],
                    ),
                )
            }
        };
        jobs.push((
            i,
            requests.job("write", item, messages, config.sampling.params(seed)),
        ));
    }
    let plain: Vec<Job> = jobs.iter().map(|(_, j)| j.clone()).collect();
    let (failures, stats) = requests.run("write", &plain, config.batch_size)?;

    let mut accepted: Vec<Option<String>> = vec![None; plan.items.len()];
    let mut seen: HashSet<String> = HashSet::new();
    for (i, job) in &jobs {
        let item = &plan.items[*i];
        let extra = json!({"query_id": plan.qid(item), "n": item.n});
        let rejects = &mut requests.rejects;
        let Some((raw, passage)) =
            rejects.parsed(requests.cache, &failures, job, &extra, parse_passage)
        else {
            continue;
        };
        let mut reject = |reason, detail: &str| {
            rejects.add(job, reason, detail, Some(raw), None, &extra);
        };
        let count = words(&passage).len();
        if count == 0 {
            reject(Rejection::Empty, "no words");
            continue;
        }
        if count < config.min_words {
            let detail = format!("{count} words < {}", config.min_words);
            reject(Rejection::TooShort, &detail);
            continue;
        }
        let q = plan.qtext(item);
        let to_query = overlap(&passage, q);
        if to_query >= config.max_copy_overlap || normalize(&passage) == normalize(q) {
            let detail = format!("overlap {to_query:.3} with the query");
            reject(Rejection::CopiesQuery, &detail);
            continue;
        }
        let copied = plan.work[item.query]
            .1
            .iter()
            .map(|&p| (overlap(&passage, &plan.full[p]), p))
            .find(|(o, _)| *o >= config.max_copy_overlap);
        if let Some((o, p)) = copied {
            let detail = format!("overlap {o:.3} with positive {:?}", plan.docs[p].id);
            reject(Rejection::CopiesPositive, &detail);
            continue;
        }
        if !seen.insert(normalize(&passage)) {
            reject(Rejection::Duplicate, "generated before");
            continue;
        }
        accepted[*i] = Some(passage);
    }
    Ok((accepted, stats))
}

fn io_error(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// `negatives-corpus.jsonl`: the accepted passages as a BEIR corpus, each with where it came
/// from in its metadata.
fn write_corpus(
    plan: &Plan,
    template: &Template,
    descriptions: &[Option<String>],
    accepted: &[Option<String>],
) -> Result<()> {
    let config = plan.config;
    let corpus_out = config.output.join("negatives-corpus.jsonl");
    let mut corpus_file = AtomicFile::create(&corpus_out)?;
    for (i, item) in plan.items.iter().enumerate() {
        let Some(text) = &accepted[i] else { continue };
        let mut metadata = json!({
            "query_id": plan.qid(item),
            "n": item.n,
            "mode": config.mode,
            "template": template.name,
            "template_version": template.version,
        });
        if let Some(p) = item.positive {
            metadata["positive_id"] = json!(plan.docs[p].id);
        }
        if let Some(d) = &descriptions[i] {
            metadata["description"] = json!(d);
        }
        let line = json!({"_id": item.id, "title": "", "text": text, "metadata": metadata});
        writeln!(corpus_file.writer(), "{line}").map_err(io_error(&corpus_out))?;
    }
    corpus_file.commit()
}

/// What [`write_training_rows`] wrote.
struct Rows {
    kept_pairs: usize,
    skipped_pairs: BTreeMap<String, u64>,
    /// Rows per training format.
    rows: BTreeMap<String, u64>,
    /// The training formats' files.
    files: Vec<String>,
}

/// `negatives.jsonl` (provenance) and each asked training format, counting the pairs left
/// with fewer negatives than asked.
fn write_training_rows(plan: &Plan, accepted: &[Option<String>]) -> Result<Rows> {
    let config = plan.config;
    let docs = plan.docs;
    let native_path = config.output.join("negatives.jsonl");
    let mut native = AtomicFile::create(&native_path)?;
    let n_tuple = config.num_negatives.unwrap_or(config.per_query).max(1);
    let mut training =
        TrainingWriter::create(&config.output, &config.formats, n_tuple, config.parquet)?;
    let mut pairs = PairCounts::default();
    for (w, (query, positives)) in plan.work.iter().enumerate() {
        // Groups sharing negatives: the query (query-only) or each pair (query-positive).
        let groups: Vec<Vec<usize>> = match config.mode {
            NegativeMode::QueryOnly => vec![positives.clone()],
            NegativeMode::QueryPositive => positives.iter().map(|&p| vec![p]).collect(),
        };
        for group in groups {
            let negs: Vec<(&Item, &String)> = plan
                .items
                .iter()
                .enumerate()
                .filter(|(_, it)| {
                    it.query == w
                        && (config.mode == NegativeMode::QueryOnly || it.positive == Some(group[0]))
                })
                .filter_map(|(i, it)| accepted[i].as_ref().map(|t| (it, t)))
                .collect();
            for &p in &group {
                let negatives = negs
                    .iter()
                    .enumerate()
                    .map(|(r, (it, _))| (it.id.as_str(), None, r + 1));
                let line = negatives_record(&query.id, &docs[p].id, None, "llm", negatives);
                writeln!(native.writer(), "{line}").map_err(io_error(&native_path))?;
                pairs.count(negs.len(), n_tuple);
            }
            training.write(&QueryResult {
                query_id: &query.id,
                query: &query.text,
                positives: group
                    .iter()
                    .map(|&p| Passage {
                        id: &docs[p].id,
                        title: &docs[p].title,
                        text: &docs[p].text,
                        full: &plan.full[p],
                        score: 0.0,
                    })
                    .collect(),
                negatives: negs
                    .iter()
                    .map(|(it, text)| Passage {
                        id: &it.id,
                        title: "",
                        text,
                        full: text,
                        score: 0.0,
                    })
                    .collect(),
            })?;
        }
    }
    native.commit()?;
    let written = training.finish()?;
    Ok(Rows {
        kept_pairs: pairs.kept,
        skipped_pairs: pairs.skipped,
        rows: written.rows,
        files: written.files,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeGenerator;
    use super::*;
    use foil_core::NoProgress;

    fn dataset(dir: &std::path::Path) -> PathBuf {
        let data = dir.join("data");
        std::fs::create_dir_all(data.join("qrels")).unwrap();
        std::fs::write(
            data.join("corpus.jsonl"),
            concat!(
                "{\"_id\": \"d1\", \"title\": \"Scurvy\", \"text\": \"Vitamin C deficiency causes scurvy in sailors on long voyages at sea.\"}\n",
                "{\"_id\": \"d2\", \"title\": \"\", \"text\": \"Iodine deficiency enlarges the thyroid gland.\"}\n",
            ),
        )
        .unwrap();
        std::fs::write(
            data.join("queries.jsonl"),
            "{\"_id\": \"q1\", \"text\": \"what causes scurvy\"}\n{\"_id\": \"q2\", \"text\": \"why does the thyroid grow\"}\n",
        )
        .unwrap();
        std::fs::write(
            data.join("qrels/train.tsv"),
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n",
        )
        .unwrap();
        data
    }

    fn config(data: PathBuf, output: PathBuf, mode: NegativeMode) -> NegativesConfig {
        let sampling = Sampling {
            temperature: 0.7,
            top_p: 0.9,
            max_tokens: 64,
        };
        NegativesConfig {
            data,
            corpus: None,
            split: "train".into(),
            output,
            generator: GeneratorSpec::Local {
                model: "unused".into(),
                threads: None,
                max_batch: 1,
            },
            mode,
            template: None,
            per_query: 2,
            limit: None,
            seed: 1,
            sampling: sampling.clone(),
            describe_sampling: sampling,
            min_words: 5,
            max_copy_overlap: 0.5,
            formats: vec![Format::Triplet, Format::NTuple, Format::Tevatron],
            parquet: false,
            num_negatives: None,
            cache: None,
            batch_size: 3,
            skip_invalid: false,
        }
    }

    #[test]
    fn query_only_runs_two_steps_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path());
        let out = dir.path().join("out");
        let fake = FakeGenerator::new(|prompt: &str, seed: u64| {
            if prompt.contains("Describe") {
                if prompt.contains("thyroid") && seed & 1 == 0 {
                    return Err("server down".into());
                }
                return Ok(format!(
                    "Description: a study of sailors' diets, variant {seed}"
                ));
            }
            Ok(if prompt.contains("scurvy") {
                format!("Sailors on long voyages often ate salted meat and hard biscuits, study {seed} found.")
            } else {
                "Passage: too short".into()
            })
        });
        let mut c = config(data, out.clone(), NegativeMode::QueryOnly);
        c.parquet = true;
        let s = run_with(&c, &fake, &NoProgress).unwrap();
        assert_eq!(s.items, 4);
        assert_eq!(s.negatives + s.rejected.total() as usize, s.items);
        assert_eq!(s.negatives, 2);
        assert_eq!(
            s.describe.generated + s.describe.failed.values().sum::<u64>() as usize,
            4
        );
        let corpus = std::fs::read_to_string(out.join("negatives-corpus.jsonl")).unwrap();
        assert!(corpus.starts_with("{\"_id\":\"gen-neg-q1-0\""), "{corpus}");
        let native = std::fs::read_to_string(out.join("negatives.jsonl")).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(native.lines().next().unwrap()).unwrap();
        assert_eq!(first["method"], "llm");
        assert_eq!(first["negatives"].as_array().unwrap().len(), 2);
        let triplets = std::fs::read_to_string(out.join("triplet.jsonl")).unwrap();
        assert_eq!(triplets.lines().count(), 2);
        // Every format is also written as Parquet, row for row.
        for format in ["triplet", "n-tuple", "tevatron"] {
            let parquet = crate::table::read_rows(&out.join(format!("{format}.parquet"))).unwrap();
            let jsonl = crate::table::read_rows(&out.join(format!("{format}.jsonl"))).unwrap();
            assert_eq!(parquet, jsonl, "{format}");
        }
        let rejected = std::fs::read_to_string(out.join("rejected.jsonl")).unwrap();
        assert_eq!(rejected.lines().count() as u64, s.rejected.total());
    }

    #[test]
    fn query_positive_rejects_copies() {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path());
        let out = dir.path().join("out");
        let fake = FakeGenerator::new(|prompt: &str, _seed: u64| {
            Ok(if prompt.contains("scurvy") {
                // Copies the positive.
                "Scurvy. Vitamin C deficiency causes scurvy in sailors on long voyages at sea."
                    .into()
            } else {
                "why does the thyroid grow".into() // copies the query (and is short)
            })
        });
        let mut c = config(data, out, NegativeMode::QueryPositive);
        c.min_words = 1;
        let s = run_with(&c, &fake, &NoProgress).unwrap();
        assert_eq!(s.negatives, 0);
        assert_eq!(s.rejected.rejected.get("copies_positive"), Some(&2));
        assert_eq!(s.rejected.rejected.get("copies_query"), Some(&2));
    }
}
