//! The error type of foil-core and the `Result` alias every foil library uses.

use std::path::PathBuf;

use crate::skip::SkipReason;

/// Everything that can go wrong in foil-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed. The OS error is part of the message and not also
    /// a `source()`, so that a chain printed with `{:#}` names each cause once.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A record of an input file is invalid; `message` quotes the bad value.
    #[error("{}:{line}: {message}", file.display())]
    Input {
        file: PathBuf,
        line: u64,
        reason: SkipReason,
        message: String,
    },
    /// A file is not in the format (or the format version) foil expects.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// Another foil process holds the lock of a folder or file this one must write.
    #[error("{}: another foil process{} is writing it; wait for it to finish or choose another output", path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy { path: PathBuf, pid: Option<u32> },
    /// A setting cannot work. `field` names it as the library's configuration does
    /// (`per_query`, `eval.data`): the command line shows it as its flag (`--per-query`), and
    /// `foil experiment` users read the name their TOML file uses.
    #[error("{field}: {message}")]
    Config { field: String, message: String },
    /// A backend (the tensor library, a model runtime) failed while computing.
    #[error("{backend} failed: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
    /// The caller asked for something that cannot be done.
    #[error("{0}")]
    Invalid(String),
}

/// The tensor library's errors become [`Error::Backend`] where model or loss code returns to
/// foil: inside it, candle's own `Result` is kept, and `?` converts it once at that boundary.
#[cfg(feature = "candle")]
impl From<candle_core::Error> for Error {
    fn from(error: candle_core::Error) -> Self {
        Error::backend("a candle tensor operation", error)
    }
}

/// `Result` with foil-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// A setting that cannot work (see [`Error::Config`]).
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A failure of `backend` (see [`Error::Backend`]).
    pub fn backend(backend: &'static str, message: impl std::fmt::Display) -> Self {
        Error::Backend {
            backend,
            message: message.to_string(),
        }
    }

    /// A format error for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
