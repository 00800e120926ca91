//! The golden loss file and the inputs each of its cases takes.

#![allow(dead_code)]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use foil_core::rng::SplitMix64;
use foil_train::{Loss, LossInput};

pub fn golden(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/train")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// A nested JSON array of numbers, flattened.
pub fn flat(v: &serde_json::Value) -> Vec<f64> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flat).collect(),
        x => vec![x.as_f64().unwrap()],
    }
}

pub fn tensor(values: Vec<f64>, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(values, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// One golden case's inputs as host values, perturbable for finite differences.
#[derive(Clone)]
pub struct Case {
    pub name: String,
    pub loss: Loss,
    pub seed: u64,
    pub b: usize,
    pub k: usize,
    pub d: usize,
    pub queries: Vec<f64>,
    pub positives: Vec<f64>,
    /// `[B, k, d]`, only the negatives the case uses.
    pub negatives: Vec<f64>,
    pub teacher: Option<(Vec<f64>, Vec<usize>)>,
    pub weights: Option<(Vec<f64>, Vec<usize>)>,
    pub value: f64,
    pub grads: [Vec<f64>; 3],
}

pub fn cases() -> Vec<Case> {
    let g = golden("losses.json");
    let (b, kk, d) = (
        g["dims"]["B"].as_u64().unwrap() as usize,
        g["dims"]["K"].as_u64().unwrap() as usize,
        g["dims"]["d"].as_u64().unwrap() as usize,
    );
    let all_neg = flat(&g["negatives"]);
    let teacher = flat(&g["teacher_scores"]);
    g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let k = c["negatives"].as_u64().unwrap() as usize;
            let negatives = (0..b)
                .flat_map(|i| all_neg[i * kk * d..(i * kk + k) * d].to_vec())
                .collect();
            let teacher = match c["teacher"].as_str() {
                Some("scores") => Some((teacher.clone(), vec![b, kk + 1])),
                Some("margins") => Some((
                    (0..b)
                        .flat_map(|i| {
                            let row = &teacher[i * (kk + 1)..(i + 1) * (kk + 1)];
                            row[1..].iter().map(|x| row[0] - x).collect::<Vec<_>>()
                        })
                        .collect(),
                    vec![b, kk],
                )),
                _ => None,
            };
            let weights = match c["weights"].as_str() {
                Some("hard") => Some((flat(&g["weights_hard"]), vec![b, kk])),
                Some("full") => Some((flat(&g["weights_full"]), vec![b, b + b * kk])),
                _ => None,
            };
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                loss: c["loss"].as_str().unwrap().parse().unwrap(),
                seed: c["seed"].as_u64().unwrap(),
                b,
                k,
                d,
                queries: flat(&g["queries"]),
                positives: flat(&g["positives"]),
                negatives,
                teacher,
                weights,
                value: c["value"].as_f64().unwrap(),
                grads: [
                    flat(&c["grad_queries"]),
                    flat(&c["grad_positives"]),
                    c.get("grad_negatives").map(flat).unwrap_or_default(),
                ],
            }
        })
        .collect()
}

impl Case {
    /// The input tensors `[queries, positives, negatives]` (negatives `[B, k, d]`, or
    /// `[B·k, d]` when `flat_negatives`; empty when the case takes none).
    pub fn inputs(&self, dtype: DType, flat_negatives: bool) -> Vec<Tensor> {
        let (b, k, d) = (self.b, self.k, self.d);
        let mut v = vec![
            tensor(self.queries.clone(), &[b, d], dtype),
            tensor(self.positives.clone(), &[b, d], dtype),
        ];
        if k > 0 {
            let shape: Vec<usize> = if flat_negatives {
                vec![b * k, d]
            } else {
                vec![b, k, d]
            };
            v.push(tensor(self.negatives.clone(), &shape, dtype));
        }
        v
    }

    /// The loss of `inputs` (as from [`Case::inputs`]) with a fresh generator.
    pub fn loss(&self, inputs: &[Tensor], dtype: DType) -> Tensor {
        let teacher = self
            .teacher
            .as_ref()
            .map(|(v, s)| tensor(v.clone(), s, dtype));
        let weights = self
            .weights
            .as_ref()
            .map(|(v, s)| tensor(v.clone(), s, dtype));
        let mut input = LossInput::pairs(&inputs[0], &inputs[1]);
        if let Some(n) = inputs.get(2) {
            input = input.with_negatives(n);
        }
        if let Some(t) = &teacher {
            input = input.with_teacher(t);
        }
        if let Some(w) = &weights {
            input = input.with_weights(w);
        }
        let mut rng = SplitMix64::new(self.seed);
        self.loss.compute(&input, &mut rng).unwrap()
    }
}

pub fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

pub fn host(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The all-MiniLM-L6-v2 folder, or `None` (outside CI) when it is not installed.
pub fn minilm() -> Option<std::path::PathBuf> {
    let root = std::env::var_os("FOIL_MODELS")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/foil/models")))?;
    let dir = root.join("all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run scripts/fetch-models.sh first: {} is missing",
        dir.display()
    );
    eprintln!("skipped: {} is not installed", dir.display());
    None
}
