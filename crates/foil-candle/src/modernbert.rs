//! [`CandleModernBert`]: ModernBERT encoders (ModernBERT-base/large and the embedders built
//! on them, such as gte-modernbert and modernbert-embed) on candle tensors with autograd.
//!
//! It follows Hugging Face's `ModernBertModel` with eager attention operation for operation:
//! token embeddings → LayerNorm; per layer LayerNorm (none before layer 0's attention) → one
//! fused QKV projection → rotary positions (a global and a local base) → attention over the
//! whole text in every `global_attn_every_n_layers`-th layer and over a sliding window of
//! `local_attention / 2` tokens on each side in the others → residual; LayerNorm → GeGLU MLP →
//! residual; a final LayerNorm. LayerNorms and projections have no biases unless the config
//! asks. The golden tests (`tests/tiny_families.rs`, `tests/grad_parity.rs`) check embeddings
//! against sentence-transformers and every gradient against PyTorch on a tiny random
//! checkpoint.

use candle_core::{Device, Tensor, Var};
use foil_core::Result;

use crate::config::ModernBertConfig;
use crate::model::{
    attend, attention_bias, rotary_tables, rotate, Batch, Dropout, LayerNorm, Linear,
};
use crate::weights::Weights;

struct Layer {
    /// `None` for layer 0, whose input is the embeddings' norm already.
    attn_norm: Option<LayerNorm>,
    qkv: Linear,
    out: Linear,
    mlp_norm: LayerNorm,
    /// Projects to 2 × intermediate: the GELU input, then the gate.
    wi: Linear,
    wo: Linear,
}

/// A trainable ModernBERT encoder.
pub struct CandleModernBert {
    /// Inference only: each layer's output is detached, so that the autograd graph of the
    /// layers before is freed (memory of one layer, not of all).
    inference: bool,
    config: ModernBertConfig,
    device: Device,
    vars: Vec<(String, Var)>,
    embed: Var,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
}

impl CandleModernBert {
    /// Builds the model from loaded weights (copied into fresh variables named as
    /// `ModernBertModel` names them, so a saved model loads in transformers).
    pub fn new(config: &ModernBertConfig, w: &Weights, device: &Device) -> Result<Self> {
        let (h, inner) = (config.hidden_size, config.intermediate_size);
        let mut vars = Vec::new();
        let mut var = |name: String, shape: &[usize]| -> Result<Var> {
            let t = w.get(&name, shape)?.to_device(device)?;
            let v = Var::from_tensor(&t)?;
            vars.push((name, v.clone()));
            Ok(v)
        };
        let embed = var(
            "embeddings.tok_embeddings.weight".into(),
            &[config.vocab_size, h],
        )?;
        // A LayerNorm over the hidden size, with a bias where the config has them.
        fn norm(
            var: &mut impl FnMut(String, &[usize]) -> Result<Var>,
            config: &ModernBertConfig,
            prefix: &str,
        ) -> Result<LayerNorm> {
            let h = config.hidden_size;
            Ok(LayerNorm {
                w: var(format!("{prefix}.weight"), &[h])?,
                b: if config.norm_bias {
                    Some(var(format!("{prefix}.bias"), &[h])?)
                } else {
                    None
                },
                eps: config.norm_eps,
            })
        }
        let embed_norm = norm(&mut var, config, "embeddings.norm")?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let attn_norm = if l == 0 {
                None
            } else {
                Some(norm(&mut var, config, &format!("layers.{l}.attn_norm"))?)
            };
            let mlp_norm = norm(&mut var, config, &format!("layers.{l}.mlp_norm"))?;
            let mut linear = |s: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let w = var(format!("layers.{l}.{s}.weight"), &[out, inp])?;
                let b = if bias {
                    Some(var(format!("layers.{l}.{s}.bias"), &[out])?)
                } else {
                    None
                };
                Ok(Linear { w, b })
            };
            let qkv = linear("attn.Wqkv", 3 * h, h, config.attention_bias)?;
            let out = linear("attn.Wo", h, h, config.attention_bias)?;
            let wi = linear("mlp.Wi", 2 * inner, h, config.mlp_bias)?;
            let wo = linear("mlp.Wo", h, inner, config.mlp_bias)?;
            layers.push(Layer {
                attn_norm,
                qkv,
                out,
                mlp_norm,
                wi,
                wo,
            });
        }
        let final_norm = norm(&mut var, config, "final_norm")?;
        Ok(Self {
            config: config.clone(),
            inference: false,
            device: device.clone(),
            vars,
            embed,
            embed_norm,
            layers,
            final_norm,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ModernBertConfig {
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

    /// Last hidden states `[B, L, H]` (after the final norm) of a right-padded batch; dropout
    /// where the config has any, when `dropout` is given.
    pub fn forward(&self, batch: &Batch, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let c = &self.config;
        let (b, l) = batch.ids.dims2()?;
        let (h, heads, d) = (c.hidden_size, c.num_attention_heads, c.head_dim());
        let ids = batch.ids.flatten_all()?;
        let x = self.embed.as_tensor().index_select(&ids, 0)?;
        let mut x = self.embed_norm.forward(&x.reshape((b, l, h))?)?;
        if let Some(dp) = dropout.as_deref_mut() {
            x = dp.apply(&x, c.embedding_dropout)?;
        }
        // The most negative float, as transformers' masks; local layers see ±window tokens.
        let window = c.local_attention / 2;
        let global_mask = attention_bias(&batch.mask, f32::MIN, |_, _| true)?;
        let local_mask = attention_bias(&batch.mask, f32::MIN, |q, k| q.abs_diff(k) <= window)?;
        let global_rope = rotary_tables(l, d, c.rope_theta(0), &self.device)?;
        let local_rope = rotary_tables(l, d, c.rope_theta(1), &self.device)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let (mask, (cos, sin)) = if c.is_global(i) {
                (&global_mask, &global_rope)
            } else {
                (&local_mask, &local_rope)
            };
            let y = match &layer.attn_norm {
                Some(norm) => norm.forward(&x)?,
                None => x.clone(),
            };
            // [B, L, 3·H] → three [B, heads, L, d].
            let qkv = layer.qkv.forward(&y)?.reshape((b, l, 3, heads, d))?;
            let head = |j: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(2, j, 1)?
                    .squeeze(2)?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = rotate(&head(0)?, cos, sin)?;
            let k = rotate(&head(1)?, cos, sin)?;
            let v = head(2)?;
            let attention_dropout = dropout.as_deref_mut().map(|dp| (dp, c.attention_dropout));
            let ctx = attend(&q, &k, &v, mask, attention_dropout)?;
            x = x.add(&layer.out.forward(&ctx)?)?;
            let y = layer.mlp_norm.forward(&x)?;
            let wi = layer.wi.forward(&y)?;
            let inner = c.intermediate_size;
            let input = wi.narrow(2, 0, inner)?;
            let gate = wi.narrow(2, inner, inner)?;
            let act = match c.hidden_activation.as_str() {
                "gelu" => input.gelu_erf()?,
                _ => input.gelu()?,
            };
            let mut glu = act.mul(&gate)?;
            if let Some(dp) = dropout.as_deref_mut() {
                glu = dp.apply(&glu, c.mlp_dropout)?;
            }
            x = x.add(&layer.wo.forward(&glu)?)?;
            if self.inference {
                x = x.detach();
            }
        }
        Ok(self.final_norm.forward(&x)?)
    }
}
