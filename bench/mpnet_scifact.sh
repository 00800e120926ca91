#!/usr/bin/env bash
# all-mpnet-base-v2 (MPNet) in foil against sentence-transformers on the same folder (issue 16):
#   1. SciFact test retrieval: foil search --retriever dense vs bench/st_search.py, nDCG@10 of
#      both and the paired comparison (MTEB publishes ~0.656 for this model);
#   2. a short fine-tune in foil (BM25 negatives of the first ROWS SciFact train queries,
#      InfoNCE, batch 16, 1 epoch) whose saved folder sentence-transformers loads: cosine of
#      its embeddings to foil's for 64 passages and 64 queries.
#
#   bench/mpnet_scifact.sh      (env: THREADS=2 ROWS=128 OUT=bench/out/mpnet PYTHON=python3)
# Needs scripts/fetch-models.sh mpnet and sentence-transformers for $PYTHON. Prints the load
# average first; its times are only comparable on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FOIL="${FOIL:-target/release/foil}"
DATA="${DATA:-../shared/data/scifact}"
OUT="${OUT:-bench/out/mpnet}"
THREADS="${THREADS:-2}"
ROWS="${ROWS:-128}"
PYTHON="${PYTHON:-python3}"
MODEL="${FOIL_MODELS:-$HOME/.cache/foil/models}/all-mpnet-base-v2"
[[ -f "$MODEL/model.safetensors" ]] || { echo "run scripts/fetch-models.sh mpnet" >&2; exit 1; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release -p foil-cli --quiet
mkdir -p "$OUT"

echo "== 1. SciFact test, dense retrieval"
start=$(date +%s)
"$FOIL" search --data "$DATA" --split test --retriever dense --model "$MODEL" --threads "$THREADS" \
  --no-cache --top-k 100 --output "$OUT/foil.trec" --no-progress
echo "foil search: $(( $(date +%s) - start )) s (corpus and queries, whole process)"
echo "sentence-transformers: $("$PYTHON" bench/st_search.py --model "$MODEL" --data "$DATA" \
  --split test --top-k 100 --threads "$THREADS" --output "$OUT/st.trec")"
"$FOIL" eval --qrels "$DATA/qrels/test.tsv" --compare "$OUT/st.trec" "$OUT/foil.trec"

echo "== 2. fine-tune in foil, reload in sentence-transformers"
"$FOIL" mine --data "$DATA" --split train --retriever bm25 --range-max 30 --num-negatives 1 \
  --sampling random --seed 42 --format n-tuple --output "$OUT/negatives" --no-progress >/dev/null
head -n "$ROWS" "$OUT/negatives/n-tuple.jsonl" > "$OUT/train.jsonl"
start=$(date +%s)
"$FOIL" train "$OUT/train.jsonl" --model "$MODEL" --loss infonce --batch-size 16 --epochs 1 \
  --max-length 128 --lr 2e-5 --seed 42 --threads "$THREADS" --output "$OUT/model" --no-progress
echo "foil train: $(( $(date +%s) - start )) s for $ROWS rows"
head -n 64 "$DATA/corpus.jsonl" > "$OUT/sample.jsonl"
"$FOIL" encode --model "$OUT/model" --input "$OUT/sample.jsonl" --output "$OUT/sample-vectors" \
  --threads "$THREADS" --no-cache --no-progress >/dev/null
"$PYTHON" - "$OUT" "$MODEL" <<'EOF'
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
out, base_dir = sys.argv[1], sys.argv[2]
texts = {d["_id"]: (d.get("title") or "") + " " + (d.get("text") or "")
         for d in map(json.loads, open(f"{out}/sample.jsonl"))}
dim = json.load(open(f"{out}/sample-vectors/header.json"))["dim"]
foil = np.fromfile(f"{out}/sample-vectors/vectors.f32", dtype="<f4").reshape(-1, dim)
ids = [json.loads(line) for line in open(f"{out}/sample-vectors/ids.jsonl")]
batch = [texts[i] for i in ids]
tuned = SentenceTransformer(f"{out}/model", device="cpu").encode(batch)
base = SentenceTransformer(base_dir, device="cpu").encode(batch)
cos = lambda a, b: (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
print(json.dumps({
    "passages": len(ids),
    "min_cosine_foil_vs_st_reload": float(cos(foil, tuned).min()),
    "mean_cosine_tuned_vs_base": float(cos(tuned, base).mean()),
}))
EOF
