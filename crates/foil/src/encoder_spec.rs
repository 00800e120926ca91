//! Choosing and loading an [`Encoder`]: a local BERT folder run by foil, or an
//! OpenAI-compatible `/v1/embeddings` server.

use std::path::{Path, PathBuf};

use foil_candle::{BertEncoder, EncoderOptions};
use foil_core::fsutil::models_dir;
use foil_core::{Encoder, Error, Result};
use foil_openai::{EmbeddingsConfig, OpenAiEncoder};
use serde::Serialize;

/// Which encoder to use and how.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum EncoderSpec {
    /// A Hugging Face / sentence-transformers BERT folder.
    Local {
        model: PathBuf,
        options: EncoderOptions,
    },
    /// An OpenAI-compatible embeddings server (TEI, vLLM, llama.cpp, hosted APIs).
    Openai {
        base_url: String,
        model: String,
        /// The environment variable holding the API key (the key itself is never recorded).
        api_key_env: String,
        batch_size: usize,
        concurrency: usize,
        dimensions: Option<usize>,
        query_prompt: String,
        passage_prompt: String,
    },
}

/// A model given by path, or by the name of a folder under [`models_dir`].
pub fn resolve_model(model: &Path) -> Result<PathBuf> {
    if model.is_dir() {
        return Ok(model.to_path_buf());
    }
    let installed = models_dir().join(model);
    if model.components().count() == 1 && installed.is_dir() {
        return Ok(installed);
    }
    Err(Error::Invalid(format!(
        "model {} not found (neither a folder nor installed in {}; scripts/fetch-models.sh installs the default models)",
        model.display(),
        models_dir().display()
    )))
}

impl EncoderSpec {
    /// Loads the encoder.
    pub fn load(&self) -> Result<Box<dyn Encoder>> {
        match self {
            EncoderSpec::Local { model, options } => {
                let dir = resolve_model(model)?;
                Ok(Box::new(BertEncoder::load(&dir, options)?))
            }
            EncoderSpec::Openai {
                base_url,
                model,
                api_key_env,
                batch_size,
                concurrency,
                dimensions,
                query_prompt,
                passage_prompt,
            } => {
                let mut config = EmbeddingsConfig::new(base_url.clone(), model.clone());
                config.api.api_key_env = api_key_env.clone();
                config.api.concurrency = *concurrency;
                config.batch_size = *batch_size;
                config.dimensions = *dimensions;
                config.query_prefix = query_prompt.clone();
                config.passage_prefix = passage_prompt.clone();
                Ok(Box::new(OpenAiEncoder::new(config)?))
            }
        }
    }
}
