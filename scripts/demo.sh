#!/usr/bin/env bash
# foil's main job, end to end, on the built-in demo dataset (the README's first command).
#
#   scripts/demo.sh [OUTPUT_DIR]      (default: foil-demo)
#
# Builds foil in release mode and runs `foil demo`: writes the embedded dataset, indexes and
# searches it with BM25, evaluates the run, and prints the metrics table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p foil-cli --quiet
target/release/foil demo --output "${1:-foil-demo}"
