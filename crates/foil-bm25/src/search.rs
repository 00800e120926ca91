//! BM25 search: term-at-a-time scoring into a dense accumulator, then top-k selection;
//! batches of queries run in parallel on rayon's pool.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use foil_core::{Hit, Progress, Result, Retriever};
use rayon::prelude::*;

use crate::index::{Bm25Index, Bm25Params};
use crate::norms::decode_length;

/// A [`Bm25Index`] with its scoring parameters, ready to search.
pub struct Bm25Searcher {
    index: Bm25Index,
    params: Bm25Params,
    /// Lucene's norm byte per document.
    norms: Vec<u8>,
    /// `k1 · (1 − b + b · decoded_length / avgdl)` for each norm byte.
    length_factor: [f32; 256],
}

/// Per-thread scratch space: one score per document, and the documents touched.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    touched: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Bm25Searcher {
    /// Prepares `index` for search with `params`.
    pub fn new(index: Bm25Index, params: Bm25Params) -> Self {
        let avgdl = index.average_length();
        let mut length_factor = [0f32; 256];
        for (norm, slot) in length_factor.iter_mut().enumerate() {
            let len = decode_length(norm as u8) as f32;
            let ratio = if avgdl > 0.0 { len / avgdl } else { 0.0 };
            *slot = params.k1 * ((1.0 - params.b) + params.b * ratio);
        }
        let norms = index.norms();
        Self {
            index,
            params,
            norms,
            length_factor,
        }
    }

    /// The index searched.
    pub fn index(&self) -> &Bm25Index {
        &self.index
    }

    /// The scoring parameters.
    pub fn params(&self) -> Bm25Params {
        self.params
    }

    /// Lucene's idf of a term with document frequency `df`.
    fn idf(&self, df: usize) -> f32 {
        let n = self.index.num_docs() as f64;
        let df = df as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln() as f32
    }

    /// The analyzed query as (term, count) pairs in term order.
    fn query_terms(&self, query: &str) -> BTreeMap<String, u32> {
        let mut terms = BTreeMap::new();
        self.index.analyzer().for_each_token(query, |t| {
            *terms.entry(t.to_string()).or_insert(0) += 1;
        });
        terms
    }

    /// The top `k` documents for `query`, best first; ties by document id descending (the
    /// order trec_eval ranks them in). Documents matching no query term are not returned.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch { scores, touched } = &mut *scratch;
            if scores.len() != self.index.num_docs() {
                *scores = vec![0.0; self.index.num_docs()];
            }
            for (term, count) in self.query_terms(query) {
                let Some((docs, freqs)) = self.index.postings(&term) else {
                    continue;
                };
                let weight = self.idf(docs.len()) * count as f32;
                for (&d, &f) in docs.iter().zip(freqs) {
                    let f = f as f32;
                    let norm = self.length_factor[self.norms[d as usize] as usize];
                    let slot = &mut scores[d as usize];
                    if *slot == 0.0 {
                        touched.push(d);
                    }
                    *slot += weight * f / (f + norm);
                }
            }
            let mut hits: Vec<Hit> = touched
                .iter()
                .map(|&d| Hit {
                    doc: d,
                    score: scores[d as usize],
                })
                .collect();
            for &d in touched.iter() {
                scores[d as usize] = 0.0;
            }
            touched.clear();
            self.top_k(hits.as_mut_slice(), k)
        })
    }

    /// The BM25 score of one document for `query` (0 when no query term occurs in it); equal
    /// to the score [`Bm25Searcher::search`] gives the document.
    pub fn score_doc(&self, query: &str, doc: u32) -> f32 {
        let mut score = 0f32;
        for (term, count) in self.query_terms(query) {
            let Some((docs, freqs)) = self.index.postings(&term) else {
                continue;
            };
            if let Ok(i) = docs.binary_search(&doc) {
                let weight = self.idf(docs.len()) * count as f32;
                let f = freqs[i] as f32;
                let norm = self.length_factor[self.norms[doc as usize] as usize];
                score += weight * f / (f + norm);
            }
        }
        score
    }

    fn order(&self, a: &Hit, b: &Hit) -> Ordering {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| self.index.doc_id(b.doc).cmp(self.index.doc_id(a.doc)))
    }

    fn top_k(&self, hits: &mut [Hit], k: usize) -> Vec<Hit> {
        if k == 0 {
            return Vec::new();
        }
        if hits.len() > k {
            hits.select_nth_unstable_by(k - 1, |a, b| self.order(a, b));
        }
        let n = k.min(hits.len());
        let top = &mut hits[..n];
        top.sort_unstable_by(|a, b| self.order(a, b));
        top.to_vec()
    }

    /// Searches many queries in parallel; `progress` is called with the number done so far.
    pub fn search_many(
        &self,
        queries: &[&str],
        k: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Vec<Vec<Hit>> {
        let done = std::sync::atomic::AtomicUsize::new(0);
        queries
            .par_iter()
            .map(|q| {
                let hits = self.search(q, k);
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n.is_multiple_of(64) || n == queries.len() {
                    progress(n);
                }
                hits
            })
            .collect()
    }
}

impl Retriever for Bm25Searcher {
    fn name(&self) -> &str {
        "bm25"
    }

    fn num_docs(&self) -> usize {
        self.index.num_docs()
    }

    fn doc_id(&self, doc: u32) -> &str {
        self.index.doc_id(doc)
    }

    fn search_batch(
        &self,
        queries: &[&str],
        k: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<Hit>>> {
        progress.begin("search", Some(queries.len() as u64));
        let hits = self.search_many(queries, k, &|n| progress.update(n as u64));
        progress.end();
        Ok(hits)
    }
}
