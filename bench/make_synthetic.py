"""A synthetic BEIR dataset with precomputed vectors, for mining at scale (bench/mine_1m.sh).

Writes OUT/data/{corpus.jsonl,queries.jsonl,qrels/train.tsv} and two foil embeddings stores,
OUT/corpus-vectors and OUT/query-vectors (header.json + ids.jsonl + vectors.f32, the format
crates/foil-dense/src/store.rs documents). Passage vectors are random unit vectors; each
query has one positive passage and its vector is that passage's vector plus noise, so
positives score high and the margins filters have work to do.

    python3 bench/make_synthetic.py OUT --docs 1000000 --queries 10000 --dim 384 --seed 7
"""
import argparse
import json
from pathlib import Path

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("out", type=Path)
p.add_argument("--docs", type=int, default=1_000_000)
p.add_argument("--queries", type=int, default=10_000)
p.add_argument("--dim", type=int, default=384)
p.add_argument("--noise", type=float, default=0.8)
p.add_argument("--seed", type=int, default=7)
args = p.parse_args()
rng = np.random.default_rng(args.seed)
data = args.out / "data"
(data / "qrels").mkdir(parents=True, exist_ok=True)

ENCODER = "synthetic:seed=%d;dim=%d" % (args.seed, args.dim)


def write_store(path: Path, ids, vectors, kind: str):
    path.mkdir(parents=True, exist_ok=True)
    id_bytes = "".join(json.dumps(i) + "\n" for i in ids).encode()
    (path / "ids.jsonl").write_bytes(id_bytes)
    vectors.astype("<f4").tofile(path / "vectors.f32")
    header = {
        "format": "foil-embeddings",
        "version": 1,
        "dim": args.dim,
        "count": len(ids),
        "normalized": True,
        "encoder": f"{ENCODER}|kind={kind}",
        "dtype": "f32le",
        "ids_bytes": len(id_bytes),
        "complete": True,
    }
    (path / "header.json").write_text(json.dumps(header, indent=2))


doc_ids = [f"d{i}" for i in range(args.docs)]
with open(data / "corpus.jsonl", "w") as f:
    for i, d in enumerate(doc_ids):
        f.write(json.dumps({"_id": d, "title": "", "text": f"synthetic passage number {i}"}) + "\n")
corpus = np.empty((args.docs, args.dim), dtype=np.float32)
for start in range(0, args.docs, 100_000):
    block = rng.standard_normal((min(100_000, args.docs - start), args.dim), dtype=np.float32)
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    corpus[start : start + len(block)] = block
write_store(args.out / "corpus-vectors", doc_ids, corpus, "Passage")

positives = rng.choice(args.docs, size=args.queries, replace=False)
query_ids = [f"q{i}" for i in range(args.queries)]
noise = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
noise /= np.linalg.norm(noise, axis=1, keepdims=True)
queries = corpus[positives] + args.noise * noise
queries /= np.linalg.norm(queries, axis=1, keepdims=True)
write_store(args.out / "query-vectors", query_ids, queries, "Query")
with open(data / "queries.jsonl", "w") as f:
    for i, q in enumerate(query_ids):
        f.write(json.dumps({"_id": q, "text": f"synthetic query number {i}"}) + "\n")
with open(data / "qrels/train.tsv", "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for q, d in zip(query_ids, positives):
        f.write(f"{q}\td{d}\t1\n")
print(f"{args.docs} passages, {args.queries} queries -> {args.out}")
