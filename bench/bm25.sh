#!/usr/bin/env bash
# BM25 benchmark: foil vs bm25s on BEIR SciFact (test split, 300 queries).
#
# Each timed run is one whole process, start to exit: read the corpus,
# tokenize + index it, retrieve the top 1000 docs per query, write a TREC run.
# Both tools get 2 threads (foil: --threads; bm25s: n_threads plus the
# OMP/OpenBLAS/MKL/Numba thread caps). Runs are interleaved (bench/timeit.py
# rotates the order every round) after one untimed warm-up round each.
# Reports per-run and median wall time, the ratio bm25s/foil, peak RSS, and
# nDCG@10 / Recall@100 of both runs (pytrec_eval, BEIR style; cross-checked
# with `foil eval` when the binary has it).
#
# Usage (from anywhere):  bench/bm25.sh
# Env:
#   RUNS=5        timed runs per tool (median is reported)
#   WARMUP=1      untimed warm-up rounds
#   THREADS=2     threads per tool
#   TOPK=1000     depth of the retrieved lists
#   DATA=../shared/data/scifact   BEIR data dir (relative to the repo root)
#   SPLIT=test    qrels split; its judged query ids are the queries
#   FOIL=path     use this foil binary instead of building target/release/foil
#   PYTHON=python3
# Output: bench/out/bm25.json (summary), bench/out/bm25/ (runs, logs, timing,
# eval JSON), and a Markdown table on stdout. Progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RUNS="${RUNS:-5}"
WARMUP="${WARMUP:-1}"
THREADS="${THREADS:-2}"
TOPK="${TOPK:-1000}"
SPLIT="${SPLIT:-test}"
PYTHON="${PYTHON:-python3}"
DATA="$(cd "${DATA:-../shared/data/scifact}" && pwd)"
QRELS="$DATA/qrels/$SPLIT.tsv"
OUT="$ROOT/bench/out"
WORK="$OUT/bm25"

log() { echo "bm25.sh: $*" >&2; }

for f in "$DATA/corpus.jsonl" "$DATA/queries.jsonl" "$QRELS"; do
  [[ -f "$f" ]] || { log "missing $f"; exit 1; }
done

if [[ -z "${FOIL:-}" ]]; then
  log "building foil (cargo build --release -p foil-cli)"
  cargo build --release -p foil-cli >&2
  FOIL="$ROOT/target/release/foil"
fi
[[ "$FOIL" == */* ]] || FOIL="$(type -P "$FOIL" || echo "$FOIL")"
[[ -x "$FOIL" ]] || { log "foil binary not executable: $FOIL"; exit 1; }
FOIL="$(cd "$(dirname "$FOIL")" && pwd)/$(basename "$FOIL")"

# The same thread caps for both processes (foil ignores them; bm25s' numpy,
# and numba if installed, obey them). OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE,
# if the machine sets them, are left as they are.
export OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" \
       MKL_NUM_THREADS="$THREADS" NUMBA_NUM_THREADS="$THREADS"

mkdir -p "$WORK"
rm -rf "$WORK/logs"
FOIL_RUN="$WORK/foil.run"
BM25S_RUN="$WORK/bm25s.run"
rm -f "$FOIL_RUN" "$BM25S_RUN" "$WORK"/foil_eval.* "$WORK/eval.json" "$WORK/timing.json"

log "timing: $RUNS runs + $WARMUP warm-up each, $THREADS threads, top-$TOPK, data $DATA ($SPLIT)"
"$PYTHON" bench/timeit.py --runs "$RUNS" --warmup "$WARMUP" \
    --logdir "$WORK/logs" --json "$WORK/timing.json" \
  --label foil -- "$FOIL" search --data "$DATA" --split "$SPLIT" --retriever bm25 \
    --top-k "$TOPK" --threads "$THREADS" --output "$FOIL_RUN" \
  --label bm25s -- "$PYTHON" bench/bm25s_peer.py --data "$DATA" --split "$SPLIT" \
    --top-k "$TOPK" --threads "$THREADS" --output "$BM25S_RUN" \
  > /dev/null

for r in "$FOIL_RUN" "$BM25S_RUN"; do
  [[ -s "$r" ]] || { log "run file missing or empty: $r"; exit 1; }
done

log "evaluating with pytrec_eval"
"$PYTHON" bench/evaluate.py --qrels "$QRELS" "$FOIL_RUN" "$BM25S_RUN" > "$WORK/eval.json"

# Cross-check with foil's own evaluator, if this build has `foil eval`.
FOIL_EVAL_OK=0
if "$FOIL" eval --help > /dev/null 2>&1; then
  log "cross-checking with foil eval"
  if "$FOIL" eval --qrels "$QRELS" --run "$FOIL_RUN" --json > "$WORK/foil_eval.foil.json" 2> "$WORK/foil_eval.foil.err" &&
     "$FOIL" eval --qrels "$QRELS" --run "$BM25S_RUN" --json > "$WORK/foil_eval.bm25s.json" 2> "$WORK/foil_eval.bm25s.err"; then
    FOIL_EVAL_OK=1
  else
    log "foil eval failed (see $WORK/foil_eval.*.err); skipping the cross-check"
  fi
else
  log "foil eval not available; skipping the cross-check"
fi

FOIL_VERSION="$("$FOIL" --version 2>/dev/null | head -n1 || true)"

export ROOT WORK OUT FOIL FOIL_RUN BM25S_RUN QRELS DATA SPLIT THREADS TOPK FOIL_EVAL_OK FOIL_VERSION
"$PYTHON" - <<'PY'
import json, os, platform, re, statistics, subprocess, sys, datetime

E = os.environ
work = E["WORK"]
timing = json.load(open(os.path.join(work, "timing.json")))
ev = json.load(open(os.path.join(work, "eval.json")))["runs"]
cmds = {c["label"]: c for c in timing["commands"]}
runs = {"foil": E["FOIL_RUN"], "bm25s": E["BM25S_RUN"]}


def sh(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, cwd=E["ROOT"]).stdout.strip()
    except OSError:
        return ""


def bm25s_phases():
    """Median of each phase that bm25s_peer.py logs on stderr (timed runs)."""
    acc = {}
    for i in range(timing["runs"]):
        try:
            text = open(os.path.join(work, "logs", f"bm25s.{i}.err")).read()
        except OSError:
            continue
        for k, v in re.findall(r"(\S+)=([0-9.]+)s\b", text):
            acc.setdefault(k, []).append(float(v))
    return {k: statistics.median(v) for k, v in acc.items()}


foil_eval = {}
if E["FOIL_EVAL_OK"] == "1":
    for tool in runs:
        try:
            foil_eval[tool] = json.load(open(os.path.join(work, f"foil_eval.{tool}.json")))
        except (OSError, ValueError) as e:
            foil_eval[tool] = {"error": str(e)}

tools = {}
for tool, run in runs.items():
    c, m = cmds[tool], ev[run]
    t = {
        "argv": c["argv"],
        "wall_s": c["wall_s"],
        "median_wall_s": c["median_wall_s"],
        "min_wall_s": c["min_wall_s"],
        "user_s": c["user_s"],
        "sys_s": c["sys_s"],
        "median_cpu_util": c["median_cpu_util"],
        "peak_rss_kb": c["peak_rss_kb"],
        "median_peak_rss_mb": c["median_peak_rss_mb"],
        "ndcg@10": m["ndcg_cut_10"],
        "recall@100": m["recall_100"],
        "queries_evaluated": m["queries_evaluated"],
        "queries_missing": m["queries_missing"],
        "dropped_identical_ids": m["dropped_identical_ids"],
        "run_file": run,
    }
    if tool in foil_eval:
        fe = foil_eval[tool]
        t["foil_eval"] = fe
        diffs = {k: abs(fe[k] - t[k]) for k in ("ndcg@10", "recall@100")
                 if isinstance(fe.get(k), (int, float))}
        t["foil_eval_max_abs_diff"] = max(diffs.values()) if diffs else None
    tools[tool] = t
if "bm25s" in tools:
    tools["bm25s"]["median_phases_s"] = bm25s_phases()

ratio = tools["bm25s"]["median_wall_s"] / tools["foil"]["median_wall_s"]
bm25s_ver = sh(sys.executable, "-c", "import bm25s; print(bm25s.__version__)")
cpu = ""
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
result = {
    "bench": "bm25",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "data": E["DATA"], "split": E["SPLIT"], "top_k": int(E["TOPK"]),
    "threads": int(E["THREADS"]), "runs": timing["runs"], "warmup": timing["warmup"],
    "order": timing["order"], "rss_source": timing["rss_source"],
    "ratio_bm25s_over_foil": ratio,
    "tools": tools,
    "env": {
        "git_commit": sh("git", "rev-parse", "HEAD"),
        "git_dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no")),
        "foil": E["FOIL"], "foil_version": E["FOIL_VERSION"],
        "bm25s_version": bm25s_ver, "python": platform.python_version(),
        "cpu": cpu, "nproc": os.cpu_count(),
        "thread_env": {k: E.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                             "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                                             "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
    },
}
path = os.path.join(E["OUT"], "bm25.json")
with open(path, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")

print(f"BM25 on {os.path.basename(E['DATA'])} ({E['SPLIT']}, "
      f"{tools['foil']['queries_evaluated']} queries), top-{E['TOPK']}, "
      f"{E['THREADS']} threads, median of {timing['runs']} interleaved runs\n")
print("| tool | median wall s | peak RSS MB | nDCG@10 | R@100 |")
print("|---|---:|---:|---:|---:|")
for tool, t in tools.items():
    print(f"| {tool} | {t['median_wall_s']:.3f} | {t['median_peak_rss_mb']:.1f} "
          f"| {t['ndcg@10']:.4f} | {t['recall@100']:.4f} |")
print(f"\nratio bm25s/foil (median wall): {ratio:.2f}x")
for tool, t in tools.items():
    print(f"{tool} runs (s): " + " ".join(f"{w:.3f}" for w in t["wall_s"])
          + f"  (cpu util {t['median_cpu_util']:.2f})")
if "median_phases_s" in tools["bm25s"]:
    print("bm25s phases (median s): " + " ".join(
        f"{k}={v:.3f}" for k, v in tools["bm25s"]["median_phases_s"].items()))
for tool, t in tools.items():
    if "foil_eval" in t:
        fe = t["foil_eval"]
        d = t.get("foil_eval_max_abs_diff")
        flag = "" if d is not None and d < 1e-4 else "  <-- MISMATCH"
        print(f"foil eval on {tool} run: nDCG@10={fe.get('ndcg@10')} R@100={fe.get('recall@100')}"
              f" (max |diff| vs pytrec_eval: {d}){flag}")
for tool, t in tools.items():
    if t["queries_missing"]:
        print(f"warning: {tool} run lacks {t['queries_missing']} judged queries "
              f"(the means are over the {t['queries_evaluated']} present, as BEIR does)")
print(f"\nwritten {os.path.relpath(path, E['ROOT'])}")
PY
