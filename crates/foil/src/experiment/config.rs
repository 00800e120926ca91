//! `exp.toml`: what an experiment compares, with defaults for everything but the data.

use std::path::{Path, PathBuf};

use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// A way of getting hard negatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Written by the LLM from the query alone (corpus-free, two-stage).
    Llm,
    /// Mined with BM25.
    Bm25,
    /// Mined with the base bi-encoder.
    Dense,
    /// BM25 candidates rescored by the cross-encoder.
    CrossEncoder,
    /// BM25 candidates rescored by the LLM judge (the cross-encoder row where none exists).
    Judge,
    /// Mined with BM25, false negatives dropped by the LLM judge.
    Bm25Judged,
    /// Mined with BM25, false negatives dropped by the LLM judge, whose P(relevant) are the
    /// teacher scores of a MarginMSE loss (GPL's pseudo-labels).
    Bm25Teacher,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Llm => "llm",
            Method::Bm25 => "bm25",
            Method::Dense => "dense",
            Method::CrossEncoder => "cross-encoder",
            Method::Judge => "judge",
            Method::Bm25Judged => "bm25-judged",
            Method::Bm25Teacher => "bm25-teacher",
        }
    }

    /// Whether the method needs the LLM judge.
    pub fn needs_judge(self) -> bool {
        matches!(
            self,
            Method::Judge | Method::Bm25Judged | Method::Bm25Teacher
        )
    }
}

/// An LLM: a local GGUF model (`llm = "qwen"`, a name or a path), or an OpenAI-compatible
/// server (`[llm]` with `base_url`, `model`, and optionally `api_key_env`, `concurrency`,
/// `timeout_secs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LlmSetting {
    Local(String),
    Served(ServedLlm),
}

/// An OpenAI-compatible chat server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServedLlm {
    pub base_url: String,
    pub model: String,
    #[serde(default = "api_key_env")]
    pub api_key_env: String,
    #[serde(default = "concurrency")]
    pub concurrency: usize,
    #[serde(default = "timeout_secs")]
    pub timeout_secs: f64,
}

fn api_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn concurrency() -> usize {
    4
}
fn timeout_secs() -> f64 {
    120.0
}

impl LlmSetting {
    /// The generator this setting names; a local model runs on `threads`.
    pub fn spec(&self, threads: Option<usize>) -> crate::generate::GeneratorSpec {
        match self {
            LlmSetting::Local(model) => crate::generate::GeneratorSpec::Local {
                model: PathBuf::from(model),
                threads,
                max_batch: 16,
            },
            LlmSetting::Served(s) => crate::generate::GeneratorSpec::Openai {
                base_url: s.base_url.clone(),
                model: s.model.clone(),
                api_key_env: s.api_key_env.clone(),
                concurrency: s.concurrency,
                timeout_secs: s.timeout_secs,
                max_retries: 5,
            },
        }
    }
}

/// The whole experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// A BEIR folder (corpus, queries, qrels); relative paths are relative to the config file.
    pub data: PathBuf,
    #[serde(default = "train_split")]
    pub train_split: String,
    #[serde(default = "test_split")]
    pub test_split: String,
    /// The bi-encoder every pipeline fine-tunes (a name under the models folder or a path).
    #[serde(default = "encoder")]
    pub encoder: String,
    /// The LLM that writes queries and corpus-free negatives: an installed model (`qwen`,
    /// `smollm2`), a GGUF path, or a served model (`[llm]` with `base_url` and `model`).
    #[serde(default = "llm")]
    pub llm: Option<LlmSetting>,
    /// The LLM relevance judge of the `judge`, `bm25-judged` and `bm25-teacher` methods
    /// (default: `llm`).
    #[serde(default)]
    pub judge: Option<LlmSetting>,
    /// The cross-encoder folder of the `cross-encoder` method.
    #[serde(default)]
    pub cross_encoder: Option<PathBuf>,
    #[serde(default = "seed")]
    pub seed: u64,
    #[serde(default)]
    pub threads: Option<usize>,
    /// The embedding cache (default foil's; set to "" for none).
    #[serde(default = "embedding_cache")]
    pub embedding_cache: Option<PathBuf>,
    #[serde(default)]
    pub queries: QueriesSection,
    #[serde(default)]
    pub negatives: NegativesSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub eval: EvalSection,
}

/// Where the training queries come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueriesSection {
    /// Generate queries with the LLM instead of using the train split's queries.
    pub generate: bool,
    /// Passages sampled for generation.
    pub passages: usize,
    pub per_passage: usize,
    /// A built-in query template (`few-shot`, `few-shot-question`, `few-shot-keywords`,
    /// `few-shot-claim`, `zero-shot`) or a template file.
    pub template: String,
    /// (passage, query) examples from the target corpus, replacing the template's.
    pub examples: Option<PathBuf>,
    /// Passages are cut to this many words in the prompt.
    pub max_passage_words: Option<usize>,
    /// Keep this share of the text-filtered queries with the highest mean log-probability.
    pub keep_logprob: Option<f32>,
    /// Longer answers are not queries.
    pub max_query_words: usize,
    pub temperature: f32,
    /// The source passage must be in BM25's top k for the query.
    pub round_trip_k: usize,
}

impl Default for QueriesSection {
    fn default() -> Self {
        QueriesSection {
            generate: false,
            passages: 600,
            per_passage: 1,
            template: "few-shot".into(),
            examples: None,
            max_passage_words: Some(150),
            keep_logprob: None,
            max_query_words: 24,
            temperature: 0.7,
            round_trip_k: 10,
        }
    }
}

/// How negatives are got and filtered (the same for every mining method).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NegativesSection {
    pub methods: Vec<Method>,
    pub num_negatives: usize,
    pub range_min: usize,
    pub range_max: usize,
    pub relative_margin: Option<f32>,
    /// Candidates the judge rescores per query (`judge` method).
    pub judge_depth: usize,
    /// A negative is a false negative when the judge's P(relevant) is at least the
    /// positive's minus this (`bm25-judged`, `bm25-teacher`).
    pub judge_margin: f32,
    /// Candidates chosen beyond `num_negatives` to replace false negatives.
    pub judge_reserve: usize,
    /// Passages are cut to this many words in the judge's prompt.
    pub judge_max_passage_words: usize,
    /// The judge's template (default: the built-in `yes-no`).
    pub judge_template: Option<String>,
}

impl Default for NegativesSection {
    fn default() -> Self {
        NegativesSection {
            methods: vec![Method::Llm, Method::Bm25, Method::Dense],
            num_negatives: 1,
            range_min: 0,
            range_max: 30,
            relative_margin: None,
            judge_depth: 10,
            judge_margin: 0.0,
            judge_reserve: 2,
            judge_max_passage_words: 200,
            judge_template: None,
        }
    }
}

/// The training budget, the same for every pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub loss: String,
    pub batch_size: usize,
    pub epochs: usize,
    pub max_steps: Option<u64>,
    pub max_length: Option<usize>,
    pub lr: f64,
}

impl Default for TrainSection {
    fn default() -> Self {
        let train = crate::train::TrainConfig::default();
        TrainSection {
            loss: "infonce".into(),
            batch_size: train.batch_size,
            epochs: train.epochs,
            max_steps: None,
            max_length: Some(128),
            lr: train.lr,
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Results per query in each run (≥ 100 for Recall@100).
    pub top_k: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection { top_k: 100 }
    }
}

fn train_split() -> String {
    "train".into()
}
fn test_split() -> String {
    "test".into()
}
fn encoder() -> String {
    "all-MiniLM-L6-v2".into()
}
fn seed() -> u64 {
    42
}
fn llm() -> Option<LlmSetting> {
    Some(LlmSetting::Local(DEFAULT_LLM.into()))
}

/// The LLM the experiment uses unless told otherwise.
pub const DEFAULT_LLM: &str = "qwen";
fn embedding_cache() -> Option<PathBuf> {
    Some(crate::embedding_cache::default_cache_dir())
}

impl ExperimentConfig {
    /// The judge's LLM: `judge`, else `llm`.
    pub fn judge_llm(&self) -> Option<&LlmSetting> {
        self.judge.as_ref().or(self.llm.as_ref())
    }

    /// Reads a TOML file; `data` (and a relative `cross_encoder`) are taken relative to the
    /// file's folder.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: ExperimentConfig =
            toml::from_str(&text).map_err(|e| Error::format(path, e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.data.is_relative() {
            // `components` drops the `.` of `data = "."`.
            config.data = base.join(&config.data).components().collect();
        }
        if let Some(examples) = &config.queries.examples {
            if examples.is_relative() {
                config.queries.examples = Some(base.join(examples));
            }
        }
        if let Some(ce) = &config.cross_encoder {
            if ce.is_relative() && base.join(ce).exists() {
                config.cross_encoder = Some(base.join(ce));
            }
        }
        if config
            .embedding_cache
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            config.embedding_cache = None;
        }
        Ok(config)
    }

    /// Checks that the methods asked for have what they need.
    pub fn validate(&self) -> Result<()> {
        let methods = &self.negatives.methods;
        if methods.is_empty() {
            return Err(Error::Invalid("negatives.methods is empty".into()));
        }
        if (self.queries.generate || methods.contains(&Method::Llm)) && self.llm.is_none() {
            return Err(Error::Invalid(
                "generated queries and the llm method need `llm` (e.g. llm = \"qwen\")".into(),
            ));
        }
        if methods.iter().any(|m| m.needs_judge()) && self.judge_llm().is_none() {
            return Err(Error::Invalid(
                "the judge, bm25-judged and bm25-teacher methods need `judge` or `llm`".into(),
            ));
        }
        if methods.contains(&Method::CrossEncoder) && self.cross_encoder.is_none() {
            return Err(Error::Invalid(
                "the cross-encoder method needs `cross_encoder` (a BertForSequenceClassification folder)".into(),
            ));
        }
        if self.negatives.num_negatives == 0 || self.train.batch_size < 2 {
            return Err(Error::Invalid(
                "negatives.num_negatives must be ≥ 1 and train.batch_size ≥ 2".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if !methods.iter().all(|m| seen.insert(*m)) {
            return Err(Error::Invalid(
                "negatives.methods lists a method twice".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_everything_but_the_data_and_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.toml");
        std::fs::write(
            &path,
            "data = \"scifact\"\nllm = \"smollm2\"\n[train]\nmax_steps = 3\n",
        )
        .unwrap();
        let c = ExperimentConfig::read(&path).unwrap();
        assert_eq!(c.data, dir.path().join("scifact"));
        assert_eq!(
            c.negatives.methods,
            [Method::Llm, Method::Bm25, Method::Dense]
        );
        assert_eq!((c.train.max_steps, c.train.batch_size), (Some(3), 16));
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_missing_models_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, "data = \"d\"\n[train]\nbatch = 3\n").unwrap();
        let err = ExperimentConfig::read(&path).unwrap_err().to_string();
        assert!(err.contains("exp.toml") && err.contains("batch"), "{err}");
        std::fs::write(
            &path,
            "data = \"d\"\n[negatives]\nmethods = [\"cross-encoder\"]\n",
        )
        .unwrap();
        let err = ExperimentConfig::read(&path)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("cross_encoder"), "{err}");
    }

    #[test]
    fn the_llm_is_installed_by_default_or_a_served_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, "data = \"d\"\n[queries]\ngenerate = true\n").unwrap();
        let c = ExperimentConfig::read(&path).unwrap();
        assert_eq!(c.llm, Some(LlmSetting::Local(DEFAULT_LLM.into())));
        c.validate().unwrap();
        std::fs::write(
            &path,
            "data = \"d\"\n[llm]\nbase_url = \"http://127.0.0.1:8000/v1\"\nmodel = \"m\"\nconcurrency = 8\n\
             [judge]\nbase_url = \"http://127.0.0.1:8001\"\nmodel = \"j\"\n[negatives]\nmethods = [\"bm25-judged\"]\n",
        )
        .unwrap();
        let c = ExperimentConfig::read(&path).unwrap();
        let Some(LlmSetting::Served(s)) = &c.llm else {
            panic!("{:?}", c.llm)
        };
        assert_eq!(
            (s.model.as_str(), s.concurrency, s.api_key_env.as_str()),
            ("m", 8, "OPENAI_API_KEY")
        );
        let Some(LlmSetting::Served(j)) = c.judge_llm() else {
            panic!()
        };
        assert_eq!(j.model, "j");
        c.validate().unwrap();
        std::fs::write(&path, "data = \"d\"\n[llm]\nmodel = \"m\"\n").unwrap();
        assert!(
            ExperimentConfig::read(&path).is_err(),
            "a served llm needs base_url"
        );
    }
}
