//! One full training step of all-MiniLM-L6-v2 — foil-candle's trainable model (dropout off),
//! mean pooling + normalize, MultipleNegativesRanking at scale 20, clip_grad_norm 1.0, AdamW
//! lr 2e-5 with weight decay 0.01 off biases and LayerNorms — gives the weights PyTorch's
//! sentence-transformers step gives (golden `tests/fixtures/train/minilm_step.json` from
//! `scripts/golden/make_step_golden.py`). Skipped when the model is not installed (outside CI).

use candle_core::{Device, Var};
use foil_candle::config::Pooling;
use foil_candle::model::{pool, Batch, CandleModel};
use foil_core::rng::SplitMix64;
use foil_train::losses::InfoNce;
use foil_train::{clip_grad_norm, AdamW, AdamWConfig, Loss, LossInput};

mod common;

fn unpadded(ids: &serde_json::Value, mask: &serde_json::Value) -> Vec<Vec<u32>> {
    ids.as_array()
        .unwrap()
        .iter()
        .zip(mask.as_array().unwrap())
        .map(|(row, m)| {
            let len = common::flat(m).iter().filter(|&&x| x == 1.0).count();
            common::flat(row)[..len].iter().map(|&x| x as u32).collect()
        })
        .collect()
}

#[test]
fn one_training_step_matches_sentence_transformers() {
    let Some(dir) = common::minilm() else { return };
    let golden = common::golden("minilm_step.json");
    let model = CandleModel::load(&dir, &Device::Cpu).unwrap();
    let q = Batch::new(
        &unpadded(&golden["query_input_ids"], &golden["query_attention_mask"]),
        None,
        &Device::Cpu,
    )
    .unwrap();
    let p = Batch::new(
        &unpadded(
            &golden["passage_input_ids"],
            &golden["passage_attention_mask"],
        ),
        None,
        &Device::Cpu,
    )
    .unwrap();
    let var = |name: &str| -> Var {
        model
            .vars()
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
            .1
            .clone()
    };
    let params = golden["params"].as_object().unwrap();
    let before: Vec<Vec<f64>> = params
        .keys()
        .map(|n| common::host(var(n).as_tensor()))
        .collect();

    let eq = pool(
        &model.forward(&q, None).unwrap(),
        &q.mask,
        Pooling::Mean,
        true,
    )
    .unwrap();
    let ep = pool(
        &model.forward(&p, None).unwrap(),
        &p.mask,
        Pooling::Mean,
        true,
    )
    .unwrap();
    let loss = Loss::InfoNce(InfoNce {
        scale: 20.0,
        ..InfoNce::default()
    })
    .compute(&LossInput::pairs(&eq, &ep), &mut SplitMix64::new(0))
    .unwrap();
    let value = common::scalar(&loss);
    let want = golden["loss"].as_f64().unwrap();
    assert!(
        (value - want).abs() <= 1e-4 * want,
        "loss {value} vs PyTorch {want}"
    );
    let mut grads = loss.backward().unwrap();
    let norm = clip_grad_norm(model.vars(), &mut grads, 1.0).unwrap();
    let want_norm = golden["grad_norm"].as_f64().unwrap();
    assert!(
        (norm - want_norm).abs() <= 1e-4 * want_norm,
        "gradient norm {norm} vs PyTorch {want_norm}"
    );
    let mut opt = AdamW::new(
        model.vars(),
        AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
    );
    opt.step(&grads, 2e-5).unwrap();

    let (mut worst_value, mut worst_update, mut worst_delta) = (0f64, 0f64, 0f64);
    for ((name, reference), old) in params.iter().zip(&before) {
        let after = common::host(var(name).as_tensor());
        let l2 = after.iter().map(|x| x * x).sum::<f64>().sqrt();
        let want_l2 = reference["l2"].as_f64().unwrap();
        assert!(
            (l2 - want_l2).abs() <= 1e-4 * want_l2,
            "{name}: ‖θ‖ {l2} vs {want_l2}"
        );
        let update_l2 = after
            .iter()
            .zip(old)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let want_update = reference["update_l2"].as_f64().unwrap();
        let rel = (update_l2 - want_update).abs() / want_update;
        worst_update = worst_update.max(rel);
        assert!(
            rel < 1e-3,
            "{name}: ‖Δθ‖ {update_l2} vs PyTorch {want_update}"
        );
        for entry in reference["entries"].as_array().unwrap() {
            let i = entry[0].as_u64().unwrap() as usize;
            let (value, update) = (entry[1].as_f64().unwrap(), entry[2].as_f64().unwrap());
            let d = (after[i] - value).abs() / value.abs().max(1e-3);
            worst_value = worst_value.max(d);
            assert!(d < 1e-4, "{name}[{i}]: {} vs PyTorch {value}", after[i]);
            let du = (after[i] - old[i] - update).abs();
            worst_delta = worst_delta.max(du);
            assert!(
                du < 1e-3 * 2e-5 + 1e-9,
                "{name}[{i}]: Δ {} vs PyTorch {update}",
                after[i] - old[i]
            );
        }
    }
    eprintln!(
        "loss {value} (PyTorch {want}), worst updated-value difference {worst_value:e}, \
         worst update-norm difference {worst_update:e}, worst update-entry difference \
         {worst_delta:e} (lr 2e-5)"
    );
}
