//! The dense retriever: passage vectors in memory, queries encoded through the embedding
//! cache, exact top-k by inner product. With [`foil_bm25::Bm25Searcher`] and
//! [`foil_core::Fused`] it is one of the [`Retriever`]s `foil search` builds.

use std::path::PathBuf;

use foil_core::{Embeddings, Encoder, Hit, Progress, Result, Retriever, TextKind};
use foil_dense::{exact_top_k, normalize_rows, TopKOptions};

use crate::encode::encode_all;

/// A corpus as vectors, searched with the encoder that made them.
pub struct DenseRetriever {
    ids: Vec<String>,
    vectors: Embeddings,
    encoder: Box<dyn Encoder>,
    /// Cosine similarity: query vectors are L2-normalized (the passage vectors already are).
    normalize_queries: bool,
    /// The embedding cache folder of query vectors; `None` disables it.
    cache: Option<PathBuf>,
}

impl DenseRetriever {
    /// A retriever over `vectors` (row `i` is document `ids[i]`); with `cosine`, both sides are
    /// L2-normalized.
    pub fn new(
        ids: Vec<String>,
        mut vectors: Embeddings,
        encoder: Box<dyn Encoder>,
        cosine: bool,
        cache: Option<PathBuf>,
    ) -> Self {
        if cosine {
            normalize_rows(&mut vectors);
        }
        DenseRetriever {
            ids,
            vectors,
            encoder,
            normalize_queries: cosine,
            cache,
        }
    }
}

impl Retriever for DenseRetriever {
    fn name(&self) -> &str {
        "dense"
    }

    fn num_docs(&self) -> usize {
        self.ids.len()
    }

    fn doc_id(&self, doc: u32) -> &str {
        &self.ids[doc as usize]
    }

    fn search_batch(
        &self,
        queries: &[&str],
        k: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<Hit>>> {
        let mut q = encode_all(
            self.encoder.as_ref(),
            queries,
            TextKind::Query,
            self.cache.as_deref(),
            progress,
        )?;
        if self.normalize_queries {
            normalize_rows(&mut q);
        }
        Ok(exact_top_k(&q, &self.vectors, k, &TopKOptions::default()))
    }
}
