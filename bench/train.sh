#!/usr/bin/env bash
# Training-step benchmark (issues 6, 14): foil train vs sentence-transformers (model +
# MultipleNegativesRankingLoss + torch AdamW, what its trainer runs per step), the same batch
# shape — 16 queries + 16 positives + 16 negatives, maximum length 128 — 2 threads each. The
# tools alternate, RUNS times each. Reports the median over runs of each run's median step
# time after its first step (foil: median_step_seconds in its manifest; sentence-transformers:
# bench/st_train.py), and peak RSS (GNU time), with the load average before and after.
#
#   bench/train.sh      (env: STEPS=5, RUNS=3, PYTHON=python3, FOIL=target/release/foil, MODEL, TABLE)
#
# Needs: pip install sentence-transformers (into PYTHON's environment); scripts/fetch-models.sh
# minilm. (`python3 -P`: bench/timeit.py would otherwise shadow the standard library's timeit,
# which torch imports.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STEPS="${STEPS:-5}"
RUNS="${RUNS:-3}"
PYTHON="${PYTHON:-python3}"
log() { printf 'train.sh: %s\n' "$*" >&2; }
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
# fixed by its seed; only the batch shape matters for the time per step. The tools alternate,
# RUNS times each, and the summary gives medians.
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average before: $LOAD_BEFORE"
for run in $(seq 1 "$RUNS"); do
  log "run $run of $RUNS: foil"
  rm -rf "$OUT/foil-$run"
  /usr/bin/time -f %M -o "$OUT/foil-$run.rss" "$FOIL" train "$TABLE" --model "$MODEL" \
    --output "$OUT/foil-$run" --batch-size 16 --max-length 128 --max-steps "$STEPS" \
    --checkpoint-every 0 --threads 2 --no-progress 2> "$OUT/foil-$run.err"
  log "run $run of $RUNS: sentence-transformers"
  /usr/bin/time -f %M -o "$OUT/st-$run.rss" "$PYTHON" -P bench/st_train.py --model "$MODEL" \
    --table "$TABLE" --batch 16 --max-length 128 --steps "$STEPS" --threads 2 \
    > "$OUT/st-$run.json" 2> "$OUT/st-$run.err"
done
"$PYTHON" - "$OUT" "$RUNS" "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
out, runs, before, after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rss(name):
    return int(open(f"{out}/{name}.rss").read().split()[-1]) / 1024
foil = [json.load(open(f"{out}/foil-{r}/manifest.json"))["timings"]["median_step_seconds"]
        for r in range(1, runs + 1)]
st = [json.load(open(f"{out}/st-{r}.json"))["seconds_per_step"] for r in range(1, runs + 1)]
foil_rss = [rss(f"foil-{r}") for r in range(1, runs + 1)]
st_rss = [rss(f"st-{r}") for r in range(1, runs + 1)]
med = statistics.median
print(f"load average before the runs: {before}; after: {after}; "
      f"{runs} interleaved runs each, medians")
print()
print("| tool | s/step (median) | runs | peak RSS MB (median) |")
print("|---|---:|---|---:|")
print(f"| foil | {med(foil):.2f} | {', '.join(f'{x:.2f}' for x in foil)} | {med(foil_rss):.0f} |")
print(f"| sentence-transformers | {med(st):.2f} | {', '.join(f'{x:.2f}' for x in st)} "
      f"| {med(st_rss):.0f} |")
print(f"\nfoil takes {med(foil) / med(st):.2f}x sentence-transformers' time per step at "
      f"{med(foil_rss) / med(st_rss):.2f}x its peak RSS")
PY
