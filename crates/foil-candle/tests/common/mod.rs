//! Shared by the tests that need real weights.

use std::path::{Path, PathBuf};

/// The model folder, or `None` (outside CI) when it is not installed.
pub fn minilm() -> Option<PathBuf> {
    let dir = std::env::var_os("FOIL_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/foil/models")))?
        .join("all-MiniLM-L6-v2");
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
