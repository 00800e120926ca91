//! `foil train` end to end on the demo dataset with all-MiniLM-L6-v2 (installed by
//! scripts/fetch-models.sh): a run killed with SIGKILL after a checkpoint resumes to the same
//! weights as an uninterrupted run, GradCache gives the update of one big batch, and the
//! saved folder is a model foil can load and that differs from the base.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use foil_candle::weights::Weights;

mod common;
use common::{foil, minilm};

/// Mines a small n-tuple table (1 BM25 negative per row) from the demo dataset.
fn training_table(dir: &Path) -> PathBuf {
    foil(&["demo", "--output", dir.to_str().unwrap()]);
    let out = dir.join("mined");
    foil(&[
        "mine",
        "--data",
        dir.join("data").to_str().unwrap(),
        "--retriever",
        "bm25",
        "--num-negatives",
        "1",
        "--format",
        "n-tuple",
        "--output",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    out.join("n-tuple.jsonl")
}

fn train_args<'a>(
    model: &'a str,
    table: &'a str,
    out: &'a str,
    steps: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        table,
        "--model",
        model,
        "--output",
        out,
        "--batch-size",
        "4",
        "--max-steps",
        steps,
        "--max-length",
        "24",
        "--checkpoint-every",
        "2",
        "--threads",
        "2",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    args
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let w = Weights::load(dir, &Device::Cpu).unwrap();
    let mut names: Vec<String> = w.names().map(str::to_string).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let shape = w.shape(&n).unwrap();
            let v = w.vec(&n, &shape).unwrap();
            (n, v)
        })
        .collect()
}

/// The largest difference between the parameters of `trained` and the same-named ones of
/// `base` (a base folder may hold buffers a trained one leaves out).
fn max_abs_diff(base: &[(String, Vec<f32>)], trained: &[(String, Vec<f32>)]) -> f32 {
    let base: std::collections::HashMap<&str, &Vec<f32>> =
        base.iter().map(|(n, v)| (n.as_str(), v)).collect();
    assert!(trained.len() > 100, "{} tensors", trained.len());
    trained
        .iter()
        .flat_map(|(name, v)| {
            let b = base
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{name} not in the base"));
            v.iter().zip(b.iter()).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

/// The killed run also evaluates on the demo's test split every 2 steps (`--eval-every`):
/// its `eval.jsonl` must equal the uninterrupted run's, whichever side of an evaluation the
/// kill fell on, and the last line must be what `foil search` + `foil eval` give the saved
/// folder.
#[test]
fn a_killed_training_run_resumes_to_the_same_weights() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let table = training_table(tmp.path());
    let data = tmp.path().join("data");
    let (model, table) = (model.to_str().unwrap(), table.to_str().unwrap());
    let eval = ["--eval-data", data.to_str().unwrap(), "--eval-every", "2"];
    let whole = tmp.path().join("whole");
    foil(&train_args(
        model,
        table,
        whole.to_str().unwrap(),
        "6",
        &eval,
    ));
    let log = std::fs::read_to_string(whole.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 6);

    // Kill a second run as soon as its first checkpoint exists, then run it again.
    let resumed = tmp.path().join("resumed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(train_args(
            model,
            table,
            resumed.to_str().unwrap(),
            "6",
            &eval,
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = resumed.join("checkpoint/state.json");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !state.exists() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before a kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!resumed.join("log.jsonl").exists(), "killed before the end");
    let out = foil(&train_args(
        model,
        table,
        resumed.to_str().unwrap(),
        "6",
        &eval,
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("resumed at 0"), "did not resume: {err}");
    assert_eq!(
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(resumed.join("model.safetensors")).unwrap(),
        "a resumed run must end with the uninterrupted run's weights"
    );
    assert_eq!(
        std::fs::read_to_string(resumed.join("log.jsonl")).unwrap(),
        log
    );

    // Evaluations after steps 2, 4 and 6, the same in both runs, the last one the saved model's.
    let evals = std::fs::read_to_string(whole.join("eval.jsonl")).unwrap();
    assert_eq!(
        std::fs::read_to_string(resumed.join("eval.jsonl")).unwrap(),
        evals
    );
    let points: Vec<serde_json::Value> = evals
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = points.iter().map(|p| p["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [2, 4, 6]);
    let run = tmp.path().join("whole.trec");
    foil(&[
        "search",
        "--data",
        data.to_str().unwrap(),
        "--split",
        "test",
        "--retriever",
        "dense",
        "--model",
        whole.to_str().unwrap(),
        "--top-k",
        "100",
        "--no-cache",
        "--output",
        run.to_str().unwrap(),
        "--no-progress",
    ]);
    let out = foil(&[
        "eval",
        "--qrels",
        data.join("qrels/test.tsv").to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--json",
    ]);
    let means: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["ndcg@10", "map@10", "mrr@10", "recall@100"] {
        let (during, after) = (
            points[2][key].as_f64().unwrap(),
            means[key].as_f64().unwrap(),
        );
        assert!((during - after).abs() < 1e-9, "{key}: {during} vs {after}");
    }

    // Rerun, finished, evaluating on another split: the test split's lines are not kept as if
    // they were the train split's; the final model is evaluated on the train split.
    let train_eval = [
        "--eval-data",
        data.to_str().unwrap(),
        "--eval-split",
        "train",
    ];
    foil(&train_args(
        model,
        table,
        whole.to_str().unwrap(),
        "6",
        &train_eval,
    ));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(whole.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["step"], 6);
    assert_ne!(lines[0]["ndcg@10"], points[2]["ndcg@10"]);

    // The saved folder keeps the base's maximum length (training used 24 tokens).
    let length = |dir: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join("sentence_bert_config.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["max_seq_length"].clone()
    };
    assert_eq!(length(&whole), length(Path::new(model)));

    // The weights moved, and the folder loads as a bi-encoder.
    let base = weights(Path::new(model));
    let trained = weights(&whole);
    assert!(
        max_abs_diff(&base, &trained) > 1e-5,
        "training changed nothing"
    );
    let texts = tmp.path().join("texts.jsonl");
    std::fs::write(
        &texts,
        "{\"_id\": \"a\", \"text\": \"aspirin and heart attacks\"}\n",
    )
    .unwrap();
    foil(&[
        "encode",
        "--model",
        whole.to_str().unwrap(),
        "--input",
        texts.to_str().unwrap(),
        "--output",
        tmp.path().join("enc").to_str().unwrap(),
        "--no-cache",
        "--no-progress",
    ]);
}

#[test]
fn gradcache_gives_the_update_of_one_big_batch() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let table = training_table(tmp.path());
    let (model, table) = (model.to_str().unwrap(), table.to_str().unwrap());
    let (big, cached) = (tmp.path().join("big"), tmp.path().join("cached"));
    foil(&train_args(
        model,
        table,
        big.to_str().unwrap(),
        "2",
        &["--no-dropout"],
    ));
    foil(&train_args(
        model,
        table,
        cached.to_str().unwrap(),
        "2",
        &["--no-dropout", "--mini-batch", "3"],
    ));
    let losses = |dir: &Path| -> Vec<f64> {
        std::fs::read_to_string(dir.join("log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let (a, b) = (losses(&big), losses(&cached));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "losses {a:?} vs {b:?}");
    }
    let diff = max_abs_diff(&weights(&big), &weights(&cached));
    assert!(diff < 1e-5, "GradCache moved weights differently: {diff}");
}

/// A cross-encoder trained by foil (from `foil init-cross-encoder`) is saved as a
/// BertForSequenceClassification folder whose weights moved, and `foil rerank` ranks with it.
#[test]
fn a_cross_encoder_trains_and_reranks() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    foil(&["demo", "--output", tmp.path().to_str().unwrap()]);
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let data = path("data");
    foil(&[
        "init-cross-encoder",
        "--base",
        model.to_str().unwrap(),
        "--output",
        &path("init"),
    ]);
    foil(&[
        "mine",
        "--data",
        &data,
        "--retriever",
        "bm25",
        "--num-negatives",
        "3",
        "--format",
        "n-tuple",
        "--output",
        &path("mined"),
        "--no-progress",
    ]);
    let table = path("mined/n-tuple.jsonl");
    let init = path("init");
    for loss in ["listwise", "bce"] {
        let out = path(&format!("ce-{loss}"));
        let eval: &[&str] = if loss == "listwise" {
            &["--eval-data", &data, "--eval-top-k", "5"]
        } else {
            &[]
        };
        let mut args = vec![
            "train",
            &table,
            "--model-type",
            "cross-encoder",
            "--loss",
            loss,
            "--model",
            &init,
            "--output",
            &out,
            "--batch-size",
            "4",
            "--max-steps",
            "2",
            "--max-length",
            "48",
            "--lr",
            "1e-4",
            "--threads",
            "2",
            "--no-progress",
        ];
        args.extend_from_slice(eval);
        foil(&args);
        let before = weights(&tmp.path().join("init"));
        let after = weights(Path::new(&out));
        for name in [
            "pooler.dense.weight",
            "classifier.weight",
            "classifier.bias",
        ] {
            assert!(
                after.iter().any(|(n, _)| n == name),
                "{loss}: {name} not saved"
            );
        }
        assert!(
            max_abs_diff(&before, &after) > 1e-6,
            "{loss}: nothing moved"
        );
    }
    foil(&[
        "search",
        "--data",
        &data,
        "--split",
        "test",
        "--retriever",
        "bm25",
        "--output",
        &path("bm25.trec"),
        "--no-progress",
    ]);
    foil(&[
        "rerank",
        "--data",
        &data,
        "--run",
        &path("bm25.trec"),
        "--cross-encoder",
        &path("ce-listwise"),
        "--top-k",
        "5",
        "--max-length",
        "48",
        "--output",
        &path("rr.trec"),
        "--no-progress",
    ]);
    // The evaluation after the last step reranked BM25's top 5 exactly as `foil rerank` did.
    let out = foil(&[
        "eval",
        "--qrels",
        &path("data/qrels/test.tsv"),
        "--run",
        &path("rr.trec"),
        "--json",
    ]);
    let means: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let evals = std::fs::read_to_string(path("ce-listwise/eval.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(evals.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"], 2);
    for key in ["ndcg@10", "mrr@10"] {
        let (during, after) = (last[key].as_f64().unwrap(), means[key].as_f64().unwrap());
        assert!((during - after).abs() < 1e-9, "{key}: {during} vs {after}");
    }
    let run = std::fs::read_to_string(path("rr.trec")).unwrap();
    let queries: std::collections::HashSet<&str> =
        run.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(queries.len(), 25);
    assert_eq!(run.lines().count(), 25 * 5);
}

/// An XLM-RoBERTa reranker (bge-reranker's head: classifier.dense + tanh + out_proj) trains as
/// a cross-encoder and is saved as an XLMRobertaForSequenceClassification folder: the base's
/// tensor names (`roberta.`-prefixed encoder, the head), moved weights, and different scores.
#[test]
fn an_xlm_roberta_reranker_trains_and_keeps_its_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let table = training_table(tmp.path());
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny/xlm-roberta-reranker");
    let out = tmp.path().join("reranker");
    foil(&[
        "train",
        table.to_str().unwrap(),
        "--model-type",
        "cross-encoder",
        "--model",
        base.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--batch-size",
        "4",
        "--max-steps",
        "2",
        "--max-length",
        "48",
        "--lr",
        "1e-3",
        "--no-progress",
    ]);
    let names = |dir: &Path| -> Vec<String> {
        let mut n: Vec<String> = weights(dir).into_iter().map(|(n, _)| n).collect();
        n.sort();
        n
    };
    let raw_names = |dir: &Path| -> Vec<String> {
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let mut n: Vec<String> = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .unwrap()
            .into_keys()
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        raw_names(&out),
        raw_names(&base),
        "saved under the base's names"
    );
    assert!(raw_names(&out)
        .iter()
        .any(|n| n == "classifier.out_proj.weight"));
    assert_eq!(names(&out), names(&base));
    let moved = weights(&base)
        .iter()
        .zip(weights(&out))
        .flat_map(|((_, b), (_, a))| {
            b.iter()
                .zip(a)
                .map(|(x, y)| (x - y).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f32::max);
    assert!(moved > 1e-6, "nothing moved");
    let pairs = [(
        "vitamin D and fractures",
        "Low vitamin D levels were linked to more fractures.",
    )];
    let score = |dir: &Path| {
        foil_candle::CrossEncoder::load(dir, &foil_candle::CrossEncoderOptions::default())
            .unwrap()
            .logits(&pairs)
            .unwrap()[0]
    };
    assert_ne!(
        score(&base),
        score(&out),
        "the trained reranker scores as the base does"
    );
}

/// Each encoder family trains and is saved as a folder of its own family: the same tensor
/// names and shapes as the base (MPNet's `attention.attn.q`, XLM-R's one token type), its
/// `config.json`, and weights that moved. The tiny XLM-RoBERTa checkpoint is committed
/// (`scripts/golden/make_tiny_families.py`); MPNet runs where it is installed.
#[test]
fn every_family_trains_and_saves_a_folder_of_its_own_family() {
    let tmp = tempfile::tempdir().unwrap();
    let table = training_table(tmp.path());
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny");
    let mut families: Vec<(&str, std::path::PathBuf)> =
        ["xlm-roberta", "modernbert", "qwen2", "qwen3"]
            .into_iter()
            .map(|family| (family, tiny.join(family)))
            .collect();
    if let Some(dir) = common::mpnet() {
        families.push(("mpnet", dir));
    }
    for (family, base) in families {
        let out = tmp.path().join(format!("model-{family}"));
        foil(&train_args(
            base.to_str().unwrap(),
            table.to_str().unwrap(),
            out.to_str().unwrap(),
            "2",
            &[],
        ));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["model_type"], family);
        let shapes = |dir: &Path| -> std::collections::BTreeMap<String, Vec<usize>> {
            let w = Weights::load(dir, &Device::Cpu).unwrap();
            w.names()
                // The unused pooler, and buffers old checkpoints hold (MPNet's position_ids).
                .filter(|n| !n.starts_with("pooler.") && !n.ends_with("position_ids"))
                .map(|n| (n.to_string(), w.shape(n).unwrap()))
                .collect()
        };
        let (saved, held) = (shapes(&out), shapes(&base));
        assert!(
            saved == held,
            "{family}: saved tensors differ from the base's"
        );
        let (before, after) = (weights(&base), weights(&out));
        let held_weights: std::collections::HashMap<&str, &Vec<f32>> =
            before.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let moved = after
            .iter()
            .flat_map(|(n, v)| {
                v.iter()
                    .zip(held_weights[n.as_str()].iter())
                    .map(|(x, y)| (x - y).abs())
            })
            .fold(0.0, f32::max);
        assert!(moved > 0.0, "{family}: training changed no weight");
        for file in ["modules.json", "tokenizer.json", "1_Pooling/config.json"] {
            assert!(out.join(file).is_file(), "{family}: no {file}");
        }
        // The saved folder pools and prompts as the base does (decoders: the last token, the
        // query instruction).
        let json = |path: std::path::PathBuf| -> serde_json::Value {
            std::fs::read(path)
                .map(|b| serde_json::from_slice(&b).unwrap())
                .unwrap_or_default()
        };
        let pooling = |dir: &Path| -> Vec<String> {
            let v = json(dir.join("1_Pooling/config.json"));
            let mut on: Vec<String> = v
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, v)| k.starts_with("pooling_mode_") && v == &&serde_json::json!(true))
                .map(|(k, _)| k.clone())
                .collect();
            on.sort();
            on
        };
        assert_eq!(pooling(&out), pooling(&base), "{family}: pooling");
        let prompts =
            |dir: &Path| json(dir.join("config_sentence_transformers.json"))["prompts"].clone();
        assert_eq!(prompts(&out), prompts(&base), "{family}: prompts");
    }
}
