//! What a model folder says about the model: Hugging Face's `config.json` ([`BertConfig`], with
//! its [`Family`]) and
//! sentence-transformers' `modules.json`, `1_Pooling/config.json`,
//! `sentence_bert_config.json` and `config_sentence_transformers.json` ([`SentenceConfig`]).

use std::path::Path;

use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// An encoder architecture as `config.json` describes it: BERT, or a family with BERT's layer
/// layout ([`Family`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// `bert`, `mpnet`, `roberta` or `xlm-roberta` (Hugging Face's `model_type`; `bert` when
    /// absent).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Present for `BertForSequenceClassification` checkpoints.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Number of classifier outputs (`id2label` size); 1 for a cross-encoder.
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub id2label: Option<serde_json::Map<String, serde_json::Value>>,
    /// The padding token; MPNet and RoBERTa number positions from `pad_token_id + 1`.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// MPNet's number of relative-position buckets (32).
    #[serde(default)]
    pub relative_attention_num_buckets: Option<usize>,
}

/// The encoder families foil runs. They share BERT's layers (self-attention, feed-forward,
/// post-LayerNorm); what differs is named here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT and the models built on it (MiniLM, E5, GTE, BGE): learned absolute positions from
    /// 0, token types.
    Bert,
    /// MPNet (all-mpnet-base-v2): learned absolute positions from `pad_token_id + 1`, no token
    /// types, and a learned bias per head and relative-position bucket (T5's buckets) added to
    /// every layer's attention scores.
    MPNet,
    /// RoBERTa and XLM-RoBERTa (multilingual-e5, bge-m3): BERT's tensors and layers, positions
    /// from `pad_token_id + 1`, one token type.
    Roberta,
}

/// MPNet's (and T5's) largest distance with its own buckets; farther ones share the last.
const MPNET_MAX_DISTANCE: usize = 128;

impl Family {
    /// The checkpoint's name of the tensor that BERT calls `bert_name`.
    pub fn tensor_name(self, bert_name: &str) -> String {
        match self {
            Family::Bert | Family::Roberta => bert_name.to_string(),
            Family::MPNet => [
                (".attention.self.query.", ".attention.attn.q."),
                (".attention.self.key.", ".attention.attn.k."),
                (".attention.self.value.", ".attention.attn.v."),
                (".attention.output.dense.", ".attention.attn.o."),
                (".attention.output.LayerNorm.", ".attention.LayerNorm."),
            ]
            .iter()
            .find(|(bert, _)| bert_name.contains(bert))
            .map_or_else(
                || bert_name.to_string(),
                |(bert, mpnet)| bert_name.replacen(bert, mpnet, 1),
            ),
        }
    }
}

/// The relative-position bucket of key position `key` seen from query position `query`, as
/// Hugging Face's `MPNetEncoder.relative_position_bucket` computes it (bidirectional: half the
/// buckets for keys before the query; exact distances up to a quarter of the buckets, then
/// logarithmic up to 128, in float32 like PyTorch).
pub fn relative_bucket(query: usize, key: usize, num_buckets: usize) -> usize {
    let half = num_buckets / 2;
    let max_exact = half / 2;
    // Hugging Face's n = −(key − query).
    let (mut bucket, n) = if key > query {
        (half, key - query)
    } else {
        (0, query - key)
    };
    if n < max_exact {
        bucket += n;
    } else {
        let log_ratio = (n as f32 / max_exact as f32).ln();
        let log_range = (MPNET_MAX_DISTANCE as f64 / max_exact as f64).ln() as f32;
        let large = max_exact + (log_ratio / log_range * (half - max_exact) as f32) as usize;
        bucket += large.min(half - 1);
    }
    bucket
}

fn default_act() -> String {
    "gelu".into()
}
fn default_model_type() -> String {
    "bert".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}

impl BertConfig {
    /// Reads `config.json` and checks that foil can run the architecture.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let config: BertConfig = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(path, format!("not a BERT-family config.json: {e}")))?;
        if !matches!(
            config.model_type.as_str(),
            "bert" | "mpnet" | "roberta" | "xlm-roberta"
        ) {
            return Err(Error::format(
                path,
                format!(
                    "model_type {:?}: foil runs BERT, MPNet and (XLM-)RoBERTa encoders \
                     (model_type bert, mpnet, roberta, xlm-roberta)",
                    config.model_type
                ),
            ));
        }
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::format(
                path,
                "hidden_size is not a multiple of num_attention_heads",
            ));
        }
        if !matches!(
            config.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu"
        ) {
            return Err(Error::format(
                path,
                format!("unsupported hidden_act {:?}", config.hidden_act),
            ));
        }
        Ok(config)
    }

    /// The family, from `model_type` (checked by [`BertConfig::read`]).
    pub fn family(&self) -> Family {
        match self.model_type.as_str() {
            "mpnet" => Family::MPNet,
            "roberta" | "xlm-roberta" => Family::Roberta,
            _ => Family::Bert,
        }
    }

    /// The position-table row of a sequence's first token: 0 for BERT; for MPNet and RoBERTa
    /// `pad_token_id + 1`, as Hugging Face numbers the positions of unpadded tokens.
    pub fn position_offset(&self) -> usize {
        match self.family() {
            Family::Bert => 0,
            Family::MPNet | Family::Roberta => self.pad_token_id.unwrap_or(1) as usize + 1,
        }
    }

    /// The longest sequence the position table holds.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset()
    }

    /// MPNet's number of relative-position buckets; `None` for families without them.
    pub fn relative_buckets(&self) -> Option<usize> {
        match self.family() {
            Family::Bert | Family::Roberta => None,
            Family::MPNet => Some(self.relative_attention_num_buckets.unwrap_or(32)),
        }
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Number of classifier outputs, for sequence-classification checkpoints.
    pub fn labels(&self) -> usize {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|m| m.len()))
            .unwrap_or(1)
    }
}

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean of the token vectors, padding excluded (sentence-transformers' default).
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
}

/// The sentence-transformers side of a model folder, with defaults for a plain BERT folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceConfig {
    pub pooling: Pooling,
    /// L2-normalize text vectors (a `Normalize` module in `modules.json`).
    pub normalize: bool,
    /// Longest input in tokens, special tokens included.
    pub max_length: usize,
    /// Prepended to queries (e.g. E5's "query: ").
    pub query_prompt: String,
    /// Prepended to passages (e.g. E5's "passage: ").
    pub passage_prompt: String,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

impl SentenceConfig {
    /// Reads the sentence-transformers files of `dir`. Without them: mean pooling, no
    /// normalization, `max_position_embeddings` as the maximum length, no prompts.
    pub fn read(dir: &Path, bert: &BertConfig) -> Result<Self> {
        let mut config = SentenceConfig {
            pooling: Pooling::Mean,
            normalize: false,
            max_length: bert.max_tokens(),
            query_prompt: String::new(),
            passage_prompt: String::new(),
        };
        let modules: Option<Vec<Module>> = read_json(&dir.join("modules.json"))?;
        let mut pooling_dir = dir.join("1_Pooling");
        if let Some(modules) = &modules {
            config.normalize = modules.iter().any(|m| m.kind.ends_with("Normalize"));
            if let Some(p) = modules.iter().find(|m| m.kind.ends_with("Pooling")) {
                pooling_dir = dir.join(&p.path);
            }
        }
        let pooling_path = pooling_dir.join("config.json");
        if let Some(p) = read_json::<PoolingFile>(&pooling_path)? {
            config.pooling = match (p.pooling_mode_cls_token, p.pooling_mode_mean_tokens) {
                (true, false) => Pooling::Cls,
                (false, true) => Pooling::Mean,
                _ => {
                    return Err(Error::format(
                        &pooling_path,
                        "foil supports exactly one of pooling_mode_mean_tokens and pooling_mode_cls_token",
                    ))
                }
            };
            if p.pooling_mode_max_tokens || p.pooling_mode_mean_sqrt_len_tokens {
                return Err(Error::format(
                    &pooling_path,
                    "max and mean-sqrt-len pooling are not supported",
                ));
            }
        }
        #[derive(Deserialize)]
        struct SbertFile {
            max_seq_length: Option<usize>,
        }
        if let Some(s) = read_json::<SbertFile>(&dir.join("sentence_bert_config.json"))? {
            if let Some(n) = s.max_seq_length {
                config.max_length = n.min(bert.max_tokens());
            }
        }
        #[derive(Deserialize)]
        struct StFile {
            #[serde(default)]
            prompts: std::collections::BTreeMap<String, String>,
        }
        if let Some(s) = read_json::<StFile>(&dir.join("config_sentence_transformers.json"))? {
            if let Some(q) = s.prompts.get("query") {
                config.query_prompt = q.clone();
            }
            for key in ["passage", "document"] {
                if let Some(p) = s.prompts.get(key) {
                    config.passage_prompt = p.clone();
                }
            }
        }
        Ok(config)
    }
}
