#!/usr/bin/env bash
# Zero-label domain adaptation on BEIR SciFact (issue 13, must-show 2): generated queries for
# 600 sampled passages (SciFact's training queries are not read), four ways to get their
# negatives, one fine-tune of all-MiniLM-L6-v2 each, evaluated on SciFact test with paired
# t-tests against the base model. Everything is seeded; the experiment resumes after a kill.
#
#   bench/experiment_zero_label_scifact.sh      (env: THREADS=2 OUT=bench/out/zero-label)
#
# Prints the load average first (run it on an otherwise idle machine for its timings), then
# the report's table and how long each step took (from the experiment's manifest.json).
# Needs scripts/fetch-models.sh all. About two hours on two cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FOIL="${FOIL:-target/release/foil}"
THREADS="${THREADS:-2}"
OUT="${OUT:-bench/out/zero-label}"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release -p foil-cli --quiet
start=$(date +%s)
"$FOIL" experiment --config bench/experiment_zero_label_scifact.toml --output "$OUT" \
  --threads "$THREADS" --no-progress
echo "wall: $(( $(date +%s) - start )) s"
sed -n '/^| pipeline/,/^$/p' "$OUT/report.md"
python3 - "$OUT" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/manifest.json"))
print("| step | seconds |\n|---|---:|")
for k, v in m["timings"].items():
    if k.startswith("step."):
        print(f"| {k[5:]} | {v:.0f} |")
q = json.load(open(f"{sys.argv[1]}/queries/manifest.json"))
print("\nqueries:", {k: v for k, v in q["counts"].items() if k in ("passages", "queries") or k.startswith("rejected")})
PY
