//! The cross-encoder losses: value and gradient w.r.t. the logits equal PyTorch's
//! `cross_entropy` (listwise) and `binary_cross_entropy_with_logits` (bce) — golden file
//! `tests/fixtures/train/cross_losses.json` from `scripts/golden/make_cross_loss_golden.py`,
//! float64 — in float32 (to 1e-5) and float64 (to 1e-12), including logits of magnitude 80.

use candle_core::{DType, Device, Tensor, Var};
use foil_train::CrossLoss;
use serde_json::Value;

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Largest |ours − PyTorch's| over the value and the gradient, relative to max(1, |want|).
fn worst_difference(case: &Value, dtype: DType) -> f64 {
    let logits = matrix(&case["logits"]);
    let (b, n) = (logits.len(), logits[0].len());
    let flat: Vec<f64> = logits.concat();
    let z = Tensor::from_vec(flat, (b, n), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let z = Var::from_tensor(&z).unwrap();
    let loss = match case["loss"].as_str().unwrap() {
        "listwise" => CrossLoss::Listwise,
        "bce" => CrossLoss::Bce,
        other => panic!("unknown loss {other}"),
    };
    let value = loss.compute(z.as_tensor()).unwrap();
    let got = value
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let want = case["value"].as_f64().unwrap();
    let mut worst = (got - want).abs() / want.abs().max(1.0);
    let grads = value.backward().unwrap();
    let grad = grads
        .get(z.as_tensor())
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    for (g, w) in grad.concat().iter().zip(matrix(&case["grad"]).concat()) {
        worst = worst.max((g - w).abs() / w.abs().max(1.0));
    }
    worst
}

#[test]
fn cross_encoder_losses_match_pytorch() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/train/cross_losses.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    let mut failures = Vec::new();
    for case in cases {
        let d32 = worst_difference(case, DType::F32);
        let d64 = worst_difference(case, DType::F64);
        eprintln!(
            "{:24} f32 {d32:.2e}  f64 {d64:.2e}",
            case["name"].as_str().unwrap()
        );
        if !(d32 < 1e-5 && d64 < 1e-12) {
            failures.push(format!("{}: f32 {d32:e}, f64 {d64:e}", case["name"]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
