//! How many failed LLM requests a run may end with and still exit 0 (`--max-failed`).
//!
//! A run whose requests failed (a server that went away, timeouts past the retries) keeps
//! what succeeded, counts the failures in its summary line and manifest, and — unless the
//! user allowed that many — exits with [`INCOMPLETE`], so that a script or scheduler sees it.
//! Rerunning the same command resumes from the cache and sends only what failed.

use std::process::ExitCode;
use std::str::FromStr;

/// The exit status of a run that ended with more failed requests than allowed.
pub const INCOMPLETE: u8 = 3;

/// `--max-failed`: a count (`10`) or a share of the requests (`5%`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxFailed {
    Count(u64),
    Share(f64),
}

impl Default for MaxFailed {
    fn default() -> Self {
        MaxFailed::Count(0)
    }
}

impl FromStr for MaxFailed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(percent) = s.strip_suffix('%') {
            let p: f64 = percent
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a share such as 5%"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{s:?}: a share must be between 0% and 100%"));
            }
            return Ok(MaxFailed::Share(p / 100.0));
        }
        s.parse()
            .map(MaxFailed::Count)
            .map_err(|_| format!("{s:?} is neither a count (10) nor a share (5%)"))
    }
}

impl MaxFailed {
    /// Whether `failed` of `requests` is within the allowance.
    pub fn allows(self, failed: u64, requests: u64) -> bool {
        match self {
            MaxFailed::Count(n) => failed <= n,
            MaxFailed::Share(share) => failed as f64 <= share * requests as f64,
        }
    }

    /// The exit status of a run that ended with `failed` of `requests` failed, after saying
    /// why on stderr when it is not 0.
    pub fn exit_code(self, what: &str, failed: u64, requests: u64) -> ExitCode {
        if self.allows(failed, requests) {
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "foil: {what}: {failed} of {requests} requests failed (allowed: {}); the output holds \
             what succeeded; rerun the same command to resume (exit status {INCOMPLETE})",
            match self {
                MaxFailed::Count(n) => n.to_string(),
                MaxFailed::Share(s) => format!("{}%", s * 100.0),
            }
        );
        ExitCode::from(INCOMPLETE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_shares_parse_and_allow_what_they_say() {
        assert_eq!("0".parse(), Ok(MaxFailed::Count(0)));
        assert_eq!("5%".parse(), Ok(MaxFailed::Share(0.05)));
        assert!("x".parse::<MaxFailed>().is_err());
        assert!("120%".parse::<MaxFailed>().is_err());
        assert!("-1".parse::<MaxFailed>().is_err());
        assert!(MaxFailed::default().allows(0, 10));
        assert!(!MaxFailed::default().allows(1, 10));
        assert!(MaxFailed::Count(2).allows(2, 10) && !MaxFailed::Count(2).allows(3, 10));
        assert!(MaxFailed::Share(0.1).allows(1, 10) && !MaxFailed::Share(0.1).allows(2, 10));
    }
}
