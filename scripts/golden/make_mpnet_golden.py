#!/usr/bin/env python3
"""Golden sentence embeddings of all-mpnet-base-v2 (MPNet), computed by sentence-transformers.

    python3 scripts/golden/make_mpnet_golden.py \
        [--model ~/.cache/foil/models/all-mpnet-base-v2] \
        [--out tests/fixtures/encoder/mpnet_embeddings.json]

foil's MPNet path (crate foil-candle: positions from pad_token_id + 1, no token types, a
learned attention bias per head and relative-position bucket) is checked against this file.
The texts are written below: short queries, sentences, and passages of ~150, ~300 and more
than 384 tokens (the model's max_seq_length, so they are truncated), so that relative
distances beyond MPNet's max_distance of 128 occur.

Output JSON keys:
  model, sentence_transformers, transformers, torch, max_seq_length, batch_size
  texts        [str]
  token_ids    [[int]]      model.tokenize(texts)["input_ids"], padding removed
  embeddings   [[float]]    model.encode(texts, batch_size=8), 768-d, unit length (the folder
                            ends in a Normalize module), 7 significant digits
  relative_buckets          {"from": -600, "buckets": [int]}: Hugging Face's
                            MPNetEncoder.relative_position_bucket(key - query) for
                            key - query = -600 .. 600 (32 buckets, max_distance 128)

Run with HF_HUB_OFFLINE=1; uses 2 CPU threads.
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(2)

import sentence_transformers  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder  # noqa: E402

DEFAULT_MODEL = os.path.expanduser("~/.cache/foil/models/all-mpnet-base-v2")
DEFAULT_OUT = "tests/fixtures/encoder/mpnet_embeddings.json"
BATCH_SIZE = 8

SENTENCES = [
    "protein folding",
    "What causes vitamin D deficiency in older adults?",
    "Aspirin lowers the risk of a second heart attack.",
    "a",
    "CRISPR–Cas9 off-target effects",
    "Über die Wirkung von Koffein auf den Schlaf",
    "¿Cuál es la dosis diaria de hierro?",
    "naïve T cells 🧬 and IL-2",
    "HbA1c < 6.5% in type 2 diabetes (n = 1,204; p = 0.03)",
    "   leading and trailing spaces   ",
    "MUTATIONS IN BRCA1 AND BRCA2",
]

PARAGRAPH = (
    "Mitochondria produce most of the cell's energy through oxidative phosphorylation, and "
    "defects in this pathway cause a wide range of diseases that affect muscle, brain and heart. "
    "In a cohort of 312 patients followed for ten years, those carrying the variant had lower "
    "exercise capacity, more frequent hospital admissions and a higher rate of cardiomyopathy, "
    "although the difference in survival did not reach significance after adjusting for age. "
)


def passages():
    """Passages of roughly 150, 300 and over 384 tokens."""
    return [PARAGRAPH * 2, PARAGRAPH * 4, PARAGRAPH * 7]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    model = SentenceTransformer(args.model, device="cpu")
    assert type(model[0].auto_model).__name__ == "MPNetModel", type(model[0].auto_model)
    texts = SENTENCES + passages()
    features = model.tokenize(texts)
    ids = [
        [int(t) for t, m in zip(row, mask) if m]
        for row, mask in zip(features["input_ids"].tolist(), features["attention_mask"].tolist())
    ]
    assert max(len(i) for i in ids) == model.max_seq_length, [len(i) for i in ids]
    vectors = model.encode(texts, batch_size=BATCH_SIZE, convert_to_numpy=True)

    relative = torch.arange(-600, 601)
    buckets = MPNetEncoder.relative_position_bucket(relative, num_buckets=32, max_distance=128)

    out = {
        "model": os.path.basename(os.path.normpath(args.model)),
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "batch_size": BATCH_SIZE,
        "texts": texts,
        "token_ids": ids,
        "embeddings": [[float(f"{v:.7g}") for v in row] for row in vectors.tolist()],
        "relative_buckets": {"from": -600, "buckets": buckets.tolist()},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {len(texts)} texts, token counts {[len(i) for i in ids]}")


if __name__ == "__main__":
    main()
