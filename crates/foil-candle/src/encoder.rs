//! [`BertEncoder`]: a sentence-transformers bi-encoder (a BERT-family encoder or a decoder
//! embedder, + pooling + optional normalization and prompts). BERT-family encoders run on
//! foil's fast fused CPU path; decoders, and everything on a GPU, on the candle model.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use foil_core::fsutil::sha256_file;
use foil_core::{Embeddings, Encoder, Error, Result, TextKind};
use serde::Serialize;

use crate::config::{ModelConfig, Pooling, SentenceConfig};
use crate::fast::FastBert;
use crate::fast::Precision;
use crate::model::{pool as pool_tensor, Batch, CandleModel};
use crate::tokenizer::TextTokenizer;
use crate::weights::Weights;

/// Settings that override what the model folder says.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EncoderOptions {
    /// Texts per forward pass (default 32).
    pub batch_size: Option<usize>,
    /// Longest input in tokens (default: the folder's `max_seq_length`).
    pub max_length: Option<usize>,
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
    pub query_prompt: Option<String>,
    pub passage_prompt: Option<String>,
    /// Run on this device through the candle model instead of the fused CPU path
    /// (`cuda:0`; `cpu` means the fused path).
    pub device: Option<String>,
    /// The dense products' arithmetic on the fused CPU path (default float32); bfloat16 runs
    /// where the CPU has AMX and falls back to float32, with a warning, elsewhere.
    pub precision: Option<Precision>,
}

/// What runs the transformer.
enum Backend {
    /// The fused CPU kernels of [`FastBert`].
    Fast(Box<FastBert>),
    /// The candle model, on any candle device (CUDA, or the CPU for decoders and
    /// cross-checks).
    Candle(Box<CandleModel>),
}

/// Parses `cpu`, `cuda` or `cuda:N`; `None` means the fused CPU path.
pub fn parse_device(name: &str) -> Result<Option<Device>> {
    match name {
        "cpu" => Ok(None),
        "candle-cpu" => Ok(Some(Device::Cpu)),
        _ => {
            let ordinal = match name.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        Error::Invalid(format!("bad device {name:?} (cpu, cuda, cuda:N)"))
                    })?,
                None => {
                    return Err(Error::Invalid(format!(
                        "bad device {name:?} (cpu, cuda, cuda:N)"
                    )))
                }
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::Invalid(format!(
                    "device {name}: this foil was built without CUDA (build with --features cuda on a machine with nvcc)"
                )));
            }
            Ok(Some(Device::new_cuda(ordinal)?))
        }
    }
}

/// A bi-encoder loaded from a Hugging Face / sentence-transformers folder.
pub struct BertEncoder {
    name: String,
    dir: PathBuf,
    config: ModelConfig,
    sentence: SentenceConfig,
    tokenizer: TextTokenizer,
    backend: Backend,
    batch_size: usize,
    weights_path: PathBuf,
    weights_sha256: OnceLock<String>,
    /// The precision the encoder runs at (part of its fingerprint when not float32).
    precision: Precision,
}

impl BertEncoder {
    /// Loads the model in `dir`.
    pub fn load(dir: &Path, options: &EncoderOptions) -> Result<Self> {
        let config = ModelConfig::read(&dir.join("config.json"))?;
        let mut sentence = SentenceConfig::read(dir, &config)?;
        if let Some(n) = options.max_length {
            if n < 2 || n > config.max_tokens() {
                let message = format!("must be between 2 and {}", config.max_tokens());
                return Err(Error::config("max_length", message));
            }
            sentence.max_length = n;
        }
        if let Some(p) = options.pooling {
            sentence.pooling = p;
        }
        if let Some(n) = options.normalize {
            sentence.normalize = n;
        }
        if let Some(p) = &options.query_prompt {
            sentence.query_prompt = p.clone();
        }
        if let Some(p) = &options.passage_prompt {
            sentence.passage_prompt = p.clone();
        }
        let tokenizer = TextTokenizer::load(dir, sentence.max_length)?;
        let device = parse_device(options.device.as_deref().unwrap_or("cpu"))?;
        let weights = Weights::load(dir, device.as_ref().unwrap_or(&Device::Cpu))?;
        let requested = options.precision.unwrap_or_default();
        let (backend, precision) = match (&config, device) {
            (ModelConfig::Encoder(bert), None) => {
                let mut fast = FastBert::new(bert, &weights)?;
                let precision = fast.set_precision(requested);
                (Backend::Fast(Box::new(fast)), precision)
            }
            (_, device) => (
                Backend::Candle(Box::new(
                    CandleModel::new(&config, &weights, &device.unwrap_or(Device::Cpu))?
                        .for_inference(),
                )),
                Precision::F32,
            ),
        };
        if precision != requested {
            tracing::warn!(
                "{}: bf16 needs the fused CPU path of a BERT-family encoder on a CPU with AMX \
                 (and Linux 5.16+) or AVX-512 BF16; encoding in float32",
                dir.display()
            );
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bert".into());
        Ok(Self {
            name,
            dir: dir.to_path_buf(),
            config,
            sentence,
            tokenizer,
            backend,
            batch_size: options.batch_size.unwrap_or(32).max(1),
            weights_path: weights.path().to_path_buf(),
            weights_sha256: OnceLock::new(),
            precision,
        })
    }

    /// The precision the encoder runs at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Pooling, normalization, maximum length and prompts in effect.
    pub fn sentence_config(&self) -> &SentenceConfig {
        &self.sentence
    }

    /// Token ids of `texts` as this encoder sees them (prompt included).
    pub fn tokenize(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Vec<u32>>> {
        let prompt = match kind {
            TextKind::Query => &self.sentence.query_prompt,
            TextKind::Passage => &self.sentence.passage_prompt,
        };
        if prompt.is_empty() {
            self.tokenizer.encode(texts)
        } else {
            let prompted: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
            let refs: Vec<&str> = prompted.iter().map(String::as_str).collect();
            self.tokenizer.encode(&refs)
        }
    }

    /// Encodes already tokenized texts; returns one pooled vector per sequence, in order.
    pub fn encode_ids(&self, ids: &[Vec<u32>]) -> Result<Embeddings> {
        let h = self.config.hidden_size();
        // Longest first, so each batch holds sequences of similar length.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(ids[i].len()), i));
        let mut out = vec![0f32; ids.len() * h];
        for batch in order.chunks(self.batch_size) {
            match &self.backend {
                Backend::Fast(model) => {
                    let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
                    let (hidden, offsets) = model.forward(&seqs, None);
                    for (b, &i) in batch.iter().enumerate() {
                        let rows = &hidden[offsets[b] * h..offsets[b + 1] * h];
                        pool(rows, h, self.sentence.pooling, &mut out[i * h..(i + 1) * h]);
                    }
                }
                Backend::Candle(model) => {
                    let seqs: Vec<Vec<u32>> = batch.iter().map(|&i| ids[i].clone()).collect();
                    let input = Batch::new(&seqs, None, model.device())?;
                    let hidden = model.forward(&input, None)?;
                    let pooled = pool_tensor(&hidden, &input.mask, self.sentence.pooling, false)?;
                    let pooled: Vec<f32> =
                        pooled.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
                    for (b, &i) in batch.iter().enumerate() {
                        out[i * h..(i + 1) * h].copy_from_slice(&pooled[b * h..(b + 1) * h]);
                    }
                }
            }
        }
        if self.sentence.normalize {
            out.chunks_exact_mut(h).for_each(normalize);
        }
        Ok(Embeddings::from_vec(h, out))
    }
}

/// Pools the token rows of one sequence into `dst`.
fn pool(rows: &[f32], h: usize, pooling: Pooling, dst: &mut [f32]) {
    match pooling {
        Pooling::Cls => dst.copy_from_slice(&rows[..h]),
        Pooling::LastToken => dst.copy_from_slice(&rows[rows.len() - h..]),
        Pooling::Mean => {
            let n = rows.len() / h;
            dst.iter_mut().for_each(|x| *x = 0.0);
            for row in rows.chunks_exact(h) {
                dst.iter_mut().zip(row).for_each(|(d, r)| *d += r);
            }
            let inv = 1.0 / n.max(1) as f32;
            dst.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// Scales `v` to unit length (sentence-transformers' `Normalize`: divides by max(‖v‖, 1e-12)).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

impl Encoder for BertEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.config.hidden_size()
    }

    fn fingerprint(&self) -> String {
        let sha = self.weights_sha256.get_or_init(|| {
            sha256_file(&self.weights_path).unwrap_or_else(|e| format!("unreadable: {e}"))
        });
        let s = &self.sentence;
        // float32 adds nothing, so that caches written before precisions existed stay valid;
        // bf16 names what it rounds (its first version rounded the dense products only).
        let precision = match self.precision {
            Precision::F32 => "",
            Precision::Bf16 => ";precision=bf16;scores=bf16",
        };
        format!(
            "bert:weights={sha};tokenizer={};pooling={:?};normalize={};max_length={};query_prompt={:?};passage_prompt={:?}{precision}",
            self.tokenizer.sha256(),
            s.pooling,
            s.normalize,
            s.max_length,
            s.query_prompt,
            s.passage_prompt
        )
    }

    fn encode(&self, texts: &[&str], kind: TextKind) -> Result<Embeddings> {
        let ids = self.tokenize(texts, kind)?;
        self.encode_ids(&ids)
    }
}
