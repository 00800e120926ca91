//! Running a stage's parallel work on a thread pool of the size the user asked for.

use foil_core::{Error, Result};

/// Runs `f` on a rayon pool of `threads` threads (all cores when `None`).
pub fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> Result<T> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::config("threads", "must be at least 1"));
        }
        builder = builder.num_threads(n);
        // candle runs its elementwise operations on a pool of its own, sized once per process
        // from CANDLE_NUM_THREADS (else every core): the same size as this one unless it is set.
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        }
    }
    let pool = builder
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start thread pool: {e}")))?;
    Ok(pool.install(f))
}
