//! The tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`): byte-level BPE
//! (`tokenizer.ggml.model == "gpt2"`), its pre-tokenizer chosen by `tokenizer.ggml.pre`.
//!
//! Encoding runs a `tokenizers` BPE model built from the GGUF vocabulary and merges, behind
//! the split regexes llama.cpp uses for that `pre` name, then byte-level mapping. Control and
//! user-defined tokens (`<|im_start|>`…) are registered as added tokens, so they are matched
//! whole wherever they appear in a prompt. Decoding maps each token's byte-level characters back
//! to bytes directly (control tokens decode to nothing), which lets the generator decode a
//! growing sequence cheaply and check stop strings as it goes.

use std::collections::HashMap;

use foil_core::{Error, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::gguf::GgufFile;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// GPT-2's pre-tokenizer regex.
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Qwen2's (and Llama 3's, with `\p{N}{1,3}`) pre-tokenizer regex.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regexes applied in order for a `tokenizer.ggml.pre` name (as llama.cpp does).
fn split_patterns(pre: &str) -> Option<Vec<&'static str>> {
    Some(match pre {
        "default" | "gpt2" | "gpt-2" => vec![GPT2_SPLIT],
        // Digits one by one, then GPT-2's regex (HF: Digits(individual) + ByteLevel(regex)).
        "smollm" | "starcoder" | "refact" | "codeshell" => vec![r"\p{N}", GPT2_SPLIT],
        "qwen2" | "deepseek-r1-qwen" => vec![QWEN2_SPLIT],
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" => vec![LLAMA3_SPLIT],
        _ => return None,
    })
}

/// GPT-2's reversible map from bytes to printable characters, inverted.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = HashMap::with_capacity(256);
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        // Both ranges are valid scalar values below 0x200.
        if let Some(ch) = char::from_u32(c) {
            map.insert(ch, b as u8);
        }
    }
    map
}

/// A GGUF byte-level BPE tokenizer.
pub struct GgufTokenizer {
    tokenizer: Tokenizer,
    /// Each token's bytes when decoded; empty for control tokens.
    token_bytes: Vec<Vec<u8>>,
    control: Vec<bool>,
    tokens: Vec<String>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) add_bos: bool,
    pre: String,
}

impl GgufTokenizer {
    pub(crate) fn from_gguf(file: &GgufFile) -> Result<Self> {
        let err = |m: String| Error::format(&file.path, m);
        let model = file.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(format!(
                "unsupported tokenizer model \"{model}\" (only byte-level BPE, \"gpt2\", is supported)"
            )));
        }
        let pre = if file.has("tokenizer.ggml.pre") {
            file.string("tokenizer.ggml.pre")?
        } else {
            "default".to_string()
        };
        let patterns = split_patterns(&pre)
            .ok_or_else(|| err(format!("unsupported pre-tokenizer \"{pre}\"")))?;
        let tokens = file.strings("tokenizer.ggml.tokens")?;
        let merges = file.strings("tokenizer.ggml.merges")?;
        let types = if file.has("tokenizer.ggml.token_type") {
            file.ints("tokenizer.ggml.token_type")?
        } else {
            vec![1; tokens.len()]
        };
        if types.len() != tokens.len() {
            return Err(err(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }

        let mut vocab = ahash::AHashMap::with_capacity(tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), id as u32);
        }
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| err(format!("bad merge \"{m}\"")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| err(format!("cannot build the BPE tokenizer: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for p in patterns {
            let split = Split::new(
                SplitPattern::Regex(p.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| err(format!("bad split regex: {e}")))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        tokenizer.with_pre_tokenizer(Some(Sequence::new(steps)));

        let byte_of = unicode_to_byte();
        let mut token_bytes = Vec::with_capacity(tokens.len());
        let mut control = Vec::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (t, &ty) in tokens.iter().zip(&types) {
            let is_control = ty == TOKEN_TYPE_CONTROL;
            control.push(is_control);
            if is_control || ty == TOKEN_TYPE_USER_DEFINED {
                added.push(AddedToken::from(t.clone(), true));
            }
            token_bytes.push(if is_control {
                Vec::new()
            } else if ty == TOKEN_TYPE_USER_DEFINED {
                t.as_bytes().to_vec()
            } else {
                // Byte-level characters map back to bytes; anything else is kept as UTF-8.
                let mut out = Vec::with_capacity(t.len());
                for ch in t.chars() {
                    match byte_of.get(&ch) {
                        Some(&b) => out.push(b),
                        None => {
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
                out
            });
        }
        tokenizer
            .add_special_tokens(added)
            .map_err(|e| err(format!("cannot register control tokens: {e}")))?;

        let id = |key: &str| -> Result<Option<u32>> {
            if file.has(key) {
                let v = file.usize(key)?;
                if v >= tokens.len() {
                    return Err(err(format!("{key} {v} is outside the vocabulary")));
                }
                Ok(Some(v as u32))
            } else {
                Ok(None)
            }
        };
        Ok(GgufTokenizer {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            add_bos: file.bool_or("tokenizer.ggml.add_bos_token", false)?,
            tokenizer,
            token_bytes,
            control,
            tokens,
            pre,
        })
    }

    /// Token ids of `text`; control tokens written in the text are matched whole. No BOS is
    /// added (the chat template writes any it needs; see [`Self::add_bos`]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Invalid(format!("tokenization failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The bytes `ids` decode to (control tokens decode to nothing).
    pub fn decode_bytes(&self, ids: &[u32], out: &mut Vec<u8>) {
        for &id in ids {
            if let Some(b) = self.token_bytes.get(id as usize) {
                out.extend_from_slice(b);
            }
        }
    }

    /// The text `ids` decode to; invalid UTF-8 is replaced.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        self.decode_bytes(ids, &mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The id of a token written exactly as `text`, if the vocabulary has one.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokenizer.token_to_id(text)
    }

    /// Whether `id` is a control token (`<|im_end|>`, `<|endoftext|>`…).
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The GGUF `tokenizer.ggml.pre` name.
    pub fn pre(&self) -> &str {
        &self.pre
    }

    /// Whether the model wants a BOS token before the prompt (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
}
