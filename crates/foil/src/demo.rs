//! The built-in demo: a small BEIR dataset embedded in the binary (120 passages in 12 topic
//! clusters, 60 queries; see `crates/foil/demo/README.md`) and the pipeline foil runs on it
//! when a user has nothing else at hand.

use std::path::{Path, PathBuf};

use foil_core::fsutil::write_atomic;
use foil_core::Result;

/// The embedded files, relative to the dataset folder.
const FILES: [(&str, &str); 6] = [
    ("corpus.jsonl", include_str!("../demo/corpus.jsonl")),
    ("queries.jsonl", include_str!("../demo/queries.jsonl")),
    ("qrels/test.tsv", include_str!("../demo/qrels/test.tsv")),
    ("qrels/train.tsv", include_str!("../demo/qrels/train.tsv")),
    ("README.md", include_str!("../demo/README.md")),
    ("experiment.toml", include_str!("../demo/experiment.toml")),
];

/// Writes the demo dataset under `dir` (files that already exist with the same content are left
/// alone) and returns `dir`.
pub fn write_dataset(dir: &Path) -> Result<PathBuf> {
    for (name, content) in FILES {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(content.as_bytes()) {
            write_atomic(&path, content.as_bytes())?;
        }
    }
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use foil_core::beir::{BeirPaths, Split};
    use foil_core::{InputPolicy, SkipReport};

    #[test]
    fn the_embedded_dataset_is_valid_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path()).unwrap();
        let policy = InputPolicy::default();
        let mut skips = SkipReport::default();
        let paths = BeirPaths::new(dir.path());
        let mut judged = 0;
        for split in ["test", "train"] {
            let data = Split::load(&paths, split, policy, &mut skips).unwrap();
            assert_eq!((data.docs.len(), data.queries.len()), (120, 60));
            judged += data.qrels.num_queries();
        }
        assert_eq!(judged, 60);
        assert_eq!(skips.total(), 0);
    }
}
