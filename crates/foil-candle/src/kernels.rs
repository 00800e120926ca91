//! The CPU kernels of the inference path: matrix products through the `gemm` crate, and fused
//! element-wise passes (bias + GELU, residual + LayerNorm, softmax) written without branches so
//! that the compiler vectorizes them.

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
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
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

/// `row[i] = act(row[i] + bias[i])` for every row.
pub fn bias_activation(rows: &mut [f32], bias: &[f32], act: Activation) {
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

/// `row[i] += bias[i]` for every row.
pub fn add_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
    }
}

/// `x = LayerNorm(x + residual)` row by row, with weight `w`, bias `b` and `eps`.
pub fn add_layer_norm(x: &mut [f32], residual: Option<&[f32]>, w: &[f32], b: &[f32], eps: f32) {
    let h = w.len();
    for (i, row) in x.chunks_exact_mut(h).enumerate() {
        if let Some(res) = residual {
            row.iter_mut()
                .zip(&res[i * h..(i + 1) * h])
                .for_each(|(x, r)| *x += r);
        }
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        row.iter_mut()
            .zip(w.iter().zip(b))
            .for_each(|(x, (w, b))| *x = (*x - mean) * inv * w + b);
    }
}

/// Softmax of each row of length `n`, in place.
pub fn softmax_rows(x: &mut [f32], n: usize) {
    for row in x.chunks_exact_mut(n) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = exp(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
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
