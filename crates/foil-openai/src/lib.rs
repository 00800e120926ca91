//! foil's OpenAI-compatible HTTP backends: `/v1/embeddings` as an `Encoder`, and
//! `/v1/chat/completions` as a `Generator` (with per-token log-probabilities where offered).
//!
//! [`client`] holds what every endpoint shares: the [`ApiConfig`] (server, model, the name of
//! the environment variable with the API key, timeout, retries, concurrency) and the
//! [`HttpClient`] that POSTs JSON with retries, backoff and a bound on requests in flight.
//! [`embeddings`] builds the [`OpenAiEncoder`] on it, [`chat`] the [`OpenAiChat`] generator.
//!
//! ```no_run
//! use foil_core::{Encoder, TextKind};
//! use foil_openai::{EmbeddingsConfig, OpenAiEncoder};
//!
//! // A text-embeddings-inference server serving E5; the key, if any, is in OPENAI_API_KEY.
//! let mut config = EmbeddingsConfig::new("http://localhost:8080", "intfloat/e5-base-v2");
//! config.query_prefix = "query: ".into();
//! config.passage_prefix = "passage: ".into();
//! let encoder = OpenAiEncoder::new(config)?; // one probe request learns the vector size
//! let vectors = encoder.encode(&["how do magnets work"], TextKind::Query)?;
//! assert_eq!(vectors.len(), 1);
//! # Ok::<(), foil_core::Error>(())
//! ```

pub mod chat;
pub mod client;
pub mod embeddings;
mod retry;

pub use chat::OpenAiChat;
pub use client::{ApiConfig, ApiKey, HttpClient, DEFAULT_API_KEY_ENV};
pub use embeddings::{EmbeddingsConfig, OpenAiEncoder};
