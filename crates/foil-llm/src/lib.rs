//! foil's local LLM: GGUF chat models (llama and qwen2 architectures) run on the CPU behind
//! [`foil_core::generator::Generator`].
//!
//! Everything the model needs comes from the one GGUF file: the weights (kept quantized and
//! multiplied by foil's AVX2 kernel in `qmatmul.rs`, or candle's `QMatMul`), the byte-level BPE
//! tokenizer ([`tokenizer`], from the `tokenizer.ggml.*` metadata) and the chat template
//! ([`chat`], ChatML rendered natively).
//!
//! Speed comes from batching: [`llama`] runs the new tokens of many sequences as one packed
//! matrix of rows (batched prefill of whole prompts, batched decode of one row per live
//! sequence), and [`generator`] keeps up to `max_batch` sequences live with continuous
//! batching. Each row's arithmetic is independent of the other rows and each request samples
//! from its own seeded RNG, so outputs do not depend on batching.

pub mod chat;
pub mod generator;
mod gguf;
pub mod llama;
mod qmatmul;
mod sampler;
#[cfg(target_arch = "x86_64")]
mod simd;
mod team;
pub mod tokenizer;

pub use chat::ChatTemplate;
pub use generator::{GgufGenerator, GgufOptions};
pub use llama::quantized_kernels;
pub use tokenizer::GgufTokenizer;
