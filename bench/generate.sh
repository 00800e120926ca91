#!/usr/bin/env bash
# Local LLM generation benchmark: foil (crates/foil-llm) vs llama-cpp-python on the SAME GGUF.
#
# Measured in-process by each tool (whole-process time would mostly measure model loading):
#   pp_tok_s         prompt processing of one sequence: prompt tokens / time to feed the first
#                    prompt (~350 tokens) from an empty cache
#   tg_tok_s         decoding one sequence: 64 greedy steps / their time
#   peak_rss_mb      the process's peak resident set (llama.cpp's mapped GGUF pages included)
#   batch_queries_s  N SciFact passages (the first N of corpus.jsonl), each wrapped in the same
#                    "write one search query for this passage" user message, chat template applied,
#                    greedy, up to MAX_TOKENS tokens or end of turn: N / total time. foil runs the
#                    N as one continuous batch; llama-cpp-python (no multi-sequence API) one by one.
# Also reported: the process CPU seconds of the prompt step and of the batch (all threads), so
# that results on a shared machine can be read per CPU-second. The tools alternate: ROUNDS
# rounds each run every model on foil, then on llama.cpp (each process taking the median of
# RUNS repetitions inside it), and each figure is the median over the rounds. Both tools run
# THREADS threads (RAYON_NUM_THREADS for foil, n_threads/n_threads_batch for llama.cpp).
#
# Usage: bench/generate.sh [smollm2|qwen|all]        (default: all)
# Env:
#   N=16 MAX_TOKENS=32 ROUNDS=3 RUNS=1 THREADS=2
#   DATA=../shared/data/scifact     BEIR data dir (relative to the repo root)
#   FOIL_MODELS=~/.cache/foil/models (scripts/fetch-models.sh smollm2 qwen installs the GGUFs)
#   PYTHON=python3                  with llama-cpp-python, numpy and jinja2; without them the
#                                   script installs llama-cpp-python==LLAMA_CPP_VERSION (0.3.36)
#                                   from source into LLAMA_VENV (~/.cache/foil/venv-llama)
#   ONLY=foil|llama                 run one side only
# Output: bench/out/generate.json and a Markdown table on stdout; progress on stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${N:-16}"
MAX_TOKENS="${MAX_TOKENS:-32}"
RUNS="${RUNS:-1}"
ROUNDS="${ROUNDS:-3}"
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
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

# llama-cpp-python, built from its PyPI source (about 6 minutes on 2 cores), in its own venv
# unless PYTHON already has it.
if [[ "$ONLY" != foil ]] && ! "$PYTHON" -c 'import llama_cpp, jinja2, numpy' 2>/dev/null; then
  VENV="${LLAMA_VENV:-$HOME/.cache/foil/venv-llama}"
  if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import llama_cpp, jinja2, numpy' 2>/dev/null; then
    echo "installing llama-cpp-python==$LLAMA_CPP_VERSION into $VENV (builds from source)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "llama-cpp-python==$LLAMA_CPP_VERSION" numpy jinja2 >&2
  fi
  PYTHON="$VENV/bin/python"
fi

# ROUNDS rounds, each running every model on foil then on llama.cpp, so that a change in the
# machine's speed falls on both tools; each figure is the median over the rounds.
rm -f "$OUT"/generate/*.json
for round in $(seq 1 "$ROUNDS"); do
  for name in "${names[@]}"; do
    gguf="${FILES[$name]}"
    [[ -f "$gguf" ]] || { echo "missing $gguf: run scripts/fetch-models.sh $name" >&2; exit 2; }
    if [[ "$ONLY" != llama ]]; then
      echo "round $round/$ROUNDS, foil: $name" >&2
      RAYON_NUM_THREADS="$THREADS" \
        "$BENCH" "$gguf" "$CORPUS" "$N" "$MAX_TOKENS" "$RUNS" > "$OUT/generate/foil.$name.$round.json"
    fi
    if [[ "$ONLY" != foil ]]; then
      echo "round $round/$ROUNDS, llama-cpp-python: $name" >&2
      "$PYTHON" bench/llama_cpp_peer.py "$gguf" "$CORPUS" "$N" "$MAX_TOKENS" "$RUNS" "$THREADS" \
        > "$OUT/generate/llama.$name.$round.json"
    fi
  done
done

# One record per (model, tool): the median of each measured figure over the rounds.
for f in "$OUT"/generate/*.1.json; do
  base="${f%.1.json}"
  model="${base##*.}"
  jq -s --arg m "$model" '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                       else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    . as $all
    | $all[0] + {model: $m, rounds: ($all | length)}
    + (["pp_tok_s", "pp_cpu_s", "tg_tok_s", "batch_queries_s", "batch_cpu_s", "peak_rss_mb"]
       | map(. as $k | {key: $k, value: ([$all[][$k]] | median)}) | from_entries)
  ' "$base".*.json
done | jq -s 'sort_by(.model, .tool)' > "$OUT/generate.json"
echo "| model | tool | prompt tok/s | prompt tok per CPU-s | decode tok/s | batch of $N: queries/s | batch CPU-s | completion tokens | peak RSS MB |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
jq -r '.[] | "| \(.model) | \(.tool) | \(.pp_tok_s|floor) | \(if (.pp_cpu_s // 0) > 0 then (.prompt_tokens_one / .pp_cpu_s | floor) else "n/a" end) | \(.tg_tok_s*10|floor/10) | \(.batch_queries_s*100|floor/100) | \(.batch_cpu_s // 0 | .*10|floor/10) | \(.batch_completion_tokens) | \(.peak_rss_mb // 0 | floor) |"' "$OUT/generate.json"
