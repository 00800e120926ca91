//! The inspect stage: judges a training file's negatives before training on them. Each
//! (query, positive, negatives) example is scored by a judge — the scores stored in the file
//! (`provenance`), a bi-encoder (cosine of unit embeddings) or a cross-encoder — and the
//! report measures hardness (score distributions, margins), safety (negatives scoring at or
//! near their positive: likely false negatives), separation (ROC, AUC), diversity (pairwise
//! cosine, Gram log-determinant; bi-encoder judges only), a reconstructed ECI
//! ([`stats::eci`]) and how easily a linear probe tells the negatives apart from real corpus
//! passages ([`separability`]: LLM-written negatives that give themselves away by their style).
//!
//! Outputs: `report.json`, `report.md`, `scores.{svg,png}`, `margins.{svg,png}`,
//! `roc.{svg,png}` and `manifest.json`. The definitions are in [`stats`] and `docs/inspect.md`.

pub mod report;
pub mod separability;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use foil_candle::{CrossEncoder, CrossEncoderOptions};
use foil_core::beir::{read_jsonl, BeirPaths};
use foil_core::fsutil::{sha256_file, write_atomic};
use foil_core::manifest::Manifest;
use foil_core::{
    Document, Embeddings, Encoder, Error, InputPolicy, Progress, Query, Reranker, Result,
    SkipReason, SkipReport, TextKind,
};
use foil_dense::normalize_rows;
use serde::Serialize;

use crate::encode::encode_all;
use crate::encoder_spec::{resolve_model, EncoderSpec};
use crate::formats::{self, read_training_file, Example, Format, ReadOptions, TrainingFile};
use crate::threads::with_threads;
use report::Report;
use separability::{JudgeVectors, SeparabilityConfig};

/// What scores the examples.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Judge {
    /// The scores stored in the file by the model that mined it (`negatives.jsonl`,
    /// `n-tuple-scores`, FlagEmbedding with `pos_scores` / `neg_scores`); no model runs.
    Provenance,
    /// Cosine similarity of the query's and the passage's embeddings (rows normalised).
    BiEncoder { encoder: EncoderSpec },
    /// A cross-encoder's score of each (query, passage) pair.
    CrossEncoder {
        model: PathBuf,
        batch_size: usize,
        max_length: Option<usize>,
        /// `cpu` (also when `None`), `cuda` or `cuda:N` (see `CrossEncoderOptions::device`).
        #[serde(skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
}

/// Configuration of an inspect run.
#[derive(Debug, Clone, Serialize)]
pub struct InspectConfig {
    /// The training file.
    pub input: PathBuf,
    /// Its format; `None` detects it from the first record.
    pub format: Option<Format>,
    pub judge: Judge,
    /// The BEIR folder whose `corpus.jsonl` and `queries.jsonl` give the texts of a
    /// `negatives.jsonl` (needed with a model judge), and whose corpus the negatives are
    /// compared with for separability.
    pub data: Option<PathBuf>,
    pub output: PathBuf,
    /// Inspect only the examples of the first N distinct queries of the file.
    pub max_queries: Option<usize>,
    /// Histogram bins.
    pub bins: usize,
    /// The δ of the safety shares: negatives with s⁻ ≥ s⁺ − δ.
    pub deltas: Vec<f64>,
    /// The ε of ln det(G + εI).
    pub ridge: f64,
    /// How separable the negatives are from corpus passages.
    pub separability: SeparabilityConfig,
    pub cache: Option<PathBuf>,
    pub threads: Option<usize>,
    pub skip_invalid: bool,
}

/// Defaults of the report's parameters.
pub const DEFAULT_BINS: usize = 40;
pub const DEFAULT_DELTAS: [f64; 4] = [0.0, 0.01, 0.05, 0.1];
pub const DEFAULT_RIDGE: f64 = 1e-4;

/// What an inspect run found.
#[derive(Debug, Clone)]
pub struct InspectSummary {
    pub report: Report,
    pub skips: SkipReport,
    pub seconds: f64,
}

/// The judge's scores of the kept examples, and (bi-encoder) the negatives' unit embeddings
/// and the encoder.
struct Scores {
    positives: Vec<Vec<f64>>,
    negatives: Vec<Vec<f64>>,
    negative_vectors: Option<(Embeddings, Vec<Vec<usize>>)>,
    encoder: Option<Box<dyn Encoder>>,
    name: String,
    fingerprint: String,
}

/// Runs the inspect stage.
pub fn run(config: &InspectConfig, progress: &dyn Progress) -> Result<InspectSummary> {
    let started = Instant::now();
    // A second process writing the same folder is refused at once.
    let _lock = foil_core::lock::Lock::output(&config.output)?;
    let policy = InputPolicy {
        skip_invalid: config.skip_invalid,
    };
    let mut skips = SkipReport::default();
    let options = ReadOptions {
        format: config.format,
        max_queries: config.max_queries,
        merge_triplets: true,
        policy,
    };
    let mut file = read_training_file(&config.input, &options, &mut skips)?;
    let needs_text = !matches!(config.judge, Judge::Provenance);
    if matches!(config.judge, Judge::Provenance) && !file.format.has_scores() {
        return Err(Error::Invalid(format!(
            "{}: {} records carry no scores; judge them with --judge-model or --cross-encoder",
            config.input.display(),
            file.format.name()
        )));
    }
    let mut examples = std::mem::take(&mut file.examples);
    let mut data_inputs = Vec::new();
    // Separability needs the texts too, when it has an encoder and a corpus.
    let separability_text = config.separability.model.is_some() && config.data.is_some();
    if (needs_text || separability_text) && file.format == Format::Negatives {
        let data = config.data.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: negatives.jsonl holds ids only; give the BEIR folder it was mined from (--data) to judge it with a model",
                config.input.display()
            ))
        })?;
        data_inputs = resolve_texts(config, data, &mut examples, policy, &mut skips)?;
    }

    let (kept, skipped_examples) = keep_examples(config, examples, needs_text)?;

    let scores = with_threads(config.threads, || judge(config, &kept, progress))??;
    let judge_vectors = match (&scores.encoder, &scores.negative_vectors) {
        (Some(encoder), Some((embeddings, rows))) => Some(JudgeVectors {
            encoder: encoder.as_ref(),
            embeddings,
            rows,
        }),
        _ => None,
    };
    // The corpus's skips are counted once: here unless resolving texts read it already.
    let count_corpus_skips = data_inputs.is_empty();
    let separability = with_threads(config.threads, || {
        separability::measure(
            &config.separability,
            config.data.as_deref(),
            &kept,
            judge_vectors,
            config.cache.as_deref(),
            policy,
            &mut skips,
            count_corpus_skips,
            progress,
        )
    })??;
    let input_sha256 = sha256_file(&config.input)?;
    let report = Report::build(
        config,
        file.format,
        &input_sha256,
        &kept,
        &scores.positives,
        &scores.negatives,
        scores.negative_vectors.as_ref(),
        &scores.name,
        &scores.fingerprint,
        &skipped_examples,
        &skips,
        separability.report,
    );

    std::fs::create_dir_all(&config.output).map_err(|e| Error::io(&config.output, e))?;
    let mut outputs = Vec::new();
    for (name, bytes) in report.files() {
        write_atomic(&config.output.join(&name), &bytes)?;
        outputs.push(name);
    }

    let seconds = started.elapsed().as_secs_f64();
    let written = Written {
        file: &file,
        judge: &scores,
        separability_corpus: separability.corpus,
        separability_fingerprint: separability.fingerprint,
        data_inputs: &data_inputs,
        outputs,
        skipped_examples: &skipped_examples,
    };
    write_manifest(config, &report, &skips, written, seconds)?;
    Ok(InspectSummary {
        report,
        skips,
        seconds,
    })
}

/// The examples to judge: those with a positive and a negative and, for the stored scores,
/// a score on every passage; the others are counted by reason.
fn keep_examples(
    config: &InspectConfig,
    examples: Vec<Example>,
    needs_text: bool,
) -> Result<(Vec<Example>, BTreeMap<String, u64>)> {
    let mut skipped_examples: BTreeMap<String, u64> = BTreeMap::new();
    let mut kept = Vec::with_capacity(examples.len());
    for e in examples {
        let reason = if e.positives.is_empty() {
            Some("no_positive")
        } else if e.negatives.is_empty() {
            Some("no_negative")
        } else if !needs_text
            && e.positives
                .iter()
                .chain(&e.negatives)
                .any(|i| i.score.is_none())
        {
            Some("no_stored_score")
        } else {
            None
        };
        match reason {
            Some(r) => *skipped_examples.entry(r.to_string()).or_default() += 1,
            None => kept.push(e),
        }
    }
    if kept.is_empty() && skipped_examples.contains_key("no_stored_score") {
        return Err(Error::Invalid(format!(
            "{}: no example carries stored scores (generated negatives have none); judge them with --judge-model or --cross-encoder",
            config.input.display()
        )));
    }
    if kept.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no example with a positive and a negative to inspect",
            config.input.display()
        )));
    }

    Ok((kept, skipped_examples))
}

/// What the manifest records besides the report.
struct Written<'a> {
    file: &'a TrainingFile,
    judge: &'a Scores,
    /// The corpus the separability sample came from, and its encoder's fingerprint.
    separability_corpus: Option<PathBuf>,
    separability_fingerprint: Option<String>,
    data_inputs: &'a [PathBuf],
    outputs: Vec<String>,
    skipped_examples: &'a BTreeMap<String, u64>,
}

/// `manifest.json`: the settings with the format and the judges that ran, inputs, outputs,
/// seed, skips and counts.
fn write_manifest(
    config: &InspectConfig,
    report: &Report,
    skips: &SkipReport,
    w: Written,
    seconds: f64,
) -> Result<()> {
    let (file, scores) = (w.file, w.judge);
    let mut settings = serde_json::to_value(config).unwrap_or_default();
    if let Some(o) = settings.as_object_mut() {
        o.insert("format".into(), serde_json::json!(file.format.name()));
        o.insert("judge_name".into(), serde_json::json!(scores.name));
        o.insert(
            "judge_fingerprint".into(),
            serde_json::json!(scores.fingerprint),
        );
        if let Some(f) = &w.separability_fingerprint {
            o.insert(
                "separability_encoder".into(),
                serde_json::json!(report.separability.encoder),
            );
            o.insert("separability_fingerprint".into(), serde_json::json!(f));
        }
    }
    let mut manifest = Manifest::new("inspect", settings);
    manifest.add_input(&config.input)?;
    for path in w.data_inputs {
        manifest.add_input(path)?;
    }
    if let Some(corpus) = w.separability_corpus.filter(|c| !w.data_inputs.contains(c)) {
        manifest.add_input(&corpus)?;
    }
    manifest.seed = Some(config.separability.seed);
    manifest.outputs = w.outputs;
    manifest.set_skips(skips);
    let c = &report.counts;
    for (name, value) in [
        ("records", file.records),
        ("examples", c.examples as u64),
        ("queries", c.queries as u64),
        ("positives", c.positives as u64),
        ("negatives", c.negatives as u64),
        ("truncated_by_max_queries", file.truncated as u64),
        (
            "separability.negatives",
            report.separability.negatives as u64,
        ),
        (
            "separability.corpus_passages",
            report.separability.corpus_passages as u64,
        ),
    ] {
        manifest.counts.insert(name.into(), value);
    }
    for (reason, n) in w.skipped_examples {
        manifest
            .counts
            .insert(format!("skipped_examples.{reason}"), *n);
    }
    manifest.timings.insert("seconds".into(), seconds);
    manifest.write(&config.output.join("manifest.json"))
}

/// The file `foil generate negatives` writes its passages to, next to its `negatives.jsonl`.
pub const GENERATED_CORPUS: &str = "negatives-corpus.jsonl";

/// Fills in the texts of a `negatives.jsonl`'s ids from the BEIR folder `data` (passages as
/// `title + " " + text`, as mined) and, for negatives written by `foil generate negatives`,
/// from the [`GENERATED_CORPUS`] next to the file; returns the files read. An unknown id is an
/// error naming the training file's line, or under `--skip-invalid` drops the example
/// (counted).
fn resolve_texts(
    config: &InspectConfig,
    data: &std::path::Path,
    examples: &mut Vec<Example>,
    policy: InputPolicy,
    skips: &mut SkipReport,
) -> Result<Vec<PathBuf>> {
    let paths = BeirPaths::new(data);
    let queries: Vec<Query> = read_jsonl(&paths.queries, policy, skips)?;
    let mut docs: Vec<Document> = read_jsonl(&paths.corpus, policy, skips)?;
    let mut read = vec![paths.queries.clone(), paths.corpus.clone()];
    let generated = config
        .input
        .parent()
        .map(|dir| dir.join(GENERATED_CORPUS))
        .filter(|p| p.is_file() && *p != paths.corpus);
    if let Some(path) = generated {
        docs.extend(read_jsonl::<Document>(&path, policy, skips)?);
        read.push(path);
    }
    let query_text: HashMap<&str, &str> = queries
        .iter()
        .map(|q| (q.id.as_str(), q.text.as_str()))
        .collect();
    // The BEIR corpus first: a generated passage never shadows a corpus id.
    let mut doc_text: HashMap<&str, &Document> = HashMap::with_capacity(docs.len());
    for d in &docs {
        doc_text.entry(d.id.as_str()).or_insert(d);
    }
    let mut out = Vec::with_capacity(examples.len());
    'examples: for mut e in examples.drain(..) {
        let qid = e.query.id.clone().unwrap_or_default();
        match query_text.get(qid.as_str()) {
            Some(t) => e.query.text = Some(t.to_string()),
            None => {
                skips.reject(
                    policy,
                    &config.input,
                    e.line,
                    SkipReason::UnknownQuery,
                    format!(
                        "query id {} is not in {}",
                        foil_core::skip::quote(&qid),
                        paths.queries.display()
                    ),
                )?;
                continue;
            }
        }
        for item in e.positives.iter_mut().chain(e.negatives.iter_mut()) {
            let id = item.id.clone().unwrap_or_default();
            match doc_text.get(id.as_str()) {
                Some(d) => item.text = Some(d.full_text()),
                None => {
                    skips.reject(
                        policy,
                        &config.input,
                        e.line,
                        SkipReason::UnknownDocument,
                        format!(
                            "document id {} is not in {}{}",
                            foil_core::skip::quote(&id),
                            paths.corpus.display(),
                            if read.len() > 2 {
                                format!(" or {}", read[2].display())
                            } else {
                                String::new()
                            }
                        ),
                    )?;
                    continue 'examples;
                }
            }
        }
        out.push(e);
    }
    *examples = out;
    Ok(read)
}

/// Unique texts in order of first appearance, and each text's index.
fn intern<'a>(texts: impl Iterator<Item = &'a str>) -> (Vec<&'a str>, HashMap<&'a str, usize>) {
    let mut order = Vec::new();
    let mut index = HashMap::new();
    for t in texts {
        index.entry(t).or_insert_with(|| {
            order.push(t);
            order.len() - 1
        });
    }
    (order, index)
}

fn text(item: &formats::Item) -> &str {
    item.text.as_deref().unwrap_or("")
}

/// Scores every positive and negative of `examples` with the configured judge.
fn judge(config: &InspectConfig, examples: &[Example], progress: &dyn Progress) -> Result<Scores> {
    let stored = |items: &[formats::Item]| -> Vec<f64> {
        items
            .iter()
            .map(|i| i.score.unwrap_or(f32::NAN) as f64)
            .collect()
    };
    match &config.judge {
        Judge::Provenance => Ok(Scores {
            positives: examples.iter().map(|e| stored(&e.positives)).collect(),
            negatives: examples.iter().map(|e| stored(&e.negatives)).collect(),
            negative_vectors: None,
            encoder: None,
            name: "provenance".into(),
            fingerprint: "provenance: the scores stored in the training file".into(),
        }),
        Judge::BiEncoder { encoder } => {
            let encoder = encoder.load()?;
            let (queries, qindex) = intern(examples.iter().map(|e| text(&e.query)));
            let (passages, pindex) = intern(
                examples
                    .iter()
                    .flat_map(|e| e.positives.iter().chain(&e.negatives))
                    .map(text),
            );
            let encode = |texts: &[&str], kind: TextKind| -> Result<Embeddings> {
                let mut out = encode_all(
                    encoder.as_ref(),
                    texts,
                    kind,
                    config.cache.as_deref(),
                    progress,
                )?;
                normalize_rows(&mut out);
                Ok(out)
            };
            let q = encode(&queries, TextKind::Query)?;
            let p = encode(&passages, TextKind::Passage)?;
            let cos = |a: &[f32], b: &[f32]| -> f64 {
                a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
            };
            let score = |e: &Example, items: &[formats::Item]| -> Vec<f64> {
                let qv = q.row(qindex[text(&e.query)]);
                items
                    .iter()
                    .map(|i| cos(qv, p.row(pindex[text(i)])))
                    .collect()
            };
            let rows = examples
                .iter()
                .map(|e| e.negatives.iter().map(|n| pindex[text(n)]).collect())
                .collect();
            Ok(Scores {
                positives: examples.iter().map(|e| score(e, &e.positives)).collect(),
                negatives: examples.iter().map(|e| score(e, &e.negatives)).collect(),
                name: encoder.name().to_string(),
                fingerprint: encoder.fingerprint(),
                negative_vectors: Some((p, rows)),
                encoder: Some(encoder),
            })
        }
        Judge::CrossEncoder {
            model,
            batch_size,
            max_length,
            device,
        } => {
            let options = CrossEncoderOptions {
                batch_size: *batch_size,
                max_length: *max_length,
                device: device.clone(),
                ..CrossEncoderOptions::default()
            };
            let ce = CrossEncoder::load(&resolve_model(model)?, &options)?;
            let pairs: Vec<(&str, &str)> = examples
                .iter()
                .flat_map(|e| {
                    e.positives
                        .iter()
                        .chain(&e.negatives)
                        .map(|i| (text(&e.query), text(i)))
                })
                .collect();
            let (unique, index) = {
                let mut order: Vec<(&str, &str)> = Vec::new();
                let mut index: HashMap<(&str, &str), usize> = HashMap::new();
                for &p in &pairs {
                    index.entry(p).or_insert_with(|| {
                        order.push(p);
                        order.len() - 1
                    });
                }
                (order, index)
            };
            progress.begin("judge", Some(unique.len() as u64));
            let mut scores = Vec::with_capacity(unique.len());
            for chunk in unique.chunks(256) {
                scores.extend(ce.score(chunk)?);
                progress.update(scores.len() as u64);
            }
            progress.end();
            let score = |e: &Example, items: &[formats::Item]| -> Vec<f64> {
                items
                    .iter()
                    .map(|i| scores[index[&(text(&e.query), text(i))]] as f64)
                    .collect()
            };
            Ok(Scores {
                positives: examples.iter().map(|e| score(e, &e.positives)).collect(),
                negatives: examples.iter().map(|e| score(e, &e.negatives)).collect(),
                negative_vectors: None,
                encoder: None,
                name: ce.name().to_string(),
                fingerprint: ce.fingerprint(),
            })
        }
    }
}
