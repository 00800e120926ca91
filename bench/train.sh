#!/usr/bin/env bash
# Training-step benchmark (issue 6): foil train vs sentence-transformers (model +
# MultipleNegativesRankingLoss + torch AdamW, what its trainer runs per step), the same batch
# shape — 16 queries + 16 positives + 16 negatives, maximum length 128 — 2 threads each, one
# after the other in the same run. Reports seconds per step (foil: mean over its steps from
# the manifest; sentence-transformers: median after the first step) and peak RSS (GNU time).
#
#   bench/train.sh      (env: STEPS=5, FOIL=target/release/foil, MODEL, TABLE)
# Needs: pip install sentence-transformers; scripts/fetch-models.sh minilm. (`python3 -P`: bench/timeit.py
# would otherwise shadow the standard library's timeit, which torch imports.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STEPS="${STEPS:-5}"
FOIL="${FOIL:-$ROOT/target/release/foil}"
MODEL="${MODEL:-$HOME/.cache/foil/models/all-MiniLM-L6-v2}"
OUT="$ROOT/bench/out/train"
mkdir -p "$OUT"
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 HF_HUB_OFFLINE=1
TABLE="${TABLE:-$OUT/mined/n-tuple.jsonl}"
if [[ ! -f "$TABLE" ]]; then
  "$FOIL" mine --data ../shared/data/scifact --split train --retriever bm25 --range-max 30 \
    --num-negatives 1 --format n-tuple --output "$OUT/mined" --no-progress >&2
fi
# The same rows in the same order for both: no shuffling in the peer, and foil's batches are
# fixed by its seed; only the batch shape matters for the time per step.
rm -rf "$OUT/foil"
/usr/bin/time -f %M -o "$OUT/foil.rss" "$FOIL" train "$TABLE" --model "$MODEL" \
  --output "$OUT/foil" --batch-size 16 --max-length 128 --max-steps "$STEPS" \
  --checkpoint-every 0 --threads 2 --no-progress 2> "$OUT/foil.err"
/usr/bin/time -f %M -o "$OUT/st.rss" python3 -P bench/st_train.py --model "$MODEL" --table "$TABLE" \
  --batch 16 --max-length 128 --steps "$STEPS" --threads 2 > "$OUT/st.json" 2> "$OUT/st.err"
python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, sys
out = sys.argv[1]
foil = json.load(open(f"{out}/foil/manifest.json"))["timings"]["seconds_per_step"]
st = json.load(open(f"{out}/st.json"))["seconds_per_step"]
rss = {k: int(open(f"{out}/{k}.rss").read().split()[-1]) / 1024 for k in ("foil", "st")}
print("| tool | s/step | peak RSS MB |")
print("|---|---:|---:|")
print(f"| foil | {foil:.2f} | {rss['foil']:.0f} |")
print(f"| sentence-transformers | {st:.2f} | {rss['st']:.0f} |")
print(f"\nfoil takes {foil / st:.2f}x sentence-transformers' time per step at "
      f"{rss['foil'] / rss['st']:.2f}x its peak RSS")
PY
