//! Matrix products in bfloat16 on Intel AMX tiles (Sapphire Rapids and later), for inference
//! at `--precision bf16`.
//!
//! One AMX instruction, `TDPBF16PS`, multiplies a 16 × 32 bfloat16 tile by a 32 × 16 one and adds
//! the products to a 16 × 16 float32 tile: 16,384 floating-point operations, about 16 times what
//! an AVX-512 FMA does per cycle. (AVX-512 BF16's dot product, `VDPBF16PS`, ran slower than the
//! float32 FMA kernels on the same CPU, so it is used only where AMX is missing:
//! [`crate::dpbf16`].) Weights are rounded to bfloat16 and
//! laid out in tiles once, at load; activations are rounded per product; sums are float32.
//!
//! AMX needs the CPU (CPUID) and the kernel's permission for the process (`arch_prctl`
//! `ARCH_REQ_XCOMP_PERM`, Linux 5.16+); [`available`] asks once. The instructions are written
//! with `asm!` (Rust has no stable AMX intrinsics).

use std::sync::OnceLock;

use crate::kernels::{bf16, bf16_blocks};

/// Rows (and columns) of a tile; K values per A tile and per B tile's 16 rows of pairs.
const TILE: usize = 16;
const K_BLOCK: usize = 32;
/// Rows and columns of output per task: 2 × 2 tiles.
const BLOCK: usize = 2 * TILE;

/// Whether this process can run AMX bfloat16 products (asked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM only asks the kernel to allow the tile state.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// The float32 value of a bfloat16.
#[cfg(test)]
fn f32_of(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// A weight `[n, k]` (the product is `x wᵀ`) rounded to bfloat16 and laid out as AMX B tiles:
/// for each block of 16 outputs and each block of 32 inputs, 16 rows of 16 (input pair, output)
/// values, zero-padded to whole tiles.
pub struct PackedWeight {
    n: usize,
    k: usize,
    /// `n` and `k` rounded up to [`BLOCK`] and [`K_BLOCK`].
    n_pad: usize,
    k_pad: usize,
    tiles: Vec<u16>,
}

impl PackedWeight {
    /// Packs the row-major float32 weight `w` `[n, k]`.
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight size");
        let (n_pad, k_pad) = (n.div_ceil(BLOCK) * BLOCK, k.div_ceil(K_BLOCK) * K_BLOCK);
        let k_blocks = k_pad / K_BLOCK;
        let mut tiles = vec![0u16; n_pad * k_pad];
        for (t, tile) in tiles.chunks_exact_mut(TILE * K_BLOCK).enumerate() {
            let (column_block, k_block) = (t / k_blocks, t % k_blocks);
            for (pair, row) in tile.chunks_exact_mut(2 * TILE).enumerate() {
                for c in 0..TILE {
                    let column = column_block * TILE + c;
                    for half in 0..2 {
                        let input = k_block * K_BLOCK + 2 * pair + half;
                        if column < n && input < k {
                            row[2 * c + half] = bf16(w[column * k + input]);
                        }
                    }
                }
            }
        }
        Self {
            n,
            k,
            n_pad,
            k_pad,
            tiles,
        }
    }

    /// The tile of outputs `column_block·16..+16` and inputs `k_block·32..+32`.
    fn tile(&self, column_block: usize, k_block: usize) -> *const u16 {
        let index = (column_block * (self.k_pad / K_BLOCK) + k_block) * TILE * K_BLOCK;
        self.tiles[index..index + TILE * K_BLOCK].as_ptr()
    }
}

/// `out = x wᵀ` for `x` `[rows, k]` (row-major float32), `w` packed, `out` `[rows, n]`, in
/// parallel over blocks of 32 rows on the current rayon pool. Needs [`available`].
pub fn matmul(x: &[f32], rows: usize, w: &PackedWeight, out: &mut [f32]) {
    assert!(available(), "AMX is not available");
    bf16_blocks(
        x,
        (rows, w.k, w.n),
        out,
        (BLOCK, w.k_pad),
        |a, rows, out| {
            // SAFETY: `available` checked the CPU and the permission; every tile read or written
            // lies inside `a` (32 rows of k_pad values), `w.tiles` or `c` (see `block`).
            unsafe { block(a, w, out, rows) }
        },
    );
}

/// The tile configuration: palette 1, tiles 0–7 all 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// One block of up to 32 rows: `a` holds them as 32 × k_pad bfloat16, `out` receives
/// `rows` × n floats. Tiles 0–3 accumulate the 2 × 2 output tiles, 4–5 hold A, 6–7 hold B.
#[cfg(target_arch = "x86_64")]
unsafe fn block(a: &[u16], w: &PackedWeight, out: &mut [f32], rows: usize) {
    use std::arch::asm;
    let a_stride = w.k_pad * 2;
    let mut c = [0f32; BLOCK * BLOCK];
    asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack));
    for column_block in (0..w.n_pad / TILE).step_by(2) {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack)
        );
        for k_block in 0..w.k_pad / K_BLOCK {
            let a0 = a.as_ptr().add(k_block * K_BLOCK);
            let a1 = a0.add(TILE * w.k_pad);
            let (b0, b1) = (
                w.tile(column_block, k_block),
                w.tile(column_block + 1, k_block),
            );
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                b0 = in(reg) b0,
                b1 = in(reg) b1,
                sa = in(reg) a_stride,
                sb = in(reg) 64usize,
                options(nostack, readonly)
            );
        }
        let c0 = c.as_mut_ptr();
        asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) c0,
            c1 = in(reg) c0.add(TILE),
            c2 = in(reg) c0.add(TILE * BLOCK),
            c3 = in(reg) c0.add(TILE * BLOCK + TILE),
            s = in(reg) BLOCK * 4,
            options(nostack)
        );
        let first = column_block * TILE;
        let width = BLOCK.min(w.n - first.min(w.n));
        for (r, row) in out.chunks_exact_mut(w.n).take(rows).enumerate() {
            row[first..first + width].copy_from_slice(&c[r * BLOCK..r * BLOCK + width]);
        }
    }
    asm!("tilerelease", options(nostack));
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block(_: &[u16], _: &PackedWeight, _: &mut [f32], _: usize) {
    unreachable!("AMX exists only on x86-64");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{bf16_check, to_bf16};

    #[test]
    fn slices_round_as_single_values_do() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.731).sin() * 1e3).collect();
        let mut out = vec![0u16; xs.len()];
        to_bf16(&mut out, &xs);
        assert!(out.iter().zip(&xs).all(|(&o, &x)| o == bf16(x)));
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(f32_of(bf16(1.0)), 1.0);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa, 1.
        assert_eq!(f32_of(bf16(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(f32_of(bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert_eq!(f32_of(bf16(-2.5)), -2.5);
    }

    #[test]
    fn products_match_the_rounded_inputs_with_ragged_sizes() {
        if !available() {
            eprintln!("skipped: this CPU or kernel has no AMX");
            return;
        }
        // Rows, outputs and inputs that fill no block exactly.
        let shapes = [(45, 50, 70), (32, 32, 32), (1, 17, 5), (70, 96, 384)];
        bf16_check::assert_rounded_products(&shapes, |x, w, rows, n, k| {
            let mut out = vec![f32::NAN; rows * n];
            matmul(x, rows, &PackedWeight::new(w, n, k), &mut out);
            out
        });
    }
}
