//! Matrix products in bfloat16 with AVX-512 BF16's dot product, `VDPBF16PS`, for
//! `--precision bf16` on CPUs that have it but no AMX ([`crate::amx`]): AMD Zen 4 and later,
//! Intel Cooper Lake.
//!
//! `VDPBF16PS` takes 16 pairs of bfloat16 values from each operand and adds each pair's two
//! products to a float32 lane: twice the multiply-adds of a float32 FMA per instruction. On a
//! 2-core AMD EPYC (Zen 4) one core ran a 1024 × 384 by 384 × 1536 product at 212 GFLOP/s with
//! the kernel below, against 103 GFLOP/s for the gemm crate's float32 kernel. (On Sapphire
//! Rapids it was slower than float32; there AMX is used.)
//!
//! The weight `w` `[n, k]` (the product is `x wᵀ`) is rounded and packed once: for each block of
//! 64 outputs and each pair of inputs, 64 32-bit words holding that pair for each output.
//! Activations are rounded per product. Each output is one float32 sum over the input pairs in
//! order, whatever the number of threads.

use std::sync::OnceLock;

use crate::kernels::{bf16, bf16_blocks};

/// Outputs per block: four 16-lane registers.
const COLUMNS: usize = 64;
/// Rows per micro-kernel: 6 × 4 accumulators, 4 weight registers and 1 broadcast fit the 32
/// registers.
const ROWS: usize = 6;
/// Rows per parallel task.
const TASK_ROWS: usize = 48;

/// Whether this CPU has AVX-512 BF16 (asked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// A weight `[n, k]` rounded to bfloat16 and packed as input pairs per block of 64 outputs,
/// zero-padded to whole blocks and pairs.
pub struct PackedPairs {
    n: usize,
    k: usize,
    /// `k` rounded up to pairs, halved.
    pairs: usize,
    /// Block `b`, pair `p`, output `c`: word `(b · pairs + p) · 64 + c`, the bfloat16 values of
    /// inputs `2p` (low half) and `2p + 1` (high half) of output `64b + c`.
    words: Vec<u32>,
}

impl PackedPairs {
    /// Packs the row-major float32 weight `w` `[n, k]`.
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight size");
        let pairs = k.div_ceil(2);
        let blocks = n.div_ceil(COLUMNS);
        let mut words = vec![0u32; blocks * pairs * COLUMNS];
        for (block, panel) in words.chunks_exact_mut(pairs * COLUMNS).enumerate() {
            let outputs = block * COLUMNS..n.min((block + 1) * COLUMNS);
            for (c, output) in outputs.enumerate() {
                let row = &w[output * k..(output + 1) * k];
                for (pair, values) in row.chunks(2).enumerate() {
                    let high = values.get(1).map_or(0, |&v| bf16(v) as u32);
                    panel[pair * COLUMNS + c] = bf16(values[0]) as u32 | (high << 16);
                }
            }
        }
        Self { n, k, pairs, words }
    }
}

/// `out = x wᵀ` for `x` `[rows, k]` (row-major float32), `w` packed, `out` `[rows, n]`, in
/// parallel over blocks of rows on the current rayon pool. Needs [`available`].
pub fn matmul(x: &[f32], rows: usize, w: &PackedPairs, out: &mut [f32]) {
    assert!(available(), "AVX-512 BF16 is not available");
    let stride = 2 * w.pairs;
    bf16_blocks(
        x,
        (rows, w.k, w.n),
        out,
        (TASK_ROWS, stride),
        |a, rows, out| {
            // SAFETY: `available` checked the CPU; `task` reads `rows` rows of `a` and writes
            // inside `out` (see there).
            unsafe { task(a, stride, rows, w, out) }
        },
    );
}

/// The rows of one task: `a` holds them as bfloat16 pairs, `stride` values a row; `out`
/// receives `rows` of them, `w.n` floats a row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn task(a: &[u16], stride: usize, rows: usize, w: &PackedPairs, out: &mut [f32]) {
    let n = w.n;
    // Output blocks that end past `n` go through `spill` first.
    let mut spill = [0f32; ROWS * COLUMNS];
    for block in 0..n.div_ceil(COLUMNS) {
        let b = w.words[block * w.pairs * COLUMNS..(block + 1) * w.pairs * COLUMNS].as_ptr();
        let first = block * COLUMNS;
        let width = COLUMNS.min(n - first);
        for r in (0..rows).step_by(ROWS) {
            let m = ROWS.min(rows - r);
            let a = a[r * stride..(r + m) * stride].as_ptr();
            let (c, ldc) = if width == COLUMNS {
                (out[r * n + first..].as_mut_ptr(), n)
            } else {
                (spill.as_mut_ptr(), COLUMNS)
            };
            match m {
                6 => kernel::<6>(a, stride, b, w.pairs, c, ldc),
                5 => kernel::<5>(a, stride, b, w.pairs, c, ldc),
                4 => kernel::<4>(a, stride, b, w.pairs, c, ldc),
                3 => kernel::<3>(a, stride, b, w.pairs, c, ldc),
                2 => kernel::<2>(a, stride, b, w.pairs, c, ldc),
                _ => kernel::<1>(a, stride, b, w.pairs, c, ldc),
            }
            if width < COLUMNS {
                for (i, row) in spill.chunks_exact(COLUMNS).take(m).enumerate() {
                    let start = (r + i) * n + first;
                    out[start..start + width].copy_from_slice(&row[..width]);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn task(_: &[u16], _: usize, _: usize, _: &PackedPairs, _: &mut [f32]) {
    unreachable!("AVX-512 BF16 exists only on x86-64");
}

/// `M` rows × 64 outputs: `c[r][j] = Σ_p a[r][2p..2p+2] · b[p][j]`, accumulated in registers
/// and stored once. `a` has `lda` bfloat16 values a row, `b` is one packed block of `pairs`
/// × 64 words, `c` has `ldc` floats a row and room for 64 in each of the `M` rows.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel<const M: usize>(
    a: *const u16,
    lda: usize,
    b: *const u32,
    pairs: usize,
    c: *mut f32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 4]; M];
    for p in 0..pairs {
        let words = b.add(p * COLUMNS) as *const __m512i;
        let w: [__m512bh; 4] =
            std::array::from_fn(|j| std::mem::transmute(_mm512_loadu_si512(words.add(j))));
        for (r, acc) in acc.iter_mut().enumerate() {
            // Inputs 2p and 2p + 1 of row r, as one 32-bit word in every lane.
            let pair = (a.add(r * lda + 2 * p) as *const u32).read_unaligned();
            let pair: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
            for (acc, w) in acc.iter_mut().zip(&w) {
                *acc = _mm512_dpbf16_ps(*acc, pair, *w);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * ldc + 16 * j), *acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bf16_check;

    #[test]
    fn products_match_the_rounded_inputs_with_ragged_sizes() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        // Rows, outputs and inputs that fill no block, micro-kernel or pair exactly.
        let shapes = [
            (45, 50, 70),
            (48, 64, 32),
            (1, 17, 5),
            (100, 130, 384),
            (7, 1, 1),
        ];
        bf16_check::assert_rounded_products(&shapes, |x, w, rows, n, k| {
            let mut out = vec![f32::NAN; rows * n];
            matmul(x, rows, &PackedPairs::new(w, n, k), &mut out);
            out
        });
    }

    #[test]
    fn the_same_bits_at_any_thread_count() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        let (rows, n, k) = (150, 200, 96);
        let (x, w) = bf16_check::inputs(rows, n, k);
        let packed = PackedPairs::new(&w, n, k);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0f32; rows * n];
            pool.install(|| matmul(&x, rows, &packed, &mut out));
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(3));
    }
}
