#!/usr/bin/env python3
"""Compares `foil mine` with sentence-transformers' mine_hard_negatives on SciFact train.

    foil mine --data ../shared/data/scifact --split train --retriever dense \
        --model all-MiniLM-L6-v2 --range-max 50 --relative-margin 0.05 --num-negatives 5 \
        --sampling top --output OUT
    python3 scripts/golden/compare_mine.py --foil OUT/negatives.jsonl \
        --st tests/fixtures/mine/st_scifact_train.jsonl [--min-agreement 0.99]

Agreement = shared (query id, negative doc id) pairs / pairs in sentence-transformers' rows
(n-tuple rows, 5 negatives each). Every difference is classified:
- merged_anchor: ST keys queries by text; SciFact train has two texts shared by two query ids
  (85/86, 89/90), which ST merges (their positives are excluded from and their margins taken
  over each other); foil keeps query ids apart.
- window: ST takes candidates from a window of range_max + max_positives (55, global) and
  filters before capping at range_max; foil takes the range_max best non-positive candidates.
  A query with few survivors can get a negative from ranks 51-54 in ST only, or be dropped
  by foil only.
- near_tie: the two tools' scores differ by ~1e-7 (different float32 reductions), so
  candidates within 1e-5 of each other, of the margin threshold or of the window edge can swap.
- other: anything else (should be 0).
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--foil", required=True)
    ap.add_argument("--st", required=True)
    ap.add_argument("--num-negatives", type=int, default=5)
    ap.add_argument("--min-agreement", type=float, default=0.0)
    args = ap.parse_args()
    n = args.num_negatives
    foil = {}
    for line in open(args.foil, encoding="utf-8"):
        r = json.loads(line)
        foil[(r["query_id"], r["positive_id"])] = r
    st = [json.loads(line) for line in open(args.st, encoding="utf-8")]
    merged = {"85", "86", "89", "90"}

    shared = total = 0
    kinds = {"merged_anchor": 0, "window": 0, "near_tie": 0, "other": 0}
    st_rows = set()
    for r in st:
        key = (r["qid"], r["pos"])
        st_rows.add(key)
        total += len(r["neg"])
        f = foil.get(key)
        fneg = [x["doc_id"] for x in f["negatives"][:n]] if f else []
        fscore = {x["doc_id"]: x["score"] for x in f["negatives"]} if f else {}
        for d, s in zip(r["neg"], r["neg_scores"]):
            if d in fneg:
                shared += 1
                continue
            if r["qid"] in merged:
                kinds["merged_anchor"] += 1
            elif len(fneg) < n:
                kinds["window"] += 1
            elif any(abs(s - fscore[x]) < 1e-5 for x in fneg) or abs(s - r["neg_scores"][-1]) < 1e-5:
                kinds["near_tie"] += 1
            else:
                kinds["other"] += 1
    foil_only_rows = [k for k, f in foil.items() if len(f["negatives"]) >= n and k not in st_rows]
    agreement = shared / total if total else 0.0
    report = {
        "st_rows": len(st),
        "foil_full_rows": sum(1 for f in foil.values() if len(f["negatives"]) >= n),
        "st_pairs": total,
        "shared_pairs": shared,
        "agreement": agreement,
        "differences": kinds,
        "foil_only_rows": [list(k) for k in foil_only_rows],
    }
    print(json.dumps(report, indent=1))
    if agreement < args.min_agreement:
        print(f"agreement {agreement:.4f} below {args.min_agreement}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
