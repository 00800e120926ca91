//! Turning texts into token ids with a folder's `tokenizer.json`, with padding switched off
//! and truncation set by foil (some folders, all-MiniLM-L6-v2's among them, switch on fixed
//! padding to 128 inside `tokenizer.json`).

use std::path::Path;

use foil_core::fsutil::sha256_file;
use foil_core::{Error, Result};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// A Hugging Face tokenizer that truncates to `max_length` tokens, special tokens included, as
/// sentence-transformers does.
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    sha256: String,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path, max_length: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "{}: no tokenizer.json (foil reads Hugging Face fast-tokenizer files)",
                dir.display()
            )));
        }
        let mut inner =
            Tokenizer::from_file(&path).map_err(|e| Error::format(&path, e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::format(&path, e.to_string()))?;
        Ok(Self {
            inner,
            max_length,
            sha256: sha256_file(&path)?,
        })
    }

    /// The longest sequence produced, in tokens.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// SHA-256 of `tokenizer.json`, for cache keys.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Token ids of each text, with the model's special tokens (`[CLS] … [SEP]`).
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Invalid(format!("tokenizer failed: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Token ids and token type ids of text pairs (`[CLS] a [SEP] b [SEP]`), for cross-encoders.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        let inputs: Vec<tokenizers::EncodeInput> =
            pairs.iter().map(|&(a, b)| (a, b).into()).collect();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::Invalid(format!("tokenizer failed: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec()))
            .collect())
    }
}
