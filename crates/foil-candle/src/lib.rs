//! foil's BERT models on the CPU (and on CUDA through candle): loading Hugging Face and
//! sentence-transformers folders, a fast fused inference path ([`fast::FastBert`]), a trainable
//! candle model, and [`BertEncoder`], foil's bi-encoder.

pub mod amx;
pub mod config;
pub mod cross_encoder;
pub mod decoder;
pub mod dpbf16;
pub mod encoder;
pub mod fast;
pub mod fused;
pub mod kernels;
pub mod model;
pub mod modernbert;
pub mod tokenizer;
pub mod weights;
pub use cross_encoder::{CrossEncoder, CrossEncoderOptions};
pub use encoder::{BertEncoder, EncoderOptions};
pub use fast::Precision;
