//! foil's dense retrieval: the on-disk embeddings store and exact top-k search by blocked matrix
//! multiply.
//!
//! - [`vectors`]: [`EmbeddingsView`] (a borrowed matrix), the reference inner product [`dot`]
//!   and [`normalize_rows`] (cosine similarity is the inner product of normalized rows).
//! - [`topk`]: [`exact_top_k`], exact inner-product search, deterministic whatever the threads
//!   and block sizes.
//! - [`provenance`]: what made a store's vectors (encoder, text kind, input), checked before
//!   they are used.
//! - [`store`]: the on-disk embeddings folder (`header.json`, `ids.jsonl`, `vectors.f32`),
//!   appended chunk by chunk so that a killed encoding job resumes.

pub mod provenance;
pub mod store;
pub mod topk;
pub mod vectors;

pub use provenance::Provenance;
pub use store::{EmbeddingsReader, EmbeddingsWriter, StoreHeader, StoreSpec, StoredEmbeddings};
pub use topk::{exact_top_k, exact_top_k_view, Threading, TopKOptions};
pub use vectors::{dot, normalize_rows, normalize_rows_in, EmbeddingsView};
