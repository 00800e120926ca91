#!/usr/bin/env bash
# Is an LLM negative a shortcut? (issue 13, must-show 4)
#
# For the first QUERIES SciFact train queries: corpus-free negatives written from the query
# alone (the paper's query-only method) by SmolLM2 and by Qwen2.5 0.5B, and BM25-mined ones;
# `foil inspect --data` reports how separable each set is from real SciFact passages: the
# cross-validated AUC of a seeded linear probe on all-MiniLM-L6-v2 embeddings (0.5: the
# negatives look like corpus passages; near 1: they give themselves away by their style).
#
#   bench/separability_scifact.sh     (env: QUERIES=60 SEED=42 THREADS=2 LLMS="smollm2 qwen")
# Output: bench/out/separability/<source>/ and a Markdown table on stdout (also report.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FOIL="${FOIL:-target/release/foil}"
DATA="${DATA:-../shared/data/scifact}"
QUERIES="${QUERIES:-60}"
SEED="${SEED:-42}"
THREADS="${THREADS:-2}"
LLMS="${LLMS:-smollm2 qwen}"
OUT=bench/out/separability
mkdir -p "$OUT"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo build --release -p foil-cli --quiet

for llm in $LLMS; do
  start=$(date +%s)
  "$FOIL" generate negatives --data "$DATA" --split train --mode query-only --limit "$QUERIES" \
    --generator "local:$llm" --seed "$SEED" --threads "$THREADS" \
    --output "$OUT/$llm" --no-progress
  echo "$llm: $(( $(date +%s) - start )) s" >&2
done
"$FOIL" mine --data "$DATA" --split train --retriever bm25 --range-max 30 --num-negatives 1 \
  --seed "$SEED" --format n-tuple --output "$OUT/bm25" --no-progress
for source in bm25 $LLMS; do
  "$FOIL" inspect "$OUT/$source/n-tuple.jsonl" --judge-model all-MiniLM-L6-v2 --data "$DATA" \
    --max-queries "$QUERIES" --seed "$SEED" --threads "$THREADS" --output "$OUT/$source/inspect" \
    --no-progress
done

python3 - "$OUT" "$QUERIES" bm25 $LLMS <<'PY' | tee "$OUT/report.md"
import json, sys
out, queries, sources = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"| negatives (first {queries} SciFact train queries) | separability AUC | negatives / corpus passages | example negative |")
print("|---|---:|---:|---|")
for s in sources:
    r = json.load(open(f"{out}/{s}/inspect/report.json"))["separability"]
    first = json.loads(open(f"{out}/{s}/n-tuple.jsonl").readline())
    neg = next(v for k, v in first.items() if k.startswith("negative"))
    print(f"| {s} | {r['auc']:.3f} | {r['negatives']} / {r['corpus_passages']} | {neg[:100].replace('|', '/')}… |")
PY
