"""Writes tests/fixtures/mine/demo_train_pairs.parquet with pyarrow: the (anchor, positive)
pairs of foil's embedded demo dataset (train split, grade >= 1), as a sentence-transformers
dataset would hold them, in foil's BEIR pair order (query id, then document id).

foil's test mines from this file and from the demo's qrels and expects identical rows, so it
checks that foil reads Parquet written by another tool (pyarrow's defaults: Snappy, optional
string columns, dictionary pages).

    pip install pyarrow   # any recent version
    python3 scripts/golden/make_pairs_parquet.py
"""
import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

root = Path(__file__).resolve().parents[2]
demo = root / "crates/foil/demo"
docs = {}
for line in open(demo / "corpus.jsonl", encoding="utf-8"):
    d = json.loads(line)
    docs[d["_id"]] = f'{d["title"]} {d["text"]}' if d.get("title") else d["text"]
queries = {}
for line in open(demo / "queries.jsonl", encoding="utf-8"):
    q = json.loads(line)
    queries[q["_id"]] = q["text"]
judged = {}
with open(demo / "qrels/train.tsv", encoding="utf-8") as f:
    rows = csv.reader(f, delimiter="\t")
    next(rows)
    for qid, did, grade in rows:
        if int(grade) >= 1:
            judged.setdefault(qid, []).append(did)
anchors, positives = [], []
for qid in sorted(judged):
    for did in sorted(judged[qid]):
        anchors.append(queries[qid])
        positives.append(docs[did])
table = pa.table({"anchor": anchors, "positive": positives})
out = root / "tests/fixtures/mine/demo_train_pairs.parquet"
pq.write_table(table, out)
print(f"{len(anchors)} pairs -> {out}")
