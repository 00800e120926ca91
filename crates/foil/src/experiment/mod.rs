//! The experiment stage: the paper's comparison as one resumable command.
//!
//! For one BEIR dataset and one base bi-encoder: take the training pairs (the dataset's own
//! qrels, or queries an LLM generated for its passages), get hard negatives by each method
//! asked for — an LLM writing them from the query alone (corpus-free), BM25, the bi-encoder
//! (dense), or BM25 candidates reranked by a cross-encoder — judge each negative set
//! ([`crate::inspect`]), train one model per set with the same seed and budget
//! ([`crate::train`]), evaluate every model, the base model and BM25 on the test qrels, and
//! write a report: the measures per pipeline, paired significance against the base model,
//! the negative-set statistics, how well each statistic ranked the pipelines (Spearman), and a
//! chart.
//!
//! Every step writes into its own folder under the output and records a key there — a hash of
//! its settings and of its inputs' keys. A rerun skips each step whose key is unchanged, so
//! after a change only what depends on it is recomputed; the steps themselves resume after a
//! kill.

mod config;
mod report;

use config::NegativesSection;
pub use config::{ExperimentConfig, LlmSetting, Method, ServedLlm};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use foil_bm25::Bm25Params;
use foil_core::fsutil::{hex, sha256_file, write_atomic};
use foil_core::manifest::Manifest;
use foil_core::metrics::{EvalConfig, Evaluation};
use foil_core::{Error, InputPolicy, Progress, Result, SkipReport};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::encoder_spec::EncoderSpec;
use crate::formats::Format;
use crate::generate::{self, GeneratorSpec, Sampling};
use crate::inspect::{self, Judge};
use crate::judge::JudgeConfig;
use crate::mine::filter::{Filters, NegativeSampling};
use crate::mine::judged::{FalseNegativeRule, JudgeAction, JudgeRescore, MineJudge};
use crate::mine::{self, MineConfig, PairsSource};
use crate::search::{self, RetrieverKind, SearchConfig};
use crate::train::{self, TrainConfig};
pub use report::{PipelineResult, Statistics};

/// What an experiment produced.
#[derive(Debug, Clone)]
pub struct ExperimentSummary {
    pub results: Vec<PipelineResult>,
    /// Steps run this time and steps reused from an earlier run.
    pub steps_run: usize,
    pub steps_reused: usize,
    pub report: PathBuf,
    pub seconds: f64,
}

/// A step's record in its folder: the key it ran with and what it returned.
#[derive(Serialize, Deserialize)]
struct StepRecord<T> {
    key: String,
    value: T,
    /// How long the step took when it ran.
    #[serde(default)]
    seconds: f64,
}

const STEP_FILE: &str = "step.json";

/// Runs and caches the experiment's steps.
struct Steps<'a> {
    output: &'a Path,
    run: usize,
    reused: usize,
    /// Seconds each step took when it ran (also for reused steps: the time of their run).
    seconds: Vec<(String, f64)>,
}

impl Steps<'_> {
    /// Runs `f` in `output/name` unless that folder records the same `key`; returns its value.
    fn step<T: Serialize + DeserializeOwned>(
        &mut self,
        name: &str,
        key: &str,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        let dir = self.output.join(name);
        let record = dir.join(STEP_FILE);
        if let Ok(bytes) = std::fs::read(&record) {
            if let Ok(done) = serde_json::from_slice::<StepRecord<T>>(&bytes) {
                if done.key == key {
                    tracing::info!(step = name, "unchanged; reusing {}", dir.display());
                    self.reused += 1;
                    self.seconds.push((name.to_string(), done.seconds));
                    return Ok(done.value);
                }
            }
            // Another key: the step's inputs or settings changed. Its own resume logic
            // decides what of the folder it can keep.
            let _ = std::fs::remove_file(&record);
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        tracing::info!(step = name, "running");
        let started = Instant::now();
        let value = f(&dir)?;
        let seconds = started.elapsed().as_secs_f64();
        self.seconds.push((name.to_string(), seconds));
        let bytes = serde_json::to_vec_pretty(&StepRecord {
            key: key.to_string(),
            value: &value,
            seconds,
        })
        .map_err(|e| Error::Invalid(format!("cannot record step {name}: {e}")))?;
        write_atomic(&record, &bytes)?;
        self.run += 1;
        Ok(value)
    }
}

/// The negatives settings one method's steps depend on: all but the list of methods, so that
/// adding or removing a method does not rerun the others.
fn method_settings(n: &NegativesSection) -> Value {
    let mut settings = serde_json::to_value(n).unwrap_or(Value::Null);
    if let Some(fields) = settings.as_object_mut() {
        fields.remove("methods");
    }
    settings
}

/// The hash of a step's settings and the keys of what it reads.
fn key(parts: &Value) -> String {
    hex(&Sha256::digest(parts.to_string().as_bytes()))
}

/// What every step of an experiment shares: its settings, where it writes, the models, and
/// the keys (hashes) of the inputs its steps depend on.
struct Experiment<'a> {
    config: &'a ExperimentConfig,
    output: &'a Path,
    progress: &'a dyn Progress,
    /// The corpus, queries and qrels.
    data_key: String,
    encoder: EncoderSpec,
    encoder_key: String,
    generator: Option<GeneratorSpec>,
    generator_key: Option<String>,
    /// The LLM judge and its key, when a method needs one.
    judge: Option<(JudgeConfig, String)>,
    test_qrels: PathBuf,
}

impl<'a> Experiment<'a> {
    fn new(
        config: &'a ExperimentConfig,
        output: &'a Path,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
        let data = &config.data;
        let corpus = data.join("corpus.jsonl");
        // Zero labels: with generated queries the train split is not read (it need not exist).
        let train_qrels = data
            .join("qrels")
            .join(format!("{}.tsv", config.train_split));
        let data_key = key(&json!({
            "corpus": sha256_file(&corpus)?,
            "queries": sha256_file(&data.join("queries.jsonl"))?,
            "train": if config.queries.generate { None } else { Some(sha256_file(&train_qrels)?) },
            "test": sha256_file(&data.join("qrels").join(format!("{}.tsv", config.test_split)))?,
        }));
        let encoder = EncoderSpec::Local {
            model: PathBuf::from(&config.encoder),
            options: Default::default(),
        };
        let encoder_key = crate::encoder_spec::resolve_model(Path::new(&config.encoder))
            .and_then(|dir| sha256_file(&dir.join("model.safetensors")))?;
        let generator = config.llm.as_ref().map(|llm| llm.spec(config.threads));
        let generator_key = config.llm.as_ref().map(llm_key).transpose()?;
        let judge = match config.judge_llm() {
            Some(llm) if config.negatives.methods.iter().any(|m| m.needs_judge()) => {
                let mut judge =
                    JudgeConfig::new(llm.spec(config.threads), output.join("judge-cache.jsonl"));
                judge.max_passage_words = Some(config.negatives.judge_max_passage_words);
                if let Some(template) = &config.negatives.judge_template {
                    judge.template = template.clone();
                }
                Some((judge, llm_key(llm)?))
            }
            _ => None,
        };
        Ok(Experiment {
            config,
            output,
            progress,
            data_key,
            encoder,
            encoder_key,
            generator,
            generator_key,
            judge,
            test_qrels: data
                .join("qrels")
                .join(format!("{}.tsv", config.test_split)),
        })
    }

    /// Step 1: the training pairs' folder and key — the dataset's own, or queries generated
    /// for sampled passages (zero labels).
    fn pairs(&self, steps: &mut Steps) -> Result<(PathBuf, String)> {
        let config = self.config;
        if !config.queries.generate {
            return Ok((config.data.clone(), self.data_key.clone()));
        }
        let (data, generator, cache, progress) = (
            &config.data,
            &self.generator,
            config.embedding_cache.clone(),
            self.progress,
        );
        let q = &config.queries;
        let k = key(
            &json!({"data": self.data_key, "llm": self.generator_key, "q": q, "seed": config.seed}),
        );
        steps.step("queries", &k, |dir| {
            let summary = generate::queries::run(
                &generate::queries::QueriesConfig {
                    data: data.clone(),
                    output: dir.to_path_buf(),
                    split: config.train_split.clone(),
                    generator: generator
                        .clone()
                        .expect("validated: generated queries need an llm"),
                    template: q.template.clone(),
                    examples: q.examples.clone(),
                    max_passage_words: q.max_passage_words,
                    keep_logprob: q.keep_logprob,
                    per_passage: q.per_passage,
                    selection: generate::queries::Selection::Sample(q.passages),
                    seed: config.seed,
                    sampling: Sampling {
                        temperature: q.temperature,
                        top_p: 0.9,
                        max_tokens: 64,
                    },
                    max_query_words: q.max_query_words,
                    max_copy_overlap: 0.75,
                    copy_min_words: 10,
                    round_trip: generate::queries::RoundTrip::Bm25,
                    round_trip_k: q.round_trip_k,
                    cache: None,
                    embedding_cache: cache.clone(),
                    batch_size: 16,
                    threads: config.threads,
                    skip_invalid: false,
                },
                progress,
            )?;
            Ok(json!({"queries": summary.queries, "passages": summary.passages}))
        })?;
        Ok((self.output.join("queries"), k))
    }

    /// Steps 2–5 of one method: negatives → inspect → train → evaluate.
    fn pipeline(
        &self,
        steps: &mut Steps,
        method: Method,
        pairs: &(PathBuf, String),
        judged: &[String],
    ) -> Result<PipelineResult> {
        let (config, progress) = (self.config, self.progress);
        let (encoder, encoder_key, judge) = (&self.encoder, &self.encoder_key, &self.judge);
        let cache = config.embedding_cache.clone();
        let (pairs_dir, pairs_key) = pairs;
        let name = method.name();
        let neg_key = key(&json!({
            "pairs": pairs_key, "data": self.data_key, "method": name,
            "n": method_settings(&config.negatives), "encoder": encoder_key,
            "llm": self.generator_key, "cross_encoder": config.cross_encoder, "seed": config.seed,
            "judge": judge.as_ref().filter(|_| method.needs_judge()).map(|j| (&j.0.template, &j.1)),
        }));
        let table = steps.step(&format!("negatives/{name}"), &neg_key, |dir| {
            negatives(
                config,
                method,
                pairs_dir,
                Models {
                    encoder,
                    generator: self.generator.as_ref(),
                    judge: judge.as_ref().map(|j| &j.0),
                },
                dir,
                progress,
            )
        })?;
        let table = PathBuf::from(table);

        let inspect_key = key(&json!({"negatives": neg_key, "encoder": encoder_key}));
        let stats: Statistics = steps.step(&format!("inspect/{name}"), &inspect_key, |dir| {
            let summary = inspect::run(
                &inspect::InspectConfig {
                    input: table.clone(),
                    format: None,
                    judge: Judge::BiEncoder {
                        encoder: encoder.clone(),
                    },
                    // The corpus, for separability: negatives against corpus passages.
                    data: Some(config.data.clone()),
                    output: dir.to_path_buf(),
                    max_queries: None,
                    bins: 40,
                    deltas: vec![0.0, 0.01, 0.05, 0.1],
                    ridge: 1e-4,
                    separability: Default::default(),
                    cache: cache.clone(),
                    threads: config.threads,
                    skip_invalid: false,
                },
                progress,
            )?;
            Ok(Statistics::from_report(&summary.report))
        })?;

        let train_key =
            key(&json!({"negatives": neg_key, "encoder": encoder_key, "train": config.train}));
        let model_dir = self.output.join("models").join(name);
        steps.step(&format!("models/{name}"), &train_key, |dir| {
            let t = &config.train;
            let summary = train::run(
                &TrainConfig {
                    model: PathBuf::from(&config.encoder),
                    train_file: table.clone(),
                    output: dir.to_path_buf(),
                    loss: if method == Method::Bm25Teacher {
                        "margin-mse".parse()?
                    } else {
                        t.loss.parse()?
                    },
                    batch_size: t.batch_size,
                    max_negatives: Some(config.negatives.num_negatives),
                    epochs: t.epochs,
                    max_steps: t.max_steps,
                    lr: t.lr,
                    max_length: t.max_length,
                    seed: config.seed,
                    threads: config.threads,
                    ..TrainConfig::default()
                },
                progress,
            )?;
            Ok(json!({"steps": summary.steps, "rows": summary.rows, "last_loss": summary.last_loss}))
        })?;

        let eval_key =
            key(&json!({"model": train_key, "data": self.data_key, "eval": config.eval}));
        let run_file = steps.step(&format!("runs/{name}"), &eval_key, |dir| {
            dense_run(config, &model_dir, dir, progress)
        })?;
        Ok(PipelineResult::new(
            name,
            Some(stats),
            evaluate(&self.test_qrels, Path::new(&run_file))?,
            judged,
        ))
    }

    /// The baselines: the base model and BM25, evaluated like the pipelines.
    fn baselines(
        &self,
        steps: &mut Steps,
        judged: &[String],
    ) -> Result<(PipelineResult, PipelineResult)> {
        let (config, progress, data) = (self.config, self.progress, &self.config.data);
        let base_key =
            key(&json!({"encoder": self.encoder_key, "data": self.data_key, "eval": config.eval}));
        let base_model = crate::encoder_spec::resolve_model(Path::new(&config.encoder))?;
        let base_run = steps.step("runs/base", &base_key, |dir| {
            dense_run(config, &base_model, dir, progress)
        })?;
        let bm25_key = key(&json!({"data": self.data_key, "eval": config.eval}));
        let bm25_run = steps.step("runs/bm25-retrieval", &bm25_key, |dir| {
            let file = dir.join("run.trec");
            search::run(
                &SearchConfig {
                    data: data.clone(),
                    split: config.test_split.clone(),
                    retriever: RetrieverKind::Bm25,
                    top_k: config.eval.top_k,
                    output: file.clone(),
                    bm25: Bm25Params::default(),
                    index: None,
                    encoder: None,
                    corpus_embeddings: None,
                    cache: None,
                    similarity: foil_core::Similarity::Cosine,
                    threads: config.threads,
                    skip_invalid: false,
                    tag: "bm25".into(),
                },
                progress,
            )?;
            Ok(file.display().to_string())
        })?;
        let base = PipelineResult::new(
            "base",
            None,
            evaluate(&self.test_qrels, Path::new(&base_run))?,
            judged,
        );
        let bm25 = PipelineResult::new(
            "bm25-retrieval",
            None,
            evaluate(&self.test_qrels, Path::new(&bm25_run))?,
            judged,
        );
        Ok((base, bm25))
    }
}

/// Runs the experiment described by `config` into `output`: the training pairs → one pipeline
/// per method → the baselines → the report and the manifest. Each step is skipped when its
/// folder records the same key.
pub fn run(
    config: &ExperimentConfig,
    output: &Path,
    progress: &dyn Progress,
) -> Result<ExperimentSummary> {
    let started = Instant::now();
    config.validate()?;
    // A second process writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(output)?;
    let mut steps = Steps {
        output,
        run: 0,
        reused: 0,
        seconds: Vec::new(),
    };
    let experiment = Experiment::new(config, output, progress)?;
    let pairs = experiment.pairs(&mut steps)?;
    let judged = judged_queries(&experiment.test_qrels)?;
    let mut results = Vec::new();
    for &method in &config.negatives.methods {
        results.push(experiment.pipeline(&mut steps, method, &pairs, &judged)?);
    }
    let (base, bm25) = experiment.baselines(&mut steps, &judged)?;

    let report_path = report::write(output, config, &base, &bm25, &mut results)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut manifest = Manifest::new(
        "experiment",
        serde_json::to_value(config).unwrap_or_default(),
    );
    manifest.add_input(&config.data.join("corpus.jsonl"))?;
    manifest.add_input(&experiment.test_qrels)?;
    manifest.outputs = vec![
        "report.md".into(),
        "report.html".into(),
        "report.json".into(),
    ];
    manifest.seed = Some(config.seed);
    manifest.counts.insert("steps_run".into(), steps.run as u64);
    manifest
        .counts
        .insert("steps_reused".into(), steps.reused as u64);
    manifest.timings.insert("seconds".into(), seconds);
    for (step, seconds) in &steps.seconds {
        manifest.timings.insert(format!("step.{step}"), *seconds);
    }
    manifest.write(&output.join("manifest.json"))?;
    let mut all = vec![base, bm25];
    all.extend(results);
    Ok(ExperimentSummary {
        results: all,
        steps_run: steps.run,
        steps_reused: steps.reused,
        report: report_path,
        seconds,
    })
}

/// The models a negatives method may use.
struct Models<'a> {
    encoder: &'a EncoderSpec,
    generator: Option<&'a GeneratorSpec>,
    judge: Option<&'a JudgeConfig>,
}

/// Gets the negatives of one method into `dir`; returns the n-tuple training table's path.
fn negatives(
    config: &ExperimentConfig,
    method: Method,
    pairs: &Path,
    models: Models<'_>,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<String> {
    let Models {
        encoder,
        generator,
        judge,
    } = models;
    let n = &config.negatives;
    let judge = || {
        judge.cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "the {} method needs `judge` or `llm`",
                method.name()
            ))
        })
    };
    let mine_judge = |teacher: bool| -> Result<MineJudge> {
        Ok(MineJudge {
            config: judge()?,
            rule: FalseNegativeRule::Relative {
                margin: n.judge_margin,
            },
            action: JudgeAction::Drop,
            reserve: n.judge_reserve,
            teacher,
        })
    };
    let pairs_source = PairsSource::Beir {
        dir: pairs.to_path_buf(),
        split: config.train_split.clone(),
    };
    let mine = |retriever: RetrieverKind,
                cross_encoder: Option<PathBuf>,
                judge: Option<MineJudge>,
                judge_rescore: Option<JudgeRescore>,
                format: Format|
     -> Result<()> {
        mine::run(
            &MineConfig {
                judge,
                judge_rescore,
                corpus: config.data.join("corpus.jsonl"),
                pairs: pairs_source.clone(),
                retriever,
                encoder: Some(encoder.clone()),
                corpus_embeddings: None,
                query_embeddings: None,
                bm25: Bm25Params::default(),
                cross_encoder,
                filters: mine_filters(config),
                formats: vec![format],
                parquet: false,
                output: dir.to_path_buf(),
                cache: config.embedding_cache.clone(),
                threads: config.threads,
                skip_invalid: false,
            },
            progress,
        )
        .map(|_| ())
    };
    let table = if method == Method::Bm25Teacher {
        "n-tuple-scores.jsonl"
    } else {
        "n-tuple.jsonl"
    };
    match method {
        Method::Bm25 => mine(RetrieverKind::Bm25, None, None, None, Format::NTuple)?,
        Method::Dense => mine(RetrieverKind::Dense, None, None, None, Format::NTuple)?,
        Method::CrossEncoder => mine(
            RetrieverKind::Bm25,
            Some(config.cross_encoder.clone().ok_or_else(|| {
                Error::Invalid(
                    "the cross-encoder method needs `cross_encoder` in the config".into(),
                )
            })?),
            None,
            None,
            Format::NTuple,
        )?,
        Method::Judge => mine(
            RetrieverKind::Bm25,
            None,
            None,
            Some(JudgeRescore {
                config: judge()?,
                depth: n.judge_depth,
            }),
            Format::NTuple,
        )?,
        Method::Bm25Judged => mine(
            RetrieverKind::Bm25,
            None,
            Some(mine_judge(false)?),
            None,
            Format::NTuple,
        )?,
        Method::Bm25Teacher => mine(
            RetrieverKind::Bm25,
            None,
            Some(mine_judge(true)?),
            None,
            Format::NTupleScores,
        )?,
        Method::Llm => {
            let generator = generator
                .ok_or_else(|| Error::Invalid("the llm method needs `llm` in the config".into()))?;
            llm_negatives(config, pairs, generator, dir, progress)?;
        }
    }
    Ok(dir.join(table).display().to_string())
}

/// The filters every mining method chooses its negatives with: the top `num_negatives` of
/// ranks `range_min..range_max` within the margin.
fn mine_filters(config: &ExperimentConfig) -> Filters {
    let n = &config.negatives;
    Filters {
        range_min: n.range_min,
        range_max: n.range_max,
        relative_margin: n.relative_margin,
        num_negatives: n.num_negatives,
        sampling: NegativeSampling::Top,
        seed: config.seed,
        ..Filters::default()
    }
}

/// The `llm` method: corpus-free negatives written by the LLM from the query alone
/// (describe, then write), `num_negatives` per query.
fn llm_negatives(
    config: &ExperimentConfig,
    pairs: &Path,
    generator: &GeneratorSpec,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let n = &config.negatives;
    generate::negatives::run(
        &generate::negatives::NegativesConfig {
            data: pairs.to_path_buf(),
            corpus: Some(config.data.join("corpus.jsonl")),
            split: config.train_split.clone(),
            output: dir.to_path_buf(),
            generator: generator.clone(),
            mode: generate::negatives::NegativeMode::QueryOnly,
            template: None,
            per_query: n.num_negatives,
            limit: None,
            seed: config.seed,
            sampling: Sampling {
                temperature: 0.7,
                top_p: 0.9,
                max_tokens: 160,
            },
            describe_sampling: Sampling {
                temperature: 0.7,
                top_p: 0.9,
                max_tokens: 64,
            },
            min_words: 8,
            max_copy_overlap: 0.6,
            formats: vec![Format::NTuple],
            parquet: false,
            num_negatives: Some(n.num_negatives),
            cache: None,
            batch_size: 16,
            skip_invalid: false,
        },
        progress,
    )?;
    Ok(())
}

/// What identifies an LLM's answers: a local model's SHA-256, a served model's URL and name.
fn llm_key(llm: &LlmSetting) -> Result<String> {
    match llm {
        LlmSetting::Local(model) => sha256_file(&generate::resolve_gguf(Path::new(model))?),
        LlmSetting::Served(s) => Ok(format!("{}|{}", s.base_url, s.model)),
    }
}

/// Ranks the test split's corpus with a bi-encoder folder; returns the run file's path.
fn dense_run(
    config: &ExperimentConfig,
    model: &Path,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<String> {
    let file = dir.join("run.trec");
    search::run(
        &SearchConfig {
            data: config.data.clone(),
            split: config.test_split.clone(),
            retriever: RetrieverKind::Dense,
            top_k: config.eval.top_k,
            output: file.clone(),
            bm25: Bm25Params::default(),
            index: None,
            encoder: Some(EncoderSpec::Local {
                model: model.to_path_buf(),
                options: Default::default(),
            }),
            corpus_embeddings: None,
            cache: config.embedding_cache.clone(),
            similarity: foil_core::Similarity::Cosine,
            threads: config.threads,
            skip_invalid: false,
            tag: "foil-experiment".into(),
        },
        progress,
    )?;
    Ok(file.display().to_string())
}

/// The queries with at least one relevant document in `qrels`, in id order: every report row
/// is averaged over them.
fn judged_queries(qrels: &Path) -> Result<Vec<String>> {
    let qrels = foil_core::Qrels::read(qrels, InputPolicy::default(), &mut SkipReport::default())?;
    let mut ids: Vec<String> = qrels
        .query_ids()
        .filter(|q| qrels.get(q).is_some_and(|j| j.values().any(|&g| g > 0)))
        .map(str::to_string)
        .collect();
    ids.sort();
    Ok(ids)
}

/// Evaluates a run file against qrels with trec_eval's measures.
fn evaluate(qrels: &Path, run: &Path) -> Result<Evaluation> {
    let mut skips = SkipReport::default();
    crate::eval::evaluate_files(
        qrels,
        run,
        &EvalConfig::default(),
        InputPolicy::default(),
        &mut skips,
    )
}

/// Spearman's rank correlation of two equally long series (average ranks for ties); `None`
/// with fewer than 3 points or a constant series.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 3 {
        return None;
    }
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
                j += 1;
            }
            let average = (i + j) as f64 / 2.0 + 1.0;
            for &o in &order[i..=j] {
                r[o] = average;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let mean = (a.len() as f64 + 1.0) / 2.0;
    let (mut num, mut da, mut db) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        num += (x - mean) * (y - mean);
        da += (x - mean).powi(2);
        db += (y - mean).powi(2);
    }
    (da > 0.0 && db > 0.0).then(|| num / (da * db).sqrt())
}

/// Per-pipeline values of a statistic, for the correlation table.
pub(crate) fn by_pipeline(
    results: &[PipelineResult],
    f: impl Fn(&Statistics) -> Option<f64>,
) -> BTreeMap<String, f64> {
    results
        .iter()
        .filter_map(|r| r.stats.as_ref().and_then(&f).map(|v| (r.name.clone(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_hand_computed_values() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // Ranks (1, 2, 3, 4) vs (2, 1, 4, 3): 1 − 6·4 / (4·15) = 0.6.
        let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[2.0, 1.0, 4.0, 3.0]).unwrap();
        assert!((r - 0.6).abs() < 1e-12, "{r}");
        // Ties get average ranks: (1.5, 1.5, 3) vs (1, 2, 3) → 0.866…
        let r = spearman(&[5.0, 5.0, 7.0], &[1.0, 2.0, 3.0]).unwrap();
        assert!((r - 0.75f64.sqrt()).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn a_methods_key_ignores_the_other_methods_but_not_its_filters() {
        let a = NegativesSection::default();
        let mut b = a.clone();
        b.methods = vec![Method::Bm25];
        assert_eq!(method_settings(&a), method_settings(&b));
        b.range_max += 1;
        assert_ne!(method_settings(&a), method_settings(&b));
    }

    #[test]
    fn a_step_with_an_unchanged_key_is_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut steps = Steps {
            output: dir.path(),
            run: 0,
            reused: 0,
            seconds: Vec::new(),
        };
        let mut calls = 0;
        let a: u32 = steps
            .step("s", "k1", |_| {
                calls += 1;
                Ok(7)
            })
            .unwrap();
        let b: u32 = steps
            .step("s", "k1", |_| {
                calls += 1;
                Ok(8)
            })
            .unwrap();
        assert_eq!((a, b, calls), (7, 7, 1));
        let c: u32 = steps
            .step("s", "k2", |_| {
                calls += 1;
                Ok(9)
            })
            .unwrap();
        assert_eq!((c, calls, steps.run, steps.reused), (9, 2, 2, 1));
        // Every step's time is recorded, a reused step's from the run that made it.
        let names: Vec<&str> = steps.seconds.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["s", "s", "s"]);
        assert_eq!(
            steps.seconds[1].1, steps.seconds[0].1,
            "read back from step.json"
        );
        // A failed step records nothing, so it runs again.
        let failed: Result<u32> = steps.step("t", "k", |_| Err(Error::Invalid("boom".into())));
        assert!(failed.is_err());
        let d: u32 = steps.step("t", "k", |_| Ok(1)).unwrap();
        assert_eq!(d, 1);
    }
}
