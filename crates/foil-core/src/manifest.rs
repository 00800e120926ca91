//! `manifest.json`: what a stage did, recorded next to what it wrote.
//!
//! A manifest names the stage and foil's version, holds the full configuration, every input
//! file with its size and SHA-256, the seed, the counts (including skipped records by reason)
//! and the timings. Later stages and reruns compare it to decide whether an output is stale.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::{sha256_file, write_atomic};
use crate::skip::SkipReport;

/// An input file as recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

impl InputFile {
    /// Records `path` with its size and hash.
    pub fn describe(path: &Path) -> Result<Self> {
        let bytes = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        Ok(Self {
            path: path.display().to_string(),
            bytes,
            sha256: sha256_file(path)?,
        })
    }
}

/// The record of one stage's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The stage, e.g. `search`.
    pub stage: String,
    /// foil's version.
    pub foil_version: String,
    /// The stage's full configuration.
    pub config: serde_json::Value,
    pub inputs: Vec<InputFile>,
    /// Output files, relative to the manifest's folder or absolute.
    pub outputs: Vec<String>,
    pub seed: Option<u64>,
    /// Named counts (documents, queries, results, …).
    pub counts: BTreeMap<String, u64>,
    /// Records skipped under `--skip-invalid`, by file and reason.
    pub skipped: BTreeMap<String, BTreeMap<String, u64>>,
    /// Seconds spent per phase.
    pub timings: BTreeMap<String, f64>,
}

impl Manifest {
    /// A manifest for `stage` with `config`.
    pub fn new(stage: &str, config: serde_json::Value) -> Self {
        Self {
            stage: stage.to_string(),
            foil_version: env!("CARGO_PKG_VERSION").to_string(),
            config,
            inputs: Vec::new(),
            outputs: Vec::new(),
            seed: None,
            counts: BTreeMap::new(),
            skipped: BTreeMap::new(),
            timings: BTreeMap::new(),
        }
    }

    /// Adds an input file (hashing it).
    pub fn add_input(&mut self, path: &Path) -> Result<()> {
        self.inputs.push(InputFile::describe(path)?);
        Ok(())
    }

    /// Records the skip counts of `report`.
    pub fn set_skips(&mut self, report: &SkipReport) {
        self.skipped = report
            .counts
            .iter()
            .map(|(file, reasons)| {
                let reasons = reasons
                    .iter()
                    .map(|(r, n)| (r.as_str().to_string(), *n))
                    .collect();
                (file.clone(), reasons)
            })
            .collect();
    }

    /// Writes the manifest as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::format(path, format!("cannot serialize manifest: {e}")))?;
        json.push(b'\n');
        write_atomic(path, &json)
    }

    /// Reads a manifest.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(path, format!("not a foil manifest: {e}")))
    }
}
