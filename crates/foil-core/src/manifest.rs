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
    /// SHA-256 of output files that sit next to the manifest, by file name; a reader checks a
    /// file against it ([`check_output`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_sha256: BTreeMap<String, String>,
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
            output_sha256: BTreeMap::new(),
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

    /// Records an output file that sits next to the manifest, with its SHA-256.
    pub fn add_output_file(&mut self, path: &Path) -> Result<()> {
        self.outputs.push(path.display().to_string());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.output_sha256.insert(name, sha256_file(path)?);
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

/// The manifest of a single output file: `<file>.manifest.json`.
pub fn manifest_path_of(file: &Path) -> std::path::PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".manifest.json");
    file.with_file_name(name)
}

/// Checks a file foil wrote against the SHA-256 its manifest (`<file>.manifest.json`) records.
/// A file without such a manifest, or whose manifest records no hash, passes; one that
/// differs is an error naming it — it changed after foil wrote it (a damaged disk, a run cut
/// short, or an edit).
pub fn check_output(file: &Path) -> Result<()> {
    let manifest = manifest_path_of(file);
    if !manifest.is_file() {
        return Ok(());
    }
    let Ok(recorded) = Manifest::read(&manifest) else {
        return Ok(());
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(expected) = recorded.output_sha256.get(&name) else {
        return Ok(());
    };
    let actual = sha256_file(file)?;
    if &actual != expected {
        return Err(Error::format(
            file,
            format!(
                "its SHA-256 is {actual}, but {} records {expected}: the file changed after foil wrote it (rerun the stage that made it, or remove the manifest to use the file as it is)",
                manifest.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod output_tests {
    use super::*;

    #[test]
    fn an_output_that_changed_after_its_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("bm25.trec");
        std::fs::write(&run, "q1 Q0 d1 1 2.5 t\n").unwrap();
        // No manifest: nothing to check.
        check_output(&run).unwrap();
        let mut m = Manifest::new("search", serde_json::json!({}));
        m.add_output_file(&run).unwrap();
        m.write(&manifest_path_of(&run)).unwrap();
        check_output(&run).unwrap();
        std::fs::write(&run, "q1 Q0 d1 1 2.6 t\n").unwrap();
        let err = check_output(&run).unwrap_err().to_string();
        assert!(err.starts_with(&run.display().to_string()), "{err}");
        assert!(err.contains("bm25.trec.manifest.json records"), "{err}");
        let mut skips = crate::SkipReport::default();
        assert!(crate::Run::read(&run, Default::default(), &mut skips).is_err());
    }
}
