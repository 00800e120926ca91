//! The [`Reranker`] trait: anything that scores (query, passage) pairs jointly — a
//! cross-encoder run by foil, an LLM judge, a deterministic fake in tests.

use crate::error::Result;

/// Scores (query, passage) pairs; higher means more relevant. Implementations batch and use
/// threads behind this call; the result has one score per pair, in order.
pub trait Reranker: Send + Sync {
    /// A short name for logs and manifests.
    fn name(&self) -> &str;
    /// Everything that determines the scores (weights hash, tokenizer, activation, maximum
    /// length), for caches and manifests.
    fn fingerprint(&self) -> String;
    /// Scores each pair.
    fn score(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>>;
}
