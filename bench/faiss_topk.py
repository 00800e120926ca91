#!/usr/bin/env python3
"""Exact top-k inner-product search with faiss, the peer of foil's topk_bench (bench/topk.sh).

    faiss_topk.py gen --dir DIR [--docs 100000] [--queries 5000] [--dim 384] [--seed 20240611]
        Writes DIR/corpus.f32 and DIR/queries.f32 (raw little-endian f32, row-major; standard
        normal values from numpy's default_rng(seed), rows L2-normalized) and DIR/meta.json.
        Does nothing when meta.json already describes the same data.

    faiss_topk.py search --corpus C.f32 --queries Q.f32 --dim 384 --k 100 --threads 2 \\
        [--out-ids I.i64] [--out-scores S.f32]
        IndexFlatIP search; prints one JSON object with the search time (loading and adding
        to the index excluded). Outputs: queries x k int64 ids and f32 scores, row-major.

    faiss_topk.py compare --k 100 --foil-ids I.u32 --foil-scores S.f32 \\
        --faiss-ids I.i64 --faiss-scores S.f32
        Prints JSON: the share of queries whose top-k id sets agree, the largest score
        difference (rank by rank, and for ids both lists hold).
"""

import argparse
import json
import os
import sys
import time


def cmd_gen(a):
    import numpy as np

    meta = {"docs": a.docs, "queries": a.queries, "dim": a.dim, "seed": a.seed,
            "generator": "numpy.random.default_rng(seed).standard_normal(float32), "
                         "corpus rows then query rows, each row / its L2 norm",
            "numpy": np.__version__}
    meta_path = os.path.join(a.dir, "meta.json")
    files = {"corpus": os.path.join(a.dir, "corpus.f32"),
             "queries": os.path.join(a.dir, "queries.f32")}
    try:
        old = json.load(open(meta_path))
        same = all(old.get(k) == meta[k] for k in ("docs", "queries", "dim", "seed"))
        sizes = (os.path.getsize(files["corpus"]) == a.docs * a.dim * 4 and
                 os.path.getsize(files["queries"]) == a.queries * a.dim * 4)
        if same and sizes:
            print(json.dumps({"generated": False, **old}))
            return
    except (OSError, ValueError):
        pass
    os.makedirs(a.dir, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    for name, rows in (("corpus", a.docs), ("queries", a.queries)):
        x = rng.standard_normal((rows, a.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        tmp = files[name] + ".tmp"
        x.astype("<f4").tofile(tmp)
        os.replace(tmp, files[name])
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps({"generated": True, **meta}))


def cmd_search(a):
    # Thread caps before numpy/faiss load their OpenMP/BLAS runtimes.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    import numpy as np
    import faiss

    faiss.omp_set_num_threads(a.threads)
    t0 = time.perf_counter()
    corpus = np.fromfile(a.corpus, dtype="<f4").reshape(-1, a.dim)
    queries = np.fromfile(a.queries, dtype="<f4").reshape(-1, a.dim)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(a.dim)
    index.add(corpus)
    add_s = time.perf_counter() - t0
    del corpus  # the index holds its own copy
    times = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        scores, ids = index.search(queries, a.k)
        times.append(time.perf_counter() - t0)
    if a.out_ids:
        ids.astype("<i8").tofile(a.out_ids)
    if a.out_scores:
        scores.astype("<f4").tofile(a.out_scores)
    print(json.dumps({"tool": "faiss", "search_s": min(times), "search_runs_s": times,
                      "load_s": load_s, "add_s": add_s, "n_queries": int(queries.shape[0]),
                      "n_docs": int(index.ntotal), "dim": a.dim, "k": a.k,
                      "threads": faiss.omp_get_max_threads(), "index": "IndexFlatIP",
                      "faiss_version": faiss.__version__}))


def cmd_compare(a):
    import numpy as np

    fi = np.fromfile(a.foil_ids, dtype="<u4").reshape(-1, a.k).astype(np.int64)
    fs = np.fromfile(a.foil_scores, dtype="<f4").reshape(-1, a.k)
    xi = np.fromfile(a.faiss_ids, dtype="<i8").reshape(-1, a.k)
    xs = np.fromfile(a.faiss_scores, dtype="<f4").reshape(-1, a.k)
    if fi.shape != xi.shape:
        sys.exit(f"faiss_topk.py: shapes differ: foil {fi.shape}, faiss {xi.shape}")
    n = fi.shape[0]
    same_sets = np.array([set(fi[q]) == set(xi[q]) for q in range(n)])
    same_order = (fi == xi).all(axis=1)
    # Scores rank by rank (robust to reordered near-ties) and for ids both lists hold.
    rank_diff = float(np.abs(fs - xs).max()) if n else 0.0
    id_diff = 0.0
    for q in range(n):
        common, f_pos, x_pos = np.intersect1d(fi[q], xi[q], return_indices=True)
        if len(common):
            id_diff = max(id_diff, float(np.abs(fs[q, f_pos] - xs[q, x_pos]).max()))
    foil_sorted = bool((np.diff(fs, axis=1) <= 0).all())
    print(json.dumps({
        "queries": n, "k": a.k,
        "same_id_sets": int(same_sets.sum()), "same_id_sets_share": float(same_sets.mean()),
        "same_order": int(same_order.sum()),
        "max_abs_score_diff_by_rank": rank_diff, "max_abs_score_diff_same_id": id_diff,
        "foil_scores_descending": foil_sorted,
        "differing_queries": [int(q) for q in np.nonzero(~same_sets)[0][:20]],
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--dir", required=True)
    g.add_argument("--docs", type=int, default=100_000)
    g.add_argument("--queries", type=int, default=5_000)
    g.add_argument("--dim", type=int, default=384)
    g.add_argument("--seed", type=int, default=20240611)
    s = sub.add_parser("search")
    s.add_argument("--corpus", required=True)
    s.add_argument("--queries", required=True)
    s.add_argument("--dim", type=int, required=True)
    s.add_argument("--k", type=int, default=100)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--repeat", type=int, default=1)
    s.add_argument("--out-ids")
    s.add_argument("--out-scores")
    c = sub.add_parser("compare")
    c.add_argument("--k", type=int, required=True)
    c.add_argument("--foil-ids", required=True)
    c.add_argument("--foil-scores", required=True)
    c.add_argument("--faiss-ids", required=True)
    c.add_argument("--faiss-scores", required=True)
    a = p.parse_args()
    {"gen": cmd_gen, "search": cmd_search, "compare": cmd_compare}[a.cmd](a)


if __name__ == "__main__":
    main()
