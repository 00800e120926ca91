//! The Porter stemmer, exactly as Lucene's `PorterStemmer` (and so Anserini's default English
//! analyzer) runs it.
//!
//! Lucene ports Martin Porter's own C implementation: the rules of Porter (1980), "An algorithm
//! for suffix stripping", *Program* 14(3), 130–137, plus the departures he published with his
//! code (step 2 maps "-bli" to "-ble" instead of "-abli" to "-able", and "-logi" to "-log"), and
//! words shorter than three code units are left alone. NLTK calls this variant
//! `PorterStemmer.MARTIN_EXTENSIONS`; `tests/data/porter_golden.tsv` holds its output for some
//! five thousand words and the tests below check every one.
//!
//! Like Lucene, the stemmer looks at code units, not letters of a language: `a e i o u` are
//! vowels, `y` is a vowel after a consonant, and every other unit (upper-case ASCII, digits,
//! punctuation, any non-ASCII character) is a consonant. Non-ASCII words are stemmed over their
//! UTF-16 code units, as Lucene's `char[]`, so that even lengths and `cvc` tests on them agree.
//! Input is expected to be lower-cased already (the analyzer does that first).
//!
//! A word only ever shrinks or keeps its length, so stemming works in place: [`stem_in_place`]
//! rewrites a `String` without allocating for ASCII words, and [`stem`] borrows its input
//! whenever the stem is a prefix of the word (most stems are).

use std::borrow::Cow;

/// The longest ASCII word [`stem`] stems on the stack; longer ones are copied to the heap.
const STACK_WORD: usize = 64;

/// Returns the Porter stem of `word` (expected lower-case), borrowing from `word` when the stem
/// is a prefix of it.
///
/// ```
/// use foil_bm25::porter::stem;
/// assert_eq!(stem("caresses"), "caress");
/// assert_eq!(stem("relational"), "relat");
/// assert_eq!(stem("happy"), "happi");
/// ```
pub fn stem(word: &str) -> Cow<'_, str> {
    if word.len() < 3 {
        return Cow::Borrowed(word);
    }
    if word.is_ascii() && word.len() <= STACK_WORD {
        let mut buf = StackWord {
            bytes: [0; STACK_WORD],
            len: word.len(),
        };
        buf.bytes[..word.len()].copy_from_slice(word.as_bytes());
        run(&mut buf);
        let out = &buf.bytes[..buf.len];
        if word.as_bytes().starts_with(out) {
            Cow::Borrowed(&word[..out.len()])
        } else {
            Cow::Owned(out.iter().map(|&b| char::from(b)).collect())
        }
    } else {
        let mut owned = word.to_owned();
        stem_in_place(&mut owned);
        if word.starts_with(owned.as_str()) {
            Cow::Borrowed(&word[..owned.len()])
        } else {
            Cow::Owned(owned)
        }
    }
}

/// Replaces `word` (expected lower-case) by its Porter stem. ASCII words are stemmed without
/// allocating; other words go through a temporary UTF-16 copy, as Lucene stems `char`s.
pub fn stem_in_place(word: &mut String) {
    // Fewer than three bytes means fewer than three UTF-16 units: nothing to do.
    if word.len() < 3 {
        return;
    }
    if word.is_ascii() {
        run(word);
        return;
    }
    let mut units: Vec<u16> = word.encode_utf16().collect();
    let before = units.len();
    run(&mut units);
    if units.len() == before && word.encode_utf16().eq(units.iter().copied()) {
        return;
    }
    // The rules only cut before, and write, ASCII units, so a surrogate pair is never split
    // and the conversion cannot fail; if it somehow did, the word is left as it was.
    if let Ok(stemmed) = String::from_utf16(&units) {
        *word = stemmed;
    }
}

/// A word being stemmed: a sequence of code units that shrinks from the end and may get an
/// ASCII suffix written back.
trait Word {
    fn len(&self) -> usize;
    /// The unit at `i` if it is ASCII, otherwise 0xFF (which no rule mentions).
    fn byte(&self, i: usize) -> u8;
    /// Whether the units at `i` and `j` are equal (non-ASCII units compared exactly).
    fn same(&self, i: usize, j: usize) -> bool;
    fn ends_with(&self, suffix: &[u8]) -> bool;
    fn truncate(&mut self, len: usize);
    fn push(&mut self, ascii: &str);
}

/// An ASCII `String`: cutting anywhere stays on a character boundary.
impl Word for String {
    fn len(&self) -> usize {
        str::len(self)
    }
    fn byte(&self, i: usize) -> u8 {
        self.as_bytes()[i]
    }
    fn same(&self, i: usize, j: usize) -> bool {
        self.as_bytes()[i] == self.as_bytes()[j]
    }
    fn ends_with(&self, suffix: &[u8]) -> bool {
        bytes_end_with(self.as_bytes(), suffix)
    }
    fn truncate(&mut self, len: usize) {
        String::truncate(self, len);
    }
    fn push(&mut self, ascii: &str) {
        self.push_str(ascii);
    }
}

/// UTF-16 code units, as Lucene's `char[]`.
impl Word for Vec<u16> {
    fn len(&self) -> usize {
        <[u16]>::len(self)
    }
    fn byte(&self, i: usize) -> u8 {
        u8::try_from(self[i])
            .ok()
            .filter(u8::is_ascii)
            .unwrap_or(0xFF)
    }
    fn same(&self, i: usize, j: usize) -> bool {
        self[i] == self[j]
    }
    fn ends_with(&self, suffix: &[u8]) -> bool {
        self.len() >= suffix.len()
            && self[self.len() - suffix.len()..]
                .iter()
                .zip(suffix)
                .all(|(&u, &b)| u == u16::from(b))
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len);
    }
    fn push(&mut self, ascii: &str) {
        self.extend(ascii.bytes().map(u16::from));
    }
}

/// `word.ends_with(suffix)`, compared from the last byte: most tries fail there, and a loop
/// over a few bytes beats a call to `memcmp`.
fn bytes_end_with(word: &[u8], suffix: &[u8]) -> bool {
    word.len() >= suffix.len()
        && word
            .iter()
            .rev()
            .zip(suffix.iter().rev())
            .all(|(a, b)| a == b)
}

/// A short ASCII word on the stack, for [`stem`].
struct StackWord {
    bytes: [u8; STACK_WORD],
    len: usize,
}

impl Word for StackWord {
    fn len(&self) -> usize {
        self.len
    }
    fn byte(&self, i: usize) -> u8 {
        self.bytes[i]
    }
    fn same(&self, i: usize, j: usize) -> bool {
        self.bytes[i] == self.bytes[j]
    }
    fn ends_with(&self, suffix: &[u8]) -> bool {
        bytes_end_with(&self.bytes[..self.len], suffix)
    }
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    fn push(&mut self, ascii: &str) {
        // Stems never outgrow the word they came from, so this stays within the array.
        let end = self.len + ascii.len();
        self.bytes[self.len..end].copy_from_slice(ascii.as_bytes());
        self.len = end;
    }
}

/// Runs the six steps on `word` if it has at least three units.
fn run<W: Word>(word: &mut W) {
    if word.len() < 3 {
        return;
    }
    let mut s = Stemmer { w: word, stem: 0 };
    s.step1ab();
    s.step1c();
    s.step2();
    s.step3();
    s.step4();
    s.step5();
}

/// The stemmer's state: the word and the length of the stem that the last matched suffix left
/// (Lucene's `j + 1`), which the measure and vowel tests look at.
struct Stemmer<'a, W: Word> {
    w: &'a mut W,
    stem: usize,
}

fn is_vowel_letter(b: u8) -> bool {
    matches!(b, b'a' | b'e' | b'i' | b'o' | b'u')
}

impl<W: Word> Stemmer<'_, W> {
    fn len(&self) -> usize {
        self.w.len()
    }

    fn last(&self) -> u8 {
        self.w.byte(self.len() - 1)
    }

    /// Whether unit `i` is a consonant: not a vowel letter, and a `y` only when it starts the
    /// word or follows a vowel.
    fn cons(&self, mut i: usize) -> bool {
        // Each `y` flips the answer of the unit before it; walk back over a run of them.
        let mut flip = false;
        loop {
            match self.w.byte(i) {
                b if is_vowel_letter(b) => return flip,
                b'y' if i > 0 => {
                    flip = !flip;
                    i -= 1;
                }
                _ => return !flip,
            }
        }
    }

    /// The consonant/vowel pattern of `w[..end]`, one flag per unit, folded into `visit`.
    fn walk(&self, end: usize, mut visit: impl FnMut(bool) -> bool) {
        let mut prev_cons = false;
        for i in 0..end {
            let c = match self.w.byte(i) {
                b if is_vowel_letter(b) => false,
                b'y' => i == 0 || !prev_cons,
                _ => true,
            };
            if !visit(c) {
                return;
            }
            prev_cons = c;
        }
    }

    /// The measure m of the stem: the number of vowel-consonant sequences in `[C](VC)^m[V]`.
    fn m(&self) -> usize {
        let mut n = 0;
        let mut prev_vowel = false;
        self.walk(self.stem, |c| {
            if c && prev_vowel {
                n += 1;
            }
            prev_vowel = !c;
            true
        });
        n
    }

    /// Whether the stem contains a vowel.
    fn vowel_in_stem(&self) -> bool {
        let mut found = false;
        self.walk(self.stem, |c| {
            found = !c;
            !found
        });
        found
    }

    /// Whether units `i - 1` and `i` are the same consonant.
    fn double_cons(&self, i: usize) -> bool {
        i >= 1 && self.w.same(i, i - 1) && self.cons(i)
    }

    /// Whether units `i - 2, i - 1, i` are consonant-vowel-consonant and the last is not `w`,
    /// `x` or `y` (cav(e), lov(e), hop(e), but snow, box, tray).
    fn cvc(&self, i: usize) -> bool {
        i >= 2
            && self.cons(i)
            && !self.cons(i - 1)
            && self.cons(i - 2)
            && !matches!(self.w.byte(i), b'w' | b'x' | b'y')
    }

    /// Whether the word ends with `suffix`; if so, the stem becomes what precedes it.
    fn ends(&mut self, suffix: &str) -> bool {
        let matched = self.w.ends_with(suffix.as_bytes());
        if matched {
            self.stem = self.len() - suffix.len();
        }
        matched
    }

    /// Replaces the suffix after the stem by `s`.
    fn set_to(&mut self, s: &str) {
        self.w.truncate(self.stem);
        self.w.push(s);
    }

    /// Tries `rules` (suffix, replacement) in order; the first suffix the word ends with is
    /// replaced if its stem has m > 0, and no later rule is tried either way.
    fn replace_first(&mut self, rules: &[(&str, &str)]) {
        for &(suffix, replacement) in rules {
            if self.ends(suffix) {
                if self.m() > 0 {
                    self.set_to(replacement);
                }
                return;
            }
        }
    }

    /// Step 1ab: plurals, then -eed, -ed and -ing (caresses → caress, ponies → poni,
    /// agreed → agree, hopping → hop, filing → file).
    fn step1ab(&mut self) {
        if self.last() == b's' {
            let len = self.len();
            if self.ends("sses") {
                self.w.truncate(len - 2);
            } else if self.ends("ies") {
                self.set_to("i");
            } else if self.w.byte(len - 2) != b's' {
                self.w.truncate(len - 1);
            }
        }
        if self.ends("eed") {
            if self.m() > 0 {
                self.w.truncate(self.len() - 1);
            }
        } else if (self.ends("ed") || self.ends("ing")) && self.vowel_in_stem() {
            self.w.truncate(self.stem);
            if self.ends("at") {
                self.set_to("ate");
            } else if self.ends("bl") {
                self.set_to("ble");
            } else if self.ends("iz") {
                self.set_to("ize");
            } else if self.double_cons(self.len() - 1) {
                if !matches!(self.last(), b'l' | b's' | b'z') {
                    self.w.truncate(self.len() - 1);
                }
            } else if self.m() == 1 && self.cvc(self.len() - 1) {
                self.set_to("e");
            }
        }
    }

    /// Step 1c: a final y becomes i when the stem has a vowel (happy → happi, sky → sky).
    fn step1c(&mut self) {
        if self.ends("y") && self.vowel_in_stem() {
            self.set_to("i");
        }
    }

    /// Step 2: double suffixes to single ones when m > 0 (relational → relate,
    /// vietnamization → vietnamize), keyed on the next-to-last letter.
    fn step2(&mut self) {
        if self.len() < 2 {
            return;
        }
        let rules: &[(&str, &str)] = match self.w.byte(self.len() - 2) {
            b'a' => &[("ational", "ate"), ("tional", "tion")],
            b'c' => &[("enci", "ence"), ("anci", "ance")],
            b'e' => &[("izer", "ize")],
            // "bli" → "ble" is Porter's departure from the paper's "abli" → "able".
            b'l' => &[
                ("bli", "ble"),
                ("alli", "al"),
                ("entli", "ent"),
                ("eli", "e"),
                ("ousli", "ous"),
            ],
            b'o' => &[("ization", "ize"), ("ation", "ate"), ("ator", "ate")],
            b's' => &[
                ("alism", "al"),
                ("iveness", "ive"),
                ("fulness", "ful"),
                ("ousness", "ous"),
            ],
            b't' => &[("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")],
            // Porter's departure: not in the paper.
            b'g' => &[("logi", "log")],
            _ => return,
        };
        self.replace_first(rules);
    }

    /// Step 3: -ic-, -ful, -ness and the like when m > 0 (triplicate → triplic,
    /// hopeful → hope), keyed on the last letter.
    fn step3(&mut self) {
        let rules: &[(&str, &str)] = match self.last() {
            b'e' => &[("icate", "ic"), ("ative", ""), ("alize", "al")],
            b'i' => &[("iciti", "ic")],
            b'l' => &[("ical", "ic"), ("ful", "")],
            b's' => &[("ness", "")],
            _ => return,
        };
        self.replace_first(rules);
    }

    /// Step 4: drops -ant, -ence, -ment and the like when m > 1 (revival → reviv,
    /// adoption → adopt), keyed on the next-to-last letter.
    fn step4(&mut self) {
        if self.len() < 2 {
            return;
        }
        let suffixes: &[&str] = match self.w.byte(self.len() - 2) {
            b'a' => &["al"],
            b'c' => &["ance", "ence"],
            b'e' => &["er"],
            b'i' => &["ic"],
            b'l' => &["able", "ible"],
            // -ement before -ment before -ent: "element" keeps its m.
            b'n' => &["ant", "ement", "ment", "ent"],
            b'o' => {
                // -ion only after s or t; otherwise -ou (from -ous) is the only candidate.
                if self.ends("ion") {
                    let after_s_or_t =
                        self.stem >= 1 && matches!(self.w.byte(self.stem - 1), b's' | b't');
                    if !after_s_or_t {
                        return;
                    }
                    &[]
                } else {
                    &["ou"]
                }
            }
            b's' => &["ism"],
            b't' => &["ate", "iti"],
            b'u' => &["ous"],
            b'v' => &["ive"],
            b'z' => &["ize"],
            _ => return,
        };
        let matched = suffixes.is_empty() || suffixes.iter().any(|suffix| self.ends(suffix));
        if matched && self.m() > 1 {
            self.w.truncate(self.stem);
        }
    }

    /// Step 5: drops a final -e when m > 1, or m = 1 and the stem does not end cvc
    /// (probate → probat, cease → ceas, rate → rate), and -ll → -l when m > 1
    /// (controll → control). The measure is taken of the whole word, as in Porter's C code.
    fn step5(&mut self) {
        self.stem = self.len();
        if self.last() == b'e' {
            let m = self.m();
            let len = self.len();
            if m > 1 || (m == 1 && !(len >= 2 && self.cvc(len - 2))) {
                self.w.truncate(len - 1);
                // Porter measures the -ll test below on the word with its e, which is a vowel
                // at the end and so leaves m unchanged: measure what is left instead.
                self.stem = len - 1;
            }
        }
        let len = self.len();
        if self.last() == b'l' && self.double_cons(len - 1) && self.m() > 1 {
            self.w.truncate(len - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stemmed(word: &str) -> String {
        let mut s = word.to_owned();
        stem_in_place(&mut s);
        assert_eq!(
            stem(word),
            s.as_str(),
            "stem and stem_in_place disagree on {word:?}"
        );
        s
    }

    #[test]
    fn paper_examples() {
        let cases = [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "ti"),
            ("caress", "caress"),
            ("cats", "cat"),
            ("feed", "feed"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("bled", "bled"),
            ("motoring", "motor"),
            ("sing", "sing"),
            ("conflated", "conflat"),
            ("troubled", "troubl"),
            ("sized", "size"),
            ("hopping", "hop"),
            ("tanned", "tan"),
            ("falling", "fall"),
            ("hissing", "hiss"),
            ("fizzed", "fizz"),
            ("failing", "fail"),
            ("filing", "file"),
            ("happy", "happi"),
            ("sky", "sky"),
            ("relational", "relat"),
            ("conditional", "condit"),
            ("rational", "ration"),
            ("digitizer", "digit"),
            ("conformabli", "conform"),
            ("generalization", "gener"),
            ("oscillator", "oscil"),
            ("controll", "control"),
            ("roll", "roll"),
            ("adoption", "adopt"),
            ("effective", "effect"),
        ];
        for (word, want) in cases {
            assert_eq!(stemmed(word), want, "stem of {word:?}");
        }
    }

    #[test]
    fn porter_departures() {
        // "bli" → "ble" (the paper has "abli" → "able") and "logi" → "log".
        assert_eq!(stemmed("possibly"), "possibl");
        assert_eq!(stemmed("archaeology"), "archaeolog");
        assert_eq!(stemmed("biology"), "biologi");
    }

    #[test]
    fn short_words_are_left_alone() {
        for word in ["", "a", "is", "as", "us", "ss"] {
            assert_eq!(stemmed(word), word);
            assert!(matches!(stem(word), Cow::Borrowed(_)));
        }
        // Three letters are stemmed.
        assert_eq!(stemmed("its"), "it");
        assert_eq!(stemmed("ies"), "i");
        assert_eq!(stemmed("aed"), "a");
        assert_eq!(stemmed("ion"), "ion");
    }

    #[test]
    fn prefixes_are_borrowed() {
        assert!(matches!(stem("running"), Cow::Borrowed("run")));
        assert!(matches!(stem("cats"), Cow::Borrowed("cat")));
        assert!(matches!(stem("happy"), Cow::Owned(_)));
    }

    #[test]
    fn non_ascii_units_are_consonants() {
        // As in Lucene, a non-ASCII character is a consonant and ASCII suffixes still go.
        assert_eq!(stemmed("naïve"), "naïv");
        assert_eq!(stemmed("cafés"), "café");
        assert_eq!(stemmed("résumés"), "résumé");
        assert_eq!(stemmed("αβγ"), "αβγ");
        // Two identical non-ASCII consonants form a double consonant, as in Lucene.
        assert_eq!(stemmed("aççed"), "aç");
        // A supplementary character is two UTF-16 units: "𝑥s" has three and is stemmed.
        assert_eq!(stemmed("𝑥s"), "𝑥");
        // Upper-case letters are consonants too (the analyzer lower-cases first).
        assert_eq!(stemmed("CATS"), "CATS");
        assert_eq!(stemmed("1990s"), "1990");
    }

    #[test]
    fn long_words_and_y_runs() {
        let long = "ab".repeat(150) + "ational";
        assert_eq!(stemmed(&long), "ab".repeat(150));
        assert_eq!(stemmed("yyyy"), "yyyi");
        assert_eq!(stemmed(&"y".repeat(1000)).len(), 1000);
        // -e goes, then -ll → -l is measured on the rest.
        assert_eq!(stemmed("mademoiselle"), "mademoisel");
        assert_eq!(stemmed("gazelle"), "gazel");
        assert_eq!(stemmed("belle"), "bell");
    }

    /// Every pair of `tests/data/porter_golden.tsv` (NLTK, MARTIN_EXTENSIONS) must match.
    #[test]
    fn golden_words() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/porter_golden.tsv");
        let text = std::fs::read_to_string(path).expect("read tests/data/porter_golden.tsv");
        let mut total = 0;
        let mut mismatches = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (word, want) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("porter_golden.tsv:{}: no tab", n + 1));
            total += 1;
            let got = stemmed(word);
            // The UTF-16 path that non-ASCII words take must agree on ASCII words too.
            let mut units: Vec<u16> = word.encode_utf16().collect();
            run(&mut units);
            assert_eq!(
                String::from_utf16_lossy(&units),
                got,
                "UTF-16 stem of {word:?}"
            );
            if got != want {
                mismatches.push(format!("{word}: got {got:?}, want {want:?}"));
            }
        }
        assert!(total > 4000, "only {total} golden words");
        assert!(
            mismatches.is_empty(),
            "{} of {total} golden stems differ:\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
    }
}
