#!/usr/bin/env python3
"""Golden result of one full training step of all-MiniLM-L6-v2 (foil-train's step parity).

    python3 scripts/golden/make_step_golden.py \
        [--model ~/.cache/foil/models/all-MiniLM-L6-v2] [--out tests/fixtures/train/minilm_step.json]

The model is loaded with sentence-transformers (Transformer + mean Pooling + Normalize) in
eval mode, so dropout is off while gradients stay on. A fixed batch of 4 (query, passage)
pairs (below) is tokenized per side by model.tokenize (padding to the longest of the side).
One step:

    loss = MultipleNegativesRankingLoss(model, scale=20.0)(features, None)   # cos, in-batch
    loss.backward()
    norm = clip_grad_norm_(params, max_norm=1.0)
    AdamW(lr=2e-5, betas=(0.9, 0.999), eps=1e-8), weight_decay 0.01 on every parameter except
    biases and LayerNorm weights (transformers' Trainer grouping); .step()

Recorded: token ids and attention masks, the loss, the pre-clip gradient norm over all
parameters that got a gradient, and for a few parameters (Hugging Face names, the
sentence-transformers prefix "0.model." or "0.auto_model." removed): the L2 norm of the updated tensor, the L2 norm of the update
(new - old, computed in float64 from the float32 tensors), and at 16 flat indices (the 8
largest |update| plus 8 evenly spaced) the updated value and the update. The pooler gets no
gradient and is not updated. Runs on CPU with 2 threads, HF_HUB_OFFLINE=1.
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss  # noqa: E402

DEFAULT_MODEL = os.path.expanduser("~/.cache/foil/models/all-MiniLM-L6-v2")
PREFIXES = ("0.auto_model.", "0.model.")
PARAMS = [
    "embeddings.word_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "encoder.layer.0.attention.self.query.weight",
    "encoder.layer.3.intermediate.dense.bias",
    "encoder.layer.5.output.dense.weight",
    "encoder.layer.5.output.LayerNorm.bias",
]
# All eight texts are about espresso, so the in-batch negatives are hard and the loss and the
# gradients are far from zero (unrelated topics give a loss of ~1e-3 at scale 20).
QUERIES = [
    "how long should an espresso shot take",
    "what temperature should espresso water be",
    "how much coffee goes into a double espresso",
    "what pressure does an espresso machine use",
]
PASSAGES = [
    "An espresso shot should run for about 25 to 30 seconds.",
    "Espresso is brewed with water at around 90 to 96 degrees Celsius.",
    "A double espresso uses about 14 to 18 grams of ground coffee.",
    "Espresso machines push water through the coffee at about 9 bars.",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default="tests/fixtures/train/minilm_step.json")
    args = ap.parse_args()

    model = SentenceTransformer(args.model, device="cpu")
    model.eval()
    fq = model.tokenize(QUERIES)
    fp = model.tokenize(PASSAGES)
    def hf_name(n):
        for prefix in PREFIXES:
            if n.startswith(prefix):
                return n[len(prefix):]
        return n

    named = {hf_name(n): p for n, p in model.named_parameters()}
    before = {n: named[n].detach().clone().double() for n in PARAMS}

    loss_fn = MultipleNegativesRankingLoss(model, scale=20.0)
    loss = loss_fn([dict(fq), dict(fp)], None)
    loss.backward()
    with_grad = [p for p in named.values() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(with_grad, 1.0)

    def decays(name):
        return not (name.endswith("bias") or "LayerNorm" in name)

    groups = [
        {"params": [p for n, p in named.items() if decays(n)], "weight_decay": 0.01},
        {"params": [p for n, p in named.items() if not decays(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=2e-5, betas=(0.9, 0.999), eps=1e-8)
    opt.step()

    params = {}
    for n in PARAMS:
        after = named[n].detach().double()
        delta = (after - before[n]).flatten()
        flat_after = after.flatten()
        numel = delta.numel()
        top = torch.argsort(delta.abs(), descending=True, stable=True)[:8].tolist()
        spaced = [round(k * (numel - 1) / 7) for k in range(8)]
        idx = sorted(set(top + spaced))
        params[n] = {
            "shape": list(named[n].shape),
            "l2": flat_after.norm().item(),
            "update_l2": delta.norm().item(),
            "entries": [[i, flat_after[i].item(), delta[i].item()] for i in idx],
        }
    golden = {
        "generator": "scripts/golden/make_step_golden.py",
        "torch": torch.__version__,
        "query_input_ids": fq["input_ids"].tolist(),
        "query_attention_mask": fq["attention_mask"].tolist(),
        "passage_input_ids": fp["input_ids"].tolist(),
        "passage_attention_mask": fp["attention_mask"].tolist(),
        "loss": loss.item(),
        "grad_norm": float(norm),
        "optimizer": {"lr": 2e-5, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                      "weight_decay": 0.01, "max_norm": 1.0, "scale": 20.0},
        "params": params,
    }
    with open(args.out, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print("loss", loss.item(), "grad norm", float(norm))


if __name__ == "__main__":
    main()
