//! The no-duplicates batch sampler: batches in which no text appears twice, across all columns
//! (anchor, positive, negatives), like sentence-transformers' `NoDuplicatesBatchSampler`. A
//! repeated text inside a batch would be an in-batch "negative" equal to some row's positive.
//!
//! The rows are shuffled with [`SplitMix64`] (seeded), then each batch is filled greedily by
//! scanning the rows not yet placed, in shuffled order, taking every row none of whose texts is
//! already in the batch. Rows that clash stay at the front of the queue and go to later batches.
//! A batch that cannot be filled (no compatible row is left) is emitted short, unless
//! `drop_last`, in which case its rows are dropped for this epoch. Deterministic: the same rows,
//! batch size and seed give the same batches.

use std::collections::HashSet;

use foil_core::rng::SplitMix64;

/// Row indices grouped into batches of `batch_size` (see the module docs). Each row's texts are
/// its columns; empty rows are never placed twice, and every row is placed exactly once (or
/// dropped with a short batch under `drop_last`).
pub fn no_duplicates_batches<S: AsRef<str>>(
    rows: &[Vec<S>],
    batch_size: usize,
    seed: u64,
    drop_last: bool,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..rows.len()).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let mut taken = vec![false; order.len()];
    let mut start = 0;
    let mut batches = Vec::new();
    loop {
        while start < order.len() && taken[start] {
            start += 1;
        }
        if start == order.len() {
            break;
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut batch = Vec::with_capacity(batch_size);
        for pos in start..order.len() {
            if taken[pos] {
                continue;
            }
            let texts = &rows[order[pos]];
            if texts.iter().any(|t| seen.contains(t.as_ref())) {
                continue;
            }
            seen.extend(texts.iter().map(AsRef::as_ref));
            taken[pos] = true;
            batch.push(order[pos]);
            if batch.len() == batch_size {
                break;
            }
        }
        if batch.len() == batch_size || !drop_last {
            batches.push(batch);
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(spec: &[&[&str]]) -> Vec<Vec<String>> {
        spec.iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    fn assert_no_duplicates(rows: &[Vec<String>], batches: &[Vec<usize>]) {
        for batch in batches {
            let mut seen = HashSet::new();
            for &r in batch {
                let own: HashSet<&str> = rows[r].iter().map(String::as_str).collect();
                for t in own {
                    assert!(seen.insert(t), "\"{t}\" twice in batch {batch:?}");
                }
            }
        }
    }

    #[test]
    fn no_text_twice_in_a_batch_and_every_row_placed_once() {
        // 40 rows over a small vocabulary of passages, so clashes are frequent.
        let rows: Vec<Vec<String>> = (0..40)
            .map(|i| {
                vec![
                    format!("q{i}"),
                    format!("p{}", i % 13),
                    format!("p{}", (i * 7 + 3) % 13),
                ]
            })
            .collect();
        let batches = no_duplicates_batches(&rows, 4, 42, false);
        assert_no_duplicates(&rows, &batches);
        let mut placed: Vec<usize> = batches.iter().flatten().copied().collect();
        placed.sort();
        assert_eq!(placed, (0..40).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 4));
        // Deterministic, and the seed matters.
        assert_eq!(batches, no_duplicates_batches(&rows, 4, 42, false));
        assert_ne!(batches, no_duplicates_batches(&rows, 4, 43, false));
    }

    #[test]
    fn clashing_rows_go_to_later_batches() {
        // Rows 0..3 share the positive "p": at most one of them per batch.
        let rows = rows(&[
            &["a", "p"],
            &["b", "p"],
            &["c", "p"],
            &["d", "x"],
            &["e", "y"],
            &["f", "z"],
        ]);
        let batches = no_duplicates_batches(&rows, 2, 7, false);
        assert_no_duplicates(&rows, &batches);
        for batch in &batches {
            assert!(batch.iter().filter(|&&r| r < 3).count() <= 1, "{batch:?}");
        }
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 6);
        // Three rows share "p", so at least three batches; the greedy fill may need a fourth.
        assert!((3..=4).contains(&batches.len()), "{batches:?}");
    }

    #[test]
    fn short_batches_are_kept_or_dropped() {
        let rows = rows(&[&["a", "p"], &["b", "p"], &["c", "p"], &["d", "q"]]);
        let kept = no_duplicates_batches(&rows, 2, 1, false);
        assert_eq!(kept.iter().map(Vec::len).sum::<usize>(), 4);
        let dropped = no_duplicates_batches(&rows, 2, 1, true);
        assert!(dropped.iter().all(|b| b.len() == 2));
        assert_no_duplicates(&rows, &dropped);
        assert!(no_duplicates_batches::<String>(&[], 3, 0, false).is_empty());
    }

    #[test]
    fn a_row_repeating_its_own_text_is_placed() {
        let rows = rows(&[&["same", "same"], &["other", "x"]]);
        let batches = no_duplicates_batches(&rows, 2, 0, false);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 2);
    }
}
