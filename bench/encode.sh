#!/usr/bin/env bash
# Encoding benchmark: foil vs sentence-transformers, all-MiniLM-L6-v2 on BEIR SciFact passages.
#
# Both tools embed the same texts: the first N passages of corpus.jsonl (text = title + " " +
# text, as BEIR builds it), max_seq_length 256, batch size BATCH, THREADS threads each.
# Each timed run is one whole process, start to exit (load the model, read the passages,
# encode, write the vectors). Runs are interleaved (bench/timeit.py rotates the order every
# round) after WARMUP untimed warm-up rounds each. Reported per tool:
#   - in-process encode speed (passages/s of the encode step alone), median over the runs:
#       sentence-transformers: the JSON line of bench/st_encode.py (times model.encode only)
#       foil: the JSON line {"encode_seconds": ...} that `foil encode --json` prints on
#             stdout, else the number before "passages/s" in its stderr summary, else n/a
#   - whole-process wall time (median) and N / wall as passages/s, peak RSS, CPU use
#   - the ratio foil / sentence-transformers of both speeds
#   - a cosine check of foil's vectors against sentence-transformers' (when foil's output
#     folder holds vectors.npy, float32 [N, 384] in input order; see FOIL_EMB_EXPORT)
#
# The foil side runs
#   foil encode --model DIR --input corpus.jsonl --limit N --batch-size B --threads T \
#        --no-cache --output OUTDIR [--json]
# (--json only if `foil encode --help` mentions it); OUTDIR is emptied before every run.
#
# Usage (from anywhere):  bench/encode.sh
# Env:
#   N=2000        passages (the first N of the corpus)
#   MAXLEN=256    sentence-transformers' max_seq_length (make it the folder's, which foil uses)
#   BATCH=32      batch size of both tools
#   THREADS=2     threads per tool
#   RUNS=3        timed runs per tool (median is reported)
#   WARMUP=1      untimed warm-up rounds
#   MODEL=~/.cache/foil/models/all-MiniLM-L6-v2   sentence-transformers model folder
#                 (scripts/fetch-models.sh installs it; $FOIL_MODELS is honoured)
#   DATA=../shared/data/scifact   BEIR data dir (relative to the repo root)
#   ONLY=         "st" or "foil": time one tool alone (no ratio); ONLY=st needs no foil build
#   FOIL=path     use this foil binary instead of building target/release/foil
#   FOIL_EMB_EXPORT='cmd'  optional shell command run once after the timed runs, with
#                 $FOIL_OUT (foil's output folder) and $VECTORS ($FOIL_OUT/vectors.npy) in
#                 its environment; it should write $VECTORS from foil's own embeddings
#                 format, for the cosine check
#   PRECISION=f32 foil's --precision (f32, or bf16 on CPUs with AMX)
#   PYTHON=python3
# Output: bench/out/encode.json (summary), bench/out/encode/ (logs, timing, vectors), and a
# Markdown table on stdout. Progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${N:-2000}"
BATCH="${BATCH:-32}"
THREADS="${THREADS:-2}"
RUNS="${RUNS:-3}"
WARMUP="${WARMUP:-1}"
MAXLEN="${MAXLEN:-256}"   # sentence-transformers max_seq_length; foil reads the folder's
ONLY="${ONLY:-}"
PYTHON="${PYTHON:-python3}"
PRECISION="${PRECISION:-f32}"
# The cosine check reads vectors.npy; bench/foil_vectors.py writes it from foil's vectors.f32.
FOIL_EMB_EXPORT="${FOIL_EMB_EXPORT-$PYTHON -P bench/foil_vectors.py}"
MODEL="${MODEL:-${FOIL_MODELS:-$HOME/.cache/foil/models}/all-MiniLM-L6-v2}"
DATA="$(cd "${DATA:-../shared/data/scifact}" && pwd)"
CORPUS="$DATA/corpus.jsonl"
OUT="$ROOT/bench/out"
WORK="$OUT/encode"
FOIL_OUT="$WORK/foil_out"
ST_VECTORS="$WORK/st.npy"

log() { echo "encode.sh: $*" >&2; }

case "$ONLY" in ""|st|foil) ;; *) log "ONLY must be empty, st or foil"; exit 1 ;; esac
[[ -f "$CORPUS" ]] || { log "missing $CORPUS"; exit 1; }
[[ -f "$MODEL/config.json" && -f "$MODEL/modules.json" ]] ||
  { log "no sentence-transformers model in $MODEL (run scripts/fetch-models.sh)"; exit 1; }
MODEL="$(cd "$MODEL" && pwd)"

FOIL_JSON_FLAG=()
if [[ "$ONLY" != st ]]; then
  if [[ -z "${FOIL:-}" ]]; then
    log "building foil (cargo build --release -p foil-cli)"
    cargo build --release -p foil-cli >&2
    FOIL="$ROOT/target/release/foil"
  fi
  [[ "$FOIL" == */* ]] || FOIL="$(type -P "$FOIL" || echo "$FOIL")"
  [[ -x "$FOIL" ]] || { log "foil binary not executable: $FOIL"; exit 1; }
  FOIL="$(cd "$(dirname "$FOIL")" && pwd)/$(basename "$FOIL")"
  ENCODE_HELP="$("$FOIL" encode --help 2>&1)" ||
    { log "\`$FOIL encode --help\` failed; does this build have the encode command?"; exit 1; }
  if grep -q -- "--json" <<< "$ENCODE_HELP"; then
    FOIL_JSON_FLAG=(--json)
  else
    log "foil encode has no --json; its in-process time comes from the stderr summary if any"
  fi
else
  FOIL=""
fi

# The same thread caps for both processes (torch/OpenMP/BLAS in the peer, the HF tokenizers'
# rayon pool, and foil's rayon pool if it uses the global one; foil also gets --threads).
export OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" \
       MKL_NUM_THREADS="$THREADS" NUMBA_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

mkdir -p "$WORK"
rm -rf "$WORK/logs" "$FOIL_OUT"
rm -f "$ST_VECTORS" "$WORK/timing.json"

CMDS=()
if [[ "$ONLY" != st ]]; then
  # OUTDIR is removed before each run (inside the timed process, a few ms) so that every run
  # writes a fresh folder; `exec` keeps the RSS figure foil's own.
  CMDS+=(--label foil -- bash -c 'rm -rf -- "$0" && exec "$@"' "$FOIL_OUT"
         "$FOIL" encode --model "$MODEL" --input "$CORPUS" --limit "$N" --batch-size "$BATCH"
         --threads "$THREADS" --no-cache --output "$FOIL_OUT" "${FOIL_JSON_FLAG[@]}"
         --precision "$PRECISION")
fi
if [[ "$ONLY" != foil ]]; then
  CMDS+=(--label st -- "$PYTHON" bench/st_encode.py --model "$MODEL" --input "$CORPUS"
         --limit "$N" --batch-size "$BATCH" --threads "$THREADS" --max-seq-length "$MAXLEN"
         --output "$ST_VECTORS")
fi

log "timing: $RUNS runs + $WARMUP warm-up each, N=$N passages, batch $BATCH, $THREADS threads, model $MODEL"
"$PYTHON" bench/timeit.py --runs "$RUNS" --warmup "$WARMUP" \
    --logdir "$WORK/logs" --json "$WORK/timing.json" "${CMDS[@]}" > /dev/null

if [[ "$ONLY" != st && -n "${FOIL_EMB_EXPORT:-}" ]]; then
  log "running FOIL_EMB_EXPORT"
  FOIL_OUT="$FOIL_OUT" VECTORS="$FOIL_OUT/vectors.npy" bash -c "$FOIL_EMB_EXPORT" >&2 ||
    log "FOIL_EMB_EXPORT failed (exit $?); the cosine check will be skipped"
fi

FOIL_VERSION=""
[[ -n "$FOIL" ]] && FOIL_VERSION="$("$FOIL" --version 2>/dev/null | head -n1 || true)"

export ROOT WORK OUT FOIL FOIL_OUT ST_VECTORS DATA CORPUS MODEL N BATCH THREADS MAXLEN ONLY FOIL_VERSION
"$PYTHON" - <<'PY'
import datetime, json, os, platform, re, statistics, subprocess, sys

E = os.environ
work = E["WORK"]
timing = json.load(open(os.path.join(work, "timing.json")))
cmds = {c["label"]: c for c in timing["commands"]}
n_req = int(E["N"])


def sh(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, cwd=E["ROOT"]).stdout.strip()
    except OSError:
        return ""


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def json_lines(text, key):
    """JSON objects (one per line) that contain `key`, last one last."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and key in line:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and key in obj:
                found.append(obj)
    return found


def in_process(label, i):
    """(passages/s, encode seconds or None, extra dict) of timed run i, or (None, None, {})."""
    out = read(os.path.join(work, "logs", f"{label}.{i}.out"))
    err = read(os.path.join(work, "logs", f"{label}.{i}.err"))
    objs = json_lines(out, "encode_seconds")
    if objs:
        o = objs[-1]
        secs = o.get("encode_seconds")
        n = o.get("passages", n_req)
        if isinstance(secs, (int, float)) and secs > 0:
            pps = o.get("passages_per_s")
            if not isinstance(pps, (int, float)):
                pps = n / secs
            return float(pps), float(secs), o
    # Fallback: "... 123.4 passages/s ..." in a summary line on stderr (last one wins).
    m = re.findall(r"([0-9][0-9_,]*(?:\.[0-9]+)?)\s*passages/s", err)
    if m:
        return float(m[-1].replace(",", "").replace("_", "")), None, {}
    return None, None, {}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


tools = {}
for label, c in cmds.items():
    per = [in_process(label, i) for i in range(timing["runs"])]
    pps = [p for p, _, _ in per]
    extra = [x for _, _, x in per if x]
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
        "process_passages_per_s": n_req / c["median_wall_s"],
        "encode_passages_per_s": pps,
        "median_encode_passages_per_s": med(pps),
        "encode_seconds": [s for _, s, _ in per],
        "median_encode_seconds": med([s for _, s, _ in per]),
    }
    if extra:
        last = extra[-1]
        for k in ("passages", "mean_tokens", "truncated", "dim", "max_seq_length"):
            if k in last:
                t[k] = last[k]
        cpu = [x.get("encode_cpu_seconds") for x in extra]
        if any(isinstance(v, (int, float)) for v in cpu):
            t["median_encode_cpu_seconds"] = med([v for v in cpu if isinstance(v, (int, float))])
    tools[label] = t

ratio_encode = ratio_process = None
if "foil" in tools and "st" in tools:
    f, s = tools["foil"], tools["st"]
    if f["median_encode_passages_per_s"] and s["median_encode_passages_per_s"]:
        ratio_encode = f["median_encode_passages_per_s"] / s["median_encode_passages_per_s"]
    ratio_process = f["process_passages_per_s"] / s["process_passages_per_s"]

# Quality cross-check: cosine of foil's vectors vs sentence-transformers', row by row.
quality = None
foil_vec = os.path.join(E["FOIL_OUT"], "vectors.npy")
foil_f32 = os.path.join(E["FOIL_OUT"], "vectors.f32")
if not os.path.exists(foil_vec) and os.path.exists(foil_f32):
    # foil's store: header.json gives dim; vectors.f32 is row-major little-endian f32.
    import numpy as np
    dim = json.load(open(os.path.join(E["FOIL_OUT"], "header.json")))["dim"]
    np.save(foil_vec, np.fromfile(foil_f32, dtype="<f4").reshape(-1, dim))
if "foil" not in tools or "st" not in tools:
    quality_msg = "cosine check skipped: only one tool was timed"
elif not os.path.exists(foil_vec):
    quality_msg = (f"cosine check skipped: {os.path.relpath(foil_vec, E['ROOT'])} not found "
                   "(set FOIL_EMB_EXPORT to convert foil's embeddings to .npy)")
else:
    import numpy as np
    a = np.load(foil_vec).astype(np.float64)
    b = np.load(E["ST_VECTORS"]).astype(np.float64)
    if a.shape != b.shape:
        quality_msg = f"cosine check FAILED: foil vectors {a.shape} vs sentence-transformers {b.shape}"
        quality = {"error": quality_msg}
    else:
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = (a * b).sum(1) / np.maximum(na * nb, 1e-30)
        quality = {
            "rows": int(a.shape[0]), "dim": int(a.shape[1]),
            "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "p01_cosine": float(np.quantile(cos, 0.01)),
            "rows_below_0.999": int((cos < 0.999).sum()),
            "argmin": int(cos.argmin()),
            "max_abs_diff": float(np.abs(a - b).max()),
            "foil_norm_range": [float(na.min()), float(na.max())],
        }
        quality_msg = (f"cosine foil vs sentence-transformers over {a.shape[0]} passages: "
                       f"min {quality['min_cosine']:.6f}, mean {quality['mean_cosine']:.6f}, "
                       f"{quality['rows_below_0.999']} below 0.999, max |diff| {quality['max_abs_diff']:.2e}")
        if quality["min_cosine"] < 0.999:
            quality_msg += "  <-- MISMATCH"

st_ver = sh(sys.executable, "-c", "import sentence_transformers, torch; "
            "print(sentence_transformers.__version__, torch.__version__)")
cpu = ""
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
result = {
    "bench": "encode",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "data": E["DATA"], "corpus": E["CORPUS"], "model": E["MODEL"],
    "passages": n_req, "batch_size": int(E["BATCH"]), "max_seq_length": int(E["MAXLEN"]),
    "threads": int(E["THREADS"]), "runs": timing["runs"], "warmup": timing["warmup"],
    "order": timing["order"], "rss_source": timing["rss_source"],
    "ratio_foil_over_st_encode": ratio_encode,
    "ratio_foil_over_st_process": ratio_process,
    "tools": tools,
    "quality": quality, "quality_message": quality_msg,
    "env": {
        "git_commit": sh("git", "rev-parse", "HEAD"),
        "git_dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no")),
        "foil": E["FOIL"], "foil_version": E["FOIL_VERSION"],
        "sentence_transformers_torch": st_ver, "python": platform.python_version(),
        "cpu": cpu, "nproc": os.cpu_count(),
        "loadavg_at_end": open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None,
        "thread_env": {k: E.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                             "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                                             "RAYON_NUM_THREADS")},
    },
}
path = os.path.join(E["OUT"], "encode.json")
with open(path, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


mean_tok = next((t["mean_tokens"] for t in tools.values() if "mean_tokens" in t), None)
print(f"Encoding {n_req} passages of {os.path.basename(E['DATA'])} with "
      f"{os.path.basename(E['MODEL'])} (max_seq_length {E['MAXLEN']}, batch {E['BATCH']}, "
      f"mean {fmt(mean_tok, '.1f')} tokens/passage), {E['THREADS']} threads, "
      f"median of {timing['runs']} interleaved runs\n")
print("| tool | encode passages/s | median wall s | passages/s (whole process) | peak RSS MB | cpu util |")
print("|---|---:|---:|---:|---:|---:|")
for label, t in tools.items():
    name = "sentence-transformers" if label == "st" else label
    print(f"| {name} | {fmt(t['median_encode_passages_per_s'], '.1f')} | {t['median_wall_s']:.2f} "
          f"| {t['process_passages_per_s']:.1f} | {t['median_peak_rss_mb']:.1f} "
          f"| {t['median_cpu_util']:.2f} |")
if ratio_process is not None:
    print(f"\nratio foil/sentence-transformers, encode passages/s: {fmt(ratio_encode, '.2f')}x"
          + ("" if ratio_encode is not None else " (foil printed no encode time)"))
    print(f"ratio foil/sentence-transformers, whole-process passages/s: {ratio_process:.2f}x")
for label, t in tools.items():
    print(f"{label} runs (s): " + " ".join(f"{w:.2f}" for w in t["wall_s"])
          + "; encode passages/s: " + " ".join(fmt(p, ".1f") for p in t["encode_passages_per_s"]))
print(quality_msg)
print(f"\nwritten {os.path.relpath(path, E['ROOT'])}")
PY
