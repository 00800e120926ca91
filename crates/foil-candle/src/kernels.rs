//! foil's CPU kernels: matrix products through the `gemm` crate, and fused element-wise passes
//! written without branches so that the compiler vectorizes them — forward (bias + GELU,
//! residual + LayerNorm, softmax) for the inference path and, with their backward passes, for
//! training ([`crate::fused`]).

use foil_core::rng::SplitMix64;
use gemm::Parallelism;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 · 2^23: adding and subtracting it rounds an f32 to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x in f32 with a relative error of about 2e-7: x = n·ln2 + r with |r| ≤ ln2 / 2, e^r by its
/// Taylor polynomial of degree 6, 2^n assembled in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n: with n + 127 + 2^23 in [2^23, 2^24), the float's low mantissa bits hold n + 127,
    // which shifted into the exponent field is 2^n (integer operations only, so this vectorizes).
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() & 0x7f_ffff;
    p * f32::from_bits(biased << 23)
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// BERT's GELU, 0.5·x·(1 + erf(x / √2)).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    // tanh(u) = 1 - 2 / (e^{2u} + 1)
    let tanh = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + tanh)
}

/// The activation of a BERT feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Gelu,
    GeluTanh,
    Relu,
}

/// Defines `pub fn $name` that runs `$generic` compiled for AVX-512 or AVX2 + FMA when the CPU
/// has them (chosen at run time), so that the loops in `$generic` are vectorized with the widest
/// registers available while the binary still runs on any x86-64 CPU.
macro_rules! dispatch {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) => $generic:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

/// The instruction set the fused kernels run with on this CPU (`foil --version` says which).
pub fn instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2+fma";
        }
    }
    "portable"
}

/// Lanes of the partial sums in reductions: enough independent accumulators for the compiler
/// to keep a vector register busy.
const LANES: usize = 16;

/// Sum of `x` with [`LANES`] partial sums.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Maximum of `x` with [`LANES`] partial maxima.
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

#[inline(always)]
fn bias_activation_generic(rows: &mut [f32], bias: &[f32], act: Activation) {
    for row in rows.chunks_exact_mut(bias.len()) {
        match act {
            Activation::Gelu => row
                .iter_mut()
                .zip(bias)
                .for_each(|(x, b)| *x = gelu(*x + b)),
            Activation::GeluTanh => row
                .iter_mut()
                .zip(bias)
                .for_each(|(x, b)| *x = gelu_tanh(*x + b)),
            Activation::Relu => row
                .iter_mut()
                .zip(bias)
                .for_each(|(x, b)| *x = (*x + b).max(0.0)),
        }
    }
}

dispatch! {
    /// `row[i] = act(row[i] + bias[i])` for every row.
    fn bias_activation(rows: &mut [f32], bias: &[f32], act: Activation) => bias_activation_generic
}

#[inline(always)]
fn add_bias_generic(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
    }
}

dispatch! {
    /// `row[i] += bias[i]` for every row.
    fn add_bias(rows: &mut [f32], bias: &[f32]) => add_bias_generic
}

#[inline(always)]
fn add_rows_generic(rows: &[f32], sums: &mut [f32]) {
    for row in rows.chunks_exact(sums.len()) {
        sums.iter_mut().zip(row).for_each(|(s, x)| *s += x);
    }
}

dispatch! {
    /// Adds every row of `rows` (each `sums.len()` wide) into `sums`, in row order.
    fn add_rows(rows: &[f32], sums: &mut [f32]) => add_rows_generic
}

#[inline(always)]
fn add_layer_norm_generic(x: &mut [f32], residual: Option<&[f32]>, w: &[f32], b: &[f32], eps: f32) {
    let h = w.len();
    for (i, row) in x.chunks_exact_mut(h).enumerate() {
        if let Some(res) = residual {
            row.iter_mut()
                .zip(&res[i * h..(i + 1) * h])
                .for_each(|(x, r)| *x += r);
        }
        let mean = sum(row) / h as f32;
        row.iter_mut().for_each(|x| *x -= mean);
        let mut sq = [0f32; LANES];
        for c in row.chunks_exact(LANES) {
            for j in 0..LANES {
                sq[j] += c[j] * c[j];
            }
        }
        let tail: f32 = row
            .chunks_exact(LANES)
            .remainder()
            .iter()
            .map(|x| x * x)
            .sum();
        let var = (sq.iter().sum::<f32>() + tail) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        row.iter_mut()
            .zip(w.iter().zip(b))
            .for_each(|(x, (w, b))| *x = *x * inv * w + b);
    }
}

dispatch! {
    /// `x = LayerNorm(x + residual)` row by row, with weight `w`, bias `b` and `eps`.
    fn add_layer_norm(x: &mut [f32], residual: Option<&[f32]>, w: &[f32], b: &[f32], eps: f32) => add_layer_norm_generic
}

#[inline(always)]
fn softmax_rows_generic(x: &mut [f32], n: usize) {
    for row in x.chunks_exact_mut(n) {
        let m = max(row);
        row.iter_mut().for_each(|v| *v = exp(*v - m));
        let inv = 1.0 / sum(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

dispatch! {
    /// Softmax of each row of length `n`, in place.
    fn softmax_rows(x: &mut [f32], n: usize) => softmax_rows_generic
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ (x − mean)², with [`LANES`] partial sums.
#[inline(always)]
fn centered_squares(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += (c[i] - mean) * (c[i] - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn masked_softmax_rows_generic(x: &mut [f32], n: usize, valid: usize, scale: f32) {
    for row in x.chunks_exact_mut(n) {
        let (live, padded) = row.split_at_mut(valid);
        live.iter_mut().for_each(|v| *v *= scale);
        let m = max(live);
        live.iter_mut().for_each(|v| *v = exp(*v - m));
        let inv = 1.0 / sum(live);
        live.iter_mut().for_each(|v| *v *= inv);
        padded.fill(0.0);
    }
}

dispatch! {
    /// Softmax of `scale · row` over the first `valid` of each row's `n` columns; the rest get
    /// probability 0 (padding keys).
    fn masked_softmax_rows(x: &mut [f32], n: usize, valid: usize, scale: f32) => masked_softmax_rows_generic
}

/// One row of the softmax backward pass: `grad` of the (dropped-out) probabilities becomes the
/// gradient of the scores, `scale · p ⊙ (g' − Σ p·g')` with `g' = grad ⊙ mask`.
#[inline(always)]
fn softmax_backward_row(
    grad: &mut [f32],
    probs: &[f32],
    mask: Option<&[f32]>,
    valid: usize,
    scale: f32,
) {
    if let Some(mask) = mask {
        grad.iter_mut().zip(mask).for_each(|(g, m)| *g *= m);
    }
    let s = dot(&grad[..valid], &probs[..valid]);
    grad.iter_mut()
        .zip(probs)
        .for_each(|(g, p)| *g = scale * p * (*g - s));
}

#[inline(always)]
fn masked_softmax_backward_rows_generic(
    grad: &mut [f32],
    scores: &[f32],
    dropout: Option<&[f32]>,
    n: usize,
    valid: usize,
    scale: f32,
) {
    let mut probs = vec![0f32; n];
    for (i, (g, x)) in grad
        .chunks_exact_mut(n)
        .zip(scores.chunks_exact(n))
        .enumerate()
    {
        // The probabilities again, exactly as the forward pass computed them.
        probs.copy_from_slice(x);
        masked_softmax_rows_generic(&mut probs, n, valid, scale);
        let mask = dropout.map(|m| &m[i * n..(i + 1) * n]);
        softmax_backward_row(g, &probs, mask, valid, scale);
    }
}

dispatch! {
    /// The backward pass of [`masked_softmax_rows`] followed by dropout (`mask`, row-major like
    /// `scores`): `grad` of the output becomes, in place, the gradient of the scores,
    /// `scale · p ⊙ (g' − Σ p·g')` with `g' = grad ⊙ mask`. The probabilities are recomputed
    /// from the scores rather than kept.
    fn masked_softmax_backward_rows(grad: &mut [f32], scores: &[f32], dropout: Option<&[f32]>, n: usize, valid: usize, scale: f32) => masked_softmax_backward_rows_generic
}

#[inline(always)]
fn softmax_backward_rows_generic(
    grad: &mut [f32],
    probs: &[f32],
    dropout: Option<&[f32]>,
    n: usize,
    valid: usize,
    scale: f32,
) {
    for (i, (g, p)) in grad
        .chunks_exact_mut(n)
        .zip(probs.chunks_exact(n))
        .enumerate()
    {
        let mask = dropout.map(|m| &m[i * n..(i + 1) * n]);
        softmax_backward_row(g, p, mask, valid, scale);
    }
}

dispatch! {
    /// [`masked_softmax_backward_rows`] from the probabilities the forward pass kept (rows of
    /// `n`, the first `valid` real) instead of the scores.
    fn softmax_backward_rows(grad: &mut [f32], probs: &[f32], dropout: Option<&[f32]>, n: usize, valid: usize, scale: f32) => softmax_backward_rows_generic
}

#[inline(always)]
fn dropout_factors_generic(out: &mut [f32], rng: &SplitMix64, threshold: u64, keep: f32) {
    for (i, f) in out.iter_mut().enumerate() {
        *f = if rng.peek(i as u64) >> 11 < threshold {
            0.0
        } else {
            keep
        };
    }
}

dispatch! {
    /// Dropout factors from the next `out.len()` draws of `rng` (which does not advance): 0 where
    /// the draw's top 53 bits are below `threshold`, else `keep`. With threshold ⌈p·2⁵³⌉ that is
    /// `next_f64() < p`, the float comparison, exactly.
    fn dropout_factors(out: &mut [f32], rng: &SplitMix64, threshold: u64, keep: f32) => dropout_factors_generic
}

/// `x` rounded to bfloat16: to nearest, ties to even (add 0x7fff plus the lowest kept bit,
/// then truncate). NaN is not expected.
#[inline(always)]
pub fn bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
fn to_bf16_generic(dst: &mut [u16], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d = bf16(*s));
}

dispatch! {
    /// `dst[i]` = [`bf16`]`(src[i])`.
    fn to_bf16(dst: &mut [u16], src: &[f32]) => to_bf16_generic
}

/// The frame of a bfloat16 product `out = x wᵀ` (`x` `[rows, k]` row-major float32, `out`
/// `[rows, n]`) shared by [`crate::amx`] and [`crate::dpbf16`]: in parallel over blocks of
/// `block` rows on the current rayon pool, the block's rows are rounded to bfloat16, each
/// zero-padded to `stride` values, in a buffer of `block` rows (zeros past the last), and
/// `product(a, rows, out)` fills the block's output rows from them.
pub(crate) fn bf16_blocks(
    x: &[f32],
    (rows, k, n): (usize, usize, usize),
    out: &mut [f32],
    (block, stride): (usize, usize),
    product: impl Fn(&[u16], usize, &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    assert_eq!(x.len(), rows * k, "input size");
    assert_eq!(out.len(), rows * n, "output size");
    if rows == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    out.par_chunks_mut(block * n)
        .zip(x.par_chunks(block * k))
        .for_each(|(out, x)| {
            let mut a = vec![0u16; block * stride];
            for (dst, src) in a.chunks_exact_mut(stride).zip(x.chunks_exact(k)) {
                to_bf16(&mut dst[..k], src);
            }
            product(&a, x.len() / k, out);
        });
}

#[inline(always)]
fn scale_by_generic(x: &mut [f32], factors: &[f32]) {
    x.iter_mut().zip(factors).for_each(|(x, f)| *x *= f);
}

dispatch! {
    /// `x[i] *= factors[i]`.
    fn scale_by(x: &mut [f32], factors: &[f32]) => scale_by_generic
}

#[inline(always)]
fn layer_norm_backward_generic(
    grad: &mut [f32],
    x: &[f32],
    w: &[f32],
    eps: f32,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let h = w.len();
    let inv_h = 1.0 / h as f32;
    for (g, x) in grad.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
        let mean = sum(x) * inv_h;
        let rstd = 1.0 / (centered_squares(x, mean) * inv_h + eps).sqrt();
        for j in 0..h {
            dw[j] += g[j] * (x[j] - mean) * rstd;
            db[j] += g[j];
            g[j] *= w[j];
        }
        // With d = g ⊙ w and x̂ = (x − mean)·rstd: dx = rstd · (d − mean(d) − x̂ · mean(d ⊙ x̂)).
        let d_mean = sum(g) * inv_h;
        let dx_hat_mean = rstd * (dot(g, x) * inv_h - mean * d_mean);
        for j in 0..h {
            let x_hat = (x[j] - mean) * rstd;
            g[j] = rstd * (g[j] - d_mean - x_hat * dx_hat_mean);
        }
    }
}

dispatch! {
    /// LayerNorm's backward pass over rows of `x` (weight `w`): `grad` of the output becomes the
    /// gradient of the input in place, and the rows' contributions to the weight's and the
    /// bias's gradients are added to `dw` and `db`.
    fn layer_norm_backward(grad: &mut [f32], x: &[f32], w: &[f32], eps: f32, dw: &mut [f32], db: &mut [f32]) => layer_norm_backward_generic
}

#[inline(always)]
fn bias_gelu_backward_generic(grad: &mut [f32], y: &[f32], bias: &[f32], db: &mut [f32]) {
    // d/dx 0.5·x·(1 + erf(x/√2)) = Φ(x) + x·φ(x).
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for (g, y) in grad
        .chunks_exact_mut(bias.len())
        .zip(y.chunks_exact(bias.len()))
    {
        for j in 0..bias.len() {
            let x = y[j] + bias[j];
            let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * exp(-0.5 * x * x);
            g[j] *= cdf + x * pdf;
            db[j] += g[j];
        }
    }
}

dispatch! {
    /// The backward pass of `gelu(y + bias)` (erf GELU) over rows: `grad` of the output becomes
    /// the gradient of `y` in place, and its column sums are added to `db`.
    fn bias_gelu_backward(grad: &mut [f32], y: &[f32], bias: &[f32], db: &mut [f32]) => bias_gelu_backward_generic
}

/// A strided view of a row-major matrix: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A contiguous row-major matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// Rows of `cols` elements, `row_stride` apart.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// `c = a · b` (or `c += a · b` with `accumulate`), where `c` is row-major with rows
/// `ldc` apart.
pub fn matmul(
    a: Mat,
    b: Mat,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    parallelism: Parallelism,
) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    a.check();
    b.check();
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * ldc + n <= c.len(), "output too small");
    // SAFETY: the bounds of all three views were checked above; `c` is borrowed mutably and
    // cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The check both bfloat16 products ([`crate::amx`], [`crate::dpbf16`]) pass.
#[cfg(test)]
pub(crate) mod bf16_check {
    use super::bf16;

    /// Deterministic inputs `x` `[rows, k]` and `w` `[n, k]` between −2 and 2.
    pub fn inputs(rows: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..rows * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let w = (0..n * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
            .collect();
        (x, w)
    }

    /// Asserts that `product(x, w, rows, n, k)` (`x wᵀ`) equals, for each shape, the product
    /// of the bfloat16-rounded inputs computed in float64, up to the rounding of float32 sums.
    pub fn assert_rounded_products(
        shapes: &[(usize, usize, usize)],
        product: impl Fn(&[f32], &[f32], usize, usize, usize) -> Vec<f32>,
    ) {
        let r = |v: f32| f32::from_bits((bf16(v) as u32) << 16) as f64;
        for &(rows, n, k) in shapes {
            let (x, w) = inputs(rows, n, k);
            let got = product(&x, &w, rows, n, k);
            for i in 0..rows {
                for j in 0..n {
                    let want: f64 = (0..k).map(|t| r(x[i * k + t]) * r(w[j * k + t])).sum();
                    let got = got[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "({rows}, {n}, {k}) element ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst: f32 = 0.0;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs() as f32;
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 4e-7, "{worst}");
    }

    #[test]
    fn gelu_is_accurate() {
        // Reference erf from the series / continued fraction is not in std: compare with a
        // high-precision f64 erf computed by its Taylor series on a small range.
        fn erf64(x: f64) -> f64 {
            let mut sum = 0.0;
            let mut term = x;
            for n in 0..80 {
                sum += term / (2 * n + 1) as f64;
                term *= -x * x / (n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        let mut x = -4.0f64;
        while x < 4.0 {
            let want = 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2));
            assert!((gelu(x as f32) as f64 - want).abs() < 1e-6, "{x}");
            x += 0.01;
        }
    }

    #[test]
    fn matmul_with_transposed_views() {
        // a: 2×3, w: 4×3 (so a · wᵀ is 2×4)
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let mut c = [0.0; 8];
        matmul(
            Mat::new(&a, 2, 3),
            Mat::new(&w, 4, 3).t(),
            &mut c,
            4,
            false,
            Parallelism::None,
        );
        assert_eq!(c, [1.0, 2.0, 3.0, 6.0, 4.0, 5.0, 6.0, 15.0]);
        matmul(
            Mat::new(&a, 2, 3),
            Mat::new(&w, 4, 3).t(),
            &mut c,
            4,
            true,
            Parallelism::None,
        );
        assert_eq!(c[3], 12.0);
    }

    #[test]
    fn layer_norm_and_softmax() {
        let mut x = [1.0, 2.0, 3.0, 4.0];
        add_layer_norm(&mut x, None, &[1.0; 4], &[0.0; 4], 0.0);
        let sd = (1.25f32).sqrt();
        assert!((x[0] + 1.5 / sd).abs() < 1e-6 && (x[3] - 1.5 / sd).abs() < 1e-6);
        let mut s = [0.0, 0.0, (2.0f32).ln(), 0.0];
        softmax_rows(&mut s, 4);
        assert!((s[2] - 0.4).abs() < 1e-6 && (s[0] - 0.2).abs() < 1e-6);
    }
}
