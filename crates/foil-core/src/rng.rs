//! A small seeded random number generator (SplitMix64) for every random choice foil makes:
//! the same seed gives the same sequence on every platform and in every version.

/// The seed of stream `stream` of a run seeded with `seed` (an epoch's shuffle, a request's
/// sampling): distinct streams of one seed get unrelated seeds, and the same pair always the
/// same one.
pub fn derive(seed: u64, stream: u64) -> u64 {
    seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// SplitMix64 (Steele, Lea and Flood, 2014): 64 bits of state, passes BigCrush, and is trivial to
/// reproduce in other languages.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

/// SplitMix64's increment: the state after n draws is the seed plus n times this.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function of a state.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The generator `n` draws ahead of this one, without drawing them: the state is a counter,
    /// so a long sequence can be drawn in parallel pieces that each start where they belong.
    pub fn ahead(&self, n: u64) -> Self {
        Self {
            state: self.state.wrapping_add(n.wrapping_mul(GAMMA)),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// The draw `i` places ahead (0: what [`SplitMix64::next_u64`] returns next), without
    /// drawing: a pure function of `i`, so loops over it can run in vector registers.
    #[inline(always)]
    pub fn peek(&self, i: u64) -> u64 {
        mix(self
            .state
            .wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA)))
    }

    /// A uniform float in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n` (Lemire's multiply-shift with rejection); `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ahead_skips_exactly_that_many_draws() {
        let mut drawn = SplitMix64::new(42);
        let skipped = drawn.ahead(1000);
        for _ in 0..1000 {
            drawn.next_u64();
        }
        assert_eq!(drawn.clone().next_u64(), skipped.clone().next_u64());
        assert_eq!(drawn.ahead(7).next_u64(), skipped.ahead(7).next_u64());
        let mut next = skipped.clone();
        for i in 0..5 {
            assert_eq!(skipped.peek(i), next.next_u64());
        }
    }

    #[test]
    fn matches_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0, as published with the algorithm.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..1000 {
            seen[rng.below(5) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 150), "{seen:?}");
    }
}
