//! The per-query measures, written to follow trec_eval's definitions line by line.

use std::collections::BTreeMap;

use super::{Measure, MeasureAt};
use crate::trec::ScoredDoc;

/// Computes `measures` for one query. `ranking` must be in trec_eval order (see
/// [`crate::trec::trec_order`]); `judged` maps document ids to grades.
pub fn query_measures(
    judged: &BTreeMap<String, i32>,
    ranking: &[ScoredDoc],
    measures: &[MeasureAt],
    relevance_level: i32,
) -> Vec<f64> {
    let grades: Vec<i32> = ranking
        .iter()
        .map(|d| judged.get(&d.doc_id).copied().unwrap_or(0))
        .collect();
    let num_rel = judged.values().filter(|&&g| g >= relevance_level).count();
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));

    measures
        .iter()
        .map(|m| {
            let top = &grades[..grades.len().min(m.k)];
            match m.measure {
                Measure::Ndcg => {
                    let ideal_dcg = dcg(&ideal[..ideal.len().min(m.k)]);
                    if ideal_dcg > 0.0 {
                        dcg(top) / ideal_dcg
                    } else {
                        0.0
                    }
                }
                Measure::Map => {
                    if num_rel == 0 {
                        return 0.0;
                    }
                    let mut rel_so_far = 0usize;
                    let mut sum = 0.0;
                    for (i, &g) in top.iter().enumerate() {
                        if g >= relevance_level {
                            rel_so_far += 1;
                            sum += rel_so_far as f64 / (i + 1) as f64;
                        }
                    }
                    sum / num_rel as f64
                }
                Measure::Recall => {
                    if num_rel == 0 {
                        return 0.0;
                    }
                    count_relevant(top, relevance_level) as f64 / num_rel as f64
                }
                Measure::P => count_relevant(top, relevance_level) as f64 / m.k as f64,
                Measure::Mrr => top
                    .iter()
                    .position(|&g| g >= relevance_level)
                    .map_or(0.0, |i| 1.0 / (i + 1) as f64),
            }
        })
        .collect()
}

/// Discounted cumulative gain with linear gains; non-positive grades gain nothing.
fn dcg(grades: &[i32]) -> f64 {
    grades
        .iter()
        .enumerate()
        .filter(|(_, &g)| g > 0)
        .map(|(i, &g)| g as f64 / ((i + 2) as f64).log2())
        .sum()
}

fn count_relevant(grades: &[i32], level: i32) -> usize {
    grades.iter().filter(|&&g| g >= level).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(measure: Measure, k: usize) -> MeasureAt {
        MeasureAt { measure, k }
    }

    #[test]
    fn hand_computed_values() {
        let judged: BTreeMap<String, i32> = [
            ("a".to_string(), 2),
            ("b".to_string(), 1),
            ("c".to_string(), 0),
        ]
        .into();
        // Ranking: c (non-relevant), a (grade 2), x (unjudged), b (grade 1).
        let ranking: Vec<ScoredDoc> = [("c", 4.0), ("a", 3.0), ("x", 2.0), ("b", 1.0)]
            .iter()
            .map(|&(d, s)| ScoredDoc::new(d, s))
            .collect();
        let ms = [
            at(Measure::Ndcg, 3),
            at(Measure::Map, 10),
            at(Measure::Recall, 2),
            at(Measure::P, 5),
            at(Measure::Mrr, 10),
        ];
        let v = query_measures(&judged, &ranking, &ms, 1);
        let dcg3 = 2.0 / 3f64.log2();
        let idcg3 = 2.0 + 1.0 / 3f64.log2();
        assert!((v[0] - dcg3 / idcg3).abs() < 1e-12);
        assert!((v[1] - (0.5 + 0.5) / 2.0).abs() < 1e-12);
        assert!((v[2] - 0.5).abs() < 1e-12);
        assert!((v[3] - 0.4).abs() < 1e-12);
        assert!((v[4] - 0.5).abs() < 1e-12);
    }
}
