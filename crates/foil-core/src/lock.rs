//! Advisory locks between foil processes that share a cache, an index or an output folder.
//!
//! Every lock is the operating system's advisory file lock (`flock` on Unix, `LockFileEx` on
//! Windows, through [`std::fs::File::lock`]): it is released when the holder exits, even by
//! `kill -9`, so a crashed run never leaves a stale lock behind. A lock is taken on a file that
//! is never replaced (a folder, or a `*.lock` file next to the data); taking it on a file that
//! is renamed over would lock a file nobody else opens.
//!
//! Two modes, as for a read-write lock: many [`Mode::Shared`] holders at once, or one
//! [`Mode::Exclusive`] holder. [`Lock::acquire`] waits (and says what it waits for after a
//! moment), [`Lock::try_acquire`] answers at once, and [`Lock::output`] is the rule for an
//! output folder: a second writer is refused with an error that names the folder and, on Linux,
//! the holder's process id (read from `/proc/locks`).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// With other shared holders (readers, users of a cache).
    Shared,
    /// Alone (a writer, a compaction).
    Exclusive,
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    mode: Mode,
    // Closing the file releases the lock.
    _file: File,
}

impl Lock {
    /// Takes the lock on `path` (a folder, or a file created if missing), waiting for other
    /// holders to let go.
    pub fn acquire(path: &Path, mode: Mode) -> Result<Lock> {
        let file = open(path)?;
        match try_lock(&file, mode) {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    lock = %path.display(),
                    holder = holder_pid(path).map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    "waiting for another foil process"
                );
                let locked = match mode {
                    Mode::Shared => file.lock_shared(),
                    Mode::Exclusive => file.lock(),
                };
                locked.map_err(|e| Error::io(path, e))?;
            }
            Err(e) => return Err(Error::io(path, e)),
        }
        Ok(Lock {
            path: path.to_path_buf(),
            mode,
            _file: file,
        })
    }

    /// Takes the lock on `path` if nobody holds it in a conflicting mode; `None` otherwise.
    pub fn try_acquire(path: &Path, mode: Mode) -> Result<Option<Lock>> {
        let file = open(path)?;
        match try_lock(&file, mode) {
            Ok(true) => Ok(Some(Lock {
                path: path.to_path_buf(),
                mode,
                _file: file,
            })),
            Ok(false) => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Takes `mode` on `path` or fails at once with [`Error::Busy`] naming `path` and, where
    /// the platform tells, the holder's pid.
    pub fn require(path: &Path, mode: Mode) -> Result<Lock> {
        Lock::try_acquire(path, mode)?.ok_or_else(|| Error::Busy {
            path: path.to_path_buf(),
            pid: holder_pid(path),
        })
    }

    /// The lock of an output folder: creates the folder and holds it exclusively, so that a
    /// second process writing the same folder is refused at once.
    pub fn output(dir: &Path) -> Result<Lock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Lock::require(dir, Mode::Exclusive)
    }

    /// The locked path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mode it is held in.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

fn open(path: &Path) -> Result<File> {
    if path.is_dir() {
        // A folder is opened read-only; flock needs no write access.
        return File::open(path).map_err(|e| Error::io(path, e));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// `Ok(true)`: locked; `Ok(false)`: held by someone else.
fn try_lock(file: &File, mode: Mode) -> std::io::Result<bool> {
    let result = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    match result {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// The pid of a process holding a lock on `path`, where the platform tells (Linux lists
/// `flock` holders in `/proc/locks` by device and inode).
pub fn holder_pid(path: &Path) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let me = std::process::id();
        holders(&locks, meta.dev(), meta.ino())
            .into_iter()
            .find(|&pid| pid != me)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// The pids holding (not waiting for) a lock on the file `(dev, ino)`, from the text of
/// `/proc/locks`: `1: FLOCK  ADVISORY  WRITE 2871 fd:01:1838 0 EOF`, device numbers in hex.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn holders(locks: &str, dev: u64, ino: u64) -> Vec<u32> {
    // glibc's encoding of dev_t.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    locks
        .lines()
        .filter(|line| !line.contains("->"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "N:", kind, ADVISORY/MANDATORY, READ/WRITE, pid, dev:ino, start, end
            (fields.len() >= 6 && fields[5] == want).then(|| fields[4].parse().ok())?
        })
        .collect()
}

/// Waits up to `timeout` for `mode` on `path` (polling); `None` when it did not come. For
/// tests and for callers that must not wait forever.
pub fn acquire_within(path: &Path, mode: Mode, timeout: Duration) -> Result<Option<Lock>> {
    let until = std::time::Instant::now() + timeout;
    loop {
        if let Some(lock) = Lock::try_acquire(path, mode)? {
            return Ok(Some(lock));
        }
        if std::time::Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_holders_coexist_and_exclude_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.lock");
        let a = Lock::acquire(&path, Mode::Shared).unwrap();
        let b = Lock::try_acquire(&path, Mode::Shared).unwrap();
        assert!(b.is_some(), "two readers at once");
        assert!(Lock::try_acquire(&path, Mode::Exclusive).unwrap().is_none());
        drop(a);
        assert!(Lock::try_acquire(&path, Mode::Exclusive).unwrap().is_none());
        drop(b);
        let w = Lock::try_acquire(&path, Mode::Exclusive).unwrap().unwrap();
        assert_eq!(w.mode(), Mode::Exclusive);
        assert!(Lock::try_acquire(&path, Mode::Shared).unwrap().is_none());
    }

    #[test]
    fn a_second_output_writer_is_refused_with_the_folder_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let held = Lock::output(&out).unwrap();
        assert!(out.is_dir());
        let err = Lock::output(&out).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&out.display().to_string()), "{text}");
        assert!(text.contains("another foil process"), "{text}");
        drop(held);
        Lock::output(&out).unwrap();
    }

    #[test]
    fn a_waiting_writer_gets_the_lock_when_it_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = Lock::acquire(&path, Mode::Exclusive).unwrap();
        let p = path.clone();
        let waiter = std::thread::spawn(move || Lock::acquire(&p, Mode::Exclusive).map(|_| ()));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        drop(held);
        waiter.join().unwrap().unwrap();
        assert!(acquire_within(&path, Mode::Shared, Duration::from_secs(1))
            .unwrap()
            .is_some());
    }

    #[test]
    fn proc_locks_lines_give_the_holder_not_the_waiters() {
        // dev 0xfd01 = major 0xfd, minor 0x01.
        let text = "1: FLOCK  ADVISORY  WRITE 2871 fd:01:1838 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 2900 fd:01:1838 0 EOF\n\
                    2: FLOCK  ADVISORY  READ 17 fd:01:99 0 EOF\n\
                    3: POSIX  ADVISORY  WRITE 5 00:2b:1838 0 EOF\n";
        assert_eq!(holders(text, 0xfd01, 1838), vec![2871]);
        assert_eq!(holders(text, 0xfd01, 99), vec![17]);
        assert!(holders(text, 0xfd01, 7).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_holder_pid_is_read_from_proc_locks() {
        // A lock held by a child process (this process's own pid is never reported).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.lock");
        std::fs::write(&path, b"").unwrap();
        let mut child = std::process::Command::new("flock")
            .arg(&path)
            .args(["sleep", "5"])
            .spawn();
        let Ok(child) = child.as_mut() else {
            return; // util-linux's flock is not installed
        };
        let mut pid = None;
        for _ in 0..100 {
            pid = holder_pid(&path);
            if pid.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(pid.is_some(), "no holder found in /proc/locks");
    }
}
