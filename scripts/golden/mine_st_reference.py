#!/usr/bin/env python3
"""Golden hard negatives for `foil mine`: sentence-transformers' mine_hard_negatives on SciFact.

    python3 scripts/golden/mine_st_reference.py \
        [--data ../shared/data/scifact] [--model ~/.cache/foil/models/all-MiniLM-L6-v2] \
        [--output tests/fixtures/mine/st_scifact_train.jsonl] [--no-check]

Needs the `datasets` package (mine_hard_negatives imports it; it pulls in pandas, whose
groupby the function uses), besides sentence-transformers and torch. Run from the repo root.
Uses 2 CPU threads and HF_HUB_OFFLINE=1. Takes a few minutes (it embeds 5,183 passages).

Input (BEIR SciFact, train split):
  corpus   corpus.jsonl, text = title + " " + text (as BEIR builds it), file order; all 5,183
           passage texts are passed as `corpus`
  pairs    one (query text, positive passage text) pair per line of qrels/train.tsv with
           score >= 1 (the header line is skipped), in file order: 919 pairs, 809 query ids
The call (see tests/fixtures/mine/ST_SEMANTICS.md for what it does):
  mine_hard_negatives(pairs, model, corpus=passages, range_max=50, relative_margin=0.05,
      num_negatives=5, sampling_strategy="top", output_format="n-tuple", output_scores=True,
      batch_size=32, use_faiss=False, verbose=True)
  ("n-tuple" + output_scores=True is what the deprecated alias output_format="n-tuple-scores"
  is rewritten to in 6.2; the output is the same.)

Output: --output, one JSON object per output row, in the dataset's row order:
  {"qid": "0", "pos": "31715818", "pos_score": 0.61234, "neg": [5 doc ids],
   "neg_scores": [5 scores]}
  plus "qids": [...] on rows whose anchor text belongs to several query ids that all judge
  this positive (SciFact has two such texts; mine_hard_negatives merges equal anchors, so
  one row stands for all of them; "qid" is the first of them in qrels order).
  Texts are mapped back to ids: anchor text -> query ids, passage text -> doc id (the first
  doc id in corpus order when several doc ids share a text; their count goes to the meta file).
  Scores are rounded to 6 decimals.
And <output stem>.meta.json: versions, settings, input/output counts, the rows that could not be
filled (with their query ids), the statistics that mine_hard_negatives printed, and (unless
--no-check) the result of an independent re-implementation of ST_SEMANTICS.md in float64
from the very same embeddings, with the score gaps that matter for a tolerance (near ties,
distance of candidates to the relative-margin threshold).
Timing (seconds) and peak RSS of the mining call go to stderr (not to the fixture files).
"""
import argparse
import contextlib
import csv
import io
import json
import os
import sys
import tempfile
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

import sentence_transformers  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.util import mine_hard_negatives  # noqa: E402

DEFAULT_MODEL = os.path.expanduser("~/.cache/foil/models/all-MiniLM-L6-v2")
DEFAULT_DATA = "../shared/data/scifact"
DEFAULT_OUT = "tests/fixtures/mine/st_scifact_train.jsonl"
SETTINGS = dict(range_min=0, range_max=50, relative_margin=0.05, num_negatives=5,
                sampling_strategy="top", output_format="n-tuple", output_scores=True,
                batch_size=32, use_faiss=False, verbose=True)
ROUND = 6


def log(msg):
    print(f"mine_st_reference: {msg}", file=sys.stderr, flush=True)


def load_beir(data, split):
    doc_ids, passages = [], []
    with open(os.path.join(data, "corpus.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                doc_ids.append(str(d["_id"]))
                passages.append((d.get("title") or "") + " " + (d.get("text") or ""))
    queries = {}
    with open(os.path.join(data, "queries.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                queries[str(d["_id"])] = d["text"]
    judgments = []  # (qid, doc id) with score >= 1, file order
    with open(os.path.join(data, "qrels", f"{split}.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    for r in rows[1:]:  # header: query-id corpus-id score
        if len(r) >= 3 and int(r[2]) >= 1:
            judgments.append((r[0], r[1]))
    return doc_ids, passages, queries, judgments


class PeakRss:
    """Peak RSS of a code block: resets the kernel's high-water mark (clear_refs 5) before,
    reads VmHWM after. Falls back to ru_maxrss (the process' peak so far) if that fails."""

    def __enter__(self):
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            pass
        self.before_kb = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        import resource
        self.peak_kb = self._status("VmHWM") if self.reset else None
        if self.peak_kb is None:
            self.peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return False

    @staticmethod
    def _status(key):
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None


def replica(q_emb, c_emb, anchors, positives, corpus, s):
    """ST_SEMANTICS.md re-done in float64 numpy (n-tuple, top, range_min as given), with ties
    broken by corpus index. Returns rows [(anchor, positive, [neg corpus idx], pos score,
    [neg scores])] and diagnostics."""
    corpus_u = list(dict.fromkeys(corpus + positives))
    cidx = {t: i for i, t in enumerate(corpus_u)}
    queries_u = list(dict.fromkeys(anchors))
    qidx = {t: i for i, t in enumerate(queries_u)}
    counts = {}
    for a in anchors:
        counts[a] = counts.get(a, 0) + 1
    max_pos = max(counts.values())
    pos_lists = [[] for _ in queries_u]
    for a, p in zip(anchors, positives):
        if cidx[p] not in pos_lists[qidx[a]]:
            pos_lists[qidx[a]].append(cidx[p])
    Q = q_emb.astype(np.float64)
    C = c_emb.astype(np.float64)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    S = Q @ C.T
    W = min(s["range_max"] + max_pos, len(corpus_u))
    rows, diag = [], {"window": W, "max_positives": max_pos, "exact_ties_in_windows": 0,
                      "min_gap_between_selected": 1.0, "min_gap_selected_to_next_valid": 1.0,
                      "min_abs_score_minus_threshold": 1.0, "min_gap_at_window_edge": 1.0,
                      "dropped_queries_by_valid_count": {},
                      "dropped_rows_kept_if_own_positive_set_the_margin": 0}
    near = {eps: {"queries_with_near_tie_in_selected": 0, "queries_with_near_tie_at_cut": 0,
                  "queries_with_candidate_near_threshold": 0,
                  "queries_with_near_tie_at_window_edge": 0} for eps in (1e-5, 1e-4)}
    for qi, q in enumerate(queries_u):
        sc = S[qi]
        order = np.lexsort((np.arange(len(sc)), -sc))  # score desc, then index asc
        win = order[:W]
        if W < len(sc):
            diag["min_gap_at_window_edge"] = min(diag["min_gap_at_window_edge"],
                                                 float(sc[order[W - 1]] - sc[order[W]]))
        ws = sc[win]
        diag["exact_ties_in_windows"] += int(np.sum(ws[:-1] == ws[1:]))
        pscores = [float(Q[qi] @ C[p]) for p in pos_lists[qi]]
        sp = min(pscores)
        thr = sp - abs(sp) * s["relative_margin"]
        cand = [int(i) for i in win if int(i) not in pos_lists[qi]]
        for i in cand:
            diag["min_abs_score_minus_threshold"] = min(diag["min_abs_score_minus_threshold"],
                                                        abs(float(sc[i]) - thr))
        valid = [i for i in cand if sc[i] <= thr][: s["range_max"]][s["range_min"]:]
        chosen = valid[: s["num_negatives"]]
        for eps, c in near.items():
            c["queries_with_candidate_near_threshold"] += any(abs(sc[i] - thr) < eps for i in cand)
            c["queries_with_near_tie_at_window_edge"] += bool(
                W < len(sc) and sc[order[W - 1]] - sc[order[W]] < eps)
            v = [float(sc[i]) for i in valid[: s["num_negatives"] + 1]]
            gaps = [a - b for a, b in zip(v, v[1:])]
            c["queries_with_near_tie_in_selected"] += any(g < eps for g in gaps[: s["num_negatives"] - 1])
            c["queries_with_near_tie_at_cut"] += bool(
                len(gaps) >= s["num_negatives"] and gaps[s["num_negatives"] - 1] < eps)
        if len(chosen) < s["num_negatives"]:
            n = str(len(valid))
            d = diag["dropped_queries_by_valid_count"]
            d[n] = d.get(n, 0) + 1
            for ps in pscores:  # would this row survive with its own positive's threshold?
                t = ps - abs(ps) * s["relative_margin"]
                if len([i for i in cand if sc[i] <= t][: s["range_max"]][s["range_min"]:]) >= s["num_negatives"]:
                    diag["dropped_rows_kept_if_own_positive_set_the_margin"] += 1
            continue
        cs = [float(sc[i]) for i in chosen]
        diag["min_gap_between_selected"] = min([diag["min_gap_between_selected"]]
                                               + [a - b for a, b in zip(cs, cs[1:])])
        if len(valid) > len(chosen):
            diag["min_gap_selected_to_next_valid"] = min(
                diag["min_gap_selected_to_next_valid"], cs[-1] - float(sc[valid[len(chosen)]]))
        for p, ps in zip(pos_lists[qi], pscores):
            rows.append((q, corpus_u[p], chosen, ps, cs))
    diag["near_ties"] = {f"{eps:g}": c for eps, c in near.items()}
    return rows, corpus_u, diag


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--split", default="train")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--output", default=DEFAULT_OUT)
    ap.add_argument("--no-check", action="store_true",
                    help="skip the float64 re-implementation check (and the embedding cache)")
    args = ap.parse_args()

    doc_ids, passages, queries, judgments = load_beir(args.data, args.split)
    anchors = [queries[q] for q, _ in judgments]
    pos_texts = [passages[doc_ids.index(d)] for _, d in judgments]
    text_to_docs = {}
    for d, t in zip(doc_ids, passages):
        text_to_docs.setdefault(t, []).append(d)
    shared_text_doc_ids = sum(len(v) for v in text_to_docs.values() if len(v) > 1)
    text_to_qids = {}
    for q, _ in judgments:
        lst = text_to_qids.setdefault(queries[q], [])
        if q not in lst:
            lst.append(q)
    judged = set(judgments)
    log(f"{len(passages)} passages ({len(text_to_docs)} distinct texts, {shared_text_doc_ids} "
        f"doc ids share a text), {len(judgments)} pairs, {len(text_to_qids)} distinct anchor "
        f"texts for {len({q for q, _ in judgments})} query ids")

    model = SentenceTransformer(args.model, device="cpu")
    dataset = Dataset.from_dict({"anchor": anchors, "positive": pos_texts})

    cache = None if args.no_check else tempfile.TemporaryDirectory(prefix="mine_st_ref.")
    printed = io.StringIO()
    with PeakRss() as rss, contextlib.redirect_stdout(printed):
        t0 = time.perf_counter()
        out = mine_hard_negatives(dataset, model, corpus=passages,
                                  cache_folder=cache.name if cache else None, **SETTINGS)
        secs = time.perf_counter() - t0
    sys.stderr.write(printed.getvalue())
    log(f"mine_hard_negatives: {secs:.2f} s, peak RSS during the call {rss.peak_kb / 1024:.1f} MB "
        f"(RSS before it {rss.before_kb / 1024 if rss.before_kb else float('nan'):.1f} MB), "
        f"{len(out)} rows")

    k = SETTINGS["num_negatives"]
    rows = []
    for r in out:
        docs = text_to_docs[r["positive"]]
        qids = [q for q in text_to_qids[r["anchor"]] if any((q, d) in judged for d in docs)]
        pos = next(d for d in docs if (qids[0], d) in judged)
        row = {"qid": qids[0], "pos": pos, "pos_score": round(r["scores"][0], ROUND),
               "neg": [text_to_docs[r[f"negative_{i}"]][0] for i in range(1, k + 1)],
               "neg_scores": [round(x, ROUND) for x in r["scores"][1:]]}
        if len(qids) > 1:
            row["qids"] = qids
        rows.append(row)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")

    # What was dropped: distinct (anchor text, positive) pairs without a row.
    out_pairs = {(r["anchor"], r["positive"]) for r in out}
    uniq_pairs = list(dict.fromkeys(zip(anchors, pos_texts)))
    dropped = [(a, p) for a, p in uniq_pairs if (a, p) not in out_pairs]
    dropped_qids = sorted({q for a, _ in dropped for q in text_to_qids[a]}, key=int)
    kept_texts = {r["anchor"] for r in out}
    meta = {
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__, "torch": torch.__version__,
        "model": os.path.basename(os.path.normpath(args.model)),
        "max_seq_length": model.max_seq_length,
        "similarity_fn_name": model.similarity_fn_name,
        "data": os.path.basename(os.path.normpath(args.data)), "split": args.split,
        "settings": {**SETTINGS, "corpus": "all passages, title + ' ' + text"},
        "passages": len(passages), "distinct_passage_texts": len(text_to_docs),
        "doc_ids_sharing_a_text": shared_text_doc_ids,
        "pairs": len(judgments), "query_ids": len({q for q, _ in judgments}),
        "distinct_anchor_texts": len(text_to_qids),
        "anchor_texts_with_several_qids": {t: v for t, v in text_to_qids.items() if len(v) > 1},
        "distinct_pairs": len(uniq_pairs),
        "rows": len(rows),
        "dropped_pairs": len(dropped),
        "dropped_anchor_texts": len({a for a, _ in dropped}),
        "dropped_query_ids": dropped_qids,
        "queries_with_rows": len(kept_texts),
        "printed": printed.getvalue().splitlines(),
        "score_rounding_decimals": ROUND,
    }

    if cache:
        qf = [f for f in os.listdir(cache.name) if f.startswith("query_embeddings_")]
        cf = [f for f in os.listdir(cache.name) if f.startswith("corpus_embeddings_")]
        q_emb = np.load(os.path.join(cache.name, qf[0]))
        c_emb = np.load(os.path.join(cache.name, cf[0]))
        rep, corpus_u, diag = replica(q_emb, c_emb, anchors, pos_texts, passages, SETTINGS)
        st_rows = [(r["anchor"], r["positive"], [r[f"negative_{i}"] for i in range(1, k + 1)],
                    r["scores"]) for r in out]
        same_rows = [(a, p) for a, p, *_ in rep] == [(a, p) for a, p, *_ in st_rows]
        neg_mismatch, max_diff = 0, 0.0
        for (a, p, ch, ps, cs), (_, _, negs, scores) in zip(rep, st_rows):
            if [corpus_u[i] for i in ch] != negs:
                neg_mismatch += 1
            max_diff = max([max_diff, abs(ps - scores[0])]
                           + [abs(x - y) for x, y in zip(cs, scores[1:])])
        diag.update(same_row_sequence=same_rows, rows=len(rep), rows_with_other_negatives=neg_mismatch,
                    max_abs_score_diff_vs_st=max_diff)
        meta["float64_replica_check"] = diag
        log(f"float64 replica of ST_SEMANTICS.md: {json.dumps(diag)}")
        cache.cleanup()

    meta_path = os.path.splitext(args.output)[0] + ".meta.json"
    with open(meta_path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
        f.write("\n")
    log(f"{len(rows)} rows -> {args.output}; {len(dropped)} of {len(uniq_pairs)} distinct pairs "
        f"dropped ({meta['dropped_anchor_texts']} anchor texts, query ids {dropped_qids}); "
        f"meta -> {meta_path}")
    log(f"TIMING mine_seconds={secs:.3f} peak_rss_mb={rss.peak_kb / 1024:.1f}")


if __name__ == "__main__":
    main()
