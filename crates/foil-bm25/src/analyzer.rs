//! The text analyzer of foil's BM25: turns a document or a query into index terms the way
//! Anserini's default English analyzer (`DefaultEnglishAnalyzer`, Porter stemming, which
//! mirrors Lucene's `EnglishAnalyzer`) does, so that foil's BM25 scores match Anserini's.
//!
//! The chain, in Lucene's order:
//!
//! 1. `StandardTokenizer`: Unicode UAX #29 word segmentation, keeping the segments that hold a
//!    letter, a digit, an ideograph or an emoji; tokens longer than 255 UTF-16 units are cut
//!    into pieces ([`MAX_TOKEN_LENGTH`]).
//! 2. `EnglishPossessiveFilter`: a trailing `'s`, `’s` or `＇s` (or `S`) is dropped.
//! 3. `LowerCaseFilter`: per-character simple lower-casing, as Java's
//!    `Character.toLowerCase(int)`.
//! 4. `StopFilter` with Lucene's 33 English stop words ([`ENGLISH_STOP_WORDS`]).
//! 5. `PorterStemFilter` ([`crate::porter`]).
//!
//! Segmentation uses the `unicode-segmentation` crate, with a fast path for runs of ASCII text
//! that applies the same UAX #29 rules directly (tested against the crate). Lucene's grammar
//! additions are reproduced: runs of South-East Asian letters (Thai, Lao, Myanmar, Khmer, …,
//! which UAX #29 leaves to a dictionary) are kept together as one token, and emoji (characters
//! with `Extended_Pictographic`, including `©`, `®` and `™`, flag pairs and keycaps) are
//! tokens of their own. Known differences from Lucene 9's tokenizer, all far from English text:
//!
//! - Lucene's tables are Unicode 9 (emoji: 14), `unicode-segmentation`'s are newer, so
//!   characters assigned or re-classified since then may segment differently.
//! - A segment is kept when it holds an alphabetic character (Rust's `char::is_alphabetic`) or
//!   a decimal digit (general category Nd); Lucene keeps those whose word-break class is a
//!   letter or a number. The two differ on a few symbols, not on letters or digits: a lone
//!   modifier symbol of class `ALetter` such as `˂` or `˥` is a token for Lucene only, and a
//!   lone combining mark that counts as alphabetic (after a space) for foil only.
//!   Superscripts, fractions and circled numbers (`²`, `½`, `①`) are dropped by both.
//! - Emoji: a lone skin-tone modifier and a text-presentation selector (U+FE0E) after an emoji
//!   are handled as UAX #29 does (the selector stays in the token; the lone modifier is
//!   dropped), where Lucene emits the modifier and drops the selector.
//! - Tokens over 255 UTF-16 units are cut at the last character that fits and the rest is
//!   segmented again; Lucene's scanner cuts its buffer at exactly 255 units, which can differ
//!   inside the long token, and it would keep an empty term where a cut leaves only `'s`
//!   (dropped here).
//!
//! URLs and e-mail addresses are not kept whole (that is `UAX29URLEmailTokenizer`, which
//! Anserini's default does not use): `https://example.com/a_b?x=1` gives `https`,
//! `example.com`, `a_b`, `x`, `1`, and `john.doe@example.org` gives `john.doe`,
//! `example.org`. Words joined by `.`, `:` or an apostrophe stay one token (`e.g`, `u.s.a`,
//! `don't`), as do numbers with `.`, `,` or `;` (`3.5`, `1,000`); a hyphen splits
//! (`COVID-19` → `covid`, `19`).

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::porter;

/// Lucene's default maximum token length, in UTF-16 code units; longer tokens are cut.
pub const MAX_TOKEN_LENGTH: usize = 255;

/// Lucene's English stop words (`EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`), which Anserini's
/// default analyzer removes.
pub const ENGLISH_STOP_WORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// Whether `word` (lower-case) is one of [`ENGLISH_STOP_WORDS`].
pub fn is_english_stop_word(word: &str) -> bool {
    // All stop words have at most five bytes: compare them as packed integers.
    word.len() <= 5 && STOP_WORD_KEYS.contains(&pack(word.as_bytes()))
}

/// Up to seven bytes and their count packed into an integer, distinct for distinct words.
const fn pack(bytes: &[u8]) -> u64 {
    let mut key = 0u64;
    let mut i = 0;
    while i < bytes.len() {
        key = (key << 8) | bytes[i] as u64;
        i += 1;
    }
    key | (bytes.len() as u64) << 56
}

const STOP_WORD_KEYS: [u64; 33] = {
    let mut keys = [0u64; 33];
    let mut i = 0;
    while i < 33 {
        keys[i] = pack(ENGLISH_STOP_WORDS[i].as_bytes());
        i += 1;
    }
    keys
};

/// Which of the optional filters an [`Analyzer`] applies; the default is Anserini's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AnalyzerConfig {
    /// Remove Lucene's English stop words.
    pub stop_words: bool,
    /// Reduce words to their Porter stems.
    pub stem: bool,
}

impl AnalyzerConfig {
    /// Anserini's default English analysis: stop words removed, Porter stemming.
    pub const ENGLISH: AnalyzerConfig = AnalyzerConfig {
        stop_words: true,
        stem: true,
    };
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self::ENGLISH
    }
}

/// Turns text into index terms; see the module documentation for the chain of filters.
/// Serialized as its [`AnalyzerConfig`] (an index records the analyzer it was built with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Analyzer {
    config: AnalyzerConfig,
}

impl Analyzer {
    /// Anserini's default English analyzer: stop words removed, Porter stemming.
    pub fn english() -> Self {
        Self::new(AnalyzerConfig::ENGLISH)
    }

    /// An analyzer with the given filters switched on or off.
    pub fn new(config: AnalyzerConfig) -> Self {
        Self { config }
    }

    /// The filters this analyzer applies.
    pub fn config(&self) -> AnalyzerConfig {
        self.config
    }

    /// Calls `f` with every term of `text`, in order. The `&str` lives in a buffer that is
    /// reused for the next term (no allocation per term); copy it to keep it.
    pub fn for_each_token(&self, text: &str, mut f: impl FnMut(&str)) {
        let mut buf = String::with_capacity(32);
        for_each_standard_token(text, |token| self.filter(token, &mut buf, &mut f));
    }

    /// Every term of `text`, in order.
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_token(text, |t| out.push(t.to_owned()));
        out
    }

    /// Runs one tokenizer token through the possessive, lower-case, stop and stem filters.
    fn filter(&self, token: &str, buf: &mut String, f: &mut impl FnMut(&str)) {
        let token = strip_possessive(token);
        if token.is_empty() {
            return;
        }
        buf.clear();
        if token.is_ascii() {
            buf.push_str(token);
            buf.make_ascii_lowercase();
        } else {
            lowercase_into(token, buf);
        }
        if self.config.stop_words && is_english_stop_word(buf) {
            return;
        }
        if self.config.stem {
            porter::stem_in_place(buf);
        }
        f(buf);
    }
}

/// Lucene's `EnglishPossessiveFilter`: drops a final `'s`, `’s` or `＇s` (any case of `s`).
fn strip_possessive(token: &str) -> &str {
    match token.strip_suffix(['s', 'S']) {
        Some(rest) => rest
            .strip_suffix(['\'', '\u{2019}', '\u{FF07}'])
            .unwrap_or(token),
        None => token,
    }
}

/// Appends `token` lower-cased character by character, as Java's
/// `Character.toLowerCase(int)` does: Rust's mapping of a single `char` agrees with Java's
/// simple case mapping except for U+0130 (`İ`), which Java maps to a plain `i`.
fn lowercase_into(token: &str, buf: &mut String) {
    for c in token.chars() {
        if c == '\u{130}' {
            buf.push('i');
        } else {
            buf.extend(c.to_lowercase());
        }
    }
}

/// Calls `emit` with every token Lucene's `StandardTokenizer` makes of `text`, in order and
/// as written (before the possessive, case, stop-word and stemming filters).
pub fn for_each_standard_token(text: &str, mut emit: impl FnMut(&str)) {
    // UAX #29 always breaks around white space (only a combining mark right after a space
    // attaches to it, see the module notes), so text can be cut at white space
    // and the pieces segmented on their own: ASCII stretches by the fast path, and each
    // white-space-delimited run that holds a non-ASCII character by `unicode-segmentation`.
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let Some(offset) = bytes[i..].iter().position(|b| !b.is_ascii()) else {
            ascii_tokens(&text[i..], &mut emit);
            return;
        };
        let non_ascii = i + offset;
        let run_start = bytes[i..non_ascii]
            .iter()
            .rposition(|&b| is_ascii_space(b))
            .map_or(i, |p| i + p + 1);
        let run_end = bytes[non_ascii..]
            .iter()
            .position(|&b| is_ascii_space(b))
            .map_or(bytes.len(), |p| non_ascii + p);
        // Cuts next to ASCII bytes (or at the ends) are char boundaries.
        ascii_tokens(&text[i..run_start], &mut emit);
        unicode_tokens(&text[run_start..run_end], &mut emit);
        i = run_end;
    }
}

/// ASCII white space, including the vertical tab and form feed (UAX #29 `Newline`).
fn is_ascii_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C)
}

/// UAX #29 `Word_Break` classes as they occur in ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Other,
    /// `A-Z a-z` (`ALetter`).
    Letter,
    /// `0-9` (`Numeric`).
    Digit,
    /// `_` (`ExtendNumLet`).
    Connector,
    /// `:` (`MidLetter`).
    MidLetter,
    /// `.` and `'` (`MidNumLet`, `Single_Quote`).
    MidNumLet,
    /// `,` and `;` (`MidNum`).
    MidNum,
}

const ASCII_CLASS: [Class; 128] = {
    let mut table = [Class::Other; 128];
    let mut b = 0;
    while b < 128 {
        table[b] = match b as u8 {
            b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
            b'0'..=b'9' => Class::Digit,
            b'_' => Class::Connector,
            b':' => Class::MidLetter,
            b'.' | b'\'' => Class::MidNumLet,
            b',' | b';' => Class::MidNum,
            _ => Class::Other,
        };
        b += 1;
    }
    table
};

fn ascii_class(b: u8) -> Class {
    ASCII_CLASS[usize::from(b & 0x7F)]
}

/// Whether a byte is an ASCII letter, digit or `_`: the bytes that always join each other.
const WORD_PART: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = matches!(
            ASCII_CLASS[b],
            Class::Letter | Class::Digit | Class::Connector
        );
        b += 1;
    }
    table
};

/// The word tokens of ASCII text, by the UAX #29 rules that apply to ASCII: letters, digits
/// and `_` join each other (WB5, WB8–WB10, WB13a/b); `.`, `'` and `:` join two letters
/// (WB6/7); `.`, `'`, `,` and `;` join two digits (WB11/12); anything else, white space
/// included, breaks.
fn ascii_tokens(text: &str, emit: &mut impl FnMut(&str)) {
    let b = text.as_bytes();
    let n = b.len();
    let is_part = |i: usize| WORD_PART[usize::from(b[i])];
    let mut i = 0;
    loop {
        while i < n && !is_part(i) {
            i += 1;
        }
        if i >= n {
            return;
        }
        let start = i;
        loop {
            while i < n && is_part(i) {
                i += 1;
            }
            if i + 1 >= n {
                break;
            }
            let (before, mid, after) = (
                ascii_class(b[i - 1]),
                ascii_class(b[i]),
                ascii_class(b[i + 1]),
            );
            let letters = before == Class::Letter
                && after == Class::Letter
                && matches!(mid, Class::MidLetter | Class::MidNumLet);
            let digits = before == Class::Digit
                && after == Class::Digit
                && matches!(mid, Class::MidNum | Class::MidNumLet);
            if !(letters || digits) {
                break;
            }
            i += 2;
        }
        let token = &text[start..i];
        // Only a run of `_` alone is no word.
        if b[start] == b'_' && token.bytes().all(|c| c == b'_') {
            continue;
        }
        if token.len() <= MAX_TOKEN_LENGTH {
            emit(token);
        } else {
            emit(&token[..MAX_TOKEN_LENGTH]);
            ascii_tokens(&token[MAX_TOKEN_LENGTH..], emit);
        }
    }
}

/// The word tokens of a run without ASCII white space that holds non-ASCII text.
fn unicode_tokens(run: &str, emit: &mut impl FnMut(&str)) {
    // A pending run of South-East Asian segments (start, end), emitted as one token.
    let mut complex: Option<(usize, usize)> = None;
    for (start, segment) in run.split_word_bound_indices() {
        let end = start + segment.len();
        if segment.chars().next().is_some_and(is_complex_context) {
            complex = Some((complex.map_or(start, |(s, _)| s), end));
            continue;
        }
        if let Some((s, e)) = complex.take() {
            emit_unicode_token(&run[s..e], emit);
        }
        if is_word(segment) || is_emoji(segment) {
            emit_unicode_token(segment, emit);
        }
    }
    if let Some((s, e)) = complex {
        emit_unicode_token(&run[s..e], emit);
    }
}

/// Emits `token`, cut after [`MAX_TOKEN_LENGTH`] UTF-16 units with the rest segmented again.
fn emit_unicode_token(token: &str, emit: &mut impl FnMut(&str)) {
    // A UTF-16 unit takes at least one byte, so short tokens need no counting.
    if token.len() > MAX_TOKEN_LENGTH {
        let mut units = 0;
        for (i, c) in token.char_indices() {
            units += c.len_utf16();
            if units > MAX_TOKEN_LENGTH {
                emit(&token[..i]);
                unicode_tokens(&token[i..], emit);
                return;
            }
        }
    }
    emit(token);
}

/// Whether a UAX #29 segment is a word Lucene keeps: it holds a letter, an ideograph or a
/// decimal digit.
fn is_word(segment: &str) -> bool {
    segment
        .chars()
        .any(|c| c.is_alphabetic() || is_decimal_digit(c))
}

/// Whether `c` is a decimal digit (general category Nd).
fn is_decimal_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && in_ranges(c, DECIMAL_DIGITS))
}

/// Whether a segment is an emoji token for Lucene: an `Extended_Pictographic` character with
/// what UAX #29 attaches to it (modifiers, selectors, ZWJ sequences), a pair of regional
/// indicators (a flag) or a `#`/`*` keycap (digit keycaps are words already).
fn is_emoji(segment: &str) -> bool {
    let mut chars = segment.chars();
    match chars.next() {
        Some(c) if in_ranges(c, EXTENDED_PICTOGRAPHIC) => true,
        Some(c) if is_regional_indicator(c) => chars.next().is_some_and(is_regional_indicator),
        Some('#' | '*') => segment.contains('\u{20E3}'),
        _ => false,
    }
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

/// Whether `c` is a letter of a South-East Asian script whose words UAX #29 cannot find
/// (Unicode line-break class `SA`: Thai, Lao, Myanmar, Khmer, Tai Le, New Tai Lue, Tai Tham,
/// Tai Viet, Ahom); Lucene keeps a run of them as one token.
fn is_complex_context(c: char) -> bool {
    !c.is_ascii() && in_ranges(c, COMPLEX_CONTEXT_BLOCKS) && c.is_alphabetic()
}

fn in_ranges(c: char, ranges: &[(u32, u32)]) -> bool {
    let c = u32::from(c);
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Unicode blocks of the scripts with line-break class `SA` (their digits are excluded by the
/// alphabetic test).
const COMPLEX_CONTEXT_BLOCKS: &[(u32, u32)] = &[
    (0x0E00, 0x0EFF),   // Thai, Lao
    (0x1000, 0x109F),   // Myanmar
    (0x1780, 0x17FF),   // Khmer
    (0x1950, 0x19DF),   // Tai Le, New Tai Lue
    (0x19E0, 0x19FF),   // Khmer Symbols
    (0x1A20, 0x1AAF),   // Tai Tham
    (0xA9E0, 0xA9FF),   // Myanmar Extended-B
    (0xAA60, 0xAADF),   // Myanmar Extended-A, Tai Viet
    (0x11700, 0x1174F), // Ahom
];

/// Non-ASCII decimal digits (general category Nd, Unicode 14).
const DECIMAL_DIGITS: &[(u32, u32)] = &[
    (0x660, 0x669),
    (0x6F0, 0x6F9),
    (0x7C0, 0x7C9),
    (0x966, 0x96F),
    (0x9E6, 0x9EF),
    (0xA66, 0xA6F),
    (0xAE6, 0xAEF),
    (0xB66, 0xB6F),
    (0xBE6, 0xBEF),
    (0xC66, 0xC6F),
    (0xCE6, 0xCEF),
    (0xD66, 0xD6F),
    (0xDE6, 0xDEF),
    (0xE50, 0xE59),
    (0xED0, 0xED9),
    (0xF20, 0xF29),
    (0x1040, 0x1049),
    (0x1090, 0x1099),
    (0x17E0, 0x17E9),
    (0x1810, 0x1819),
    (0x1946, 0x194F),
    (0x19D0, 0x19D9),
    (0x1A80, 0x1A89),
    (0x1A90, 0x1A99),
    (0x1B50, 0x1B59),
    (0x1BB0, 0x1BB9),
    (0x1C40, 0x1C49),
    (0x1C50, 0x1C59),
    (0xA620, 0xA629),
    (0xA8D0, 0xA8D9),
    (0xA900, 0xA909),
    (0xA9D0, 0xA9D9),
    (0xA9F0, 0xA9F9),
    (0xAA50, 0xAA59),
    (0xABF0, 0xABF9),
    (0xFF10, 0xFF19),
    (0x104A0, 0x104A9),
    (0x10D30, 0x10D39),
    (0x11066, 0x1106F),
    (0x110F0, 0x110F9),
    (0x11136, 0x1113F),
    (0x111D0, 0x111D9),
    (0x112F0, 0x112F9),
    (0x11450, 0x11459),
    (0x114D0, 0x114D9),
    (0x11650, 0x11659),
    (0x116C0, 0x116C9),
    (0x11730, 0x11739),
    (0x118E0, 0x118E9),
    (0x11950, 0x11959),
    (0x11C50, 0x11C59),
    (0x11D50, 0x11D59),
    (0x11DA0, 0x11DA9),
    (0x16A60, 0x16A69),
    (0x16AC0, 0x16AC9),
    (0x16B50, 0x16B59),
    (0x1D7CE, 0x1D7FF),
    (0x1E140, 0x1E149),
    (0x1E2F0, 0x1E2F9),
    (0x1E950, 0x1E959),
    (0x1FBF0, 0x1FBF9),
];

/// `Extended_Pictographic` (Unicode emoji data 14.0, the version Lucene 9 is built with).
const EXTENDED_PICTOGRAPHIC: &[(u32, u32)] = &[
    (0xA9, 0xA9),
    (0xAE, 0xAE),
    (0x203C, 0x203C),
    (0x2049, 0x2049),
    (0x2122, 0x2122),
    (0x2139, 0x2139),
    (0x2194, 0x2199),
    (0x21A9, 0x21AA),
    (0x231A, 0x231B),
    (0x2328, 0x2328),
    (0x2388, 0x2388),
    (0x23CF, 0x23CF),
    (0x23E9, 0x23F3),
    (0x23F8, 0x23FA),
    (0x24C2, 0x24C2),
    (0x25AA, 0x25AB),
    (0x25B6, 0x25B6),
    (0x25C0, 0x25C0),
    (0x25FB, 0x25FE),
    (0x2600, 0x2605),
    (0x2607, 0x2612),
    (0x2614, 0x2685),
    (0x2690, 0x2705),
    (0x2708, 0x2712),
    (0x2714, 0x2714),
    (0x2716, 0x2716),
    (0x271D, 0x271D),
    (0x2721, 0x2721),
    (0x2728, 0x2728),
    (0x2733, 0x2734),
    (0x2744, 0x2744),
    (0x2747, 0x2747),
    (0x274C, 0x274C),
    (0x274E, 0x274E),
    (0x2753, 0x2755),
    (0x2757, 0x2757),
    (0x2763, 0x2767),
    (0x2795, 0x2797),
    (0x27A1, 0x27A1),
    (0x27B0, 0x27B0),
    (0x27BF, 0x27BF),
    (0x2934, 0x2935),
    (0x2B05, 0x2B07),
    (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B50),
    (0x2B55, 0x2B55),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3297),
    (0x3299, 0x3299),
    (0x1F000, 0x1F0FF),
    (0x1F10D, 0x1F10F),
    (0x1F12F, 0x1F12F),
    (0x1F16C, 0x1F171),
    (0x1F17E, 0x1F17F),
    (0x1F18E, 0x1F18E),
    (0x1F191, 0x1F19A),
    (0x1F1AD, 0x1F1E5),
    (0x1F201, 0x1F20F),
    (0x1F21A, 0x1F21A),
    (0x1F22F, 0x1F22F),
    (0x1F232, 0x1F23A),
    (0x1F23C, 0x1F23F),
    (0x1F249, 0x1F3FA),
    (0x1F400, 0x1F53D),
    (0x1F546, 0x1F64F),
    (0x1F680, 0x1F6FF),
    (0x1F774, 0x1F77F),
    (0x1F7D5, 0x1F7FF),
    (0x1F80C, 0x1F80F),
    (0x1F848, 0x1F84F),
    (0x1F85A, 0x1F85F),
    (0x1F888, 0x1F88F),
    (0x1F8AE, 0x1F8FF),
    (0x1F90C, 0x1F93A),
    (0x1F93C, 0x1F945),
    (0x1F947, 0x1FAFF),
    (0x1FC00, 0x1FFFD),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn english(text: &str) -> Vec<String> {
        Analyzer::english().tokens(text)
    }

    fn unstemmed(text: &str) -> Vec<String> {
        Analyzer::new(AnalyzerConfig {
            stop_words: true,
            stem: false,
        })
        .tokens(text)
    }

    fn raw(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_standard_token(text, |t| out.push(t.to_owned()));
        out
    }

    /// The tokenizer with the ASCII fast path switched off.
    fn raw_unicode(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut emit = |t: &str| out.push(t.to_owned());
        for run in text.split(|c: char| c.is_ascii() && is_ascii_space(c as u8)) {
            unicode_tokens(run, &mut emit);
        }
        out
    }

    #[test]
    fn possessives_are_dropped() {
        assert_eq!(english("John's"), ["john"]);
        assert_eq!(unstemmed("JAMES'S car"), ["james", "car"]);
        assert_eq!(unstemmed("Mary’s lamb"), ["mary", "lamb"]);
        assert_eq!(unstemmed("Ｍary＇s"), ["ｍary"]);
        // A plural possessive is split off by the tokenizer; `'s` inside a word stays.
        assert_eq!(unstemmed("the dogs' bowls"), ["dogs", "bowls"]);
        assert_eq!(unstemmed("it's"), Vec::<String>::new());
    }

    #[test]
    fn stop_words_are_removed() {
        assert_eq!(english("The cat is on the mat"), ["cat", "mat"]);
        assert_eq!(english("THIS AND THAT, OR NOT"), Vec::<String>::new());
        // Only Lucene's 33 words: "i", "we", "was" vs "were".
        assert_eq!(
            unstemmed("I was where we were"),
            ["i", "where", "we", "were"]
        );
        let all = Analyzer::new(AnalyzerConfig {
            stop_words: false,
            stem: false,
        });
        assert_eq!(all.tokens("The cat"), ["the", "cat"]);
        for word in ENGLISH_STOP_WORDS {
            assert!(is_english_stop_word(word), "{word}");
        }
        assert!(!is_english_stop_word("i"));
        assert!(!is_english_stop_word("\0a"));
        assert!(!is_english_stop_word("thee"));
        assert!(!is_english_stop_word("there's"));
    }

    #[test]
    fn numbers_are_kept() {
        assert_eq!(
            english("3.5 mg in 2019, 1,000 cells; p<0.05 and 10.1016/j.cell"),
            ["3.5", "mg", "2019", "1,000", "cell", "p", "0.05", "10.1016", "j.cell"]
        );
        assert_eq!(english("the 1990s"), ["1990"]);
        assert_eq!(english("covid19 IL-6"), ["covid19", "il", "6"]);
    }

    #[test]
    fn hyphens_split_words() {
        assert_eq!(english("COVID-19"), ["covid", "19"]);
        assert_eq!(english("SARS-CoV-2"), ["sar", "cov", "2"]);
        assert_eq!(english("well-known T-cell"), ["well", "known", "t", "cell"]);
    }

    #[test]
    fn apostrophes_and_dots_inside_words() {
        assert_eq!(
            unstemmed("don't O'Neil's rock'n'roll"),
            ["don't", "o'neil", "rock'n'roll"]
        );
        assert_eq!(unstemmed("e.g. U.S.A. a:b"), ["e.g", "u.s.a", "a:b"]);
        assert_eq!(unstemmed("'quoted' end."), ["quoted", "end"]);
        assert_eq!(
            unstemmed("snake_case __init__ ___"),
            ["snake_case", "__init__"]
        );
    }

    #[test]
    fn unicode_text() {
        assert_eq!(english("Ärger ÉCLAIR naïve"), ["ärger", "éclair", "naïv"]);
        assert_eq!(unstemmed("İstanbul ΣΟΦΙΑ"), ["istanbul", "σοφια"]);
        assert_eq!(
            unstemmed("β-catenin α7 TGF‐β1"),
            ["β", "catenin", "α7", "tgf", "β1"]
        );
        // Ideographs and hiragana are one token each; katakana and hangul runs stay whole.
        assert_eq!(raw("中文字"), ["中", "文", "字"]);
        assert_eq!(raw("ひらがな"), ["ひ", "ら", "が", "な"]);
        assert_eq!(raw("カタカナ 한국어"), ["カタカナ", "한국어"]);
        // South-East Asian runs are one token, as in Lucene.
        assert_eq!(raw("ภาษาไทย ok"), ["ภาษาไทย", "ok"]);
        // Superscripts, fractions and symbols are no words.
        assert_eq!(raw("x² m³ ½ ① 5 ± 2 °C"), ["x", "m", "5", "2", "C"]);
        // Soft hyphens and zero-width joiners are ignored inside a word (UAX #29 WB4).
        assert_eq!(raw("co\u{AD}operate"), ["co\u{AD}operate"]);
    }

    #[test]
    fn emoji_are_tokens() {
        assert_eq!(
            raw("I ❤️ Gleevec® and 👍🏽, 🇫🇷 #️⃣ 1️⃣"),
            [
                "I",
                "❤\u{FE0F}",
                "Gleevec",
                "®",
                "and",
                "👍🏽",
                "🇫🇷",
                "#\u{FE0F}\u{20E3}",
                "1\u{FE0F}\u{20E3}"
            ]
        );
        assert_eq!(english("Imatinib™"), ["imatinib", "™"]);
    }

    #[test]
    fn urls_and_emails_are_split() {
        assert_eq!(
            unstemmed("see https://example.com/a_b?x=1 or mail john.doe@example.org"),
            [
                "see",
                "https",
                "example.com",
                "a_b",
                "x",
                "1",
                "mail",
                "john.doe",
                "example.org"
            ]
        );
    }

    #[test]
    fn long_tokens_are_cut() {
        let long = "a".repeat(600);
        let tokens = raw(&long);
        assert_eq!(
            tokens.iter().map(String::len).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        let long = "é".repeat(300);
        let tokens = raw(&long);
        assert_eq!(
            tokens.iter().map(|t| t.chars().count()).collect::<Vec<_>>(),
            [255, 45]
        );
    }

    #[test]
    fn scifact_sentence() {
        let text = "Alterations of the architecture of cerebral white matter in the developing \
                    human brain can affect cortical development and result in functional \
                    disabilities.";
        assert_eq!(
            english(text),
            [
                "alter",
                "architectur",
                "cerebr",
                "white",
                "matter",
                "develop",
                "human",
                "brain",
                "can",
                "affect",
                "cortic",
                "develop",
                "result",
                "function",
                "disabl"
            ]
        );
    }

    #[test]
    fn empty_and_blank_text() {
        assert!(english("").is_empty());
        assert!(english(" \t\r\n ... -- !!").is_empty());
    }

    #[test]
    fn ascii_fast_path_agrees_with_uax29() {
        // Deterministic pseudo-random strings over the ASCII characters that matter, with a
        // few non-ASCII ones so that the driver switches between the two paths.
        const ALPHABET: &[char] = &[
            'a', 'Z', 'y', '0', '9', '_', '.', '\'', ':', ',', ';', '"', '-', '/', ' ', '\t', '\n',
            '\r', '(', '@', '#', '*', 'a', '1', 'é', 'α', '\u{2019}', '\u{301}', '中',
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..40_000 {
            let len = (next() % 24) as usize;
            // Half of the strings are pure ASCII.
            let choices = if round % 2 == 0 { 24 } else { ALPHABET.len() };
            let text: String = (0..len)
                .map(|_| ALPHABET[(next() % choices as u64) as usize])
                .collect();
            assert_eq!(raw(&text), raw_unicode(&text), "on {text:?}");
        }
    }
}
