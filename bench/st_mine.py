#!/usr/bin/env python3
"""sentence-transformers peer for the hard-negative mining benchmark (`foil mine`).

Does, in one process, what `foil mine` does: read a BEIR dataset (corpus.jsonl with
text = title + " " + text as BEIR builds it, queries.jsonl, qrels/SPLIT.tsv), build one
(query text, positive passage text) pair per judgment with score >= 1 in qrels order, and run
sentence-transformers' mine_hard_negatives over all passages with a bi-encoder:

    bench/st_mine.py --data ../shared/data/scifact --split train --output out.jsonl \\
        [--model DIR] [--range-max 50] [--relative-margin 0.05] [--num-negatives 5] \\
        [--sampling top|random] [--seed 12] [--batch-size 32] [--threads 2]

The mining call is mine_hard_negatives(..., corpus=passages, range_max, relative_margin,
num_negatives, sampling_strategy, output_format="n-tuple", output_scores=True,
batch_size, use_faiss=False, verbose=False); it embeds the corpus and the queries itself
(that is most of its time). Only that call is timed for the in-process figure; import-to-exit
time is what bench/timeit.py measures. One JSON object goes to stdout:
{"tool", "seconds" (the mining call), "rows", "pairs", "import_seconds", "load_seconds",
"total_seconds", "threads", "batch_size", settings, versions}. Progress goes to stderr.

--output gets one JSON line per mined row, in mine_hard_negatives' row order, in the format of
tests/fixtures/mine/st_scifact_train.jsonl (scripts/golden/mine_st_reference.py):
  {"qid", "pos", "pos_score", "neg": [doc ids], "neg_scores": [...]} (+ "qids" when the anchor
  text is shared by several judged query ids), scores rounded to 6 decimals.
Needs the `datasets` package (mine_hard_negatives imports it).
"""

import argparse
import json
import os
import sys

# bench/timeit.py would shadow the standard library's timeit (which torch imports) because
# Python puts this script's folder first on sys.path; drop that entry.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import time  # noqa: E402

T_START = time.perf_counter()
DEFAULT_MODEL = os.path.expanduser("~/.cache/foil/models/all-MiniLM-L6-v2")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model folder")
    p.add_argument("--data", required=True, help="BEIR data folder")
    p.add_argument("--split", default="train", help="qrels split (qrels/SPLIT.tsv)")
    p.add_argument("--output", required=True, help="JSONL file for the mined rows")
    p.add_argument("--range-max", type=int, default=50)
    p.add_argument("--relative-margin", type=float, default=0.05)
    p.add_argument("--num-negatives", type=int, default=5)
    p.add_argument("--sampling", choices=("top", "random"), default="top")
    p.add_argument("--seed", type=int, default=12,
                   help="random.seed() before the call (only --sampling random uses it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2,
                   help="torch intra-op threads, and the caps of OpenMP/BLAS/rayon pools")
    return p.parse_args()


ARGS = parse_args()

# Cap every thread pool before torch / tokenizers start.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMBA_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import csv  # noqa: E402
import random  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
try:
    torch.set_num_interop_threads(ARGS.threads)
except RuntimeError:
    pass

import sentence_transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.util import mine_hard_negatives  # noqa: E402

T_IMPORTED = time.perf_counter()


def log(msg):
    print(f"st_mine: {msg}", file=sys.stderr, flush=True)


def load_beir(data, split):
    doc_ids, passages = [], []
    with open(os.path.join(data, "corpus.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                doc_ids.append(str(d["_id"]))
                passages.append((d.get("title") or "") + " " + (d.get("text") or ""))
    queries = {}
    with open(os.path.join(data, "queries.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                queries[str(d["_id"])] = d["text"]
    judgments = []
    with open(os.path.join(data, "qrels", f"{split}.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    for r in rows[1:]:  # header: query-id corpus-id score
        if len(r) >= 3 and int(r[2]) >= 1:
            judgments.append((r[0], r[1]))
    return doc_ids, passages, queries, judgments


def main():
    args = ARGS
    t0 = time.perf_counter()
    model = SentenceTransformer(args.model, device="cpu")
    doc_ids, passages, queries, judgments = load_beir(args.data, args.split)
    if not judgments:
        sys.exit("st_mine: no judgments with score >= 1")
    pos_of = {d: i for i, d in enumerate(doc_ids)}
    anchors = [queries[q] for q, _ in judgments]
    pos_texts = [passages[pos_of[d]] for _, d in judgments]
    dataset = Dataset.from_dict({"anchor": anchors, "positive": pos_texts})
    t1 = time.perf_counter()

    random.seed(args.seed)
    t2 = time.perf_counter()
    out = mine_hard_negatives(
        dataset, model, corpus=passages, range_max=args.range_max,
        relative_margin=args.relative_margin, num_negatives=args.num_negatives,
        sampling_strategy=args.sampling, output_format="n-tuple", output_scores=True,
        batch_size=args.batch_size, use_faiss=False, verbose=False)
    t3 = time.perf_counter()

    text_to_docs, text_to_qids = {}, {}
    for d, t in zip(doc_ids, passages):
        text_to_docs.setdefault(t, []).append(d)
    for q, _ in judgments:
        lst = text_to_qids.setdefault(queries[q], [])
        if q not in lst:
            lst.append(q)
    judged = set(judgments)
    k = args.num_negatives
    with open(args.output, "w", encoding="utf-8") as f:
        for r in out:
            docs = text_to_docs[r["positive"]]
            qids = [q for q in text_to_qids[r["anchor"]] if any((q, d) in judged for d in docs)]
            row = {"qid": qids[0], "pos": next(d for d in docs if (qids[0], d) in judged),
                   "pos_score": round(r["scores"][0], 6),
                   "neg": [text_to_docs[r[f"negative_{i}"]][0] for i in range(1, k + 1)],
                   "neg_scores": [round(x, 6) for x in r["scores"][1:]]}
            if len(qids) > 1:
                row["qids"] = qids
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    t4 = time.perf_counter()

    res = {
        "tool": "sentence-transformers",
        "seconds": t3 - t2,
        "rows": len(out),
        "pairs": len(judgments),
        "import_seconds": T_IMPORTED - T_START,
        "load_seconds": t1 - t0,
        "total_seconds": t4 - T_START,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "range_max": args.range_max,
        "relative_margin": args.relative_margin,
        "num_negatives": k,
        "sampling": args.sampling,
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
    }
    log(f"{len(out)} rows from {len(judgments)} pairs in {res['seconds']:.2f}s; "
        f"import={res['import_seconds']:.2f}s load={res['load_seconds']:.2f}s "
        f"total={res['total_seconds']:.2f}s")
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
