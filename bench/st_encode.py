#!/usr/bin/env python3
"""sentence-transformers peer for the encoding benchmark (bench/encode.sh).

Does, in one process, what `foil encode` does: read the first N passages of a BEIR
corpus.jsonl (text = title + " " + text, as BEIR builds it), embed them with a
sentence-transformers model (max_seq_length 256 by default), and save the vectors.

    bench/st_encode.py --model DIR --input corpus.jsonl --limit N --batch-size 32 \\
        --threads 2 --output out.npy

Only the `model.encode(...)` call is timed for the in-process figure. One JSON object goes
to stdout: {"tool", "encode_seconds", "seconds" (the same), "passages", "passages_per_s",
"encode_cpu_seconds" (process CPU time of the call, all threads),
"mean_tokens" (per passage, incl. [CLS]/[SEP], after truncation), "truncated" (passages cut
at max_seq_length), "import_seconds", "load_seconds", "total_seconds", "threads",
"batch_size", "max_seq_length", "dim", versions}. Progress goes to stderr. The vectors are
saved as float32 [N, dim] .npy, in input order (with this model already unit length: its
modules end in Normalize; encode is called with normalize_embeddings=False).
"""

import argparse
import json
import os
import sys

# bench/timeit.py would shadow the standard library's timeit (which torch imports) because
# Python puts this script's folder first on sys.path; drop that entry.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import time  # noqa: E402

T_START = time.perf_counter()
DEFAULT_MODEL = os.path.expanduser("~/.cache/foil/models/all-MiniLM-L6-v2")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model folder")
    p.add_argument("--input", required=True, help="BEIR corpus.jsonl")
    p.add_argument("--limit", type=int, default=2000, help="encode the first N passages (0: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2,
                   help="torch intra-op threads, and the caps of OpenMP/BLAS/rayon pools")
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--output", help=".npy file for the vectors (optional)")
    p.add_argument("--warmup", type=int, default=0,
                   help="untimed encode of the first W passages before the timed call")
    return p.parse_args()


ARGS = parse_args()

# Cap every thread pool before torch / tokenizers start.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMBA_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
try:
    torch.set_num_interop_threads(ARGS.threads)
except RuntimeError:
    pass

import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

T_IMPORTED = time.perf_counter()


def log(msg):
    print(f"st_encode: {msg}", file=sys.stderr, flush=True)


def read_passages(path, limit):
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            texts.append((d.get("title") or "") + " " + (d.get("text") or ""))
            if limit and len(texts) >= limit:
                break
    return texts


def main():
    args = ARGS
    t0 = time.perf_counter()
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_seq_length
    texts = read_passages(args.input, args.limit)
    if not texts:
        sys.exit("st_encode: no passages read")
    t1 = time.perf_counter()

    if args.warmup:
        model.encode(texts[:args.warmup], batch_size=args.batch_size, show_progress_bar=False)

    c2, t2 = time.process_time(), time.perf_counter()
    emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=False,
                       convert_to_numpy=True, show_progress_bar=False)
    t3, c3 = time.perf_counter(), time.process_time()

    # Token statistics, outside the timed call (same tokenizer, same truncation).
    lens = [len(ids) for ids in model.tokenizer(
        texts, truncation=True, max_length=args.max_seq_length)["input_ids"]]
    full = [len(ids) for ids in model.tokenizer(
        texts, truncation=False, verbose=False)["input_ids"]]
    if args.output:
        np.save(args.output, emb.astype(np.float32, copy=False))
    t4 = time.perf_counter()

    secs = t3 - t2
    out = {
        "tool": "sentence-transformers",
        "encode_seconds": secs,
        "seconds": secs,
        "passages": len(texts),
        "passages_per_s": len(texts) / secs,
        "encode_cpu_seconds": c3 - c2,
        "mean_tokens": float(np.mean(lens)),
        "truncated": int(sum(n > args.max_seq_length for n in full)),
        "import_seconds": T_IMPORTED - T_START,
        "load_seconds": t1 - t0,
        "total_seconds": t4 - T_START,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "max_seq_length": model.max_seq_length,
        "dim": int(emb.shape[1]),
        "warmup": args.warmup,
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
    }
    log(f"{len(texts)} passages in {secs:.3f}s = {len(texts) / secs:.1f} passages/s, "
        f"cpu {out['encode_cpu_seconds']:.1f}s, mean {out['mean_tokens']:.1f} tokens, "
        f"{out['truncated']} truncated; "
        f"import={out['import_seconds']:.2f}s load={out['load_seconds']:.2f}s "
        f"total={out['total_seconds']:.2f}s")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
