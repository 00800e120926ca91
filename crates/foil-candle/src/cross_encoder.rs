//! [`CrossEncoder`]: a Hugging Face `BertForSequenceClassification` folder (such as
//! cross-encoder/ms-marco-MiniLM-L-6-v2) or `XLMRobertaForSequenceClassification` folder (the
//! bge-reranker family) scoring (query, passage) pairs, run by the fused CPU path or, on a GPU,
//! by the candle model; and [`init_checkpoint`], which writes such a folder from a BERT folder
//! with a seeded random head (foil's tests use it where no trained cross-encoder can be
//! installed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use foil_core::fsutil::sha256_file;
use foil_core::rng::SplitMix64;
use foil_core::{Error, Reranker, Result};
use serde::Serialize;

use crate::config::BertConfig;
use crate::encoder::parse_device;
use crate::fast::FastBert;
use crate::model::{Batch, CandleBert};
use crate::tokenizer::TextTokenizer;
use crate::weights::Weights;

/// How a logit becomes a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreActivation {
    /// 1 / (1 + e^−x), sentence-transformers' default for one-logit cross-encoders.
    Sigmoid,
    /// The raw logit.
    Identity,
}

/// Settings of a cross-encoder.
#[derive(Debug, Clone, Serialize)]
pub struct CrossEncoderOptions {
    pub batch_size: usize,
    /// Longest pair in tokens (default 512, at most the position table).
    pub max_length: Option<usize>,
    pub activation: ScoreActivation,
    /// `cpu` (the default: the fused CPU kernels), `cuda` or `cuda:N` (the candle model on a
    /// GPU; needs the `cuda` feature), or `candle-cpu` (the candle model on the CPU, for
    /// cross-checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Default for CrossEncoderOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_length: None,
            activation: ScoreActivation::Sigmoid,
            device: None,
        }
    }
}

/// A BERT sequence-classification model with one output, scoring text pairs.
pub struct CrossEncoder {
    name: String,
    tokenizer: TextTokenizer,
    runner: Runner,
    options: CrossEncoderOptions,
    weights_path: PathBuf,
    weights_sha256: OnceLock<String>,
}

/// What runs the transformer and its head.
enum Runner {
    /// The fused CPU kernels, with the head computed on the host.
    Fast {
        model: Box<FastBert>,
        hidden: usize,
        /// `pooler.dense` (weight `[H, H]`, bias), applied with tanh to the `[CLS]` vector.
        pooler: Option<(Vec<f32>, Vec<f32>)>,
        classifier_w: Vec<f32>,
        classifier_b: f32,
    },
    /// The candle model with its classifier head, on a candle device (`cuda`, or `candle-cpu`
    /// for cross-checks); `pooler` is BERT's `pooler.dense`, which the model does not hold.
    Candle {
        model: Box<CandleBert>,
        pooler: Option<(Tensor, Tensor)>,
    },
}

impl CrossEncoder {
    /// Loads the folder `dir` onto `options.device` (`cpu`, the default, is the fused path).
    pub fn load(dir: &Path, options: &CrossEncoderOptions) -> Result<Self> {
        let device = parse_device(options.device.as_deref().unwrap_or("cpu"))?;
        let config = BertConfig::read(&dir.join("config.json"))?;
        if config.labels() != 1 {
            return Err(Error::Invalid(format!(
                "{}: a cross-encoder must have one output, this one has {}",
                dir.display(),
                config.labels()
            )));
        }
        let weights = Weights::load(dir, device.as_ref().unwrap_or(&Device::Cpu))?;
        let h = config.hidden_size;
        // BERT: pooler (dense + tanh) then `classifier`; (XLM-)RoBERTa (bge-reranker): the same
        // two layers, named `classifier.dense` and `classifier.out_proj`.
        let (dense, out) = if weights.contains("classifier.out_proj.weight") {
            ("classifier.dense", "classifier.out_proj")
        } else {
            ("pooler.dense", "classifier")
        };
        if !weights.contains(&format!("{out}.weight")) {
            return Err(Error::Invalid(format!(
                "{}: no classifier head (expected a BertForSequenceClassification or \
                 XLMRobertaForSequenceClassification checkpoint)",
                dir.display()
            )));
        }
        let has_dense = weights.contains(&format!("{dense}.weight"));
        let runner = match device {
            None => Runner::Fast {
                model: Box::new(FastBert::new(&config, &weights)?),
                hidden: h,
                pooler: if has_dense {
                    Some((
                        weights.vec(&format!("{dense}.weight"), &[h, h])?,
                        weights.vec(&format!("{dense}.bias"), &[h])?,
                    ))
                } else {
                    None
                },
                classifier_w: weights.vec(&format!("{out}.weight"), &[1, h])?,
                classifier_b: weights.vec(&format!("{out}.bias"), &[1])?[0],
            },
            Some(device) => {
                let mut model = CandleBert::new(&config, &weights, &device)?;
                model.set_inference(true);
                // (XLM-)RoBERTa's `classifier.dense` is part of the model's head.
                let pooler = if has_dense && dense == "pooler.dense" {
                    Some((
                        weights.get("pooler.dense.weight", &[h, h])?.clone(),
                        weights.get("pooler.dense.bias", &[h])?.clone(),
                    ))
                } else {
                    None
                };
                Runner::Candle {
                    model: Box::new(model),
                    pooler,
                }
            }
        };
        let max_length = options.max_length.unwrap_or(512).min(config.max_tokens());
        Ok(Self {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tokenizer: TextTokenizer::load(dir, max_length)?,
            runner,
            options: options.clone(),
            weights_path: weights.path().to_path_buf(),
            weights_sha256: OnceLock::new(),
        })
    }

    /// The raw logits of `pairs`.
    pub fn logits(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        let encoded = self.tokenizer.encode_pairs(pairs)?;
        // Longest first, so each batch holds pairs of similar length.
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(encoded[i].0.len()), i));
        let mut out = vec![0f32; encoded.len()];
        for batch in order.chunks(self.options.batch_size.max(1)) {
            let logits = match &self.runner {
                Runner::Fast {
                    model,
                    hidden,
                    pooler,
                    classifier_w,
                    classifier_b,
                } => {
                    let ids: Vec<&[u32]> = batch.iter().map(|&i| encoded[i].0.as_slice()).collect();
                    let types: Vec<&[u32]> =
                        batch.iter().map(|&i| encoded[i].1.as_slice()).collect();
                    let (states, offsets) = model.forward(&ids, Some(&types));
                    let h = *hidden;
                    (0..batch.len())
                        .map(|b| {
                            let first = &states[offsets[b] * h..offsets[b] * h + h];
                            head_logit(first, pooler.as_ref(), classifier_w, *classifier_b)
                        })
                        .collect()
                }
                Runner::Candle { model, pooler } => {
                    let ids: Vec<Vec<u32>> = batch.iter().map(|&i| encoded[i].0.clone()).collect();
                    let types: Vec<Vec<u32>> =
                        batch.iter().map(|&i| encoded[i].1.clone()).collect();
                    let input = Batch::new(&ids, Some(&types), model.device())?;
                    let states = model.forward(&input, None)?;
                    let pooler = pooler.as_ref().map(|(w, b)| (w, b));
                    let logits = model.classify(&states, pooler)?;
                    logits.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?
                }
            };
            for (&i, logit) in batch.iter().zip(logits) {
                out[i] = logit;
            }
        }
        Ok(out)
    }
}

/// The one-logit head on a `[CLS]` vector: `classifier(tanh(pooler(cls)))`, or
/// `classifier(cls)` for a checkpoint without a pooler.
fn head_logit(
    cls: &[f32],
    pooler: Option<&(Vec<f32>, Vec<f32>)>,
    classifier_w: &[f32],
    classifier_b: f32,
) -> f32 {
    let dot = |a: &[f32], x: &[f32]| a.iter().zip(x).map(|(a, x)| a * x).sum::<f32>();
    let h = cls.len();
    let logit = match pooler {
        // Each pooled value feeds the classifier's sum as it is made: no buffer.
        Some((w, bias)) => (0..h)
            .map(|j| classifier_w[j] * (dot(&w[j * h..(j + 1) * h], cls) + bias[j]).tanh())
            .sum::<f32>(),
        None => dot(classifier_w, cls),
    };
    logit + classifier_b
}

impl Reranker for CrossEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn fingerprint(&self) -> String {
        let sha = self.weights_sha256.get_or_init(|| {
            sha256_file(&self.weights_path).unwrap_or_else(|e| format!("unreadable: {e}"))
        });
        format!(
            "cross-encoder:weights={sha};tokenizer={};max_length={};activation={:?}",
            self.tokenizer.sha256(),
            self.tokenizer.max_length(),
            self.options.activation
        )
    }

    fn score(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        let mut logits = self.logits(pairs)?;
        if self.options.activation == ScoreActivation::Sigmoid {
            logits
                .iter_mut()
                .for_each(|x| *x = 1.0 / (1.0 + (-*x).exp()));
        }
        Ok(logits)
    }
}

/// Writes a `BertForSequenceClassification` folder to `output`: the encoder (and pooler) of the
/// BERT folder `base`, plus a one-logit classifier initialized like Hugging Face does (normal,
/// σ = 0.02, bias 0) from `seed`. The same base and seed give the same bytes.
pub fn init_checkpoint(base: &Path, output: &Path, seed: u64) -> Result<()> {
    let config_path = base.join("config.json");
    let config = BertConfig::read(&config_path)?;
    if config.family() != crate::config::Family::Bert {
        return Err(Error::format(
            &config_path,
            format!(
                "a new cross-encoder is made from a BERT folder; this is model_type {:?}",
                config.model_type
            ),
        ));
    }
    let weights = Weights::load(base, &Device::Cpu)?;
    let h = config.hidden_size;
    let mut rng = SplitMix64::new(seed);
    let mut normal = || {
        // Box–Muller.
        let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
        let u2 = rng.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    };
    let head: Vec<f32> = (0..h).map(|_| 0.02 * normal()).collect();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in weights.names() {
        if name.starts_with("classifier.") {
            continue;
        }
        let t = weights.get(name, &weights.shape(name)?)?.clone();
        tensors.insert(format!("bert.{name}"), t);
    }
    if !tensors.contains_key("bert.pooler.dense.weight") {
        return Err(Error::Invalid(format!(
            "{}: the base model has no pooler",
            base.display()
        )));
    }
    tensors.insert(
        "classifier.weight".into(),
        Tensor::from_vec(head, (1, h), &Device::Cpu)?,
    );
    tensors.insert(
        "classifier.bias".into(),
        Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu)?,
    );
    std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
    let model_path = output.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &model_path)
        .map_err(|e| Error::format(&model_path, e.to_string()))?;

    let raw = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let mut json: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| Error::format(&config_path, e.to_string()))?;
    json["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    json["num_labels"] = serde_json::json!(1);
    json["id2label"] = serde_json::json!({"0": "LABEL_0"});
    json["label2id"] = serde_json::json!({"LABEL_0": 0});
    let text =
        serde_json::to_vec_pretty(&json).map_err(|e| Error::format(&config_path, e.to_string()))?;
    foil_core::fsutil::write_atomic(&output.join("config.json"), &text)?;
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ] {
        let src = base.join(file);
        if src.is_file() {
            std::fs::copy(&src, output.join(file)).map_err(|e| Error::io(&src, e))?;
        }
    }
    Ok(())
}
