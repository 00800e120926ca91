//! foil's fine-tuning pieces, on candle tensors with autograd:
//!
//! - [`losses`]: the contrastive loss family (InfoNCE / MultipleNegativesRanking, DCL and DCLW,
//!   the Mann–Whitney loss, Soft-InfoNCE, Multi-Similarity, triplet margin, MarginMSE), each a
//!   function from embeddings to a scalar loss, plus focal reweighting and MoCHi hard-negative
//!   mixing; [`Loss`] picks one from a CLI string such as `"mnrl:scale=20,symmetric=true"`.
//!   [`CrossLoss`]: a cross-encoder's listwise or binary loss over its pairs' logits.
//! - [`optim`]: AdamW exactly as `torch.optim.AdamW`, transformers' linear warmup/decay schedule
//!   and `clip_grad_norm_`, with state saved to safetensors for resuming.
//! - [`sampler`]: the seeded no-duplicates batch sampler.
//!
//! Every loss and the optimizer are checked against PyTorch golden files (`tests/`).

pub mod losses;
pub mod optim;
pub mod sampler;

pub use losses::{CrossLoss, Loss, LossInput, Similarity};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig, LinearSchedule};
pub use sampler::no_duplicates_batches;
