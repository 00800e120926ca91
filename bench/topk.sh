#!/usr/bin/env bash
# Exact top-k benchmark: foil (foil_dense::exact_top_k) vs faiss IndexFlatIP.
#
# Data: 100,000 x 384 corpus and 5,000 x 384 queries, standard normal from numpy's
# default_rng(SEED), rows L2-normalized, written once as raw little-endian f32 files under
# bench/out/topk/data (bench/faiss_topk.py gen); both programs read the same files. Each
# timed run is one whole process: load both matrices, search the top-k by inner product for
# every query, write the ids and scores. Each program times its search alone (loading, and
# faiss' index.add, excluded) and prints it as JSON; bench/timeit.py times the whole process
# and its peak RSS. Both get 2 threads (foil: RAYON_NUM_THREADS; faiss:
# faiss.omp_set_num_threads plus the OMP/OpenBLAS/MKL caps). Runs are interleaved (timeit.py
# rotates the order every round) after one untimed warm-up round each.
# Reports the median search and process times, the ratio faiss/foil, peak RSS, and whether
# the results agree (same top-k id set for >= 99.9% of the queries, scores within 1e-4).
#
# Usage (from anywhere):  bench/topk.sh
# Env:
#   RUNS=5        timed runs per tool (median is reported)
#   WARMUP=1      untimed warm-up rounds
#   THREADS=2     threads per tool
#   TOPK=100      depth of the lists
#   DOCS=100000 QUERIES=5000 DIM=384 SEED=20240611   the generated data
#   FOIL_TOPK=path  use this topk_bench binary instead of building it
#   PYTHON=python3
# Output: bench/out/topk.json (summary), bench/out/topk/ (data, results, logs, timing), and a
# Markdown table on stdout. Progress goes to stderr. Exits 1 when the results disagree.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RUNS="${RUNS:-5}"
WARMUP="${WARMUP:-1}"
THREADS="${THREADS:-2}"
TOPK="${TOPK:-100}"
DOCS="${DOCS:-100000}"
QUERIES="${QUERIES:-5000}"
DIM="${DIM:-384}"
SEED="${SEED:-20240611}"
PYTHON="${PYTHON:-python3}"
OUT="$ROOT/bench/out"
WORK="$OUT/topk"
DATA="$WORK/data"

log() { echo "topk.sh: $*" >&2; }

log "data: $DOCS x $DIM corpus, $QUERIES queries, seed $SEED ($DATA)"
"$PYTHON" bench/faiss_topk.py gen --dir "$DATA" --docs "$DOCS" --queries "$QUERIES" \
  --dim "$DIM" --seed "$SEED" >&2

if [[ -z "${FOIL_TOPK:-}" ]]; then
  log "building topk_bench (cargo build --release -p foil-dense --example topk_bench)"
  cargo build --release -p foil-dense --example topk_bench >&2
  FOIL_TOPK="$ROOT/target/release/examples/topk_bench"
fi
[[ -x "$FOIL_TOPK" ]] || { log "topk_bench not executable: $FOIL_TOPK"; exit 1; }
FOIL_TOPK="$(cd "$(dirname "$FOIL_TOPK")" && pwd)/$(basename "$FOIL_TOPK")"

# The same thread caps for both processes. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, if the
# machine sets them, are left as they are.
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" \
       OPENBLAS_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"

rm -rf "$WORK/logs"
rm -f "$WORK"/foil.ids "$WORK"/foil.scores "$WORK"/faiss.ids "$WORK"/faiss.scores \
      "$WORK/timing.json" "$WORK/compare.json"

log "timing: $RUNS runs + $WARMUP warm-up each, $THREADS threads, top-$TOPK"
"$PYTHON" bench/timeit.py --runs "$RUNS" --warmup "$WARMUP" \
    --logdir "$WORK/logs" --json "$WORK/timing.json" \
  --label foil -- "$FOIL_TOPK" --corpus "$DATA/corpus.f32" --queries "$DATA/queries.f32" \
    --dim "$DIM" --k "$TOPK" --out-ids "$WORK/foil.ids" --out-scores "$WORK/foil.scores" \
  --label faiss -- "$PYTHON" bench/faiss_topk.py search --corpus "$DATA/corpus.f32" \
    --queries "$DATA/queries.f32" --dim "$DIM" --k "$TOPK" --threads "$THREADS" \
    --out-ids "$WORK/faiss.ids" --out-scores "$WORK/faiss.scores" \
  > /dev/null

log "comparing the results"
"$PYTHON" bench/faiss_topk.py compare --k "$TOPK" \
  --foil-ids "$WORK/foil.ids" --foil-scores "$WORK/foil.scores" \
  --faiss-ids "$WORK/faiss.ids" --faiss-scores "$WORK/faiss.scores" > "$WORK/compare.json"

export ROOT WORK OUT DATA FOIL_TOPK THREADS TOPK DOCS QUERIES DIM SEED
"$PYTHON" - <<'PY'
import datetime, json, os, platform, statistics, subprocess, sys

E = os.environ
work = E["WORK"]
timing = json.load(open(os.path.join(work, "timing.json")))
cmp = json.load(open(os.path.join(work, "compare.json")))
cmds = {c["label"]: c for c in timing["commands"]}


def sh(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, cwd=E["ROOT"]).stdout.strip()
    except OSError:
        return ""


def reports(tool):
    """The JSON line each timed run printed (its own search time)."""
    out = []
    for i in range(timing["runs"]):
        text = open(os.path.join(work, "logs", f"{tool}.{i}.out")).read()
        out.append(json.loads(text.strip().splitlines()[-1]))
    return out


tools = {}
for tool in ("foil", "faiss"):
    c, reps = cmds[tool], reports(tool)
    search = [r["search_s"] for r in reps]
    t = {
        "argv": c["argv"],
        "search_s": search,
        "median_search_s": statistics.median(search),
        "min_search_s": min(search),
        "median_load_s": statistics.median(r["load_s"] for r in reps),
        "wall_s": c["wall_s"],
        "median_wall_s": c["median_wall_s"],
        "user_s": c["user_s"],
        "sys_s": c["sys_s"],
        "median_cpu_util": c["median_cpu_util"],
        "peak_rss_kb": c["peak_rss_kb"],
        "median_peak_rss_mb": c["median_peak_rss_mb"],
        "report": reps[-1],
    }
    if tool == "faiss":
        t["median_add_s"] = statistics.median(r["add_s"] for r in reps)
    tools[tool] = t

ratio = tools["faiss"]["median_search_s"] / tools["foil"]["median_search_s"]
ratio_wall = tools["faiss"]["median_wall_s"] / tools["foil"]["median_wall_s"]
agree = (cmp["same_id_sets_share"] >= 0.999 and cmp["max_abs_score_diff_by_rank"] <= 1e-4
         and cmp["max_abs_score_diff_same_id"] <= 1e-4 and cmp["foil_scores_descending"])
cpu = ""
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
meta = json.load(open(os.path.join(E["DATA"], "meta.json")))
result = {
    "bench": "topk",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "data": meta, "top_k": int(E["TOPK"]),
    "threads": int(E["THREADS"]), "runs": timing["runs"], "warmup": timing["warmup"],
    "order": timing["order"], "rss_source": timing["rss_source"],
    "ratio_faiss_over_foil_search": ratio,
    "ratio_faiss_over_foil_process": ratio_wall,
    "agree": agree,
    "compare": cmp,
    "tools": tools,
    "env": {
        "git_commit": sh("git", "rev-parse", "HEAD"),
        "git_dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no")),
        "topk_bench": E["FOIL_TOPK"],
        "faiss_version": tools["faiss"]["report"].get("faiss_version"),
        "python": platform.python_version(),
        "cpu": cpu, "nproc": os.cpu_count(),
        "thread_env": {k: E.get(k) for k in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS",
                                             "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                             "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
    },
}
path = os.path.join(E["OUT"], "topk.json")
with open(path, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")

print(f"Exact top-{E['TOPK']} inner product, {meta['queries']} queries x {meta['docs']} docs "
      f"x {meta['dim']} dims (normalized random), {E['THREADS']} threads, "
      f"median of {timing['runs']} interleaved runs\n")
print("| tool | median search s | median process s | peak RSS MB | cpu util |")
print("|---|---:|---:|---:|---:|")
for tool, t in tools.items():
    print(f"| {tool} | {t['median_search_s']:.3f} | {t['median_wall_s']:.3f} "
          f"| {t['median_peak_rss_mb']:.1f} | {t['median_cpu_util']:.2f} |")
print(f"\nratio faiss/foil: search {ratio:.2f}x, whole process {ratio_wall:.2f}x")
for tool, t in tools.items():
    print(f"{tool} search runs (s): " + " ".join(f"{s:.3f}" for s in t["search_s"]))
flag = "" if agree else "  <-- MISMATCH"
print(f"agreement: {cmp['same_id_sets']}/{cmp['queries']} queries with the same top-{E['TOPK']} ids "
      f"({100 * cmp['same_id_sets_share']:.2f}%), {cmp['same_order']} in the same order; "
      f"max |score diff| {cmp['max_abs_score_diff_by_rank']:.2e}{flag}")
print(f"\nwritten {os.path.relpath(path, E['ROOT'])}")
sys.exit(0 if agree else 1)
PY
