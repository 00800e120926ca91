#!/usr/bin/env python3
"""Golden scores for foil's cross-encoder, computed by transformers and sentence-transformers.

    target/release/foil init-cross-encoder --output /tmp/foil-ce --seed 0
    python3 scripts/golden/make_cross_encoder_golden.py --model /tmp/foil-ce \
        --out tests/fixtures/encoder/cross_encoder_scores.json

The checkpoint is foil's own (all-MiniLM-L6-v2's encoder and pooler plus a seeded random
one-logit head in BertForSequenceClassification format): no trained cross-encoder can be
installed here, and this checks the exact computation, which does not depend on training.
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from sentence_transformers import CrossEncoder
from transformers import AutoModelForSequenceClassification, AutoTokenizer

QUERIES = [
    "does vitamin d prevent fractures",
    "how do bees communicate the location of flowers",
    "why is the sea salty",
    "",
    "Straße nach Zürich – wie weit?",
]
PASSAGES = [
    "Vitamin D deficiency is associated with bone fractures in older adults.",
    "Honeybees perform a waggle dance whose angle and duration encode the direction and distance of food.",
    "Rivers carry dissolved minerals from rocks into the ocean, where evaporation concentrates the salt.",
    "x",
    " ".join(["The aqueducts of Rome carried water over long distances using gravity alone."] * 60),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    pairs = [[q, p] for q in QUERIES for p in PASSAGES]
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    with torch.no_grad():
        enc = tok([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation=True,
                  max_length=512, return_tensors="pt")
        logits = model(**enc).logits[:, 0].tolist()
    ce = CrossEncoder(args.model, device="cpu", max_length=512)
    scores = ce.predict(pairs, batch_size=8).tolist()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"seed": 0, "max_length": 512, "pairs": pairs, "logits": logits,
                   "sentence_transformers_scores": scores}, f, indent=1)
        f.write("\n")
    print(f"{len(pairs)} pairs -> {args.out}")


if __name__ == "__main__":
    main()
