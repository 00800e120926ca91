//! The trained model as a folder others load: a sentence-transformers folder for a
//! bi-encoder, a Hugging Face `…ForSequenceClassification` folder for a cross-encoder.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use foil_candle::config::{Family, Pooling, SentenceConfig};
use foil_candle::model::CandleModel;
use foil_candle::weights::Weights;
use foil_core::fsutil::write_atomic;
use foil_core::{Error, Result};
use serde_json::{json, Value};

/// A model folder's files that a trained folder copies unchanged.
const COPIED: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "config_sentence_transformers.json",
];

/// Copies the base folder's config and tokenizer files ([`COPIED`]) that exist into `out`.
fn copy_base_files(base: &Path, out: &Path) -> Result<()> {
    for name in COPIED {
        let from = base.join(name);
        if from.is_file() {
            let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
            write_atomic(&out.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// Saves variables as safetensors under their names, `prefix` added to every name that is not
/// the classifier's.
pub(super) fn save_vars(vars: &[(String, Var)], path: &Path, prefix: &str) -> Result<()> {
    let tensors: std::collections::HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| {
            let name = if n.starts_with("classifier.") {
                n.clone()
            } else {
                format!("{prefix}{n}")
            };
            (name, v.as_tensor().clone())
        })
        .collect();
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| Error::format(path, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes a trained cross-encoder as a Hugging Face `…ForSequenceClassification` folder (the
/// encoder's names under the family's prefix — `bert.`, `roberta.`, `mpnet.` — and
/// `classifier.*`), with the base's config and tokenizer.
pub(super) fn save_cross_encoder(
    vars: &[(String, Var)],
    family: Family,
    base: &Path,
    out: &Path,
) -> Result<()> {
    let prefix = match family {
        Family::Bert => "bert.",
        Family::Roberta => "roberta.",
        Family::MPNet => "mpnet.",
    };
    save_vars(vars, &out.join("model.safetensors"), prefix)?;
    copy_base_files(base, out)?;
    Ok(())
}

/// Writes the trained model as a sentence-transformers folder: the weights, the base folder's
/// config and tokenizer files, and modules.json / 1_Pooling / sentence_bert_config.json
/// describing the pooling and normalization used in training.
pub(super) fn save_model_folder(
    model: &CandleModel,
    base: &Path,
    sentence: &SentenceConfig,
    out: &Path,
) -> Result<()> {
    // The trained variables, plus the base's pooler (unused by mean or CLS pooling, but
    // Hugging Face's BertModel expects it).
    let mut tensors = model.tensors();
    let base_weights = Weights::load(base, &Device::Cpu)?;
    for name in ["pooler.dense.weight", "pooler.dense.bias"] {
        if base_weights.contains(name) && !tensors.contains_key(name) {
            let shape = base_weights.shape(name)?;
            tensors.insert(name.to_string(), base_weights.get(name, &shape)?.clone());
        }
    }
    let weights_path = out.join("model.safetensors");
    let tmp = out.join("model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| Error::format(&weights_path, e.to_string()))?;
    std::fs::rename(&tmp, &weights_path).map_err(|e| Error::io(&weights_path, e))?;
    copy_base_files(base, out)?;
    let mode = |p: Pooling| sentence.pooling == p;
    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if sentence.normalize {
        modules.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
        std::fs::create_dir_all(out.join("2_Normalize")).map_err(|e| Error::io(out, e))?;
    }
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    write_atomic(&out.join("modules.json"), &pretty(&json!(modules)))?;
    std::fs::create_dir_all(out.join("1_Pooling")).map_err(|e| Error::io(out, e))?;
    write_atomic(
        &out.join("1_Pooling/config.json"),
        &pretty(&json!({
            "word_embedding_dimension": model.hidden_size(),
            "pooling_mode_cls_token": mode(Pooling::Cls),
            "pooling_mode_mean_tokens": mode(Pooling::Mean),
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
            "pooling_mode_weightedmean_tokens": false,
            "pooling_mode_lasttoken": mode(Pooling::LastToken),
            "include_prompt": true
        })),
    )?;
    write_atomic(
        &out.join("sentence_bert_config.json"),
        &pretty(&json!({"max_seq_length": sentence.max_length, "do_lower_case": false})),
    )?;
    Ok(())
}
