#!/usr/bin/env bash
# Mining benchmark: foil mine vs sentence-transformers' mine_hard_negatives on BEIR SciFact
# train (919 pairs, 5,183 passages), all-MiniLM-L6-v2, range_max 50, relative_margin 0.05,
# 5 negatives, top sampling; 2 threads each; whole processes, interleaved (bench/timeit.py);
# foil without its embedding cache, so both encode everything.
#
#   bench/mine.sh            (env: RUNS=1, PRECISION=f32, PYTHON=python3, FOIL=target/release/foil,
#                             DATA, MODEL)
# PRECISION is foil's --precision (bf16 on CPUs with AMX). Needs: pip install
# sentence-transformers datasets (into PYTHON's environment); scripts/fetch-models.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${RUNS:-1}"
PRECISION="${PRECISION:-f32}"
PYTHON="${PYTHON:-python3}"
DATA="$(cd "${DATA:-../shared/data/scifact}" && pwd)"
MODEL="${MODEL:-$HOME/.cache/foil/models/all-MiniLM-L6-v2}"
OUT="$ROOT/bench/out/mine"
mkdir -p "$OUT"
if [[ -z "${FOIL:-}" ]]; then
  cargo build --release -p foil-cli >&2
  FOIL="$ROOT/target/release/foil"
fi
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 HF_HUB_OFFLINE=1
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$PYTHON" -P bench/timeit.py --runs "$RUNS" --warmup 0 --logdir "$OUT/logs" --json "$OUT/timing.json" \
  --label foil -- "$FOIL" mine --data "$DATA" --split train --retriever dense --model "$MODEL" \
     --range-max 50 --relative-margin 0.05 --num-negatives 5 --sampling top --threads 2 \
     --no-cache --output "$OUT/foil" --no-progress --precision "$PRECISION" \
  --label st -- "$PYTHON" bench/st_mine.py --data "$DATA" --model "$MODEL" --output "$OUT/st.jsonl" >&2
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$PYTHON" - "$OUT/timing.json" <<'PY' | tee "$OUT/summary.md"
import json, sys
t = json.load(open(sys.argv[1]))
c = {x["label"]: x for x in t["commands"]}
print("| tool | median wall s | peak RSS MB | cpu util |")
print("|---|---:|---:|---:|")
for label in ("foil", "st"):
    x = c[label]
    print(f"| {label} | {x['median_wall_s']:.1f} | {x['median_peak_rss_mb']:.0f} | {x['median_cpu_util']:.2f} |")
f, s = c["foil"], c["st"]
print(f"\nfoil is {s['median_wall_s'] / f['median_wall_s']:.2f}x faster at "
      f"{f['median_peak_rss_mb'] / s['median_peak_rss_mb']:.2f}x the peak RSS")
PY
python3 scripts/golden/compare_mine.py --foil "$OUT/foil/negatives.jsonl" \
  --st tests/fixtures/mine/st_scifact_train.jsonl | head -8
