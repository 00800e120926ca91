//! Shared by the tests that need real weights.

#![allow(dead_code)] // each test file uses some of these

use std::path::{Path, PathBuf};

/// all-MiniLM-L6-v2 (BERT), or `None` (outside CI) when it is not installed.
pub fn minilm() -> Option<PathBuf> {
    installed("all-MiniLM-L6-v2")
}

/// all-mpnet-base-v2 (MPNet), or `None` (outside CI) when it is not installed.
pub fn mpnet() -> Option<PathBuf> {
    installed("all-mpnet-base-v2")
}

/// The model folder `name` from `scripts/fetch-models.sh`'s cache. CI installs every model the
/// tests use, so there a missing folder fails the test instead of skipping it.
fn installed(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("FOIL_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/foil/models")))?
        .join(name);
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run scripts/fetch-models.sh first: {} is missing",
        dir.display()
    );
    eprintln!(
        "skipped: {} is not installed (scripts/fetch-models.sh)",
        dir.display()
    );
    None
}

/// A golden JSON file under `tests/fixtures/` (e.g. `encoder/mpnet_embeddings.json`).
pub fn fixture(relative: &str) -> serde_json::Value {
    let path = fixtures().join(relative);
    serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The repository's `tests/fixtures` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A golden file's `texts`.
pub fn texts(golden: &serde_json::Value) -> Vec<&str> {
    golden["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect()
}

/// A golden file's `token_ids`.
pub fn token_ids(golden: &serde_json::Value) -> Vec<Vec<u32>> {
    golden["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// A golden file's `embeddings`.
pub fn vectors(golden: &serde_json::Value) -> Vec<Vec<f64>> {
    golden["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Cosine of foil's vector and a golden one, in float64.
pub fn cosine(got: &[f32], want: &[f64]) -> f64 {
    let dot: f64 = got.iter().zip(want).map(|(a, b)| *a as f64 * b).sum();
    let na: f64 = got.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The smallest cosine between foil's embeddings and a golden file's.
pub fn min_cosine(got: &foil_core::Embeddings, golden: &serde_json::Value) -> f64 {
    vectors(golden)
        .iter()
        .enumerate()
        .map(|(i, want)| cosine(got.row(i), want))
        .fold(f64::INFINITY, f64::min)
}

/// A copy of the model folder `dir` (its files and sub-folders, one level deep) with `model`'s
/// variables saved as its weights.
pub fn saved_copy(dir: &Path, model: &foil_candle::model::CandleModel) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if path.is_dir() {
            std::fs::create_dir(out.path().join(name)).unwrap();
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                std::fs::copy(
                    &inner,
                    out.path().join(name).join(inner.file_name().unwrap()),
                )
                .unwrap();
            }
        } else if name != "model.safetensors" && name != "pytorch_model.bin" {
            std::fs::copy(&path, out.path().join(name)).unwrap();
        }
    }
    model.save(&out.path().join("model.safetensors")).unwrap();
    out
}
