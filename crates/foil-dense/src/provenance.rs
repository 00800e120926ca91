//! What a store's vectors are: which encoder made them, from which kind of text and, for a
//! `foil encode` output, from which input. A store records it in `header.json`, and a reader
//! that is about to use the vectors asks [`Provenance::matches`] before it trusts them.
//!
//! Format 3 stores write it as a record:
//!
//! ```text
//! "provenance": {"encoder": "<fingerprint>", "kind": "passage",
//!                "input": {"sha256": "…", "limit": null}}
//! ```
//!
//! Formats 1 and 2 wrote one string, `<fingerprint>|kind=<Query|Passage>` followed, for a
//! `foil encode` output, by `|input=<sha256>|limit=<Some(n)|None>`;
//! [`Provenance::parse_legacy`] reads it, so those stores stay readable.

use std::fmt;

use foil_core::TextKind;
use serde::{Deserialize, Serialize};

/// What made a store's vectors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Provenance {
    /// The encoder's fingerprint ([`foil_core::Encoder::fingerprint`]): model, weights and
    /// every setting that changes a vector.
    pub encoder: String,
    /// Whether queries or passages were encoded (prompts differ).
    pub kind: TextKind,
    /// The encoded file, for a `foil encode` output (the embedding cache holds texts from
    /// anywhere, so it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<EncodedInput>,
}

/// The file a `foil encode` store was made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EncodedInput {
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Only its first rows were encoded.
    pub limit: Option<usize>,
}

impl Provenance {
    /// Vectors of `kind` texts by the encoder with `fingerprint`.
    pub fn new(fingerprint: impl Into<String>, kind: TextKind) -> Self {
        Provenance {
            encoder: fingerprint.into(),
            kind,
            input: None,
        }
    }

    /// The same, made from `input`.
    pub fn with_input(mut self, sha256: impl Into<String>, limit: Option<usize>) -> Self {
        self.input = Some(EncodedInput {
            sha256: sha256.into(),
            limit,
        });
        self
    }

    /// Whether these vectors are what the encoder with `fingerprint` makes of `kind` texts,
    /// whatever input they came from.
    pub fn matches(&self, fingerprint: &str, kind: TextKind) -> bool {
        self.encoder == fingerprint && self.kind == kind
    }

    /// The string formats 1 and 2 stored. The embedding cache still names its folders by a
    /// hash of it, so caches made before format 3 are found.
    pub fn legacy_string(&self) -> String {
        let mut s = format!("{}|kind={:?}", self.encoder, self.kind);
        if let Some(input) = &self.input {
            s.push_str(&format!("|input={}|limit={:?}", input.sha256, input.limit));
        }
        s
    }

    /// Reads the string of a format 1 or 2 header; `None` if it is not one foil wrote.
    pub fn parse_legacy(s: &str) -> Option<Provenance> {
        let (encoder, rest) = s.rsplit_once("|kind=")?;
        let mut parts = rest.split('|');
        let kind = match parts.next()? {
            "Query" => TextKind::Query,
            "Passage" => TextKind::Passage,
            _ => return None,
        };
        let provenance = Provenance::new(encoder, kind);
        match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => Some(provenance),
            (Some(input), Some(limit), None) => {
                let sha256 = input.strip_prefix("input=")?;
                let limit = match limit.strip_prefix("limit=")? {
                    "None" => None,
                    n => Some(n.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok()?),
                };
                Some(provenance.with_input(sha256, limit))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            TextKind::Query => "queries",
            TextKind::Passage => "passages",
        };
        write!(f, "{kind} by {}", self.encoder)?;
        if let Some(input) = &self.input {
            write!(f, " from input sha256 {}", input.sha256)?;
            if let Some(n) = input.limit {
                write!(f, " (first {n} rows)")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_strings_parse_back_to_what_wrote_them() {
        let cases = [
            Provenance::new("local;model=MiniLM;sha=ab|cd", TextKind::Passage),
            Provenance::new("openai;url=http://x", TextKind::Query).with_input("00ff", None),
            Provenance::new("m", TextKind::Passage).with_input("11", Some(500)),
        ];
        for p in cases {
            let s = p.legacy_string();
            assert_eq!(Provenance::parse_legacy(&s), Some(p), "{s}");
        }
        assert_eq!(
            Provenance::parse_legacy("m|kind=Passage|input=ab|limit=None").map(|p| p.input),
            Some(Some(EncodedInput {
                sha256: "ab".into(),
                limit: None
            }))
        );
        for bad in [
            "fake-encoder@1",
            "m|kind=Doc",
            "m|kind=Query|input=ab",
            "m|kind=Query|x|y",
        ] {
            assert_eq!(Provenance::parse_legacy(bad), None, "{bad}");
        }
    }

    #[test]
    fn matches_the_encoder_and_kind_whatever_the_input() {
        let p = Provenance::new("m", TextKind::Passage).with_input("ab", Some(3));
        assert!(p.matches("m", TextKind::Passage));
        assert!(!p.matches("m", TextKind::Query));
        assert!(!p.matches("m2", TextKind::Passage));
        assert_eq!(
            p.to_string(),
            "passages by m from input sha256 ab (first 3 rows)"
        );
    }
}
