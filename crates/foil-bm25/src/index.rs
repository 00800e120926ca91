//! [`Bm25Index`]: an in-memory inverted index over a corpus, scored with Lucene's BM25.
//!
//! Postings are stored column-wise (compressed sparse rows): for term `t`, documents
//! `docs[offsets[t]..offsets[t + 1]]` with frequencies `freqs[..]` in the same range, in
//! ascending document order. The index keeps document ids and lengths but no text, so building
//! it from a streamed corpus holds one chunk of documents in memory at a time.
//!
//! Scoring is Lucene's (and so Anserini's) BM25, without the constant (k1 + 1) factor Lucene
//! dropped in version 8:
//!
//! ```text
//! score(q, d) = Σ_{t ∈ q} idf(t) · f(t, d) / (f(t, d) + k1 · (1 − b + b · |d| / avgdl))
//! idf(t)      = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))
//! ```
//!
//! where |d| is the document length after Lucene's one-byte norm encoding ([`crate::norms`]),
//! avgdl the exact mean length, and a query term that occurs twice counts twice (Anserini boosts
//! a repeated term by its count).

use std::collections::HashMap;

use foil_core::{Document, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analyzer::Analyzer;
use crate::norms::encode_length;

/// BM25's free parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bm25Params {
    /// Term-frequency saturation.
    pub k1: f32,
    /// Length normalization.
    pub b: f32,
}

impl Default for Bm25Params {
    /// Anserini's defaults: k1 = 0.9, b = 0.4.
    fn default() -> Self {
        Self { k1: 0.9, b: 0.4 }
    }
}

/// An inverted index over a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct Bm25Index {
    pub(crate) analyzer: Analyzer,
    pub(crate) doc_ids: Vec<String>,
    /// Exact token counts per document.
    pub(crate) doc_lengths: Vec<u32>,
    pub(crate) terms: HashMap<String, u32>,
    /// `offsets[t]..offsets[t + 1]` is term `t`'s range in `docs` and `freqs`.
    pub(crate) offsets: Vec<u64>,
    pub(crate) docs: Vec<u32>,
    pub(crate) freqs: Vec<u32>,
}

/// Number of documents analyzed in parallel before their postings are merged.
const CHUNK: usize = 2048;

impl Bm25Index {
    /// Indexes `documents` (in order: document `i` of the index is the `i`-th document given),
    /// calling `progress` with the number of documents indexed so far after each chunk.
    pub fn build(
        analyzer: Analyzer,
        documents: impl Iterator<Item = Result<Document>>,
        progress: &dyn Fn(usize),
    ) -> Result<Self> {
        let mut builder = Builder::new(analyzer);
        let mut chunk = Vec::with_capacity(CHUNK);
        for doc in documents {
            chunk.push(doc?);
            if chunk.len() == CHUNK {
                builder.add_chunk(std::mem::take(&mut chunk));
                progress(builder.doc_ids.len());
            }
        }
        builder.add_chunk(chunk);
        progress(builder.doc_ids.len());
        Ok(builder.finish())
    }

    /// Number of indexed documents.
    pub fn num_docs(&self) -> usize {
        self.doc_ids.len()
    }

    /// Number of distinct terms.
    pub fn num_terms(&self) -> usize {
        self.terms.len()
    }

    /// Number of (term, document) postings.
    pub fn num_postings(&self) -> usize {
        self.docs.len()
    }

    /// The id of document `doc`.
    pub fn doc_id(&self, doc: u32) -> &str {
        &self.doc_ids[doc as usize]
    }

    /// The analyzer the index was built with; queries must use the same one.
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// Mean document length in tokens (Lucene's `sumTotalTermFreq / docCount`).
    pub fn average_length(&self) -> f32 {
        if self.doc_lengths.is_empty() {
            return 0.0;
        }
        let total: u64 = self.doc_lengths.iter().map(|&l| l as u64).sum();
        (total as f64 / self.doc_lengths.len() as f64) as f32
    }

    /// The postings of `term` (an analyzed token): documents and frequencies.
    pub fn postings(&self, term: &str) -> Option<(&[u32], &[u32])> {
        let &t = self.terms.get(term)?;
        let range = self.offsets[t as usize] as usize..self.offsets[t as usize + 1] as usize;
        Some((&self.docs[range.clone()], &self.freqs[range]))
    }

    /// Lucene's norm byte for every document.
    pub(crate) fn norms(&self) -> Vec<u8> {
        self.doc_lengths.iter().map(|&l| encode_length(l)).collect()
    }
}

/// A document after analysis: its id, token count, and (term, frequency) pairs in term order.
struct AnalyzedDoc {
    id: String,
    length: u32,
    counts: Vec<(String, u32)>,
}

/// Accumulates postings chunk by chunk.
struct Builder {
    analyzer: Analyzer,
    doc_ids: Vec<String>,
    doc_lengths: Vec<u32>,
    terms: HashMap<String, u32>,
    postings: Vec<Vec<(u32, u32)>>,
}

impl Builder {
    fn new(analyzer: Analyzer) -> Self {
        Self {
            analyzer,
            doc_ids: Vec::new(),
            doc_lengths: Vec::new(),
            terms: HashMap::new(),
            postings: Vec::new(),
        }
    }

    fn add_chunk(&mut self, chunk: Vec<Document>) {
        let analyzer = &self.analyzer;
        // Analyze in parallel: per document, its length and sorted (term, frequency) pairs.
        let analyzed: Vec<AnalyzedDoc> = chunk
            .into_par_iter()
            .map(|doc| {
                let mut counts: HashMap<String, u32> = HashMap::new();
                let mut length = 0u32;
                analyzer.for_each_token(&doc.full_text(), |token| {
                    length += 1;
                    match counts.get_mut(token) {
                        Some(c) => *c += 1,
                        None => {
                            counts.insert(token.to_string(), 1);
                        }
                    }
                });
                let mut counts: Vec<(String, u32)> = counts.into_iter().collect();
                counts.sort_unstable();
                AnalyzedDoc {
                    id: doc.id,
                    length,
                    counts,
                }
            })
            .collect();
        // Merge sequentially, so term ids and posting order do not depend on thread timing.
        for AnalyzedDoc { id, length, counts } in analyzed {
            let doc = self.doc_ids.len() as u32;
            self.doc_ids.push(id);
            self.doc_lengths.push(length);
            for (term, freq) in counts {
                let next = self.terms.len() as u32;
                let t = *self.terms.entry(term).or_insert(next);
                if t as usize == self.postings.len() {
                    self.postings.push(Vec::new());
                }
                self.postings[t as usize].push((doc, freq));
            }
        }
    }

    fn finish(self) -> Bm25Index {
        let total: usize = self.postings.iter().map(Vec::len).sum();
        let mut offsets = Vec::with_capacity(self.postings.len() + 1);
        let mut docs = Vec::with_capacity(total);
        let mut freqs = Vec::with_capacity(total);
        offsets.push(0u64);
        for list in self.postings {
            for (d, f) in list {
                docs.push(d);
                freqs.push(f);
            }
            offsets.push(docs.len() as u64);
        }
        Bm25Index {
            analyzer: self.analyzer,
            doc_ids: self.doc_ids,
            doc_lengths: self.doc_lengths,
            terms: self.terms,
            offsets,
            docs,
            freqs,
        }
    }
}
