//! An LLM relevance judge: P(relevant) of a (query, passage) pair, read from the model's
//! next-token distribution after a yes/no question (the [`Task::Judge`] template, built-in
//! `yes-no`), as pointwise LLM rerankers do:
//!
//! ```text
//! P(relevant) = Σ p(t) over first tokens t that read "yes"
//!             / (Σ p(t) over "yes" tokens + Σ p(t) over "no" tokens)
//! ```
//!
//! where a token reads "yes" or "no" when, trimmed of spaces and punctuation and lowercased, it
//! is that word. The tokens and their probabilities are the answer's most likely first tokens
//! ([`foil_core::SamplingParams::top_logprobs`]): logits of a local GGUF model, `top_logprobs`
//! of a served one. Nothing is sampled, so a judgment does not depend on a seed.
//!
//! Requests go through the generation cache ([`crate::generate::answer_cache`]): batched, resumable
//! after a kill, shared safely by concurrent runs. A pair whose request fails, or whose top
//! tokens hold neither answer, has no judgment; callers count it.
//!
//! [`LlmJudge`] is also a [`Reranker`] (the score is P(relevant)), so it can rescore mined
//! candidates where no cross-encoder is installed.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use foil_core::beir::BeirPaths;
use foil_core::{InputPolicy, Qrels, Run, SkipReport};

use foil_core::{
    GenerateError, Generation, Generator, NoProgress, Progress, Reranker, Result, SamplingParams,
};
use serde::Serialize;

use crate::generate::answer_cache::GenerationCache;
use crate::generate::template::{Task, Template};
use crate::generate::{run_requests, GeneratorSpec, Job, StepStats};

/// Most likely first tokens asked for (OpenAI's maximum).
pub const TOP_TOKENS: usize = 20;

/// How to judge.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeConfig {
    pub generator: GeneratorSpec,
    /// A built-in judge template (`yes-no`) or a template file.
    pub template: String,
    /// The generation cache file the judgments go to.
    pub cache: PathBuf,
    /// Passages are cut to this many words in the prompt.
    pub max_passage_words: Option<usize>,
    /// Requests handed to the generator at once.
    pub batch_size: usize,
}

impl JudgeConfig {
    /// A judge with the built-in template, judgments cached in `cache`.
    pub fn new(generator: GeneratorSpec, cache: PathBuf) -> Self {
        JudgeConfig {
            generator,
            template: "yes-no".into(),
            cache,
            max_passage_words: Some(200),
            batch_size: 16,
        }
    }
}

/// The default judgment cache: `$FOIL_CACHE/judge/cache.jsonl`, else
/// `~/.cache/foil/judge/cache.jsonl`.
pub fn default_cache_file() -> PathBuf {
    crate::embedding_cache::default_cache_dir()
        .parent()
        .map(|p| p.join("judge/cache.jsonl"))
        .unwrap_or_else(|| PathBuf::from("judge-cache.jsonl"))
}

/// One judgment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Judgment {
    /// P(relevant) in [0, 1].
    pub p_relevant: f32,
    /// The probability mass of the "yes" and "no" tokens together: how much the model's
    /// answer was a yes/no at all.
    pub yes_no_mass: f32,
}

/// What a batch of judgments cost.
#[derive(Debug, Clone, Default)]
pub struct JudgeStats {
    pub requests: StepStats,
    /// Pairs without a judgment, by reason.
    pub failed: std::collections::BTreeMap<String, u64>,
}

/// An LLM judge; see the module documentation.
pub struct LlmJudge {
    generator: Box<dyn Generator>,
    template: Template,
    cache: Mutex<GenerationCache>,
    max_passage_words: Option<usize>,
    batch_size: usize,
    name: String,
}

impl LlmJudge {
    /// Loads the generator and opens the cache. A local model runs on the caller's rayon
    /// pool: load and use the judge inside the same [`crate::threads::with_threads`].
    pub fn load(config: &JudgeConfig) -> Result<Self> {
        let template = Template::load_for(&config.template, Task::Judge)?;
        let generator = config.generator.load()?;
        Self::with_generator(generator, template, config)
    }

    /// A judge over an already loaded generator.
    pub fn with_generator(
        generator: Box<dyn Generator>,
        template: Template,
        config: &JudgeConfig,
    ) -> Result<Self> {
        let cache = GenerationCache::open(&config.cache)?;
        Ok(LlmJudge {
            name: format!("judge:{}", generator.name()),
            generator,
            template,
            cache: Mutex::new(cache),
            max_passage_words: config.max_passage_words,
            batch_size: config.batch_size.max(1),
        })
    }

    /// What determines the judgments: the generator and the template.
    pub fn fingerprint_of(&self) -> String {
        format!("{}|{}", self.generator.fingerprint(), self.template.id())
    }

    /// Judges each `(query, passage)` pair; one result per pair, in order.
    pub fn judge(
        &self,
        pairs: &[(&str, &str)],
        progress: &dyn Progress,
    ) -> Result<(Vec<Option<Judgment>>, JudgeStats)> {
        let fingerprint = self.generator.fingerprint();
        let template_id = self.template.id();
        let params = SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            max_tokens: 1,
            stop: Vec::new(),
            seed: 0,
            logprobs: false,
            top_logprobs: TOP_TOKENS,
        };
        let mut jobs = Vec::with_capacity(pairs.len());
        for (i, (query, passage)) in pairs.iter().enumerate() {
            let passage = match self.max_passage_words {
                Some(max) => passage
                    .split_whitespace()
                    .take(max)
                    .collect::<Vec<_>>()
                    .join(" "),
                None => passage.to_string(),
            };
            let messages = self
                .template
                .render("judge", &[("query", query), ("passage", &passage)])?;
            jobs.push(Job::new(
                &fingerprint,
                &template_id,
                "judge",
                format!("judge-{i}"),
                messages,
                params.clone(),
            ));
        }
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| foil_core::Error::Invalid("the judge's cache lock is poisoned".into()))?;
        let (failures, requests) = run_requests(
            self.generator.as_ref(),
            &mut cache,
            &template_id,
            "judge",
            &jobs,
            self.batch_size,
            progress,
        )?;
        let mut stats = JudgeStats {
            requests,
            ..Default::default()
        };
        let judgments = jobs
            .iter()
            .map(|job| {
                let outcome = match cache.get(&job.key) {
                    Some(g) => read_judgment(g),
                    None => Err(failures.get(&job.key).cloned().unwrap_or_else(|| {
                        GenerateError::new("missing", "no answer and no recorded failure")
                    })),
                };
                outcome
                    .map_err(|e| *stats.failed.entry(e.reason).or_default() += 1)
                    .ok()
            })
            .collect();
        Ok((judgments, stats))
    }
}

/// P(relevant) from an answer's top first tokens.
pub fn read_judgment(g: &Generation) -> std::result::Result<Judgment, GenerateError> {
    if g.top_logprobs.is_empty() {
        return Err(GenerateError::new(
            "no_logprobs",
            "the generator returned no token probabilities (a server without top_logprobs?)",
        ));
    }
    let (mut yes, mut no) = (0.0f64, 0.0f64);
    for t in &g.top_logprobs {
        let word: String = t
            .token
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        let p = (t.logprob as f64).exp();
        match word.as_str() {
            "yes" => yes += p,
            "no" => no += p,
            _ => {}
        }
    }
    if yes + no <= 0.0 {
        return Err(GenerateError::new(
            "no_yes_no",
            "neither yes nor no among the most likely first tokens",
        ));
    }
    Ok(Judgment {
        p_relevant: (yes / (yes + no)) as f32,
        yes_no_mass: (yes + no) as f32,
    })
}

impl Reranker for LlmJudge {
    fn name(&self) -> &str {
        &self.name
    }

    fn fingerprint(&self) -> String {
        self.fingerprint_of()
    }

    /// P(relevant) per pair; a pair without a judgment is an error (a reranker must score
    /// every pair).
    fn score(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        let (judgments, stats) = self.judge(pairs, &NoProgress)?;
        judgments
            .into_iter()
            .map(|j| {
                j.map(|j| j.p_relevant).ok_or_else(|| {
                    foil_core::Error::Invalid(format!(
                        "the judge {} could not judge every pair ({:?})",
                        self.name, stats.failed
                    ))
                })
            })
            .collect()
    }
}

/// AUC of scores for positives against non-positives: the share of (positive, negative)
/// pairs ranked right, ties counting half.
pub fn auc(positives: &[f32], negatives: &[f32]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut all: Vec<(f32, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Rank sum of the positives with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0; // ranks i+1 ..= j
        rank_sum += avg * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Configuration of `foil judge`: judge the top of a run (and the judged positives) for the
/// queries of a split, and measure the judge against the qrels.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeRunConfig {
    /// BEIR folder (corpus, queries, qrels).
    pub data: PathBuf,
    pub split: String,
    /// The run whose top `top_k` documents per query are judged.
    pub run: Option<PathBuf>,
    pub top_k: usize,
    /// Also judge every positive of the qrels (whether the run found it or not).
    pub with_positives: bool,
    /// Only this many queries of the split, drawn with `seed` (kept in id order).
    pub sample: Option<usize>,
    pub seed: u64,
    pub judge: JudgeConfig,
    /// Output folder: `judgments.jsonl`, `run.trec`, `manifest.json`.
    pub output: PathBuf,
    pub threads: Option<usize>,
}

/// What `foil judge` did.
#[derive(Debug, Clone)]
pub struct JudgeRunSummary {
    pub queries: usize,
    pub pairs: usize,
    pub judged: usize,
    pub stats: JudgeStats,
    /// AUC of P(relevant) for judged positives against the run's other documents.
    pub auc: Option<f64>,
    /// Positives and non-positives judged.
    pub positives: usize,
    pub non_positives: usize,
    /// Share of non-positives the judge called relevant (P ≥ 0.5).
    pub non_positives_relevant: Option<f64>,
    pub seconds: f64,
}

/// Runs `foil judge`: read the split (and the run) → the pairs to judge → the judge →
/// `judgments.jsonl`, `run.trec` and the manifest.
pub fn run(config: &JudgeRunConfig, progress: &dyn Progress) -> Result<JudgeRunSummary> {
    let started = std::time::Instant::now();
    let _lock = foil_core::lock::Lock::output(&config.output)?;
    if config.run.is_none() && !config.with_positives {
        return Err(foil_core::Error::Invalid(
            "nothing to judge: give a run, or judge the positives".into(),
        ));
    }
    let policy = InputPolicy::default();
    let mut skips = SkipReport::default();
    let paths = BeirPaths::new(&config.data);
    let qrels = Qrels::read(&paths.qrels(&config.split), policy, &mut skips)?;
    let texts = crate::rerank::Texts::read(&paths, policy, &mut skips)?;
    let run = match &config.run {
        Some(path) => Some(Run::read(path, policy, &mut skips)?),
        None => None,
    };
    let ids = judged_queries(config, &qrels, &texts);
    let pairs = pairs_to_judge(config, &ids, &qrels, run.as_ref(), &texts);
    let inputs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|p| {
            let query = texts.queries[p.query].as_str();
            (query, texts.passages[p.doc.as_str()].as_str())
        })
        .collect();
    let (judgments, stats) = crate::threads::with_threads(config.threads, || {
        let judge = LlmJudge::load(&config.judge)?;
        judge.judge(&inputs, progress)
    })??;
    let (pos, neg) = write_judgments(config, &pairs, &judgments)?;
    let judged = pos.len() + neg.len();
    let summary = JudgeRunSummary {
        queries: ids.len(),
        pairs: pairs.len(),
        judged,
        stats,
        auc: auc(&pos, &neg),
        positives: pos.len(),
        non_positives: neg.len(),
        non_positives_relevant: (!neg.is_empty())
            .then(|| neg.iter().filter(|&&p| p >= 0.5).count() as f64 / neg.len() as f64),
        seconds: started.elapsed().as_secs_f64(),
    };
    write_manifest(config, &paths, &skips, &summary)?;
    Ok(summary)
}

/// A (query, document) pair to judge: from the run's top (with its rank) or a positive.
struct Pair<'a> {
    query: &'a str,
    doc: String,
    rank: Option<usize>,
    relevance: i32,
}

/// The queries: those judged in the split that have a text, in id order, optionally a
/// seeded sample.
fn judged_queries<'a>(
    config: &JudgeRunConfig,
    qrels: &'a Qrels,
    texts: &crate::rerank::Texts,
) -> Vec<&'a str> {
    let mut ids: Vec<&str> = qrels
        .query_ids()
        .filter(|q| texts.queries.contains_key(*q))
        .collect();
    ids.sort_unstable();
    if let Some(n) = config.sample {
        let chosen = crate::generate::queries::select(
            ids.len(),
            crate::generate::queries::Selection::Sample(n),
            config.seed,
        );
        ids = chosen.into_iter().map(|i| ids[i]).collect();
    }
    ids
}

/// Each query's pairs: the run's top `top_k` documents, then (when asked) its positives, each
/// document once.
fn pairs_to_judge<'a>(
    config: &JudgeRunConfig,
    ids: &[&'a str],
    qrels: &Qrels,
    run: Option<&Run>,
    texts: &crate::rerank::Texts,
) -> Vec<Pair<'a>> {
    let full = &texts.passages;
    let mut pairs: Vec<Pair> = Vec::new();
    for &q in ids {
        let mut seen = HashSet::new();
        let judged = qrels.get(q);
        let grade = |d: &str| judged.and_then(|j| j.get(d)).copied().unwrap_or(0);
        if let Some(run) = run {
            for (r, doc) in run
                .get(q)
                .unwrap_or(&[])
                .iter()
                .take(config.top_k)
                .enumerate()
            {
                if full.contains_key(doc.doc_id.as_str()) && seen.insert(doc.doc_id.clone()) {
                    pairs.push(Pair {
                        query: q,
                        doc: doc.doc_id.clone(),
                        rank: Some(r + 1),
                        relevance: grade(&doc.doc_id),
                    });
                }
            }
        }
        if config.with_positives {
            let mut positives: Vec<(&String, &i32)> = judged
                .map(|j| j.iter().filter(|(_, g)| **g > 0).collect())
                .unwrap_or_default();
            positives.sort();
            for (d, g) in positives {
                if full.contains_key(d.as_str()) && seen.insert(d.clone()) {
                    pairs.push(Pair {
                        query: q,
                        doc: d.clone(),
                        rank: None,
                        relevance: *g,
                    });
                }
            }
        }
    }
    pairs
}

/// Writes `judgments.jsonl` and the judged documents as a run ranked by P(relevant);
/// returns P(relevant) of the judged positives and of the other documents.
fn write_judgments(
    config: &JudgeRunConfig,
    pairs: &[Pair],
    judgments: &[Option<Judgment>],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let out = config.output.join("judgments.jsonl");
    let mut file = foil_core::fsutil::AtomicFile::create(&out)?;
    let mut reranked: BTreeMap<&str, Vec<foil_core::trec::ScoredDoc>> = BTreeMap::new();
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for (p, j) in pairs.iter().zip(judgments) {
        let line = serde_json::json!({
            "query_id": p.query,
            "doc_id": p.doc,
            "rank": p.rank,
            "relevance": p.relevance,
            "p_relevant": j.map(|j| j.p_relevant),
            "yes_no_mass": j.map(|j| j.yes_no_mass),
        });
        writeln!(file.writer(), "{line}").map_err(|e| foil_core::Error::io(&out, e))?;
        if let Some(j) = j {
            if p.relevance > 0 {
                pos.push(j.p_relevant)
            } else {
                neg.push(j.p_relevant)
            }
            reranked
                .entry(p.query)
                .or_default()
                .push(foil_core::trec::ScoredDoc::new(
                    p.doc.clone(),
                    j.p_relevant as f64,
                ));
        }
    }
    file.commit()?;
    let mut trec = Run::default();
    for (q, docs) in reranked {
        trec.insert(q, docs);
    }
    trec.write(&config.output.join("run.trec"), "foil-judge")?;
    Ok((pos, neg))
}

/// `manifest.json`: inputs, outputs, seed, skips, counts (failures by reason) and the AUC.
fn write_manifest(
    config: &JudgeRunConfig,
    paths: &BeirPaths,
    skips: &SkipReport,
    s: &JudgeRunSummary,
) -> Result<()> {
    let mut manifest = foil_core::manifest::Manifest::new(
        "judge",
        serde_json::to_value(config).unwrap_or_default(),
    );
    manifest.add_input(&paths.corpus)?;
    manifest.add_input(&paths.queries)?;
    manifest.add_input(&paths.qrels(&config.split))?;
    if let Some(path) = &config.run {
        manifest.add_input(path)?;
    }
    manifest.outputs = vec!["judgments.jsonl".into(), "run.trec".into()];
    manifest.seed = Some(config.seed);
    manifest.set_skips(skips);
    let c = &mut manifest.counts;
    c.insert("queries".into(), s.queries as u64);
    c.insert("pairs".into(), s.pairs as u64);
    c.insert("judged".into(), s.judged as u64);
    c.insert("positives".into(), s.positives as u64);
    c.insert("non_positives".into(), s.non_positives as u64);
    c.insert("cache.hits".into(), s.stats.requests.cached as u64);
    c.insert("cache.generated".into(), s.stats.requests.generated as u64);
    for (reason, n) in &s.stats.failed {
        c.insert(format!("failed.{reason}"), *n);
    }
    manifest.timings.insert("seconds".into(), s.seconds);
    if let Some(a) = s.auc {
        manifest.config["auc"] = serde_json::json!(a);
    }
    manifest.write(&config.output.join("manifest.json"))
}

/// A judge LLM for tests, shared by the judge's and mining's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::TOP_TOKENS;
    use foil_core::TokenLogprob;
    use foil_core::{FinishReason, GenerateError, Generation, GenerationRequest, Generator};

    /// A first answer token whose top tokens have these probabilities.
    pub(crate) fn top(tokens: &[(&str, f32)]) -> Generation {
        let mut g = Generation::text("", FinishReason::Length, 10, 1);
        g.top_logprobs = tokens
            .iter()
            .map(|(t, p)| TokenLogprob {
                token: t.to_string(),
                logprob: p.ln(),
            })
            .collect();
        g
    }

    /// Answers each yes-no prompt ("Query: …" on its first line, the passage on its second)
    /// with the top tokens the function gives for (query, passage).
    pub(crate) struct FnJudge(pub fn(&str, &str) -> Vec<(&'static str, f32)>);

    impl Generator for FnJudge {
        fn name(&self) -> &str {
            "fn-judge"
        }
        fn fingerprint(&self) -> String {
            "fn-judge@1".into()
        }
        fn generate(
            &self,
            requests: &[GenerationRequest],
        ) -> Vec<std::result::Result<Generation, GenerateError>> {
            requests
                .iter()
                .map(|r| {
                    assert_eq!(r.params.top_logprobs, TOP_TOKENS);
                    let user = &r.messages.last().unwrap().content;
                    let mut lines = user.lines();
                    let query = lines.next().unwrap_or("").trim_start_matches("Query: ");
                    let passage = lines.next().unwrap_or("");
                    Ok(top(&(self.0)(query, passage)))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{top, FnJudge};
    use super::*;
    use foil_core::FinishReason;

    #[test]
    fn yes_and_no_tokens_are_summed_in_every_spelling() {
        let j = read_judgment(&top(&[
            ("Yes", 0.5),
            (" yes", 0.1),
            ("No", 0.2),
            ("Maybe", 0.1),
        ]))
        .unwrap();
        assert!((j.p_relevant - 0.75).abs() < 1e-6, "{j:?}");
        assert!((j.yes_no_mass - 0.8).abs() < 1e-6);
        let j = read_judgment(&top(&[(" NO.", 0.9), ("yes!", 0.1)])).unwrap();
        assert!((j.p_relevant - 0.1).abs() < 1e-6);
        assert_eq!(
            read_judgment(&top(&[("Maybe", 0.9)])).unwrap_err().reason,
            "no_yes_no"
        );
        assert_eq!(
            read_judgment(&Generation::text("yes", FinishReason::Stop, 1, 1))
                .unwrap_err()
                .reason,
            "no_logprobs"
        );
    }

    #[test]
    fn auc_counts_ties_half() {
        assert_eq!(auc(&[0.9, 0.8], &[0.1, 0.2]), Some(1.0));
        assert_eq!(auc(&[0.1], &[0.9]), Some(0.0));
        assert_eq!(auc(&[0.5], &[0.5]), Some(0.5));
        assert_eq!(auc(&[0.5, 0.9], &[0.5, 0.1]), Some(0.875));
        assert_eq!(auc(&[], &[0.5]), None);
    }

    /// Says yes when the passage shares a word with the query, through the top tokens.
    fn word_judge(query: &str, passage: &str) -> Vec<(&'static str, f32)> {
        let passage = passage.to_lowercase();
        if query
            .split_whitespace()
            .any(|w| passage.contains(&w.to_lowercase()))
        {
            vec![("Yes", 0.9), ("No", 0.1)]
        } else {
            vec![("No", 0.7), ("Yes", 0.1), ("Hmm", 0.2)]
        }
    }

    #[test]
    fn pairs_are_judged_cached_and_reranked() {
        let dir = tempfile::tempdir().unwrap();
        let config = JudgeConfig::new(
            GeneratorSpec::Local {
                model: "unused".into(),
                threads: None,
                max_batch: 1,
            },
            dir.path().join("judge.jsonl"),
        );
        let template = Template::load_for("yes-no", Task::Judge).unwrap();
        let judge =
            LlmJudge::with_generator(Box::new(FnJudge(word_judge)), template.clone(), &config)
                .unwrap();
        let pairs = [
            ("scurvy", "Scurvy comes from a lack of vitamin C."),
            ("rickets", "Tea."),
        ];
        let (judgments, stats) = judge.judge(&pairs, &NoProgress).unwrap();
        assert_eq!(stats.requests.generated, 2);
        assert!((judgments[0].unwrap().p_relevant - 0.9).abs() < 1e-6);
        assert!((judgments[1].unwrap().p_relevant - 0.125).abs() < 1e-6);
        assert_eq!(judge.score(&pairs).unwrap().len(), 2);
        drop(judge);
        // A second judge finds every judgment in the cache.
        let again =
            LlmJudge::with_generator(Box::new(FnJudge(word_judge)), template, &config).unwrap();
        let (same, stats) = again.judge(&pairs, &NoProgress).unwrap();
        assert_eq!((stats.requests.cached, stats.requests.generated), (2, 0));
        assert_eq!(same, judgments);
    }
}
