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
        if matches!(config.model_type.as_str(), "qwen2" | "qwen3" | "modernbert") {
            return Err(Error::format(
                path,
                format!(
                    "model_type {:?}: foil's cross-encoders are BERT-family encoders \
                     (bert, mpnet, roberta, xlm-roberta)",
                    config.model_type
                ),
            ));
        }
        if !matches!(
            config.model_type.as_str(),
            "bert" | "mpnet" | "roberta" | "xlm-roberta"
        ) {
            return Err(Error::format(
                path,
                format!(
                    "model_type {:?}: foil runs BERT, MPNet and (XLM-)RoBERTa encoders \
                     (model_type bert, mpnet, roberta, xlm-roberta), ModernBERT (modernbert) \
                     and Qwen2/Qwen3 decoder embedders (qwen2, qwen3)",
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

/// A decoder embedder's architecture as `config.json` describes it: a Qwen2- or Qwen3-style
/// causal transformer (Qwen3-Embedding, gte-Qwen2) — RMSNorm before attention and MLP, rotary
/// positions, grouped-query attention, SwiGLU. Qwen2 puts biases on the q/k/v projections;
/// Qwen3 has none (unless `attention_bias`) and normalizes q and k per head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// `qwen2` or `qwen3`.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Key/value heads, each shared by `num_attention_heads / num_key_value_heads` query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Qwen3 names it; Qwen2 uses `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Qwen3: biases on all four attention projections (default none).
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_dropout: f64,
    /// Long-context rotary scaling; foil runs plain rotary positions only.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub use_sliding_window: bool,
    /// The padding token. As in PyTorch's `nn.Embedding(padding_idx)`, its embedding row gets
    /// no gradient — which matters when it is also the end-of-text token that the last-token
    /// vector is read from.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_silu() -> String {
    "silu".into()
}

impl DecoderConfig {
    fn check(self, path: &Path) -> Result<Self> {
        let kv = self.kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(Error::format(
                path,
                "num_attention_heads is not a multiple of num_key_value_heads",
            ));
        }
        if self.hidden_act != "silu" {
            return Err(Error::format(
                path,
                format!(
                    "unsupported hidden_act {:?} (decoders: silu)",
                    self.hidden_act
                ),
            ));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Error::format(
                path,
                "rope_scaling is set: foil runs plain rotary positions only",
            ));
        }
        if self.use_sliding_window {
            return Err(Error::format(
                path,
                "use_sliding_window is true: foil runs full causal attention only",
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::format(
                path,
                "head_dim must be even for rotary positions",
            ));
        }
        Ok(self)
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Whether the q, k and v projections have biases (Qwen2 always; Qwen3 with
    /// `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias == Some(true)
    }

    /// Whether the output projection has a bias (Qwen3 with `attention_bias` only).
    pub fn o_bias(&self) -> bool {
        self.model_type == "qwen3" && self.attention_bias == Some(true)
    }

    /// Whether q and k are RMS-normalized per head before the rotary positions (Qwen3).
    pub fn qk_norm(&self) -> bool {
        self.model_type == "qwen3"
    }
}

/// ModernBERT's architecture as `config.json` describes it: pre-norm layers with LayerNorms
/// (no biases by default), one fused QKV projection, rotary positions, GeGLU, and attention that
/// is global in every `global_attn_every_n_layers`-th layer (from layer 0) and a sliding window
/// of `local_attention` tokens (half on each side) in the others, each with its own rotary base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModernBertConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_modernbert_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub norm_bias: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_every_n")]
    pub global_attn_every_n_layers: usize,
    #[serde(default = "default_local_attention")]
    pub local_attention: usize,
    #[serde(default = "default_global_theta")]
    pub global_rope_theta: f64,
    /// Falls back to the global base when absent, as transformers does.
    #[serde(default)]
    pub local_rope_theta: Option<f64>,
    #[serde(default = "default_act")]
    pub hidden_activation: String,
    #[serde(default)]
    pub embedding_dropout: f64,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub mlp_dropout: f64,
}

fn default_modernbert_eps() -> f64 {
    1e-5
}
fn default_every_n() -> usize {
    3
}
fn default_local_attention() -> usize {
    128
}
fn default_global_theta() -> f64 {
    160000.0
}

impl ModernBertConfig {
    fn check(self, path: &Path) -> Result<Self> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
            || !self.head_dim().is_multiple_of(2)
        {
            return Err(Error::format(
                path,
                "hidden_size / num_attention_heads must be a whole, even head size",
            ));
        }
        if !matches!(
            self.hidden_activation.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return Err(Error::format(
                path,
                format!("unsupported hidden_activation {:?}", self.hidden_activation),
            ));
        }
        if self.global_attn_every_n_layers == 0 {
            return Err(Error::format(
                path,
                "global_attn_every_n_layers must be at least 1",
            ));
        }
        Ok(self)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Whether layer `layer` attends globally (else within the sliding window).
    pub fn is_global(&self, layer: usize) -> bool {
        layer.is_multiple_of(self.global_attn_every_n_layers)
    }

    /// The rotary base of layer `layer`.
    pub fn rope_theta(&self, layer: usize) -> f64 {
        if self.is_global(layer) {
            self.global_rope_theta
        } else {
            self.local_rope_theta.unwrap_or(self.global_rope_theta)
        }
    }
}

/// The architecture of a model folder: a BERT-family encoder, ModernBERT, or a decoder
/// embedder.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Encoder(BertConfig),
    ModernBert(ModernBertConfig),
    Decoder(DecoderConfig),
}

impl ModelConfig {
    /// Reads `config.json`, choosing the architecture by its `model_type`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        #[derive(Deserialize)]
        struct Kind {
            #[serde(default)]
            model_type: Option<String>,
        }
        let kind: Kind = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
        match kind.model_type.as_deref() {
            Some("qwen2" | "qwen3") => {
                let config: DecoderConfig = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::format(path, format!("not a Qwen2/Qwen3 config.json: {e}"))
                })?;
                Ok(Self::Decoder(config.check(path)?))
            }
            Some("modernbert") => {
                let config: ModernBertConfig = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::format(path, format!("not a ModernBERT config.json: {e}"))
                })?;
                Ok(Self::ModernBert(config.check(path)?))
            }
            _ => BertConfig::read(path).map(Self::Encoder),
        }
    }

    /// The width of the hidden states (and of the text vectors).
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Encoder(c) => c.hidden_size,
            Self::ModernBert(c) => c.hidden_size,
            Self::Decoder(c) => c.hidden_size,
        }
    }

    /// The longest sequence the model takes.
    pub fn max_tokens(&self) -> usize {
        match self {
            Self::Encoder(c) => c.max_tokens(),
            Self::ModernBert(c) => c.max_position_embeddings,
            Self::Decoder(c) => c.max_position_embeddings,
        }
    }

    /// Hugging Face's `model_type`.
    pub fn model_type(&self) -> &str {
        match self {
            Self::Encoder(c) => &c.model_type,
            Self::ModernBert(c) => &c.model_type,
            Self::Decoder(c) => &c.model_type,
        }
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
    /// The last real token's vector (decoder embedders, whose last token has seen the whole
    /// text).
    LastToken,
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
    #[serde(default)]
    pooling_mode_lasttoken: bool,
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
    pub fn read(dir: &Path, model: &ModelConfig) -> Result<Self> {
        let mut config = SentenceConfig {
            pooling: match model {
                ModelConfig::Encoder(_) | ModelConfig::ModernBert(_) => Pooling::Mean,
                ModelConfig::Decoder(_) => Pooling::LastToken,
            },
            normalize: false,
            max_length: model.max_tokens(),
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
            config.pooling = match (
                p.pooling_mode_cls_token,
                p.pooling_mode_mean_tokens,
                p.pooling_mode_lasttoken,
            ) {
                (true, false, false) => Pooling::Cls,
                (false, true, false) => Pooling::Mean,
                (false, false, true) => Pooling::LastToken,
                _ => {
                    return Err(Error::format(
                        &pooling_path,
                        "foil supports exactly one of pooling_mode_mean_tokens, \
                         pooling_mode_cls_token and pooling_mode_lasttoken",
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
                config.max_length = n.min(model.max_tokens());
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
