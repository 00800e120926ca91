//! The whole schedule up front: the batches of every epoch, cut by the no-duplicates sampler
//! seeded by (seed, epoch), and the learning rate of each step.

use foil_train::{no_duplicates_batches, LinearSchedule};

use super::rows::Row;
use super::TrainConfig;

/// The steps of a run.
pub(super) struct Plan {
    /// Row indices of each step's batch.
    pub batches: Vec<Vec<usize>>,
    /// Steps to run (all batches, or `max_steps`).
    pub total: u64,
    pub schedule: LinearSchedule,
}

pub(super) fn plan(config: &TrainConfig, rows: &[Row]) -> Plan {
    let texts: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| {
            std::iter::once(r.anchor.as_str())
                .chain(std::iter::once(r.positive.as_str()))
                .chain(r.negatives.iter().map(String::as_str))
                .collect()
        })
        .collect();
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for epoch in 0..config.epochs.max(1) {
        let seed = foil_core::rng::derive(config.seed, epoch as u64);
        batches.extend(
            no_duplicates_batches(&texts, config.batch_size, seed, false)
                .into_iter()
                .filter(|b| b.len() >= 2),
        );
    }
    let total = config
        .max_steps
        .map_or(batches.len() as u64, |m| m.min(batches.len() as u64));
    let schedule = LinearSchedule {
        base_lr: config.lr,
        warmup_steps: (total as f64 * config.warmup_ratio).round() as u64,
        total_steps: total,
    };
    Plan {
        batches,
        total,
        schedule,
    }
}
