#!/usr/bin/env python3
"""sentence-transformers peer of `foil search --retriever dense` on a BEIR split.

    bench/st_search.py --model DIR --data BEIR_DIR [--split test] [--top-k 100] \\
        [--threads 2] [--batch-size 32] --output run.trec

Encodes every passage (title + " " + text, as BEIR joins them) and the split's queries that
have judgments, scores them by dot product (the model's vectors are unit length when its
modules end in Normalize, so this is cosine) and writes the top k per query as a TREC run
(ties broken by document id). One JSON line goes to stdout: {"encode_seconds", "passages",
"queries", "model"}. Progress goes to stderr.
"""

import argparse
import json
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", required=True)
    return p.parse_args()


ARGS = parse_args()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)

from sentence_transformers import SentenceTransformer  # noqa: E402


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    args = ARGS
    corpus = read_jsonl(os.path.join(args.data, "corpus.jsonl"))
    queries = {q["_id"]: q["text"] for q in read_jsonl(os.path.join(args.data, "queries.jsonl"))}
    judged = []
    with open(os.path.join(args.data, "qrels", f"{args.split}.tsv"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and not parts[-1].lstrip("-").isdigit():
                continue
            if parts[0] not in judged and int(parts[-1]) > 0:
                judged.append(parts[0])
    qids = [q for q in judged if q in queries]
    ids = [d["_id"] for d in corpus]
    texts = [(d.get("title") or "") + " " + (d.get("text") or "") for d in corpus]

    model = SentenceTransformer(args.model, device="cpu")
    started = time.perf_counter()
    p = model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True,
                     show_progress_bar=False)
    q = model.encode([queries[i] for i in qids], batch_size=args.batch_size,
                     convert_to_numpy=True, show_progress_bar=False)
    seconds = time.perf_counter() - started
    scores = q @ p.T
    with open(args.output, "w", encoding="utf-8") as out:
        for row, qid in zip(scores, qids):
            order = sorted(range(len(ids)), key=lambda j: (-row[j], ids[j]))[:args.top_k]
            for rank, j in enumerate(order, 1):
                out.write(f"{qid} Q0 {ids[j]} {rank} {row[j]:.6f} sentence-transformers\n")
    print(json.dumps({"encode_seconds": seconds, "passages": len(ids), "queries": len(qids),
                      "model": os.path.basename(os.path.normpath(args.model))}))


if __name__ == "__main__":
    main()
