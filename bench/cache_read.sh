#!/usr/bin/env bash
# What the embedding cache's locks and checksums cost: `foil encode` of every SciFact passage
# (5,183) read entirely from the cache, by a foil built before they existed and by this tree.
#
# Each binary first fills its own cache folder (the two store formats live in different
# folders), untimed; then the timed runs alternate between the two (bench/timeit.py rotates
# the order every round) after one warm-up round each. Every timed run is one whole process:
# load the model (hashing its weights for the cache key), read the corpus, open the cache
# (read and check every chunk), take the 5,183 vectors from it, write the output store.
# The output folder is removed before each run, so no run resumes another.
#
# Usage:  bench/cache_read.sh
# Env:
#   BEFORE_REV=c3ebd93   the commit to compare with (the last one before locks and checksums)
#   FOIL_BEFORE=path     a foil binary built from BEFORE_REV (else it is built here, once,
#                        in bench/out/cache_read/before-target: a full release build)
#   RUNS=5 WARMUP=1 THREADS=2
#   MODEL=~/.cache/foil/models/all-MiniLM-L6-v2   DATA=../shared/data/scifact
# Output: bench/out/cache_read.json (timeit.py's result) and a Markdown line on stdout.
# Run it on an idle machine: it prints the load average first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${RUNS:-5}"
WARMUP="${WARMUP:-1}"
THREADS="${THREADS:-2}"
BEFORE_REV="${BEFORE_REV:-c3ebd93}"
MODEL="${MODEL:-${FOIL_MODELS:-$HOME/.cache/foil/models}/all-MiniLM-L6-v2}"
DATA="$(cd "${DATA:-../shared/data/scifact}" && pwd)"
WORK="$ROOT/bench/out/cache_read"
mkdir -p "$WORK"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

cargo build --release -p foil-cli --quiet
AFTER="$ROOT/target/release/foil"
BEFORE="${FOIL_BEFORE:-}"
if [[ -z "$BEFORE" ]]; then
  src="$WORK/before-src"
  if [[ ! -d "$src" ]]; then
    git worktree add --detach "$src" "$BEFORE_REV" >&2
  fi
  cargo build --release -p foil-cli --quiet --manifest-path "$src/Cargo.toml" \
    --target-dir "$WORK/before-target"
  BEFORE="$WORK/before-target/release/foil"
fi

encode() { # BINARY CACHE OUT
  echo "rm -rf '$3' && '$1' encode --model '$MODEL' --input '$DATA/corpus.jsonl' --output '$3' \
--cache-dir '$2' --threads $THREADS --no-progress --json"
}
for side in before after; do
  bin=$BEFORE; [[ $side == after ]] && bin=$AFTER
  rm -rf "$WORK/cache-$side"
  echo "filling the $side cache (untimed)" >&2
  bash -c "$(encode "$bin" "$WORK/cache-$side" "$WORK/out-$side")" >/dev/null 2>&1
done

python3 -P bench/timeit.py --runs "$RUNS" --warmup "$WARMUP" --logdir "$WORK/logs" \
  --json "$ROOT/bench/out/cache_read.json" \
  --label before -- bash -c "$(encode "$BEFORE" "$WORK/cache-before" "$WORK/out-before")" \
  --label after -- bash -c "$(encode "$AFTER" "$WORK/cache-after" "$WORK/out-after")" \
  >/dev/null

cmp "$WORK/out-before/vectors.f32" "$WORK/out-after/vectors.f32" \
  || { echo "the two caches gave different vectors" >&2; exit 1; }
for side in before after; do
  hits=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cache_hits"])' \
    "$WORK/logs/$side.0.out")
  [[ "$hits" == 5183 ]] || { echo "$side: $hits cache hits, not 5183" >&2; exit 1; }
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$ROOT/bench/out/cache_read.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
c = {x["label"]: x for x in r["commands"]}
b, a = c["before"], c["after"]
print(f"| foil encode, 5,183 SciFact passages from the cache | before {b['median_wall_s']:.3f} s "
      f"({b['median_peak_rss_mb']:.0f} MB) | after {a['median_wall_s']:.3f} s "
      f"({a['median_peak_rss_mb']:.0f} MB) | after/before {a['median_wall_s'] / b['median_wall_s']:.3f} "
      f"| median of {r['runs']} interleaved runs |")
print("before:", " ".join(f"{x:.3f}" for x in b["wall_s"]), file=sys.stderr)
print("after: ", " ".join(f"{x:.3f}" for x in a["wall_s"]), file=sys.stderr)
EOF
