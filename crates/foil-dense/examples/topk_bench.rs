//! Exact top-k search over raw little-endian f32 matrices, for bench/topk.sh.
//!
//! ```text
//! topk_bench --corpus C.f32 --queries Q.f32 --dim 384 --k 100 \
//!     [--out-ids I.u32] [--out-scores S.f32] [--query-block N] [--doc-block N] \
//!     [--threading auto|sequential|query-blocks|corpus-parts|gemm] [--repeat N]
//! ```
//!
//! Prints one JSON object on stdout: the search time (loading excluded; the minimum over
//! `--repeat` searches) and the settings. The outputs hold `queries × k` values, row-major:
//! document indices (u32) and scores (f32), best first.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use foil_dense::{exact_top_k_view, EmbeddingsView, Threading, TopKOptions};

fn read_f32(path: &str, dim: usize) -> Result<Vec<f32>, String> {
    let mut file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let len = file.metadata().map_err(|e| format!("{path}: {e}"))?.len() as usize;
    if len.checked_rem(4 * dim) != Some(0) {
        return Err(format!(
            "{path}: {len} bytes is not a whole number of rows of {dim} f32"
        ));
    }
    let mut data = Vec::with_capacity(len / 4);
    let mut buf = vec![0u8; 1 << 20];
    while data.len() < len / 4 {
        let n = (len - data.len() * 4).min(buf.len());
        file.read_exact(&mut buf[..n])
            .map_err(|e| format!("{path}: {e}"))?;
        data.extend(
            buf[..n]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    Ok(data)
}

fn write_raw(path: &str, bytes: impl Iterator<Item = [u8; 4]>) -> Result<(), String> {
    let file = File::create(path).map_err(|e| format!("{path}: {e}"))?;
    let mut w = BufWriter::new(file);
    for b in bytes {
        w.write_all(&b).map_err(|e| format!("{path}: {e}"))?;
    }
    w.flush().map_err(|e| format!("{path}: {e}"))
}

/// CPU seconds (user + system, all threads) of this process so far, where Linux tells.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses; utime and
    // stime are the 14th and 15th fields, in clock ticks (100 per second on Linux).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut corpus, mut queries) = (String::new(), String::new());
    let (mut out_ids, mut out_scores) = (None, None);
    let (mut dim, mut k, mut repeat) = (0usize, 100usize, 1usize);
    let mut options = TopKOptions::default();
    let mut threading = "auto".to_string();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: not a number: {value:?}"))
        };
        match flag.as_str() {
            "--corpus" => corpus = value.clone(),
            "--queries" => queries = value.clone(),
            "--dim" => dim = number()?,
            "--k" => k = number()?,
            "--repeat" => repeat = number()?.max(1),
            "--query-block" => options.query_block = number()?,
            "--doc-block" => options.doc_block = number()?,
            "--out-ids" => out_ids = Some(value.clone()),
            "--out-scores" => out_scores = Some(value.clone()),
            "--threading" => {
                options.threading = match value.as_str() {
                    "auto" => Threading::Auto,
                    "sequential" => Threading::Sequential,
                    "query-blocks" => Threading::QueryBlocks,
                    "corpus-parts" => Threading::CorpusParts,
                    "gemm" => Threading::Gemm,
                    _ => return Err(format!("--threading: unknown value {value:?}")),
                };
                threading = value.clone();
            }
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    if corpus.is_empty() || queries.is_empty() || dim == 0 {
        return Err("--corpus, --queries and --dim are required".into());
    }
    let t0 = Instant::now();
    let corpus_data = read_f32(&corpus, dim)?;
    let query_data = read_f32(&queries, dim)?;
    let load_s = t0.elapsed().as_secs_f64();
    let corpus_view = EmbeddingsView::new(dim, &corpus_data);
    let query_view = EmbeddingsView::new(dim, &query_data);

    let mut times = Vec::new();
    let mut hits = Vec::new();
    let cpu0 = cpu_seconds();
    for _ in 0..repeat {
        let t = Instant::now();
        hits = exact_top_k_view(query_view, corpus_view, k, &options);
        times.push(t.elapsed().as_secs_f64());
    }
    let search_s = times.iter().copied().fold(f64::INFINITY, f64::min);
    let search_cpu_s = cpu0
        .zip(cpu_seconds())
        .map(|(a, b)| (b - a) / repeat as f64);

    if let Some(path) = &out_ids {
        write_raw(
            path,
            hits.iter()
                .flat_map(|h| (0..k).map(move |i| h.get(i).map_or(u32::MAX, |h| h.doc)))
                .map(u32::to_le_bytes),
        )?;
    }
    if let Some(path) = &out_scores {
        write_raw(
            path,
            hits.iter()
                .flat_map(|h| (0..k).map(move |i| h.get(i).map_or(f32::NAN, |h| h.score)))
                .map(f32::to_le_bytes),
        )?;
    }
    let report = serde_json::json!({
        "tool": "foil",
        "search_s": search_s,
        "search_runs_s": times,
        "search_cpu_s": search_cpu_s,
        "load_s": load_s,
        "n_queries": query_view.len(),
        "n_docs": corpus_view.len(),
        "dim": dim,
        "k": k,
        "threads": rayon::current_num_threads(),
        "threading": threading,
        "query_block": options.query_block,
        "doc_block": options.doc_block,
    });
    println!("{report}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("topk_bench: {e}");
            ExitCode::from(2)
        }
    }
}
