//! The [`Retriever`] trait: anything that ranks a corpus for a batch of queries, and
//! [`Fused`], reciprocal rank fusion of several retrievers over the same corpus.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::progress::Progress;

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
    fn search_batch(
        &self,
        queries: &[&str],
        k: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<Hit>>>;
}

/// The constant of reciprocal rank fusion (Cormack et al., 2009): a document at rank `r`
/// (from 1) of a list adds `1 / (RRF_K + r)` to its fused score.
pub const RRF_K: f32 = 60.0;

/// Fuses ranked lists of the same corpus by reciprocal rank: every document of any list, by
/// fused score (best first; ties by document number).
pub fn reciprocal_rank_fusion(lists: &[&[Hit]]) -> Vec<Hit> {
    let mut scores: HashMap<u32, f32> = HashMap::new();
    for list in lists {
        for (r, h) in list.iter().enumerate() {
            *scores.entry(h.doc).or_default() += 1.0 / (RRF_K + r as f32 + 1.0);
        }
    }
    let mut fused: Vec<Hit> = scores
        .into_iter()
        .map(|(doc, score)| Hit { doc, score })
        .collect();
    fused.sort_by(|x, y| y.score.total_cmp(&x.score).then(x.doc.cmp(&y.doc)));
    fused
}

/// Several retrievers over the same corpus, fused by reciprocal rank ([`RRF_K`]): each ranks
/// its top `k`, and the fused list keeps the best `k`.
pub struct Fused {
    parts: Vec<Box<dyn Retriever>>,
    name: String,
}

impl Fused {
    /// Fuses `parts`, which must number the same documents the same way.
    pub fn new(parts: Vec<Box<dyn Retriever>>) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(Error::Invalid("fusion needs at least one retriever".into()));
        };
        for part in &parts[1..] {
            let same = part.num_docs() == first.num_docs()
                && (0..first.num_docs() as u32).all(|d| part.doc_id(d) == first.doc_id(d));
            if !same {
                return Err(Error::Invalid(format!(
                    "cannot fuse {} and {}: they were built from different corpora \
                     ({} and {} documents, or the same ids in another order)",
                    first.name(),
                    part.name(),
                    first.num_docs(),
                    part.num_docs()
                )));
            }
        }
        let name = parts.iter().map(|p| p.name()).collect::<Vec<_>>().join("+");
        Ok(Fused { parts, name })
    }
}

impl Retriever for Fused {
    fn name(&self) -> &str {
        &self.name
    }

    fn num_docs(&self) -> usize {
        self.parts[0].num_docs()
    }

    fn doc_id(&self, doc: u32) -> &str {
        self.parts[0].doc_id(doc)
    }

    fn search_batch(
        &self,
        queries: &[&str],
        k: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<Hit>>> {
        let ranked = self
            .parts
            .iter()
            .map(|p| p.search_batch(queries, k, progress))
            .collect::<Result<Vec<_>>>()?;
        Ok((0..queries.len())
            .map(|q| {
                let lists: Vec<&[Hit]> = ranked.iter().map(|r| r[q].as_slice()).collect();
                let mut fused = reciprocal_rank_fusion(&lists);
                fused.truncate(k);
                fused
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    /// A retriever that returns a fixed ranking for every query.
    struct Fixed {
        name: &'static str,
        ids: Vec<String>,
        ranking: Vec<u32>,
    }

    impl Retriever for Fixed {
        fn name(&self) -> &str {
            self.name
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
            _progress: &dyn Progress,
        ) -> Result<Vec<Vec<Hit>>> {
            let hits: Vec<Hit> = self
                .ranking
                .iter()
                .take(k)
                .map(|&doc| Hit { doc, score: 1.0 })
                .collect();
            Ok(vec![hits; queries.len()])
        }
    }

    fn fixed(name: &'static str, ids: &[&str], ranking: &[u32]) -> Box<dyn Retriever> {
        Box::new(Fixed {
            name,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            ranking: ranking.to_vec(),
        })
    }

    #[test]
    fn fusion_adds_reciprocal_ranks_and_breaks_ties_by_document() {
        let a = [Hit { doc: 3, score: 9.0 }, Hit { doc: 1, score: 8.0 }];
        let b = [Hit { doc: 1, score: 0.9 }, Hit { doc: 2, score: 0.8 }];
        let fused = reciprocal_rank_fusion(&[&a, &b]);
        let docs: Vec<u32> = fused.iter().map(|h| h.doc).collect();
        // 1: 1/62 + 1/61; 3: 1/61; 2: 1/62.
        assert_eq!(docs, [1, 3, 2]);
        assert!((fused[0].score - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-7);
        // Equal fused scores: the lower document number first.
        let tie =
            reciprocal_rank_fusion(&[&[Hit { doc: 5, score: 1.0 }], &[Hit { doc: 4, score: 1.0 }]]);
        assert_eq!(tie.iter().map(|h| h.doc).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn a_fused_retriever_keeps_the_best_k_of_its_parts() {
        let ids = ["a", "b", "c", "d"];
        let fused = Fused::new(vec![
            fixed("bm25", &ids, &[0, 1, 2]),
            fixed("dense", &ids, &[2, 3, 0]),
        ])
        .unwrap();
        assert_eq!(fused.name(), "bm25+dense");
        let hits = fused.search_batch(&["q1", "q2"], 2, &NoProgress).unwrap();
        assert_eq!(hits.len(), 2);
        // Each part ranks its top 2: {0: 1/61, 1: 1/62} and {2: 1/61, 3: 1/62}.
        let docs: Vec<u32> = hits[0].iter().map(|h| h.doc).collect();
        assert_eq!(docs, [0, 2]);
    }

    #[test]
    fn retrievers_over_different_corpora_are_not_fused() {
        let err = Fused::new(vec![
            fixed("bm25", &["a", "b"], &[0]),
            fixed("dense", &["b", "a"], &[0]),
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("different corpora"), "{err}");
    }
}
