//! A streaming line reader for foil's text formats: LF or CRLF endings, an optional UTF-8 byte
//! order mark on the first line, and invalid UTF-8 reported with its line number instead of
//! being replaced or dropped.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One line of a file, without its line ending.
#[derive(Debug)]
pub enum Line<'a> {
    /// A line that is valid UTF-8.
    Text(&'a str),
    /// A line that is not valid UTF-8; holds the offset of the first bad byte.
    InvalidUtf8 { valid_up_to: usize, lossy: String },
}

/// Reads a file line by line, reusing one buffer, and counts lines from 1.
pub struct LineReader<R> {
    path: PathBuf,
    inner: R,
    buf: Vec<u8>,
    line_no: u64,
}

impl LineReader<BufReader<File>> {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self::new(path, BufReader::with_capacity(1 << 16, file)))
    }
}

impl<R: BufRead> LineReader<R> {
    /// Wraps a reader; `path` is only used in messages.
    pub fn new(path: &Path, inner: R) -> Self {
        Self {
            path: path.to_path_buf(),
            inner,
            buf: Vec::with_capacity(1024),
            line_no: 0,
        }
    }

    /// The path given at construction.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the next line; returns `None` at the end of the file. The line number of the
    /// returned line is [`LineReader::line_no`].
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>> {
        self.buf.clear();
        let n = self
            .inner
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        let mut bytes = &self.buf[..];
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest;
        }
        if let Some(rest) = bytes.strip_suffix(b"\r") {
            bytes = rest;
        }
        if self.line_no == 1 {
            if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
                bytes = rest;
            }
        }
        Ok(Some(match std::str::from_utf8(bytes) {
            Ok(text) => Line::Text(text),
            Err(e) => Line::InvalidUtf8 {
                valid_up_to: e.valid_up_to(),
                lossy: String::from_utf8_lossy(bytes).into_owned(),
            },
        }))
    }

    /// The number of the line last returned by [`LineReader::next_line`], counted from 1.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }
}

/// Reads all of `reader` into a string, for small files such as fixtures in tests.
pub fn read_to_string(path: &Path) -> Result<String> {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|e| Error::io(path, e))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8]) -> Vec<String> {
        let mut r = LineReader::new(Path::new("t"), bytes);
        let mut out = Vec::new();
        while let Some(line) = r.next_line().unwrap() {
            out.push(match line {
                Line::Text(t) => t.to_string(),
                Line::InvalidUtf8 { valid_up_to, .. } => format!("<bad at {valid_up_to}>"),
            });
        }
        out
    }

    #[test]
    fn handles_bom_crlf_and_missing_final_newline() {
        assert_eq!(lines(b"\xEF\xBB\xBFa\r\nb\n\nc"), vec!["a", "b", "", "c"]);
    }

    #[test]
    fn reports_invalid_utf8_position() {
        assert_eq!(lines(b"ok\nab\xFFc\n"), vec!["ok", "<bad at 2>"]);
    }
}
