//! The generate stage: synthetic training data from an LLM.
//!
//! - [`queries`]: `foil generate queries`: queries for the passages of a corpus (InPars-style
//!   prompts), filtered ([`filter`]: unparseable, empty, too long, copies of the passage,
//!   duplicates, round-trip consistency), written as a BEIR split.
//! - [`negatives`]: `foil generate negatives`: corpus-free hard negatives for the (query,
//!   positive) pairs of a split, from the query alone (two steps, as in *Don't Retrieve,
//!   Generate*) or from the query and its positive, written like `foil mine`'s output.
//!
//! Both send their requests through [`run_requests`], which skips what the generation
//! [`cache`] already holds and appends each batch's answers to it, so a killed run resumes and
//! the final files, built from the cache in input order, are the same bytes either way. Every
//! request's seed comes from [`derive_seed`] (the global seed and the item), never from its
//! batch. Prompts come from versioned [`template`]s.

pub mod answer_cache;
pub mod filter;
pub mod negatives;
pub mod queries;
pub mod template;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use foil_core::fsutil::AtomicFile;
use foil_core::{
    ChatMessage, Error, FinishReason, GenerateError, Generation, GenerationRequest, Generator,
    Progress, Result, SamplingParams,
};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use answer_cache::{request_key, CacheRecord, GenerationCache};
use filter::Rejection;

/// Which generator to use and how.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum GeneratorSpec {
    /// A GGUF file run by foil (`foil-llm`), given by path or by the name of an installed
    /// model (`smollm2`, `qwen`).
    Local {
        model: PathBuf,
        /// Threads the model runs on (default: all cores).
        threads: Option<usize>,
        /// Sequences decoded together.
        max_batch: usize,
    },
    /// An OpenAI-compatible chat-completions server (vLLM, llama.cpp, TGI, Ollama, hosted).
    Openai {
        base_url: String,
        model: String,
        /// The environment variable holding the API key (the key itself is never recorded).
        api_key_env: String,
        concurrency: usize,
        timeout_secs: f64,
        max_retries: u32,
    },
}

/// The GGUF files of the models `scripts/fetch-models.sh` installs, by short name.
pub const LOCAL_MODELS: [(&str, &str); 2] = [
    (
        "smollm2",
        "SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    (
        "qwen",
        "Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
];

/// A GGUF file given by path, or by a short name of [`LOCAL_MODELS`] under
/// [`foil_core::fsutil::models_dir`].
pub fn resolve_gguf(model: &std::path::Path) -> Result<PathBuf> {
    if model.is_file() {
        return Ok(model.to_path_buf());
    }
    let name = model.to_string_lossy();
    if let Some((_, file)) = LOCAL_MODELS.iter().find(|(n, _)| *n == name) {
        let path = foil_core::fsutil::models_dir().join(file);
        if path.is_file() {
            return Ok(path);
        }
        return Err(Error::Invalid(format!(
            "model {name:?} is not installed ({} is missing; scripts/fetch-models.sh {name} installs it)",
            path.display()
        )));
    }
    Err(Error::Invalid(format!(
        "model {} not found (neither a GGUF file nor one of {})",
        model.display(),
        LOCAL_MODELS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

impl GeneratorSpec {
    /// The threads a local model runs on (`None`: all cores, or not local).
    pub fn threads(&self) -> Option<usize> {
        match self {
            GeneratorSpec::Local { threads, .. } => *threads,
            GeneratorSpec::Openai { .. } => None,
        }
    }

    /// Builds the generator. A local model sizes its work for the rayon pool it is loaded
    /// in: load and run it inside the same [`crate::threads::with_threads`].
    pub fn load(&self) -> Result<Box<dyn Generator>> {
        match self {
            GeneratorSpec::Local {
                model, max_batch, ..
            } => {
                let path = resolve_gguf(model)?;
                let options = foil_llm::GgufOptions {
                    max_batch: (*max_batch).max(1),
                    ..Default::default()
                };
                Ok(Box::new(foil_llm::GgufGenerator::load(&path, options)?))
            }
            GeneratorSpec::Openai {
                base_url,
                model,
                api_key_env,
                concurrency,
                timeout_secs,
                max_retries,
            } => {
                if !(timeout_secs.is_finite() && *timeout_secs > 0.0) {
                    return Err(Error::config("timeout", "must be positive"));
                }
                let mut config = foil_openai::ApiConfig::new(base_url.clone(), model.clone());
                config.api_key_env = api_key_env.clone();
                config.concurrency = *concurrency;
                config.timeout = Duration::from_secs_f64(*timeout_secs);
                config.max_retries = *max_retries;
                Ok(Box::new(foil_openai::OpenAiChat::new(config)?))
            }
        }
    }
}

/// Sampling settings shared by every request of a run (each request gets its own seed).
#[derive(Debug, Clone, Serialize)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: usize,
}

impl Sampling {
    /// The request parameters with `seed`.
    pub fn params(&self, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            stop: Vec::new(),
            seed,
            logprobs: false,
            top_logprobs: 0,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::config("temperature", "must be ≥ 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::config("top_p", "must be in (0, 1]"));
        }
        if self.max_tokens == 0 {
            return Err(Error::config("max_tokens", "must be at least 1"));
        }
        Ok(())
    }
}

/// The seed of one request: the first 8 bytes of SHA-256 over the global seed and the parts
/// naming the request (step, item id, index), so it depends on nothing else.
pub fn derive_seed(seed: u64, parts: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes) & ((1 << 53) - 1) // exact in a JSON number everywhere
}

/// One request to make for an item.
#[derive(Debug, Clone)]
pub struct Job {
    /// The item's id (`gen-q-<passage>-<n>`).
    pub item: String,
    /// The step it belongs to (`query`, `describe`, `write`).
    pub step: String,
    pub key: String,
    pub request: GenerationRequest,
}

impl Job {
    /// A job whose key names `fingerprint`, the template and the step.
    pub fn new(
        fingerprint: &str,
        template: &str,
        step: &str,
        item: String,
        messages: Vec<ChatMessage>,
        params: SamplingParams,
    ) -> Self {
        let key = request_key(fingerprint, template, step, &params, &messages);
        Job {
            item,
            step: step.to_string(),
            key,
            request: GenerationRequest { messages, params },
        }
    }
}

/// How the requests of one step went.
#[derive(Debug, Clone, Default)]
pub struct StepStats {
    /// Answers found in the cache.
    pub cached: usize,
    /// Answers generated by this run.
    pub generated: usize,
    /// Requests that failed, by reason.
    pub failed: BTreeMap<String, u64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Records in a generating stage's manifest what its answers depend on besides its settings:
/// the generator's fingerprint, the template (name, version, source) and the generation
/// cache; a template given as a file is an input.
pub(crate) fn record_generation(
    manifest: &mut foil_core::manifest::Manifest,
    fingerprint: &str,
    template: &template::Template,
    template_arg: Option<&str>,
    cache_path: &std::path::Path,
) -> Result<()> {
    let config = &mut manifest.config;
    config["generator_fingerprint"] = serde_json::json!(fingerprint);
    config["template_name"] = serde_json::json!(template.name);
    config["template_version"] = serde_json::json!(template.version);
    config["template_source"] = serde_json::json!(template.source);
    config["cache_path"] = serde_json::json!(cache_path.display().to_string());
    if let Some(file) = template_arg
        .map(std::path::Path::new)
        .filter(|p| p.is_file())
    {
        manifest.add_input(file)?;
    }
    Ok(())
}

/// Makes the requests of `jobs` that the cache lacks, `batch` at a time, appending each
/// batch's answers to the cache. Returns this run's failures by key (answers are in the cache).
pub fn run_requests(
    generator: &dyn Generator,
    cache: &mut GenerationCache,
    template: &str,
    step: &str,
    jobs: &[Job],
    batch: usize,
    progress: &dyn Progress,
) -> Result<(HashMap<String, GenerateError>, StepStats)> {
    let mut stats = StepStats::default();
    let mut todo: Vec<&Job> = Vec::new();
    let mut queued: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for job in jobs {
        if cache.contains(&job.key) {
            stats.cached += 1;
        } else if queued.insert(job.key.as_str()) {
            todo.push(job);
        }
    }
    tracing::info!(
        step,
        requests = jobs.len(),
        cached = stats.cached,
        to_send = todo.len(),
        generator = generator.name(),
        "generating"
    );
    let mut failures = HashMap::new();
    progress.begin(step, Some(jobs.len() as u64));
    let mut done = jobs.len() - todo.len();
    progress.update(done as u64);
    for chunk in todo.chunks(batch.max(1)) {
        // Another run on the same cache may have answered some of these meanwhile.
        cache.refresh()?;
        let (answered, chunk): (Vec<&Job>, Vec<&Job>) =
            chunk.iter().partition(|j| cache.contains(&j.key));
        stats.cached += answered.len();
        done += answered.len();
        if chunk.is_empty() {
            progress.update(done as u64);
            continue;
        }
        let requests: Vec<GenerationRequest> = chunk.iter().map(|j| j.request.clone()).collect();
        let results = generator.generate(&requests);
        if results.len() != chunk.len() {
            return Err(Error::Invalid(format!(
                "generator {} answered {} of {} requests",
                generator.name(),
                results.len(),
                chunk.len()
            )));
        }
        let mut records = Vec::new();
        for (job, result) in chunk.iter().zip(results) {
            match result {
                Ok(generation) => {
                    stats.generated += 1;
                    stats.prompt_tokens += generation.prompt_tokens as u64;
                    stats.completion_tokens += generation.completion_tokens as u64;
                    records.push(CacheRecord {
                        key: job.key.clone(),
                        template: template.to_string(),
                        step: step.to_string(),
                        item: job.item.clone(),
                        generation,
                    });
                }
                Err(e) => {
                    tracing::warn!(item = %job.item, reason = %e.reason, error = %e.message, "generation failed");
                    *stats.failed.entry(e.reason.clone()).or_default() += 1;
                    failures.insert(job.key.clone(), e);
                }
            }
        }
        let others = cache.append(records)?;
        if others > 0 {
            tracing::debug!(
                answers = others,
                "another run answered these first; its answers are kept"
            );
        }
        done += chunk.len();
        progress.update(done as u64);
    }
    progress.end();
    Ok((failures, stats))
}

/// The outcome of one job: the cached answer or this run's failure.
pub(crate) fn outcome<'a>(
    cache: &'a GenerationCache,
    failures: &'a HashMap<String, GenerateError>,
    key: &str,
) -> std::result::Result<&'a Generation, GenerateError> {
    if let Some(g) = cache.get(key) {
        return Ok(g);
    }
    Err(failures
        .get(key)
        .cloned()
        .unwrap_or_else(|| GenerateError::new("missing", "no answer and no recorded failure")))
}

/// Rejections and failures counted by reason (`failed.<reason>` for failures).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub rejected: BTreeMap<String, u64>,
}

impl Tally {
    /// Counts one rejection; failures by their generator reason.
    pub fn add(&mut self, reason: Rejection, failure: Option<&GenerateError>) {
        let name = match failure {
            Some(e) => format!("failed.{}", e.reason),
            None => reason.name().to_string(),
        };
        *self.rejected.entry(name).or_default() += 1;
    }

    /// All rejections and failures.
    pub fn total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// `reason n, …` or `none`.
    pub fn summary(&self) -> String {
        if self.rejected.is_empty() {
            return "none".into();
        }
        self.rejected
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a generation stage turned down: the counts by reason and the `rejected.jsonl` lines.
#[derive(Debug, Default)]
pub(crate) struct Rejects {
    pub tally: Tally,
    lines: Vec<serde_json::Value>,
}

impl Rejects {
    /// Records one rejected answer (or failed request) of `job`, with `extra` fields in its
    /// line; returns the line for more fields.
    pub fn add(
        &mut self,
        job: &Job,
        reason: Rejection,
        detail: &str,
        raw: Option<&str>,
        failure: Option<&GenerateError>,
        extra: &serde_json::Value,
    ) -> &mut serde_json::Value {
        self.tally.add(reason, failure);
        let line = rejected_line(job, reason, detail, raw, failure, extra.clone());
        self.lines.push(line);
        let last = self.lines.len() - 1;
        &mut self.lines[last]
    }

    /// The answer to `job` (from the cache) and what `parse` makes of it; a failed request or
    /// an answer `parse` refuses is recorded and gives `None`.
    pub fn parsed<'c>(
        &mut self,
        cache: &'c GenerationCache,
        failures: &'c HashMap<String, GenerateError>,
        job: &Job,
        extra: &serde_json::Value,
        parse: fn(&str, FinishReason) -> std::result::Result<String, filter::ParseError>,
    ) -> Option<(&'c str, String)> {
        match outcome(cache, failures, &job.key) {
            Err(e) => {
                let failed = Rejection::Failed;
                self.add(job, failed, "the generator failed", None, Some(&e), extra);
                None
            }
            Ok(g) => match parse(&g.text, g.finish) {
                Ok(text) => Some((g.text.as_str(), text)),
                Err((reason, detail)) => {
                    self.add(job, reason, detail, Some(&g.text), None, extra);
                    None
                }
            },
        }
    }

    /// Writes `rejected.jsonl` atomically, lines in input order (`items`: the item ids in
    /// input order; lines of one item in the order they were recorded), and adds the counts
    /// (`rejected`, `rejected.<reason>`) to `counts`.
    pub fn write<'a>(
        mut self,
        path: &std::path::Path,
        items: impl IntoIterator<Item = &'a str>,
        counts: &mut BTreeMap<String, u64>,
    ) -> Result<Tally> {
        let order: HashMap<&str, usize> = items
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        self.lines
            .sort_by_key(|r| r["item"].as_str().and_then(|i| order.get(i)).copied());
        let mut file = AtomicFile::create(path)?;
        for line in &self.lines {
            writeln!(file.writer(), "{line}").map_err(|e| Error::io(path, e))?;
        }
        file.commit()?;
        counts.insert("rejected".into(), self.tally.total());
        for (reason, n) in &self.tally.rejected {
            counts.insert(format!("rejected.{reason}"), *n);
        }
        Ok(self.tally)
    }
}

/// A `rejected.jsonl` line.
fn rejected_line(
    job: &Job,
    reason: Rejection,
    detail: &str,
    raw: Option<&str>,
    failure: Option<&GenerateError>,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut line = json!({
        "item": job.item,
        "step": job.step,
        "reason": reason.name(),
        "detail": detail,
        "raw": raw,
    });
    if let Some(e) = failure {
        line["error_reason"] = json!(e.reason);
        line["error"] = json!(e.message);
    }
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            line[k] = v;
        }
    }
    line
}

#[cfg(test)]
pub(crate) mod fake {
    //! A deterministic [`Generator`] for tests: the answer is a function of the request.

    use super::*;
    use foil_core::FinishReason;

    /// Answers with `answer(last user message, seed)`; fails when it returns `Err`.
    pub struct FakeGenerator<F> {
        pub answer: F,
        pub calls: std::sync::atomic::AtomicUsize,
    }

    impl<F> FakeGenerator<F> {
        pub fn new(answer: F) -> Self {
            Self {
                answer,
                calls: Default::default(),
            }
        }
    }

    impl<F> Generator for FakeGenerator<F>
    where
        F: Fn(&str, u64) -> std::result::Result<String, String> + Send + Sync,
    {
        fn name(&self) -> &str {
            "fake"
        }
        fn fingerprint(&self) -> String {
            "fake".into()
        }
        fn generate(
            &self,
            requests: &[GenerationRequest],
        ) -> Vec<std::result::Result<Generation, GenerateError>> {
            requests
                .iter()
                .map(|r| {
                    self.calls
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let user = r
                        .messages
                        .iter()
                        .rev()
                        .find(|m| m.role == foil_core::Role::User)
                        .map(|m| m.content.as_str())
                        .unwrap_or("");
                    (self.answer)(user, r.params.seed)
                        .map(|text| Generation::text(text, FinishReason::Stop, 1, 1))
                        .map_err(|m| GenerateError::new("fake", m))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_depend_only_on_the_seed_and_the_item() {
        let a = derive_seed(42, &["query", "doc1", "0"]);
        assert_eq!(a, derive_seed(42, &["query", "doc1", "0"]));
        assert_ne!(a, derive_seed(43, &["query", "doc1", "0"]));
        assert_ne!(a, derive_seed(42, &["query", "doc1", "1"]));
        assert_ne!(
            a,
            derive_seed(42, &["query", "doc", "10"]),
            "parts are length-prefixed"
        );
        assert!(a < 1 << 53);
    }
}
