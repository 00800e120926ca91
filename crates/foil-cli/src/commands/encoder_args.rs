//! The flags that choose an encoder, shared by every command that embeds text.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use foil::encoder_spec::EncoderSpec;
use foil_candle::config::Pooling;
use foil_candle::{EncoderOptions, Precision};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PoolingArg {
    Mean,
    Cls,
    /// The last real token (decoder embedders such as Qwen3-Embedding).
    #[value(name = "lasttoken")]
    LastToken,
}

#[derive(Debug, Args)]
pub struct EncoderArgs {
    /// The bi-encoder: a Hugging Face / sentence-transformers folder, or the name of a model
    /// installed by scripts/fetch-models.sh (e.g. all-MiniLM-L6-v2); with --encoder-url, the
    /// model name the server knows.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Use an OpenAI-compatible embeddings server at this base URL (TEI, vLLM, llama.cpp, hosted).
    #[arg(long, value_name = "URL")]
    pub encoder_url: Option<String>,
    /// The environment variable that holds the server's API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Requests in flight at once to the embeddings server.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Texts per forward pass (local) or per request (server).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Longest input in tokens (default: the model's max_seq_length).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Override the model's pooling.
    #[arg(long, value_enum)]
    pub pooling: Option<PoolingArg>,
    /// Prepended to every query (e.g. "query: " for E5).
    #[arg(long)]
    pub query_prompt: Option<String>,
    /// Prepended to every passage (e.g. "passage: " for E5).
    #[arg(long)]
    pub passage_prompt: Option<String>,
    /// cpu (fused CPU kernels), cuda or cuda:N (needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The matrix products' arithmetic: f32, or bf16 on CPUs with AMX (Sapphire Rapids and
    /// later) or AVX-512 BF16 (AMD Zen 4 and later); elsewhere f32, with a warning. bf16
    /// vectors differ slightly from f32 ones and are cached apart from them.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PrecisionArg {
    F32,
    Bf16,
}

impl EncoderArgs {
    /// The encoder these flags describe, if a model was given.
    pub fn spec(&self) -> Option<EncoderSpec> {
        let model = self.model.clone()?;
        Some(match &self.encoder_url {
            Some(url) => EncoderSpec::Openai {
                base_url: url.clone(),
                model: model.display().to_string(),
                api_key_env: self.api_key_env.clone(),
                batch_size: self.batch_size,
                concurrency: self.concurrency,
                dimensions: None,
                query_prompt: self.query_prompt.clone().unwrap_or_default(),
                passage_prompt: self.passage_prompt.clone().unwrap_or_default(),
            },
            None => EncoderSpec::Local {
                model,
                options: EncoderOptions {
                    batch_size: Some(self.batch_size),
                    max_length: self.max_length,
                    pooling: self.pooling.map(|p| match p {
                        PoolingArg::Mean => Pooling::Mean,
                        PoolingArg::Cls => Pooling::Cls,
                        PoolingArg::LastToken => Pooling::LastToken,
                    }),
                    normalize: None,
                    query_prompt: self.query_prompt.clone(),
                    passage_prompt: self.passage_prompt.clone(),
                    device: Some(self.device.clone()),
                    precision: Some(match self.precision {
                        PrecisionArg::F32 => Precision::F32,
                        PrecisionArg::Bf16 => Precision::Bf16,
                    }),
                },
            },
        })
    }
}

/// The embedding cache flags, shared by every command that embeds text.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Do not read or write the embedding cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The embedding cache folder (default: $FOIL_CACHE/embeddings or ~/.cache/foil/embeddings).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

impl CacheArgs {
    /// The cache folder, or `None` with `--no-cache`.
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            Some(
                self.cache_dir
                    .clone()
                    .unwrap_or_else(foil::embedding_cache::default_cache_dir),
            )
        }
    }
}
