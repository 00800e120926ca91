#!/usr/bin/env bash
# Mining at scale with precomputed vectors (issue 4, must-show 3): 10,000 queries against
# 1,000,000 384-d passage vectors, dense retrieval, sentence-transformers' usual filters,
# 2 threads. Reports wall time and peak RSS (GNU time) of the whole `foil mine` process.
#
#   FOIL=target/release/foil bench/mine_1m.sh            # DOCS / QUERIES override the sizes
set -euo pipefail
cd "$(dirname "$0")/.."
FOIL=${FOIL:-target/release/foil}
DOCS=${DOCS:-1000000}
QUERIES=${QUERIES:-10000}
OUT=${OUT:-bench/out/mine_1m}
if [[ ! -f "$OUT/corpus-vectors/header.json" ]]; then
    python3 bench/make_synthetic.py "$OUT" --docs "$DOCS" --queries "$QUERIES" --dim 384
fi
rm -rf "$OUT/mined"
/usr/bin/time -v "$FOIL" mine --data "$OUT/data" --split train \
    --corpus-embeddings "$OUT/corpus-vectors" --query-embeddings "$OUT/query-vectors" \
    --retriever dense --range-max 50 --relative-margin 0.05 --num-negatives 5 --sampling top \
    --format n-tuple --threads 2 --no-progress --output "$OUT/mined" 2> "$OUT/time.txt" >/dev/null \
    || { cat "$OUT/time.txt"; exit 1; }
grep -E "^mine:" "$OUT/time.txt"
wall=$(grep "Elapsed (wall clock)" "$OUT/time.txt" | awk '{print $NF}')
rss=$(grep "Maximum resident set size" "$OUT/time.txt" | awk '{print $NF}')
echo "docs=$DOCS queries=$QUERIES wall=$wall peak_rss_mb=$((rss / 1024))"
