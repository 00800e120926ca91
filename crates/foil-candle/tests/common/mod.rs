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
