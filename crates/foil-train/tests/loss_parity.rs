//! Every loss: value and gradient w.r.t. each input embedding equal PyTorch's (golden file
//! `tests/fixtures/train/losses.json` from `scripts/golden/make_loss_golden.py`, computed in
//! float64; sentence-transformers' own modules where it has the loss). Checked in float32 (the
//! training dtype, to 1e-5) and float64 (to 1e-9), with negatives as `[B, K, d]` and `[B·K, d]`.

use candle_core::{DType, Var};

mod common;

/// Largest |ours − reference| over the value and every gradient entry, scaled by
/// max(1, |reference|) per quantity.
fn worst_difference(case: &common::Case, dtype: DType, flat_negatives: bool) -> f64 {
    let vars: Vec<Var> = case
        .inputs(dtype, flat_negatives)
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let tensors: Vec<_> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let loss = case.loss(&tensors, dtype);
    let value = common::scalar(&loss);
    let mut worst = (value - case.value).abs() / case.value.abs().max(1.0);
    let grads = loss.backward().unwrap();
    for (i, var) in vars.iter().enumerate() {
        let want = &case.grads[i];
        let got = common::host(grads.get(var.as_tensor()).unwrap_or_else(|| {
            panic!("{}: input {i} got no gradient", case.name);
        }));
        assert_eq!(got.len(), want.len(), "{}: input {i}", case.name);
        let scale = want.iter().fold(1f64, |m, x| m.max(x.abs()));
        for (g, w) in got.iter().zip(want) {
            worst = worst.max((g - w).abs() / scale);
        }
    }
    worst
}

#[test]
fn every_loss_matches_pytorch() {
    let cases = common::cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let d32 = worst_difference(case, DType::F32, false);
        let d64 = worst_difference(case, DType::F64, true);
        eprintln!(
            "{:22} value {:>11.6}  max diff f32 {d32:.2e}  f64 {d64:.2e}",
            case.name, case.value
        );
        if !(d32 < 1e-5 && d64 < 1e-9) {
            failures.push(format!("{}: f32 {d32:e}, f64 {d64:e}", case.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
