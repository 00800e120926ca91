//! foil-core: the data types, file formats, errors, metrics and backend traits that every
//! foil stage shares.
//!
//! Each on-disk format is owned by one module: [`beir`] (corpus, queries, qrels), [`trec`]
//! (run files), [`manifest`] (the `manifest.json` every output gets). Reading bad input either
//! fails with an error that names `file:line` or, when the caller asked for it, skips the
//! record and counts it in a [`SkipReport`]. [`metrics`] computes trec_eval's measures.

pub mod beir;
pub mod encoder;
pub mod error;
pub mod fsutil;
pub mod generator;
pub mod lines;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod process;
pub mod progress;
pub mod reranker;
pub mod retriever;
pub mod rng;
pub mod skip;
pub mod trec;

pub use beir::{Document, Qrels, Query};
pub use encoder::{Embeddings, Encoder, Similarity, TextKind};
pub use error::{Error, Result};
pub use generator::{
    ChatMessage, FinishReason, GenerateError, Generation, GenerationRequest, Generator, Role,
    SamplingParams, TokenLogprob,
};
pub use progress::{NoProgress, Progress};
pub use reranker::Reranker;
pub use retriever::{reciprocal_rank_fusion, Fused, Hit, Retriever};
pub use skip::{InputPolicy, SkipReason, SkipReport};
pub use trec::Run;
