//! `checkpoint/`: the weights, the optimizer's state and the run's state, written atomically
//! every `checkpoint_every` steps; a run resumes from it only if it belongs to the same run
//! (the same data, base weights and settings: [`run_hash`]).

use std::path::Path;

use candle_core::Var;
use foil_core::fsutil::write_atomic;
use foil_core::{Error, Result};
use foil_train::AdamW;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::export::save_vars;
use super::TrainConfig;

/// Saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct State {
    /// Hash of everything that determines the run; a checkpoint of another run is not resumed.
    pub run: String,
    pub step: u64,
    /// Per-step losses (f32, as computed: they survive the JSON round trip exactly).
    pub losses: Vec<f32>,
}

/// The state in `dir` if it was saved by the run `run_id`.
pub(super) fn load_state(dir: &Path, run_id: &str) -> Option<State> {
    let bytes = std::fs::read(dir.join("state.json")).ok()?;
    serde_json::from_slice::<State>(&bytes)
        .ok()
        .filter(|s| s.run == run_id)
}

/// Hash of the inputs and settings that determine the run's weights.
pub(super) fn run_hash(config: &TrainConfig, model_dir: &Path, k: usize) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(foil_core::fsutil::sha256_file(&config.train_file)?);
    h.update(foil_core::fsutil::sha256_file(
        &model_dir.join("model.safetensors"),
    )?);
    let mut settings = serde_json::to_value(config).unwrap_or_default();
    if let Value::Object(map) = &mut settings {
        for volatile in [
            "output",
            "threads",
            "checkpoint_every",
            "device",
            "eval",
            "model",
            "train_file",
        ] {
            map.remove(volatile);
        }
    }
    h.update(settings.to_string());
    h.update(k.to_le_bytes());
    Ok(foil_core::fsutil::hex(&h.finalize()))
}

/// Writes `checkpoint/` (weights, optimizer state, run state) atomically: a temporary
/// folder renamed over the old one.
pub(super) fn save_checkpoint(
    dir: &Path,
    vars: &[(String, Var)],
    optimizer: &AdamW,
    run: &str,
    step: u64,
    losses: &[f32],
) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    save_vars(vars, &tmp.join("model.safetensors"), "")?;
    optimizer.save(&tmp.join("optimizer.safetensors"))?;
    let state = State {
        run: run.to_string(),
        step,
        losses: losses.to_vec(),
    };
    write_atomic(
        &tmp.join("state.json"),
        &serde_json::to_vec_pretty(&state).unwrap_or_default(),
    )?;
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}
