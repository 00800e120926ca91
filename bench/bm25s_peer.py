#!/usr/bin/env python3
"""bm25s peer for the BM25 benchmark (bench/bm25.sh).

Does, in one process, what `foil search --retriever bm25` does: read a BEIR
data set (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), tokenize and index
the corpus with bm25s, retrieve the top-k documents for every query judged in
the split, and write a TREC run file (`qid Q0 docid rank score bm25s`).

    bench/bm25s_peer.py --data DIR --split test --top-k 1000 --threads 2 --output RUN

Phase times (import, load, tokenize+index, search, write) go to stderr.
Only the standard library, bm25s, PyStemmer and numpy are used.
"""

import argparse
import csv
import json
import os
import sys
import time

T_START = time.perf_counter()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="BEIR data set directory")
    p.add_argument("--split", default="test", help="qrels split (qrels/<split>.tsv)")
    p.add_argument("--top-k", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2,
                   help="threads for bm25s retrieval and for the numeric libraries")
    p.add_argument("--output", required=True, help="TREC run file to write")
    p.add_argument("--k1", type=float, default=0.9)
    p.add_argument("--b", type=float, default=0.4)
    return p.parse_args()


ARGS = parse_args()

# Cap the numeric libraries' thread pools before numpy/scipy are imported.
# (bench/bm25.sh sets the same variables; OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE,
# which the machine may set, are left alone.)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMBA_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import bm25s  # noqa: E402
import Stemmer  # noqa: E402  (PyStemmer)

T_IMPORTED = time.perf_counter()


def log(msg):
    print(f"bm25s_peer: {msg}", file=sys.stderr, flush=True)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_beir(data, split):
    """Corpus (ids, texts) in file order, and the split's judged queries.

    Document text is `title + " " + text`, as BEIR builds it. The queries of
    the split are exactly the query ids that appear in qrels/<split>.tsv
    (header line skipped, CRLF tolerated), in order of first appearance.
    """
    doc_ids, doc_texts = [], []
    for d in read_jsonl(os.path.join(data, "corpus.jsonl")):
        doc_ids.append(str(d["_id"]))
        doc_texts.append((d.get("title") or "") + " " + (d.get("text") or ""))

    judged = {}
    with open(os.path.join(data, "qrels", f"{split}.tsv"), encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        next(reader)  # header: query-id corpus-id score
        for row in reader:
            if row:
                judged.setdefault(row[0].strip(), None)

    qtext = {}
    for q in read_jsonl(os.path.join(data, "queries.jsonl")):
        qid = str(q["_id"])
        if qid in judged:
            qtext[qid] = q["text"]
    missing = [q for q in judged if q not in qtext]
    if missing:
        sys.exit(f"bm25s_peer: {len(missing)} judged queries missing from queries.jsonl, e.g. {missing[:3]}")
    qids = list(judged)
    return doc_ids, doc_texts, qids, [qtext[q] for q in qids]


def main():
    args = ARGS
    t0 = time.perf_counter()
    doc_ids, doc_texts, qids, qtexts = load_beir(args.data, args.split)
    t1 = time.perf_counter()

    # Tokenizer: bm25s' regex tokenizer (lowercase, tokens of >= 2 word chars),
    # its English stopword list, and PyStemmer's Snowball "english" stemmer
    # (Porter2). bm25s only accepts a stemmer callable, and Snowball English is
    # the closest available to Lucene/Anserini's default Porter stemmer; the
    # two differ on some words, so small nDCG differences vs foil are expected.
    stemmer = Stemmer.Stemmer("english")
    corpus_tokens = bm25s.tokenize(doc_texts, stopwords="en", stemmer=stemmer,
                                   show_progress=False)
    # method="lucene": idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
    # tf part = tf / (tf + k1 * (1 - b + b * dl / avgdl))  (Lucene >= 8 BM25).
    # k1=0.9, b=0.4 are Anserini's defaults used for the BEIR BM25 baselines.
    retriever = bm25s.BM25(method="lucene", k1=args.k1, b=args.b)
    retriever.index(corpus_tokens, show_progress=False)
    t2 = time.perf_counter()

    # Query tokens are tokenized with the same settings; bm25s maps them onto
    # the index vocabulary by string (unknown terms are dropped; an all-unknown
    # query scores every document 0). Repeated query terms count repeatedly.
    query_tokens = bm25s.tokenize(qtexts, stopwords="en", stemmer=stemmer,
                                  show_progress=False)
    k = min(args.top_k, len(doc_ids))  # bm25s raises if k > number of docs
    # No `corpus=` given here or at index time, so `documents` holds row
    # indices into the indexed corpus (file order), mapped back to ids below.
    # n_threads > 0: a ThreadPoolExecutor over queries (numpy backend unless
    # numba is installed); n_threads=0 would be sequential.
    docs, scores = retriever.retrieve(query_tokens, k=k, n_threads=args.threads,
                                      show_progress=False)
    t3 = time.perf_counter()

    n_lines = 0
    with open(args.output, "w", encoding="utf-8") as out:
        for qi, qid in enumerate(qids):
            row_docs, row_scores = docs[qi], scores[qi]
            for rank, (di, s) in enumerate(zip(row_docs.tolist(), row_scores.tolist()), 1):
                # %.9g round-trips float32 scores, so the evaluator sees no
                # extra ties from formatting.
                out.write(f"{qid} Q0 {doc_ids[di]} {rank} {s:.9g} bm25s\n")
                n_lines += 1
    t4 = time.perf_counter()

    log(f"{len(doc_ids)} docs, {len(qids)} queries, k={k}, {n_lines} run lines -> {args.output}")
    log(f"vocab={len(retriever.vocab_dict)} backend={retriever.backend} bm25s={bm25s.__version__}")
    log(f"import={T_IMPORTED - T_START:.3f}s load={t1 - t0:.3f}s "
        f"tokenize+index={t2 - t1:.3f}s search={t3 - t2:.3f}s write={t4 - t3:.3f}s "
        f"total={t4 - T_START:.3f}s")


if __name__ == "__main__":
    main()
