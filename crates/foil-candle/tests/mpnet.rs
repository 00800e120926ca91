//! foil's MPNet path against sentence-transformers and Hugging Face (golden file made by
//! `scripts/golden/make_mpnet_golden.py` from all-mpnet-base-v2): the relative-position buckets,
//! token ids, and the embeddings of the fused path and of the trainable candle model, which must
//! also survive a save and reload under MPNet's tensor names. Needs
//! `scripts/fetch-models.sh mpnet`.

use std::path::Path;

use candle_core::Device;
use foil_candle::config::{relative_bucket, BertConfig, Family};
use foil_candle::model::TrainableBert;
use foil_candle::weights::Weights;
use foil_candle::{BertEncoder, EncoderOptions};
use foil_core::{Embeddings, Encoder, TextKind};

mod common;

fn golden() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/encoder/mpnet_embeddings.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn texts(golden: &serde_json::Value) -> Vec<&str> {
    golden["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect()
}

/// The smallest cosine between `got` and the golden embeddings.
fn min_cosine(got: &Embeddings, golden: &serde_json::Value) -> f64 {
    let mut worst = f64::INFINITY;
    for (i, want) in golden["embeddings"].as_array().unwrap().iter().enumerate() {
        let want: Vec<f64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let row = got.row(i);
        let dot: f64 = row.iter().zip(&want).map(|(a, b)| *a as f64 * b).sum();
        let na: f64 = row.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
        worst = worst.min(dot / (na * nb));
    }
    worst
}

#[test]
fn relative_buckets_are_hugging_faces() {
    let golden = golden();
    let from = golden["relative_buckets"]["from"].as_i64().unwrap();
    let buckets = golden["relative_buckets"]["buckets"].as_array().unwrap();
    for (i, want) in buckets.iter().enumerate() {
        let distance = from + i as i64; // key − query
        let (query, key) = if distance >= 0 {
            (0, distance as usize)
        } else {
            ((-distance) as usize, 0)
        };
        assert_eq!(
            relative_bucket(query, key, 32) as u64,
            want.as_u64().unwrap(),
            "key − query = {distance}"
        );
    }
}

#[test]
fn mpnet_matches_sentence_transformers() {
    let Some(dir) = common::mpnet() else { return };
    let golden = golden();
    let texts = texts(&golden);
    let encoder = BertEncoder::load(&dir, &EncoderOptions::default()).unwrap();
    assert_eq!(encoder.config().family(), Family::MPNet);
    assert_eq!(encoder.sentence_config().max_length, 384);

    let ids = encoder.tokenize(&texts, TextKind::Passage).unwrap();
    for (i, want) in golden["token_ids"].as_array().unwrap().iter().enumerate() {
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids[i], want, "token ids of text {i} {:?}", texts[i]);
    }
    assert!(ids.iter().any(|s| s.len() == 384), "a text is truncated");

    let fused = encoder.encode(&texts, TextKind::Passage).unwrap();
    let cos = min_cosine(&fused, &golden);
    eprintln!("fused path: {} texts, minimum cosine {cos:.9}", texts.len());
    assert!(cos >= 0.99999, "fused path: minimum cosine {cos}");

    let options = EncoderOptions {
        device: Some("candle-cpu".into()),
        ..EncoderOptions::default()
    };
    let candle = BertEncoder::load(&dir, &options).unwrap();
    let cos = min_cosine(&candle.encode(&texts, TextKind::Passage).unwrap(), &golden);
    eprintln!("candle model: minimum cosine {cos:.9}");
    assert!(cos >= 0.99999, "candle model: minimum cosine {cos}");
}

#[test]
fn a_saved_mpnet_keeps_its_names_and_its_embeddings() {
    let Some(dir) = common::mpnet() else { return };
    let config = BertConfig::read(&dir.join("config.json")).unwrap();
    let weights = Weights::load(&dir, &Device::Cpu).unwrap();
    let model = TrainableBert::new(&config, &weights, &Device::Cpu).unwrap();
    let names: Vec<&str> = model.vars().iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"encoder.layer.0.attention.attn.q.weight"));
    assert!(names.contains(&"encoder.relative_attention_bias.weight"));
    assert!(!names.iter().any(|n| n.contains("token_type")));

    let out = tempfile::tempdir().unwrap();
    for file in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
    ] {
        std::fs::copy(dir.join(file), out.path().join(file)).unwrap();
    }
    std::fs::create_dir(out.path().join("1_Pooling")).unwrap();
    std::fs::copy(
        dir.join("1_Pooling/config.json"),
        out.path().join("1_Pooling/config.json"),
    )
    .unwrap();
    model.save(&out.path().join("model.safetensors")).unwrap();

    let golden = golden();
    let texts = texts(&golden);
    let reloaded = BertEncoder::load(out.path(), &EncoderOptions::default()).unwrap();
    let cos = min_cosine(
        &reloaded.encode(&texts, TextKind::Passage).unwrap(),
        &golden,
    );
    assert!(cos >= 0.99999, "saved and reloaded: minimum cosine {cos}");
}
