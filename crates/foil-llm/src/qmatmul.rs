//! Products of quantized weight matrices with rows of activations, for x86 CPUs with AVX2, FMA
//! and F16C: GGML's formats of 32-value blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), read as stored.
//!
//! A block holds 32 small integers `q` and a scale `d` (and, for Q4_1 / Q5_1, an offset `m`):
//! `w = d · q + m`. Q4_0 and Q5_0 store `q` unsigned with the offset implied, and are read as
//! the signed `q - 8` and `q - 16` with `m = 0`; Q8_0 is signed with `m = 0`. The activations are
//! quantized per row and block as llama.cpp does for these formats (`d_x = max|x| / 127`,
//! `q_x = round(x / d_x)`, `d_x` kept at half precision), so a block's contribution to an
//! output is
//!
//! ```text
//! Σ w·x = d_w·d_x · Σ q_w·q_x  +  m_w · (d_x · Σ q_x)
//! ```
//!
//! an exact integer sum scaled once, plus the offset times the activation block's sum.
//!
//! **Why the weights stay in their own format.** Decoding one token reads every weight once,
//! and on a CPU that is limited by memory bandwidth: a 4-bit block is 20 bytes where the same
//! block as Q8_0 is 34. (Where candle's kernels run instead, 4/5-bit weights are requantized to
//! Q8_0: see `Linear` in llama.rs.)
//!
//! **The kernel.** A tile of up to [`ROWS`] activation rows × [`COLS`] weight rows is computed
//! at once, so each weight block is unpacked once per tile instead of once per activation row.
//! `maddubs` multiplies unsigned by signed bytes into 16-bit pair sums (Q4_1 / Q5_1 `q_w` are
//! unsigned already; signed ones use the sign trick `maddubs(|q_w|, sign(q_x, q_w))`); `madd` with
//! ones widens them to eight 32-bit lanes of four products each. No pair can overflow:
//! `2 · 128 · 127 < 2¹⁵`.
//!
//! **Memory and threads.** Decoding multiplies one row: each tile's weight rows are read once,
//! from memory, and are too short for the hardware prefetcher to follow, so the first row tile
//! of each column tile prefetches the next column tile's blocks. A call's work is split
//! between the pool's threads by runs of outputs when there are few rows (decoding) and by
//! runs of rows when there are many (a prompt), so that each part is a contiguous piece of
//! the output.
//!
//! **The same bits for every tile shape.** Each output is eight f32 lanes, lane `l` summing
//! products `4l..4l+4` of each block: block by block, `lane += float(isum) · (d_w · d_x)` with
//! one fused multiply-add. The lanes are added in a fixed tree; then, for formats with offsets,
//! the offsets' sum (`Σ_blocks m_w · s_x`, fused multiply-adds in block order) is added. None
//! of this depends on the tile an output falls in, on how many rows are multiplied, or on the
//! threads, so a sequence decoding alone gets the bits it gets in a batch. [`reference`]
//! computes the same arithmetic in scalar code; the tests hold the kernel to it bit for bit.

use std::ops::Range;

use rayon::prelude::*;

/// Values per block.
const BLOCK: usize = 32;
/// Activation rows per tile.
const ROWS: usize = 4;
/// Weight rows (outputs) per tile.
const COLS: usize = 3;

/// The GGML block formats the kernel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
}

impl Format {
    /// Bytes per block of 32 values.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Format::Q8_0 => 34,
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q5_0 => 22,
            Format::Q5_1 => 24,
        }
    }

    /// Whether blocks store an offset `m` after `d` (else the values are signed).
    const fn has_offsets(self) -> bool {
        matches!(self, Format::Q4_1 | Format::Q5_1)
    }

    /// What is taken from the stored unsigned `q` to make it signed: 8 for Q4_0, 16 for Q5_0.
    const fn bias(self) -> i8 {
        match self {
            Format::Q4_0 => 8,
            Format::Q5_0 => 16,
            _ => 0,
        }
    }

    /// Where a block's 16 bytes of nibbles start (4/5-bit formats) and, for 5-bit formats,
    /// its 4 bytes of fifth bits.
    const fn layout(self) -> (usize, Option<usize>) {
        match self {
            Format::Q8_0 => (2, None),
            Format::Q4_0 => (2, None),
            Format::Q4_1 => (4, None),
            Format::Q5_0 => (6, Some(2)),
            Format::Q5_1 => (8, Some(4)),
        }
    }
}

/// A `[out, input]` matrix of GGML blocks, row after row, as the file stores it.
pub(crate) struct QMatrix {
    pub format: Format,
    pub out: usize,
    blocks: usize,
    bytes: Vec<u8>,
}

/// Rows of activations quantized per block of 32 values.
pub(crate) struct Q8Rows {
    rows: usize,
    quants: Vec<i8>,
    /// `d_x` per block.
    scales: Vec<f32>,
    /// `d_x · Σ q_x` per block, for the weights' offsets.
    sums: Vec<f32>,
}

/// Whether this CPU runs the kernel (AVX2, FMA and F16C).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

impl QMatrix {
    /// Takes the GGML bytes of an `[out, input]` matrix; `input` must be a multiple of 32.
    pub(crate) fn new(format: Format, bytes: Vec<u8>, out: usize, input: usize) -> Option<Self> {
        let blocks = input / BLOCK;
        if !input.is_multiple_of(BLOCK) || bytes.len() != out * blocks * format.block_bytes() {
            return None;
        }
        Some(QMatrix {
            format,
            out,
            blocks,
            bytes,
        })
    }

    /// Values per row.
    pub(crate) fn input(&self) -> usize {
        self.blocks * BLOCK
    }

    /// Appends row `r` dequantized, with candle's arithmetic (`q · d`, plus `m` for formats
    /// with offsets), so the same bits as candle's dequantization.
    pub(crate) fn dequantize_row(&self, r: usize, out: &mut Vec<f32>) {
        for b in 0..self.blocks {
            let (q, d, m) = self.unpack(r, b);
            if self.format.has_offsets() {
                out.extend(q.iter().map(|&q| q as f32 * d + m));
            } else {
                out.extend(q.iter().map(|&q| q as f32 * d));
            }
        }
    }

    /// Block `b` of row `r`.
    fn block(&self, r: usize, b: usize) -> &[u8] {
        let n = self.format.block_bytes();
        &self.bytes[(r * self.blocks + b) * n..][..n]
    }

    /// Block `b` of row `r` unpacked: its 32 integers, `d` and `m` (zero for Q8_0).
    fn unpack(&self, r: usize, b: usize) -> ([i32; BLOCK], f32, f32) {
        let blk = self.block(r, b);
        let d = f16_at(blk, 0);
        let mut q = [0i32; BLOCK];
        let (qs, qh) = self.format.layout();
        if self.format == Format::Q8_0 {
            for (q, &v) in q.iter_mut().zip(&blk[qs..]) {
                *q = v as i8 as i32;
            }
            return (q, d, 0.0);
        }
        let high = qh.map_or(0, |at| {
            u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]])
        });
        for j in 0..16 {
            q[j] = (blk[qs + j] & 0x0F) as i32;
            q[j + 16] = (blk[qs + j] >> 4) as i32;
        }
        if qh.is_some() {
            for (j, q) in q.iter_mut().enumerate() {
                *q |= (((high >> j) & 1) << 4) as i32;
            }
        }
        if self.format.has_offsets() {
            (q, d, f16_at(blk, 2))
        } else {
            (q.map(|v| v - self.format.bias() as i32), d, 0.0)
        }
    }

    /// `x` (`m` rows of `32 · blocks` values) times this matrix transposed: `m` rows of `out`,
    /// with the output rows split over the rayon pool.
    pub(crate) fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let acts = Q8Rows::quantize(x, m, self.blocks);
        // Split where a part is worth a task (a few microseconds of work), into enough parts to
        // balance the pool.
        let threads = rayon::current_num_threads().max(1);
        let macs = m * self.out * self.blocks * BLOCK;
        let parts = if macs < 1 << 18 { 1 } else { 2 * threads };
        if parts > 1 && m >= ROWS * parts {
            // Many rows (a prompt): each part takes a run of whole rows (multiples of ROWS),
            // which is a contiguous piece of the output.
            let mut y = vec![0f32; m * self.out];
            let per_part = m.div_ceil(parts).next_multiple_of(ROWS);
            y.par_chunks_mut(per_part * self.out)
                .enumerate()
                .for_each(|(p, y)| {
                    let rows = p * per_part..p * per_part + y.len() / self.out;
                    self.multiply(&acts, rows, 0..self.out, y);
                });
            return y;
        }
        // Few rows (decoding): each part takes a run of outputs, multiples of COLS so that
        // only the last part has a narrower tile.
        let per_part = self.out.div_ceil(parts).next_multiple_of(COLS);
        let blocks: Vec<Vec<f32>> = (0..self.out.div_ceil(per_part))
            .into_par_iter()
            .map(|p| {
                let cols = p * per_part..self.out.min((p + 1) * per_part);
                let mut y = vec![0f32; m * cols.len()];
                self.multiply(&acts, 0..m, cols, &mut y);
                y
            })
            .collect();
        if blocks.len() == 1 {
            return blocks.into_iter().next().unwrap_or_default();
        }
        let mut y = Vec::with_capacity(m * self.out);
        for r in 0..m {
            for part in &blocks {
                let n = part.len() / m;
                y.extend_from_slice(&part[r * n..(r + 1) * n]);
            }
        }
        y
    }

    /// Outputs `cols` of activation rows `rows` into `y` (`[rows.len()][cols.len()]`).
    fn multiply(&self, acts: &Q8Rows, rows: Range<usize>, cols: Range<usize>, y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { avx2::multiply(self, acts, rows, cols, y) };
            return;
        }
        let n = cols.len();
        for (i, r) in rows.enumerate() {
            for (j, c) in cols.clone().enumerate() {
                y[i * n + j] = reference(self, acts, r, c);
            }
        }
    }
}

impl Q8Rows {
    /// Quantizes `m` rows of `32 · blocks` values as llama.cpp's `quantize_row_q8_0` does:
    /// per block `d = max|x| / 127`, `q = round(x / d)` (ties to even), and `d` rounded to f16.
    pub(crate) fn quantize(x: &[f32], m: usize, blocks: usize) -> Self {
        debug_assert_eq!(x.len(), m * blocks * BLOCK);
        let mut quants = vec![0i8; x.len()];
        let mut scales = Vec::with_capacity(m * blocks);
        let mut sums = Vec::with_capacity(m * blocks);
        for (q, x) in quants.chunks_exact_mut(BLOCK).zip(x.chunks_exact(BLOCK)) {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (q, v) in q.iter_mut().zip(x) {
                *q = round_ties_even(v * id) as i8;
            }
            let d = half::f16::from_f32(d).to_f32();
            scales.push(d);
            sums.push(q.iter().map(|&v| v as i32).sum::<i32>() as f32 * d);
        }
        Q8Rows {
            rows: m,
            quants,
            scales,
            sums,
        }
    }
}

/// `v` rounded to the nearest integer, ties to even, for `|v| < 2²²`: adding and taking away
/// 1.5 · 2²³ leaves no fraction bits, so the addition rounds as the FPU does (to even). It
/// gives `f32::round_ties_even`'s bits, but compiles to two vector additions instead of a call.
#[inline]
fn round_ties_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Output `c` of activation row `r`, in scalar code with the kernel's exact arithmetic (the
/// eight lanes, the fused multiply-adds, the order of the final sums).
fn reference(w: &QMatrix, a: &Q8Rows, r: usize, c: usize) -> f32 {
    let nb = w.blocks;
    let mut lanes = [0f32; 8];
    let mut offsets = 0f32;
    for b in 0..nb {
        let (wq, dw, mw) = w.unpack(c, b);
        let aq = &a.quants[(r * nb + b) * BLOCK..][..BLOCK];
        let d = dw * a.scales[r * nb + b];
        for (l, lane) in lanes.iter_mut().enumerate() {
            let isum: i32 = (4 * l..4 * l + 4).map(|k| wq[k] * aq[k] as i32).sum();
            *lane = (isum as f32).mul_add(d, *lane);
        }
        offsets = mw.mul_add(a.sums[r * nb + b], offsets);
    }
    let h: [f32; 4] = std::array::from_fn(|i| lanes[i] + lanes[i + 4]);
    let sum = (h[0] + h[2]) + (h[1] + h[3]);
    if w.format.has_offsets() {
        sum + offsets
    } else {
        sum
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Format, Q8Rows, QMatrix, Range, BLOCK, COLS, ROWS};
    use std::arch::x86_64::*;

    /// See [`QMatrix::multiply`].
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn multiply(
        w: &QMatrix,
        a: &Q8Rows,
        rows: Range<usize>,
        cols: Range<usize>,
        y: &mut [f32],
    ) {
        match w.format {
            Format::Q8_0 => tiles::<Q8_0>(w, a, rows, cols, y),
            Format::Q4_0 => tiles::<Q4<false>>(w, a, rows, cols, y),
            Format::Q4_1 => tiles::<Q4<true>>(w, a, rows, cols, y),
            Format::Q5_0 => tiles::<Q5<false>>(w, a, rows, cols, y),
            Format::Q5_1 => tiles::<Q5<true>>(w, a, rows, cols, y),
        }
    }

    /// How a format's block becomes bytes for `maddubs`; the layout comes from [`Format`].
    trait Unpack {
        const FORMAT: Format;
        /// Whether `q` is signed (the sign trick) or unsigned with an offset `m`.
        const SIGNED: bool = !Self::FORMAT.has_offsets();
        /// The 32 integers of the block at `p`: signed bytes, or unsigned ones.
        unsafe fn quants(p: *const u8) -> __m256i;
        /// `d` and `m` of the block at `p`.
        #[inline(always)]
        unsafe fn scales(p: *const u8) -> (f32, f32) {
            let m = if Self::SIGNED { 0.0 } else { f16(p.add(2)) };
            (f16(p), m)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16(p: *const u8) -> f32 {
        let bits = std::ptr::read_unaligned(p.cast::<u16>());
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// The 32 nibbles of a 4-bit block: low nibbles are values 0..16, high ones 16..32.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let lo = _mm_loadu_si128(p.cast());
        let both = _mm256_set_m128i(_mm_srli_epi16(lo, 4), lo);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    /// 0x10 in each byte `j` whose bit `j` of the little-endian u32 at `p` is set.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fifth_bits(p: *const u8) -> __m256i {
        let bits = std::ptr::read_unaligned(p.cast::<u32>());
        // Byte j gets byte j / 8 of the bits, then only bit j % 8 is kept.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_setr_epi64x(
                0,
                0x0101_0101_0101_0101,
                0x0202_0202_0202_0202,
                0x0303_0303_0303_0303,
            ),
        );
        let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }

    struct Q8_0;
    impl Unpack for Q8_0 {
        const FORMAT: Format = Format::Q8_0;
        #[inline(always)]
        unsafe fn quants(p: *const u8) -> __m256i {
            _mm256_loadu_si256(p.add(Self::FORMAT.layout().0).cast())
        }
    }

    /// Q4_0 (`OFFSET = false`) and Q4_1.
    struct Q4<const OFFSET: bool>;
    impl<const OFFSET: bool> Unpack for Q4<OFFSET> {
        const FORMAT: Format = if OFFSET { Format::Q4_1 } else { Format::Q4_0 };
        #[inline(always)]
        unsafe fn quants(p: *const u8) -> __m256i {
            let q = nibbles(p.add(Self::FORMAT.layout().0));
            _mm256_sub_epi8(q, _mm256_set1_epi8(Self::FORMAT.bias()))
        }
    }

    /// Q5_0 (`OFFSET = false`) and Q5_1.
    struct Q5<const OFFSET: bool>;
    impl<const OFFSET: bool> Unpack for Q5<OFFSET> {
        const FORMAT: Format = if OFFSET { Format::Q5_1 } else { Format::Q5_0 };
        #[inline(always)]
        unsafe fn quants(p: *const u8) -> __m256i {
            let (qs, qh) = Self::FORMAT.layout();
            let q = _mm256_or_si256(nibbles(p.add(qs)), fifth_bits(p.add(qh.unwrap_or(0))));
            _mm256_sub_epi8(q, _mm256_set1_epi8(Self::FORMAT.bias()))
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tiles<U: Unpack>(
        w: &QMatrix,
        a: &Q8Rows,
        rows: Range<usize>,
        cols: Range<usize>,
        y: &mut [f32],
    ) {
        assert!(rows.end <= a.rows && cols.end <= w.out);
        let n = cols.len();
        let mut c = cols.start;
        while c < cols.end {
            let nc = COLS.min(cols.end - c);
            let mut r = rows.start;
            while r < rows.end {
                let nr = ROWS.min(rows.end - r);
                let at = (r - rows.start) * n + (c - cols.start);
                // The first row tile reads the weights from memory and prefetches the next.
                let first = r == rows.start;
                // Every (nr, nc) gets its own unrolled copy; all share the per-output arithmetic.
                match (nr, nc) {
                    (4, 3) => tile::<U, 4, 3>(w, a, r, c, y, at, n, first),
                    (4, 2) => tile::<U, 4, 2>(w, a, r, c, y, at, n, first),
                    (4, 1) => tile::<U, 4, 1>(w, a, r, c, y, at, n, first),
                    (3, 3) => tile::<U, 3, 3>(w, a, r, c, y, at, n, first),
                    (3, 2) => tile::<U, 3, 2>(w, a, r, c, y, at, n, first),
                    (3, 1) => tile::<U, 3, 1>(w, a, r, c, y, at, n, first),
                    (2, 3) => tile::<U, 2, 3>(w, a, r, c, y, at, n, first),
                    (2, 2) => tile::<U, 2, 2>(w, a, r, c, y, at, n, first),
                    (2, 1) => tile::<U, 2, 1>(w, a, r, c, y, at, n, first),
                    (1, 3) => tile::<U, 1, 3>(w, a, r, c, y, at, n, first),
                    (1, 2) => tile::<U, 1, 2>(w, a, r, c, y, at, n, first),
                    _ => tile::<U, 1, 1>(w, a, r, c, y, at, n, first),
                }
                r += nr;
            }
            c += nc;
        }
    }

    /// Activation rows `r0..r0 + R` times weight rows `c0..c0 + C`, written to
    /// `y[at + i · stride + j]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<U: Unpack, const R: usize, const C: usize>(
        w: &QMatrix,
        a: &Q8Rows,
        r0: usize,
        c0: usize,
        y: &mut [f32],
        at: usize,
        stride: usize,
        prefetch: bool,
    ) {
        let nb = w.blocks;
        let bb = w.format.block_bytes();
        assert!((r0 + R) * nb <= a.scales.len() && (c0 + C) * nb * bb <= w.bytes.len());
        assert!(at + (R - 1) * stride + C <= y.len());
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        // SAFETY (all pointer arithmetic below): rows c0..c0 + C of the matrix and rows
        // r0..r0 + R of the activations are inside their buffers (asserted above).
        let wp = |j: usize, b: usize| w.bytes.as_ptr().add(((c0 + j) * nb + b) * bb);
        let aq = a.quants.as_ptr();
        for b in 0..nb {
            let mut q = [_mm256_setzero_si256(); C];
            let mut sign = [_mm256_setzero_si256(); C];
            let mut dw = [_mm256_setzero_ps(); C];
            // The first row tile of a column tile reads its weights from memory: it asks for
            // the next column tile's blocks ahead of time. Each tile's rows are too short for
            // the hardware prefetcher to learn their streams, and a decoding row spends little
            // time per block (+25% decoding speed for Qwen2.5-0.5B on an AVX2 EPYC).
            if prefetch {
                for j in 0..C {
                    let ahead = w.bytes.as_ptr().wrapping_add(((c0 + C + j) * nb + b) * bb);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
            }
            for j in 0..C {
                let p = wp(j, b);
                let v = U::quants(p);
                if U::SIGNED {
                    sign[j] = v;
                    q[j] = _mm256_sign_epi8(v, v);
                } else {
                    q[j] = v;
                }
                dw[j] = _mm256_set1_ps(U::scales(p).0);
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_si256(aq.add(((r0 + i) * nb + b) * BLOCK).cast());
                let dx = _mm256_set1_ps(*a.scales.get_unchecked((r0 + i) * nb + b));
                for (j, acc) in acc.iter_mut().enumerate() {
                    // Q8_0: the activations take the weights' signs, `q` holds |q_w|.
                    let x = if U::SIGNED {
                        _mm256_sign_epi8(x, sign[j])
                    } else {
                        x
                    };
                    let p16 = _mm256_maddubs_epi16(q[j], x);
                    let sum = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                    *acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(dw[j], dx), *acc);
                }
            }
        }
        // The offsets' sums: lane j of `offsets[i]` is output (i, j)'s, one fused multiply-add
        // per block in block order.
        let mut offsets = [_mm_setzero_ps(); R];
        if !U::SIGNED {
            for b in 0..nb {
                // The C offsets as one vector, converted from half precision together (building
                // it from single floats stored to memory stalls on store forwarding).
                let mut bits = _mm_setzero_si128();
                for j in 0..C {
                    let v = std::ptr::read_unaligned(wp(j, b).add(2).cast::<u16>());
                    bits = match j {
                        0 => _mm_insert_epi16::<0>(bits, v as i32),
                        1 => _mm_insert_epi16::<1>(bits, v as i32),
                        2 => _mm_insert_epi16::<2>(bits, v as i32),
                        _ => _mm_insert_epi16::<3>(bits, v as i32),
                    };
                }
                let m = _mm_cvtph_ps(bits);
                for (i, o) in offsets.iter_mut().enumerate() {
                    let s = _mm_set1_ps(*a.sums.get_unchecked((r0 + i) * nb + b));
                    *o = _mm_fmadd_ps(m, s, *o);
                }
            }
        }
        for i in 0..R {
            let mut off = [0f32; 4];
            _mm_storeu_ps(off.as_mut_ptr(), offsets[i]);
            for j in 0..C {
                let v = hsum(acc[i][j]);
                *y.get_unchecked_mut(at + i * stride + j) = if U::SIGNED { v } else { v + off[j] };
            }
        }
    }

    /// `(l0 + l4) + (l2 + l6)` plus `(l1 + l5) + (l3 + l7)`: the order [`super::reference`] uses.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMATS: [Format; 5] = [
        Format::Q8_0,
        Format::Q4_0,
        Format::Q4_1,
        Format::Q5_0,
        Format::Q5_1,
    ];

    /// Deterministic bytes for an `out × input` matrix: every byte value appears in the
    /// quants (-128 included for Q8_0) and every bit pattern in the fifth bits.
    fn matrix(format: Format, out: usize, input: usize, seed: u32) -> QMatrix {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            s
        };
        let mut bytes = Vec::new();
        for _ in 0..out * input / BLOCK {
            let mut block = vec![0u8; format.block_bytes()];
            for v in block.iter_mut() {
                *v = (next() >> 24) as u8;
            }
            let d = half::f16::from_f32(0.001 + (next() >> 8) as f32 / (1u32 << 24) as f32 * 0.01);
            block[..2].copy_from_slice(&d.to_le_bytes());
            if matches!(format, Format::Q4_1 | Format::Q5_1) {
                let m =
                    half::f16::from_f32(-0.05 + (next() >> 8) as f32 / (1u32 << 24) as f32 * 0.1);
                block[2..4].copy_from_slice(&m.to_le_bytes());
            }
            bytes.extend_from_slice(&block);
        }
        QMatrix::new(format, bytes, out, input).unwrap()
    }

    fn activations(m: usize, input: usize) -> Vec<f32> {
        (0..m * input)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 100.0)
            .collect()
    }

    #[test]
    fn every_format_and_tile_shape_gives_the_reference_bits() {
        // 13 outputs and up to 9 rows leave narrower tiles at both edges.
        let (out, input) = (13, 96);
        for format in FORMATS {
            let w = matrix(format, out, input, 1);
            for m in [1, 2, 3, 4, 5, 9] {
                let x = activations(m, input);
                let acts = Q8Rows::quantize(&x, m, input / BLOCK);
                let y = w.forward(&x, m);
                for r in 0..m {
                    for c in 0..out {
                        let want = reference(&w, &acts, r, c);
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
        let (out, input) = (200, 576);
        // 7 rows: the outputs are split between threads; 37: the rows are.
        for m in [7, 37] {
            for format in FORMATS {
                let w = matrix(format, out, input, 2);
                let x = activations(m, input);
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .unwrap();
                let all = pool.install(|| w.forward(&x, m));
                for r in 0..m {
                    let one = w.forward(&x[r * input..(r + 1) * input], 1);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&one),
                        bits(&all[r * out..(r + 1) * out]),
                        "{format:?} m={m} row {r}"
                    );
                }
            }
        }
    }

    /// The unpacking the kernel's arithmetic rests on, checked against candle's dequantization
    /// of the same bytes.
    #[test]
    fn blocks_unpack_as_candle_dequantizes_them() {
        use candle_core::quantized::{GgmlDType, QStorage, QTensor};
        let (out, input) = (3, 64);
        for (format, dtype) in FORMATS.into_iter().zip([
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
        ]) {
            let w = matrix(format, out, input, 4);
            let storage = QStorage::from_data(
                std::borrow::Cow::Borrowed(&w.bytes),
                &candle_core::Device::Cpu,
                dtype,
            )
            .unwrap();
            let t = QTensor::new(storage, (out, input)).unwrap();
            let want: Vec<f32> = t
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for r in 0..out {
                let mut row = Vec::new();
                w.dequantize_row(r, &mut row);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&row),
                    bits(&want[r * input..(r + 1) * input]),
                    "{format:?} row {r}"
                );
                for b in 0..input / BLOCK {
                    let (q, d, m) = w.unpack(r, b);
                    for k in 0..BLOCK {
                        let got = q[k] as f32 * d + m;
                        let expect = want[r * input + b * BLOCK + k];
                        assert!(
                            (got - expect).abs() <= 1e-6 * (1.0 + expect.abs()),
                            "{format:?} r={r} b={b} k={k}: {got} vs {expect}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn products_are_close_to_float_arithmetic() {
        let (out, input) = (8, 256);
        for format in FORMATS {
            let w = matrix(format, out, input, 3);
            let x = activations(2, input);
            let y = w.forward(&x, 2);
            for r in 0..2 {
                for c in 0..out {
                    let (mut exact, mut bound) = (0f64, 0f64);
                    for b in 0..input / BLOCK {
                        let (q, d, m) = w.unpack(c, b);
                        let xs = &x[r * input + b * BLOCK..][..BLOCK];
                        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                        for k in 0..BLOCK {
                            let wk = q[k] as f64 * d as f64 + m as f64;
                            exact += wk * xs[k] as f64;
                            // Each activation moves by at most half a step (plus d_x's f16 rounding).
                            bound += wk.abs() * amax / 127.0 * 0.51;
                        }
                    }
                    let got = y[r * out + c] as f64;
                    assert!(
                        (got - exact).abs() <= bound + 1e-4,
                        "{format:?} r={r} c={c}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn rounding_matches_the_standard_library() {
        for i in -2_000_000..2_000_000 {
            let v = i as f32 / 7_919.0;
            assert_eq!(round_ties_even(v), v.round_ties_even(), "{v}");
        }
        for v in [0.5f32, 1.5, 2.5, -0.5, -1.5, 126.5, -127.5, 0.0] {
            assert_eq!(round_ties_even(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn quantization_follows_llama_cpp() {
        // The largest magnitude 127 makes the step exactly 1.
        let mut x = vec![0f32; 64];
        x[..5].copy_from_slice(&[127.0, -50.0, 0.5, 1.5, -2.5]);
        let a = Q8Rows::quantize(&x, 1, 2);
        // Halves round to even, as _mm256_round_ps does in llama.cpp's AVX2 code.
        assert_eq!(&a.quants[..5], &[127, -50, 0, 2, -2]);
        assert_eq!(a.scales[0], 1.0);
        assert_eq!(a.sums[0], 77.0);
        // An all-zero block quantizes to zeros with scale zero.
        assert!(a.quants[32..].iter().all(|&q| q == 0));
        assert_eq!((a.scales[1], a.sums[1]), (0.0, 0.0));
    }
}
