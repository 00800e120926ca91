#!/usr/bin/env python3
"""Write the golden (word, stem) pairs that foil's Porter stemmer is tested against.

The reference is NLTK's PorterStemmer in MARTIN_EXTENSIONS mode: the algorithm as Martin
Porter's own C implementation runs it (the published 1980 rules plus his later departures,
"bli" -> "ble" and "logi" -> "log" in step 2, and no stemming of words of 1 or 2 letters).
That C implementation is what Lucene's PorterStemmer (and so Anserini's default English
analyzer) ports; NLTK's default mode (NLTK_EXTENSIONS) adds rules of its own and must not be
used here.

Words: the most frequent lowercase alphabetic words of the SciFact corpus, a deterministic
spread of rarer ones, the examples of Porter's paper and a few edge cases. Only single words
are written, one `word<TAB>stem` pair a line, sorted.

Usage:
    python3 scripts/golden/make_porter_golden.py \
        --corpus /work/shared/data/scifact/corpus.jsonl \
        --out crates/foil-bm25/tests/data/porter_golden.tsv
"""

import argparse
import collections
import json
import re
import sys

import nltk
from nltk.stem.porter import PorterStemmer

# The examples of Porter (1980), "An algorithm for suffix stripping", step by step.
PAPER_WORDS = """
caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled
sized hopping tanned falling hissing fizzed failing filing happy sky relational conditional
rational valenci hesitanci digitizer conformabli radicalli differentli vileli analogousli
vietnamization predication operator feudalism decisiveness hopefulness callousness formaliti
sensitiviti sensibiliti triplicate formative formalize electriciti electrical hopeful goodness
revival allowance inference airliner gyroscopic adjustable defensible irritant replacement
adjustment dependent adoption homologou communism activate angulariti homologous effective
bowdlerize probate rate cease controll roll generalization oscillator
""".split()

# Words that exercise the departures and the corners of the C implementation: the
# "bli"/"logi" rules, words of 1-3 letters, 'y' as a vowel or consonant, the -ion rule
# without a stem (Porter's "Bug 2"), -eed with an empty stem ("Bug 1") and so on.
EDGE_WORDS = """
a i is as us at be by go ox sky spy fly try cry dry ski yes yet yyy syzygy toy boy enjoy
enjoyment toying obeyed players saying yelled yearly ies ied eed aed oed ion ions lion onion
ation tional national rationale possibly humbly nobly ably bli abli biology theology analogy
apology logi geology archaeology philology eulogies ideologies probabilities abilities
disabilities agreed disagreed proceed proceeded exceed succeeded bleed bleeding seed
hopeful hopefulness meeting meetings mating matting milling messing disabled relativity
activities generously generous business busy reply replied replies skies flies dies died
lying tying dying hoping hopping hoped sized sizing fizzing filing filed hissed falling
controlling rolled feeling feelings sensibility responsibilities cells cell call falls
electrolysis analysis analyses hypotheses diagnosis diagnoses virus viruses corpus
alumni data criteria phenomena mice women children news series species means
gazelle mademoiselle belle quadrille vaudeville braille tulle bagatelle organelle organelles
""".split()


def corpus_words(path):
    counts = collections.Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            text = doc.get("title", "") + " " + doc.get("text", "")
            counts.update(w.lower() for w in re.findall(r"[A-Za-z]+", text))
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="SciFact corpus.jsonl")
    parser.add_argument("--out", required=True, help="the .tsv file to write")
    parser.add_argument("--top", type=int, default=3000, help="most frequent words to take")
    parser.add_argument(
        "--rare", type=int, default=2000, help="rarer words to take, spread evenly over the rest"
    )
    args = parser.parse_args()

    counts = corpus_words(args.corpus)
    # Most frequent first, ties broken alphabetically so that the selection is deterministic.
    ranked = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    words = set(ranked[: args.top])
    rest = ranked[args.top :]
    if rest and args.rare > 0:
        step = max(1, len(rest) // args.rare)
        words.update(rest[::step][: args.rare])
    words.update(PAPER_WORDS)
    words.update(EDGE_WORDS)

    stemmer = PorterStemmer(mode=PorterStemmer.MARTIN_EXTENSIONS)
    with open(args.out, "w", encoding="utf-8", newline="\n") as out:
        out.write(
            f"# word\tstem, by NLTK {nltk.__version__} PorterStemmer(MARTIN_EXTENSIONS); "
            "written by scripts/golden/make_porter_golden.py\n"
        )
        for word in sorted(words):
            out.write(f"{word}\t{stemmer.stem(word)}\n")
    print(f"wrote {len(words)} pairs to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
