//! The [`Retriever`] trait: anything that ranks a corpus for a batch of queries.

use crate::error::Result;

/// A retrieved document: its position in the corpus the retriever was built from, and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub doc: u32,
    pub score: f32,
}

/// Ranks the documents of a fixed corpus for batches of queries. Implementations decide how
/// to use threads; results come back in query order, each best first.
pub trait Retriever: Send + Sync {
    /// A short name for runs and manifests (`bm25`, `dense`).
    fn name(&self) -> &str;
    /// Number of documents in the corpus.
    fn num_docs(&self) -> usize;
    /// The id of document `doc`.
    fn doc_id(&self, doc: u32) -> &str;
    /// The top `k` documents for each query, best first.
    fn search_batch(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>>;
}
