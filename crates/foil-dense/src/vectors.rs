//! Borrowed views of embedding matrices and the vector arithmetic every dense stage agrees on:
//! the reference inner product [`dot`] (the score exact search reports) and row normalization.

use foil_core::Embeddings;

/// A borrowed row-major matrix of vectors: row `i` is `data[i * dim..(i + 1) * dim]`.
///
/// Search takes views so that callers can pass any `&[f32]`: a slice of an [`Embeddings`], a
/// buffer read from an embeddings store, or (later) a memory-mapped file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbeddingsView<'a> {
    pub dim: usize,
    pub data: &'a [f32],
}

impl<'a> EmbeddingsView<'a> {
    /// Wraps row-major data.
    ///
    /// # Panics
    /// If `dim` is 0 while `data` is not empty, or `data.len()` is not a multiple of `dim`.
    pub fn new(dim: usize, data: &'a [f32]) -> Self {
        assert!(
            data.is_empty() || data.len().checked_rem(dim) == Some(0),
            "{} values do not make whole rows of {dim}",
            data.len()
        );
        Self { dim, data }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vector `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Rows `range` as a view of their own.
    pub fn rows(&self, range: std::ops::Range<usize>) -> EmbeddingsView<'a> {
        EmbeddingsView {
            dim: self.dim,
            data: &self.data[range.start * self.dim..range.end * self.dim],
        }
    }
}

impl<'a> From<&'a Embeddings> for EmbeddingsView<'a> {
    fn from(e: &'a Embeddings) -> Self {
        Self::new(e.dim, &e.data)
    }
}

/// Lanes of [`dot`]'s accumulators.
const LANES: usize = 16;

/// The inner product as foil reports it: 16 lane accumulators (lane `i % 16` sums the products
/// of positions `i`), each a plain multiply then add, then a fixed pairwise sum of the lanes.
///
/// Rust neither reassociates nor fuses floating-point operations, so this is the same number,
/// bit for bit, on every machine and at every optimization level; exact search rescores its
/// final candidates with it, which makes its scores independent of blocking and threads.
/// Its rounding error is at most `γ_n · Σ|a_i b_i|` with `γ_n = n·u / (1 - n·u)`, `u = 2⁻²⁴`.
///
/// # Panics
/// If the lengths differ.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for i in 0..ra.len() {
        acc[i] += ra[i] * rb[i];
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

/// The Euclidean norm of `v`, accumulated in f64 (in 8 lanes, so that it vectorizes).
pub fn norm(v: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i] as f64 * c[i] as f64;
        }
    }
    for (a, &x) in acc.iter_mut().zip(rest) {
        *a += x as f64 * x as f64;
    }
    acc.iter().sum::<f64>().sqrt()
}

/// Scales every row of `e` to unit Euclidean norm (so that inner product is cosine
/// similarity). Rows whose norm is 0 or not finite are left as they are.
pub fn normalize_rows(e: &mut Embeddings) {
    normalize_rows_in(e.dim, &mut e.data);
}

/// [`normalize_rows`] on a row-major slice of `dim`-dimensional rows.
pub fn normalize_rows_in(dim: usize, data: &mut [f32]) {
    if dim == 0 {
        return;
    }
    for row in data.chunks_exact_mut(dim) {
        let n = norm(row);
        if n > 0.0 && n.is_finite() {
            for x in row.iter_mut() {
                *x = (*x as f64 / n) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foil_core::rng::SplitMix64;

    #[test]
    fn dot_matches_f64_within_its_error_bound() {
        let mut rng = SplitMix64::new(3);
        for n in [0usize, 1, 2, 15, 16, 17, 31, 100, 384, 1000] {
            let a: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
            let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let abs: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            let u = f32::EPSILON as f64 / 2.0;
            let gamma = n as f64 * u / (1.0 - n as f64 * u);
            let got = dot(&a, &b) as f64;
            assert!(
                (got - exact).abs() <= gamma * abs + 1e-30,
                "n={n}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero_rows() {
        let mut e = Embeddings::from_vec(3, vec![3.0, 4.0, 0.0, 0.0, 0.0, 0.0, -1.0, 1.0, 1.0]);
        normalize_rows(&mut e);
        assert_eq!(&e.data[..3], &[0.6, 0.8, 0.0]);
        assert_eq!(&e.data[3..6], &[0.0, 0.0, 0.0]);
        assert!((norm(e.row(2)) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn views_slice_rows() {
        let e = Embeddings::from_vec(2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let v = EmbeddingsView::from(&e);
        assert_eq!(v.len(), 3);
        assert_eq!(v.row(1), &[3.0, 4.0]);
        assert_eq!(v.rows(1..3).row(1), &[5.0, 6.0]);
        assert!(EmbeddingsView::new(0, &[]).is_empty());
    }
}
