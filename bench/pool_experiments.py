#!/usr/bin/env python3
"""Pools the trained pipelines of several `foil experiment` reports (same data, base model and
training budget; different ways of getting negatives) and reports how well each negative-set
statistic ranks them by test nDCG@10: Spearman's rho and Kendall's tau over all pipelines.

    python3 -P bench/pool_experiments.py bench/out/experiment/report.json \
        bench/out/experiment-deeper/report.json

Standard library only. Ties get average ranks (Spearman) and count as neither concordant nor
discordant (Kendall's tau-b).
"""

import json
import math
import sys

STATISTICS = [
    ("eci", "ECI (reconstruction)"),
    ("auc", "AUC"),
    ("safety", "safety"),
    ("hardness", "hardness"),
    ("mean_margin", "mean margin"),
    ("mean_negative_score", "mean negative score"),
    ("at_or_above_positive", "share at or above the positive"),
]


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def pearson(a, b):
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    if va == 0 or vb == 0:
        return float("nan")
    return cov / math.sqrt(va * vb)


def spearman(a, b):
    return pearson(ranks(a), ranks(b))


def kendall_tau_b(a, b):
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt(
        (concordant + discordant + ties_a) * (concordant + discordant + ties_b)
    )
    return (concordant - discordant) / denominator if denominator else float("nan")


def main(paths):
    rows = []
    for path in paths:
        report = json.load(open(path))
        negatives = report["config"]["negatives"]
        window = f"ranks {negatives['range_min']}-{negatives['range_max']}"
        for p in report["pipelines"]:
            if p["baseline"] or not p.get("statistics"):
                continue
            label = p["pipeline"] if p["pipeline"] == "llm" else f"{p['pipeline']} ({window})"
            rows.append((label, p["ndcg@10"], p["statistics"]))
    rows.sort(key=lambda r: -r[1])
    print(f"{len(rows)} trained pipelines from {len(paths)} reports\n")
    header = "| pipeline | nDCG@10 | " + " | ".join(name for _, name in STATISTICS) + " |"
    print(header)
    print("|---|" + "---:|" * (len(STATISTICS) + 1))
    for label, ndcg, stats in rows:
        cells = " | ".join(
            "n/a" if stats.get(key) is None else f"{stats[key]:.4f}" for key, _ in STATISTICS
        )
        print(f"| {label} | {ndcg:.4f} | {cells} |")
    print("\n| statistic | Spearman rho | Kendall tau-b |")
    print("|---|---:|---:|")
    ndcg = [r[1] for r in rows]
    for key, name in STATISTICS:
        values = [r[2].get(key) for r in rows]
        if any(v is None for v in values):
            continue
        print(f"| {name} | {spearman(values, ndcg):.3f} | {kendall_tau_b(values, ndcg):.3f} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
