#!/usr/bin/env bash
# Local LLM generation benchmark: foil (crates/foil-llm) vs llama-cpp-python on the SAME GGUF.
#
# Measured in-process by each tool (whole-process time would mostly measure model loading):
#   pp_tok_s         prompt processing of one sequence: prompt tokens / time to feed the first
#                    prompt (~350 tokens) from an empty cache
#   tg_tok_s         decoding one sequence: 64 greedy steps / their time
#   batch_queries_s  N SciFact passages (the first N of corpus.jsonl), each wrapped in the same
#                    "write one search query for this passage" user message, chat template applied,
#                    greedy, up to MAX_TOKENS tokens or end of turn: N / total time. foil runs the
#                    N as one continuous batch; llama-cpp-python (no multi-sequence API) one by one.
# Also reported: the process CPU seconds of the prompt step and of the batch (all threads), so
# that results on a shared machine can be read per CPU-second. Each figure is the median of RUNS
# repetitions inside one process; both tools run THREADS
# threads (RAYON_NUM_THREADS for foil, n_threads/n_threads_batch for llama.cpp), one after the
# other in the same invocation.
#
# Usage: bench/generate.sh [smollm2|qwen|all]        (default: all)
# Env:
#   N=16 MAX_TOKENS=32 RUNS=3 THREADS=2
#   DATA=../shared/data/scifact     BEIR data dir (relative to the repo root)
#   FOIL_MODELS=~/.cache/foil/models (scripts/fetch-models.sh smollm2 qwen installs the GGUFs)
#   PYTHON=python3                  needs llama-cpp-python (pip install llama-cpp-python) + jinja2
#   ONLY=foil|llama                 run one side only
# Output: bench/out/generate.json and a Markdown table on stdout; progress on stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${N:-16}"
MAX_TOKENS="${MAX_TOKENS:-32}"
RUNS="${RUNS:-3}"
THREADS="${THREADS:-2}"
PYTHON="${PYTHON:-python3}"
ONLY="${ONLY:-}"
MODELS="${FOIL_MODELS:-$HOME/.cache/foil/models}"
DATA="$(cd "${DATA:-../shared/data/scifact}" && pwd)"
CORPUS="$DATA/corpus.jsonl"
OUT="$ROOT/bench/out"
mkdir -p "$OUT/generate"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

declare -A FILES=(
  [smollm2]="$MODELS/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
  [qwen]="$MODELS/Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
)
which="${1:-all}"
case "$which" in
  all) names=(smollm2 qwen) ;;
  smollm2|qwen) names=("$which") ;;
  *) echo "usage: bench/generate.sh [smollm2|qwen|all]" >&2; exit 2 ;;
esac

if [[ "$ONLY" != llama ]]; then
  echo "building the foil bench example (release)" >&2
  cargo build --release -q -p foil-llm --example llm_bench >&2
  BENCH="$CARGO_TARGET_DIR/release/examples/llm_bench"
fi

results=()
for name in "${names[@]}"; do
  gguf="${FILES[$name]}"
  [[ -f "$gguf" ]] || { echo "missing $gguf: run scripts/fetch-models.sh $name" >&2; exit 2; }
  if [[ "$ONLY" != llama ]]; then
    echo "foil: $name" >&2
    RAYON_NUM_THREADS="$THREADS" \
      "$BENCH" "$gguf" "$CORPUS" "$N" "$MAX_TOKENS" "$RUNS" > "$OUT/generate/foil.$name.json"
    results+=("$(jq -c --arg m "$name" '. + {model: $m}' "$OUT/generate/foil.$name.json")")
  fi
  if [[ "$ONLY" != foil ]]; then
    echo "llama-cpp-python: $name" >&2
    "$PYTHON" bench/llama_cpp_peer.py "$gguf" "$CORPUS" "$N" "$MAX_TOKENS" "$RUNS" "$THREADS" \
      > "$OUT/generate/llama.$name.json"
    results+=("$(jq -c --arg m "$name" '. + {model: $m}' "$OUT/generate/llama.$name.json")")
  fi
done

printf '%s\n' "${results[@]}" | jq -s '.' > "$OUT/generate.json"
echo "| model | tool | prompt tok/s | prompt tok per CPU-s | decode tok/s | batch of $N: queries/s | batch CPU-s | completion tokens |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
jq -r '.[] | "| \(.model) | \(.tool) | \(.pp_tok_s|floor) | \(if (.pp_cpu_s // 0) > 0 then (.prompt_tokens_one / .pp_cpu_s | floor) else "n/a" end) | \(.tg_tok_s*10|floor/10) | \(.batch_queries_s*100|floor/100) | \(.batch_cpu_s // 0 | .*10|floor/10) | \(.batch_completion_tokens) |"' "$OUT/generate.json"
