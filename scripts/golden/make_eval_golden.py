#!/usr/bin/env python3
"""Golden values for foil's evaluator, computed by pytrec_eval (trec_eval's own C code).

    python3 scripts/golden/make_eval_golden.py --qrels QRELS --run RUN --out GOLDEN.json

Writes, for every query pytrec_eval evaluates, nDCG@k (ndcg_cut), MAP@k (map_cut), Recall@k
(recall), P@k (P) and MRR@k for k in 1,3,5,10,100,1000, under foil's key names ("ndcg@10").
MRR@k is trec_eval's recip_rank on the run cut to its top k in trec_eval's order (score
descending, then document id descending), which is what BEIR's mrr@k computes.
Before evaluating, documents whose id equals the query id are removed, as BEIR does.

Requires: pip install pytrec_eval-terrier
"""
import argparse
import json

import pytrec_eval

CUTOFFS = [1, 3, 5, 10, 100, 1000]


def read_qrels(path):
    qrels = {}
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if n == 1 and not fields[-1].lstrip("-").isdigit():
                continue  # header
            if len(fields) == 4:
                q, _, d, r = fields
            else:
                q, d, r = fields
            qrels.setdefault(q, {})[d] = int(r)
    return qrels


def read_run(path):
    run = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields:
                run.setdefault(fields[0], {})[fields[2]] = float(fields[4])
    return run


def top_k(docs, k):
    # trec_eval's order: score descending, then docno descending.
    ranked = sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    return dict(ranked[:k])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qrels", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    qrels = read_qrels(args.qrels)
    run = read_run(args.run)
    for q, docs in run.items():  # BEIR's ignore_identical_ids
        docs.pop(q, None)

    ks = ",".join(map(str, CUTOFFS))
    evaluator = pytrec_eval.RelevanceEvaluator(
        qrels, {f"ndcg_cut.{ks}", f"map_cut.{ks}", f"recall.{ks}", f"P.{ks}"}
    )
    scores = evaluator.evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    per_query = {}
    for q, s in scores.items():
        row = {}
        for name, prefix in [("ndcg", "ndcg_cut_"), ("map", "map_cut_"), ("recall", "recall_"), ("p", "P_")]:
            for k in CUTOFFS:
                row[f"{name}@{k}"] = s[f"{prefix}{k}"]
        per_query[q] = row
    for k in CUTOFFS:
        cut = {q: top_k(docs, k) for q, docs in run.items()}
        for q, s in rr.evaluate(cut).items():
            per_query[q][f"mrr@{k}"] = s["recip_rank"]

    keys = list(next(iter(per_query.values())).keys())
    mean = {m: sum(row[m] for row in per_query.values()) / len(per_query) for m in keys}
    golden = {
        "tool": f"pytrec_eval {getattr(pytrec_eval, '__version__', '')}".strip(),
        "qrels": args.qrels,
        "run": args.run,
        "mean": mean,
        "per_query": dict(sorted(per_query.items())),
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(golden, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"{len(per_query)} queries -> {args.out}")


if __name__ == "__main__":
    main()
