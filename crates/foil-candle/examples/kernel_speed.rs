//! Single-thread speed of attention-sized products and element-wise kernels.
use std::time::Instant;

use foil_candle::kernels::{bias_activation, matmul, softmax_rows, Activation, Mat};
use gemm::Parallelism;

fn main() {
    let (l, d, h) = (238usize, 32usize, 384usize);
    let qkv = vec![0.01f32; l * 3 * h];
    let mut scores = vec![0f32; l * l];
    let mut out = vec![0f32; l * h];
    let reps = 200;
    let start = Instant::now();
    for _ in 0..reps {
        for head in 0..12 {
            let q = Mat::strided(&qkv[head * d..], l, d, 3 * h);
            let k = Mat::strided(&qkv[h + head * d..], l, d, 3 * h);
            matmul(q, k.t(), &mut scores, l, false, Parallelism::None);
        }
    }
    let s = start.elapsed().as_secs_f64() / (reps * 12) as f64;
    println!(
        "QK^T {:.1} GFLOP/s ({:.1} us)",
        2.0 * (l * l * d) as f64 / s / 1e9,
        s * 1e6
    );
    let start = Instant::now();
    for _ in 0..reps {
        for head in 0..12 {
            let v = Mat::strided(&qkv[2 * h + head * d..], l, d, 3 * h);
            matmul(
                Mat::new(&scores, l, l),
                v,
                &mut out[head * d..],
                h,
                false,
                Parallelism::None,
            );
        }
    }
    let s = start.elapsed().as_secs_f64() / (reps * 12) as f64;
    println!(
        "PV   {:.1} GFLOP/s ({:.1} us)",
        2.0 * (l * l * d) as f64 / s / 1e9,
        s * 1e6
    );
    let start = Instant::now();
    for _ in 0..reps * 12 {
        softmax_rows(&mut scores, l);
    }
    let s = start.elapsed().as_secs_f64() / (reps * 12) as f64;
    println!("softmax {:.2} ns/elem", s * 1e9 / (l * l) as f64);
    let mut up = vec![0.3f32; 1024 * 1536];
    let bias = vec![0.1f32; 1536];
    let start = Instant::now();
    for _ in 0..20 {
        bias_activation(&mut up, &bias, Activation::Gelu);
    }
    let s = start.elapsed().as_secs_f64() / 20.0;
    println!("gelu {:.2} ns/elem", s * 1e9 / (1024 * 1536) as f64);
}
