//! GFLOP/s of the matrix products of one BERT layer: `gemm_speed TOKENS`.
use std::time::Instant;

use foil_candle::kernels::{matmul, Mat};
use gemm::Parallelism;

fn main() {
    let t: usize = std::env::args().nth(1).map_or(7616, |s| s.parse().unwrap());
    let threads = rayon::current_num_threads();
    for (name, k, n) in [
        ("qkv", 384, 1152),
        ("out", 384, 384),
        ("up", 384, 1536),
        ("down", 1536, 384),
    ] {
        let a = vec![0.5f32; t * k];
        let w = vec![0.25f32; n * k];
        let mut c = vec![0f32; t * n];
        for (label, b) in [
            ("w^T view", Mat::new(&w, n, k).t()),
            ("packed [k,n]", Mat::new(&w, k, n)),
        ] {
            let start = Instant::now();
            let reps = 5;
            for _ in 0..reps {
                matmul(
                    Mat::new(&a, t, k),
                    b,
                    &mut c,
                    n,
                    false,
                    Parallelism::Rayon(threads),
                );
            }
            let s = start.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{name:5} {label:13} {:.1} GFLOP/s",
                2.0 * (t * k * n) as f64 / s / 1e9
            );
        }
    }
}
