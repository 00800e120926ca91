//! Training-path parity: one MultipleNegativesRanking loss on a fixed batch through foil's
//! trainable model gives PyTorch's loss and, for every parameter, PyTorch's gradient (golden
//! files made by `scripts/golden/make_gradient_golden.py` with transformers' `BertModel` for
//! all-MiniLM-L6-v2, `MPNetModel` for all-mpnet-base-v2 and `XLMRobertaModel` for the tiny
//! checkpoint of `scripts/golden/make_tiny_families.py`; `Qwen2Model` / `Qwen3Model` with
//! last-token pooling for the tiny decoders of `scripts/golden/make_tiny_decoders.py`). A
//! parameter without gradient fails the test.

use std::path::Path;

use candle_core::{Device, Tensor};
use foil_candle::config::Pooling;
use foil_candle::model::{pool, Batch, CandleModel};

mod common;

fn ids(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// Drops padding (id 0 after the last real token) so that foil pads the batch itself.
fn unpad(seqs: Vec<Vec<u32>>, mask: &serde_json::Value) -> Vec<Vec<u32>> {
    seqs.into_iter()
        .zip(ids(mask))
        .map(|(s, m)| s[..m.iter().filter(|&&x| x == 1).count()].to_vec())
        .collect()
}

/// Mean or CLS pooling, normalization, scaled similarities and cross-entropy with the diagonal.
fn loss(model: &CandleModel, q: &Batch, p: &Batch, pooling: Pooling, scale: f64) -> Tensor {
    let hq = model.forward(q, None).unwrap();
    let hp = model.forward(p, None).unwrap();
    let eq = pool(&hq, &q.mask, pooling, true).unwrap();
    let ep = pool(&hp, &p.mask, pooling, true).unwrap();
    let scores = (eq.matmul(&ep.t().unwrap()).unwrap() * scale).unwrap();
    let n = scores.dims2().unwrap().0;
    let labels = Tensor::arange(0u32, n as u32, &Device::Cpu).unwrap();
    // cross-entropy = mean(logsumexp(row) − row[label])
    let max = scores.max_keepdim(1).unwrap().detach();
    let lse = scores
        .broadcast_sub(&max)
        .unwrap()
        .exp()
        .unwrap()
        .sum_keepdim(1)
        .unwrap()
        .log()
        .unwrap()
        .add(&max)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let picked = scores
        .gather(&labels.unsqueeze(1).unwrap(), 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    lse.sub(&picked).unwrap().mean_all().unwrap()
}

#[test]
fn gradients_of_every_parameter_match_pytorch() {
    let Some(dir) = common::minilm() else { return };
    check_gradients(&dir, "minilm_gradients.json");
}

#[test]
fn mpnet_gradients_of_every_parameter_match_pytorch() {
    let Some(dir) = common::mpnet() else { return };
    check_gradients(&dir, "mpnet_gradients.json");
}

#[test]
fn tiny_xlm_roberta_gradients_match_pytorch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/xlm-roberta");
    check_gradients(&dir, "../tiny/xlm-roberta_gradients.json");
}

#[test]
fn tiny_modernbert_gradients_match_pytorch() {
    check_sampled_gradients("modernbert", Pooling::Mean);
}

#[test]
fn tiny_qwen2_gradients_match_pytorch() {
    check_sampled_gradients("qwen2", Pooling::LastToken);
}

#[test]
fn tiny_qwen3_gradients_match_pytorch() {
    check_sampled_gradients("qwen3", Pooling::LastToken);
}

/// The goldens of `make_tiny_decoders.py`'s sampled-gradient check (decoders with last-token
/// pooling, ModernBERT with mean pooling), scale 20: the loss, and every parameter's gradient
/// norm and 64 sampled entries against PyTorch's.
fn check_sampled_gradients(family: &str, pooling: Pooling) {
    let dir = common::fixtures().join("tiny").join(family);
    let golden = common::fixture(&format!("tiny/{family}_gradients.json"));
    let model = CandleModel::load(&dir, &Device::Cpu).unwrap();
    let batch = |side: &str| {
        let seqs = unpad(
            ids(&golden[format!("{side}_input_ids")]),
            &golden[format!("{side}_attention_mask")],
        );
        Batch::new(&seqs, None, &Device::Cpu).unwrap()
    };
    let (qb, pb) = (batch("query"), batch("passage"));
    let l = loss(&model, &qb, &pb, pooling, 20.0);
    let value = l.to_scalar::<f32>().unwrap() as f64;
    let want = golden["loss"].as_f64().unwrap();
    assert!(
        (value - want).abs() <= 1e-5 * want.abs(),
        "{family}: loss {value} vs PyTorch {want}"
    );
    let grads = l.backward().unwrap();
    let params = golden["params"].as_object().unwrap();
    assert_eq!(
        params.len(),
        model.vars().len(),
        "{family}: parameter count"
    );
    let mut worst = 0f64;
    for (name, var) in model.vars() {
        let reference = params
            .get(name)
            .unwrap_or_else(|| panic!("{family}: golden has no gradient for {name}"));
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{family}: {name} got no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let l2 = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let ref_l2 = reference["l2"].as_f64().unwrap();
        assert!(
            ref_l2 > 0.0,
            "{family}: {name} has a zero gradient in PyTorch"
        );
        let rel = (l2 - ref_l2).abs() / ref_l2;
        worst = worst.max(rel);
        assert!(
            rel < 1e-4,
            "{family} {name}: gradient norm {l2} vs PyTorch {ref_l2} (relative {rel:e})"
        );
        let indices = reference["indices"].as_array().unwrap();
        for (index, value) in indices.iter().zip(reference["values"].as_array().unwrap()) {
            let index = index.as_u64().unwrap() as usize;
            let diff = (g[index] as f64 - value.as_f64().unwrap()).abs() / ref_l2;
            worst = worst.max(diff);
            assert!(
                diff < 1e-4,
                "{family} {name}[{index}]: {} vs PyTorch {value}",
                g[index]
            );
        }
    }
    eprintln!(
        "{family}: loss {value} vs {want}; {} parameters, worst relative difference {worst:e}",
        model.vars().len()
    );
}

/// The attention key biases, whose gradient is mathematically zero (softmax is shift-invariant).
fn is_key_bias(name: &str) -> bool {
    name.contains("attention.self.key.bias") || name.contains("attention.attn.k.bias")
}

fn check_gradients(dir: &Path, fixture: &str) {
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/encoder")
                .join(fixture),
        )
        .unwrap(),
    )
    .unwrap();
    let model = CandleModel::load(dir, &Device::Cpu).unwrap();
    let q = unpad(
        ids(&golden["query_input_ids"]),
        &golden["query_attention_mask"],
    );
    let p = unpad(
        ids(&golden["passage_input_ids"]),
        &golden["passage_attention_mask"],
    );
    let qb = Batch::new(&q, None, &Device::Cpu).unwrap();
    let pb = Batch::new(&p, None, &Device::Cpu).unwrap();

    let mean = &golden["mean"];
    let l = loss(&model, &qb, &pb, Pooling::Mean, 20.0);
    let value = l.to_scalar::<f32>().unwrap() as f64;
    let want = mean["loss"].as_f64().unwrap();
    assert!(
        (value - want).abs() <= 1e-4 * want.abs(),
        "loss {value} vs PyTorch {want}"
    );
    let grads = l.backward().unwrap();

    let params = mean["params"].as_object().unwrap();
    assert_eq!(
        params.len(),
        model.vars().len(),
        "foil trains exactly the parameters PyTorch gives gradients"
    );
    let mut worst = 0f64;
    for (name, var) in model.vars() {
        let reference = params
            .get(name)
            .unwrap_or_else(|| panic!("golden has no gradient for {name}"));
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} got no gradient"));
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        let l2 = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(l2 > 0.0 || is_key_bias(name), "{name}: gradient is zero");
        let ref_l2 = reference["l2"].as_f64().unwrap();
        if is_key_bias(name) {
            // Mathematically zero (softmax is shift-invariant); only rounding noise remains.
            assert!(l2 < 1e-6, "{name}: {l2}");
            continue;
        }
        let rel = (l2 - ref_l2).abs() / ref_l2;
        assert!(
            rel < 1e-4,
            "{name}: gradient norm {l2} vs PyTorch {ref_l2} (relative {rel:e})"
        );
        for entry in reference["top"].as_array().unwrap() {
            let index = entry[0].as_u64().unwrap() as usize;
            let value = entry[1].as_f64().unwrap();
            let diff = (g[index] as f64 - value).abs() / ref_l2;
            worst = worst.max(diff);
            assert!(
                diff < 1e-4,
                "{name}[{index}]: {} vs PyTorch {value}",
                g[index]
            );
        }
        worst = worst.max(rel);
    }
    eprintln!(
        "{} parameters, worst relative difference {worst:e}",
        model.vars().len()
    );

    // Second check: CLS pooling, scale 1.
    let cls = &golden["cls"];
    let l = loss(&model, &qb, &pb, Pooling::Cls, 1.0);
    let value = l.to_scalar::<f32>().unwrap() as f64;
    let want = cls["loss"].as_f64().unwrap();
    assert!(
        (value - want).abs() <= 1e-4 * want,
        "CLS loss {value} vs {want}"
    );
    let grads = l.backward().unwrap();
    for (name, var) in model.vars() {
        if is_key_bias(name) {
            continue;
        }
        let g = grads.get(var.as_tensor()).unwrap();
        let l2 = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt() as f64;
        let want = cls["l2"][name].as_f64().unwrap();
        // Relative, with an absolute floor for gradients that float32 sums leave near zero
        // (the tiny model's token-type row: ‖g‖ ≈ 1e-5, made of cancelling terms).
        assert!(
            (l2 - want).abs() < 1e-4 * want + 1e-7,
            "CLS {name}: {l2} vs {want}"
        );
    }
}
