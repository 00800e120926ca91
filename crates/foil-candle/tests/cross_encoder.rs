//! foil's cross-encoder against transformers' BertForSequenceClassification and
//! sentence-transformers' CrossEncoder (golden file made by
//! `scripts/golden/make_cross_encoder_golden.py` from the checkpoint that
//! `init_checkpoint(all-MiniLM-L6-v2, seed 0)` writes).

use std::path::Path;

use foil_candle::cross_encoder::init_checkpoint;
use foil_candle::{CrossEncoder, CrossEncoderOptions};
use foil_core::Reranker;

mod common;

#[test]
fn scores_match_transformers_and_sentence_transformers() {
    let Some(base) = common::minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    init_checkpoint(&base, dir.path(), 0).unwrap();
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/encoder/cross_encoder_scores.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let pairs: Vec<(String, String)> = golden["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    // `cpu` is the fused path; `candle-cpu` runs the candle model, which `cuda` runs on a GPU.
    for (device, tolerance) in [("cpu", 1e-5), ("candle-cpu", 1e-4)] {
        let options = CrossEncoderOptions {
            device: Some(device.into()),
            ..CrossEncoderOptions::default()
        };
        let ce = CrossEncoder::load(dir.path(), &options).unwrap();
        let logits = ce.logits(&refs).unwrap();
        let scores = ce.score(&refs).unwrap();
        for i in 0..refs.len() {
            let want = golden["logits"][i].as_f64().unwrap() as f32;
            assert!(
                (logits[i] - want).abs() < tolerance,
                "{device}, pair {i}: logit {} vs {want}",
                logits[i]
            );
            let want = golden["sentence_transformers_scores"][i].as_f64().unwrap() as f32;
            assert!(
                (scores[i] - want).abs() < tolerance,
                "{device}, pair {i}: score {} vs {want}",
                scores[i]
            );
        }
    }
}

#[test]
fn the_checkpoint_is_deterministic_and_refuses_bi_encoders() {
    let Some(base) = common::minilm() else { return };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    init_checkpoint(&base, a.path(), 7).unwrap();
    init_checkpoint(&base, b.path(), 7).unwrap();
    assert_eq!(
        std::fs::read(a.path().join("model.safetensors")).unwrap(),
        std::fs::read(b.path().join("model.safetensors")).unwrap()
    );
    let err = CrossEncoder::load(&base, &CrossEncoderOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("no classifier head"), "{err}");
    // A device this build cannot use is refused, not ignored.
    let options = |device: &str| CrossEncoderOptions {
        device: Some(device.into()),
        ..CrossEncoderOptions::default()
    };
    assert!(CrossEncoder::load(a.path(), &options("cpu")).is_ok());
    if !candle_core::utils::cuda_is_available() {
        let err = CrossEncoder::load(a.path(), &options("cuda:0"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("built without CUDA"), "{err}");
    }
    let err = CrossEncoder::load(a.path(), &options("gpu")).err().unwrap();
    assert!(err.to_string().contains("bad device"), "{err}");
}
