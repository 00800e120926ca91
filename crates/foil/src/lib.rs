//! foil's pipeline stages. Each stage module takes its configuration and paths as arguments,
//! reads files, does one job, and writes files together with a `manifest.json`; the `foil`
//! binary only parses flags and calls these `run` functions.
//!
//! - [`search`]: rank a corpus for the judged queries of a BEIR split and write a TREC run.
//! - [`demo`]: the built-in dataset the README's main command runs on.
//! - [`encode`]: texts → an embeddings store, through the embedding [`cache`], with any
//!   encoder of [`encoder_spec`] (a local BERT folder or an OpenAI-compatible server).
//! - [`mine`]: hard negatives for (query, positive) pairs, with sentence-transformers'
//!   filters and formats; pairs from qrels or from tables ([`table`]: JSON Lines and Parquet).
//! - [`generate`]: synthetic queries for a corpus and corpus-free hard negatives, from an LLM
//!   (a local GGUF model or an OpenAI-compatible chat server), resumable through a cache.
//! - [`formats`]: every training-data format, named, detected, read and written in one
//!   place (JSON Lines and Parquet).
//! - [`inspect`]: judge a training file's negatives (hardness, safety, AUC, diversity,
//!   a reconstructed ECI) and write a report with charts.
//! - [`train`]: fine-tune a bi-encoder on a training table with a contrastive loss
//!   (GradCache for large batches), resumable, saved as a sentence-transformers folder.
//! - [`experiment`]: the paper's comparison in one resumable command — negatives by each
//!   method → inspect → train → evaluate → a report.
//! - [`rerank`]: rescore the top of a run with a cross-encoder.
//! - [`eval`]: evaluate runs against qrels as trec_eval does; compare two runs with paired tests.

pub mod demo;
pub mod embedding_cache;
pub mod encode;
pub mod encoder_spec;
pub mod eval;
pub mod experiment;
pub mod formats;
pub mod generate;
pub mod inspect;
pub mod judge;
pub mod mine;
pub mod rerank;
pub mod retrievers;
pub mod search;
pub mod table;
pub mod threads;
pub mod train;

pub use foil_core::{Error, Result};
