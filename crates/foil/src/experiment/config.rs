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
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Llm => "llm",
            Method::Bm25 => "bm25",
            Method::Dense => "dense",
            Method::CrossEncoder => "cross-encoder",
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
    /// The local GGUF model for generated queries and LLM negatives (`smollm2`, `qwen` or a path).
    #[serde(default)]
    pub llm: Option<String>,
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
    pub temperature: f32,
    /// The source passage must be in BM25's top k for the query.
    pub round_trip_k: usize,
}

impl Default for QueriesSection {
    fn default() -> Self {
        QueriesSection {
            generate: false,
            passages: 100,
            per_passage: 1,
            template: "few-shot".into(),
            examples: None,
            max_passage_words: None,
            keep_logprob: None,
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
}

impl Default for NegativesSection {
    fn default() -> Self {
        NegativesSection {
            methods: vec![Method::Llm, Method::Bm25, Method::Dense],
            num_negatives: 1,
            range_min: 0,
            range_max: 30,
            relative_margin: None,
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
        TrainSection {
            loss: "infonce".into(),
            batch_size: 16,
            epochs: 1,
            max_steps: None,
            max_length: Some(128),
            lr: 2e-5,
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
fn embedding_cache() -> Option<PathBuf> {
    Some(crate::cache::default_cache_dir())
}

impl ExperimentConfig {
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
                "generated queries and the llm method need `llm` (e.g. llm = \"smollm2\")".into(),
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
        std::fs::write(&path, "data = \"d\"\n").unwrap();
        let err = ExperimentConfig::read(&path)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("llm"), "{err}");
    }
}
