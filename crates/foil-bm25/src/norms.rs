//! Lucene's lossy document-length norms.
//!
//! Lucene stores each document's length (its number of indexed tokens) in one byte, with
//! `SmallFloat.intToByte4`: lengths below 24 exactly, longer ones as a 4-bit-mantissa float, so
//! a 130-token document is scored as if it had 128 tokens. BM25 in Lucene, and so in Anserini,
//! uses the decoded length; foil does the same so that its scores match Anserini's.

/// Lengths below this are stored exactly.
const NUM_FREE_VALUES: u32 = 24;

/// A non-negative integer as a float with a 3-bit explicit mantissa (Lucene's `longToInt4`).
fn long_to_int4(i: u64) -> u32 {
    let num_bits = 64 - i.leading_zeros();
    if num_bits < 4 {
        return i as u32; // subnormal: stored as is
    }
    let shift = num_bits - 4;
    let mantissa = ((i >> shift) & 0x07) as u32; // drop the implicit leading bit
    mantissa | ((shift + 1) << 3)
}

/// The inverse of [`long_to_int4`] (Lucene's `int4ToLong`).
fn int4_to_long(i: u32) -> u64 {
    let bits = (i & 0x07) as u64;
    let shift = (i >> 3) as i32 - 1;
    if shift == -1 {
        bits
    } else {
        (bits | 0x08) << shift
    }
}

/// Encodes a document length into Lucene's norm byte (`SmallFloat.intToByte4`).
pub fn encode_length(length: u32) -> u8 {
    if length < NUM_FREE_VALUES {
        length as u8
    } else {
        (NUM_FREE_VALUES + long_to_int4((length - NUM_FREE_VALUES) as u64)) as u8
    }
}

/// Decodes a norm byte into the length BM25 uses (`SmallFloat.byte4ToInt`).
pub fn decode_length(norm: u8) -> u32 {
    let i = norm as u32;
    if i < NUM_FREE_VALUES {
        i
    } else {
        (NUM_FREE_VALUES as u64 + int4_to_long(i - NUM_FREE_VALUES)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_lengths_are_exact_and_the_largest_fits_a_byte() {
        for len in 0..24 {
            assert_eq!(decode_length(encode_length(len)), len);
        }
        assert_eq!(encode_length(i32::MAX as u32), 255);
    }

    #[test]
    fn decoding_rounds_down_and_is_monotone() {
        let mut prev = 0;
        for len in 0..100_000u32 {
            let dec = decode_length(encode_length(len));
            assert!(dec <= len, "{len} decodes to {dec}");
            assert!(dec >= prev);
            // A 4-bit mantissa loses at most 1/8 of the value.
            assert!(
                (len - dec) as f64 <= len as f64 / 8.0 + 1.0,
                "{len} -> {dec}"
            );
            prev = dec;
        }
        assert_eq!(decode_length(encode_length(130)), 128);
    }
}
