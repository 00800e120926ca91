//! foil's BM25 retriever: an analyzer equal to Anserini's default English one, an in-memory
//! inverted index scored with Lucene's BM25 formula, multi-threaded batch search, and a
//! versioned on-disk index format.

pub mod analyzer;
pub mod index;
pub mod norms;
pub mod porter;
pub mod search;
pub mod storage;

pub use analyzer::Analyzer;
pub use index::{Bm25Index, Bm25Params};
pub use search::Bm25Searcher;
pub use storage::{IndexHeader, FORMAT_VERSION};
