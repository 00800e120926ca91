//! Exact top-k inner-product search by blocked matrix multiply.
//!
//! For a block of queries (`query_block` rows) and a block of documents (`doc_block` rows) one
//! `gemm` call computes the block of scores `Q · Dᵀ` (the document block is read transposed in
//! place, never copied); every query then scans its row of the block into a bounded buffer of
//! candidates. Memory beyond the inputs is one score block per thread plus a few times `k`
//! candidates per query; the full `queries × documents` matrix never exists.
//!
//! **Determinism.** The result is the top `k` by the reference score [`dot`], best first, ties
//! broken by the smaller document index: the same bits whatever the block sizes and threads.
//! `gemm` sums in an order that depends on the shapes, so its scores only steer the selection.
//! Both it and [`dot`] are within `γ_n · ‖q‖ · ‖d‖` of the real inner product (`γ_n ≈ n·2⁻²⁴`,
//! `n` the dimension), so a `gemm` score is within `E = 2 γ_n ‖q‖ max‖d‖` of the [`dot`] score.
//! If `θ` is the `k`-th best `gemm` score among the candidates, `k` documents have a [`dot`]
//! score of at least `θ − E`, so every document that can still make the top `k` has a `gemm`
//! score of at least `θ − 2E`; the others are dropped. The survivors (about `k` on real data)
//! are rescored with [`dot`] and ranked exactly. When near-ties keep the buffer full (duplicate
//! vectors, non-finite values) it is ranked exactly on the spot instead, so it stays bounded
//! whatever the data.
//!
//! **Threads.** [`Threading::QueryBlocks`] gives each rayon task a block of queries against the
//! whole corpus, with no merge; blocks are evened out so that every thread gets as many. It is
//! the default from 4 queries per thread up: with 2 threads on 5,000 × 100,000 × 384 it ran
//! 1.97× as fast as one thread, while [`Threading::Gemm`] (blocks in sequence, `gemm`
//! multi-threaded, rows scanned in parallel) and [`Threading::CorpusParts`] (one part of the
//! corpus per thread, candidates merged) were 1–3% slower. With fewer queries, corpus parts
//! win.

use std::cmp::Ordering;
use std::ops::Range;

use foil_core::{Embeddings, Hit};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::vectors::{dot, norm, EmbeddingsView};

/// How [`exact_top_k`] uses the threads of the current rayon pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threading {
    /// Query blocks from 4 queries per thread up, else corpus parts; one thread runs
    /// sequentially.
    #[default]
    Auto,
    /// One thread, whatever the pool.
    Sequential,
    /// Parallel over blocks of queries, each against the whole corpus.
    QueryBlocks,
    /// Per query block, parallel over one contiguous part of the corpus per thread; the
    /// candidates of the parts are merged.
    CorpusParts,
    /// Blocks in sequence, each product multi-threaded by `gemm`, rows scanned in parallel.
    Gemm,
}

/// Block sizes and threading of [`exact_top_k`]. They change speed and memory, never results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopKOptions {
    /// Queries per block (rows of one product), at most: blocks are evened out so that
    /// every thread gets the same number.
    pub query_block: usize,
    /// Documents per block (columns of one product). One block of scores takes
    /// `query_block × doc_block × 4` bytes per thread.
    pub doc_block: usize,
    pub threading: Threading,
}

impl Default for TopKOptions {
    /// 512 queries × 2048 documents (4 MiB of scores per thread), automatic threading.
    fn default() -> Self {
        Self {
            query_block: 512,
            doc_block: 2048,
            threading: Threading::Auto,
        }
    }
}

/// The `k` documents of `corpus` with the largest inner product with each query, best first,
/// ties broken by the smaller document index; fewer when the corpus is smaller than `k`.
/// Scores are [`dot`]'s. Cosine similarity is the inner product of rows normalized with
/// [`crate::normalize_rows`]. Runs on the current rayon pool (`pool.install(..)` to choose
/// the threads).
///
/// # Panics
/// If both are non-empty and their dimensions differ, or the corpus has more than 2³² rows.
pub fn exact_top_k(
    queries: &Embeddings,
    corpus: &Embeddings,
    k: usize,
    options: &TopKOptions,
) -> Vec<Vec<Hit>> {
    exact_top_k_view(queries.into(), corpus.into(), k, options)
}

/// [`exact_top_k`] on borrowed (e.g. memory-mapped) matrices.
///
/// # Panics
/// As [`exact_top_k`].
pub fn exact_top_k_view(
    queries: EmbeddingsView<'_>,
    corpus: EmbeddingsView<'_>,
    k: usize,
    options: &TopKOptions,
) -> Vec<Vec<Hit>> {
    let (n_queries, n_docs) = (queries.len(), corpus.len());
    if n_queries == 0 {
        return Vec::new();
    }
    if k == 0 || n_docs == 0 {
        return vec![Vec::new(); n_queries];
    }
    assert_eq!(
        queries.dim, corpus.dim,
        "queries have dimension {} but the corpus {}",
        queries.dim, corpus.dim
    );
    assert!(
        n_docs - 1 <= u32::MAX as usize,
        "{n_docs} documents do not fit u32 indices"
    );
    let threads = rayon::current_num_threads();
    let threading = match options.threading {
        Threading::Auto if threads <= 1 => Threading::Sequential,
        // Measured on 2 threads (100k × 384 corpus): query blocks are as fast or faster from
        // 5 queries per thread up, corpus parts faster below.
        Threading::Auto if n_queries >= 4 * threads => Threading::QueryBlocks,
        Threading::Auto => Threading::CorpusParts,
        t => t,
    };
    let threads = if threading == Threading::Sequential {
        1
    } else {
        threads
    };
    Search::new(queries, corpus, k.min(n_docs), options, threads).run(threading, threads)
}

/// At most `max` queries per block, in a number of blocks that is a multiple of `threads`, as
/// even as possible: 5000 queries by 512 on 2 threads make 10 blocks of 500, not 9 of 512 and
/// one of 392.
fn balanced_block(n_queries: usize, max: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    let blocks = n_queries.div_ceil(max.max(1)).div_ceil(threads) * threads;
    n_queries.div_ceil(blocks.max(1)).max(1)
}

/// A candidate: a document and a score within `E` of its [`dot`] score.
#[derive(Debug, Clone, Copy)]
struct Cand {
    score: f32,
    doc: u32,
}

/// Ranking order: score descending (NaN last, +0 = −0), then document index ascending.
fn rank(a: &Cand, b: &Cand) -> Ordering {
    let by_score = match (a.score.is_nan(), b.score.is_nan()) {
        (false, false) => b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal),
        (nan_a, nan_b) => nan_a.cmp(&nan_b),
    };
    by_score.then(a.doc.cmp(&b.doc))
}

/// `θ − margin`, rounded down to f32 (NaN, from non-finite inputs, gives −∞: admit all).
fn lower_bound(theta: f32, margin: f64) -> f32 {
    let t = theta as f64;
    // The |θ|·1e-6 term covers the rounding of the cast.
    let b = t - margin - t.abs() * 1e-6;
    if b.is_nan() {
        f32::NEG_INFINITY
    } else {
        b as f32
    }
}

/// The fixed part of one search.
struct Search<'a> {
    queries: EmbeddingsView<'a>,
    corpus: EmbeddingsView<'a>,
    k: usize,
    /// Buffer length that triggers a prune.
    cap: usize,
    /// Per query: `2E`, how far below the `k`-th best `gemm` score a candidate may be.
    margins: Vec<f64>,
    query_block: usize,
    doc_block: usize,
}

impl<'a> Search<'a> {
    fn new(
        queries: EmbeddingsView<'a>,
        corpus: EmbeddingsView<'a>,
        k: usize,
        options: &TopKOptions,
        threads: usize,
    ) -> Self {
        let dim = corpus.dim;
        // A row with a non-finite value has a non-finite norm, which makes the bound infinite:
        // then every candidate is ranked exactly.
        let finite_norm = |v: &[f32]| {
            Some(norm(v))
                .filter(|n| n.is_finite())
                .unwrap_or(f64::INFINITY)
        };
        let max_norm = |rows: &[f32]| rows.chunks_exact(dim).map(finite_norm).fold(0.0, f64::max);
        let max_norm = if threads > 1 {
            corpus
                .data
                .par_chunks(dim * 1024)
                .map(max_norm)
                .reduce(|| 0.0, f64::max)
        } else {
            max_norm(corpus.data)
        };
        let u = f32::EPSILON as f64 / 2.0;
        let n = dim as f64;
        let gamma = if n * u < 0.5 {
            n * u / (1.0 - n * u)
        } else {
            f64::INFINITY
        };
        let margins = (0..queries.len())
            .map(|i| {
                // |gemm − dot| ≤ 2γ‖q‖M, padded for the rounding of the bound itself and
                // for underflow (each operation may lose up to 2⁻¹⁵⁰ there). Sums that may
                // overflow f32 void the bound.
                let s = finite_norm(queries.row(i)) * max_norm * (1.0 + 1e-9);
                if s >= f32::MAX as f64 / 2.0 {
                    return f64::INFINITY;
                }
                let e = 2.0 * gamma * s * 1.01 + 8.0 * u * s + (n + 2.0) * f32::MIN_POSITIVE as f64;
                2.0 * e
            })
            .collect();
        Self {
            queries,
            corpus,
            k,
            cap: 2 * k + 32,
            margins,
            query_block: balanced_block(queries.len(), options.query_block, threads),
            doc_block: options.doc_block.max(1),
        }
    }

    fn run(&self, threading: Threading, threads: usize) -> Vec<Vec<Hit>> {
        let n_queries = self.queries.len();
        let query_blocks = n_queries.div_ceil(self.query_block);
        match threading {
            Threading::Sequential | Threading::Auto => {
                self.query_blocks(0..n_queries, &mut Vec::new())
            }
            Threading::QueryBlocks => (0..query_blocks)
                .into_par_iter()
                // One buffer of scores per thread (more or less), not one per block.
                .map_init(Vec::new, |scores, b| {
                    let start = b * self.query_block;
                    self.query_blocks(start..(start + self.query_block).min(n_queries), scores)
                })
                .flat_map_iter(|hits| hits)
                .collect(),
            Threading::CorpusParts => self.corpus_parts(threads),
            Threading::Gemm => self.gemm_threads(threads),
        }
    }

    fn selectors(&self, queries: Range<usize>) -> Vec<Selector> {
        queries
            .map(|q| Selector {
                entries: Vec::new(),
                admit: f32::NEG_INFINITY,
                query: q,
            })
            .collect()
    }

    /// Queries `queries` against the whole corpus on this thread, one query block at a time.
    fn query_blocks(&self, queries: Range<usize>, scores: &mut Vec<f32>) -> Vec<Vec<Hit>> {
        let mut out = Vec::with_capacity(queries.len());
        for start in queries.clone().step_by(self.query_block) {
            let block = start..(start + self.query_block).min(queries.end);
            let mut sels = self.selectors(block.clone());
            for docs in blocks(0..self.corpus.len(), self.doc_block) {
                self.scan_block(block.clone(), docs, &mut sels, scores, Parallelism::None);
            }
            out.extend(sels.into_iter().map(|s| self.finish(s.query, s.entries)));
        }
        out
    }

    /// Per query block: one contiguous part of the corpus per thread, then a merge.
    fn corpus_parts(&self, threads: usize) -> Vec<Vec<Hit>> {
        let n_docs = self.corpus.len();
        let n_queries = self.queries.len();
        let doc_blocks = n_docs.div_ceil(self.doc_block);
        let parts = threads.clamp(1, doc_blocks);
        let per_part = doc_blocks.div_ceil(parts) * self.doc_block;
        let mut out = Vec::with_capacity(n_queries);
        for queries in blocks(0..n_queries, self.query_block) {
            let found: Vec<Vec<Selector>> = (0..parts)
                .into_par_iter()
                .map(|p| {
                    let docs = (p * per_part).min(n_docs)..((p + 1) * per_part).min(n_docs);
                    let mut sels = self.selectors(queries.clone());
                    let mut scores = Vec::new();
                    for docs in blocks(docs, self.doc_block) {
                        self.scan_block(
                            queries.clone(),
                            docs,
                            &mut sels,
                            &mut scores,
                            Parallelism::None,
                        );
                    }
                    sels
                })
                .collect();
            let hits: Vec<Vec<Hit>> = (0..queries.len())
                .into_par_iter()
                .map(|i| {
                    let entries = found
                        .iter()
                        .flat_map(|sels| sels[i].entries.iter().copied())
                        .collect();
                    self.finish(queries.start + i, entries)
                })
                .collect();
            out.extend(hits);
        }
        out
    }

    /// Blocks in sequence; `gemm` multiplies on all threads, rows are scanned in parallel.
    fn gemm_threads(&self, threads: usize) -> Vec<Vec<Hit>> {
        let n_queries = self.queries.len();
        let mut scores = Vec::new();
        let mut out = Vec::with_capacity(n_queries);
        for queries in blocks(0..n_queries, self.query_block) {
            let mut sels = self.selectors(queries.clone());
            for docs in blocks(0..self.corpus.len(), self.doc_block) {
                let n = docs.len();
                self.multiply(
                    queries.clone(),
                    docs.clone(),
                    &mut scores,
                    Parallelism::Rayon(threads),
                );
                sels.par_iter_mut()
                    .zip(scores.par_chunks(n))
                    .for_each(|(sel, row)| sel.scan(row, docs.start as u32, self));
            }
            let hits: Vec<Vec<Hit>> = sels
                .into_par_iter()
                .map(|s| self.finish(s.query, s.entries))
                .collect();
            out.extend(hits);
        }
        out
    }

    /// Scores `queries × docs` and offers each row to its selector.
    fn scan_block(
        &self,
        queries: Range<usize>,
        docs: Range<usize>,
        sels: &mut [Selector],
        scores: &mut Vec<f32>,
        parallelism: Parallelism,
    ) {
        let n = docs.len();
        self.multiply(queries, docs.clone(), scores, parallelism);
        for (sel, row) in sels.iter_mut().zip(scores.chunks_exact(n)) {
            sel.scan(row, docs.start as u32, self);
        }
    }

    /// `scores` := the row-major `queries × docs` block of inner products.
    fn multiply(
        &self,
        queries: Range<usize>,
        docs: Range<usize>,
        scores: &mut Vec<f32>,
        parallelism: Parallelism,
    ) {
        let (m, n, dim) = (queries.len(), docs.len(), self.corpus.dim);
        let lhs = self.queries.rows(queries).data;
        let rhs = self.corpus.rows(docs).data;
        // gemm overwrites the block without reading it (`read_dst` false): no need to clear it.
        if scores.len() < m * n {
            scores.resize(m * n, 0.0);
        }
        // SAFETY: `scores` holds m × n values (row stride n), `lhs` m × dim (row stride dim) and
        // `rhs` n × dim, read as its transpose dim × n (row stride 1, column stride dim); all
        // pointers stay within their slices, and `scores` does not alias the inputs.
        unsafe {
            gemm::gemm(
                m,
                n,
                dim,
                scores[..m * n].as_mut_ptr(),
                1,
                n as isize,
                false,
                lhs.as_ptr(),
                1,
                dim as isize,
                rhs.as_ptr(),
                dim as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }

    /// The exact top `k` of `entries`: drop those that cannot make it, rescore the rest with
    /// [`dot`], rank.
    fn finish(&self, query: usize, mut entries: Vec<Cand>) -> Vec<Hit> {
        if entries.len() > self.k {
            prune_by_bound(&mut entries, self.k, self.margins[query]);
        }
        self.rescore(query, &mut entries);
        if entries.len() > self.k {
            entries.select_nth_unstable_by(self.k - 1, rank);
            entries.truncate(self.k);
        }
        entries.sort_unstable_by(rank);
        entries
            .into_iter()
            .map(|c| Hit {
                doc: c.doc,
                score: c.score,
            })
            .collect()
    }

    fn rescore(&self, query: usize, entries: &mut [Cand]) {
        let q = self.queries.row(query);
        for c in entries {
            c.score = dot(q, self.corpus.row(c.doc as usize));
        }
    }
}

/// Drops the candidates more than `margin` below the `k`-th best (which cannot reach the top
/// `k`) and returns the bound for new ones. Needs at least `k` entries.
fn prune_by_bound(entries: &mut Vec<Cand>, k: usize, margin: f64) -> f32 {
    // Only the k-th score matters here, not the order of ties. (A NaN score needs
    // non-finite inputs, which make the margin infinite: then nothing is dropped.)
    let (_, kth, _) = entries.select_nth_unstable_by(k - 1, |a, b| b.score.total_cmp(&a.score));
    let admit = lower_bound(kth.score, margin);
    entries.retain(|c| not_below(c.score, admit));
    admit
}

/// The candidates of one query.
struct Selector {
    entries: Vec<Cand>,
    /// Scores below this cannot reach the top `k`; −∞ until `k` candidates were seen.
    admit: f32,
    query: usize,
}

/// Scores compared with the bound at once, into a bit mask.
const MASK_WIDTH: usize = 16;

/// Bit `j` set when `chunk[j]` passes `bound` ([`not_below`]).
#[inline]
fn pass_mask(chunk: &[f32; MASK_WIDTH], bound: f32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cmpnlt_ps, _mm_loadu_ps, _mm_movemask_ps, _mm_set1_ps};
        // SAFETY: SSE is part of x86_64; each load reads 4 floats inside `chunk`, which holds 16.
        unsafe {
            let b = _mm_set1_ps(bound);
            let p = chunk.as_ptr();
            let m = |i: usize| _mm_movemask_ps(_mm_cmpnlt_ps(_mm_loadu_ps(p.add(i)), b)) as u32;
            m(0) | m(4) << 4 | m(8) << 8 | m(12) << 12
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    pass_mask_portable(chunk, bound)
}

/// [`pass_mask`] without SIMD.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn pass_mask_portable(chunk: &[f32; MASK_WIDTH], bound: f32) -> u32 {
    chunk
        .iter()
        .enumerate()
        .fold(0, |m, (j, &x)| m | u32::from(not_below(x, bound)) << j)
}

impl Selector {
    /// Offers `scores[j]` as document `first_doc + j`.
    fn scan(&mut self, scores: &[f32], first_doc: u32, search: &Search) {
        let mut chunks = scores.chunks_exact(MASK_WIDTH);
        let mut doc = first_doc;
        for chunk in &mut chunks {
            let chunk: &[f32; MASK_WIDTH] = chunk.try_into().expect("chunks_exact");
            // Almost always 0: the scores below the bound cost a compare each.
            let mut mask = pass_mask(chunk, self.admit);
            while mask != 0 {
                let j = mask.trailing_zeros();
                self.offer(chunk[j as usize], doc + j, search);
                mask &= mask - 1;
            }
            doc += MASK_WIDTH as u32;
        }
        for (j, &x) in chunks.remainder().iter().enumerate() {
            self.offer(x, doc + j as u32, search);
        }
    }

    #[inline]
    fn offer(&mut self, score: f32, doc: u32, search: &Search) {
        if not_below(score, self.admit) {
            self.entries.push(Cand { score, doc });
            if self.entries.len() >= search.cap {
                self.prune(search);
            }
        }
    }

    /// Shrinks a full buffer: by the bound, or, when near-ties keep it more than half full,
    /// by exact ranking down to `k`.
    fn prune(&mut self, search: &Search) {
        let (k, margin) = (search.k, search.margins[self.query]);
        self.admit = prune_by_bound(&mut self.entries, k, margin);
        if self.entries.len() > k + (search.cap - k) / 2 {
            search.rescore(self.query, &mut self.entries);
            self.entries.select_nth_unstable_by(k - 1, rank);
            self.entries.truncate(k);
            self.admit = prune_by_bound(&mut self.entries, k, margin);
        }
    }
}

/// Whether `score` passes `bound`: not below it. A NaN is not below anything, so it is
/// offered (and then ranked last).
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // `score >= bound` would drop NaN
fn not_below(score: f32, bound: f32) -> bool {
    !(score < bound)
}

/// `range` cut into consecutive pieces of `size` (the last may be shorter).
fn blocks(range: Range<usize>, size: usize) -> impl Iterator<Item = Range<usize>> {
    let end = range.end;
    range
        .clone()
        .step_by(size)
        .map(move |s| s..(s + size).min(end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use foil_core::rng::SplitMix64;

    fn random(rng: &mut SplitMix64, rows: usize, dim: usize) -> Embeddings {
        Embeddings::from_vec(
            dim.max(1),
            (0..rows * dim.max(1))
                .map(|_| rng.next_f64() as f32 * 2.0 - 1.0)
                .collect(),
        )
    }

    /// Small integers: many exactly equal scores.
    fn integers(rng: &mut SplitMix64, rows: usize, dim: usize) -> Embeddings {
        Embeddings::from_vec(
            dim,
            (0..rows * dim).map(|_| rng.below(3) as f32 - 1.0).collect(),
        )
    }

    /// Every score with [`dot`], sorted independently of the code under test.
    fn brute_force(queries: &Embeddings, corpus: &Embeddings, k: usize) -> Vec<Vec<Hit>> {
        queries
            .rows()
            .map(|q| {
                let mut all: Vec<Hit> = corpus
                    .rows()
                    .enumerate()
                    .map(|(d, row)| Hit {
                        doc: d as u32,
                        score: dot(q, row),
                    })
                    .collect();
                // NaN last, then score descending, then document ascending.
                all.sort_by(|a, b| {
                    let key = |h: &Hit| (h.score.is_nan(), -(h.score as f64));
                    let (ka, kb) = (key(a), key(b));
                    ka.0.cmp(&kb.0)
                        .then(ka.1.partial_cmp(&kb.1).unwrap_or(Ordering::Equal))
                        .then(a.doc.cmp(&b.doc))
                });
                all.truncate(k);
                all
            })
            .collect()
    }

    /// Results as comparable bits (NaN == NaN).
    fn bits(hits: &[Vec<Hit>]) -> Vec<Vec<(u32, u32)>> {
        hits.iter()
            .map(|h| h.iter().map(|h| (h.doc, h.score.to_bits())).collect())
            .collect()
    }

    fn options(query_block: usize, doc_block: usize, threading: Threading) -> TopKOptions {
        TopKOptions {
            query_block,
            doc_block,
            threading,
        }
    }

    const ALL_THREADINGS: [Threading; 5] = [
        Threading::Auto,
        Threading::Sequential,
        Threading::QueryBlocks,
        Threading::CorpusParts,
        Threading::Gemm,
    ];

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn equals_brute_force_on_random_shapes() {
        let mut rng = SplitMix64::new(1);
        let pool = pool(3);
        for case in 0..120 {
            let n_queries = 1 + rng.below(40) as usize;
            let n_docs = 1 + rng.below(700) as usize;
            let dim = 1 + rng.below(80) as usize;
            let k = match case % 4 {
                0 => rng.below(5) as usize,
                1 => 1 + rng.below(60) as usize,
                2 => n_docs + rng.below(3) as usize,
                _ => rng.below(n_docs as u64 + 1) as usize,
            };
            let opts = options(
                1 + rng.below(17) as usize,
                1 + rng.below(300) as usize,
                ALL_THREADINGS[case % ALL_THREADINGS.len()],
            );
            let (q, c) = if case % 3 == 0 {
                (
                    integers(&mut rng, n_queries, dim),
                    integers(&mut rng, n_docs, dim),
                )
            } else {
                (
                    random(&mut rng, n_queries, dim),
                    random(&mut rng, n_docs, dim),
                )
            };
            let got = pool.install(|| exact_top_k(&q, &c, k, &opts));
            let want = brute_force(&q, &c, k);
            assert_eq!(got.len(), n_queries);
            assert_eq!(
                bits(&got),
                bits(&want),
                "case {case}: {n_queries} queries, {n_docs} docs, dim {dim}, k {k}, {opts:?}"
            );
        }
    }

    #[test]
    fn every_dimension_up_to_384() {
        let mut rng = SplitMix64::new(2);
        let opts = options(4, 50, Threading::Auto);
        for dim in 1..=384 {
            let q = random(&mut rng, 3, dim);
            let c = random(&mut rng, 120, dim);
            let k = 1 + dim % 13;
            assert_eq!(
                bits(&exact_top_k(&q, &c, k, &opts)),
                bits(&brute_force(&q, &c, k)),
                "dim {dim}"
            );
        }
    }

    #[test]
    fn same_bits_for_every_thread_count_block_size_and_threading() {
        let mut rng = SplitMix64::new(3);
        let q = random(&mut rng, 70, 384);
        let mut c = random(&mut rng, 2000, 384);
        // Exact duplicates: their ties must go to the smaller index whatever the blocks.
        for d in (0..2000).step_by(97) {
            let (src, dst) = (d * 384, (1999 - d) * 384);
            c.data.copy_within(src..src + 384, dst);
        }
        let want = bits(&brute_force(&q, &c, 30));
        for threads in [1, 2, 3, 4] {
            let pool = pool(threads);
            for threading in ALL_THREADINGS {
                for (qb, db) in [
                    (1, 1),
                    (7, 33),
                    (16, 256),
                    (70, 2000),
                    (256, 4096),
                    (3, 1999),
                ] {
                    let opts = options(qb, db, threading);
                    let got = pool.install(|| exact_top_k(&q, &c, 30, &opts));
                    assert_eq!(bits(&got), want, "{threads} threads, {opts:?}");
                }
            }
        }
    }

    #[test]
    fn ties_go_to_the_smaller_document_even_past_the_buffer() {
        // 500 copies of the same vector (more than the candidate buffer holds) among others.
        let mut rng = SplitMix64::new(4);
        let q = random(&mut rng, 5, 16);
        let mut c = random(&mut rng, 1500, 16);
        let copy: Vec<f32> = c.row(0).to_vec();
        for d in (0..1500).step_by(3) {
            c.data[d * 16..(d + 1) * 16].copy_from_slice(&copy);
        }
        for k in [1, 10, 100, 600] {
            for threading in ALL_THREADINGS {
                let got = pool(2).install(|| exact_top_k(&q, &c, k, &options(2, 64, threading)));
                assert_eq!(
                    bits(&got),
                    bits(&brute_force(&q, &c, k)),
                    "k {k}, {threading:?}"
                );
            }
        }
        // All-equal scores: the first k documents, in order.
        let zero = Embeddings::from_vec(16, vec![0.0; 16]);
        let got = exact_top_k(&zero, &c, 7, &TopKOptions::default());
        assert_eq!(
            got[0].iter().map(|h| h.doc).collect::<Vec<_>>(),
            (0..7).collect::<Vec<_>>()
        );
        assert!(got[0].iter().all(|h| h.score == 0.0));
    }

    #[test]
    fn rounding_near_ties_are_ranked_by_dot_not_by_gemm() {
        // Permutations of one vector of mixed magnitudes that sums to about 0, each nudged by
        // up to 100 ulps of the sum of magnitudes, against an all-ones query: the scores lie
        // within the rounding errors of each other and each summation order rounds them
        // differently, so gemm's top 10 is not dot's (without the margin of the bound, this
        // test fails). The result must be dot's, whatever the blocks.
        let mut rng = SplitMix64::new(10);
        let dim = 384;
        let mut base: Vec<f32> = (0..dim)
            .map(|i| (rng.next_f64() as f32 - 0.5) * [1e-3, 1.0, 1e3][i % 3])
            .collect();
        let mean = base.iter().sum::<f32>() / dim as f32;
        base.iter_mut().for_each(|x| *x -= mean);
        let ulp = base.iter().map(|x| x.abs()).sum::<f32>() * f32::EPSILON;
        let mut data = Vec::new();
        for _ in 0..600 {
            let mut row = base.clone();
            rng.shuffle(&mut row);
            row[rng.below(dim as u64) as usize] += rng.next_f64() as f32 * 100.0 * ulp;
            data.extend(row);
        }
        let c = Embeddings::from_vec(dim, data);
        let q = Embeddings::from_vec(dim, [vec![1.0; dim], vec![-0.5; dim]].concat());
        let want = bits(&brute_force(&q, &c, 10));
        for (qb, db) in [(1, 7), (2, 64), (2, 600), (512, 2048)] {
            for threading in ALL_THREADINGS {
                let got = pool(2).install(|| exact_top_k(&q, &c, 10, &options(qb, db, threading)));
                assert_eq!(bits(&got), want, "{qb}x{db} {threading:?}");
            }
        }
    }

    #[test]
    fn edge_shapes() {
        let mut rng = SplitMix64::new(5);
        let q = random(&mut rng, 4, 8);
        let c = random(&mut rng, 10, 8);
        let opts = TopKOptions::default();
        assert_eq!(exact_top_k(&q, &c, 0, &opts), vec![Vec::<Hit>::new(); 4]);
        assert!(exact_top_k(&Embeddings::new(8), &c, 5, &opts).is_empty());
        assert_eq!(
            exact_top_k(&q, &Embeddings::new(8), 5, &opts),
            vec![Vec::<Hit>::new(); 4]
        );
        // k beyond the corpus: every document, ranked.
        let all = exact_top_k(&q, &c, 25, &opts);
        assert!(all.iter().all(|h| h.len() == 10));
        assert_eq!(bits(&all), bits(&brute_force(&q, &c, 10)));
        // One document.
        let one = random(&mut rng, 1, 8);
        let got = exact_top_k(&q, &one, 3, &opts);
        assert!(got.iter().all(|h| h.len() == 1 && h[0].doc == 0));
        // Views of plain slices give the same as owned matrices.
        let view = exact_top_k_view(
            EmbeddingsView::new(8, &q.data),
            EmbeddingsView::new(8, &c.data[8..]),
            3,
            &opts,
        );
        let owned = exact_top_k(&q, &Embeddings::from_vec(8, c.data[8..].to_vec()), 3, &opts);
        assert_eq!(view, owned);
    }

    #[test]
    fn scores_are_inner_products() {
        let mut rng = SplitMix64::new(6);
        let q = random(&mut rng, 6, 384);
        let c = random(&mut rng, 300, 384);
        for (qi, hits) in exact_top_k(&q, &c, 20, &TopKOptions::default())
            .iter()
            .enumerate()
        {
            assert_eq!(hits.len(), 20);
            for h in hits {
                let exact: f64 = q
                    .row(qi)
                    .iter()
                    .zip(c.row(h.doc as usize))
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                assert!(
                    (h.score as f64 - exact).abs() < 1e-4,
                    "{} vs {exact}",
                    h.score
                );
            }
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }

    #[test]
    fn cosine_is_inner_product_of_normalized_rows() {
        let mut rng = SplitMix64::new(7);
        let mut q = random(&mut rng, 3, 32);
        let mut c = random(&mut rng, 50, 32);
        // Scaling a document changes its inner product, never its cosine.
        for x in c.data[32..64].iter_mut() {
            *x *= 100.0;
        }
        crate::normalize_rows(&mut q);
        crate::normalize_rows(&mut c);
        for hits in exact_top_k(&q, &c, 50, &TopKOptions::default()) {
            assert!(hits.iter().all(|h| (-1.0001..=1.0001).contains(&h.score)));
        }
    }

    #[test]
    fn non_finite_values_rank_last_without_breaking_the_rest() {
        let mut rng = SplitMix64::new(8);
        let q = random(&mut rng, 4, 24);
        let mut c = random(&mut rng, 400, 24);
        c.data[5 * 24] = f32::NAN;
        c.data[9 * 24 + 3] = f32::INFINITY;
        c.data[11 * 24 + 1] = f32::NEG_INFINITY;
        for k in [3, 50, 400] {
            for threading in ALL_THREADINGS {
                let got = pool(2).install(|| exact_top_k(&q, &c, k, &options(3, 40, threading)));
                assert_eq!(
                    bits(&got),
                    bits(&brute_force(&q, &c, k)),
                    "k {k}, {threading:?}"
                );
            }
        }
    }

    #[test]
    fn large_magnitudes_do_not_break_the_bound() {
        let mut rng = SplitMix64::new(9);
        let mut q = random(&mut rng, 3, 40);
        let mut c = random(&mut rng, 300, 40);
        for x in q.data.iter_mut() {
            *x *= 1e18;
        }
        for x in c.data.iter_mut().step_by(7) {
            *x *= 1e19;
        }
        let opts = options(2, 64, Threading::Auto);
        assert_eq!(
            bits(&exact_top_k(&q, &c, 10, &opts)),
            bits(&brute_force(&q, &c, 10))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        #[test]
        fn is_the_brute_force_top_k(
            n_queries in 1usize..6,
            n_docs in 1usize..90,
            dim in 1usize..20,
            k in 0usize..100,
            query_block in 1usize..8,
            doc_block in 1usize..40,
            threading in 0usize..5,
            integer_values: bool,
            seed: u64,
        ) {
            let mut rng = SplitMix64::new(seed);
            let make = if integer_values { integers } else { random };
            let q = make(&mut rng, n_queries, dim);
            let c = make(&mut rng, n_docs, dim);
            let opts = options(query_block, doc_block, ALL_THREADINGS[threading]);
            let got = pool(2).install(|| exact_top_k(&q, &c, k, &opts));
            proptest::prop_assert_eq!(bits(&got), bits(&brute_force(&q, &c, k)));
        }
    }

    #[test]
    fn pass_mask_agrees_with_the_portable_one() {
        let mut rng = SplitMix64::new(11);
        for _ in 0..2000 {
            let mut chunk = [0f32; MASK_WIDTH];
            for x in chunk.iter_mut() {
                *x = match rng.below(12) {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    3 => -0.0,
                    _ => rng.next_f64() as f32 - 0.5,
                };
            }
            let bound = [f32::NEG_INFINITY, 0.0, 0.25, chunk[3]][rng.below(4) as usize];
            assert_eq!(pass_mask(&chunk, bound), pass_mask_portable(&chunk, bound));
        }
    }

    #[test]
    #[should_panic(expected = "dimension")]
    fn dimension_mismatch_panics() {
        let q = Embeddings::from_vec(2, vec![1.0, 0.0]);
        let c = Embeddings::from_vec(3, vec![1.0, 0.0, 0.0]);
        exact_top_k(&q, &c, 1, &TopKOptions::default());
    }
}
