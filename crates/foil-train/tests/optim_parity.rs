//! AdamW + linear warmup/decay + global-norm clipping equal torch.optim.AdamW +
//! get_linear_schedule_with_warmup + clip_grad_norm_ step for step (golden file
//! `tests/fixtures/train/adamw.json` from `scripts/golden/make_loss_golden.py`), also across a
//! save/resume of the optimizer state.

use candle_core::{DType, Tensor, Var};
use foil_train::{clip_grad_norm, AdamW, AdamWConfig, LinearSchedule};

mod common;

struct Run {
    golden: serde_json::Value,
    vars: Vec<(String, Var)>,
    schedule: LinearSchedule,
    config: AdamWConfig,
}

fn setup() -> Run {
    let golden = common::golden("adamw.json");
    let shapes: [(&str, &[usize]); 3] = [
        ("dense.weight", &[4, 3]),
        ("dense.bias", &[3]),
        ("norm.LayerNorm.weight", &[3]),
    ];
    let vars = shapes
        .iter()
        .map(|(name, shape)| {
            let t = common::tensor(common::flat(&golden["init"][name]), shape, DType::F32);
            (name.to_string(), Var::from_tensor(&t).unwrap())
        })
        .collect();
    let c = &golden["config"];
    let f = |k: &str| c[k].as_f64().unwrap();
    Run {
        schedule: LinearSchedule {
            base_lr: f("lr"),
            warmup_steps: c["warmup_steps"].as_u64().unwrap(),
            total_steps: c["total_steps"].as_u64().unwrap(),
        },
        config: AdamWConfig {
            beta1: f("beta1"),
            beta2: f("beta2"),
            eps: f("eps"),
            weight_decay: f("weight_decay"),
        },
        vars,
        golden,
    }
}

/// Runs steps `range` and returns the worst parameter difference.
fn run_steps(run: &Run, opt: &mut AdamW, range: std::ops::Range<usize>) -> f64 {
    let mut worst = 0f64;
    for step in range {
        let given = &run.golden["grads"][step];
        // L = Σ_p sum(p ⊙ G_p) has gradient G_p for each parameter given a gradient this step.
        let mut loss: Option<Tensor> = None;
        for (name, var) in &run.vars {
            if let Some(g) = given.get(name) {
                let g = common::tensor(common::flat(g), var.dims(), DType::F32);
                let term = var.as_tensor().mul(&g).unwrap().sum_all().unwrap();
                loss = Some(match loss {
                    Some(l) => l.add(&term).unwrap(),
                    None => term,
                });
            }
        }
        let mut grads = loss.unwrap().backward().unwrap();
        let norm = clip_grad_norm(&run.vars, &mut grads, 1.0).unwrap();
        let want = &run.golden["steps"][step];
        let want_norm = want["norm"].as_f64().unwrap();
        assert!(
            (norm - want_norm).abs() <= 1e-5 * want_norm,
            "step {step}: norm {norm} vs torch {want_norm}"
        );
        let lr = run.schedule.lr(step as u64);
        assert!(
            (lr - want["lr"].as_f64().unwrap()).abs() < 1e-12,
            "step {step}: lr {lr}"
        );
        opt.step(&grads, lr).unwrap();
        for (name, var) in &run.vars {
            let got = common::host(var.as_tensor());
            let expected = common::flat(&want["params"][name]);
            for (g, w) in got.iter().zip(&expected) {
                let d = (g - w).abs();
                worst = worst.max(d);
                assert!(d < 1e-6, "step {step} {name}: {g} vs torch {w}");
            }
        }
    }
    worst
}

#[test]
fn adamw_schedule_and_clipping_match_pytorch() {
    let run = setup();
    let mut opt = AdamW::new(&run.vars, run.config.clone());
    let worst = run_steps(&run, &mut opt, 0..6);
    eprintln!("worst parameter difference after 6 steps: {worst:e}");
}

#[test]
fn resuming_from_saved_state_continues_the_same_trajectory() {
    let run = setup();
    let mut opt = AdamW::new(&run.vars, run.config.clone());
    run_steps(&run, &mut opt, 0..3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimizer.safetensors");
    opt.save(&path).unwrap();
    let mut resumed = AdamW::new(&run.vars, run.config.clone());
    resumed.load(&path).unwrap();
    assert_eq!(resumed.steps(), 3);
    run_steps(&run, &mut resumed, 3..6);

    // State for a parameter that is not there is an error.
    let other = vec![run.vars[0].clone()];
    let err = AdamW::new(&other, run.config.clone())
        .load(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no parameter here"), "{err}");
}
