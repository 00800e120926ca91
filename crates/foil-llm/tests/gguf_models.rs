//! foil-llm against the real GGUF models and golden files from llama.cpp
//! (scripts/golden/make_llm_golden.py → tests/fixtures/llm/<model>.json).
//!
//! The models are required: `scripts/fetch-models.sh smollm2 qwen` installs them (in
//! `$FOIL_MODELS`, default ~/.cache/foil/models). Run in release mode:
//! `cargo test --release -p foil-llm`.

use std::path::PathBuf;
use std::sync::OnceLock;

use foil_core::generator::{
    ChatMessage, FinishReason, GenerationRequest, Generator, Role, SamplingParams,
};
use foil_llm::llama::{KvCache, Segment};
use foil_llm::{GgufGenerator, GgufOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    tokenize: Vec<Tokenized>,
    chat: Vec<Chat>,
    greedy: Vec<Greedy>,
}

#[derive(Deserialize)]
struct Tokenized {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct Chat {
    messages: Vec<Message>,
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Greedy {
    messages: Vec<Message>,
    prompt_ids: Vec<u32>,
    ids: Vec<u32>,
    margins: Vec<f32>,
    first_top5: Vec<(u32, f32)>,
}

fn messages(m: &[Message]) -> Vec<ChatMessage> {
    m.iter()
        .map(|m| ChatMessage {
            role: match m.role.as_str() {
                "system" => Role::System,
                "assistant" => Role::Assistant,
                _ => Role::User,
            },
            content: m.content.clone(),
        })
        .collect()
}

const SMOLLM2: (&str, &str) = (
    "smollm2",
    "SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
);
const QWEN: (&str, &str) = (
    "qwen",
    "Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
);

fn model(which: (&str, &str)) -> PathBuf {
    let path = foil_core::fsutil::models_dir().join(which.1);
    assert!(
        path.is_file(),
        "{} is missing: run `scripts/fetch-models.sh {}` (models go to $FOIL_MODELS, default ~/.cache/foil/models)",
        path.display(),
        which.0
    );
    path
}

fn golden(name: &str) -> Golden {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/llm")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn generator(which: (&str, &str)) -> &'static GgufGenerator {
    static SMOL: OnceLock<GgufGenerator> = OnceLock::new();
    static QW: OnceLock<GgufGenerator> = OnceLock::new();
    let cell = if which.0 == "qwen" { &QW } else { &SMOL };
    cell.get_or_init(|| {
        GgufGenerator::load(
            &model(which),
            GgufOptions {
                max_batch: 4,
                context_length: Some(2048),
                ..GgufOptions::default()
            },
        )
        .unwrap()
    })
}

fn check_tokenizer(which: (&str, &str)) {
    let g = generator(which);
    let golden = golden(which.0);
    assert!(golden.tokenize.len() >= 50);
    for t in &golden.tokenize {
        let ids = g.tokenizer().encode(&t.text).unwrap();
        assert_eq!(ids, t.ids, "{}: tokens of {:?}", which.0, t.text);
    }
}

fn check_chat_template(which: (&str, &str)) {
    let g = generator(which);
    for c in golden(which.0).chat {
        let m = messages(&c.messages);
        assert_eq!(g.template().render(&m), c.text, "{}", which.0);
        assert_eq!(g.prompt_ids(&m).unwrap(), c.ids, "{}", which.0);
    }
}

/// How far foil's logits may be from llama.cpp's. Both quantize the activations before the int8
/// dot products, but foil multiplies Q4_1/Q5_0 weights as Q8_0 and, unless `precise`, quantizes
/// activations per 256 values for Q8_0 weights (llama.cpp: per 32), so logits differ slightly.
const LOGIT_TOLERANCE: f32 = 0.75;

/// foil's greedy tokens equal llama.cpp's until the first step where llama.cpp's two best
/// logits are within `LOGIT_TOLERANCE` of each other (a near-tie the rounding differences above
/// may flip; the sequences diverge from there), and foil's first-step logits of llama.cpp's five
/// best tokens are within `LOGIT_TOLERANCE` of llama.cpp's.
fn check_greedy(which: (&str, &str), precise: bool) {
    let loaded;
    let g = if precise {
        let options = GgufOptions {
            precise: true,
            ..GgufOptions::default()
        };
        loaded = GgufGenerator::load(&model(which), options).unwrap();
        &loaded
    } else {
        generator(which)
    };
    let mut compared = 0;
    for c in golden(which.0).greedy {
        let m = messages(&c.messages);
        let prompt = g.prompt_ids(&m).unwrap();
        assert_eq!(prompt, c.prompt_ids);

        let mut cache = KvCache::new(g.model(), 1);
        let seg = Segment {
            seq: 0,
            start: 0,
            len: prompt.len(),
            logits: true,
            prompt: true,
        };
        let logits = g.model().forward(&prompt, &[seg], &mut cache).unwrap();
        for &(id, expected) in &c.first_top5 {
            let got = logits[0][id as usize];
            assert!(
                (got - expected).abs() <= LOGIT_TOLERANCE,
                "{}: logit of token {id}: foil {got}, llama.cpp {expected}",
                which.0
            );
        }

        let ids = g.greedy_ids(&prompt, c.ids.len()).unwrap();
        for (i, (&ours, &theirs)) in ids.iter().zip(&c.ids).enumerate() {
            if ours != theirs {
                assert!(
                    c.margins[i] < LOGIT_TOLERANCE,
                    "{}: greedy token {i} differs from llama.cpp's where its margin is {}\n foil:  {ids:?}\n llama: {:?}",
                    which.0,
                    c.margins[i],
                    c.ids
                );
                break;
            }
            compared += 1;
        }
    }
    assert!(
        compared >= 8,
        "{}: only {compared} tokens compared",
        which.0
    );
}

#[test]
fn smollm2_greedy_matches_llama_cpp() {
    // The 135M model's logits move by up to ~1.7 under the fast kernels' coarser activation
    // quantization, so it is compared in precise mode (within 0.35 of llama.cpp's measured).
    check_greedy(SMOLLM2, true);
}

#[test]
fn qwen_greedy_matches_llama_cpp() {
    check_greedy(QWEN, false);
    check_greedy(QWEN, true);
}

#[test]
fn smollm2_tokenizer_matches_llama_cpp() {
    check_tokenizer(SMOLLM2);
}

#[test]
fn qwen_tokenizer_matches_llama_cpp() {
    check_tokenizer(QWEN);
}

#[test]
fn smollm2_chat_template_matches_jinja() {
    check_chat_template(SMOLLM2);
}

#[test]
fn qwen_chat_template_matches_jinja() {
    check_chat_template(QWEN);
}

fn request(text: &str, temperature: f32, max_tokens: usize, seed: u64) -> GenerationRequest {
    GenerationRequest {
        messages: vec![ChatMessage::user(text)],
        params: SamplingParams {
            temperature,
            top_p: 0.9,
            max_tokens,
            stop: Vec::new(),
            seed,
            ..Default::default()
        },
    }
}

#[test]
fn output_does_not_depend_on_the_batch() {
    for which in [SMOLLM2, QWEN] {
        let g = generator(which);
        for temperature in [0.0, 0.8] {
            let target = request("Name a fruit and describe it.", temperature, 12, 42);
            let alone = g.generate(std::slice::from_ref(&target));
            let batch = vec![
                request("Write a haiku about the sea.", temperature, 20, 1),
                target.clone(),
                request("What is 17 * 23? Explain step by step.", temperature, 3, 2),
                request("List five prime numbers.", temperature, 16, 3),
            ];
            let together = g.generate(&batch);
            assert_eq!(
                alone[0], together[1],
                "{} at temperature {temperature}",
                which.0
            );
        }
    }
}

/// A prompt's rows give the same logits fed whole or in chunks of any size (each kind of row
/// has its own kernel, whose arithmetic does not depend on the rows around it), and the
/// prompt kind differs from the generated kind only in the last bits.
#[test]
fn prompt_rows_give_the_same_bits_whole_or_chunked() {
    let g = generator(SMOLLM2);
    let user = Message {
        role: "user".into(),
        content: "Write one search query about the thermal conductivity of graphene.".into(),
    };
    let prompt = g.prompt_ids(&messages(&[user])).unwrap();
    let n = prompt.len();
    let last_logits = |chunks: &[usize], kind: bool| {
        let mut cache = KvCache::new(g.model(), 1);
        let (mut start, mut logits) = (0, Vec::new());
        for &len in chunks {
            let seg = Segment {
                seq: 0,
                start,
                len,
                logits: start + len == n,
                prompt: kind,
            };
            let out = g
                .model()
                .forward(&prompt[start..start + len], &[seg], &mut cache);
            if let Some(l) = out.unwrap().pop() {
                logits = l;
            }
            start += len;
        }
        logits
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let whole = last_logits(&[n], true);
    assert!(!whole.is_empty());
    for mut chunks in [vec![1, 6], vec![n - 1], vec![5; n / 5]] {
        let fed: usize = chunks.iter().sum();
        if fed < n {
            chunks.push(n - fed);
        }
        assert_eq!(
            bits(&last_logits(&chunks, true)),
            bits(&whole),
            "{chunks:?}"
        );
    }
    let generated = last_logits(&[n], false);
    let diff = whole
        .iter()
        .zip(&generated)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    if foil_llm::quantized_kernels().starts_with("avx2") {
        assert!(diff > 0.0, "the prompt kind took the int8 kernel");
    }
    assert!(diff < LOGIT_TOLERANCE, "kinds differ by {diff}");
}

#[test]
fn seeds_change_sampled_text_and_repeat_exactly() {
    let g = generator(SMOLLM2);
    let a = g.generate(&[request("Tell me a story.", 1.0, 16, 7)]);
    let b = g.generate(&[request("Tell me a story.", 1.0, 16, 7)]);
    let c = g.generate(&[request("Tell me a story.", 1.0, 16, 8)]);
    assert_eq!(a, b);
    assert_ne!(a[0].as_ref().unwrap().text, c[0].as_ref().unwrap().text);
}

#[test]
fn max_tokens_gives_length() {
    let g = generator(QWEN);
    let out = g.generate(&[request("Count from 1 to 100.", 0.0, 5, 0)]);
    let out = out[0].as_ref().unwrap();
    assert_eq!(out.finish, FinishReason::Length);
    assert_eq!(out.completion_tokens, 5);
    assert!(!out.text.is_empty());
    let zero = g.generate(&[request("Hi", 0.0, 0, 0)]);
    assert_eq!(zero[0].as_ref().unwrap().finish, FinishReason::Length);
}

#[test]
fn end_of_turn_gives_stop() {
    let g = generator(QWEN);
    let out = g.generate(&[request("What is the capital of France?", 0.0, 64, 0)]);
    let out = out[0].as_ref().unwrap();
    assert_eq!(out.finish, FinishReason::Stop);
    assert!(out.text.contains("Paris"), "{:?}", out.text);
    assert!(!out.text.contains("<|im_end|>"));
}

#[test]
fn stop_strings_cut_before_the_first_occurrence() {
    let g = generator(QWEN);
    let free = g.generate(&[request(
        "Count from 1 to 20, separated by commas.",
        0.0,
        40,
        0,
    )]);
    let free = free[0].as_ref().unwrap().text.clone();
    let Some(at) = free.find('7') else {
        panic!("no 7 in {free:?}")
    };
    let mut r = request("Count from 1 to 20, separated by commas.", 0.0, 40, 0);
    r.params.stop = vec!["7".into(), "never appears".into()];
    let out = g.generate(&[r]);
    let out = out[0].as_ref().unwrap();
    assert_eq!(out.finish, FinishReason::Stop);
    assert_eq!(out.text, free[..at]);
}

#[test]
fn long_prompts_fail_alone() {
    let g = generator(SMOLLM2);
    let long = "word ".repeat(3000);
    let out = g.generate(&[request(&long, 0.0, 4, 0), request("Hi", 0.0, 4, 0)]);
    assert_eq!(out[0].as_ref().unwrap_err().reason, "prompt_too_long");
    assert!(out[1].is_ok());
}

#[test]
fn fingerprint_names_the_weights_and_template() {
    let g = generator(SMOLLM2);
    let sha = foil_core::fsutil::sha256_file(&model(SMOLLM2)).unwrap();
    assert!(g.fingerprint().contains(&sha), "{}", g.fingerprint());
    assert!(g.fingerprint().contains("template=chatml:"));
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("foil-llm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.gguf");
    std::fs::write(&path, b"GGUF not really").unwrap();
    let err = GgufGenerator::load(&path, GgufOptions::default())
        .err()
        .expect("a broken file must not load");
    assert!(err.to_string().contains("broken.gguf"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file cut short inside its tensor data (a partial download) is an error naming the file
/// and the tensor that could not be read, not a panic.
#[test]
fn truncated_files_are_errors_naming_the_file_and_tensor() {
    let bytes = std::fs::read(model(SMOLLM2)).unwrap();
    let dir = std::env::temp_dir().join(format!("foil-llm-cut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cut.gguf");
    std::fs::write(&path, &bytes[..bytes.len() * 3 / 5]).unwrap();
    let err = GgufGenerator::load(&path, GgufOptions::default())
        .err()
        .expect("a truncated file must not load");
    let message = err.to_string();
    assert!(message.contains("cut.gguf"), "{message}");
    assert!(message.contains("tensor \""), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_probabilities_describe_the_greedy_answer() {
    let g = generator(SMOLLM2);
    let mut r = request(
        "Is Paris the capital of France? Answer yes or no.",
        0.0,
        8,
        0,
    );
    r.params.top_logprobs = 5;
    let out = g.generate(&[r.clone()]);
    let out = out[0].as_ref().unwrap();
    let top = &out.top_logprobs;
    assert_eq!(top.len(), 5);
    // Greedy: the first generated token is the most likely one, and the answer starts with it.
    assert!(out.text.starts_with(top[0].token.trim_start()), "{out:?}");
    assert!(top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
    let mass: f32 = top.iter().map(|t| t.logprob.exp()).sum();
    assert!(mass > 0.0 && mass <= 1.0 + 1e-4, "{mass}");
    let mean = out.mean_logprob.unwrap();
    assert!(mean < 0.0 && mean >= top[0].logprob as f64 - 50.0, "{mean}");
    // Asking for none leaves the field empty and changes nothing else.
    r.params.top_logprobs = 0;
    let plain = g.generate(&[r]);
    let plain = plain[0].as_ref().unwrap();
    assert!(plain.top_logprobs.is_empty());
    assert_eq!(
        (&plain.text, plain.mean_logprob),
        (&out.text, out.mean_logprob)
    );
}

#[test]
fn a_shared_prompt_prefix_gives_the_same_answers() {
    // Long shared instructions, different endings: computed once and copied into each slot.
    let g = generator(SMOLLM2);
    let shared = "You write short search queries for passages. ".repeat(12);
    let requests: Vec<GenerationRequest> = ["Cats sleep sixteen hours a day.", "Tea has caffeine."]
        .iter()
        .enumerate()
        .map(|(i, p)| request(&format!("{shared}\nPassage: {p}"), 0.7, 12, i as u64))
        .collect();
    let together = g.generate(&requests);
    for (i, r) in requests.iter().enumerate() {
        let alone = g.generate(std::slice::from_ref(r));
        assert_eq!(
            alone[0].as_ref().unwrap(),
            together[i].as_ref().unwrap(),
            "request {i}"
        );
    }
    // Identical prompts: each keeps a token of its own to feed.
    let same = g.generate(&[requests[0].clone(), requests[0].clone()]);
    assert_eq!(same[0], same[1]);
}

#[test]
fn samples_of_one_prompt_share_its_prefill_and_equal_separate_runs() {
    // Seven samples of one chat (more than the generator's four slots, so the prompt is fed
    // for two groups) beside another chat; one sample stops after a single token.
    let g = generator(SMOLLM2);
    let chat = "Write a search query for: Tea has caffeine, which keeps people awake.";
    let mut requests: Vec<GenerationRequest> =
        (0..7).map(|seed| request(chat, 0.9, 10, seed)).collect();
    requests[3].params.max_tokens = 1;
    requests.insert(2, request("Name a colour.", 0.9, 6, 99));
    let together = g.generate(&requests);
    let mut texts = std::collections::HashSet::new();
    for (i, r) in requests.iter().enumerate() {
        let alone = g.generate(std::slice::from_ref(r));
        assert_eq!(alone[0], together[i], "request {i}");
        texts.insert(together[i].as_ref().unwrap().text.clone());
    }
    assert!(
        texts.len() > 3,
        "seeds should give different samples: {texts:?}"
    );
}
