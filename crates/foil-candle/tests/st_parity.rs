//! foil's BERT encoder against sentence-transformers (golden file made by
//! `scripts/golden/make_embedding_golden.py`): token ids equal, cosine ≥ 0.9999 for every text.
//! Needs all-MiniLM-L6-v2 from `scripts/fetch-models.sh`.

mod common;
use common::minilm;

use foil_candle::{BertEncoder, EncoderOptions, Precision};
use foil_core::{Encoder, TextKind};

fn golden() -> serde_json::Value {
    common::fixture("encoder/minilm_embeddings.json")
}

#[test]
fn token_ids_and_embeddings_match_sentence_transformers() {
    let Some(dir) = minilm() else { return };
    let encoder = BertEncoder::load(&dir, &EncoderOptions::default()).unwrap();
    assert_eq!(encoder.sentence_config().max_length, 256);
    let golden = golden();
    let texts = common::texts(&golden);
    assert!(texts.len() >= 100);

    let ids = encoder.tokenize(&texts, TextKind::Passage).unwrap();
    for (i, want) in common::token_ids(&golden).into_iter().enumerate() {
        assert_eq!(ids[i], want, "token ids of text {i} {:?}", texts[i]);
    }

    let got = encoder.encode(&texts, TextKind::Passage).unwrap();
    let mut worst = f64::INFINITY;
    for (i, want) in common::vectors(&golden).iter().enumerate() {
        let row = got.row(i);
        let cos = common::cosine(row, want);
        assert!(cos >= 0.9999, "text {i} {:?}: cosine {cos}", texts[i]);
        let max_abs = row
            .iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(max_abs < 1e-4, "text {i}: max abs difference {max_abs}");
        worst = worst.min(cos);
    }
    eprintln!("{} texts, minimum cosine {worst:.9}", texts.len());
}

#[test]
fn batch_size_does_not_change_the_vectors() {
    let Some(dir) = minilm() else { return };
    let texts = [
        "a short one",
        "a somewhat longer text about vitamin D and bones",
        "x",
        "",
    ];
    let one = BertEncoder::load(
        &dir,
        &EncoderOptions {
            batch_size: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let all = BertEncoder::load(
        &dir,
        &EncoderOptions {
            batch_size: Some(64),
            ..Default::default()
        },
    )
    .unwrap();
    let a = one.encode(&texts, TextKind::Query).unwrap();
    let b = all.encode(&texts, TextKind::Query).unwrap();
    for (x, y) in a.data.iter().zip(&b.data) {
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
}

#[test]
fn prompts_change_the_fingerprint_and_the_vectors() {
    let Some(dir) = minilm() else { return };
    let plain = BertEncoder::load(&dir, &EncoderOptions::default()).unwrap();
    let e5 = BertEncoder::load(
        &dir,
        &EncoderOptions {
            query_prompt: Some("query: ".into()),
            passage_prompt: Some("passage: ".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(plain.fingerprint(), e5.fingerprint());
    let q = e5.encode(&["vitamin d"], TextKind::Query).unwrap();
    let p = e5.encode(&["vitamin d"], TextKind::Passage).unwrap();
    let direct = plain
        .encode(&["query: vitamin d"], TextKind::Query)
        .unwrap();
    assert_eq!(q, direct);
    assert_ne!(q, p);
}

#[test]
fn the_fused_path_equals_the_candle_model() {
    let Some(dir) = minilm() else { return };
    let texts = [
        "Vitamin D and fractures in older adults.",
        "x",
        "",
        "A longer passage about how the tides follow the moon and the sun, twice a day.",
    ];
    let fast = BertEncoder::load(&dir, &EncoderOptions::default()).unwrap();
    let candle = BertEncoder::load(
        &dir,
        &EncoderOptions {
            device: Some("candle-cpu".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let a = fast.encode(&texts, TextKind::Passage).unwrap();
    let b = candle.encode(&texts, TextKind::Passage).unwrap();
    for (x, y) in a.data.iter().zip(&b.data) {
        assert!((x - y).abs() < 2e-6, "{x} vs {y}");
    }
}

#[test]
fn cuda_without_the_feature_is_a_clear_error() {
    let Some(dir) = minilm() else { return };
    if candle_core::utils::cuda_is_available() {
        return;
    }
    let err = BertEncoder::load(
        &dir,
        &EncoderOptions {
            device: Some("cuda".into()),
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("built without CUDA"), "{err}");
    let err = BertEncoder::load(
        &dir,
        &EncoderOptions {
            device: Some("gpu7".into()),
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("bad device"), "{err}");
}

#[test]
fn bf16_stays_within_cosine_0_999_of_sentence_transformers_and_is_cached_apart() {
    let Some(dir) = minilm() else { return };
    let options = |precision| EncoderOptions {
        precision: Some(precision),
        ..Default::default()
    };
    let f32 = BertEncoder::load(&dir, &options(Precision::F32)).unwrap();
    let bf16 = BertEncoder::load(&dir, &options(Precision::Bf16)).unwrap();
    if !foil_candle::fast::bf16_available() {
        // The fallback runs float32, and says so in its fingerprint (nothing).
        assert_eq!(bf16.precision(), Precision::F32);
        assert_eq!(bf16.fingerprint(), f32.fingerprint());
        eprintln!("skipped: no AMX or AVX-512 BF16 here");
        return;
    }
    assert_eq!(bf16.precision(), Precision::Bf16);
    assert_ne!(bf16.fingerprint(), f32.fingerprint());
    let golden = golden();
    let texts = common::texts(&golden);
    let got = bf16.encode(&texts, TextKind::Passage).unwrap();
    let mut worst = f64::INFINITY;
    for (i, want) in common::vectors(&golden).iter().enumerate() {
        let cos = common::cosine(got.row(i), want);
        assert!(cos >= 0.999, "text {i} {:?}: cosine {cos}", texts[i]);
        worst = worst.min(cos);
    }
    eprintln!("bf16: {} texts, minimum cosine {worst:.6}", texts.len());
}
