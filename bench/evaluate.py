#!/usr/bin/env python3
"""Evaluate TREC run files against BEIR qrels with pytrec_eval, BEIR style.

    bench/evaluate.py --qrels DIR/qrels/test.tsv [--measures ndcg_cut.10,recall.100] RUN...

- qrels: BEIR tsv (header line `query-id corpus-id score` skipped, CRLF ok),
  or a TREC qrels file (`qid iter docid rel`, 4 columns) if it has no header.
- a run line is `qid Q0 docid rank score tag`; the rank column is ignored
  (trec_eval orders by score, ties by docid), as pytrec_eval does.
- as BEIR's EvaluateRetrieval(ignore_identical_ids=True): a retrieved doc
  whose id equals the query id is dropped before evaluating.
- each measure is the mean over the queries in run ∩ qrels (pytrec_eval only
  scores those; BEIR divides by that count). Queries judged but absent from
  the run are counted in `queries_missing` and do not pull the mean down.

Prints one JSON object: {"qrels": ..., "runs": {RUN: {measure: mean, ...}}}.
Measure keys are pytrec_eval's (ndcg_cut_10, recall_100).
"""

import argparse
import csv
import json
import sys

import pytrec_eval


def read_qrels(path):
    qrels = {}
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if r]
    if rows and len(rows[0]) == 3 and not rows[0][2].strip().lstrip("-").isdigit():
        rows = rows[1:]  # BEIR header
    for r in rows:
        if len(r) == 1:
            r = r[0].split()
        if len(r) == 3:
            qid, did, rel = r
        elif len(r) == 4:
            qid, _, did, rel = r
        else:
            sys.exit(f"evaluate.py: bad qrels line in {path}: {r!r}")
        qrels.setdefault(qid.strip(), {})[did.strip()] = int(rel)
    return qrels


def read_run(path):
    run = {}
    dropped_identical = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                sys.exit(f"evaluate.py: {path}:{n}: expected 6 columns, got {line!r}")
            qid, _, did, _, score, _ = parts
            if did == qid:
                dropped_identical += 1
                continue
            run.setdefault(qid, {})[did] = float(score)
    return run, dropped_identical


def evaluate(qrels, run, measures):
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, set(measures))
    per_query = evaluator.evaluate(run)
    keys = [m.replace(".", "_") for m in measures]
    n = len(per_query)
    means = {k: (sum(pq[k] for pq in per_query.values()) / n if n else 0.0) for k in keys}
    return means, per_query


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qrels", required=True)
    p.add_argument("--measures", default="ndcg_cut.10,recall.100")
    p.add_argument("--per-query", action="store_true", help="include per-query values")
    p.add_argument("runs", nargs="+")
    a = p.parse_args()
    measures = [m.strip() for m in a.measures.split(",") if m.strip()]
    qrels = read_qrels(a.qrels)
    out = {"qrels": a.qrels, "qrels_queries": len(qrels), "runs": {}}
    for path in a.runs:
        run, dropped = read_run(path)
        means, per_query = evaluate(qrels, run, measures)
        r = dict(means)
        r["queries_evaluated"] = len(per_query)
        r["queries_in_run"] = len(run)
        r["queries_missing"] = sum(1 for q in qrels if q not in run)
        r["dropped_identical_ids"] = dropped
        if a.per_query:
            r["per_query"] = per_query
        out["runs"][path] = r
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
