//! Picking the next token from logits: greedy at temperature 0, otherwise temperature-scaled
//! nucleus sampling (Holtzman et al. 2020) drawn from the request's own seeded RNG.

use foil_core::rng::SplitMix64;

/// One request's sampler: its parameters and its RNG, independent of every other request.
pub(crate) struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: SplitMix64,
}

impl Sampler {
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Self {
        Sampler {
            temperature,
            top_p,
            rng: SplitMix64::new(seed),
        }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 || !self.temperature.is_finite() {
            return argmax(logits);
        }
        // softmax(logits / T), tokens sorted by probability (ties: lower id first).
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv_t = 1.0 / self.temperature as f64;
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l - max) as f64 * inv_t).exp()))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = probs.iter().map(|p| p.1).sum();
        // Keep the smallest prefix whose mass reaches top_p (at least one token).
        let top_p = if self.top_p > 0.0 && self.top_p < 1.0 {
            self.top_p as f64
        } else {
            1.0
        };
        let mut kept = 0;
        let mut mass = 0.0;
        for p in &probs {
            kept += 1;
            mass += p.1 / total;
            if mass >= top_p {
                break;
            }
        }
        let kept = &probs[..kept];
        let kept_mass: f64 = kept.iter().map(|p| p.1).sum();
        let mut u = self.rng.next_f64() * kept_mass;
        for p in kept {
            if u < p.1 {
                return p.0;
            }
            u -= p.1;
        }
        kept[kept.len() - 1].0
    }
}

/// The index of the largest logit (the lowest index among ties).
pub(crate) fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, 1.0]), 1);
        assert_eq!(Sampler::new(0.0, 1.0, 7).sample(&[0.0, 3.0, 1.0]), 1);
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_p() {
        let logits = [2.0, 1.9, -5.0, 0.5];
        let draw = |seed| {
            let mut s = Sampler::new(1.0, 0.9, seed);
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert!(draw(3).iter().all(|&t| t != 2));
        // A tiny top_p keeps only the most likely token.
        let mut s = Sampler::new(1.0, 1e-6, 1);
        assert!((0..20).all(|_| s.sample(&logits) == 0));
    }
}
