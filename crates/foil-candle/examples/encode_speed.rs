//! Times BertEncoder on SciFact passages: `cargo run --release -p foil-candle --example encode_speed -- MODEL_DIR CORPUS N`.
use std::time::Instant;

use foil_candle::{BertEncoder, EncoderOptions};
use foil_core::beir::CorpusReader;
use foil_core::{Encoder, InputPolicy, TextKind};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let enc =
        BertEncoder::load(std::path::Path::new(&args[1]), &EncoderOptions::default()).unwrap();
    let n: usize = args[3].parse().unwrap();
    let texts: Vec<String> =
        CorpusReader::open(std::path::Path::new(&args[2]), InputPolicy::default())
            .unwrap()
            .take(n)
            .map(|d| d.unwrap().full_text())
            .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let t = Instant::now();
    let ids = enc.tokenize(&refs, TextKind::Passage).unwrap();
    let tok = t.elapsed().as_secs_f64();
    let mean_len = ids.iter().map(Vec::len).sum::<usize>() as f64 / ids.len() as f64;
    let t = Instant::now();
    let e = enc.encode_ids(&ids).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{} passages, mean {:.1} tokens: tokenize {:.3}s, encode {:.3}s = {:.1} passages/s; first {:?}",
        n,
        mean_len,
        tok,
        secs,
        n as f64 / secs,
        &e.row(0)[..4]
    );
    let _ = enc.dim();
}
