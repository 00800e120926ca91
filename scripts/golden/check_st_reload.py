#!/usr/bin/env python3
"""Checks that sentence-transformers loads a folder foil saved and embeds (or scores) like foil.

Bi-encoders:
    foil train ROWS --model BASE --output MODEL
    foil encode --model MODEL --input CORPUS --output VECTORS
    python3 scripts/golden/check_st_reload.py MODEL VECTORS CORPUS
encodes the texts of VECTORS/ids.jsonl (title + " " + text, as foil encode does) with
SentenceTransformer(MODEL) and prints the smallest cosine between its vectors and foil's
(VECTORS/vectors.f32); exits 1 below --min (default 0.99999).

Cross-encoders:
    foil train ROWS --model-type cross-encoder --model BASE --output MODEL
    foil rerank --data DATA --run RUN --cross-encoder MODEL --output RERANKED
    python3 scripts/golden/check_st_reload.py MODEL RERANKED CORPUS --queries DATA/queries.jsonl
scores every (query, passage) pair of the TREC run RERANKED with CrossEncoder(MODEL) and prints
the largest difference between sigmoid(its logit) and foil's score; exits 1 above --max-diff
(default 1e-5).
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def check_cross_encoder(args):
    import math

    import torch
    from sentence_transformers import CrossEncoder

    with open(args.queries, encoding="utf-8") as f:
        queries = {d["_id"]: d["text"] for d in map(json.loads, f)}
    with open(args.corpus, encoding="utf-8") as f:
        corpus = {d["_id"]: (d.get("title") or "") + " " + (d.get("text") or "")
                  for d in map(json.loads, f)}
    with open(args.vectors, encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip()]
    model = CrossEncoder(args.model, device="cpu")
    logits = model.predict([(queries[r[0]], corpus[r[2]]) for r in rows],
                           activation_fct=torch.nn.Identity())
    worst = max(abs(float(r[4]) - 1 / (1 + math.exp(-float(z)))) for r, z in zip(rows, logits))
    print(f"{args.model}: {len(rows)} pairs, largest |foil score - sigmoid(CrossEncoder logit)| "
          f"{worst:.2e}")
    return 0 if worst <= args.max_diff else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("vectors")
    ap.add_argument("corpus")
    ap.add_argument("--min", type=float, default=0.99999)
    ap.add_argument("--queries", help="queries.jsonl: check a cross-encoder on a reranked run")
    ap.add_argument("--max-diff", type=float, default=1e-5)
    args = ap.parse_args()
    if args.queries:
        sys.exit(check_cross_encoder(args))
    with open(os.path.join(args.vectors, "ids.jsonl"), encoding="utf-8") as f:
        ids = [json.loads(line) for line in f]
    with open(args.corpus, encoding="utf-8") as f:
        corpus = {d["_id"]: d for d in map(json.loads, f)}
    texts = [(corpus[i].get("title") or "") + " " + (corpus[i].get("text") or "") for i in ids]
    foil = np.fromfile(os.path.join(args.vectors, "vectors.f32"), dtype="<f4")
    foil = foil.reshape(len(ids), -1).astype(np.float64)
    st = SentenceTransformer(args.model, device="cpu").encode(texts, batch_size=16)
    st = st.astype(np.float64)
    cos = (foil * st).sum(1) / np.linalg.norm(foil, axis=1) / np.linalg.norm(st, axis=1)
    print(f"{args.model}: {len(ids)} texts, minimum cosine foil vs sentence-transformers "
          f"{cos.min():.9f}")
    sys.exit(0 if cos.min() >= args.min else 1)


if __name__ == "__main__":
    main()
