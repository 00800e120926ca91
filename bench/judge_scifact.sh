#!/usr/bin/env bash
# How good is a small LLM as a relevance judge? (issue 13, must-show 3)
#
# On a seeded sample of SciFact train queries, `foil judge` scores P(relevant) for every
# judged positive and for BM25's top 30 documents, with each LLM and judge template. Reported:
#   - AUC of P(relevant) for the positives against BM25's top-30 non-positives;
#   - the share of mined negatives the judge relabels: of BM25's top NEG non-positives per
#     query (what `foil mine --num-negatives NEG` would choose), those the relative rule calls
#     false negatives (P(negative) ≥ P(lowest positive), `foil mine --judge`'s default);
#   - five relabeled pairs next to their qrels (SciFact judges them not relevant);
#   - pairs per second.
#
#   bench/judge_scifact.sh            (env: QUERIES=20 TOP_K=30 NEG=5 SEED=42 THREADS=2
#                                      LLMS="smollm2 qwen" TEMPLATES="yes-no yes-no-few-shot")
# Output: bench/out/judge/<llm>-<template>/ (judgments.jsonl, run.trec, manifest.json) and a
# Markdown report on stdout (also bench/out/judge/report.md). Needs scripts/fetch-models.sh all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FOIL="${FOIL:-target/release/foil}"
DATA="${DATA:-../shared/data/scifact}"
QUERIES="${QUERIES:-20}"
TOP_K="${TOP_K:-30}"
NEG="${NEG:-5}"
SEED="${SEED:-42}"
THREADS="${THREADS:-2}"
LLMS="${LLMS:-smollm2 qwen}"
TEMPLATES="${TEMPLATES:-yes-no yes-no-few-shot}"
OUT=bench/out/judge
mkdir -p "$OUT"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo build --release -p foil-cli --quiet

"$FOIL" search --data "$DATA" --split train --retriever bm25 --top-k "$TOP_K" \
  --output "$OUT/bm25-train.trec" --no-progress
for llm in $LLMS; do
  for template in $TEMPLATES; do
    dir="$OUT/$llm-$template"
    "$FOIL" judge --data "$DATA" --split train --run "$OUT/bm25-train.trec" --top-k "$TOP_K" \
      --with-positives --sample "$QUERIES" --seed "$SEED" --judge "$llm" \
      --judge-template "$template" --judge-cache "$OUT/cache.jsonl" --threads "$THREADS" \
      --output "$dir" --json --no-progress > "$dir.json" || true
  done
done

python3 - "$OUT" "$DATA" "$NEG" "$LLMS" "$TEMPLATES" <<'EOF' | tee "$OUT/report.md"
import json, sys
out, data, neg, llms, templates = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(), sys.argv[5].split()
queries = {}
for line in open(f"{data}/queries.jsonl"):
    q = json.loads(line)
    queries[q["_id"]] = q["text"]
titles = {}
for line in open(f"{data}/corpus.jsonl"):
    d = json.loads(line)
    titles[d["_id"]] = d.get("title") or d["text"][:80]
print("| judge LLM | template | AUC (positives vs BM25 top-30 non-positives) | positives / non-positives | mined negatives relabeled (top %d, P ≥ P(positive)) | pairs/s |" % neg)
print("|---|---|---:|---:|---:|---:|")
examples = {}
for llm in llms:
    for t in templates:
        summary = json.load(open(f"{out}/{llm}-{t}.json"))
        rows = [json.loads(l) for l in open(f"{out}/{llm}-{t}/judgments.jsonl")]
        by_query = {}
        for r in rows:
            by_query.setdefault(r["query_id"], []).append(r)
        relabeled, mined = 0, 0
        found = []
        for q, rs in by_query.items():
            pos = [r["p_relevant"] for r in rs if r["relevance"] > 0 and r["p_relevant"] is not None]
            if not pos:
                continue
            ref = min(pos)
            negs = sorted((r for r in rs if r["relevance"] <= 0 and r["rank"] is not None), key=lambda r: r["rank"])[:neg]
            for r in negs:
                if r["p_relevant"] is None:
                    continue
                mined += 1
                if r["p_relevant"] >= ref:
                    relabeled += 1
                    found.append((q, r, ref))
        examples[(llm, t)] = found
        share = relabeled / mined if mined else float("nan")
        auc = summary.get("auc")
        print(f"| {llm} | {t} | {auc:.4f} | {summary['positives']} / {summary['non_positives']} | {100 * share:.1f}% ({relabeled} of {mined}) | {summary['pairs'] / summary['seconds']:.2f} |")
best = max(examples, key=lambda k: json.load(open(f"{out}/{k[0]}-{k[1]}.json")).get("auc") or 0)
print(f"\nFive pairs {best[0]} ({best[1]}) relabels, with SciFact's qrels (0: not judged relevant):\n")
print("| query | relabeled passage (title) | its qrels grade | P(relevant) | P(positive) |")
print("|---|---|---:|---:|---:|")
for q, r, ref in examples[best][:5]:
    print(f"| {queries[q][:90]} | {titles[r['doc_id']][:90]} | {r['relevance']} | {r['p_relevant']:.3f} | {ref:.3f} |")
EOF
