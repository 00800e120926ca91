//! Helpers shared by the integration tests that run the `foil` binary with all-MiniLM-L6-v2.

#![allow(dead_code)] // each test file uses a subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// all-MiniLM-L6-v2 as installed by scripts/fetch-models.sh; `None` (the test skips, saying
/// so) outside CI when it is absent. Under CI a missing model fails the test.
pub fn minilm() -> Option<PathBuf> {
    installed("all-MiniLM-L6-v2")
}

/// all-mpnet-base-v2 (`scripts/fetch-models.sh mpnet`), like [`minilm`].
pub fn mpnet() -> Option<PathBuf> {
    installed("all-mpnet-base-v2")
}

fn installed(name: &str) -> Option<PathBuf> {
    let root = std::env::var_os("FOIL_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/foil/models")))?;
    let dir = root.join(name);
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run scripts/fetch-models.sh first: {name} is missing"
    );
    eprintln!("skipped: {name} is not installed");
    None
}

/// Runs `foil` with `args` (info logs on) and asserts that it succeeded.
pub fn foil(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(args)
        .env("FOIL_LOG", "info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "foil {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
