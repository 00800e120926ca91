//! The model families no real checkpoint of which can be installed here, proven on tiny
//! randomly initialized checkpoints (`tests/fixtures/tiny/<family>/`, made with transformers
//! and sentence-transformers by `scripts/golden/make_tiny_families.py` and, for the Qwen2 /
//! Qwen3 decoder embedders, `make_tiny_decoders.py`): token ids and
//! embeddings equal sentence-transformers' on the fused path and on the trainable model, and a
//! saved model keeps the checkpoint's tensor names and shapes and its embeddings; a one-logit
//! XLM-RoBERTa reranker (bge-reranker's head) gives transformers' logits. Gradients are checked
//! in `grad_parity.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::Device;
use foil_candle::model::CandleModel;
use foil_candle::weights::Weights;
use foil_candle::{BertEncoder, CrossEncoder, CrossEncoderOptions, EncoderOptions};
use foil_core::{Encoder, TextKind};

mod common;
use common::{min_cosine, texts, token_ids};

const FAMILIES: &[&str] = &["xlm-roberta", "modernbert", "qwen2", "qwen3"];

fn fixtures() -> PathBuf {
    common::fixtures().join("tiny")
}

fn golden(family: &str) -> serde_json::Value {
    common::fixture(&format!("tiny/{family}.json"))
}

#[test]
fn tokens_and_embeddings_match_sentence_transformers() {
    for family in FAMILIES {
        let dir = fixtures().join(family);
        let golden = golden(family);
        assert_eq!(golden["model_type"], *family);
        let texts = texts(&golden);
        let encoder = BertEncoder::load(&dir, &EncoderOptions::default()).unwrap();
        let ids = encoder.tokenize(&texts, TextKind::Passage).unwrap();
        for (i, want) in token_ids(&golden).into_iter().enumerate() {
            assert_eq!(ids[i], want, "{family}: token ids of {:?}", texts[i]);
        }
        let fused = min_cosine(&encoder.encode(&texts, TextKind::Passage).unwrap(), &golden);
        let options = EncoderOptions {
            device: Some("candle-cpu".into()),
            ..EncoderOptions::default()
        };
        let candle = BertEncoder::load(&dir, &options).unwrap();
        let trainable = min_cosine(&candle.encode(&texts, TextKind::Passage).unwrap(), &golden);
        eprintln!("{family}: minimum cosine fused {fused:.9}, trainable {trainable:.9}");
        assert!(fused >= 0.99999, "{family} fused path: {fused}");
        assert!(
            trainable >= 0.99999,
            "{family} trainable model: {trainable}"
        );
    }
}

/// Decoder embedders put an instruction before queries (sentence-transformers' "query" prompt)
/// and nothing before passages.
#[test]
fn decoder_queries_get_the_instruction_prefix() {
    for family in ["qwen2", "qwen3"] {
        let dir = fixtures().join(family);
        let golden = golden(family);
        let encoder = BertEncoder::load(&dir, &EncoderOptions::default()).unwrap();
        assert_eq!(
            encoder.sentence_config().query_prompt,
            golden["query_prompt"].as_str().unwrap()
        );
        let texts = texts(&golden);
        let queries = encoder.encode(&texts, TextKind::Query).unwrap();
        let want = serde_json::json!({ "embeddings": golden["query_embeddings"] });
        let cos = min_cosine(&queries, &want);
        eprintln!("{family}: queries with the instruction, minimum cosine {cos:.9}");
        assert!(cos >= 0.99999, "{family} queries: {cos}");
        // Without the prefix the vectors differ: the prompt is really applied.
        let plain = min_cosine(&queries, &golden);
        assert!(plain < 0.99, "{family}: queries equal passages ({plain})");
    }
}

#[test]
fn a_saved_model_keeps_the_checkpoints_names_shapes_and_embeddings() {
    for family in FAMILIES {
        let dir = fixtures().join(family);
        let weights = Weights::load(&dir, &Device::Cpu).unwrap();
        let model = CandleModel::load(&dir, &Device::Cpu).unwrap();

        let out = common::saved_copy(&dir, &model);

        // Every tensor the checkpoint holds (but an unused pooler) comes back under its name.
        let shapes = |w: &Weights| -> BTreeMap<String, Vec<usize>> {
            w.names()
                .filter(|n| !n.starts_with("pooler."))
                .map(|n| (n.to_string(), w.shape(n).unwrap()))
                .collect()
        };
        let saved = Weights::load(out.path(), &Device::Cpu).unwrap();
        assert_eq!(shapes(&saved), shapes(&weights), "{family}");

        let golden = golden(family);
        let texts = texts(&golden);
        let reloaded = BertEncoder::load(out.path(), &EncoderOptions::default()).unwrap();
        let cos = min_cosine(
            &reloaded.encode(&texts, TextKind::Passage).unwrap(),
            &golden,
        );
        assert!(cos >= 0.99999, "{family} saved and reloaded: {cos}");
    }
}

#[test]
fn an_xlm_roberta_reranker_scores_like_transformers() {
    let dir = fixtures().join("xlm-roberta-reranker");
    let golden = golden("xlm-roberta-reranker");
    let pairs: Vec<(&str, &str)> = golden["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
        .collect();
    // The fused CPU path (`cpu`) and the candle model (`candle-cpu`, what `cuda` runs).
    for device in ["cpu", "candle-cpu"] {
        let options = CrossEncoderOptions {
            device: Some(device.into()),
            ..CrossEncoderOptions::default()
        };
        let model = CrossEncoder::load(&dir, &options).unwrap();
        let logits = model.logits(&pairs).unwrap();
        let mut worst = 0f64;
        for (i, want) in golden["logits"].as_array().unwrap().iter().enumerate() {
            let diff = (logits[i] as f64 - want.as_f64().unwrap()).abs();
            worst = worst.max(diff);
            assert!(
                diff <= 1e-5,
                "{device}, pair {i} {:?}: {} vs {want}",
                pairs[i],
                logits[i]
            );
        }
        eprintln!(
            "xlm-roberta reranker on {device}: {} pairs, max |Δ logit| {worst:e}",
            pairs.len()
        );
    }
}
