//! The [`Progress`] trait: how a long stage reports how far it is, without knowing whether a
//! terminal progress bar, a log or nothing at all is listening.

/// Receives progress of long work. Implementations must be cheap to call often.
pub trait Progress: Sync {
    /// A phase starts; `total` is the number of units if known.
    fn begin(&self, phase: &str, total: Option<u64>);
    /// `done` units of the current phase are finished.
    fn update(&self, done: u64);
    /// The current phase is over.
    fn end(&self);
}

/// Ignores all progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _phase: &str, _total: Option<u64>) {}
    fn update(&self, _done: u64) {}
    fn end(&self) {}
}
