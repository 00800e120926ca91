//! Prompt rows: products in float32 against weights dequantized into panels.
//!
//! A prompt multiplies each weight matrix by hundreds of rows at once, and there the int8
//! kernel's cost is its per-block arithmetic: for every (row, output, 32-value block) it takes a
//! sign, two integer multiply-adds, a conversion to float, a scale product and a fused
//! multiply-add. Dequantized to float32 once per call, the same weights cost one fused
//! multiply-add per 8 products, and a tile of 6 rows × 16 outputs keeps 12 of them in flight
//! from two loads of weights and six broadcast activations per step: the CPU's float
//! multiply-add rate. On the Zen 3 these were written on (best of 5 alternating runs, three
//! runs, load average 0.51 before, nothing else running), two threads, 1,024 rows: Q5_0
//! 896 → 4864 at 48–56 billion multiply-adds per second against 33–40 with the int8 kernel,
//! Q4_1 576 → 1536 at 43–48 against 35–38; one thread, 128 rows: 25.6 against 19.8 (Q5_0),
//! 24.4 against 19.5 (Q4_1). K-quants, whose int8 kernel sums a whole super-block in
//! integers before its one float step, gained less in a first timing, and dequantizing their
//! sub-block scales costs more, so they stay on the int8 kernel ([`QMatrix::forward_prompt`]).
//!
//! The activations are not quantized here, so a prompt row's products are closer to the exact
//! ones than a generated row's.
//!
//! **The panels.** The outputs are split between threads by runs of 16 (one panel each at a
//! time): a thread dequantizes a panel's 16 weight rows (`q · d`, plus `m` for Q4_1 / Q5_1,
//! exactly as [`QMatrix::dequantize_row`]) and stores them transposed, `[k][16]`, so that one
//! step of the tile reads the 16 weights of one input position; then every row tile of the call
//! runs against it.
//!
//! **The bits.** Every output is one chain of fused multiply-adds over the input positions in
//! order, starting from zero: `y = fma(x[k], w[k], y)` for `k = 0, 1, …`. Nothing depends on the
//! tile an output falls in, on how many rows are multiplied or on the threads, so a prompt
//! row gets the same bits alone or in a batch, and [`reference`](fn@reference) computes them in scalar code.

use std::ops::Range;

use super::{team, QMatrix, BLOCK};

/// Outputs per panel: two vectors of 8.
const PANEL: usize = 16;
/// Activation rows per tile: 6 × 2 accumulators, two weight vectors and one broadcast fill 15
/// of the 16 vector registers.
const ROWS: usize = 6;

/// `x` (`m` rows of `w.input()` values) times `w` transposed, for a matrix of 32-value blocks.
pub(super) fn forward(w: &QMatrix, x: &[f32], m: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * w.out];
    forward_into(w, x, &(0..m).collect::<Vec<_>>(), &mut y);
    y
}

/// [`forward`] of `rows.len()` rows of `x`, row `i` written to row `rows[i]` of `y` (rows of
/// `w.out` values; the others are left as they are).
pub(super) fn forward_into(w: &QMatrix, x: &[f32], rows: &[usize], y: &mut [f32]) {
    debug_assert!(!w.format.is_k());
    let m = rows.len();
    assert!(x.len() == m * w.input() && y.len().is_multiple_of(w.out.max(1)));
    assert!(rows.iter().all(|&r| (r + 1) * w.out <= y.len()));
    // Runs of panels, in enough parts to balance the threads; each part dequantizes its own
    // panels once and runs all rows against them, writing its columns of every row.
    let panels = w.out.div_ceil(PANEL);
    let per_part = panels.div_ceil(2 * team::threads().max(1)).max(1) * PANEL;
    let output = Output {
        y: y.as_mut_ptr(),
        stride: w.out,
        rows,
    };
    team::map(w.out.div_ceil(per_part), |p| {
        let cols = p * per_part..w.out.min((p + 1) * per_part);
        // SAFETY: every row of `rows` is inside `y` (checked above), `y` outlives the parts,
        // and each part writes only its own columns.
        unsafe { multiply(w, x, cols, output) }
    });
}

/// The output matrix (`[_][stride]`), written by several parts at once, each to its own
/// columns: input row `i` goes to row `rows[i]`.
#[derive(Clone, Copy)]
struct Output<'a> {
    y: *mut f32,
    stride: usize,
    rows: &'a [usize],
}

impl Output<'_> {
    /// Where output `c` of input row `i` goes.
    fn at(&self, i: usize, c: usize) -> *mut f32 {
        self.y.wrapping_add(self.rows[i] * self.stride + c)
    }
}

// SAFETY: parts share the pointer but write disjoint columns and read nothing through it.
unsafe impl Send for Output<'_> {}
unsafe impl Sync for Output<'_> {}

/// Writes outputs `cols` of every row of `x` (`out.rows.len()` rows).
///
/// # Safety
/// Every row `out.rows` names must lie inside `out`'s matrix, `cols.end ≤ out.stride`, and no
/// other thread may access these columns meanwhile.
unsafe fn multiply(w: &QMatrix, x: &[f32], cols: Range<usize>, out: Output) {
    let (k, m) = (w.input(), out.rows.len());
    assert!(x.len() >= m * k && cols.end <= w.out.min(out.stride));
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above); the caller's promise.
        unsafe { avx2::multiply(w, x, cols, out) };
        return;
    }
    let mut weights = Vec::with_capacity(k);
    for c in cols {
        weights.clear();
        w.dequantize_row(c, &mut weights);
        for i in 0..m {
            // SAFETY: in bounds (the caller's promise); this part's column.
            unsafe { *out.at(i, c) = reference(&weights, &x[i * k..(i + 1) * k]) };
        }
    }
}

/// One output: the fused multiply-adds of a row and a dequantized weight row, in order.
fn reference(weights: &[f32], x: &[f32]) -> f32 {
    x.iter()
        .zip(weights)
        .fold(0.0, |y, (&x, &w)| x.mul_add(w, y))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::avx2::{f16, Unpack, Q4, Q5, Q8_0};
    use super::super::Format;
    use super::{Output, QMatrix, Range, BLOCK, PANEL, ROWS};
    use crate::simd::transpose;
    use std::arch::x86_64::*;

    /// See [`super::multiply`].
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C, and `super::multiply`'s conditions hold.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn multiply(w: &QMatrix, x: &[f32], cols: Range<usize>, out: Output) {
        match w.format {
            Format::Q8_0 => panels::<Q8_0>(w, x, cols, out),
            Format::Q4_0 => panels::<Q4<false>>(w, x, cols, out),
            Format::Q4_1 => panels::<Q4<true>>(w, x, cols, out),
            Format::Q5_0 => panels::<Q5<false>>(w, x, cols, out),
            Format::Q5_1 => panels::<Q5<true>>(w, x, cols, out),
            Format::Q4K | Format::Q5K | Format::Q6K => {
                unreachable!("K-quants' prompt rows run on the int8 kernel")
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn panels<U: Unpack>(w: &QMatrix, x: &[f32], cols: Range<usize>, output: Output) {
        let (k, m) = (w.input(), output.rows.len());
        let mut panel = vec![0f32; k * PANEL];
        let mut c0 = cols.start;
        while c0 < cols.end {
            let nc = PANEL.min(cols.end - c0);
            fill::<U>(w, c0, nc, &mut panel);
            let out = Out { output, at: c0, nc };
            let mut r = 0;
            while r + ROWS <= m {
                tile::<ROWS>(x, r, k, &panel, &out);
                r += ROWS;
            }
            match m - r {
                5 => tile::<5>(x, r, k, &panel, &out),
                4 => tile::<4>(x, r, k, &panel, &out),
                3 => tile::<3>(x, r, k, &panel, &out),
                2 => tile::<2>(x, r, k, &panel, &out),
                1 => tile::<1>(x, r, k, &panel, &out),
                _ => {}
            }
            c0 += nc;
        }
    }

    /// Where a tile's outputs go: output `j` of the panel is column `at + j` of `output`, for
    /// the panel's first `nc` outputs.
    struct Out<'a> {
        output: Output<'a>,
        at: usize,
        nc: usize,
    }

    /// Weight rows `c0..c0 + nc` dequantized into `panel` as `[k][16]` (outputs past `nc` zero).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fill<U: Unpack>(w: &QMatrix, c0: usize, nc: usize, panel: &mut [f32]) {
        let bytes = U::FORMAT.block_bytes();
        for b in 0..w.blocks {
            // Two groups of 8 outputs; each output's block is 4 vectors of 8 positions, and
            // each 8 × 8 square (8 outputs × 8 positions) is transposed into place.
            for g in 0..PANEL / 8 {
                let mut v = [[_mm256_setzero_ps(); 4]; 8];
                for (j, v) in v.iter_mut().enumerate() {
                    let c = c0 + 8 * g + j;
                    if c < c0 + nc {
                        *v = dequantize::<U>(w.bytes.as_ptr().add((c * w.blocks + b) * bytes));
                    }
                }
                for s in 0..4 {
                    let mut square = [_mm256_setzero_ps(); 8];
                    for (row, v) in square.iter_mut().zip(&v) {
                        *row = v[s];
                    }
                    let square = transpose(square);
                    let at = (b * BLOCK + 8 * s) * PANEL + 8 * g;
                    for (i, row) in square.into_iter().enumerate() {
                        _mm256_storeu_ps(panel.as_mut_ptr().add(at + i * PANEL), row);
                    }
                }
            }
        }
    }

    /// The 32 weights of the block at `p` as floats: `q · d`, plus `m` for formats with
    /// offsets (the arithmetic of [`QMatrix::dequantize_row`], so its bits).
    #[inline(always)]
    unsafe fn dequantize<U: Unpack>(p: *const u8) -> [__m256; 4] {
        let q = U::quants(p);
        let d = _mm256_set1_ps(f16(p));
        let m = _mm256_set1_ps(if U::FORMAT.has_offsets() {
            f16(p.add(2))
        } else {
            0.0
        });
        let (lo, hi) = (_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        let bytes = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
        let mut v = [_mm256_setzero_ps(); 4];
        for (v, bytes) in v.iter_mut().zip(bytes) {
            *v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), d);
            if U::FORMAT.has_offsets() {
                *v = _mm256_add_ps(*v, m);
            }
        }
        v
    }

    /// Rows `r0..r0 + R` against the panel: per input position, two loads of weights, `R`
    /// broadcast activations and `2R` fused multiply-adds.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const R: usize>(x: &[f32], r0: usize, k: usize, panel: &[f32], out: &Out) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let (x, w) = (x.as_ptr().add(r0 * k), panel.as_ptr());
        for kk in 0..k {
            let (w0, w1) = (
                _mm256_loadu_ps(w.add(kk * PANEL)),
                _mm256_loadu_ps(w.add(kk * PANEL + 8)),
            );
            for (i, acc) in acc.iter_mut().enumerate() {
                let a = _mm256_broadcast_ss(&*x.add(i * k + kk));
                acc[0] = _mm256_fmadd_ps(a, w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(a, w1, acc[1]);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            let y = out.output.at(r0 + i, out.at);
            if out.nc == PANEL {
                _mm256_storeu_ps(y, acc[0]);
                _mm256_storeu_ps(y.add(8), acc[1]);
            } else {
                let mut row = [0f32; PANEL];
                _mm256_storeu_ps(row.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[1]);
                std::ptr::copy_nonoverlapping(row.as_ptr(), y, out.nc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{activations, assert_rows_alone_equal_batch, bits, matrix};
    use super::super::Format;
    use super::*;

    const FORMATS: [Format; 5] = [
        Format::Q8_0,
        Format::Q4_0,
        Format::Q4_1,
        Format::Q5_0,
        Format::Q5_1,
    ];

    /// Every weight row of `w`, dequantized.
    fn dequantized(w: &QMatrix) -> Vec<Vec<f32>> {
        (0..w.out)
            .map(|c| {
                let mut row = Vec::new();
                w.dequantize_row(c, &mut row);
                row
            })
            .collect()
    }

    /// Every tile shape (1–6 rows and full tiles; a narrow last panel) and every thread split
    /// gives [`reference`]'s bits.
    #[test]
    fn every_format_and_tile_shape_gives_the_reference_bits() {
        // 37 outputs: two full panels and one of 5.
        let (out, input) = (37, 96);
        for format in FORMATS {
            let w = matrix(format, out, input, 5);
            for m in [1, 2, 5, 6, 7, 13] {
                let x = activations(m, input);
                let y = forward(&w, &x, m);
                for (c, weights) in dequantized(&w).iter().enumerate() {
                    for r in 0..m {
                        let want = reference(weights, &x[r * input..(r + 1) * input]);
                        assert_eq!(
                            y[r * out + c].to_bits(),
                            want.to_bits(),
                            "{format:?} m={m} r={r} c={c}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_and_in_a_batch() {
        for format in FORMATS {
            let w = matrix(format, 200, 64, 6);
            assert_rows_alone_equal_batch(&w, 23, |x, m| forward(&w, x, m));
        }
    }

    /// A call mixing prompt and generated rows gives each row the bits of its own kind.
    #[test]
    fn mixed_calls_give_each_row_the_bits_of_its_kind() {
        let (out, input) = (40, 64usize);
        let prompt = [true, false, true, true, false, false, true, false, true];
        let m = prompt.len();
        for format in FORMATS.into_iter().chain([Format::Q4K]) {
            let input = input.next_multiple_of(format.values());
            let w = matrix(format, out, input, 9);
            let x = activations(m, input);
            let y = w.forward_rows(&x, &prompt);
            let mut kinds_differ = false;
            for (r, &p) in prompt.iter().enumerate() {
                let row = &x[r * input..(r + 1) * input];
                let (own, other) = if p {
                    (w.forward_prompt(row, 1), w.forward(row, 1))
                } else {
                    (w.forward(row, 1), w.forward_prompt(row, 1))
                };
                assert_eq!(
                    bits(&y[r * out..(r + 1) * out]),
                    bits(&own),
                    "{format:?} row {r}"
                );
                kinds_differ |= bits(&own) != bits(&other);
            }
            // K-quants run both kinds on the int8 kernel.
            assert_eq!(kinds_differ, !format.is_k(), "{format:?}");
        }
    }

    /// The products are the float products of the dequantized weights: float64 sums within
    /// the rounding of a float32 chain.
    #[test]
    fn products_are_float_products_of_the_dequantized_weights() {
        let (out, input, m) = (20, 256, 3);
        for format in FORMATS {
            let w = matrix(format, out, input, 8);
            let x = activations(m, input);
            let y = forward(&w, &x, m);
            for (c, weights) in dequantized(&w).iter().enumerate() {
                for r in 0..m {
                    let products = x[r * input..(r + 1) * input]
                        .iter()
                        .zip(weights)
                        .map(|(&a, &b)| a as f64 * b as f64);
                    let exact: f64 = products.clone().sum();
                    let size: f64 = products.map(f64::abs).sum();
                    let got = y[r * out + c] as f64;
                    assert!(
                        (got - exact).abs() <= size * input as f64 * f32::EPSILON as f64,
                        "{format:?} r={r} c={c}: {got} vs {exact}"
                    );
                }
            }
        }
    }
}
