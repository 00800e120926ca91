//! foil's MPNet path against sentence-transformers and Hugging Face (golden file made by
//! `scripts/golden/make_mpnet_golden.py` from all-mpnet-base-v2): the relative-position buckets,
//! token ids, and the embeddings of the fused path and of the trainable candle model, which must
//! also survive a save and reload under MPNet's tensor names. Needs
//! `scripts/fetch-models.sh mpnet`.

use candle_core::Device;
use foil_candle::config::{relative_bucket, Family, ModelConfig};
use foil_candle::model::CandleModel;
use foil_candle::{BertEncoder, EncoderOptions};
use foil_core::{Encoder, TextKind};

mod common;
use common::{min_cosine, texts, token_ids};

fn golden() -> serde_json::Value {
    common::fixture("encoder/mpnet_embeddings.json")
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
    assert!(matches!(encoder.config(), ModelConfig::Encoder(c) if c.family() == Family::MPNet));
    assert_eq!(encoder.sentence_config().max_length, 384);

    let ids = encoder.tokenize(&texts, TextKind::Passage).unwrap();
    for (i, want) in token_ids(&golden).into_iter().enumerate() {
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
    let model = CandleModel::load(&dir, &Device::Cpu).unwrap();
    let names: Vec<&str> = model.vars().iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"encoder.layer.0.attention.attn.q.weight"));
    assert!(names.contains(&"encoder.relative_attention_bias.weight"));
    assert!(!names.iter().any(|n| n.contains("token_type")));

    let out = common::saved_copy(&dir, &model);

    let golden = golden();
    let texts = texts(&golden);
    let reloaded = BertEncoder::load(out.path(), &EncoderOptions::default()).unwrap();
    let cos = min_cosine(
        &reloaded.encode(&texts, TextKind::Passage).unwrap(),
        &golden,
    );
    assert!(cos >= 0.99999, "saved and reloaded: minimum cosine {cos}");
}
