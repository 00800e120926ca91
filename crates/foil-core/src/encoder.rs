//! The [`Encoder`] trait: anything that turns texts into dense vectors (a BERT model run by
//! foil, an OpenAI-compatible `/v1/embeddings` server, a deterministic fake in tests).

use crate::error::Result;

/// Whether a text is a query or a passage: encoders that use prompts (E5's `query: ` and
/// `passage: `) prepend a different one to each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum TextKind {
    Query,
    Passage,
}

/// How a (query, passage) pair of vectors is scored: by retrieval, mining and the training losses.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Similarity {
    /// Cosine similarity: both sides L2-normalized, then the inner product.
    #[default]
    Cosine,
    /// The raw inner product.
    Dot,
}

/// A batch of vectors, row-major: row `i` is `data[i * dim..(i + 1) * dim]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Embeddings {
    /// An empty batch of `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            data: Vec::new(),
        }
    }

    /// Wraps row-major data; `data.len()` must be a multiple of `dim`.
    pub fn from_vec(dim: usize, data: Vec<f32>) -> Self {
        assert!(
            dim > 0 && data.len().is_multiple_of(dim),
            "data does not hold whole rows of {dim}"
        );
        Self { dim, data }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Vector `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Iterates over the vectors.
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.dim.max(1))
    }

    /// Appends the vectors of `other` (same dimension).
    pub fn extend(&mut self, other: &Embeddings) {
        assert_eq!(self.dim, other.dim, "dimension mismatch");
        self.data.extend_from_slice(&other.data);
    }
}

/// Encodes batches of texts into vectors.
///
/// Implementations handle batching, threads and retries behind this call; the result has one
/// row per input text, in input order.
pub trait Encoder: Send + Sync {
    /// A short name for logs and manifests.
    fn name(&self) -> &str;
    /// The dimension of the vectors.
    fn dim(&self) -> usize;
    /// Everything that determines the vectors of a given text (weights hash, tokenizer,
    /// pooling, normalization, prompts, maximum length), as a string; caches key on it.
    fn fingerprint(&self) -> String;
    /// Encodes `texts` as queries or passages.
    fn encode(&self, texts: &[&str], kind: TextKind) -> Result<Embeddings>;
}
