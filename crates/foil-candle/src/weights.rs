//! Reading a checkpoint's tensors by name: `model.safetensors`, else `pytorch_model.bin`,
//! with the naming variants found in the wild (`bert.` / `mpnet.` / `roberta.` / `model.` prefixes of task-head
//! checkpoints,
//! TensorFlow-era `LayerNorm.gamma` / `beta`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use foil_core::{Error, Result};

/// The named float32 tensors of a checkpoint.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Loads the checkpoint of a model folder onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let safetensors = dir.join("model.safetensors");
        let pickle = dir.join("pytorch_model.bin");
        let (path, raw) = if safetensors.is_file() {
            let raw = candle_core::safetensors::load(&safetensors, device)
                .map_err(|e| Error::format(&safetensors, format!("cannot read weights: {e}")))?;
            (safetensors, raw)
        } else if pickle.is_file() {
            let raw = candle_core::pickle::read_all(&pickle)
                .map_err(|e| Error::format(&pickle, format!("cannot read weights: {e}")))?
                .into_iter()
                .map(|(name, t)| t.to_device(device).map(|t| (name, t)))
                .collect::<candle_core::Result<HashMap<_, _>>>()
                .map_err(|e| Error::format(&pickle, e.to_string()))?;
            (pickle, raw)
        } else {
            return Err(Error::Invalid(format!(
                "{}: no model.safetensors or pytorch_model.bin",
                dir.display()
            )));
        };
        let mut tensors = HashMap::with_capacity(raw.len());
        for (name, tensor) in raw {
            let tensor = tensor
                .to_dtype(DType::F32)
                .map_err(|e| Error::format(&path, format!("{name}: {e}")))?;
            tensors.insert(canonical_name(&name), tensor);
        }
        Ok(Self { path, tensors })
    }

    /// Wraps tensors already in memory (tests, freshly initialized heads).
    pub fn from_tensors(path: PathBuf, tensors: HashMap<String, Tensor>) -> Self {
        Self { path, tensors }
    }

    /// The file the weights came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, which must have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::format(&self.path, format!("missing tensor {name:?}")))?;
        if t.dims() != shape {
            return Err(Error::format(
                &self.path,
                format!(
                    "tensor {name:?} has shape {:?}, expected {shape:?}",
                    t.dims()
                ),
            ));
        }
        Ok(t)
    }

    /// The tensor `name` as a flat vector.
    pub fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.get(name, shape)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| Error::format(&self.path, format!("{name}: {e}")))
    }

    /// The shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.tensors
            .get(name)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| Error::format(&self.path, format!("missing tensor {name:?}")))
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

/// Strips a leading `bert.`, `mpnet.` or `roberta.` (classification checkpoints) and renames
/// `gamma`/`beta` to `weight`/`bias`.
fn canonical_name(name: &str) -> String {
    let name = name
        .strip_prefix("bert.")
        .or_else(|| name.strip_prefix("mpnet."))
        .or_else(|| name.strip_prefix("roberta."))
        // ModernBertForMaskedLM, Qwen*ForCausalLM: the encoder under `model.`.
        .or_else(|| name.strip_prefix("model."))
        .unwrap_or(name);
    if let Some(prefix) = name.strip_suffix(".gamma") {
        format!("{prefix}.weight")
    } else if let Some(prefix) = name.strip_suffix(".beta") {
        format!("{prefix}.bias")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_name;

    #[test]
    fn names_are_canonical() {
        assert_eq!(
            canonical_name("bert.encoder.layer.0.output.LayerNorm.gamma"),
            "encoder.layer.0.output.LayerNorm.weight"
        );
        assert_eq!(
            canonical_name("embeddings.LayerNorm.beta"),
            "embeddings.LayerNorm.bias"
        );
        assert_eq!(canonical_name("classifier.weight"), "classifier.weight");
    }
}
