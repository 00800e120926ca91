//! A team of threads that stay awake between the many short parallel steps of a forward call.
//!
//! Decoding a token runs ~150 parallel steps (matrix products, attention, the feed-forward's
//! gate) of a few to a few hundred microseconds each, with short serial work in between. On a
//! rayon pool the idle worker goes to sleep between steps, and each step first has to wake it:
//! on the 2-vCPU VM foil is benchmarked on, a parallel call after 100 µs of serial work cost
//! ~14 µs of dispatch on rayon against ~2 µs for a thread spinning on a shared counter (and a
//! sleeping vCPU is also at the mercy of the host's scheduler). llama.cpp's threads spin the
//! same way between the operations of its graph.
//!
//! A [`Team`] holds `threads - 1` helper threads. A forward call [`Team::enter`]s it; within
//! that call, [`map`] and [`for_each_chunk_mut`] hand their parts to the team: the caller
//! publishes a job, and it and the helpers claim parts from one atomic word until none are
//! left. Helpers spin for [`SPIN`] after their last part, then park until the next job.
//! Outside a team (or when another call holds it) the same functions run on rayon, so every
//! caller gets the same results: each part writes only its own output, whichever thread runs
//! it.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// How long a helper spins for the next job before it parks.
const SPIN: Duration = Duration::from_millis(1);

/// The caller's closure, as the job's parts call it.
type Part<'a> = &'a (dyn Fn(usize) + Sync);

/// Bits of [`Shared::state`] for a job's part count and for its next unclaimed part.
const PART_BITS: u32 = 20;
const PART_MASK: u64 = (1 << PART_BITS) - 1;

/// The job word: epoch, part count and next unclaimed part.
#[derive(Clone, Copy)]
struct State(u64);

impl State {
    fn new(epoch: u64, parts: usize) -> Self {
        State((epoch << (2 * PART_BITS)) | ((parts as u64) << PART_BITS))
    }
    fn epoch(self) -> u64 {
        self.0 >> (2 * PART_BITS)
    }
    fn parts(self) -> u64 {
        (self.0 >> PART_BITS) & PART_MASK
    }
    fn next(self) -> u64 {
        self.0 & PART_MASK
    }
}

/// What the caller and the helpers share.
struct Shared {
    /// The job, as a [`State`]. A part is claimed by a compare-and-swap of the whole word, so
    /// a claim always sees its own job's epoch and part count: a helper still holding an old
    /// epoch can never claim (and run) a part of a newer job, nor a part past a job's end.
    state: AtomicU64,
    /// Parts of the current job that have finished (or panicked).
    finished: AtomicUsize,
    /// A pointer to the caller's `Part`, valid while the job has unfinished parts.
    job: AtomicPtr<()>,
    /// Whether a part panicked.
    panicked: AtomicBool,
    /// Helpers parked (or about to park) on `wake`.
    parked: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

/// Threads that run the parallel parts of one forward call at a time.
pub(crate) struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    /// Held by the forward call that is using the team.
    busy: AtomicBool,
}

thread_local! {
    /// The team the current thread has entered, if any.
    static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

/// While alive, the thread that entered runs its parallel parts on the team.
pub(crate) struct Entered<'a> {
    team: Option<&'a Team>,
    previous: *const Team,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Some(team) = self.team {
            CURRENT.with(|c| c.set(self.previous));
            team.busy.store(false, Ordering::Release);
        }
    }
}

impl Team {
    /// A team of `threads` threads: the caller and `threads - 1` helpers.
    pub(crate) fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            panicked: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let helpers = (1..threads.max(1))
            .filter_map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("foil-llm-team-{i}"))
                    .spawn(move || helper(&shared))
                    .ok()
            })
            .collect();
        Team {
            shared,
            helpers,
            busy: AtomicBool::new(false),
        }
    }

    /// Threads that run a job's parts (the caller included).
    fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Makes the calling thread run its parallel parts on this team until the guard drops.
    /// If another call holds the team, the guard does nothing (that call's parts go to rayon).
    pub(crate) fn enter(&self) -> Entered<'_> {
        let free = self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if !free {
            return Entered {
                team: None,
                previous: std::ptr::null(),
            };
        }
        let previous = CURRENT.with(|c| c.replace(self as *const Team));
        Entered {
            team: Some(self),
            previous,
        }
    }

    /// Calls `f(0..parts)`, spread over the team; returns when every part has finished.
    fn run(&self, parts: usize, f: Part) {
        let shared = &*self.shared;
        if parts <= 1 {
            // Nothing to share: run it here, as rayon would, without publishing a job.
            (0..parts).for_each(f);
            return;
        }
        assert!(
            parts as u64 <= PART_MASK,
            "{parts} parts in one parallel step"
        );
        // `f` lives on this frame until every part has finished (waited for below).
        let job: *const Part = &f;
        shared.job.store(job as *mut (), Ordering::Relaxed);
        shared.finished.store(0, Ordering::Relaxed);
        let epoch = State(shared.state.load(Ordering::Relaxed)).epoch() + 1;
        let epoch = epoch & ((1 << (64 - 2 * PART_BITS)) - 1);
        shared
            .state
            .store(State::new(epoch, parts).0, Ordering::SeqCst);
        if shared.parked.load(Ordering::SeqCst) > 0 {
            let _lock = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        work(shared, epoch);
        let mut spins = 0u32;
        while shared.finished.load(Ordering::Acquire) < parts {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1 << 12) {
                // A helper may have been descheduled in the middle of a part (a busy machine):
                // let it run.
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
        shared.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        if shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a parallel part of a forward call panicked");
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _lock = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Claims and runs parts of job `epoch` until none are left.
fn work(shared: &Shared, epoch: u64) {
    let mut state = State(shared.state.load(Ordering::Acquire));
    loop {
        if state.epoch() != epoch || state.next() >= state.parts() {
            return;
        }
        match shared.state.compare_exchange_weak(
            state.0,
            state.0 + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                // SAFETY: part `state.next()` of job `epoch` is claimed and not yet finished,
                // so the caller is still waiting inside `Team::run` with `f` alive, and `job`
                // points at it (stored before the job's state was published, which this
                // compare-and-swap read).
                let f = unsafe { *(shared.job.load(Ordering::Relaxed) as *const Part) };
                let part = state.next() as usize;
                if panic::catch_unwind(AssertUnwindSafe(|| f(part))).is_err() {
                    shared.panicked.store(true, Ordering::Relaxed);
                }
                shared.finished.fetch_add(1, Ordering::Release);
                state = State(shared.state.load(Ordering::Acquire));
            }
            Err(now) => state = State(now),
        }
    }
}

/// A helper's life: wait for a new epoch (spinning, then parked), work on it, repeat.
fn helper(shared: &Shared) {
    let epoch_now = || State(shared.state.load(Ordering::Acquire)).epoch();
    let mut seen = epoch_now();
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let epoch = epoch_now();
            if epoch != seen {
                break epoch;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && started.elapsed() > SPIN {
                let lock = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
                shared.parked.fetch_add(1, Ordering::SeqCst);
                // Checked again under the lock: the caller publishes, then looks at `parked`.
                let guard = if State(shared.state.load(Ordering::SeqCst)).epoch() == seen
                    && !shared.stop.load(Ordering::SeqCst)
                {
                    shared.wake.wait(lock).unwrap_or_else(|e| e.into_inner())
                } else {
                    lock
                };
                shared.parked.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
                spins = 0;
                continue;
            }
            std::hint::spin_loop();
        };
        seen = epoch;
        work(shared, epoch);
    }
}

/// The team the current thread has entered.
fn current() -> Option<&'static Team> {
    // SAFETY: the pointer is set by `Team::enter` and cleared when its guard drops, which
    // borrows the team: while it is set, the team is alive.
    CURRENT.with(|c| unsafe { c.get().as_ref() })
}

/// Threads a parallel step can use: the entered team's, or the rayon pool's.
pub(crate) fn threads() -> usize {
    current().map_or_else(rayon::current_num_threads, Team::threads)
}

/// `f(0..n)`, in parallel, collected in order.
pub(crate) fn map<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let Some(team) = current() else {
        return (0..n).into_par_iter().map(&f).collect();
    };
    let slots: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    team.run(n, &|i| {
        let r = f(i);
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    });
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every part ran")
        })
        .collect()
}

/// `f(i, chunk)` for every chunk `i` of `size` items of `data` (the last may be shorter), in
/// parallel. On a team, runs of consecutive chunks make a part (a few parts per thread).
pub(crate) fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let Some(team) = current() else {
        data.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
        return;
    };
    let chunks = data.len().div_ceil(size);
    let parts = chunks.min(8 * team.threads());
    let per_part = chunks.div_ceil(parts.max(1));
    let runs: Vec<Mutex<&mut [T]>> = data.chunks_mut(per_part * size).map(Mutex::new).collect();
    team.run(runs.len(), &|p| {
        let mut run = runs[p].lock().unwrap_or_else(|e| e.into_inner());
        for (k, chunk) in run.chunks_mut(size).enumerate() {
            f(p * per_part + k, chunk);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_run_once_each_on_a_team_and_on_rayon() {
        let team = Team::new(3);
        for entered in [true, false] {
            let _guard = entered.then(|| team.enter());
            // Many jobs in a row, with and without pauses long enough for helpers to park.
            for round in 0..200 {
                if round % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(3));
                }
                let n = 1 + round % 37;
                let got = map(n, |i| i * i + round);
                assert_eq!(got, (0..n).map(|i| i * i + round).collect::<Vec<_>>());
                let mut data: Vec<usize> = vec![0; 5 * n + 3];
                for_each_chunk_mut(&mut data, 5, |i, c| c.iter_mut().for_each(|v| *v += i + 1));
                let want: Vec<usize> = (0..data.len()).map(|k| k / 5 + 1).collect();
                assert_eq!(data, want, "round {round}");
            }
        }
    }

    #[test]
    fn a_second_caller_runs_on_rayon_while_the_team_is_held() {
        let team = Team::new(2);
        let _first = team.enter();
        std::thread::scope(|s| {
            s.spawn(|| {
                let second = team.enter();
                assert!(second.team.is_none());
                assert!(current().is_none());
                assert_eq!(map(4, |i| i + 1), vec![1, 2, 3, 4]);
            });
        });
        assert!(std::ptr::eq(current().unwrap(), &team));
    }

    #[test]
    fn a_panicking_part_panics_the_caller_and_the_team_goes_on() {
        let team = Team::new(2);
        let _guard = team.enter();
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            map(16, |i| if i == 11 { panic!("part 11") } else { i })
        }));
        assert!(caught.is_err());
        assert_eq!(map(3, |i| i), vec![0, 1, 2]);
    }
}
