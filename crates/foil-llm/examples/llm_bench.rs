//! foil's side of `bench/generate.sh`: prompt-processing and decode speed of one sequence, and
//! queries/s for a batch of passages, printed as one JSON line.
//!
//! ```text
//! cargo run --release -p foil-llm --example llm_bench -- MODEL.gguf CORPUS.jsonl [N] [MAX_TOKENS] [RUNS]
//! ```
//!
//! The prompt for passage `i` is `query_prompt(title, text)` below (bench/llama_cpp_peer.py
//! builds the same one). Set RAYON_NUM_THREADS to fix the thread count.

use std::io::BufRead;
use std::time::Instant;

use foil_core::generator::{ChatMessage, GenerationRequest, Generator, SamplingParams};
use foil_llm::llama::{KvCache, Segment};
use foil_llm::{GgufGenerator, GgufOptions};

fn query_prompt(title: &str, text: &str) -> String {
    format!(
        "Write one search query that this passage answers. Reply with the query only.\n\nPassage: {title}. {text}"
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The allocator settings the foil CLI starts with, so that this measures what `foil
    // generate` runs.
    foil_core::process::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: llm_bench MODEL.gguf CORPUS.jsonl [N] [MAX_TOKENS] [RUNS]".into());
    }
    let n: usize = args.get(3).map_or(Ok(16), |s| s.parse())?;
    let max_tokens: usize = args.get(4).map_or(Ok(32), |s| s.parse())?;
    let runs: usize = args.get(5).map_or(Ok(3), |s| s.parse())?;
    let decode_tokens = 64;

    let t = Instant::now();
    let generator = GgufGenerator::load(
        std::path::Path::new(&args[1]),
        GgufOptions {
            max_batch: n.max(1),
            ..GgufOptions::default()
        },
    )?;
    let load_s = t.elapsed().as_secs_f64();

    let file = std::fs::File::open(&args[2])?;
    let mut passages = Vec::new();
    for line in std::io::BufReader::new(file).lines().take(n) {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        passages.push(query_prompt(&field("title"), &field("text")));
    }
    let requests: Vec<GenerationRequest> = passages
        .iter()
        .map(|p| GenerationRequest {
            messages: vec![ChatMessage::user(p.clone())],
            params: SamplingParams {
                temperature: 0.0,
                top_p: 1.0,
                max_tokens,
                stop: Vec::new(),
                seed: 0,
                ..Default::default()
            },
        })
        .collect();

    // One sequence: prefill the first prompt, then decode greedily.
    let model = generator.model();
    let prompt = generator.prompt_ids(&requests[0].messages)?;
    let (mut pp, mut tg, mut pp_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut cache = KvCache::new(model, 1);
        let seg = Segment {
            seq: 0,
            start: 0,
            len: prompt.len(),
            logits: true,
            prompt: true,
        };
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let logits = model.forward(&prompt, &[seg], &mut cache)?;
        pp.push(prompt.len() as f64 / t.elapsed().as_secs_f64());
        pp_cpu.push(cpu_seconds() - cpu);
        let mut next = argmax(&logits[0]);
        let t = Instant::now();
        for i in 0..decode_tokens {
            let seg = Segment {
                seq: 0,
                start: prompt.len() + i,
                len: 1,
                logits: true,
                prompt: false,
            };
            let logits = model.forward(&[next], &[seg], &mut cache)?;
            next = argmax(&logits[0]);
        }
        tg.push(decode_tokens as f64 / t.elapsed().as_secs_f64());
    }

    // The batch: all requests through the Generator.
    let (mut qps, mut batch_cpu) = (Vec::new(), Vec::new());
    let mut completion_tokens = 0;
    let mut prompt_tokens = 0;
    let mut first = String::new();
    for _ in 0..runs {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let out = generator.generate(&requests);
        qps.push(requests.len() as f64 / t.elapsed().as_secs_f64());
        batch_cpu.push(cpu_seconds() - cpu);
        completion_tokens = 0;
        prompt_tokens = 0;
        for g in &out {
            let g = g.as_ref().map_err(|e| e.to_string())?;
            completion_tokens += g.completion_tokens;
            prompt_tokens += g.prompt_tokens;
        }
        if let Some(Ok(g)) = out.first() {
            first = g.text.clone();
        }
    }
    let report = serde_json::json!({
        "tool": "foil",
        "threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_default(),
        "load_s": load_s,
        "prompt_tokens_one": prompt.len(),
        "pp_tok_s": median(pp),
        "pp_cpu_s": median(pp_cpu),
        "tg_tok_s": median(tg),
        "batch": requests.len(),
        "batch_prompt_tokens": prompt_tokens,
        "batch_completion_tokens": completion_tokens,
        "batch_queries_s": median(qps),
        "batch_cpu_s": median(batch_cpu),
        "first_query": first,
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{report}");
    Ok(())
}

/// CPU seconds this process has used (all threads), from /proc/self/stat; 0 elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// The process's peak resident set (VmHWM in /proc/self/status), in MB; 0 elsewhere.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}
