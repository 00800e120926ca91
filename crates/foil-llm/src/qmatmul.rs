//! Products of quantized weight matrices with rows of activations, for x86 CPUs with AVX2, FMA
//! and F16C: GGML's formats of 32-value blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) and the K-quants'
//! super-blocks of 256 values (Q4_K, Q5_K, Q6_K), read as stored.
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
//! A K-quant super-block has one float `d` (and `dmin`) and a small integer scale `sc` (and
//! min `m`) per 32 values (Q4_K, Q5_K: `w = d·sc·q - dmin·m`) or per 16 (Q6_K: `w = d·sc·(q -
//! 32)`). Its activations are quantized per 256 values, as llama.cpp's Q8_K, so the integer
//! scales can stay inside the integer sum:
//!
//! ```text
//! Σ w·x = d·d_x · Σ_sub sc · Σ q_w·q_x  -  dmin·d_x · Σ_sub m · Σ q_x
//! ```
//!
//! summed exactly in 32-bit integers over the super-block and rounded once (Q6_K's `-32` is a
//! correction of the same form, from the activations' sums per 16 values).
//!
//! **Why the weights stay in their own format.** Decoding one token reads every weight once,
//! and on a CPU that is limited by memory bandwidth: a 4-bit block is 20 bytes where the same
//! block as Q8_0 is 34. (Where candle's kernels run instead, 4/5-bit weights are requantized to
//! Q8_0: see `Linear` in llama.rs.)
//!
//! **The kernel.** A tile of up to [`ROWS`] activation rows × [`COLS`] weight rows (2 for
//! K-quants) is computed at once, so each weight block is unpacked once per tile instead of
//! once per activation row; when there are several row tiles (many generated rows, or a
//! K-quant prompt), a column tile's
//! 32-value blocks are unpacked once, into a panel that all its row tiles read.
//! `maddubs` multiplies unsigned by signed bytes into 16-bit pair sums (Q4_1 / Q5_1 `q_w` are
//! unsigned already; signed ones use the sign trick `maddubs(|q_w|, sign(q_x, q_w))`); `madd` with
//! ones widens them to eight 32-bit lanes of four products each. No pair can overflow:
//! `2 · 128 · 127 < 2¹⁵`. K-quants' stored values are unsigned (at most 63), and `madd` takes
//! the 16-bit scales instead of ones: a lane's sum over a super-block stays below
//! `8 · 2 · 2 · 63 · 127 · 128 < 2²⁵`.
//!
//! **Prompt rows** of the 32-value formats do not come here: [`QMatrix::forward_prompt`] sends
//! them to [`prompt`], which multiplies them in float32 against weights dequantized once per
//! call (1.1–1.5× faster for hundreds of rows); generated rows, and K-quants' rows of both
//! kinds, take this kernel. [`QMatrix::forward_rows`] splits a call that mixes the two.
//!
//! **Memory and threads.** Decoding multiplies one row: each tile's weight rows are read once,
//! from memory, and are too short for the hardware prefetcher to follow, so the first row tile
//! of each column tile prefetches the next column tile's blocks. A call's work is split
//! between the pool's threads by runs of outputs when there are few rows (decoding) and by
//! runs of rows when there are many, so that each part is a contiguous piece of
//! the output.
//!
//! **The same bits for every tile shape.** Each output is eight f32 lanes, lane `l` summing
//! products `4l..4l+4` of each block: block by block, `lane += float(isum) · (d_w · d_x)` with
//! one fused multiply-add. The lanes are added in a fixed tree; then, for formats with offsets,
//! the offsets' sum (`Σ_blocks m_w · s_x`, fused multiply-adds in block order) is added. For
//! K-quants a lane sums its products over each super-block in integers, then takes one fused
//! multiply-add per super-block (two with mins; see [`reference_k`]). None
//! of this depends on the tile an output falls in, on how many rows are multiplied, or on the
//! threads, so a sequence decoding alone gets the bits it gets in a batch. [`reference`](fn@reference)
//! computes the same arithmetic in scalar code; the tests hold the kernel to it bit for bit.

use std::ops::Range;

use crate::team;

mod prompt;

/// Values per block (and per sub-block of a K-quant super-block).
const BLOCK: usize = 32;
/// Values per K-quant super-block.
const SUPER: usize = 256;
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
    Q4K,
    Q5K,
    Q6K,
}

impl Format {
    /// Values per stored block: 32, or 256 for a K-quant super-block.
    pub(crate) const fn values(self) -> usize {
        if self.is_k() {
            SUPER
        } else {
            BLOCK
        }
    }

    /// Bytes per stored block.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Format::Q8_0 => 34,
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q5_0 => 22,
            Format::Q5_1 => 24,
            Format::Q4K => 144,
            Format::Q5K => 176,
            Format::Q6K => 210,
        }
    }

    /// Bytes of a row of `input` values.
    pub(crate) const fn row_bytes(self, input: usize) -> usize {
        input / self.values() * self.block_bytes()
    }

    /// Whether blocks are K-quant super-blocks: 8 sub-blocks of 32 values with their own
    /// scales, and activations quantized per 256 values (llama.cpp's Q8_K).
    const fn is_k(self) -> bool {
        matches!(self, Format::Q4K | Format::Q5K | Format::Q6K)
    }

    /// Whether values are unsigned with an offset `m` per (sub-)block (else they are signed).
    const fn has_offsets(self) -> bool {
        matches!(
            self,
            Format::Q4_1 | Format::Q5_1 | Format::Q4K | Format::Q5K
        )
    }

    /// What is taken from the stored unsigned `q` to make it signed: 8 for Q4_0, 16 for Q5_0,
    /// 32 for Q6_K.
    const fn bias(self) -> i8 {
        match self {
            Format::Q4_0 => 8,
            Format::Q5_0 => 16,
            Format::Q6K => 32,
            _ => 0,
        }
    }

    /// Where a 32-value block's 16 bytes of nibbles start (4/5-bit formats) and, for 5-bit
    /// formats, its 4 bytes of fifth bits. For a K-quant super-block: where its 128 bytes of
    /// nibbles start and where its bytes of high bits do (32 of fifth bits for Q5_K, 64 of
    /// fifth and sixth bits for Q6_K).
    const fn layout(self) -> (usize, Option<usize>) {
        match self {
            Format::Q8_0 => (2, None),
            Format::Q4_0 => (2, None),
            Format::Q4_1 => (4, None),
            Format::Q5_0 => (6, Some(2)),
            Format::Q5_1 => (8, Some(4)),
            Format::Q4K => (16, None),
            Format::Q5K => (48, Some(16)),
            Format::Q6K => (0, Some(128)),
        }
    }
}

/// Q4_K / Q5_K: the 6-bit scale and min of each of a super-block's 8 sub-blocks, packed in 12
/// bytes. Sub-block `k < 4` has its scale in the low 6 bits of byte `k` and its min in those of
/// byte `k + 4`; sub-block `k ≥ 4` has the low 4 bits of each in byte `k + 4` (scale low, min
/// high) and their top 2 bits in the top bits of bytes `k - 4` (scale) and `k` (min).
fn k_scale_min(packed: &[u8], k: usize) -> (u8, u8) {
    if k < 4 {
        (packed[k] & 63, packed[k + 4] & 63)
    } else {
        (
            (packed[k + 4] & 0x0F) | ((packed[k - 4] >> 6) << 4),
            (packed[k + 4] >> 4) | ((packed[k] >> 6) << 4),
        )
    }
}

/// The same as [`k_scale_min`] for all 8 sub-blocks at once, four bytes at a time: the bytes of
/// words 0 and 1 (little-endian) are the scales, those of words 2 and 3 the mins.
#[inline(always)]
fn k_scales_mins(packed: &[u8]) -> [u32; 4] {
    let word =
        |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (w0, w1, w2) = (word(0), word(4), word(8));
    const LOW6: u32 = 0x3F3F_3F3F;
    const LOW4: u32 = 0x0F0F_0F0F;
    const TOP2: u32 = 0x0303_0303;
    let scales_lo = w0 & LOW6;
    let scales_hi = (w2 & LOW4) | (((w0 >> 6) & TOP2) << 4);
    let mins_lo = w1 & LOW6;
    let mins_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & TOP2) << 4);
    [scales_lo, scales_hi, mins_lo, mins_hi]
}

/// A `[out, input]` matrix of GGML blocks, row after row, as the file stores it.
pub(crate) struct QMatrix {
    pub format: Format,
    pub out: usize,
    /// 32-value blocks per row.
    blocks: usize,
    bytes: Vec<u8>,
}

/// One 32-value block of a matrix unpacked: `w_k = q_k · d[k / 16] + m`.
struct Unpacked {
    q: [i32; BLOCK],
    /// The scale of values 0..16 and of values 16..32 (they differ only for Q6_K).
    d: [f32; 2],
    /// The offset (zero for signed formats).
    m: f32,
}

/// Rows of activations quantized per block of 32 values (or, for K-quant weights, per 256).
pub(crate) struct Q8Rows {
    rows: usize,
    quants: Vec<i8>,
    /// `d_x` per 32-value block.
    scales: Vec<f32>,
    /// `d_x · Σ q_x` per 32-value block, for the weights' offsets (32-value formats).
    sums: Vec<f32>,
    /// `Σ q_x` per 16 values, for the K-quants' mins and Q6_K's bias.
    bsums: Vec<i16>,
}

/// A K-quant sub-block as stored: `w_t = d · sc[t / 16] · q_t - dmin · m` (Q4_K, Q5_K), or
/// `d · sc[t / 16] · (q_t - 32)` (Q6_K).
struct KParts {
    /// The unsigned stored integers.
    q: [i32; BLOCK],
    /// The integer scales of values 0..16 and 16..32 (equal but for Q6_K).
    sc: [i32; 2],
    /// The integer min (Q4_K, Q5_K).
    m: i32,
    d: f32,
    dmin: f32,
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
    /// Takes the GGML bytes of an `[out, input]` matrix; `input` must be a multiple of the
    /// format's block (32 values, 256 for K-quants).
    pub(crate) fn new(format: Format, bytes: Vec<u8>, out: usize, input: usize) -> Option<Self> {
        if !input.is_multiple_of(format.values()) || bytes.len() != out * format.row_bytes(input) {
            return None;
        }
        Some(QMatrix {
            format,
            out,
            blocks: input / BLOCK,
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
            let u = self.unpack(r, b);
            let w = (0..BLOCK).map(|k| u.q[k] as f32 * u.d[k / 16]);
            if self.format.has_offsets() {
                out.extend(w.map(|w| w + u.m));
            } else {
                out.extend(w);
            }
        }
    }

    /// The stored block holding 32-value block `b` of row `r`, and `b`'s place in it.
    fn stored(&self, r: usize, b: usize) -> (&[u8], usize) {
        let (n, subs) = (self.format.block_bytes(), self.format.values() / BLOCK);
        let at = r * self.blocks / subs + b / subs;
        (&self.bytes[at * n..][..n], b % subs)
    }

    /// Block `b` of row `r` unpacked.
    fn unpack(&self, r: usize, b: usize) -> Unpacked {
        let (blk, _) = self.stored(r, b);
        let (qs, qh) = self.format.layout();
        let mut q = [0i32; BLOCK];
        let (d, m) = match self.format {
            Format::Q8_0 => {
                for (q, &v) in q.iter_mut().zip(&blk[qs..]) {
                    *q = v as i8 as i32;
                }
                let d = f16_at(blk, 0);
                ([d, d], 0.0)
            }
            Format::Q4_0 | Format::Q4_1 | Format::Q5_0 | Format::Q5_1 => {
                for j in 0..16 {
                    q[j] = (blk[qs + j] & 0x0F) as i32;
                    q[j + 16] = (blk[qs + j] >> 4) as i32;
                }
                if let Some(at) = qh {
                    let high = u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
                    for (j, q) in q.iter_mut().enumerate() {
                        *q |= (((high >> j) & 1) << 4) as i32;
                    }
                }
                let m = if self.format.has_offsets() {
                    f16_at(blk, 2)
                } else {
                    0.0
                };
                let d = f16_at(blk, 0);
                ([d, d], m)
            }
            Format::Q4K | Format::Q5K | Format::Q6K => {
                let p = self.k_parts(r, b);
                q = p.q;
                let m = if self.format.has_offsets() {
                    -(p.dmin * p.m as f32)
                } else {
                    0.0
                };
                (p.sc.map(|sc| p.d * sc as f32), m)
            }
        };
        Unpacked {
            q: q.map(|v| v - self.format.bias() as i32),
            d,
            m,
        }
    }

    /// K-quant block `b` of row `r` as stored.
    fn k_parts(&self, r: usize, b: usize) -> KParts {
        let (blk, k) = self.stored(r, b);
        let (qs, qh) = self.format.layout();
        let mut q = [0i32; BLOCK];
        if self.format == Format::Q6K {
            // Each half of 128 values has 64 bytes of nibbles and 32 of 2-bit pairs: sub-block
            // `k` of a half takes the low nibbles of bytes 32·(k % 2).. (the high ones for
            // k ≥ 2) and the pairs at bits 2k of the half's 32 high bytes.
            let (half, k4) = (k / 4, k % 4);
            let high = qh.unwrap_or(0) + 32 * half;
            for (l, q) in q.iter_mut().enumerate() {
                let low = (blk[qs + 64 * half + 32 * (k4 % 2) + l] >> (4 * (k4 / 2))) & 0x0F;
                *q = (low | (((blk[high + l] >> (2 * k4)) & 3) << 4)) as i32;
            }
            let sc = |i: usize| blk[192 + i] as i8 as i32;
            return KParts {
                q,
                sc: [sc(2 * k), sc(2 * k + 1)],
                m: 0,
                d: f16_at(blk, 208),
                dmin: 0.0,
            };
        }
        // Q4_K / Q5_K: sub-blocks 2i and 2i + 1 share 32 bytes of nibbles, low and high; Q5_K's
        // fifth bits of sub-block `k` are bit `k` of 32 bytes.
        for (l, q) in q.iter_mut().enumerate() {
            *q = ((blk[qs + k / 2 * 32 + l] >> (4 * (k % 2))) & 0x0F) as i32;
            if let Some(at) = qh {
                *q |= (((blk[at + l] >> k) & 1) << 4) as i32;
            }
        }
        let (sc, m) = k_scale_min(&blk[4..16], k);
        KParts {
            q,
            sc: [sc as i32; 2],
            m: m as i32,
            d: f16_at(blk, 0),
            dmin: f16_at(blk, 2),
        }
    }

    /// `x` (`m` rows of `32 · blocks` values) times this matrix transposed: `m` rows of `out`,
    /// with the output rows split over the rayon pool.
    pub(crate) fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let acts = if self.format.is_k() {
            Q8Rows::quantize_k(x, m, self.blocks)
        } else {
            Q8Rows::quantize(x, m, self.blocks)
        };
        // Split where a part is worth a task (a few microseconds of work), into enough parts to
        // balance the pool.
        let threads = team::threads().max(1);
        let macs = m * self.out * self.blocks * BLOCK;
        let parts = if macs < 1 << 18 { 1 } else { 2 * threads };
        if parts > 1 && m >= ROWS * parts {
            // Many rows (a large batch, a K-quant prompt): each part takes a run of whole rows (multiples of ROWS),
            // which is a contiguous piece of the output.
            let mut y = vec![0f32; m * self.out];
            let per_part = m.div_ceil(parts).next_multiple_of(ROWS);
            team::for_each_chunk_mut(&mut y, per_part * self.out, |p, y| {
                let rows = p * per_part..p * per_part + y.len() / self.out;
                self.multiply(&acts, rows, 0..self.out, y);
            });
            return y;
        }
        // Few rows (decoding): each part takes a run of outputs, multiples of COLS so that
        // only the last part has a narrower tile.
        let per_part = self.out.div_ceil(parts).next_multiple_of(COLS);
        let blocks: Vec<Vec<f32>> = team::map(self.out.div_ceil(per_part), |p| {
            let cols = p * per_part..self.out.min((p + 1) * per_part);
            let mut y = vec![0f32; m * cols.len()];
            self.multiply(&acts, 0..m, cols, &mut y);
            y
        });
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

    /// [`QMatrix::forward`] for rows of prompt tokens: in float32 against dequantized weights
    /// ([`prompt`]) for 32-value block formats, where that is faster for many rows; K-quants
    /// take the int8 kernel. A row's bits do not depend on how many rows are multiplied, but
    /// differ from [`QMatrix::forward`]'s: a token's rows must always take the same one.
    pub(crate) fn forward_prompt(&self, x: &[f32], m: usize) -> Vec<f32> {
        if self.format.is_k() {
            self.forward(x, m)
        } else {
            prompt::forward(self, x, m)
        }
    }

    /// The product of rows of both kinds (`prompt[r]`: row `r` is a prompt token): prompt rows
    /// through [`QMatrix::forward_prompt`], the others through [`QMatrix::forward`], a mixed
    /// call split by kind and joined back in order.
    pub(crate) fn forward_rows(&self, x: &[f32], prompt: &[bool]) -> Vec<f32> {
        let m = prompt.len();
        let prompts = prompt.iter().filter(|&&p| p).count();
        // K-quants multiply both kinds on the int8 kernel, whose rows are independent.
        if prompts == 0 || self.format.is_k() {
            return self.forward(x, m);
        }
        if prompts == m {
            return self.forward_prompt(x, m);
        }
        let input = self.input();
        let (mut xp, mut xg, mut at_p, mut at_g) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (r, (row, &p)) in x.chunks_exact(input).zip(prompt).enumerate() {
            if p {
                xp.extend_from_slice(row);
                at_p.push(r);
            } else {
                xg.extend_from_slice(row);
                at_g.push(r);
            }
        }
        // The prompt rows are written straight into place (a prompt chunk's outputs are the
        // call's largest buffer); the few generated rows are copied in.
        let mut y = vec![0f32; m * self.out];
        prompt::forward_into(self, &xp, &at_p, &mut y);
        let yg = self.forward(&xg, at_g.len());
        for (row, &r) in yg.chunks_exact(self.out).zip(&at_g) {
            y[r * self.out..(r + 1) * self.out].copy_from_slice(row);
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
        // Each block's `d` (before its rounding to f16) and `Σ q`.
        let mut push = |d: f32, sum: i32| {
            let d = half::f16::from_f32(d).to_f32();
            scales.push(d);
            sums.push(sum as f32 * d);
        };
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { avx2::quantize(x, &mut quants, &mut push) };
        } else {
            quantize_blocks(x, &mut quants, &mut push);
        }
        #[cfg(not(target_arch = "x86_64"))]
        quantize_blocks(x, &mut quants, &mut push);
        Q8Rows {
            rows: m,
            quants,
            scales,
            sums,
            bsums: Vec::new(),
        }
    }
}

/// [`Q8Rows::quantize`]'s blocks in portable code: calls `push(d, Σ q)` per block (`d` before
/// its rounding to f16).
fn quantize_blocks(x: &[f32], quants: &mut [i8], push: &mut impl FnMut(f32, i32)) {
    for (q, x) in quants.chunks_exact_mut(BLOCK).zip(x.chunks_exact(BLOCK)) {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (q, v) in q.iter_mut().zip(x) {
            *q = round_ties_even(v * id) as i8;
        }
        push(d, q.iter().map(|&v| v as i32).sum());
    }
}

/// [`Q8Rows::quantize_k`]'s super-blocks in portable code: calls `push(d, sums per 16 values)`.
fn quantize_k_blocks(x: &[f32], quants: &mut [i8], push: &mut impl FnMut(f32, &[i16; 16])) {
    for (q, x) in quants.chunks_exact_mut(SUPER).zip(x.chunks_exact(SUPER)) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                (amax, max) = (v.abs(), v);
            }
        }
        let d = if amax == 0.0 {
            0.0
        } else {
            let iscale = -127.0 / max;
            for (q, v) in q.iter_mut().zip(x) {
                *q = round_ties_even(iscale * v).min(127.0) as i8;
            }
            1.0 / iscale
        };
        let mut sums = [0i16; 16];
        for (s, q) in sums.iter_mut().zip(q.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i16).sum();
        }
        push(d, &sums);
    }
}

impl Q8Rows {
    /// Quantizes `m` rows of `32 · blocks` values (a multiple of 256) for K-quant weights, as
    /// llama.cpp's `quantize_row_q8_K` does: per 256 values, the value of largest magnitude `v`
    /// (the first, on ties) sets `1/d = -127 / v`, `q = min(round(x / d), 127)` (ties to even),
    /// and `d` stays a float32. Each 32-value block gets its super-block's `d`; the sums are
    /// kept per 16 values, as integers.
    pub(crate) fn quantize_k(x: &[f32], m: usize, blocks: usize) -> Self {
        debug_assert_eq!(x.len(), m * blocks * BLOCK);
        debug_assert!(blocks.is_multiple_of(SUPER / BLOCK));
        let mut quants = vec![0i8; x.len()];
        let mut scales = Vec::with_capacity(m * blocks);
        let mut bsums = Vec::with_capacity(2 * m * blocks);
        let mut push = |d: f32, sums: &[i16; 16]| {
            scales.extend([d; SUPER / BLOCK]);
            bsums.extend_from_slice(sums);
        };
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { avx2::quantize_k(x, &mut quants, &mut push) };
        } else {
            quantize_k_blocks(x, &mut quants, &mut push);
        }
        #[cfg(not(target_arch = "x86_64"))]
        quantize_k_blocks(x, &mut quants, &mut push);
        Q8Rows {
            rows: m,
            quants,
            scales,
            sums: Vec::new(),
            bsums,
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
    if w.format.is_k() {
        return reference_k(w, a, r, c);
    }
    let nb = w.blocks;
    let mut lanes = [0f32; 8];
    let mut offsets = 0f32;
    for b in 0..nb {
        let u = w.unpack(c, b);
        let aq = &a.quants[(r * nb + b) * BLOCK..][..BLOCK];
        let d = u.d[0] * a.scales[r * nb + b];
        for (l, lane) in lanes.iter_mut().enumerate() {
            let isum: i32 = (4 * l..4 * l + 4).map(|k| u.q[k] * aq[k] as i32).sum();
            *lane = (isum as f32).mul_add(d, *lane);
        }
        offsets = u.m.mul_add(a.sums[r * nb + b], offsets);
    }
    let sum = tree(lanes);
    if w.format.has_offsets() {
        sum + offsets
    } else {
        sum
    }
}

/// [`reference`](fn@reference) for K-quants. Per super-block, lane `l` sums in integers, over the 8
/// sub-blocks, `sc · q_w · q_x` for values `4l..4l + 4`; the correction's lane `l` is sub-block
/// `l`'s `m · Σ q_x` (Q4_K, Q5_K) or `Σ sc · Σ q_x` over its two 16-value halves (Q6_K, whose
/// stored values are `q + 32`). Then one rounding per super-block into each float lane.
fn reference_k(w: &QMatrix, a: &Q8Rows, r: usize, c: usize) -> f32 {
    let nb = w.blocks;
    let subs = SUPER / BLOCK;
    let mut lanes = [0f32; 8];
    for u in 0..nb / subs {
        let (mut sums, mut corr) = ([0i32; 8], [0i32; 8]);
        let (mut d, mut dmin) = (0f32, 0f32);
        for (k, corr) in corr.iter_mut().enumerate() {
            let b = u * subs + k;
            let p = w.k_parts(c, b);
            (d, dmin) = (p.d, p.dmin);
            let x = &a.quants[(r * nb + b) * BLOCK..][..BLOCK];
            for (l, s) in sums.iter_mut().enumerate() {
                *s += (4 * l..4 * l + 4)
                    .map(|t| p.sc[t / 16] * p.q[t] * x[t] as i32)
                    .sum::<i32>();
            }
            let halves = &a.bsums[(r * nb + b) * 2..][..2];
            *corr = if w.format.has_offsets() {
                p.m * (halves[0] as i32 + halves[1] as i32)
            } else {
                p.sc[0] * halves[0] as i32 + p.sc[1] * halves[1] as i32
            };
        }
        let dx = a.scales[r * nb + u * subs];
        for l in 0..8 {
            if w.format.has_offsets() {
                lanes[l] = (sums[l] as f32).mul_add(d * dx, lanes[l]);
                lanes[l] = (corr[l] as f32).mul_add(-dmin * dx, lanes[l]);
            } else {
                lanes[l] = ((sums[l] - 32 * corr[l]) as f32).mul_add(d * dx, lanes[l]);
            }
        }
    }
    tree(lanes)
}

/// `(l0 + l4) + (l2 + l6)` plus `(l1 + l5) + (l3 + l7)`: how the kernel adds its eight lanes.
fn tree(l: [f32; 8]) -> f32 {
    let h: [f32; 4] = std::array::from_fn(|i| l[i] + l[i + 4]);
    (h[0] + h[2]) + (h[1] + h[3])
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{k_scales_mins, Format, Q8Rows, QMatrix, Range, BLOCK, COLS, ROWS, SUPER};
    use std::arch::x86_64::*;
    use std::marker::PhantomData;

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
            Format::Q8_0 => tiles::<Blocks<Q8_0>>(w, a, rows, cols, y),
            Format::Q4_0 => tiles::<Blocks<Q4<false>>>(w, a, rows, cols, y),
            Format::Q4_1 => tiles::<Blocks<Q4<true>>>(w, a, rows, cols, y),
            Format::Q5_0 => tiles::<Blocks<Q5<false>>>(w, a, rows, cols, y),
            Format::Q5_1 => tiles::<Blocks<Q5<true>>>(w, a, rows, cols, y),
            Format::Q4K => tiles::<Supers<Q45K<false>>>(w, a, rows, cols, y),
            Format::Q5K => tiles::<Supers<Q45K<true>>>(w, a, rows, cols, y),
            Format::Q6K => tiles::<Supers<Q6K>>(w, a, rows, cols, y),
        }
    }

    /// How a tile of outputs is computed: [`tile`] for 32-value blocks, [`super_tile`] for
    /// K-quant super-blocks.
    trait Tile {
        /// Weight rows per tile.
        const COLS: usize;
        /// A column tile's weights unpacked once for all its row tiles, where that pays.
        type Panel: Default;
        /// Unpacks weight rows `c0..c0 + nc` into `panel`.
        unsafe fn fill(panel: &mut Self::Panel, w: &QMatrix, c0: usize, nc: usize);
        /// The `R × C` tile at `c` (see [`Corner`]), its weights read from `panel` when given.
        unsafe fn tile<const R: usize, const C: usize>(
            c: &Corner,
            panel: Option<&Self::Panel>,
            y: &mut [f32],
        );
    }

    /// A tile: activation rows `r0..r0 + R` times weight rows `c0..c0 + C`, written to
    /// `y[at + i · stride + j]`; `prefetch`: ask for the next column tile's weights.
    #[derive(Clone, Copy)]
    struct Corner<'a> {
        w: &'a QMatrix,
        a: &'a Q8Rows,
        r0: usize,
        c0: usize,
        at: usize,
        stride: usize,
        prefetch: bool,
    }

    struct Blocks<U>(PhantomData<U>);
    impl<U: Unpack> Tile for Blocks<U> {
        const COLS: usize = COLS;
        type Panel = Panel;
        #[inline(always)]
        unsafe fn fill(panel: &mut Panel, w: &QMatrix, c0: usize, nc: usize) {
            panel.fill::<U>(w, c0, nc)
        }
        #[inline(always)]
        unsafe fn tile<const R: usize, const C: usize>(
            c: &Corner,
            panel: Option<&Panel>,
            y: &mut [f32],
        ) {
            match panel {
                Some(panel) => tile::<U, _, R, C>(c, panel, y),
                None => tile::<U, _, R, C>(c, &Stored::<U, C>::new(c.w, c.c0, c.prefetch), y),
            }
        }
    }

    struct Supers<K>(PhantomData<K>);
    impl<K: UnpackK> Tile for Supers<K> {
        // Two: a tile of 4 × 3 would need 19 vector registers for its integer sums, quants,
        // scales and activations (x86 has 16).
        const COLS: usize = 2;
        // A super-block's unpacking is shared by 256 values: a panel does not pay.
        type Panel = ();
        unsafe fn fill(_: &mut (), _: &QMatrix, _: usize, _: usize) {}
        #[inline(always)]
        unsafe fn tile<const R: usize, const C: usize>(c: &Corner, _: Option<&()>, y: &mut [f32]) {
            super_tile::<K, R, C>(c, y)
        }
    }

    /// [`Q8Rows::quantize`]'s blocks, 32 values at a time with the scalar code's operations
    /// (so its bits): `max |x|` (order does not matter), `d = amax / 127`, `q = x · (1/d)`
    /// rounded to nearest even (`cvtps_epi32` under the default rounding mode), packed to bytes.
    /// Calls `push(d, Σ q)` per block.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize(x: &[f32], quants: &mut [i8], push: &mut impl FnMut(f32, i32)) {
        assert_eq!(x.len(), quants.len());
        let sign = _mm256_set1_ps(-0.0);
        for (q, x) in quants.chunks_exact_mut(BLOCK).zip(x.chunks_exact(BLOCK)) {
            // SAFETY: `x` and `q` hold 32 values each.
            let p = x.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let mut m = _mm256_andnot_ps(sign, v[0]);
            for v in &v[1..] {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *v));
            }
            let amax = hmax(m);
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
            let mut i = [_mm256_setzero_si256(); 4];
            for (i, v) in i.iter_mut().zip(v) {
                *i = _mm256_cvtps_epi32(_mm256_mul_ps(v, id));
            }
            let total =
                _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
            // The packs work within 128-bit halves: 4-byte groups come out as 0 2 4 6 1 3 5 7.
            let bytes = _mm256_packs_epi16(
                _mm256_packs_epi32(i[0], i[1]),
                _mm256_packs_epi32(i[2], i[3]),
            );
            let bytes =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(q.as_mut_ptr().cast(), bytes);
            push(d, hsum_i32(total));
        }
    }

    /// [`Q8Rows::quantize_k`]'s super-blocks with the portable code's operations (so its
    /// bits): the largest magnitude by vector maxima, then the first value that has it (its
    /// sign matters), `q = min(x · (-127 / v), 127)` rounded to nearest even.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_k(
        x: &[f32],
        quants: &mut [i8],
        push: &mut impl FnMut(f32, &[i16; 16]),
    ) {
        assert_eq!(x.len(), quants.len());
        let sign = _mm256_set1_ps(-0.0);
        for (q, x) in quants.chunks_exact_mut(SUPER).zip(x.chunks_exact(SUPER)) {
            // SAFETY: `x` and `q` hold 256 values each.
            let p = x.as_ptr();
            let mut m = _mm256_setzero_ps();
            for k in 0..SUPER / 8 {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * k))));
            }
            let amax = hmax(m);
            let mut sums = [0i16; 16];
            if amax == 0.0 {
                q.fill(0);
                push(0.0, &sums);
                continue;
            }
            let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
            let iscale = -127.0 / max;
            let scale = _mm256_set1_ps(iscale);
            let top = _mm256_set1_epi32(127);
            for (k, s) in sums.iter_mut().enumerate() {
                // 16 values: two vectors of 8, packed to 16 bytes.
                let at = 16 * k;
                let a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p.add(at)), scale));
                let b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p.add(at + 8)), scale));
                let (a, b) = (_mm256_min_epi32(a, top), _mm256_min_epi32(b, top));
                *s = hsum_i32(_mm256_add_epi32(a, b)) as i16;
                // Halves of 16-bit lanes: [a0..4 b0..4 | a4..8 b4..8], then to bytes.
                let words = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0b11_01_10_00);
                let bytes = _mm_packs_epi16(
                    _mm256_castsi256_si128(words),
                    _mm256_extracti128_si256(words, 1),
                );
                _mm_storeu_si128(q.as_mut_ptr().add(at).cast(), bytes);
            }
            push(1.0 / iscale, &sums);
        }
    }

    /// How a format's block becomes bytes for `maddubs`; the layout comes from [`Format`].
    pub(super) trait Unpack {
        const FORMAT: Format;
        /// Whether `q` is signed (the sign trick) or unsigned with an offset `m`.
        const SIGNED: bool = !Self::FORMAT.has_offsets();
        /// The 32 integers of the block at `p`: signed bytes, or unsigned ones. (A block starts
        /// with `d`; the offsets `m` that follow it are read by `tile`'s offsets pass.)
        unsafe fn quants(p: *const u8) -> __m256i;
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f16(p: *const u8) -> f32 {
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

    /// All ones in each byte `j` whose bit `j` of the little-endian u32 at `p` is set.
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
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select)
    }

    pub(super) struct Q8_0;
    impl Unpack for Q8_0 {
        const FORMAT: Format = Format::Q8_0;
        #[inline(always)]
        unsafe fn quants(p: *const u8) -> __m256i {
            _mm256_loadu_si256(p.add(Self::FORMAT.layout().0).cast())
        }
    }

    /// Q4_0 (`OFFSET = false`) and Q4_1.
    pub(super) struct Q4<const OFFSET: bool>;
    impl<const OFFSET: bool> Unpack for Q4<OFFSET> {
        const FORMAT: Format = if OFFSET { Format::Q4_1 } else { Format::Q4_0 };
        #[inline(always)]
        unsafe fn quants(p: *const u8) -> __m256i {
            let q = nibbles(p.add(Self::FORMAT.layout().0));
            _mm256_sub_epi8(q, _mm256_set1_epi8(Self::FORMAT.bias()))
        }
    }

    /// Q5_0 (`OFFSET = false`) and Q5_1.
    pub(super) struct Q5<const OFFSET: bool>;
    impl<const OFFSET: bool> Unpack for Q5<OFFSET> {
        const FORMAT: Format = if OFFSET { Format::Q5_1 } else { Format::Q5_0 };
        #[inline(always)]
        unsafe fn quants(p: *const u8) -> __m256i {
            let (qs, qh) = Self::FORMAT.layout();
            let set = fifth_bits(p.add(qh.unwrap_or(0)));
            if OFFSET {
                _mm256_or_si256(
                    nibbles(p.add(qs)),
                    _mm256_and_si256(set, _mm256_set1_epi8(0x10)),
                )
            } else {
                // q - 16 directly: the nibble where the fifth bit is set, the nibble - 16 (its
                // top four bits set) where it is not.
                let below = _mm256_andnot_si256(set, _mm256_set1_epi8(0xF0u8 as i8));
                _mm256_or_si256(nibbles(p.add(qs)), below)
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tiles<T: Tile>(
        w: &QMatrix,
        a: &Q8Rows,
        rows: Range<usize>,
        cols: Range<usize>,
        y: &mut [f32],
    ) {
        assert!(rows.end <= a.rows && cols.end <= w.out);
        let n = cols.len();
        // With more than one row tile, each column tile's weights are unpacked once into a
        // panel instead of once per row tile (128 rows of Q5_0 or Q4_1 on one thread: 5–8%
        // less time).
        let mut panel = (rows.len() > ROWS).then(T::Panel::default);
        let mut c = cols.start;
        while c < cols.end {
            let nc = T::COLS.min(cols.end - c);
            if let Some(panel) = &mut panel {
                T::fill(panel, w, c, nc);
            }
            let panel = panel.as_ref();
            let mut r = rows.start;
            while r < rows.end {
                let nr = ROWS.min(rows.end - r);
                let at = (r - rows.start) * n + (c - cols.start);
                let corner = Corner {
                    w,
                    a,
                    r0: r,
                    c0: c,
                    at,
                    stride: n,
                    // The first row tile reads the weights from memory and prefetches the next.
                    prefetch: r == rows.start,
                };
                // Every (nr, nc) gets its own unrolled copy; all share the per-output arithmetic.
                match (nr, nc) {
                    (4, 3) => T::tile::<4, 3>(&corner, panel, y),
                    (4, 2) => T::tile::<4, 2>(&corner, panel, y),
                    (4, 1) => T::tile::<4, 1>(&corner, panel, y),
                    (3, 3) => T::tile::<3, 3>(&corner, panel, y),
                    (3, 2) => T::tile::<3, 2>(&corner, panel, y),
                    (3, 1) => T::tile::<3, 1>(&corner, panel, y),
                    (2, 3) => T::tile::<2, 3>(&corner, panel, y),
                    (2, 2) => T::tile::<2, 2>(&corner, panel, y),
                    (2, 1) => T::tile::<2, 1>(&corner, panel, y),
                    (1, 3) => T::tile::<1, 3>(&corner, panel, y),
                    (1, 2) => T::tile::<1, 2>(&corner, panel, y),
                    _ => T::tile::<1, 1>(&corner, panel, y),
                }
                r += nr;
            }
            c += nc;
        }
    }

    /// Where [`tile`] reads its weight blocks: unpacked from the matrix as it goes
    /// ([`Stored`]) or from a column tile's [`Panel`]. Both give the same values.
    trait Source {
        /// Called before the tile reads blocks `b` of its rows.
        unsafe fn prefetch(&self, b: usize);
        /// Block `b` of the tile's weight row `j`: its 32 integers as [`Unpack::quants`]
        /// gives them, and its `d` in every lane.
        unsafe fn block(&self, j: usize, b: usize) -> (__m256i, __m256);
        /// Lane `j`: the offset `m` of block `b` of weight row `j` (formats with offsets).
        unsafe fn offsets(&self, b: usize) -> __m128;
    }

    /// The weight rows `c0..c0 + C` of a tile, unpacked block by block from the stored bytes.
    struct Stored<'a, U, const C: usize> {
        w: &'a QMatrix,
        c0: usize,
        /// Ask for the next column tile's blocks ahead of time.
        prefetch: bool,
        unpack: PhantomData<U>,
    }

    impl<'a, U: Unpack, const C: usize> Stored<'a, U, C> {
        fn new(w: &'a QMatrix, c0: usize, prefetch: bool) -> Self {
            assert!((c0 + C) * w.blocks * w.format.block_bytes() <= w.bytes.len());
            Stored {
                w,
                c0,
                prefetch,
                unpack: PhantomData,
            }
        }

        /// Block `b` of weight row `c0 + j` (inside the matrix: asserted in `new`).
        #[inline(always)]
        unsafe fn at(&self, j: usize, b: usize) -> *const u8 {
            let bb = self.w.format.block_bytes();
            self.w
                .bytes
                .as_ptr()
                .add(((self.c0 + j) * self.w.blocks + b) * bb)
        }
    }

    impl<U: Unpack, const C: usize> Source for Stored<'_, U, C> {
        #[inline(always)]
        unsafe fn prefetch(&self, b: usize) {
            // The first row tile of a column tile reads its weights from memory: it asks for
            // the next column tile's blocks ahead of time. Each tile's rows are too short for
            // the hardware prefetcher to learn their streams, and a decoding row spends little
            // time per block (+25% decoding speed for Qwen2.5-0.5B on an AVX2 EPYC).
            if self.prefetch {
                let bb = self.w.format.block_bytes();
                for j in 0..C {
                    let ahead = self
                        .w
                        .bytes
                        .as_ptr()
                        .wrapping_add(((self.c0 + C + j) * self.w.blocks + b) * bb);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
            }
        }

        #[inline(always)]
        unsafe fn block(&self, j: usize, b: usize) -> (__m256i, __m256) {
            let p = self.at(j, b);
            (U::quants(p), _mm256_set1_ps(f16(p)))
        }

        #[inline(always)]
        unsafe fn offsets(&self, b: usize) -> __m128 {
            // The C offsets as one vector, converted from half precision together (building it
            // from single floats stored to memory stalls on store forwarding).
            let mut bits = _mm_setzero_si128();
            for j in 0..C {
                let v = std::ptr::read_unaligned(self.at(j, b).add(2).cast::<u16>());
                bits = match j {
                    0 => _mm_insert_epi16::<0>(bits, v as i32),
                    1 => _mm_insert_epi16::<1>(bits, v as i32),
                    2 => _mm_insert_epi16::<2>(bits, v as i32),
                    _ => _mm_insert_epi16::<3>(bits, v as i32),
                };
            }
            _mm_cvtph_ps(bits)
        }
    }

    /// Up to [`COLS`] weight rows unpacked for all the row tiles of their column tile: block
    /// `b` of row `j` at `b · COLS + j`.
    #[derive(Default)]
    struct Panel {
        quants: Vec<__m256i>,
        d: Vec<f32>,
        /// Block `b`'s offsets, lane `j` for row `j` (formats with offsets).
        m: Vec<__m128>,
    }

    impl Panel {
        /// Unpacks weight rows `c0..c0 + nc` (and asks for the next column tile's blocks).
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn fill<U: Unpack>(&mut self, w: &QMatrix, c0: usize, nc: usize) {
            const { assert!(COLS == 3) };
            match nc {
                3 => self.fill_from(&Stored::<U, 3>::new(w, c0, true), w.blocks),
                2 => self.fill_from(&Stored::<U, 2>::new(w, c0, true), w.blocks),
                _ => self.fill_from(&Stored::<U, 1>::new(w, c0, true), w.blocks),
            }
        }

        #[inline(always)]
        unsafe fn fill_from<U: Unpack, const C: usize>(&mut self, s: &Stored<U, C>, nb: usize) {
            self.quants.clear();
            self.d.clear();
            self.m.clear();
            for b in 0..nb {
                s.prefetch(b);
                for j in 0..COLS {
                    let (q, d) = if j < C {
                        s.block(j, b)
                    } else {
                        (_mm256_setzero_si256(), _mm256_setzero_ps())
                    };
                    self.quants.push(q);
                    self.d.push(_mm256_cvtss_f32(d));
                }
                if !U::SIGNED {
                    self.m.push(s.offsets(b));
                }
            }
        }
    }

    impl Source for Panel {
        #[inline(always)]
        unsafe fn prefetch(&self, _: usize) {}

        #[inline(always)]
        unsafe fn block(&self, j: usize, b: usize) -> (__m256i, __m256) {
            let at = b * COLS + j;
            (
                _mm256_load_si256(self.quants.as_ptr().add(at)),
                _mm256_broadcast_ss(&*self.d.as_ptr().add(at)),
            )
        }

        #[inline(always)]
        unsafe fn offsets(&self, b: usize) -> __m128 {
            *self.m.as_ptr().add(b)
        }
    }

    /// The tile at `c` for 32-value blocks, its weights from `weights`: one float multiply-add
    /// per block and output.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<U: Unpack, S: Source, const R: usize, const C: usize>(
        c: &Corner,
        weights: &S,
        y: &mut [f32],
    ) {
        let Corner {
            w,
            a,
            r0,
            at,
            stride,
            ..
        } = *c;
        let nb = w.blocks;
        assert!((r0 + R) * nb <= a.scales.len());
        assert!(at + (R - 1) * stride + C <= y.len());
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        // SAFETY (all pointer arithmetic below): rows r0..r0 + R of the activations are inside
        // their buffers (asserted above); `weights` holds blocks 0..nb of its C rows.
        let aq = a.quants.as_ptr();
        for b in 0..nb {
            let mut q = [_mm256_setzero_si256(); C];
            let mut sign = [_mm256_setzero_si256(); C];
            let mut dw = [_mm256_setzero_ps(); C];
            weights.prefetch(b);
            for j in 0..C {
                let (v, d) = weights.block(j, b);
                if U::SIGNED {
                    sign[j] = v;
                    q[j] = _mm256_sign_epi8(v, v);
                } else {
                    q[j] = v;
                }
                dw[j] = d;
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
                let m = weights.offsets(b);
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

    /// How a K-quant super-block becomes bytes and 16-bit scales for `maddubs` and `madd`.
    trait UnpackK {
        const FORMAT: Format;
        /// The super-block's 16 bytes of integer scales: Q4_K / Q5_K its 8 scales, then its 8
        /// mins (unsigned); Q6_K its 16 scales (signed).
        unsafe fn packed(p: *const u8) -> __m128i;
        /// Sub-block `S`'s 32 stored integers (unsigned).
        unsafe fn quants<const S: usize>(p: *const u8) -> __m256i;
        /// Sub-block `S`'s scale for each `maddubs` pair (16-bit lane `t`: values `2t, 2t + 1`).
        unsafe fn scales<const S: usize>(packed: __m128i) -> __m256i;
        /// What the activations' 16-value sums are multiplied by (lane by lane) for the
        /// correction: each sub-block's min twice (Q4_K, Q5_K), the 16 scales (Q6_K).
        unsafe fn corrections(packed: __m128i) -> __m256i;
        /// `d` and `dmin` (zero for Q6_K).
        unsafe fn d(p: *const u8) -> (f32, f32);
        /// One super-block's integer lanes and correction, added to the float lanes `acc`
        /// (`d_dx = d · d_x`, `dmin_dx = -dmin · d_x`).
        unsafe fn finish(
            sums: __m256i,
            corr: __m256i,
            d_dx: f32,
            dmin_dx: f32,
            acc: __m256,
        ) -> __m256;
    }

    /// The 32 bytes at `p` with bit `FROM` of each byte moved to bit `TO` (and the bits next
    /// to it along with it), then masked with `mask`. The shift is an immediate one in 16-bit
    /// lanes; callers choose masks that keep the moved bits inside their bytes.
    #[inline(always)]
    unsafe fn moved<const FROM: usize, const TO: usize>(p: *const u8, mask: i8) -> __m256i {
        let v = _mm256_loadu_si256(p.cast());
        let v = match TO as i32 - FROM as i32 {
            4 => _mm256_slli_epi16::<4>(v),
            3 => _mm256_slli_epi16::<3>(v),
            2 => _mm256_slli_epi16::<2>(v),
            1 => _mm256_slli_epi16::<1>(v),
            0 => v,
            -1 => _mm256_srli_epi16::<1>(v),
            -2 => _mm256_srli_epi16::<2>(v),
            -3 => _mm256_srli_epi16::<3>(v),
            _ => _mm256_srli_epi16::<4>(v),
        };
        _mm256_and_si256(v, _mm256_set1_epi8(mask))
    }

    /// Q4_K (`FIFTH = false`) and Q5_K.
    struct Q45K<const FIFTH: bool>;
    impl<const FIFTH: bool> UnpackK for Q45K<FIFTH> {
        const FORMAT: Format = if FIFTH { Format::Q5K } else { Format::Q4K };
        #[inline(always)]
        unsafe fn packed(p: *const u8) -> __m128i {
            let [a, b, c, d] = k_scales_mins(std::slice::from_raw_parts(p.add(4), 12));
            _mm_setr_epi32(a as i32, b as i32, c as i32, d as i32)
        }
        #[inline(always)]
        unsafe fn quants<const S: usize>(p: *const u8) -> __m256i {
            let (qs, qh) = Self::FORMAT.layout();
            // Sub-blocks 2i and 2i + 1: the low and the high nibbles of the same 32 bytes.
            let at = p.add(qs + S / 2 * 32);
            let q = if S.is_multiple_of(2) {
                moved::<0, 0>(at, 0x0F)
            } else {
                moved::<4, 0>(at, 0x0F)
            };
            match qh {
                // Bit S of each of the 32 bytes, moved to bit 4.
                Some(at) if FIFTH => {
                    let fifth = match S {
                        0 => moved::<0, 4>(p.add(at), 0x10),
                        1 => moved::<1, 4>(p.add(at), 0x10),
                        2 => moved::<2, 4>(p.add(at), 0x10),
                        3 => moved::<3, 4>(p.add(at), 0x10),
                        4 => moved::<4, 4>(p.add(at), 0x10),
                        5 => moved::<5, 4>(p.add(at), 0x10),
                        6 => moved::<6, 4>(p.add(at), 0x10),
                        _ => moved::<7, 4>(p.add(at), 0x10),
                    };
                    _mm256_or_si256(q, fifth)
                }
                _ => q,
            }
        }
        #[inline(always)]
        unsafe fn scales<const S: usize>(packed: __m128i) -> __m256i {
            _mm256_cvtepu8_epi16(_mm_shuffle_epi8(packed, _mm_set1_epi8(S as i8)))
        }
        #[inline(always)]
        unsafe fn corrections(packed: __m128i) -> __m256i {
            let twice = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
            _mm256_cvtepu8_epi16(_mm_shuffle_epi8(packed, twice))
        }
        #[inline(always)]
        unsafe fn d(p: *const u8) -> (f32, f32) {
            (f16(p), f16(p.add(2)))
        }
        #[inline(always)]
        unsafe fn finish(
            sums: __m256i,
            corr: __m256i,
            d_dx: f32,
            dmin_dx: f32,
            acc: __m256,
        ) -> __m256 {
            let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d_dx), acc);
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(corr), _mm256_set1_ps(dmin_dx), acc)
        }
    }

    /// Q6_K: stored values `q + 32` of 6 bits, a signed scale per 16 values.
    struct Q6K;
    impl UnpackK for Q6K {
        const FORMAT: Format = Format::Q6K;
        #[inline(always)]
        unsafe fn packed(p: *const u8) -> __m128i {
            _mm_loadu_si128(p.add(192).cast())
        }
        #[inline(always)]
        unsafe fn quants<const S: usize>(p: *const u8) -> __m256i {
            let (qs, qh) = Self::FORMAT.layout();
            // Nibbles: the low ones of bytes 0..32 and 32..64 of the half, then their high ones.
            let low = p.add(qs + 64 * (S / 4) + 32 * (S % 2));
            let low = if S % 4 < 2 {
                moved::<0, 0>(low, 0x0F)
            } else {
                moved::<4, 0>(low, 0x0F)
            };
            // Bits 2·(S % 4) and the next of the half's 32 high bytes, moved to bits 4 and 5.
            let high = p.add(qh.unwrap_or(0) + 32 * (S / 4));
            let high = match S % 4 {
                0 => moved::<0, 4>(high, 0x30),
                1 => moved::<2, 4>(high, 0x30),
                2 => moved::<4, 4>(high, 0x30),
                _ => moved::<6, 4>(high, 0x30),
            };
            _mm256_or_si256(low, high)
        }
        #[inline(always)]
        unsafe fn scales<const S: usize>(packed: __m128i) -> __m256i {
            // Pairs 0..8 take scale 2S, pairs 8..16 scale 2S + 1.
            let (a, b) = (2 * S as i8, 2 * S as i8 + 1);
            let pick = _mm_setr_epi8(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b);
            _mm256_cvtepi8_epi16(_mm_shuffle_epi8(packed, pick))
        }
        #[inline(always)]
        unsafe fn corrections(packed: __m128i) -> __m256i {
            _mm256_cvtepi8_epi16(packed)
        }
        #[inline(always)]
        unsafe fn d(p: *const u8) -> (f32, f32) {
            (f16(p.add(208)), 0.0)
        }
        #[inline(always)]
        unsafe fn finish(
            sums: __m256i,
            corr: __m256i,
            d_dx: f32,
            _dmin_dx: f32,
            acc: __m256,
        ) -> __m256 {
            // The stored values are q + 32: take 32 · Σ sc · Σ q_x away.
            let sums = _mm256_sub_epi32(sums, _mm256_slli_epi32(corr, 5));
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d_dx), acc)
        }
    }

    /// [`tile`] for K-quant super-blocks, with [`super::reference_k`]'s arithmetic: within a
    /// super-block every product is summed in 32-bit integers (`madd` with the 16-bit scales
    /// instead of with ones), then converted once.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn super_tile<K: UnpackK, const R: usize, const C: usize>(c: &Corner, y: &mut [f32]) {
        let Corner {
            w,
            a,
            r0,
            c0,
            at,
            stride,
            prefetch: _,
        } = *c;
        const SUBS: usize = SUPER / BLOCK;
        let nb = w.blocks;
        let bb = w.format.block_bytes();
        let units = nb / SUBS;
        assert!((r0 + R) * nb <= a.scales.len() && (r0 + R) * nb * 2 <= a.bsums.len());
        assert!((c0 + C) * units * bb <= w.bytes.len());
        assert!(at + (R - 1) * stride + C <= y.len());
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        // SAFETY (all pointer arithmetic below): rows c0..c0 + C of the matrix and rows
        // r0..r0 + R of the activations are inside their buffers (asserted above).
        let wp = |j: usize, u: usize| w.bytes.as_ptr().add(((c0 + j) * units + u) * bb);
        for u in 0..units {
            let mut packed = [_mm_setzero_si128(); C];
            for (j, p) in packed.iter_mut().enumerate() {
                *p = K::packed(wp(j, u));
            }
            let mut sums = [[_mm256_setzero_si256(); C]; R];
            sub_block::<K, R, C, 0>(c, u, &packed, &mut sums);
            sub_block::<K, R, C, 1>(c, u, &packed, &mut sums);
            sub_block::<K, R, C, 2>(c, u, &packed, &mut sums);
            sub_block::<K, R, C, 3>(c, u, &packed, &mut sums);
            sub_block::<K, R, C, 4>(c, u, &packed, &mut sums);
            sub_block::<K, R, C, 5>(c, u, &packed, &mut sums);
            sub_block::<K, R, C, 6>(c, u, &packed, &mut sums);
            sub_block::<K, R, C, 7>(c, u, &packed, &mut sums);
            for j in 0..C {
                let (d, dmin) = K::d(wp(j, u));
                let corrections = K::corrections(packed[j]);
                for (i, acc) in acc.iter_mut().enumerate() {
                    let at = (r0 + i) * nb + u * SUBS;
                    let dx = *a.scales.get_unchecked(at);
                    let halves = _mm256_loadu_si256(a.bsums.as_ptr().add(at * 2).cast());
                    let corr = _mm256_madd_epi16(corrections, halves);
                    acc[j] = K::finish(sums[i][j], corr, d * dx, -dmin * dx, acc[j]);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (j, &v) in acc.iter().enumerate() {
                *y.get_unchecked_mut(at + i * stride + j) = hsum(v);
            }
        }
    }

    /// Sub-block `S` of super-block `u` of a [`super_tile`], added to the integer sums (a
    /// function per sub-block, so that its shifts and shuffles are constants).
    #[inline(always)]
    unsafe fn sub_block<K: UnpackK, const R: usize, const C: usize, const S: usize>(
        c: &Corner,
        u: usize,
        packed: &[__m128i; C],
        sums: &mut [[__m256i; C]; R],
    ) {
        let (w, a) = (c.w, c.a);
        let (nb, bb) = (w.blocks, w.format.block_bytes());
        let subs = SUPER / BLOCK;
        let units = nb / subs;
        let b = u * subs + S;
        // SAFETY: as in `super_tile`, which checked the bounds.
        let wp = |j: usize| w.bytes.as_ptr().add(((c.c0 + j) * units + u) * bb);
        // As in `tile`; a super-block is asked for a piece per sub-block.
        if c.prefetch {
            for j in 0..C {
                let ahead = w
                    .bytes
                    .as_ptr()
                    .wrapping_add(((c.c0 + C + j) * units + u) * bb + S * bb / subs);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            }
        }
        let mut q = [_mm256_setzero_si256(); C];
        let mut sc = [_mm256_setzero_si256(); C];
        for j in 0..C {
            q[j] = K::quants::<S>(wp(j));
            sc[j] = K::scales::<S>(packed[j]);
        }
        let aq = a.quants.as_ptr();
        for (i, sums) in sums.iter_mut().enumerate() {
            let x = _mm256_loadu_si256(aq.add(((c.r0 + i) * nb + b) * BLOCK).cast());
            for (j, s) in sums.iter_mut().enumerate() {
                let pairs = _mm256_maddubs_epi16(q[j], x);
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(pairs, sc[j]));
            }
        }
    }

    /// The largest of the 8 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hmax(v: __m256) -> f32 {
        let h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)))
    }

    /// The sum of the 8 integer lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0b01_00_11_10));
        _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0b10_11_00_01)))
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

    const FORMATS: [Format; 8] = [
        Format::Q8_0,
        Format::Q4_0,
        Format::Q4_1,
        Format::Q5_0,
        Format::Q5_1,
        Format::Q4K,
        Format::Q5K,
        Format::Q6K,
    ];

    /// A row length of `blocks` 32-value blocks, rounded up to whole blocks of `format`.
    fn width(format: Format, blocks: usize) -> usize {
        (blocks * BLOCK).next_multiple_of(format.values())
    }

    /// Deterministic bytes for an `out × input` matrix: every byte value appears in the
    /// quants (-128 included for Q8_0), every bit pattern in the high bits and in the packed
    /// K-quant scales; only the float scales are set to plausible values.
    pub(super) fn matrix(format: Format, out: usize, input: usize, seed: u32) -> QMatrix {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            s
        };
        let mut bytes = Vec::new();
        for _ in 0..out * input / format.values() {
            let mut block = vec![0u8; format.block_bytes()];
            for v in block.iter_mut() {
                *v = (next() >> 24) as u8;
            }
            let mut uniform = |lo: f32, span: f32| {
                half::f16::from_f32(lo + (next() >> 8) as f32 / (1u32 << 24) as f32 * span)
                    .to_le_bytes()
            };
            // K-quants multiply d by 6- or 8-bit scales: smaller d keep the weights alike.
            match format {
                Format::Q4_1 | Format::Q5_1 => {
                    block[..2].copy_from_slice(&uniform(0.001, 0.01));
                    block[2..4].copy_from_slice(&uniform(-0.05, 0.1));
                }
                Format::Q4K | Format::Q5K => {
                    block[..2].copy_from_slice(&uniform(0.0001, 0.0003));
                    block[2..4].copy_from_slice(&uniform(0.0001, 0.001));
                }
                Format::Q6K => block[208..].copy_from_slice(&uniform(0.0001, 0.0003)),
                _ => block[..2].copy_from_slice(&uniform(0.001, 0.01)),
            }
            bytes.extend_from_slice(&block);
        }
        QMatrix::new(format, bytes, out, input).unwrap()
    }

    pub(super) fn activations(m: usize, input: usize) -> Vec<f32> {
        (0..m * input)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 100.0)
            .collect()
    }

    #[test]
    fn every_format_and_tile_shape_gives_the_reference_bits() {
        // 13 outputs and up to 9 rows leave narrower tiles at both edges.
        let out = 13;
        for format in FORMATS {
            let input = width(format, 3);
            let w = matrix(format, out, input, 1);
            for m in [1, 2, 3, 4, 5, 9] {
                let x = activations(m, input);
                let acts = if format.is_k() {
                    Q8Rows::quantize_k(&x, m, input / BLOCK)
                } else {
                    Q8Rows::quantize(&x, m, input / BLOCK)
                };
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
        // 7 rows: the outputs are split between threads; 37: the rows are.
        for m in [7, 37] {
            for format in FORMATS {
                let w = matrix(format, 200, width(format, 18), 2);
                assert_rows_alone_equal_batch(&w, m, |x, m| w.forward(x, m));
            }
        }
    }

    /// `product` of `m` rows of [`activations`] and `w`, on two threads, equals each row's
    /// product alone, bit for bit.
    pub(super) fn assert_rows_alone_equal_batch(
        w: &QMatrix,
        m: usize,
        product: impl Fn(&[f32], usize) -> Vec<f32> + Sync,
    ) {
        let (input, out) = (w.input(), w.out);
        let x = activations(m, input);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let all = pool.install(|| product(&x, m));
        for r in 0..m {
            let one = product(&x[r * input..(r + 1) * input], 1);
            assert_eq!(
                bits(&one),
                bits(&all[r * out..(r + 1) * out]),
                "{:?} m={m} row {r}",
                w.format
            );
        }
    }

    pub(super) fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The unpacking the kernel's arithmetic rests on, checked against candle's dequantization
    /// of the same bytes.
    #[test]
    fn blocks_unpack_as_candle_dequantizes_them() {
        use candle_core::quantized::{GgmlDType, QStorage, QTensor};
        let (out, input) = (3, 512);
        for (format, dtype) in FORMATS.into_iter().zip([
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
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
                    let u = w.unpack(r, b);
                    for k in 0..BLOCK {
                        let got = u.q[k] as f32 * u.d[k / 16] + u.m;
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
                    // The activations are quantized per 32 values, or per 256 for K-quants.
                    let group = if format.is_k() { SUPER } else { BLOCK };
                    for b in 0..input / BLOCK {
                        let u = w.unpack(c, b);
                        let xs = &x[r * input + b * BLOCK..][..BLOCK];
                        let g = &x[r * input + b * BLOCK / group * group..][..group];
                        let amax = g.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                        for (k, &xk) in xs.iter().enumerate() {
                            let wk = u.q[k] as f64 * u.d[k / 16] as f64 + u.m as f64;
                            exact += wk * xk as f64;
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

    /// The AVX2 quantization gives the portable code's bits, halves and zero blocks included.
    #[test]
    fn activations_quantize_to_the_portable_bits() {
        let mut x = activations(7, 256);
        // Exact halves of a step (ties), a zero block, a block of one large value.
        for (k, v) in x[..32].iter_mut().enumerate() {
            *v = k as f32 - 15.5;
        }
        x[32..64].fill(0.0);
        x[64] = -1e6;
        for (k, v) in x[96..128].iter_mut().enumerate() {
            *v = (k as f32 * 0.37).sin() * 1e-3;
        }
        let a = Q8Rows::quantize(&x, 7, 8);
        let mut quants = vec![0i8; x.len()];
        let mut blocks = Vec::new();
        quantize_blocks(&x, &mut quants, &mut |d, s| blocks.push((d, s)));
        assert_eq!(a.quants, quants);
        for (b, (d, sum)) in blocks.into_iter().enumerate() {
            let d = half::f16::from_f32(d).to_f32();
            assert_eq!(a.scales[b].to_bits(), d.to_bits(), "block {b}");
            assert_eq!(a.sums[b].to_bits(), (sum as f32 * d).to_bits(), "block {b}");
        }
    }

    /// The same for the K-quants' activations: ties, a zero super-block, the largest magnitude
    /// appearing with both signs (the first one sets the sign).
    #[test]
    fn k_activations_quantize_to_the_portable_bits() {
        let mut x = activations(3, 1024);
        for (k, v) in x[..256].iter_mut().enumerate() {
            *v = (k % 64) as f32 - 31.5;
        }
        x[256..512].fill(0.0);
        x[600] = 9.0;
        x[700] = -9.0;
        let a = Q8Rows::quantize_k(&x, 3, 32);
        let mut quants = vec![0i8; x.len()];
        let (mut scales, mut bsums) = (Vec::new(), Vec::new());
        quantize_k_blocks(&x, &mut quants, &mut |d, s| {
            scales.extend([d; SUPER / BLOCK]);
            bsums.extend_from_slice(s);
        });
        assert_eq!(a.quants, quants);
        assert_eq!(a.bsums, bsums);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.scales), bits(&scales));
        assert!(a.scales[8] == 0.0 && a.scales[16] < 0.0);
    }

    #[test]
    fn k_quant_activations_follow_llama_cpp_q8_k() {
        // The value of largest magnitude is -254: 1/d = -127 / -254 = 0.5, so d = 2 and the
        // signs stay. A later +254 does not replace it (the first one wins a tie).
        let mut x = vec![0f32; 512];
        x[..6].copy_from_slice(&[-254.0, 3.0, 5.0, 7.0, 254.0, -1.0]);
        x[40] = 9.0;
        let a = Q8Rows::quantize_k(&x, 1, 16);
        // 1.5, 2.5, 3.5 and -0.5 round to even.
        assert_eq!(&a.quants[..6], &[-127, 2, 2, 4, 127, 0]);
        assert_eq!(a.quants[40], 4);
        // Every 32-value block carries its super-block's d, as a float32 (not rounded to f16).
        assert!(a.scales[..8].iter().all(|&d| d == 2.0));
        // Integer sums per 16 values.
        assert_eq!(&a.bsums[..4], &[8, 0, 4, 0]);
        // A largest value that is positive flips the signs (d < 0), as in llama.cpp.
        let mut y = vec![0f32; 256];
        y[0] = 0.3;
        y[1] = -0.15;
        let b = Q8Rows::quantize_k(&y, 1, 8);
        assert_eq!(&b.quants[..2], &[-127, 64]);
        assert_eq!(b.scales[0], 1.0 / (-127.0f32 / 0.3));
        // The all-zero second super-block of `x`.
        assert!(a.quants[256..].iter().all(|&q| q == 0) && a.scales[8..].iter().all(|&d| d == 0.0));
    }
}
