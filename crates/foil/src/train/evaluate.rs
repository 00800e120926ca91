//! Evaluation on a BEIR split while training (`foil train --eval-data DIR --eval-every N`).
//!
//! Every N steps, and after the last step, the current weights are written as a model folder
//! (`<output>/eval/model`) and scored the way `foil search` and `foil eval` would score the
//! saved model: a bi-encoder retrieves the split's corpus densely; a cross-encoder reranks
//! BM25's top k (BM25's run is made once). The means go to `<output>/eval.jsonl`, one line per
//! evaluation, rewritten atomically; a resumed run keeps the lines up to its checkpoint when it
//! evaluates with the same settings (`eval/settings.json`), so a killed and resumed run ends
//! with the same file as an uninterrupted one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use foil_bm25::Bm25Params;
use foil_core::beir::BeirPaths;
use foil_core::fsutil::write_atomic;
use foil_core::metrics::{EvalConfig, Measure, MeasureAt};
use foil_core::{Error, InputPolicy, NoProgress, Result, SkipReport};
use serde::{Deserialize, Serialize};

use crate::encoder_spec::EncoderSpec;
use crate::rerank::{self, RerankConfig};
use crate::search::{self, RetrieverKind, SearchConfig};
use foil_core::Similarity;

/// Where and how often to evaluate.
#[derive(Debug, Clone, Serialize)]
pub struct TrainEval {
    /// A BEIR folder with the corpus, the queries and `qrels/<split>.tsv`.
    pub data: PathBuf,
    pub split: String,
    /// Evaluate every this many steps (0: only after the last step).
    pub every: u64,
    /// Documents retrieved (bi-encoder) or reranked (cross-encoder) per query.
    pub top_k: usize,
}

/// One evaluation: means over the split's judged queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: u64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    #[serde(rename = "map@10")]
    pub map_at_10: f64,
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
    #[serde(rename = "recall@100")]
    pub recall_at_100: f64,
    pub queries: usize,
}

/// Runs the evaluations of one training run and keeps their log.
pub(super) struct Evaluator<'a> {
    config: &'a TrainEval,
    /// `<output>/eval`: the model folder and the runs of the latest evaluation.
    dir: PathBuf,
    /// `<output>/eval.jsonl`.
    log: PathBuf,
    cross_encoder: bool,
    /// The cross-encoder's reranking length (its training length).
    max_length: Option<usize>,
    threads: Option<usize>,
    points: Vec<EvalPoint>,
    /// Whether this process has made BM25's run (cross-encoders): a file left by an earlier
    /// process may come from other data, so it is made again once.
    bm25_made: bool,
}

impl<'a> Evaluator<'a> {
    /// Checks the split exists and reads the log of the evaluations up to `resumed_from`.
    pub fn new(
        config: &'a TrainEval,
        output: &Path,
        cross_encoder: bool,
        max_length: Option<usize>,
        threads: Option<usize>,
        resumed_from: u64,
    ) -> Result<Self> {
        let qrels = BeirPaths::new(&config.data).qrels(&config.split);
        if !qrels.is_file() {
            return Err(Error::config(
                "eval.data",
                format!(
                    "no qrels for split {:?}: {} does not exist",
                    config.split,
                    qrels.display()
                ),
            ));
        }
        // What decides an evaluation's numbers besides the weights. The earlier lines of the
        // log are kept only when these are the same (a resumed run may evaluate elsewhere).
        let dir = output.join("eval");
        let settings = serde_json::to_vec(&serde_json::json!({
            "data": config.data,
            "split": config.split,
            "top_k": config.top_k,
            "cross_encoder": cross_encoder,
            "max_length": max_length,
        }))
        .unwrap_or_default();
        let settings_path = dir.join("settings.json");
        let same_settings = std::fs::read(&settings_path).is_ok_and(|old| old == settings);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        write_atomic(&settings_path, &settings)?;
        let log = output.join("eval.jsonl");
        let mut points = Vec::new();
        let earlier = if same_settings {
            std::fs::read_to_string(&log).ok()
        } else {
            None
        };
        if let Some(text) = earlier {
            for line in text.lines() {
                // A line that does not parse was not written by this code: start that step over.
                match serde_json::from_str::<EvalPoint>(line) {
                    Ok(p) if p.step <= resumed_from => points.push(p),
                    _ => break,
                }
            }
        }
        Ok(Evaluator {
            config,
            dir,
            log,
            cross_encoder,
            max_length,
            threads,
            points,
            bm25_made: false,
        })
    }

    /// Whether the model after `step` of `total` is evaluated and has not been yet.
    pub fn due(&self, step: u64, total: u64) -> bool {
        let scheduled =
            step == total || (self.config.every > 0 && step.is_multiple_of(self.config.every));
        scheduled && step > 0 && !self.points.iter().any(|p| p.step == step)
    }

    /// Writes the model with `save` and evaluates it; appends the result to the log.
    pub fn evaluate(
        &mut self,
        step: u64,
        save: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<EvalPoint> {
        let started = Instant::now();
        let model = self.dir.join("model");
        std::fs::create_dir_all(&model).map_err(|e| Error::io(&model, e))?;
        save(&model)?;
        let run = self.dir.join("run.trec");
        if self.cross_encoder {
            let bm25 = self.dir.join("bm25.trec");
            if !self.bm25_made {
                search::run(
                    &self.search_config(RetrieverKind::Bm25, None, &bm25),
                    &NoProgress,
                )?;
                self.bm25_made = true;
            }
            rerank::run(
                &RerankConfig {
                    data: self.config.data.clone(),
                    run: bm25,
                    cross_encoder: model,
                    top_k: self.config.top_k,
                    output: run.clone(),
                    batch_size: 32,
                    max_length: self.max_length,
                    threads: self.threads,
                    device: None,
                },
                &NoProgress,
            )?;
        } else {
            let encoder = EncoderSpec::Local {
                model,
                options: Default::default(),
            };
            search::run(
                &self.search_config(RetrieverKind::Dense, Some(encoder), &run),
                &NoProgress,
            )?;
        }
        let qrels = BeirPaths::new(&self.config.data).qrels(&self.config.split);
        let mut skips = SkipReport::default();
        let measures = EvalConfig {
            cutoffs: vec![10, 100],
            ..EvalConfig::default()
        };
        let result = crate::eval::evaluate_files(
            &qrels,
            &run,
            &measures,
            InputPolicy::default(),
            &mut skips,
        )?;
        let mean = |measure, k| result.mean_of(MeasureAt { measure, k }).unwrap_or(0.0);
        let point = EvalPoint {
            step,
            ndcg_at_10: mean(Measure::Ndcg, 10),
            map_at_10: mean(Measure::Map, 10),
            mrr_at_10: mean(Measure::Mrr, 10),
            recall_at_100: mean(Measure::Recall, 100),
            queries: result.num_queries(),
        };
        tracing::info!(
            step,
            ndcg_at_10 = point.ndcg_at_10,
            recall_at_100 = point.recall_at_100,
            seconds = started.elapsed().as_secs_f64(),
            "evaluated on {} ({})",
            self.config.data.display(),
            self.config.split
        );
        self.points.push(point.clone());
        let text: String = self
            .points
            .iter()
            .map(|p| format!("{}\n", serde_json::to_string(p).unwrap_or_default()))
            .collect();
        write_atomic(&self.log, text.as_bytes())?;
        Ok(point)
    }

    /// Every evaluation of the run so far, in step order.
    pub fn into_points(self) -> Vec<EvalPoint> {
        self.points
    }

    fn search_config(
        &self,
        retriever: RetrieverKind,
        encoder: Option<EncoderSpec>,
        output: &Path,
    ) -> SearchConfig {
        SearchConfig {
            data: self.config.data.clone(),
            split: self.config.split.clone(),
            retriever,
            top_k: self.config.top_k,
            output: output.to_path_buf(),
            bm25: Bm25Params::default(),
            index: None,
            encoder,
            corpus_embeddings: None,
            // The weights change at every evaluation: caching their vectors would only fill
            // the disk.
            cache: None,
            similarity: Similarity::Cosine,
            threads: self.threads,
            skip_invalid: false,
            tag: "foil-train-eval".into(),
        }
    }
}
