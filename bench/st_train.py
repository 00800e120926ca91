"""The sentence-transformers side of bench/train.sh: the per-step work of its trainer —
tokenize a batch of (anchor, positive, negative) rows, embed them with the
SentenceTransformer model (train mode, dropout on), MultipleNegativesRankingLoss (scale 20),
backward, clip_grad_norm_ 1.0, torch AdamW (lr 2e-5, weight decay 0.01) — for the same
batches foil trains on, in order. Prints one JSON line: steps, seconds per step (median over
the steps after the first), first and last loss.

    python3 bench/st_train.py --model DIR --table n-tuple.jsonl --batch 16 --max-length 128 --steps 5
"""
import argparse
import json
import statistics
import time

import torch
from sentence_transformers import SentenceTransformer, losses

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--table", required=True)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--max-length", type=int, default=128)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

rows = [json.loads(line) for line in open(args.table, encoding="utf-8")]
model = SentenceTransformer(args.model, device="cpu")
model.max_seq_length = args.max_length
model.train()
loss_fn = losses.MultipleNegativesRankingLoss(model, scale=20.0)
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)

times, loss_values = [], []
for step in range(args.steps):
    batch = rows[step * args.batch : (step + 1) * args.batch]
    start = time.perf_counter()
    columns = [[r["anchor"] for r in batch], [r["positive"] for r in batch]]
    k = 1
    while f"negative_{k}" in batch[0]:
        columns.append([r[f"negative_{k}"] for r in batch])
        k += 1
    features = [model.tokenize(texts) for texts in columns]
    loss = loss_fn(features, labels=None)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    times.append(time.perf_counter() - start)
    loss_values.append(float(loss))
print(json.dumps({
    "steps": args.steps,
    "seconds_per_step": statistics.median(times[1:] or times),
    "first_loss": loss_values[0],
    "last_loss": loss_values[-1],
}))
