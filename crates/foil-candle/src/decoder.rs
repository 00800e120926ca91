//! [`CandleDecoder`]: a Qwen2- / Qwen3-style decoder embedder on candle tensors with
//! autograd (Qwen3-Embedding, gte-Qwen2), for encoding and fine-tuning.
//!
//! It follows Hugging Face's `Qwen2Model` / `Qwen3Model` operation for operation, in float32
//! with eager attention: token embeddings; per layer RMSNorm → attention (q/k/v projections,
//! Qwen3's per-head RMSNorm of q and k, rotary positions, key/value heads shared by groups of
//! query heads, a causal mask) → residual, RMSNorm → SwiGLU MLP → residual; a final RMSNorm.
//! Sequences are right-padded with positions from 0, so a text's hidden states do not depend
//! on its batch; [`crate::model::pool`] reads the last real token. The golden tests
//! (`tests/decoders.rs`) check embeddings against sentence-transformers and every gradient
//! against PyTorch on tiny random checkpoints.

use candle_core::{Device, Tensor, Var, D};
use foil_core::Result;

use crate::config::DecoderConfig;
use crate::model::{attend, attention_bias, rotary_tables, rotate, Batch, Dropout, Linear};
use crate::weights::Weights;

/// `x / √(mean(x²) + eps) · w` over the last dimension, written out so that it has a backward
/// pass.
struct RmsNorm {
    w: Var,
    eps: f64,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(ms + self.eps)?.sqrt()?)?
            .broadcast_mul(self.w.as_tensor())
    }
}

struct Layer {
    input_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Qwen3's per-head norms of queries and keys.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A trainable decoder embedder.
pub struct CandleDecoder {
    /// Inference only: each layer's output is detached, so that the autograd graph of the
    /// layers before is freed (memory of one layer, not of all).
    inference: bool,
    config: DecoderConfig,
    device: Device,
    vars: Vec<(String, Var)>,
    embed: Var,
    layers: Vec<Layer>,
    norm: RmsNorm,
}

impl CandleDecoder {
    /// Builds the model from loaded weights (copied into fresh variables named as
    /// `Qwen2Model` / `Qwen3Model` name them, so a saved model loads in transformers).
    pub fn new(config: &DecoderConfig, w: &Weights, device: &Device) -> Result<Self> {
        let (h, inner) = (config.hidden_size, config.intermediate_size);
        let (heads, kv, d) = (
            config.num_attention_heads,
            config.kv_heads(),
            config.head_dim(),
        );
        let eps = config.rms_norm_eps;
        let mut vars = Vec::new();
        let mut var = |name: String, shape: &[usize]| -> Result<Var> {
            let t = w.get(&name, shape)?.to_device(device)?;
            let v = Var::from_tensor(&t)?;
            vars.push((name, v.clone()));
            Ok(v)
        };
        let embed = var("embed_tokens.weight".into(), &[config.vocab_size, h])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = |s: &str| format!("layers.{l}.{s}");
            let mut linear = |s: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let w = var(p(&format!("{s}.weight")), &[out, inp])?;
                let b = if bias {
                    Some(var(p(&format!("{s}.bias")), &[out])?)
                } else {
                    None
                };
                Ok(Linear { w, b })
            };
            let q = linear("self_attn.q_proj", heads * d, h, config.qkv_bias())?;
            let k = linear("self_attn.k_proj", kv * d, h, config.qkv_bias())?;
            let v = linear("self_attn.v_proj", kv * d, h, config.qkv_bias())?;
            let o = linear("self_attn.o_proj", h, heads * d, config.o_bias())?;
            let gate = linear("mlp.gate_proj", inner, h, false)?;
            let up = linear("mlp.up_proj", inner, h, false)?;
            let down = linear("mlp.down_proj", h, inner, false)?;
            let mut norm = |s: &str, n: usize| -> Result<RmsNorm> {
                Ok(RmsNorm {
                    w: var(p(&format!("{s}.weight")), &[n])?,
                    eps,
                })
            };
            let input_norm = norm("input_layernorm", h)?;
            let post_norm = norm("post_attention_layernorm", h)?;
            let (q_norm, k_norm) = if config.qk_norm() {
                (
                    Some(norm("self_attn.q_norm", d)?),
                    Some(norm("self_attn.k_norm", d)?),
                )
            } else {
                (None, None)
            };
            layers.push(Layer {
                input_norm,
                q,
                k,
                v,
                o,
                q_norm,
                k_norm,
                post_norm,
                gate,
                up,
                down,
            });
        }
        let norm = RmsNorm {
            w: var("norm.weight".into(), &[h])?,
            eps,
        };
        Ok(Self {
            config: config.clone(),
            inference: false,
            device: device.clone(),
            vars,
            embed,
            layers,
            norm,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Frees each layer's autograd graph as soon as the next layer has its input: for encoding,
    /// where no gradient is taken.
    pub fn set_inference(&mut self, on: bool) {
        self.inference = on;
    }

    /// Every trainable variable with its Hugging Face name, in a fixed order.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Last hidden states `[B, L, H]` (after the final norm) of a right-padded batch; attention
    /// dropout is applied when `dropout` is given and the config has any.
    pub fn forward(&self, batch: &Batch, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let c = &self.config;
        let (b, l) = batch.ids.dims2()?;
        let (h, heads, kv, d) = (
            c.hidden_size,
            c.num_attention_heads,
            c.kv_heads(),
            c.head_dim(),
        );
        let ids = batch.ids.flatten_all()?;
        let mut x = self.embed.as_tensor().index_select(&ids, 0)?;
        if let Some(pad) = c.pad_token_id {
            // The padding token's row is looked up but not trained (PyTorch's padding_idx).
            let trained = ids.ne(pad)?.to_dtype(x.dtype())?.unsqueeze(1)?;
            let frozen = (1.0 - &trained)?;
            x = x
                .broadcast_mul(&trained)?
                .add(&x.detach().broadcast_mul(&frozen)?)?;
        }
        let mut x = x.reshape((b, l, h))?;
        // Causal: a token sees the real tokens at or before it. Half of f32's range, so that
        // two maskings never sum to infinity.
        let mask = attention_bias(&batch.mask, -f32::MAX / 2.0, |query, key| key <= query)?;
        let (cos, sin) = rotary_tables(l, d, c.rope_theta, &self.device)?;
        for layer in &self.layers {
            // [B, L, n·d] → [B, n, L, d], per-head norm first where the model has one.
            let split =
                |t: Tensor, n: usize, norm: Option<&RmsNorm>| -> candle_core::Result<Tensor> {
                    let t = t.reshape((b, l, n, d))?;
                    let t = match norm {
                        Some(norm) => norm.forward(&t)?,
                        None => t,
                    };
                    t.transpose(1, 2)?.contiguous()
                };
            let y = layer.input_norm.forward(&x)?;
            let q = split(layer.q.forward(&y)?, heads, layer.q_norm.as_ref())?;
            let k = split(layer.k.forward(&y)?, kv, layer.k_norm.as_ref())?;
            let v = split(layer.v.forward(&y)?, kv, None)?;
            let q = rotate(&q, &cos, &sin)?;
            let k = share(&rotate(&k, &cos, &sin)?, heads / kv)?;
            let v = share(&v, heads / kv)?;
            let dropout = dropout.as_deref_mut().map(|dp| (dp, c.attention_dropout));
            let ctx = attend(&q, &k, &v, &mask, dropout)?;
            x = x.add(&layer.o.forward(&ctx)?)?;
            let y = layer.post_norm.forward(&x)?;
            let glu = layer
                .gate
                .forward(&y)?
                .silu()?
                .mul(&layer.up.forward(&y)?)?;
            x = x.add(&layer.down.forward(&glu)?)?;
            if self.inference {
                x = x.detach();
            }
        }
        Ok(self.norm.forward(&x)?)
    }
}

/// Key/value heads `[B, kv, L, d]` repeated for the `group` query heads that share each:
/// `[B, kv·group, L, d]`, query head j reading key/value head j / group.
fn share(x: &Tensor, group: usize) -> candle_core::Result<Tensor> {
    if group == 1 {
        return Ok(x.clone());
    }
    let (b, kv, l, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kv, group, l, d))?
        .contiguous()?
        .reshape((b, kv * group, l, d))
}
