//! False negatives by an LLM judge ([`crate::judge`]), RLHN-style: after the filters chose a
//! query's negatives (with a reserve), the judge scores P(relevant) of each chosen negative
//! and of the query's positives. A negative is a **false negative** when
//!
//! ```text
//! P(negative) ≥ P(lowest positive) − margin      (rule: relative, the default)
//! P(negative) ≥ threshold                         (rule: absolute)
//! ```
//!
//! The relative rule needs no calibration: small judges are biased towards "yes" or "no", but
//! a passage they find at least as relevant as the known positive is suspect either way.
//! False negatives are dropped (the next chosen candidate takes their place) or, with
//! [`JudgeAction::Positive`], become positives of the query. A pair the judge could not
//! score is kept and counted. With `teacher`, the judge's P(relevant) replaces the retrieval
//! scores in the outputs (the positives' and the negatives'), so that `n-tuple-scores` carries
//! teacher scores for MarginMSE (GPL's pseudo-labels).
//!
//! Every decision is recorded in `negatives.jsonl` (`judge` on each negative and positive,
//! `judge_relabeled` for the ones dropped or made positive) and counted in the manifest.

use std::collections::BTreeMap;

use foil_core::{Document, Hit, Progress, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::filter::Chosen;
use super::MineQuery;
use crate::judge::{JudgeConfig, LlmJudge};

/// What to do with a false negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum JudgeAction {
    /// Leave it out; the next candidate takes its place.
    Drop,
    /// Make it a positive of the query.
    Positive,
}

/// When a negative counts as a false negative.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "lowercase")]
pub enum FalseNegativeRule {
    /// P(negative) ≥ P(lowest positive) − margin.
    Relative { margin: f32 },
    /// P(negative) ≥ threshold.
    Absolute { threshold: f32 },
}

/// The judge of a mining run.
#[derive(Debug, Clone, Serialize)]
pub struct MineJudge {
    pub config: JudgeConfig,
    pub rule: FalseNegativeRule,
    pub action: JudgeAction,
    /// Candidates chosen beyond `num_negatives`, to replace false negatives.
    pub reserve: usize,
    /// Write the judge's P(relevant) as the outputs' scores (teacher scores for MarginMSE).
    pub teacher: bool,
}

/// Rescoring candidates with a judge.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeRescore {
    pub config: JudgeConfig,
    /// Candidates judged per query (the rest are left out).
    pub depth: usize,
}

/// What the judge decided, per query.
pub struct JudgeReport {
    /// Per query: the judge's P of each positive (in the query's positive order, relabeled
    /// ones last) and of each kept negative; `None` where it could not judge.
    positives: Vec<Vec<Option<f32>>>,
    negatives: Vec<Vec<Option<f32>>>,
    /// Per query: (document, P, action) of the false negatives.
    relabeled: Vec<Vec<(u32, f32, JudgeAction)>>,
    /// Per query: how many positives it had before relabeling.
    original_positives: Vec<usize>,
    counts: BTreeMap<&'static str, u64>,
}

impl JudgeReport {
    /// The counts for the manifest (`judge.<name>`).
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts.iter().map(|(k, v)| (*k, *v))
    }

    /// Adds the judge's view of query `q`'s positive number `p` to its `negatives.jsonl` line.
    pub fn annotate(&self, line: &mut Value, q: usize, p: usize, docs: &[Document]) {
        line["positive_judge"] = json!(self.positives[q].get(p).copied().flatten());
        if p >= self.original_positives[q] {
            line["relabeled_by_judge"] = json!(true);
        }
        if let Some(negatives) = line["negatives"].as_array_mut() {
            for (n, p) in negatives.iter_mut().zip(&self.negatives[q]) {
                n["judge"] = json!(p);
            }
        }
        line["judge_relabeled"] = json!(self.relabeled[q]
            .iter()
            .map(|(d, p, a)| json!({"doc_id": docs[*d as usize].id, "judge": p, "action": a}))
            .collect::<Vec<_>>());
    }
}

/// What mining chose, per query, for [`apply`] to relabel in place.
pub(super) struct Selection<'a> {
    pub queries: &'a mut [MineQuery],
    pub chosen: &'a mut [Vec<Chosen>],
    pub positive_scores: &'a mut [Vec<f32>],
}

/// Judges the chosen negatives and the positives of every query, applies `judge`'s rule and
/// action, and cuts each query's negatives to `num_negatives`.
pub(super) fn apply(
    judge: &MineJudge,
    llm: &LlmJudge,
    num_negatives: usize,
    full: &[String],
    selection: Selection<'_>,
    progress: &dyn Progress,
) -> Result<JudgeReport> {
    let Selection {
        queries: work,
        chosen,
        positive_scores,
    } = selection;
    // Every (query, passage) pair to judge, in query order: positives, then chosen negatives.
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (q, negs) in work.iter().zip(chosen.iter()) {
        for &p in &q.positives {
            pairs.push((q.text.as_str(), full[p as usize].as_str()));
        }
        for c in negs {
            pairs.push((q.text.as_str(), full[c.doc as usize].as_str()));
        }
    }
    let (judgments, stats) = llm.judge(&pairs, progress)?;
    let mut p_of = judgments.into_iter().map(|j| j.map(|j| j.p_relevant));

    let mut report = JudgeReport {
        positives: Vec::with_capacity(work.len()),
        negatives: Vec::with_capacity(work.len()),
        relabeled: Vec::with_capacity(work.len()),
        original_positives: work.iter().map(|q| q.positives.len()).collect(),
        counts: BTreeMap::new(),
    };
    let mut count = |name: &'static str, n: u64| *report.counts.entry(name).or_default() += n;
    count("pairs", pairs.len() as u64);
    count("from_cache", stats.requests.cached as u64);
    for n in stats.failed.values() {
        count("unjudged", *n);
    }
    for (i, q) in work.iter_mut().enumerate() {
        let mut pos: Vec<Option<f32>> = (0..q.positives.len())
            .map(|_| p_of.next().flatten())
            .collect();
        let neg_p: Vec<Option<f32>> = (0..chosen[i].len())
            .map(|_| p_of.next().flatten())
            .collect();
        let reference = pos
            .iter()
            .flatten()
            .copied()
            .fold(None, |m: Option<f32>, p| Some(m.map_or(p, |m| m.min(p))));
        let mut kept = Vec::new();
        let mut kept_p = Vec::new();
        let mut relabeled = Vec::new();
        for (c, p) in chosen[i].iter().zip(&neg_p) {
            if kept.len() == num_negatives {
                count("reserve_unused", 1);
                continue;
            }
            let false_negative = match (p, judge.rule) {
                (Some(p), FalseNegativeRule::Absolute { threshold }) => *p >= threshold,
                (Some(p), FalseNegativeRule::Relative { margin }) => {
                    reference.is_some_and(|r| *p >= r - margin)
                }
                (None, _) => false,
            };
            if false_negative {
                let p = p.unwrap_or(f32::NAN);
                relabeled.push((c.doc, p, judge.action));
                match judge.action {
                    JudgeAction::Drop => count("dropped", 1),
                    JudgeAction::Positive => {
                        count("made_positive", 1);
                        q.positives.push(c.doc);
                        positive_scores[i].push(c.score);
                        pos.push(Some(p));
                    }
                }
                continue;
            }
            count("kept", 1);
            kept.push(*c);
            kept_p.push(*p);
        }
        if judge.teacher {
            // Teacher scores must all be the judge's: a negative it could not judge is left
            // out, and so are all of a query whose positive it could not judge.
            if pos.iter().any(Option::is_none) {
                count("unjudged_positive_query_left_out", kept.len() as u64);
                kept.clear();
                kept_p.clear();
            }
            let before = kept.len();
            let mut judged_p = Vec::new();
            kept = kept
                .into_iter()
                .zip(&kept_p)
                .filter_map(|(mut c, p)| {
                    p.map(|p| {
                        c.score = p;
                        judged_p.push(Some(p));
                        c
                    })
                })
                .collect();
            count("unjudged_negative_left_out", (before - kept.len()) as u64);
            kept_p = judged_p;
            for (s, p) in positive_scores[i].iter_mut().zip(&pos) {
                *s = p.unwrap_or(f32::NAN);
            }
        }
        chosen[i] = kept;
        report.positives.push(pos);
        report.negatives.push(kept_p);
        report.relabeled.push(relabeled);
    }
    Ok(report)
}

/// Candidate hits (best first) rescored by the judge: the judge's P(relevant) of the top
/// `depth` candidates replaces their scores, and the positives' too; deeper candidates are
/// left out. The `judge` method of `foil experiment`: the paper's cross-encoder row where no
/// cross-encoder is installed.
pub(super) fn rescore(
    llm: &LlmJudge,
    depth: usize,
    full: &[String],
    work: &[MineQuery],
    candidates: &mut [Vec<Hit>],
    positive_scores: &mut [Vec<f32>],
    progress: &dyn Progress,
) -> Result<BTreeMap<String, u64>> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (q, hits) in work.iter().zip(candidates.iter_mut()) {
        hits.truncate(depth);
        for h in hits.iter() {
            pairs.push((q.text.as_str(), full[h.doc as usize].as_str()));
        }
        for &p in &q.positives {
            pairs.push((q.text.as_str(), full[p as usize].as_str()));
        }
    }
    let (judgments, stats) = llm.judge(&pairs, progress)?;
    // An unjudged pair ranks last (P = 0) and is counted.
    let mut p_of = judgments
        .into_iter()
        .map(|j| j.map_or(0.0, |j| j.p_relevant));
    for (i, q) in work.iter().enumerate() {
        for h in candidates[i].iter_mut() {
            h.score = p_of.next().unwrap_or(0.0);
        }
        positive_scores[i] = (0..q.positives.len())
            .map(|_| p_of.next().unwrap_or(0.0))
            .collect();
        candidates[i].sort_by(|x, y| y.score.total_cmp(&x.score).then(x.doc.cmp(&y.doc)));
    }
    let mut counts: BTreeMap<String, u64> = stats
        .failed
        .into_iter()
        .map(|(k, v)| (format!("unjudged.{k}"), v))
        .collect();
    counts.insert("pairs".into(), pairs.len() as u64);
    counts.insert("from_cache".into(), stats.requests.cached as u64);
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::template::{Task, Template};
    use crate::generate::GeneratorSpec;
    use crate::judge::testing::FnJudge;
    use foil_core::NoProgress;

    /// P(yes) = 0.9 for passages with "vitamin", 0.6 with "bone", else 0.2.
    fn keyword_judge(_query: &str, passage: &str) -> Vec<(&'static str, f32)> {
        let p = if passage.contains("vitamin") {
            0.9
        } else if passage.contains("bone") {
            0.6
        } else {
            0.2
        };
        vec![("Yes", p), ("No", 1.0 - p)]
    }

    fn setup(dir: &std::path::Path, action: JudgeAction, teacher: bool) -> (MineJudge, LlmJudge) {
        let config = JudgeConfig::new(
            GeneratorSpec::Local {
                model: "unused".into(),
                threads: None,
                max_batch: 1,
            },
            dir.join("judge.jsonl"),
        );
        let llm = LlmJudge::with_generator(
            Box::new(FnJudge(keyword_judge)),
            Template::load_for("yes-no", Task::Judge).unwrap(),
            &config,
        )
        .unwrap();
        let judge = MineJudge {
            config,
            rule: FalseNegativeRule::Relative { margin: 0.0 },
            action,
            reserve: 2,
            teacher,
        };
        (judge, llm)
    }

    fn corpus() -> Vec<String> {
        [
            "vitamin C and scurvy",      // 0: the positive
            "vitamin C in citrus fruit", // 1: as relevant as the positive
            "bone density in old age",   // 2
            "the history of sailing",    // 3
            "tea and coffee",            // 4
        ]
        .map(String::from)
        .to_vec()
    }

    fn chosen(docs: &[u32]) -> Vec<Chosen> {
        docs.iter()
            .enumerate()
            .map(|(r, &doc)| Chosen {
                doc,
                score: 10.0 - r as f32,
                rank: r,
            })
            .collect()
    }

    #[test]
    fn false_negatives_are_dropped_and_replaced_from_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let (judge, llm) = setup(dir.path(), JudgeAction::Drop, false);
        let mut work = vec![MineQuery {
            id: "q".into(),
            text: "scurvy".into(),
            positives: vec![0],
        }];
        let mut picked = vec![chosen(&[1, 2, 3, 4])];
        let mut pos_scores = vec![vec![11.0]];
        let report = apply(
            &judge,
            &llm,
            2,
            &corpus(),
            Selection {
                queries: &mut work,
                chosen: &mut picked,
                positive_scores: &mut pos_scores,
            },
            &NoProgress,
        )
        .unwrap();
        // Doc 1 (P 0.9 ≥ the positive's 0.9) is a false negative; 2 and 3 take the places.
        assert_eq!(picked[0].iter().map(|c| c.doc).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(picked[0][0].score, 9.0, "retrieval scores kept");
        let counts: BTreeMap<_, _> = report.counts().collect();
        assert_eq!(
            (counts["dropped"], counts["kept"], counts["reserve_unused"]),
            (1, 2, 1)
        );
        assert_eq!(work[0].positives, [0]);
        let mut line = json!({"negatives": [{"doc_id": "d2"}, {"doc_id": "d3"}]});
        let docs: Vec<Document> = (0..5)
            .map(|i| Document {
                id: format!("d{i}"),
                title: String::new(),
                text: String::new(),
            })
            .collect();
        report.annotate(&mut line, 0, 0, &docs);
        assert_eq!(line["judge_relabeled"][0]["doc_id"], "d1");
        assert_eq!(line["judge_relabeled"][0]["action"], "drop");
        assert!((line["negatives"][0]["judge"].as_f64().unwrap() - 0.6).abs() < 1e-6);
    }

    #[test]
    fn false_negatives_can_become_positives_and_scores_teacher_scores() {
        let dir = tempfile::tempdir().unwrap();
        let (judge, llm) = setup(dir.path(), JudgeAction::Positive, true);
        let mut work = vec![MineQuery {
            id: "q".into(),
            text: "scurvy".into(),
            positives: vec![0],
        }];
        let mut picked = vec![chosen(&[1, 2])];
        let mut pos_scores = vec![vec![11.0]];
        apply(
            &judge,
            &llm,
            1,
            &corpus(),
            Selection {
                queries: &mut work,
                chosen: &mut picked,
                positive_scores: &mut pos_scores,
            },
            &NoProgress,
        )
        .unwrap();
        assert_eq!(work[0].positives, [0, 1]);
        assert_eq!(picked[0].iter().map(|c| c.doc).collect::<Vec<_>>(), [2]);
        // Teacher: the judge's probabilities replace the retrieval scores.
        assert!((pos_scores[0][0] - 0.9).abs() < 1e-6 && (pos_scores[0][1] - 0.9).abs() < 1e-6);
        assert!((picked[0][0].score - 0.6).abs() < 1e-6);
    }
}
