//! AdamW, its learning-rate schedule and gradient clipping, each exactly as the PyTorch code a
//! sentence-transformers fine-tune runs (`tests/optim_parity.rs` checks them to 1e-6):
//!
//! - [`AdamW`] is `torch.optim.AdamW` (Loshchilov and Hutter, 2019, "Decoupled Weight Decay
//!   Regularization"): for a parameter θ with gradient g at step t (per parameter, from 1)
//!
//!   ```text
//!   θ ← θ · (1 − lr · λ)                           decoupled weight decay
//!   m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
//!   θ ← θ − lr / (1 − β₁ᵗ) · m / ( √v / √(1 − β₂ᵗ) + ε )
//!   ```
//!
//!   (ε outside the square root). Parameters without a gradient are skipped, and keep their own
//!   step count, as in torch.
//! - [`LinearSchedule`] is transformers' `get_linear_schedule_with_warmup`.
//! - [`clip_grad_norm`] is `torch.nn.utils.clip_grad_norm_` (global L2 norm).
//!
//! The optimizer state (moments and step counts) is saved to safetensors for resuming.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// AdamW's hyper-parameters (torch's defaults, the learning rate aside).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// λ, applied to the parameters whose decay flag is set (see [`decays`]).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Whether a parameter gets weight decay under transformers' `Trainer` convention: not biases,
/// not LayerNorm weights.
pub fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    /// This parameter's learning rate relative to the schedule's (1 but for a parameter
    /// group with its own rate, such as a fresh classifier head).
    lr_scale: f64,
    /// First and second moments, once the parameter has had a gradient.
    moments: Option<(Tensor, Tensor)>,
    step: u64,
}

/// `torch.optim.AdamW` over a list of named variables.
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<Param>,
}

impl AdamW {
    /// Optimizes `vars`, with weight decay where [`decays`] says so.
    pub fn new(vars: &[(String, Var)], config: AdamWConfig) -> Self {
        Self::with_decay(vars, config, decays)
    }

    /// Optimizes `vars`, with weight decay where `decay(name)` is true.
    pub fn with_decay(
        vars: &[(String, Var)],
        config: AdamWConfig,
        decay: impl Fn(&str) -> bool,
    ) -> Self {
        let params = vars
            .iter()
            .map(|(name, var)| Param {
                name: name.clone(),
                var: var.clone(),
                decay: decay(name),
                lr_scale: 1.0,
                moments: None,
                step: 0,
            })
            .collect();
        Self { config, params }
    }

    /// Gives the parameters `group(name)` selects their own learning rate, `scale` times the
    /// schedule's at every step — torch's parameter groups under one `LambdaLR` schedule.
    pub fn scale_lr(&mut self, group: impl Fn(&str) -> bool, scale: f64) {
        for p in self.params.iter_mut().filter(|p| group(&p.name)) {
            p.lr_scale = scale;
        }
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The most steps any parameter has taken.
    pub fn steps(&self) -> u64 {
        self.params.iter().map(|p| p.step).max().unwrap_or(0)
    }

    /// One update at learning rate `lr` from `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let c = &self.config;
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let lr = lr * p.lr_scale;
            p.step += 1;
            let t = p.step as i32;
            let (m, v) = match p.moments.take() {
                Some(mv) => mv,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let decay = match p.decay && c.weight_decay != 0.0 {
                true => Some(1.0 - lr * c.weight_decay),
                false => None,
            };
            let bias1 = 1.0 - c.beta1.powi(t);
            let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
            let theta = p.var.as_tensor();
            if in_place::supported(&[theta, &g, &m, &v]) {
                in_place::moment(&m, &g, c.beta1, false)?;
                in_place::moment(&v, &g, c.beta2, true)?;
                let update = in_place::Update {
                    decay: decay.unwrap_or(1.0) as f32,
                    inv_bias2_sqrt: (1.0 / bias2_sqrt) as f32,
                    eps: c.eps as f32,
                    step_size: (lr / bias1) as f32,
                };
                theta.inplace_op3(&m, &v, &update)?;
                p.moments = Some((m, v));
                continue;
            }
            let mut theta = theta.detach();
            if let Some(decay) = decay {
                theta = (theta * decay)?;
            }
            let m = ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = (v.sqrt()? / bias2_sqrt)?.affine(1.0, c.eps)?;
            let update = (m.div(&denom)? * (lr / bias1))?;
            p.var.set(&theta.sub(&update)?)?;
            p.moments = Some((m, v));
        }
        Ok(())
    }

    /// Saves the moments and step counts (`<name>.exp_avg`, `<name>.exp_avg_sq`, `<name>.step`,
    /// as torch's state names them) to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for p in &self.params {
            let Some((m, v)) = &p.moments else { continue };
            tensors.insert(format!("{}.exp_avg", p.name), m.to_device(&Device::Cpu)?);
            tensors.insert(format!("{}.exp_avg_sq", p.name), v.to_device(&Device::Cpu)?);
            tensors.insert(
                format!("{}.step", p.name),
                Tensor::new(&[p.step as f64], &Device::Cpu)?,
            );
        }
        candle_core::safetensors::save(&tensors, path)
            .map_err(|e| Error::format(path, e.to_string()))
    }

    /// Restores what [`AdamW::save`] wrote, for the same parameters.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::format(path, e.to_string()))?;
        for p in &mut self.params {
            let (Some(m), Some(v), Some(step)) = (
                tensors.remove(&format!("{}.exp_avg", p.name)),
                tensors.remove(&format!("{}.exp_avg_sq", p.name)),
                tensors.remove(&format!("{}.step", p.name)),
            ) else {
                p.moments = None;
                p.step = 0;
                continue;
            };
            let shape = p.var.as_tensor().shape();
            if m.shape() != shape || v.shape() != shape {
                return Err(Error::format(
                    path,
                    format!(
                        "optimizer state of \"{}\" is {:?}, the parameter {:?}",
                        p.name,
                        m.dims(),
                        shape.dims()
                    ),
                ));
            }
            let (device, dtype) = (p.var.device().clone(), p.var.dtype());
            let to = |t: Tensor| t.to_device(&device).and_then(|t| t.to_dtype(dtype));
            p.moments = Some((to(m)?, to(v)?));
            p.step = step
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?
                .first()
                .copied()
                .unwrap_or(0.0) as u64;
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::format(
                path,
                format!("optimizer state has \"{extra}\", which is no parameter here"),
            ));
        }
        Ok(())
    }
}

/// Linear warmup from 0 to `base_lr` over `warmup_steps`, then linear decay to 0 at
/// `total_steps` (transformers' `get_linear_schedule_with_warmup`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearSchedule {
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl LinearSchedule {
    /// The learning rate of the update that follows `step` finished updates (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        let factor = if step < self.warmup_steps {
            step as f64 / self.warmup_steps.max(1) as f64
        } else {
            let left = self.total_steps.saturating_sub(step) as f64;
            (left / self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64).max(0.0)
        };
        self.base_lr * factor
    }
}

/// Scales the gradients of `vars` in place so that their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, capped at 1);
/// returns the norm before clipping. Variables without a gradient are left out.
pub fn clip_grad_norm(vars: &[(String, Var)], grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    let mut sum = 0f64;
    for (_, var) in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            sum += match in_place::supported(&[g]) {
                true => in_place::sum_of_squares(g)?,
                false => g
                    .to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?,
            };
        }
    }
    let norm = sum.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for (_, var) in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = (g.detach() * coef)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// The optimizer's arithmetic on float32 CPU tensors, in place and in parallel: AdamW's update
/// of a parameter is three passes over memory instead of a dozen tensor operations that each
/// allocate a buffer. The operations and their order are those of the tensor version, so the
/// results are the same to the bit.
mod in_place {
    use candle_core::{bail, CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
    use foil_candle::fused::elements;
    use rayon::prelude::*;

    /// Elements per parallel task (and per partial sum).
    const BLOCK: usize = 1 << 16;

    /// Whether every tensor is a contiguous float32 tensor on the CPU.
    pub fn supported(tensors: &[&Tensor]) -> bool {
        tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
    }

    fn elements_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
        let CpuStorage::F32(data) = storage else {
            bail!("optimizer: a tensor is not float32");
        };
        match layout.contiguous_offsets() {
            Some((start, end)) => Ok(&mut data[start..end]),
            None => bail!("optimizer: a tensor is not contiguous"),
        }
    }

    /// Σ x² in float64, summed over fixed blocks in order (the same for any thread count).
    pub fn sum_of_squares(t: &Tensor) -> Result<f64> {
        let (storage, layout) = t.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            bail!("sum of squares: not a CPU tensor");
        };
        let x = elements(cpu, layout, "sum of squares")?;
        let partials: Vec<f64> = x
            .par_chunks(BLOCK)
            .map(|block| block.iter().map(|&v| (v as f64) * (v as f64)).sum())
            .collect();
        Ok(partials.iter().sum())
    }

    /// `m ← β m + (1 − β) g`, or with `square`, `m ← β m + (1 − β) g²` (the tensor version's
    /// `m * β + g * (1 − β)`, each factor rounded to float32).
    pub fn moment(m: &Tensor, g: &Tensor, beta: f64, square: bool) -> Result<()> {
        m.inplace_op2(
            g,
            &Moment {
                beta: beta as f32,
                rest: (1.0 - beta) as f32,
                square,
            },
        )
    }

    struct Moment {
        beta: f32,
        rest: f32,
        square: bool,
    }

    impl InplaceOp2 for Moment {
        fn name(&self) -> &'static str {
            "adamw-moment"
        }

        fn cpu_fwd(
            &self,
            m_storage: &mut CpuStorage,
            m_layout: &Layout,
            g_storage: &CpuStorage,
            g_layout: &Layout,
        ) -> Result<()> {
            let m = elements_mut(m_storage, m_layout)?;
            let g = elements(g_storage, g_layout, self.name())?;
            if m.len() != g.len() {
                bail!(
                    "adamw-moment: {} moments for {} gradients",
                    m.len(),
                    g.len()
                );
            }
            m.par_chunks_mut(BLOCK)
                .zip(g.par_chunks(BLOCK))
                .for_each(|(m, g)| {
                    for (m, &g) in m.iter_mut().zip(g) {
                        let g = if self.square { g * g } else { g };
                        *m = *m * self.beta + g * self.rest;
                    }
                });
            Ok(())
        }
    }

    /// `θ ← θ · decay − m / (√v · inv_bias2_sqrt + eps) · step_size`.
    pub struct Update {
        pub decay: f32,
        pub inv_bias2_sqrt: f32,
        pub eps: f32,
        pub step_size: f32,
    }

    impl InplaceOp3 for Update {
        fn name(&self) -> &'static str {
            "adamw-update"
        }

        fn cpu_fwd(
            &self,
            t_storage: &mut CpuStorage,
            t_layout: &Layout,
            m_storage: &CpuStorage,
            m_layout: &Layout,
            v_storage: &CpuStorage,
            v_layout: &Layout,
        ) -> Result<()> {
            let theta = elements_mut(t_storage, t_layout)?;
            let m = elements(m_storage, m_layout, self.name())?;
            let v = elements(v_storage, v_layout, self.name())?;
            if theta.len() != m.len() || theta.len() != v.len() {
                bail!("adamw-update: the parameter and its moments differ in size");
            }
            theta
                .par_chunks_mut(BLOCK)
                .zip(m.par_chunks(BLOCK).zip(v.par_chunks(BLOCK)))
                .for_each(|(theta, (m, v))| {
                    for ((t, &m), &v) in theta.iter_mut().zip(m).zip(v) {
                        let denom = v.sqrt() * self.inv_bias2_sqrt + self.eps;
                        *t = *t * self.decay - m / denom * self.step_size;
                    }
                });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = LinearSchedule {
            base_lr: 1.0,
            warmup_steps: 4,
            total_steps: 12,
        };
        let lrs: Vec<f64> = (0..14).map(|t| s.lr(t)).collect();
        assert_eq!(&lrs[..5], &[0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(lrs[8], 0.5);
        assert_eq!(&lrs[12..], &[0.0, 0.0]);
        let none = LinearSchedule {
            base_lr: 2.0,
            warmup_steps: 0,
            total_steps: 4,
        };
        assert_eq!(none.lr(0), 2.0);
    }

    /// A parameter group at `scale` × the rate moves exactly as a separate optimizer at that
    /// rate would move it (torch's parameter groups); the others are untouched by the scale.
    #[test]
    fn a_scaled_group_steps_as_at_its_own_rate() {
        let init = |v: &[f32]| Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap();
        let run = |lr: f64, scale: Option<f64>| -> Vec<Vec<f32>> {
            let vars = vec![
                ("encoder.w".to_string(), init(&[0.5, -1.0, 2.0])),
                ("classifier.weight".to_string(), init(&[0.1, 0.2, -0.3])),
            ];
            let mut opt = AdamW::new(&vars, AdamWConfig::default());
            if let Some(scale) = scale {
                opt.scale_lr(|n| n.starts_with("classifier."), scale);
            }
            for _ in 0..3 {
                let loss = vars
                    .iter()
                    .map(|(_, v)| v.as_tensor().sqr().unwrap().sum_all().unwrap())
                    .reduce(|a, b| (a + b).unwrap())
                    .unwrap();
                opt.step(&loss.backward().unwrap(), lr).unwrap();
            }
            vars.iter()
                .map(|(_, v)| v.as_tensor().to_vec1::<f32>().unwrap())
                .collect()
        };
        let scaled = run(1e-2, Some(50.0));
        assert_eq!(scaled[0], run(1e-2, None)[0]);
        assert_eq!(scaled[1], run(0.5, None)[1]);
        assert_ne!(scaled[1], run(1e-2, None)[1]);
    }

    #[test]
    fn decay_follows_the_trainer_convention() {
        assert!(decays("encoder.layer.0.attention.self.query.weight"));
        assert!(!decays("encoder.layer.0.attention.self.query.bias"));
        assert!(!decays("embeddings.LayerNorm.weight"));
    }
}
