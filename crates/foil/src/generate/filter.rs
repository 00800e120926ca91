//! Reading a model's answer and deciding whether to keep it: the parsers for generated
//! queries and passages, word-n-gram copy detection, and duplicate keys.
//!
//! **Parsing a query** (strict, in this order):
//! 1. Line ends are normalised; the answer's first non-blank line is the candidate. When the
//!    generation stopped at `max_tokens` and that line is all there is, it may be cut off: its
//!    first sentence is the candidate when it ends with `.`, `?` or `!` followed by a space
//!    (small models run on past the query in one paragraph); otherwise *unparseable*.
//! 2. Markdown emphasis (`**`, `__`) and list markers (`-`, `*`, `1.`) at the start are removed.
//! 3. One leading label is removed, case-insensitively: `query:`, `relevant query:`,
//!    `search query:`, `question:`, `claim:`, `q:`.
//! 4. Matching surrounding quotes (`"…"`, `'…'`, `“…”`, `` `…` ``) are removed.
//! 5. What remains is *unparseable* when it begins with chatter (`here is`, `here's`, `sure`,
//!    `certainly`, `as an ai`, `i cannot`, `i can't`) or holds another field's label
//!    (`passage:`, `document:`, `example`); *empty* when nothing remains.
//!
//! **Parsing a passage** (hard negatives): the same labels for passages (`passage:`,
//! `document:`, `hard negative:`, `abstract:`) and quotes are removed from the whole answer,
//! whose lines are joined with spaces; chatter at the start is *unparseable*, and so is an
//! answer cut off at `max_tokens`. A description (first step of query-only negatives) is read
//! like a query but may span lines (they are joined).
//!
//! **Copy detection**: `overlap(a, b)` is the share of `a`'s word 3-grams found in `b`, words
//! being lowercased runs of letters and digits; when `a` has fewer than three words, the share
//! of its words found in `b`. A generated query whose overlap with its passage reaches the
//! threshold copies the passage.
//!
//! **Query-likeness** ([`not_a_query`]): small models often answer with a sentence about the
//! passage instead of a query. Rejected: answers that open like a report ("We report …",
//! "Our results …", "The study shows …", "This paper …", "The above passage …", "In this
//! article …"), that repeat a word back to back or lean on one word for a third of a longer
//! answer, that hold an identifier (a registry number such as `NCT01378767`, six or more
//! digits in a row, a DOI or a URL), or that run to more than one sentence.
//!
//! **Duplicates**: texts are compared by [`normalize`]d form (lowercased words joined by one
//! space), so case, punctuation and spacing do not make a duplicate new.

use std::collections::HashSet;

use foil_core::FinishReason;
use serde::Serialize;

/// Why a generation was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// The generator failed on this request (after its retries).
    Failed,
    /// The answer is not in the expected shape (see the module documentation).
    Unparseable,
    /// Nothing left after parsing.
    Empty,
    /// A query with more than `max_query_words` words.
    TooLong,
    /// A passage with fewer than `min_words` words.
    TooShort,
    /// The query copies its passage (n-gram overlap at or above the threshold).
    CopiesPassage,
    /// The negative copies its query.
    CopiesQuery,
    /// The negative copies a positive of its query.
    CopiesPositive,
    /// The same normalised text was generated before.
    Duplicate,
    /// The source passage is not in the top k for the query.
    RoundTrip,
    /// The answer reads as a report or summary sentence, repeats itself or holds an
    /// identifier, not as something a person would search for ([`not_a_query`]).
    NotAQuery,
    /// Below the kept share of answers by mean token log-probability (InPars' filter).
    LowLogprob,
}

impl Rejection {
    /// The reason's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Rejection::Failed => "failed",
            Rejection::Unparseable => "unparseable",
            Rejection::Empty => "empty",
            Rejection::TooLong => "too_long",
            Rejection::TooShort => "too_short",
            Rejection::CopiesPassage => "copies_passage",
            Rejection::CopiesQuery => "copies_query",
            Rejection::CopiesPositive => "copies_positive",
            Rejection::Duplicate => "duplicate",
            Rejection::RoundTrip => "round_trip",
            Rejection::NotAQuery => "not_a_query",
            Rejection::LowLogprob => "low_logprob",
        }
    }
}

/// A parse failure: the reason and a short explanation.
pub type ParseError = (Rejection, &'static str);

const QUERY_LABELS: [&str; 6] = [
    "relevant query:",
    "search query:",
    "query:",
    "question:",
    "claim:",
    "q:",
];
const PASSAGE_LABELS: [&str; 5] = [
    "hard negative:",
    "passage:",
    "document:",
    "abstract:",
    "description:",
];
const CHATTER: [&str; 7] = [
    "here is",
    "here's",
    "sure",
    "certainly",
    "as an ai",
    "i cannot",
    "i can't",
];
const FOREIGN_LABELS: [&str; 3] = ["passage:", "document:", "example"];

/// Openings of report and summary sentences (matched on lowercased words).
const REPORT_OPENINGS: [&[&str]; 12] = [
    &["we"],
    &["our"],
    &["here", "we"],
    &["in", "this"],
    &["in", "the", "present"],
    &["the", "above"],
    &["according", "to", "the"],
    &["results", "show"],
    &["this", "passage"],
    &["the", "passage"],
    &["this", "text"],
    &["the", "text"],
];
/// Subjects that make "the/this/these X …" a sentence about a document.
const DOCUMENT_WORDS: [&str; 16] = [
    "study", "studies", "paper", "article", "review", "trial", "work", "research", "analysis",
    "abstract", "document", "author", "authors", "results", "findings", "report",
];

/// Why `query` does not read as a search query, if it does not (see the module documentation).
pub fn not_a_query(query: &str) -> Option<&'static str> {
    let w = words(query);
    let starts =
        |prefix: &[&str]| w.len() >= prefix.len() && w.iter().zip(prefix).all(|(a, b)| a == b);
    if REPORT_OPENINGS.iter().any(|p| starts(p)) {
        return Some("opens like a report or summary sentence");
    }
    if w.len() >= 2
        && matches!(w[0].as_str(), "the" | "this" | "these" | "that")
        && DOCUMENT_WORDS.contains(&w[1].as_str())
    {
        return Some("a sentence about a document");
    }
    if w.windows(2)
        .any(|p| p[0] == p[1] && p[0].chars().count() >= 3)
    {
        return Some("repeats a word back to back");
    }
    if w.len() >= 6 {
        let mut counts = std::collections::HashMap::new();
        for word in w.iter().filter(|x| x.chars().count() >= 3) {
            *counts.entry(word.as_str()).or_insert(0usize) += 1;
        }
        if counts.values().any(|&c| c * 3 >= w.len()) {
            return Some("one word makes up a third of it");
        }
    }
    let lower = query.to_lowercase();
    if lower.contains("http://") || lower.contains("https://") || lower.contains("www.") {
        return Some("holds a URL");
    }
    if lower.contains("doi") && lower.contains("10.") {
        return Some("holds a DOI");
    }
    for token in w.iter() {
        let digits = token.chars().filter(char::is_ascii_digit).count();
        let letters = token.chars().filter(|c| c.is_alphabetic()).count();
        let longest_run = token
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        if longest_run >= 6 || (letters > 0 && letters <= 4 && digits >= 5) {
            return Some("holds an identifier");
        }
    }
    let trimmed = query.trim_end_matches(['.', '?', '!', ' ']);
    if first_sentence(trimmed).is_some() {
        return Some("more than one sentence");
    }
    None
}

/// The first sentence of a line that goes on after it: up to and including the first `.`, `?`
/// or `!` that a space follows; `None` when there is no such end.
fn first_sentence(line: &str) -> Option<&str> {
    line.char_indices()
        .zip(line.chars().skip(1))
        .find(|((_, c), next)| matches!(c, '.' | '?' | '!') && *next == ' ')
        .map(|((i, c), _)| &line[..i + c.len_utf8()])
}

/// Reads a generated query (see the module documentation).
pub fn parse_query(raw: &str, finish: FinishReason) -> Result<String, ParseError> {
    let text = raw.replace("\r\n", "\n");
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        return Err((Rejection::Empty, "blank answer"));
    };
    let mut first = first;
    if finish == FinishReason::Length && lines.next().is_none() {
        first = first_sentence(first).ok_or((Rejection::Unparseable, "cut off at max_tokens"))?;
    }
    let mut line = strip_markup(first);
    line = strip_label(line, &QUERY_LABELS);
    let line = strip_quotes(line).trim();
    if line.is_empty() {
        return Err((
            Rejection::Empty,
            "nothing left after removing labels and quotes",
        ));
    }
    let lower = line.to_lowercase();
    if CHATTER.iter().any(|c| starts_with_word(&lower, c)) {
        return Err((Rejection::Unparseable, "chatter instead of a query"));
    }
    if FOREIGN_LABELS.iter().any(|l| lower.contains(l)) {
        return Err((Rejection::Unparseable, "holds another field's label"));
    }
    Ok(line.to_string())
}

/// Reads a generated passage (see the module documentation).
pub fn parse_passage(raw: &str, finish: FinishReason) -> Result<String, ParseError> {
    if finish == FinishReason::Length {
        return Err((Rejection::Unparseable, "cut off at max_tokens"));
    }
    let joined = join_lines(raw);
    if joined.is_empty() {
        return Err((Rejection::Empty, "blank answer"));
    }
    let text = strip_quotes(strip_label(strip_markup(&joined), &PASSAGE_LABELS)).trim();
    if text.is_empty() {
        return Err((
            Rejection::Empty,
            "nothing left after removing labels and quotes",
        ));
    }
    let lower = text.to_lowercase();
    if CHATTER.iter().any(|c| starts_with_word(&lower, c)) {
        return Err((Rejection::Unparseable, "chatter instead of a passage"));
    }
    Ok(text.to_string())
}

/// Reads the description of a hard negative (first step of query-only negatives).
pub fn parse_description(raw: &str, finish: FinishReason) -> Result<String, ParseError> {
    if finish == FinishReason::Length {
        return Err((Rejection::Unparseable, "cut off at max_tokens"));
    }
    let joined = join_lines(raw);
    let text = strip_quotes(strip_label(strip_markup(&joined), &PASSAGE_LABELS)).trim();
    if text.is_empty() {
        return Err((Rejection::Empty, "blank description"));
    }
    let lower = text.to_lowercase();
    if CHATTER.iter().any(|c| starts_with_word(&lower, c)) {
        return Err((Rejection::Unparseable, "chatter instead of a description"));
    }
    Ok(text.to_string())
}

/// The non-blank lines of `raw`, trimmed and joined by one space.
fn join_lines(raw: &str) -> String {
    raw.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn starts_with_word(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|rest| !rest.chars().next().is_some_and(char::is_alphanumeric))
}

/// Removes leading markdown emphasis and a list marker (and their trailing twins).
fn strip_markup(text: &str) -> &str {
    let mut t = text.trim();
    for mark in ["**", "__"] {
        if let Some(rest) = t.strip_prefix(mark) {
            t = rest.strip_suffix(mark).unwrap_or(rest).trim();
        }
    }
    if let Some(rest) = t.strip_prefix("- ").or_else(|| t.strip_prefix("* ")) {
        t = rest.trim_start();
    } else {
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && digits < 3 {
            if let Some(rest) = t[digits..]
                .strip_prefix(". ")
                .or_else(|| t[digits..].strip_prefix(") "))
            {
                t = rest.trim_start();
            }
        }
    }
    t
}

/// Removes one leading label of `labels` (case-insensitive), and emphasis around it.
fn strip_label<'a>(text: &'a str, labels: &[&str]) -> &'a str {
    for label in labels {
        if text
            .get(..label.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(label))
        {
            let rest = text[label.len()..].trim_start();
            return rest
                .strip_prefix("**")
                .or_else(|| rest.strip_prefix("__"))
                .unwrap_or(rest)
                .trim();
        }
    }
    text
}

/// Removes one pair of matching surrounding quotes.
fn strip_quotes(text: &str) -> &str {
    let t = text.trim();
    for (open, close) in [('"', '"'), ('\'', '\''), ('“', '”'), ('`', '`'), ('«', '»')] {
        if t.len() >= open.len_utf8() + close.len_utf8() {
            if let Some(inner) = t.strip_prefix(open).and_then(|r| r.strip_suffix(close)) {
                return inner.trim();
            }
        }
    }
    t
}

/// Lowercased runs of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The duplicate key of a text: its words joined by one space.
pub fn normalize(text: &str) -> String {
    words(text).join(" ")
}

/// The share of `a`'s word 3-grams found among `b`'s (of `a`'s words among `b`'s when `a` has
/// fewer than three words); 0 when `a` has no words.
pub fn overlap(a: &str, b: &str) -> f32 {
    let a = words(a);
    let b = words(b);
    if a.is_empty() {
        return 0.0;
    }
    if a.len() < 3 {
        let vocabulary: HashSet<&str> = b.iter().map(String::as_str).collect();
        let found = a.iter().filter(|w| vocabulary.contains(w.as_str())).count();
        return found as f32 / a.len() as f32;
    }
    let grams: HashSet<[&str; 3]> = b
        .windows(3)
        .map(|w| [w[0].as_str(), w[1].as_str(), w[2].as_str()])
        .collect();
    let total = a.len() - 2;
    let found = a
        .windows(3)
        .filter(|w| grams.contains(&[w[0].as_str(), w[1].as_str(), w[2].as_str()]))
        .count();
    found as f32 / total as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOP: FinishReason = FinishReason::Stop;

    #[test]
    fn queries_are_parsed_strictly() {
        let ok = [
            ("What causes scurvy?", "What causes scurvy?"),
            ("Query: what causes scurvy", "what causes scurvy"),
            ("  \n\"Relevant query: x\"", "Relevant query: x"),
            (
                "RELEVANT QUERY: \"vitamin c deficiency\"\nDocument: blah",
                "vitamin c deficiency",
            ),
            ("**Query:** scurvy and vitamin C", "scurvy and vitamin C"),
            ("1. scurvy causes\n2. other", "scurvy causes"),
            ("- “scurvy causes”", "scurvy causes"),
            ("Q: scurvy\r\n", "scurvy"),
            ("Surely scurvy is rare", "Surely scurvy is rare"),
        ];
        for (raw, expected) in ok {
            assert_eq!(parse_query(raw, STOP).as_deref(), Ok(expected), "{raw:?}");
        }
        let bad = [
            ("", Rejection::Empty),
            ("  \n \n", Rejection::Empty),
            ("Query:", Rejection::Empty),
            ("\"\"", Rejection::Empty),
            (
                "Here is a query: what causes scurvy",
                Rejection::Unparseable,
            ),
            ("Sure! What causes scurvy?", Rejection::Unparseable),
            ("scurvy Passage: vitamin C", Rejection::Unparseable),
            ("Example 4: scurvy", Rejection::Unparseable),
        ];
        for (raw, reason) in bad {
            assert_eq!(
                parse_query(raw, STOP).map_err(|e| e.0),
                Err(reason),
                "{raw:?}"
            );
        }
        assert_eq!(
            parse_query("what causes scur", FinishReason::Length).map_err(|e| e.0),
            Err(Rejection::Unparseable)
        );
        assert_eq!(
            parse_query("what causes scurvy\nand", FinishReason::Length).as_deref(),
            Ok("what causes scurvy"),
            "a complete first line survives a cut-off second"
        );
        // A cut-off paragraph keeps its first complete sentence, and only that.
        assert_eq!(
            parse_query(
                "Does vitamin C prevent scurvy? Scurvy is a dise",
                FinishReason::Length
            )
            .as_deref(),
            Ok("Does vitamin C prevent scurvy?")
        );
        assert_eq!(
            parse_query(
                "Vitamin C 2.5 mg prevents scurvy. It is",
                FinishReason::Length
            )
            .as_deref(),
            Ok("Vitamin C 2.5 mg prevents scurvy.")
        );
        assert_eq!(
            parse_query("Vitamin C prevents scurvy in sail", FinishReason::Length).map_err(|e| e.0),
            Err(Rejection::Unparseable)
        );
    }

    #[test]
    fn passages_and_descriptions_are_parsed() {
        assert_eq!(
            parse_passage("Passage: \"One.\nTwo.\"", STOP).as_deref(),
            Ok("One. Two.")
        );
        assert_eq!(
            parse_passage("Here is the passage: x", STOP).map_err(|e| e.0),
            Err(Rejection::Unparseable)
        );
        assert_eq!(
            parse_passage("One. Two", FinishReason::Length).map_err(|e| e.0),
            Err(Rejection::Unparseable)
        );
        assert_eq!(
            parse_passage(" ", STOP).map_err(|e| e.0),
            Err(Rejection::Empty)
        );
        assert_eq!(
            parse_description("Description: a study\nof mice", STOP).as_deref(),
            Ok("a study of mice")
        );
    }

    #[test]
    fn copies_are_measured_by_word_trigrams() {
        let passage = "Vitamin C deficiency causes scurvy in sailors on long voyages.";
        assert_eq!(overlap("vitamin C deficiency causes scurvy", passage), 1.0);
        assert_eq!(
            overlap("Vitamin-C, deficiency CAUSES scurvy!", passage),
            1.0
        );
        // "does vitamin c", "vitamin c deficiency", "c deficiency cause": 1 of 3 found.
        let q = "does vitamin C deficiency cause";
        assert!((overlap(q, passage) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(overlap("what prevents rickets in children", passage), 0.0);
        // Short queries: the share of their words.
        assert_eq!(overlap("scurvy", passage), 1.0);
        assert_eq!(overlap("scurvy treatment", passage), 0.5);
        assert_eq!(overlap("", passage), 0.0);
        assert_eq!(overlap("!!", passage), 0.0);
    }

    #[test]
    fn report_sentences_repetitions_and_ids_are_not_queries() {
        let queries = [
            "why does bread go stale faster in the fridge",
            "Hanseatic League Baltic trade towns",
            "Aerobic training lowers blood pressure in people with hypertension.",
            "how can we reduce hospital readmissions",
            "Does vitamin D supplementation prevent respiratory infections?",
            "effects of 5 mg folic acid in pregnancy",
            "COVID-19 vaccine efficacy in 2021",
            "the effect of statins on LDL cholesterol",
            "bread staling starch",
        ];
        for q in queries {
            assert_eq!(not_a_query(q), None, "{q:?}");
        }
        let not = [
            ("We report a new mechanism of axon growth.", "report"),
            ("Our results suggest that X binds Y.", "report"),
            ("The study shows that aspirin reduces risk.", "document"),
            ("This paper describes a trial of 40 patients.", "document"),
            ("The above passage is about vitamin D.", "report"),
            ("In this article, the authors review", "report"),
            ("According to the text, bread goes stale", "report"),
            ("NCT01378767 NCT01378767", "repeats"),
            ("trial registration NCT01378767", "identifier"),
            ("patients enrolled 20150312 follow up", "identifier"),
            ("see https://example.org for details", "URL"),
            ("statins doi 10.1000/182 outcome", "DOI"),
            ("cells and more cells in cells of tissue", "third"),
            ("Aspirin lowers risk. It also thins blood", "sentence"),
        ];
        for (q, why) in not {
            let reason = not_a_query(q).unwrap_or_else(|| panic!("{q:?} passed"));
            assert!(reason.contains(why), "{q:?}: {reason}");
        }
    }

    #[test]
    fn duplicates_ignore_case_punctuation_and_spacing() {
        assert_eq!(
            normalize("What causes  Scurvy?"),
            normalize("what causes scurvy")
        );
        assert_ne!(
            normalize("what causes scurvy"),
            normalize("what cures scurvy")
        );
        assert_eq!(words("État-d'urgence 42x"), ["état", "d", "urgence", "42x"]);
    }
}
