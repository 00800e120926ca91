//! The llama / qwen2 decoder (Touvron et al. 2023, "LLaMA"; Qwen2 adds q/k/v biases and
//! rotates half-split pairs), run on packed rows.
//!
//! Each layer computes, for a row `x` at position `p`:
//!
//! ```text
//! h = x + Wo · attn(rope(Wq·n + bq, p), rope(Wk·n + bk), Wv·n + bv),   n = rmsnorm(x) ⊙ g_attn
//! y = h + Wdown · (silu(Wgate·m) ⊙ Wup·m),                            m = rmsnorm(h) ⊙ g_ffn
//! rmsnorm(x) = x / sqrt(mean(x²) + ε)
//! ```
//!
//! **Packed rows.** One forward call takes the new tokens of many sequences as one matrix of
//! rows, sequence after sequence ([`Segment`]s): a prompt contributes all its tokens (batched
//! prefill), a decoding sequence its one latest token (batched decode), both in the same call.
//! The weight matrices multiply all rows at once (`Linear`: foil's AVX2 kernel for GGML's
//! 32-value blocks and Q4_K/Q5_K/Q6_K, candle's `QMatMul` for the rest; both quantize the
//! activations and run int8 dot products, except that foil's kernel multiplies prompt rows of
//! 32-value blocks in float32, see [`Segment::prompt`]), so the weights are read once per call
//! instead of once per sequence. Only attention is per sequence: each row attends to its own
//! sequence's cache, so no padding is needed. Every row's arithmetic is independent of the
//! other rows (see `Linear` for the one kernel choice that depends on the row count), so a
//! sequence's output does not depend on its batch.
//!
//! **KV cache.** [`KvCache`] holds, per sequence and per layer, the keys and the values of every
//! position so far as `[position][kv_head][head_dim]` rows at half precision (f16, as llama.cpp
//! keeps them by default), appended as tokens are fed. Decoding reads a sequence's whole cache
//! for every token, so half precision halves that traffic and the memory each live sequence
//! holds. Grouped-query attention maps query head `h` to kv head `h / (heads / kv_heads)`; the
//! query heads of a kv head run together, reading its keys and values once.

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use foil_core::{Error, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::sync::Arc;

use crate::gguf::GgufFile;
use crate::qmatmul::{self, Format, QMatrix};
use crate::team::{self, Team};

/// How rotary embeddings pair dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: llama GGUFs (their q/k weights are permuted for it).
    Interleaved,
    /// Pairs `(i, i + d/2)`: qwen2 (GPT-NeoX style).
    HalfSplit,
}

/// Model dimensions, read from the GGUF metadata.
#[derive(Clone, Debug)]
pub struct Config {
    pub architecture: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_dim: usize,
    pub ffn: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    pub context_length: usize,
    pub vocab: usize,
    rope_style: RopeStyle,
}

impl Config {
    fn read(file: &GgufFile) -> Result<Self> {
        let arch = file.string("general.architecture")?;
        let rope_style = match arch.as_str() {
            "llama" => RopeStyle::Interleaved,
            "qwen2" => RopeStyle::HalfSplit,
            other => {
                return Err(Error::format(
                    &file.path,
                    format!("unsupported architecture \"{other}\" (llama and qwen2 are supported)"),
                ))
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = file.usize(&key("embedding_length"))?;
        let heads = file.usize(&key("attention.head_count"))?;
        let kv_heads = if file.has(&key("attention.head_count_kv")) {
            file.usize(&key("attention.head_count_kv"))?
        } else {
            heads
        };
        if heads == 0 || kv_heads == 0 || hidden % heads != 0 || heads % kv_heads != 0 {
            return Err(Error::format(
                &file.path,
                format!("inconsistent attention shape: {hidden} hidden, {heads} heads, {kv_heads} kv heads"),
            ));
        }
        let head_dim = hidden / heads;
        let rope_dim = if file.has(&key("rope.dimension_count")) {
            file.usize(&key("rope.dimension_count"))?
        } else {
            head_dim
        };
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(Error::format(
                &file.path,
                format!("bad rope dimension count {rope_dim} for head size {head_dim}"),
            ));
        }
        let rope_base = if file.has(&key("rope.freq_base")) {
            file.f32(&key("rope.freq_base"))?
        } else {
            10_000.0
        };
        Ok(Config {
            hidden,
            layers: file.usize(&key("block_count"))?,
            heads,
            kv_heads,
            head_dim,
            rope_dim,
            ffn: file.usize(&key("feed_forward_length"))?,
            rope_base,
            rms_eps: file.f32(&key("attention.layer_norm_rms_epsilon"))?,
            context_length: file.usize(&key("context_length"))?,
            vocab: 0,
            rope_style,
            architecture: arch,
        })
    }

    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// How weights are prepared at load.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Keep activations quantized in 32-value blocks, as llama.cpp does, instead of padding
    /// Q8_0 rows for candle's AVX512-VNNI kernels (which quantize activations per 256 values:
    /// faster, but logits drift further from llama.cpp's).
    pub precise: bool,
    /// Threads the matrix multiplies are split for (the rayon pool size; the model's team has
    /// as many).
    pub threads: usize,
}

/// A quantized weight matrix `[out, in]` applied to rows.
///
/// Matrices of 32-value blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) and of Q4_K, Q5_K and Q6_K
/// super-blocks run on foil's own AVX2 kernel ([`crate::qmatmul`]), read as stored, where the
/// CPU has it, except where candle's AVX512-VNNI tiles are chosen. Everything else (other
/// K-quants, and every K-quant where candle's tiles run) goes through candle's `QMatMul`,
/// with the matrix cut into blocks of output rows multiplied in parallel on the forward call's
/// threads ([`crate::team`]; candle itself runs single-threaded: its own thread pool is sized
/// once per process and stalled when the machine was busy). Cutting by output rows leaves each output value's arithmetic unchanged.
struct Linear {
    kernel: Kernel,
    out: usize,
    input: usize,
}

enum Kernel {
    /// Shared with the token embedding when the model ties them.
    Own(Arc<QMatrix>),
    Candle {
        parts: Vec<(QMatMul, usize)>,
        /// Row length of the stored weight: `input`, or more when padded with zeros.
        padded: usize,
        /// candle picks a different x86 kernel for Q6_K weights when it multiplies a single
        /// row than when it multiplies several (the two sum in different orders), so a lone
        /// row is multiplied as two identical rows: a sequence decoding alone then gets
        /// bit-identical results to the same sequence decoding in a batch.
        pad_single_row: bool,
    },
}

/// The formats foil's own kernel reads.
fn own_format(dtype: GgmlDType) -> Option<Format> {
    match dtype {
        GgmlDType::Q8_0 => Some(Format::Q8_0),
        GgmlDType::Q4_0 => Some(Format::Q4_0),
        GgmlDType::Q4_1 => Some(Format::Q4_1),
        GgmlDType::Q5_0 => Some(Format::Q5_0),
        GgmlDType::Q5_1 => Some(Format::Q5_1),
        GgmlDType::Q4K => Some(Format::Q4K),
        GgmlDType::Q5K => Some(Format::Q5K),
        GgmlDType::Q6K => Some(Format::Q6K),
        _ => None,
    }
}

/// Which kernels a model's quantized matrices get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockKernels {
    /// candle's AVX512-VNNI tiles, 4/5-bit weights requantized to Q8_0.
    CandleVnni,
    /// foil's AVX2 kernel ([`crate::qmatmul`]), weights as stored (32-value blocks and
    /// Q4_K/Q5_K/Q6_K).
    Avx2,
    /// candle's portable code, 4/5-bit weights requantized to Q8_0.
    CandlePortable,
}

impl BlockKernels {
    fn for_options(opts: LoadOptions) -> Self {
        if vnni_available() && !opts.precise {
            BlockKernels::CandleVnni
        } else if qmatmul::available() {
            BlockKernels::Avx2
        } else {
            BlockKernels::CandlePortable
        }
    }

    fn name(self) -> &'static str {
        match self {
            BlockKernels::CandleVnni => "avx512-vnni",
            // "+k": the K-quants run on it too (their outputs changed with that); "+f32prompt":
            // prompt rows of 32-value blocks run in float32 (see `qmatmul/prompt.rs`).
            BlockKernels::Avx2 => "avx2+k+f32prompt",
            BlockKernels::CandlePortable => "portable",
        }
    }
}

impl Linear {
    /// Converts `t` to the form it is multiplied in; returns it and its stored row length.
    fn prepare(t: QTensor, opts: LoadOptions) -> candle_core::Result<(QTensor, usize)> {
        let (out, input) = t.shape().dims2()?;
        // candle has no SIMD x86 kernels for these formats (its scalar code is ~20x slower):
        // unless foil's own kernel reads them as they are, they are requantized to Q8_0, whose
        // 8-bit grid holds their 4/5-bit values closely.
        let slow = matches!(
            t.dtype(),
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
        );
        let kernels = BlockKernels::for_options(opts);
        let t = if slow && input % 32 == 0 && kernels != BlockKernels::Avx2 {
            let f = t.dequantize(&Device::Cpu)?;
            QTensor::quantize(&f, GgmlDType::Q8_0)?
        } else {
            t
        };
        // candle's AVX512-VNNI tiles need rows of a multiple of 256 values; Q8_0 rows are
        // padded with zero blocks up to one (the matching activation columns are zero too, so
        // the products are unchanged).
        if t.dtype() == GgmlDType::Q8_0
            && input % 256 != 0
            && out % 16 == 0
            && kernels == BlockKernels::CandleVnni
        {
            let padded = input.div_ceil(256) * 256;
            return Ok((pad_q8_0(&t, out, padded)?, padded));
        }
        Ok((t, input))
    }

    /// A prepared `[out, padded]` matrix whose logical rows hold `input` values.
    fn from_prepared(
        t: QTensor,
        input: usize,
        padded: usize,
        opts: LoadOptions,
    ) -> candle_core::Result<Self> {
        let out = t.shape().dims2()?.0;
        if let (Some(format), BlockKernels::Avx2) =
            (own_format(t.dtype()), BlockKernels::for_options(opts))
        {
            if let Some(m) = QMatrix::new(format, t.data()?.into_owned(), out, padded) {
                return Ok(Linear {
                    kernel: Kernel::Own(Arc::new(m)),
                    out,
                    input,
                });
            }
        }
        let pad_single_row = t.dtype() == GgmlDType::Q6K;
        // One block of output rows per thread (multiples of 16 rows, at least 64): each block
        // quantizes the activations again, so more blocks would cost more than they balance.
        let per_part = out
            .div_ceil(opts.threads.max(1))
            .next_multiple_of(16)
            .max(64);
        let parts = if per_part >= out {
            vec![(QMatMul::from_qtensor(t)?, out)]
        } else {
            split_rows(&t, out, padded, per_part)?
                .into_iter()
                .map(|(q, rows)| Ok((QMatMul::from_qtensor(q)?, rows)))
                .collect::<candle_core::Result<Vec<_>>>()?
        };
        Ok(Linear {
            kernel: Kernel::Candle {
                parts,
                padded,
                pad_single_row,
            },
            out,
            input,
        })
    }

    /// `x` is `m` rows of `self.input` values; returns `m` rows of `self.out`. `prompt` says
    /// which rows are prompt tokens (see [`Segment::prompt`]; candle's kernels run both kinds
    /// alike).
    fn forward(&self, x: &[f32], m: usize, prompt: &[bool]) -> Result<Vec<f32>> {
        debug_assert_eq!(prompt.len(), m);
        let (parts, padded, pad_single_row) = match &self.kernel {
            Kernel::Own(w) => return Ok(w.forward_rows(x, prompt)),
            Kernel::Candle {
                parts,
                padded,
                pad_single_row,
            } => (parts, *padded, *pad_single_row),
        };
        let rows = if m == 1 && pad_single_row { 2 } else { m };
        let mut data = Vec::with_capacity(rows * padded);
        if padded == self.input {
            data.extend_from_slice(x);
        } else {
            for row in x.chunks(self.input) {
                data.extend_from_slice(row);
                data.resize(data.len() + padded - self.input, 0.0);
            }
        }
        if rows > m {
            data.extend_from_within(..);
        }
        let t = Tensor::from_vec(data, (rows, padded), &Device::Cpu).map_err(candle_err)?;
        let outs = team::map(parts.len(), |i| {
            parts[i]
                .0
                .forward(&t)
                .and_then(|y| y.flatten_all())
                .and_then(|y| y.to_vec1::<f32>())
                .map_err(candle_err)
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        if outs.len() == 1 {
            let mut v = outs.into_iter().next().unwrap_or_default();
            v.truncate(m * self.out);
            return Ok(v);
        }
        let mut y = Vec::with_capacity(m * self.out);
        for r in 0..m {
            for (o, (_, n)) in outs.iter().zip(parts) {
                y.extend_from_slice(&o[r * n..(r + 1) * n]);
            }
        }
        Ok(y)
    }
}

/// `t` (`[out, input]`) cut into blocks of at most `per_part` rows.
fn split_rows(
    t: &QTensor,
    out: usize,
    input: usize,
    per_part: usize,
) -> candle_core::Result<Vec<(QTensor, usize)>> {
    let dtype = t.dtype();
    let row_bytes = input / dtype.block_size() * dtype.type_size();
    let data = t.data()?;
    let mut parts = Vec::new();
    let mut r0 = 0;
    while r0 < out {
        let rows = per_part.min(out - r0);
        let bytes = data[r0 * row_bytes..(r0 + rows) * row_bytes].to_vec();
        let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, dtype)?;
        parts.push((QTensor::new(storage, (rows, input))?, rows));
        r0 += rows;
    }
    Ok(parts)
}

/// Matrices applied to the same input (q, k, v; gate, up), stacked into one matrix when they
/// share a format, so the activations are quantized once for all of them.
enum Stack {
    One(Linear, Vec<usize>),
    Many(Vec<Linear>),
}

impl Stack {
    /// `ts`: (tensor name, expected out, expected input).
    fn load(file: &mut GgufFile, ts: &[(String, usize, usize)], opts: LoadOptions) -> Result<Self> {
        let path = file.path.clone();
        for (name, out, input) in ts {
            let (_, dims) = file.matrix_info(name)?;
            if dims != (*out, *input) {
                return Err(Error::format(
                    &path,
                    format!(
                        "tensor \"{name}\" is [{}, {}], expected [{out}, {input}]",
                        dims.0, dims.1
                    ),
                ));
            }
        }
        if let Some(stack) = Self::load_own(file, ts, opts)? {
            return Ok(stack);
        }
        let mut prepared = Vec::new();
        for (name, _, input) in ts {
            let err =
                |e: candle_core::Error| Error::format(&path, format!("tensor \"{name}\": {e}"));
            let t = file.tensor(name)?;
            let (t, padded) = Linear::prepare(t, opts).map_err(err)?;
            prepared.push((t, *input, padded));
        }
        let err = |e: candle_core::Error| Error::format(&path, format!("tensors {ts:?}: {e}"));
        let same = prepared
            .windows(2)
            .all(|w| w[0].0.dtype() == w[1].0.dtype() && w[0].2 == w[1].2);
        if prepared.len() > 1 && same {
            let dtype = prepared[0].0.dtype();
            let (input, padded) = (prepared[0].1, prepared[0].2);
            let mut bytes = Vec::new();
            for (t, _, _) in &prepared {
                bytes.extend_from_slice(&t.data().map_err(err)?);
            }
            let outs: Vec<usize> = ts.iter().map(|t| t.1).collect();
            let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, dtype)
                .map_err(err)?;
            let t = QTensor::new(storage, (outs.iter().sum::<usize>(), padded)).map_err(err)?;
            return Ok(Stack::One(
                Linear::from_prepared(t, input, padded, opts).map_err(err)?,
                outs,
            ));
        }
        prepared
            .into_iter()
            .map(|(t, input, padded)| Linear::from_prepared(t, input, padded, opts).map_err(err))
            .collect::<Result<Vec<_>>>()
            .map(Stack::Many)
    }

    /// Matrices that all share one format of foil's own kernel, when that kernel runs them:
    /// read straight from the file into the kernel's buffer. (Through candle, a matrix is read,
    /// converted and copied, and the copies of the largest, the output matrix, stayed in the
    /// process's heap: Qwen2.5-0.5B held 785 MB after loading, now 552.) `None`: load them
    /// through candle.
    fn load_own(
        file: &mut GgufFile,
        ts: &[(String, usize, usize)],
        opts: LoadOptions,
    ) -> Result<Option<Self>> {
        if BlockKernels::for_options(opts) != BlockKernels::Avx2 {
            return Ok(None);
        }
        let dtype = file.matrix_info(&ts[0].0)?.0;
        let (Some(format), input) = (own_format(dtype), ts[0].2) else {
            return Ok(None);
        };
        for (name, _, i) in ts {
            if file.matrix_info(name)?.0 != dtype || *i != input {
                return Ok(None);
            }
        }
        let outs: Vec<usize> = ts.iter().map(|t| t.1).collect();
        let total = outs.iter().sum::<usize>();
        let mut bytes = Vec::with_capacity(total * format.row_bytes(input));
        for (name, _, _) in ts {
            file.append_tensor_bytes(name, &mut bytes)?;
        }
        let Some(m) = QMatrix::new(format, bytes, total, input) else {
            return Ok(None);
        };
        let linear = Linear {
            kernel: Kernel::Own(Arc::new(m)),
            out: total,
            input,
        };
        Ok(Some(if ts.len() == 1 {
            Stack::Many(vec![linear])
        } else {
            Stack::One(linear, outs)
        }))
    }

    /// `silu(gate) ⊙ up` for the stack [gate, up]: `m` rows of the gate's width. A stacked
    /// pair is read straight from the product's rows (no copies of the two halves: for a
    /// 1,024-row prompt chunk of Qwen2.5-0.5B each is 20 MB).
    fn swiglu(&self, x: &[f32], m: usize, prompt: &[bool]) -> Result<Vec<f32>> {
        let silu_times = |g: f32, u: f32| g / (1.0 + (-g).exp()) * u;
        if let Stack::One(l, outs) = self {
            if let [ffn, up] = outs[..] {
                if ffn == up {
                    let y = l.forward(x, m, prompt)?;
                    let mut h = vec![0f32; m * ffn];
                    team::for_each_chunk_mut(&mut h, ffn, |r, h| {
                        let (g, u) = y[r * 2 * ffn..(r + 1) * 2 * ffn].split_at(ffn);
                        for ((h, g), u) in h.iter_mut().zip(g).zip(u) {
                            *h = silu_times(*g, *u);
                        }
                    });
                    return Ok(h);
                }
            }
        }
        let mut gu = self.forward(x, m, prompt)?.into_iter();
        let (Some(mut g), Some(u)) = (gu.next(), gu.next()) else {
            return Err(Error::Invalid("gate/up projection lost an output".into()));
        };
        const CHUNK: usize = 4096;
        team::for_each_chunk_mut(&mut g, CHUNK, |i, g| {
            for (g, u) in g.iter_mut().zip(&u[i * CHUNK..]) {
                *g = silu_times(*g, *u);
            }
        });
        Ok(g)
    }

    /// Each matrix's output for `m` rows of `x`.
    fn forward(&self, x: &[f32], m: usize, prompt: &[bool]) -> Result<Vec<Vec<f32>>> {
        match self {
            Stack::Many(ls) => ls.iter().map(|l| l.forward(x, m, prompt)).collect(),
            Stack::One(l, outs) => {
                let y = l.forward(x, m, prompt)?;
                let mut parts: Vec<Vec<f32>> =
                    outs.iter().map(|n| Vec::with_capacity(m * n)).collect();
                for row in y.chunks(l.out) {
                    let mut at = 0;
                    for (p, n) in parts.iter_mut().zip(outs) {
                        p.extend_from_slice(&row[at..at + n]);
                        at += n;
                    }
                }
                Ok(parts)
            }
        }
    }
}

/// The kernels this CPU gets for quantized matrices by default: candle's AVX512-VNNI tiles
/// (4/5-bit weights requantized to Q8_0), foil's AVX2 kernel (`avx2+k+f32prompt`: 32-value blocks and
/// Q4_K/Q5_K/Q6_K), or candle's portable code (`foil --version` says which).
pub fn quantized_kernels() -> &'static str {
    BlockKernels::for_options(LoadOptions {
        precise: false,
        threads: 1,
    })
    .name()
}

fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A Q8_0 `[out, input]` matrix with each row extended by zero blocks to `padded` values.
fn pad_q8_0(t: &QTensor, out: usize, padded: usize) -> candle_core::Result<QTensor> {
    let block_bytes = GgmlDType::Q8_0.type_size();
    let blocks = GgmlDType::Q8_0.block_size();
    let input = t.shape().dims2()?.1;
    let (row, new_row) = (input / blocks * block_bytes, padded / blocks * block_bytes);
    let data = t.data()?;
    let mut bytes = vec![0u8; out * new_row];
    for (dst, src) in bytes.chunks_mut(new_row).zip(data.chunks(row)) {
        dst[..row].copy_from_slice(src);
    }
    let storage = QStorage::from_data(
        std::borrow::Cow::Owned(bytes),
        &Device::Cpu,
        GgmlDType::Q8_0,
    )?;
    QTensor::new(storage, (out, padded))
}

pub(crate) fn candle_err(e: candle_core::Error) -> Error {
    Error::Invalid(format!("model computation failed: {e}"))
}

struct Layer {
    attn_norm: Vec<f32>,
    /// q, k, v.
    qkv: Stack,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    wo: Linear,
    ffn_norm: Vec<f32>,
    /// gate, up.
    gate_up: Stack,
    down: Linear,
}

/// The token embedding table `[vocab, hidden]`.
enum Embedding {
    /// In a format of foil's kernel: rows dequantized as candle dequantizes them.
    Own(Arc<QMatrix>),
    Candle(QTensor),
}

impl Embedding {
    /// The rows of `tokens`, one after another.
    fn rows(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        match self {
            Embedding::Own(m) => {
                let mut x = Vec::with_capacity(tokens.len() * m.input());
                for &t in tokens {
                    if t as usize >= m.out {
                        return Err(Error::Invalid(format!(
                            "token id {t} is outside the vocabulary of {}",
                            m.out
                        )));
                    }
                    m.dequantize_row(t as usize, &mut x);
                }
                Ok(x)
            }
            Embedding::Candle(table) => {
                let ids = Tensor::new(tokens, &Device::Cpu).map_err(candle_err)?;
                table
                    .embedding(&ids)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(candle_err)
            }
        }
    }
}

/// A llama or qwen2 model loaded from GGUF.
pub struct Model {
    pub config: Config,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Linear,
    inv_freq: Vec<f64>,
    kernels: &'static str,
    /// The threads of a forward call's parallel steps (see [`crate::team`]).
    team: Team,
}

/// New tokens of one sequence inside a packed forward call: rows `row..row + len` hold the
/// tokens at positions `start..start + len` of sequence `seq` (a [`KvCache`] slot).
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub seq: usize,
    pub start: usize,
    pub len: usize,
    /// Whether to return logits for the segment's last row.
    pub logits: bool,
    /// Whether the rows are prompt tokens rather than generated ones. Where foil's kernel runs,
    /// prompt rows of 32-value block formats are multiplied in float32 against dequantized
    /// weights (faster for the hundreds of rows of a prompt), generated rows by the int8
    /// kernel; the two differ in the last bits, so a token must be fed as the same kind
    /// however the calls are batched or chunked for its outputs not to depend on that.
    pub prompt: bool,
}

/// Keys and values of every fed position, per sequence slot and layer, rounded to half
/// precision.
pub struct KvCache {
    /// `slots[seq][layer]` = (keys, values), each `[position][kv_head][head_dim]`.
    slots: Vec<Vec<(Vec<f16>, Vec<f16>)>>,
    kv_dim: usize,
}

impl KvCache {
    pub fn new(model: &Model, slots: usize) -> Self {
        KvCache {
            slots: (0..slots)
                .map(|_| vec![(Vec::new(), Vec::new()); model.config.layers])
                .collect(),
            kv_dim: model.config.kv_dim(),
        }
    }

    /// Positions held for `seq`.
    pub fn len(&self, seq: usize) -> usize {
        self.slots[seq]
            .first()
            .map_or(0, |l| l.0.len() / self.kv_dim)
    }

    /// Empties `seq`'s slot for a new sequence, keeping its memory.
    pub fn clear(&mut self, seq: usize) {
        for (k, v) in &mut self.slots[seq] {
            k.clear();
            v.clear();
        }
    }

    /// Makes room for `positions` in `seq`'s slot at once, so that it does not grow by
    /// doubling (which can leave a sequence's keys and values holding twice the memory they
    /// use).
    pub fn reserve(&mut self, seq: usize, positions: usize) {
        let n = positions * self.kv_dim;
        for (k, v) in &mut self.slots[seq] {
            k.reserve_exact(n.saturating_sub(k.len()));
            v.reserve_exact(n.saturating_sub(v.len()));
        }
    }

    /// Makes `seq` hold the first `len` positions of this cache's slot `from` (a prompt fed
    /// once for several samples).
    pub fn copy_slot(&mut self, seq: usize, from: usize, len: usize) {
        if seq == from {
            return;
        }
        let n = len * self.kv_dim;
        let (source, target) = if from < seq {
            let (a, b) = self.slots.split_at_mut(seq);
            (&a[from], &mut b[0])
        } else {
            let (a, b) = self.slots.split_at_mut(from);
            (&b[0], &mut a[seq])
        };
        copy_positions(target, source, n);
    }

    /// Makes `seq` hold the first `len` positions of `from`'s slot `from_seq` (a shared
    /// prompt prefix computed once).
    pub fn copy_prefix(&mut self, seq: usize, from: &KvCache, from_seq: usize, len: usize) {
        let n = len * self.kv_dim;
        copy_positions(&mut self.slots[seq], &from.slots[from_seq], n);
    }
}

/// Appends `x` rounded to half precision (to nearest, ties to even).
fn append_half(cache: &mut Vec<f16>, x: &[f32]) {
    let at = cache.len();
    cache.resize(at + x.len(), f16::ZERO);
    cache[at..].convert_from_f32_slice(x);
}

/// Replaces each layer's keys and values in `target` with the first `n` values of `source`'s.
fn copy_positions(target: &mut [(Vec<f16>, Vec<f16>)], source: &[(Vec<f16>, Vec<f16>)], n: usize) {
    for ((k, v), (fk, fv)) in target.iter_mut().zip(source) {
        k.clear();
        v.clear();
        k.extend_from_slice(&fk[..n]);
        v.extend_from_slice(&fv[..n]);
    }
}

fn vector_or_none(file: &mut GgufFile, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
    if file.has_tensor(name) {
        Ok(Some(file.vector(name, len)?))
    } else {
        Ok(None)
    }
}

impl Model {
    pub(crate) fn load(file: &mut GgufFile, opts: LoadOptions) -> Result<Self> {
        let mut config = Config::read(file)?;
        let path = file.path.clone();
        let linear = |file: &mut GgufFile, name: &str, out: usize, input: usize| match Stack::load(
            file,
            &[(name.to_string(), out, input)],
            opts,
        )? {
            Stack::Many(mut ls) if ls.len() == 1 => Ok(ls.remove(0)),
            _ => Err(Error::format(
                &path,
                format!("tensor \"{name}\": cannot load"),
            )),
        };
        let (h, kv, ffn) = (config.hidden, config.kv_dim(), config.ffn);
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: file.vector(&p("attn_norm.weight"), h)?,
                qkv: Stack::load(
                    file,
                    &[
                        (p("attn_q.weight"), h, h),
                        (p("attn_k.weight"), kv, h),
                        (p("attn_v.weight"), kv, h),
                    ],
                    opts,
                )?,
                bq: vector_or_none(file, &p("attn_q.bias"), h)?,
                bk: vector_or_none(file, &p("attn_k.bias"), kv)?,
                bv: vector_or_none(file, &p("attn_v.bias"), kv)?,
                wo: linear(file, &p("attn_output.weight"), h, h)?,
                ffn_norm: file.vector(&p("ffn_norm.weight"), h)?,
                gate_up: Stack::load(
                    file,
                    &[(p("ffn_gate.weight"), ffn, h), (p("ffn_up.weight"), ffn, h)],
                    opts,
                )?,
                down: linear(file, &p("ffn_down.weight"), h, ffn)?,
            });
        }
        let (embed_dtype, (vocab, embed_h)) = file.matrix_info("token_embd.weight")?;
        if embed_h != h {
            return Err(Error::format(
                &path,
                format!("token_embd.weight has {embed_h} columns, expected {h}"),
            ));
        }
        config.vocab = vocab;
        // Models with tied embeddings have no output matrix and reuse the embedding; where
        // foil's kernel holds it, the embedding reads the same buffer.
        let tied = !file.has_tensor("output.weight");
        let output_name = if tied {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        let output = linear(file, output_name, vocab, h)?;
        let embed = match (&output.kernel, own_format(embed_dtype)) {
            (Kernel::Own(m), Some(_)) if tied => Embedding::Own(Arc::clone(m)),
            (_, Some(format)) => {
                let mut bytes = Vec::new();
                file.append_tensor_bytes("token_embd.weight", &mut bytes)?;
                match QMatrix::new(format, bytes, vocab, h) {
                    Some(m) => Embedding::Own(Arc::new(m)),
                    None => Embedding::Candle(file.tensor("token_embd.weight")?),
                }
            }
            (_, None) => Embedding::Candle(file.tensor("token_embd.weight")?),
        };
        let norm = file.vector("output_norm.weight", h)?;
        let half = config.rope_dim / 2;
        let inv_freq = (0..half)
            .map(|i| (config.rope_base as f64).powf(-(2.0 * i as f64) / config.rope_dim as f64))
            .collect();
        Ok(Model {
            config,
            embed,
            layers,
            norm,
            output,
            inv_freq,
            kernels: BlockKernels::for_options(opts).name(),
            team: Team::new(opts.threads),
        })
    }

    /// The kernels the quantized matrices run on (see [`quantized_kernels`]): outputs are
    /// reproducible for the same kernels, not across them.
    pub fn kernels(&self) -> &'static str {
        self.kernels
    }

    /// Feeds `tokens` (packed as `segments` describe, in order) through the model, appending
    /// their keys and values to `cache`; returns the logits of each segment with
    /// `logits == true`, in segment order.
    ///
    /// The call runs on a thread of the rayon pool (it moves there when called from outside),
    /// and its parallel steps on the model's `Team` (or, when another call holds the team,
    /// on the rayon pool).
    pub fn forward(
        &self,
        tokens: &[u32],
        segments: &[Segment],
        cache: &mut KvCache,
    ) -> Result<Vec<Vec<f32>>> {
        if rayon::current_thread_index().is_some() {
            self.forward_in_pool(tokens, segments, cache)
        } else {
            rayon::scope(|_| self.forward_in_pool(tokens, segments, cache))
        }
    }

    fn forward_in_pool(
        &self,
        tokens: &[u32],
        segments: &[Segment],
        cache: &mut KvCache,
    ) -> Result<Vec<Vec<f32>>> {
        // The parallel steps below run on the model's team unless another call holds it.
        let _team = self.team.enter();
        let cfg = &self.config;
        let m = tokens.len();
        if segments.iter().map(|s| s.len).sum::<usize>() != m {
            return Err(Error::Invalid("segments do not cover the tokens".into()));
        }
        for s in segments {
            if cache.len(s.seq) != s.start {
                return Err(Error::Invalid(format!(
                    "sequence {} holds {} positions, segment starts at {}",
                    s.seq,
                    cache.len(s.seq),
                    s.start
                )));
            }
        }
        // (sequence, position) of each row, and whether it is a prompt token.
        let rows: Vec<(usize, usize)> = segments
            .iter()
            .flat_map(|s| (s.start..s.start + s.len).map(move |p| (s.seq, p)))
            .collect();
        let prompt: Vec<bool> = segments
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.prompt, s.len))
            .collect();
        let mut x = self.embed.rows(tokens)?;
        let (cos, sin) = self.rope_tables(&rows);

        for (li, layer) in self.layers.iter().enumerate() {
            let n = rms_norm(&x, &layer.attn_norm, cfg.rms_eps);
            let mut qkv = layer.qkv.forward(&n, m, &prompt)?.into_iter();
            let (Some(mut q), Some(mut k), Some(mut v)) = (qkv.next(), qkv.next(), qkv.next())
            else {
                return Err(Error::Invalid("q/k/v projection lost an output".into()));
            };
            add_bias(&mut q, layer.bq.as_deref());
            add_bias(&mut k, layer.bk.as_deref());
            add_bias(&mut v, layer.bv.as_deref());
            self.rope(&mut q, cfg.heads, &cos, &sin);
            self.rope(&mut k, cfg.kv_heads, &cos, &sin);
            let kv = cfg.kv_dim();
            let mut row = 0;
            for s in segments {
                let (ks, vs) = &mut cache.slots[s.seq][li];
                append_half(ks, &k[row * kv..(row + s.len) * kv]);
                append_half(vs, &v[row * kv..(row + s.len) * kv]);
                row += s.len;
            }
            let attn = self.attention(&q, &rows, cache, li);
            let o = layer.wo.forward(&attn, m, &prompt)?;
            add_into(&mut x, &o);

            let n = rms_norm(&x, &layer.ffn_norm, cfg.rms_eps);
            let g = layer.gate_up.swiglu(&n, m, &prompt)?;
            let d = layer.down.forward(&g, m, &prompt)?;
            add_into(&mut x, &d);
        }

        // Final norm and the output projection, only for the rows whose logits are wanted.
        let h = cfg.hidden;
        let mut last = Vec::new();
        let mut row = 0;
        for s in segments {
            row += s.len;
            if s.logits {
                last.extend_from_slice(&x[(row - 1) * h..row * h]);
            }
        }
        let wanted = last.len() / h;
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let n = rms_norm(&last, &self.norm, cfg.rms_eps);
        // The logits of a prompt's last row come from the int8 kernel, like a generated row's:
        // only the layers' products depend on a row's kind.
        let logits = self.output.forward(&n, wanted, &vec![false; wanted])?;
        Ok(logits.chunks(cfg.vocab).map(<[f32]>::to_vec).collect())
    }

    /// cos and sin of every row's rotation angles, `[row][rope_dim / 2]`.
    fn rope_tables(&self, rows: &[(usize, usize)]) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(rows.len() * half);
        let mut sin = Vec::with_capacity(rows.len() * half);
        for &(_, p) in rows {
            for f in &self.inv_freq {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        (cos, sin)
    }

    /// Rotates the first `rope_dim` dimensions of each head of each row in place.
    fn rope(&self, x: &mut [f32], heads: usize, cos: &[f32], sin: &[f32]) {
        let hd = self.config.head_dim;
        let half = self.inv_freq.len();
        let style = self.config.rope_style;
        for (r, row) in x.chunks_mut(heads * hd).enumerate() {
            let (c, s) = (
                &cos[r * half..(r + 1) * half],
                &sin[r * half..(r + 1) * half],
            );
            for head in row.chunks_mut(hd) {
                for i in 0..half {
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::HalfSplit => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c[i] - x1 * s[i];
                    head[b] = x0 * s[i] + x1 * c[i];
                }
            }
        }
    }

    /// Causal attention of each row over its own sequence's cached positions `0..=p`.
    fn attention(
        &self,
        q: &[f32],
        rows: &[(usize, usize)],
        cache: &KvCache,
        layer: usize,
    ) -> Vec<f32> {
        let cfg = &self.config;
        let (hd, kv) = (cfg.head_dim, cfg.kv_dim());
        let group = cfg.heads / cfg.kv_heads;
        // The query heads that share a kv head run as one task, which widens each cached key
        // and value from half precision once for all of them, unless that leaves threads idle
        // (a decoding row of a model with fewer kv heads than threads).
        let per_task = if rows.len() * cfg.kv_heads >= team::threads() {
            group
        } else {
            1
        };
        let heads = AttentionHeads {
            head_dim: hd,
            kv,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let tasks_per_row = cfg.heads / per_task;
        let mut out = vec![0f32; q.len()];
        team::for_each_chunk_mut(&mut out, per_task * hd, |i, out| {
            let (row, first) = (i / tasks_per_row, i % tasks_per_row * per_task);
            let (seq, pos) = rows[row];
            let (keys, values) = &cache.slots[seq][layer];
            let (keys, values) = (&keys[..(pos + 1) * kv], &values[..(pos + 1) * kv]);
            let q = &q[i * per_task * hd..(i + 1) * per_task * hd];
            heads.run(q, keys, values, first / group * hd, out);
        });
        out
    }
}

/// The shape of attention over one sequence's cached keys and values, for one or more query
/// heads that read the same kv head.
struct AttentionHeads {
    head_dim: usize,
    /// Values per cached position (all kv heads).
    kv: usize,
    scale: f32,
}

impl AttentionHeads {
    /// Adds softmax(q·kᵀ · scale)·v into `out` for each query head in `q` (`head_dim` values
    /// each, and as many in `out`), all reading the kv head whose values start at `off` in each
    /// cached position.
    fn run(&self, q: &[f32], keys: &[f16], values: &[f16], off: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if qmatmul::available() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { self.run_avx2(q, keys, values, off, out) };
            return;
        }
        self.run_portable(q, keys, values, off, out);
    }

    /// The same computation with its inner loops in AVX2, FMA and F16C intrinsics ([`Avx2`]):
    /// the same operations in the same order (multiply, then add: nothing fused), so the bits
    /// of the portable code.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_avx2(
        &self,
        q: &[f32],
        keys: &[f16],
        values: &[f16],
        off: usize,
        out: &mut [f32],
    ) {
        self.run_with::<Avx2>(q, keys, values, off, out);
    }

    fn run_portable(&self, q: &[f32], keys: &[f16], values: &[f16], off: usize, out: &mut [f32]) {
        self.run_with::<Portable>(q, keys, values, off, out);
    }

    /// The loops compiled once per common head size (64, 128), where they unroll, and once for
    /// any other; the same operations in the same order in every copy.
    #[inline(always)]
    fn run_with<L: HeadLoops>(
        &self,
        q: &[f32],
        keys: &[f16],
        values: &[f16],
        off: usize,
        out: &mut [f32],
    ) {
        match self.head_dim {
            64 => self.run_sized::<64, L>(q, keys, values, off, out),
            128 => self.run_sized::<128, L>(q, keys, values, off, out),
            _ => self.run_sized::<0, L>(q, keys, values, off, out),
        }
    }

    /// The attention of the heads in `q`; `HD` is the head size when known at compile time,
    /// else 0.
    #[inline(always)]
    fn run_sized<const HD: usize, L: HeadLoops>(
        &self,
        q: &[f32],
        keys: &[f16],
        values: &[f16],
        off: usize,
        out: &mut [f32],
    ) {
        let shape = Shape {
            head_dim: if HD > 0 { HD } else { self.head_dim },
            kv: self.kv,
            off,
        };
        let n = shape.positions(keys);
        let mut weights = vec![0f32; q.len() / shape.head_dim * n];
        L::dots::<HD>(&shape, q, keys, &mut weights);
        for w in weights.chunks_exact_mut(n) {
            L::softmax(w, self.scale);
        }
        L::mix::<HD>(&shape, &weights, values, out);
    }
}

/// Where one kv head's key (or value) lies in each cached position: `head_dim` values from
/// `off`, one position every `kv` values.
struct Shape {
    head_dim: usize,
    kv: usize,
    off: usize,
}

impl Shape {
    /// The head size: `HD` when it is known at compile time (so that loops over it unroll),
    /// else `head_dim`.
    #[inline(always)]
    fn size<const HD: usize>(&self) -> usize {
        if HD > 0 {
            HD
        } else {
            self.head_dim
        }
    }

    /// The positions held by `cache` (keys or values).
    #[inline(always)]
    fn positions(&self, cache: &[f16]) -> usize {
        cache.len() / self.kv
    }

    /// The kv head's part of cached position `s`.
    #[inline(always)]
    fn at<'a>(&self, cache: &'a [f16], s: usize) -> &'a [f16] {
        &cache[s * self.kv + self.off..][..self.head_dim]
    }
}

/// The inner loops of attention: [`Portable`] code, or [`Avx2`] intrinsics with the same bits.
trait HeadLoops {
    /// `scores[h·n + s] = q_h · k_s` for each query head `h` in `q` and each of the `n` cached
    /// positions `s` in `keys`; each product summed as eight partial sums (lane `i % 8`),
    /// added in lane order at the end, then the values after the last 8-wide chunk in order.
    /// `HD` is the head size when known at compile time, else 0.
    fn dots<const HD: usize>(shape: &Shape, q: &[f32], keys: &[f16], scores: &mut [f32]);
    /// `x[i] = exp(x[i] · scale - max) / sum`, where `max` is the largest `x[i] · scale` and
    /// `sum` adds the exponentials in order; exponentials by [`exp`].
    fn softmax(x: &mut [f32], scale: f32);
    /// `out_h[i] += w[h·n + s] · v_s[i]` for each head `h` and position `s`, position after
    /// position.
    fn mix<const HD: usize>(shape: &Shape, w: &[f32], values: &[f16], out: &mut [f32]);
}

struct Portable;

impl HeadLoops for Portable {
    #[inline(always)]
    fn dots<const HD: usize>(shape: &Shape, q: &[f32], keys: &[f16], scores: &mut [f32]) {
        let n = shape.positions(keys);
        for (q, scores) in q
            .chunks_exact(shape.head_dim)
            .zip(scores.chunks_exact_mut(n))
        {
            for (s, score) in scores.iter_mut().enumerate() {
                *score = dot(q, shape.at(keys, s));
            }
        }
    }

    #[inline(always)]
    fn softmax(x: &mut [f32], scale: f32) {
        let mut max = f32::NEG_INFINITY;
        for v in x.iter_mut() {
            *v *= scale;
            max = max.max(*v);
        }
        exp_shifted(x, max);
        let sum = x.iter().fold(0f32, |sum, v| sum + v);
        for v in x.iter_mut() {
            *v /= sum;
        }
    }

    #[inline(always)]
    fn mix<const HD: usize>(shape: &Shape, w: &[f32], values: &[f16], out: &mut [f32]) {
        let n = shape.positions(values);
        for (w, out) in w.chunks_exact(n).zip(out.chunks_exact_mut(shape.head_dim)) {
            for (s, &w) in w.iter().enumerate() {
                for (o, v) in out.iter_mut().zip(shape.at(values, s)) {
                    *o += w * v.to_f32();
                }
            }
        }
    }
}

/// `Σ a[i]·b[i]` as [`HeadLoops::dots`] sums it.
#[inline(always)]
fn dot(a: &[f32], b: &[f16]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = products_sum(ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i].to_f32();
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ a[i]·b[i]` in order: the part of [`dot`] after the last 8-wide chunk.
#[inline(always)]
fn products_sum(a: &[f32], b: &[f16]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}

/// Only [`AttentionHeads::run_avx2`] uses it, which runs where the CPU has AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl HeadLoops for Avx2 {
    #[inline(always)]
    fn dots<const HD: usize>(shape: &Shape, q: &[f32], keys: &[f16], scores: &mut [f32]) {
        // SAFETY: see the type: the CPU has the features.
        unsafe { avx2::dots::<HD>(shape, q, keys, scores) }
    }

    #[inline(always)]
    fn softmax(x: &mut [f32], scale: f32) {
        // SAFETY: as above.
        unsafe { avx2::softmax(x, scale) }
    }

    #[inline(always)]
    fn mix<const HD: usize>(shape: &Shape, w: &[f32], values: &[f16], out: &mut [f32]) {
        // SAFETY: as above.
        unsafe { avx2::mix::<HD>(shape, w, values, out) }
    }
}

/// `x[i] = exp(x[i] - max)` for each `i`, by [`exp`].
#[inline(always)]
fn exp_shifted(x: &mut [f32], max: f32) {
    for v in x {
        *v = exp(*v - max);
    }
}

/// The constants of [`exp`]: `exp(x) = 2ⁿ · exp(r)`, `n = round(x · log₂e)`, `r = x - n · ln 2`
/// (`ln 2` in two parts, so that `r` is exact), and `exp(r) ≈ 1 + r + r² · P(r)` on
/// `|r| ≤ ln 2 / 2`: the minimax polynomial of the Cephes library's `expf`.
mod exp_consts {
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    /// 0.693359375, exact in float32.
    pub const LN2_HI: f32 = 355.0 / 512.0;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    pub const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        // Cephes' 5.0000001201e-1 is 0.5 in float32.
        0.5,
    ];
    /// Inputs are clamped to where `2ⁿ` is a normal float: below `ln(f32::MIN_POSITIVE)` the
    /// result is ≈ 1.2e-38 instead of smaller, above 88 it is e⁸⁸.
    pub const MIN: f32 = -87.336_55;
    pub const MAX: f32 = 88.0;
    /// 1.5 · 2²³: adding and taking it away rounds to an integer, ties to even.
    pub const ROUND: f32 = 12_582_912.0;
}

/// `eˣ` within 2 units in the last place of the float32 result, in the operations
/// [`avx2::exp_shifted`] runs on 8 lanes at once (every step a single rounding or a fused
/// multiply-add), so both give the same bits. The softmax of a long prompt's attention calls it
/// millions of times; the C library's `expf` is a function call per value.
#[inline(always)]
fn exp(x: f32) -> f32 {
    use exp_consts::*;
    // max, then min, as the vector code does (a NaN becomes MIN in both).
    #[allow(clippy::manual_clamp)]
    let x = x.max(MIN).min(MAX);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = P[0];
    for c in &P[1..] {
        p = p.mul_add(r, *c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// [`HeadLoops`] in AVX2, FMA and F16C intrinsics, with the same operations in the same order
/// as [`Portable`] (half-to-single conversion is exact), so the same bits. `dots` takes the
/// cached positions eight at a time, their eight products side by side instead of one after
/// another, and sums each product's lanes through a transpose; `mix` keeps a head's outputs in
/// registers over the positions. When a task holds several heads (the query heads of one kv
/// head), each cached key and value is widened once into a buffer that all of them read.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Shape;
    use crate::simd::transpose;
    use half::f16;
    use std::arch::x86_64::*;

    /// Cached positions taken at a time by `dots`.
    const BLOCK: usize = 8;
    /// The most values `mix` widens at a time for several heads (8 KB).
    const SHARED: usize = 2048;

    /// See [`super::HeadLoops::dots`].
    ///
    /// # Safety
    /// The CPU must have AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    pub(super) unsafe fn dots<const HD: usize>(
        shape: &Shape,
        q: &[f32],
        keys: &[f16],
        scores: &mut [f32],
    ) {
        let hd = shape.size::<HD>();
        let (n, wide) = (shape.positions(keys), hd / 8 * 8);
        // What `dot`'s sum of its eight lanes starts from, and its sum after the last chunk
        // when there is nothing after it.
        let (start, no_tail) = ([0f32; 0].iter().sum::<f32>(), super::products_sum(&[], &[]));
        // Several heads read each block's keys widened once, into `wide_keys`.
        let shared = q.len() > hd;
        let mut wide_keys = if shared {
            vec![0f32; BLOCK * hd]
        } else {
            Vec::new()
        };
        for s0 in (0..n).step_by(BLOCK) {
            let m = BLOCK.min(n - s0);
            // Where the block's keys start; a short last block repeats its first key.
            let k: [*const f16; BLOCK] = std::array::from_fn(|j| {
                // SAFETY: s0 + j % m < n, so the head's key lies inside `keys`.
                unsafe { keys.as_ptr().add((s0 + j % m) * shape.kv + shape.off) }
            });
            if shared {
                for (j, k) in k.iter().enumerate() {
                    // SAFETY: each key and each of the buffer's rows hold `wide` values.
                    unsafe { widen(*k, wide_keys.as_mut_ptr().add(j * hd), wide) };
                }
            }
            for (h, q) in q.chunks_exact(hd).enumerate() {
                // SAFETY: `q`, each key and each of the buffer's rows hold `wide` values.
                let acc = unsafe {
                    if shared {
                        block_dots::<HD, true>(q, &k, wide_keys.as_ptr(), wide)
                    } else {
                        block_dots::<HD, false>(q, &k, wide_keys.as_ptr(), wide)
                    }
                };
                let mut tails = [no_tail; BLOCK];
                if wide < hd {
                    for (j, t) in tails.iter_mut().enumerate() {
                        let key = shape.at(keys, s0 + j % m);
                        *t = super::products_sum(&q[wide..], &key[wide..]);
                    }
                }
                let mut sum = _mm256_set1_ps(start);
                for lane in transpose(acc) {
                    sum = _mm256_add_ps(sum, lane);
                }
                // SAFETY: `tails` holds 8 values.
                sum = _mm256_add_ps(sum, unsafe { _mm256_loadu_ps(tails.as_ptr()) });
                let mut got = [0f32; BLOCK];
                // SAFETY: `got` holds 8 values.
                unsafe { _mm256_storeu_ps(got.as_mut_ptr(), sum) };
                scores[h * n + s0..][..m].copy_from_slice(&got[..m]);
            }
        }
    }

    /// The eight lanes of `q`'s product with each of the block's keys: widened ones from the
    /// rows of `wide_keys` (`hd` apart) when `WIDE`, else the half-precision keys at `k`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and F16C; `q` and each key or row hold `wide` values.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn block_dots<const HD: usize, const WIDE: bool>(
        q: &[f32],
        k: &[*const f16; BLOCK],
        wide_keys: *const f32,
        wide: usize,
    ) -> [__m256; BLOCK] {
        let hd = if HD > 0 { HD } else { q.len() };
        let mut acc = [_mm256_setzero_ps(); BLOCK];
        for c in (0..wide).step_by(8) {
            // SAFETY: c + 8 <= wide.
            unsafe {
                let x = _mm256_loadu_ps(q.as_ptr().add(c));
                for (j, (acc, k)) in acc.iter_mut().zip(k).enumerate() {
                    let y = if WIDE {
                        _mm256_loadu_ps(wide_keys.add(j * hd + c))
                    } else {
                        _mm256_cvtph_ps(_mm_loadu_si128(k.add(c).cast()))
                    };
                    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
                }
            }
        }
        acc
    }

    /// See [`super::HeadLoops::softmax`]: the scaling, the largest value, the exponentials and
    /// the divisions eight values at a time (each exact or a single rounding, so in any order),
    /// the sum one value after another as the portable code adds.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn softmax(x: &mut [f32], scale: f32) {
        let n8 = x.len() / 8 * 8;
        let (sv, mut mv) = (_mm256_set1_ps(scale), _mm256_set1_ps(f32::NEG_INFINITY));
        for i in (0..n8).step_by(8) {
            // SAFETY: i + 8 <= n8 <= x.len().
            unsafe {
                let at = x.as_mut_ptr().add(i);
                let v = _mm256_mul_ps(_mm256_loadu_ps(at), sv);
                _mm256_storeu_ps(at, v);
                mv = _mm256_max_ps(mv, v);
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 values.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mv) };
        let mut max = lanes.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        for v in &mut x[n8..] {
            *v *= scale;
            max = max.max(*v);
        }
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { exp_shifted(x, max) };
        let sum = x.iter().fold(0f32, |sum, v| sum + v);
        let total = _mm256_set1_ps(sum);
        for i in (0..n8).step_by(8) {
            // SAFETY: i + 8 <= n8 <= x.len().
            unsafe {
                let at = x.as_mut_ptr().add(i);
                _mm256_storeu_ps(at, _mm256_div_ps(_mm256_loadu_ps(at), total));
            }
        }
        for v in &mut x[n8..] {
            *v /= sum;
        }
    }

    /// See [`super::exp_shifted`]: eight values at a time, the rest one by one.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn exp_shifted(x: &mut [f32], max: f32) {
        use super::exp_consts::*;
        let n8 = x.len() / 8 * 8;
        let m = _mm256_set1_ps(max);
        for i in (0..n8).step_by(8) {
            // SAFETY: i + 8 <= n8 <= x.len().
            unsafe {
                let at = x.as_mut_ptr().add(i);
                let v = _mm256_sub_ps(_mm256_loadu_ps(at), m);
                let v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(MIN)), _mm256_set1_ps(MAX));
                let round = _mm256_set1_ps(ROUND);
                let n = _mm256_sub_ps(
                    _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(LOG2E)), round),
                    round,
                );
                let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), v);
                let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
                let mut p = _mm256_set1_ps(P[0]);
                for c in &P[1..] {
                    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
                }
                let y = _mm256_add_ps(
                    _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
                    _mm256_set1_ps(1.0),
                );
                let two_n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                    _mm256_cvtps_epi32(n),
                    _mm256_set1_epi32(127),
                ));
                _mm256_storeu_ps(at, _mm256_mul_ps(y, _mm256_castsi256_ps(two_n)));
            }
        }
        super::exp_shifted(&mut x[n8..], max);
    }

    /// See [`super::HeadLoops::mix`]: each head's outputs stay in registers, 64 at a time,
    /// over all the positions.
    ///
    /// # Safety
    /// The CPU must have AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    pub(super) unsafe fn mix<const HD: usize>(
        shape: &Shape,
        w: &[f32],
        values: &[f16],
        out: &mut [f32],
    ) {
        let hd = shape.size::<HD>();
        let (n, wide) = (shape.positions(values), hd / 8 * 8);
        // SAFETY: the head's value of every position lies inside `values`.
        let first = unsafe { values.as_ptr().add(shape.off) };
        // Several heads read a block of positions' values widened once, into `wide_values`.
        let shared = out.len() > hd;
        let block = if shared { (SHARED / hd).clamp(1, n) } else { n };
        let mut wide_values = if shared {
            vec![0f32; block * hd]
        } else {
            Vec::new()
        };
        for s0 in (0..n).step_by(block) {
            let m = block.min(n - s0);
            if shared {
                for s in 0..m {
                    // SAFETY: s0 + s < n; m rows of hd values fit the buffer.
                    unsafe {
                        let v = first.add((s0 + s) * shape.kv);
                        widen(v, wide_values.as_mut_ptr().add(s * hd), wide);
                    }
                }
            }
            for (h, out) in out.chunks_exact_mut(hd).enumerate() {
                let w = &w[h * n + s0..][..m];
                for c0 in (0..wide).step_by(64) {
                    let width = 64.min(wide - c0);
                    // SAFETY: c0 + width <= wide <= hd, the length of `out` and of each value
                    // and row; `w` has one weight per value or row.
                    unsafe {
                        let out = out.as_mut_ptr().add(c0);
                        if shared {
                            block_mix::<true>(
                                w,
                                wide_values.as_ptr().add(c0).cast(),
                                hd,
                                out,
                                width,
                            );
                        } else {
                            let v = first.add(s0 * shape.kv + c0).cast();
                            block_mix::<false>(w, v, shape.kv, out, width);
                        }
                    }
                }
                for (i, o) in out.iter_mut().enumerate().skip(wide) {
                    for (s, &w) in w.iter().enumerate() {
                        *o += w * shape.at(values, s0 + s)[i].to_f32();
                    }
                }
            }
        }
    }

    /// `out[i] += w[s] · v_s[i]` for `i < width` (at most 64, a multiple of 8), position
    /// after position, the outputs in registers: `v_s` are single-precision values at `from`
    /// when `WIDE`, else half-precision ones, `stride` values apart.
    ///
    /// # Safety
    /// The CPU must have AVX2 and F16C; `out` and each `v_s` hold `width` values.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn block_mix<const WIDE: bool>(
        w: &[f32],
        from: *const u8,
        stride: usize,
        out: *mut f32,
        width: usize,
    ) {
        let mut acc = [_mm256_setzero_ps(); 8];
        // SAFETY: as the caller promises.
        unsafe {
            for (c, acc) in acc.iter_mut().enumerate().take(width / 8) {
                *acc = _mm256_loadu_ps(out.add(c * 8));
            }
            for (s, &w) in w.iter().enumerate() {
                let wv = _mm256_set1_ps(w);
                for (c, acc) in acc.iter_mut().enumerate().take(width / 8) {
                    let x = if WIDE {
                        _mm256_loadu_ps(from.cast::<f32>().add(s * stride + c * 8))
                    } else {
                        let v = from.cast::<f16>().add(s * stride + c * 8);
                        _mm256_cvtph_ps(_mm_loadu_si128(v.cast()))
                    };
                    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(wv, x));
                }
            }
            for (c, acc) in acc.iter().enumerate().take(width / 8) {
                _mm256_storeu_ps(out.add(c * 8), *acc);
            }
        }
    }

    /// Writes `n` (a multiple of 8) values from `from` widened to single precision at `to`.
    ///
    /// # Safety
    /// The CPU must have F16C; both arrays hold `n` values.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn widen(from: *const f16, to: *mut f32, n: usize) {
        for c in (0..n).step_by(8) {
            // SAFETY: c + 8 <= n.
            unsafe {
                _mm256_storeu_ps(
                    to.add(c),
                    _mm256_cvtph_ps(_mm_loadu_si128(from.add(c).cast())),
                )
            };
        }
    }
}

fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let d = weight.len();
    let mut out = vec![0f32; x.len()];
    for (o, row) in out.chunks_mut(d).zip(x.chunks(d)) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
            *o = v * r * w;
        }
    }
    out
}

fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in x.chunks_mut(b.len()) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_units_in_the_last_place() {
        let mut worst = 0f64;
        for i in 0..=1_750_000 {
            let x = -87.0 + i as f32 * 1e-4;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        // Two units in the last place of a float32 are at most 2 · 2⁻²³ relative.
        assert!(worst <= 2.0 * f32::EPSILON as f64, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1.2e-38);
    }

    /// The AVX2 softmax exponentials give the portable code's bits (19 values: two vectors
    /// and a remainder).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_exp_gives_the_scalar_bits() {
        if !qmatmul::available() {
            return;
        }
        let xs: Vec<f32> = (0..19).map(|i| i as f32 * -4.7 + 0.3).collect();
        let mut scalar = xs.clone();
        exp_shifted(&mut scalar, 1.5);
        let mut vector = xs;
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        unsafe { avx2::exp_shifted(&mut vector, 1.5) };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&vector), bits(&scalar));
    }

    /// The copies compiled for known head sizes compute what the general loop computes, bit
    /// for bit, and so does the AVX2 build, for one head or a group reading one kv head, over
    /// position counts below, at and past the AVX2 loops' block of 8 (36 and 44: head sizes with
    /// a remainder after the 8-wide chunks; 264: past the blocked loops' largest head).
    #[test]
    fn attention_heads_of_known_size_give_the_general_bits() {
        let value = |i: usize| ((i * 7919 % 1013) as f32 - 506.0) / 253.0;
        let half = |v: f32| f16::from_f32(v);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for hd in [64, 128, 36, 44, 264] {
            for (group, positions) in [(1, 37), (3, 1), (3, 8), (7, 21)] {
                let kv = 3 * hd;
                let heads = AttentionHeads {
                    head_dim: hd,
                    kv,
                    scale: 1.0 / (hd as f32).sqrt(),
                };
                let q: Vec<f32> = (0..group * hd).map(value).collect();
                let keys: Vec<f16> = (0..positions * kv).map(|i| half(value(i + 5))).collect();
                let values: Vec<f16> = (0..positions * kv).map(|i| half(value(i + 11))).collect();
                let start: Vec<f32> = (0..group * hd).map(|i| value(i + 3)).collect();
                let off = hd;
                let mut general = start.clone();
                heads.run_sized::<0, Portable>(&q, &keys, &values, off, &mut general);
                let mut fixed = start.clone();
                heads.run_portable(&q, &keys, &values, off, &mut fixed);
                let mut dispatched = start.clone();
                heads.run(&q, &keys, &values, off, &mut dispatched);
                let case = format!("head size {hd}, {group} heads, {positions} positions");
                assert_eq!(bits(&fixed), bits(&general), "{case}");
                assert_eq!(bits(&dispatched), bits(&general), "{case}");
                // A group is its heads run one by one.
                for h in 0..group {
                    let part = h * hd..(h + 1) * hd;
                    let mut alone = start[part.clone()].to_vec();
                    heads.run(&q[part.clone()], &keys, &values, off, &mut alone);
                    assert_eq!(bits(&alone), bits(&general[part]), "{case}, head {h}");
                }
                assert_ne!(general, start);
            }
        }
    }

    /// One head's attention, written out: softmax of the scaled products in double precision,
    /// then the weighted values; the loops above agree with it to float32 rounding.
    #[test]
    fn attention_is_the_softmax_weighted_sum_of_values() {
        let (hd, kv, positions, off) = (64, 128, 19, 64);
        let value = |i: usize| ((i * 104_729 % 2003) as f32 - 1001.0) / 500.0;
        let q: Vec<f32> = (0..hd).map(value).collect();
        let keys: Vec<f16> = (0..positions * kv)
            .map(|i| f16::from_f32(value(i + 7)))
            .collect();
        let values: Vec<f16> = (0..positions * kv)
            .map(|i| f16::from_f32(value(i + 13)))
            .collect();
        let scale = 1.0 / (hd as f64).sqrt();
        let at = |c: &[f16], s: usize, i: usize| c[s * kv + off + i].to_f64();
        let scores: Vec<f64> = (0..positions)
            .map(|s| (0..hd).map(|i| q[i] as f64 * at(&keys, s, i)).sum::<f64>() * scale)
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = e.iter().sum();
        let heads = AttentionHeads {
            head_dim: hd,
            kv,
            scale: scale as f32,
        };
        let mut got = vec![0f32; hd];
        heads.run(&q, &keys, &values, off, &mut got);
        for (i, got) in got.iter().enumerate() {
            let want: f64 = (0..positions)
                .map(|s| e[s] / total * at(&values, s, i))
                .sum();
            assert!(
                (*got as f64 - want).abs() < 1e-5,
                "value {i}: {got} vs {want}"
            );
        }
    }
}
