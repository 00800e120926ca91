#!/usr/bin/env bash
# Encoding speed of each model family, foil vs sentence-transformers (issue 16): the tiny random
# checkpoints of tests/fixtures/tiny and MiniLM-sized random checkpoints of the same
# architectures (bench/make_sized_families.py), each timed by bench/encode.sh on the first N
# SciFact passages (interleaved runs, median, THREADS threads each), with the cosine of foil's
# vectors against sentence-transformers' on the same texts. all-MiniLM-L6-v2 (BERT, foil's
# fused kernels) is the reference row.
#
# Usage: bench/families_speed.sh        (on a machine with nothing else running)
# Env: N=500 RUNS=3 WARMUP=1 THREADS=2 BATCH=32 FAMILIES="xlm-roberta modernbert qwen2 qwen3"
#      PYTHON (with sentence-transformers), FOIL (a built foil binary; else it is built)
# Output: bench/out/families_speed.md (the table) and bench/out/families_speed/<row>.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
N="${N:-500}"
FAMILIES="${FAMILIES:-xlm-roberta modernbert qwen2 qwen3}"
OUT="$ROOT/bench/out/families_speed"
mkdir -p "$OUT"
log() { echo "families_speed.sh: $*" >&2; }

if [[ -z "${FOIL:-}" ]]; then
  cargo build --release -p foil-cli >&2
  FOIL="$ROOT/target/release/foil"
fi
export FOIL PYTHON N
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
[[ -d bench/out/families/qwen3 ]] || "$PYTHON" bench/make_sized_families.py >&2

# foil writes vectors.f32 in input order; encode.sh's cosine check reads an .npy.
export FOIL_EMB_EXPORT='"$PYTHON" -c "import numpy as np, os; v = np.fromfile(os.environ[\"FOIL_OUT\"] + \"/vectors.f32\", dtype=\"<f4\"); np.save(os.environ[\"VECTORS\"], v.reshape(int(os.environ[\"N\"]), -1))"'

run() { # LABEL MODEL MAXLEN
  log "$1"
  MODEL="$2" MAXLEN="$3" bench/encode.sh > "$OUT/$1.md"
  cp bench/out/encode.json "$OUT/$1.json"
}

MINILM="${FOIL_MODELS:-$HOME/.cache/foil/models}/all-MiniLM-L6-v2"
rows=()
[[ -d "$MINILM" ]] && { run bert-minilm "$MINILM" 256; rows+=(bert-minilm); }
for f in $FAMILIES; do
  run "$f-minilm-size" "bench/out/families/$f" 256; rows+=("$f-minilm-size")
  run "$f-tiny" "tests/fixtures/tiny/$f" 128; rows+=("$f-tiny")
done

"$PYTHON" - "$OUT" "${rows[@]}" > "$ROOT/bench/out/families_speed.md" <<'PY'
import json, sys
out, rows = sys.argv[1], sys.argv[2:]
print("| model | foil passages/s | sentence-transformers passages/s | ratio | foil RSS MB | ST RSS MB | min cosine |")
print("|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    j = json.load(open(f"{out}/{r}.json"))
    f, s = j["tools"]["foil"], j["tools"]["st"]
    q = (j.get("quality") or {}).get("min_cosine")
    print(f"| {r} | {f['median_encode_passages_per_s']:.1f} | {s['median_encode_passages_per_s']:.1f} "
          f"| {j['ratio_foil_over_st_encode']:.2f}x | {f['median_peak_rss_mb']:.0f} "
          f"| {s['median_peak_rss_mb']:.0f} | {'n/a' if q is None else format(q, '.6f')} |")
print(f"\nloadavg at end: {json.load(open(f'{out}/{rows[-1]}.json'))['env']['loadavg_at_end']}")
PY
cat "$ROOT/bench/out/families_speed.md"
