#!/usr/bin/env python3
"""Golden loss and gradients of an encoder under a contrastive loss (training parity).

    python3 scripts/golden/make_gradient_golden.py \
        [--model ~/.cache/foil/models/all-MiniLM-L6-v2] \
        [--out tests/fixtures/encoder/minilm_gradients.json]
    python3 scripts/golden/make_gradient_golden.py \
        --model ~/.cache/foil/models/all-mpnet-base-v2 \
        --out tests/fixtures/encoder/mpnet_gradients.json

foil-candle's trainable model is checked against this file. The model is loaded with
transformers (AutoModel -> BertModel, MPNetModel or XLMRobertaModel, float32, eager attention) and put in eval
mode, so
dropout is off, while gradients stay on. A fixed batch of 4 queries and their 4 matching
passages (written below) is tokenized per side with padding to the longest sequence of that
side and truncation at 64 tokens (one passage is longer than 64 and gets truncated).

Main check ("mean"): MultipleNegativesRankingLoss as sentence-transformers computes it:
    h = model(**batch).last_hidden_state                        [B, T, 384]
    e = sum_t(h * mask) / max(sum_t(mask), 1e-9)                mean pooling
    e = e / max(||e||_2, 1e-12)                                 L2 normalize
    scores = 20.0 * Q @ P.T                                     [4, 4]
    loss = cross_entropy(scores, [0, 1, 2, 3])                  mean over the 4 rows
then loss.backward(). Recorded: the loss (float64 repr of the float32 value), the token ids and
attention masks, the pooled unit vectors and the score matrix, and for every named parameter
(HF names, e.g. "encoder.layer.0.attention.self.query.weight") with a gradient: shape, sum,
L2 norm, max |g| (computed in float64 from the float32 gradient), the number of non-zero
entries, and the 16 entries of largest |g| as [flat_index, value] (row-major flat index, ties
broken by the lower index). MPNet names its attention tensors "attention.attn.q/k/v/o"; the
names below are BERT's and are translated. Parameters whose gradient is None or all zero are listed
(expected: the pooler, which this loss does not use). For three parameters the full gradient
at 64 evenly spaced flat indices (round(k * (numel - 1) / 63), k = 0..63) is recorded.

As a guide to tolerances the same computation is repeated with the model in float64:
"float64_reference" holds that loss and, per parameter, ||g64||, ||g32 - g64|| and (where
||g64|| is not ~0) ||g32 - g64|| / ||g64||.

Note: the gradient of every attention *key bias* is mathematically zero (the bias adds
q_i . b_k to all scores of query row i alike, and softmax ignores a per-row constant). Their
float32 gradients here are rounding noise (~1e-11) and are listed in
float64_reference.theoretically_zero (||g64|| ~ 1e-19); compare them with an absolute
tolerance, never a relative one. encoder.layer.0.attention.self.key.bias is nevertheless one
of the sampled parameters, as asked; encoder.layer.0.attention.self.query.bias is sampled too.

Second, cheaper check ("cls"): the same but with CLS pooling (h[:, 0]), L2 normalize and
scale 1.0; only the loss and the per-parameter L2 norms are recorded.

Run with HF_HUB_OFFLINE=1; uses 2 CPU threads.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(2)

import transformers  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

DEFAULT_MODEL = os.path.expanduser("~/.cache/foil/models/all-MiniLM-L6-v2")
DEFAULT_OUT = "tests/fixtures/encoder/minilm_gradients.json"
MAX_LENGTH = 64
SCALE = 20.0
TOP_K = 16
N_SAMPLES = 64
SAMPLED_PARAMS = [
    "encoder.layer.{last}.output.dense.weight",  # layer 5, or the last of smaller models
    "embeddings.LayerNorm.weight",
    "encoder.layer.0.attention.self.key.bias",  # theoretically zero, see below
    "encoder.layer.0.attention.self.query.bias",  # an extra, non-degenerate bias
]

# Query i matches passage i. All eight texts are on one topic, so the negatives are hard and
# the loss (and so every gradient) is far from zero; with unrelated topics the loss at scale 20
# is ~2e-4 and the gradients drown in float32 rounding. Lengths differ on purpose so padding
# matters; the last passage is longer than 64 word pieces and is truncated.
QUERIES = [
    "vitamin D and fractures",
    "Does vitamin D supplementation reduce the risk of hip fractures in elderly women?",
    "vitamin D deficiency and muscle weakness in older adults",
    "calcium intake and bone density after menopause in women",
]
PASSAGES = [
    "Low vitamin D levels were linked to more fractures.",
    "In a trial of women over seventy, a yearly high dose of vitamin D did not lower the number "
    "of hip fractures and slightly increased falls.",
    "Older adults deficient in vitamin D had weaker muscles, a lower grip strength and rose from "
    "a chair more slowly.",
    "Women who took calcium tablets for five years after menopause lost less bone mineral "
    "density at the spine and hip than those given placebo, although the difference was small "
    "and some reported constipation; the effect on fractures was uncertain, and a later analysis "
    "raised concerns about heart attacks in women who took the highest doses without vitamin D.",
]


def flt(x):
    return float(x)


def mean_pool(h, mask):
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1e-9)


def family_name(model, bert_name):
    """The model's name of the parameter BERT calls bert_name."""
    if type(model).__name__ != "MPNetModel":
        return bert_name
    return bert_name.replace(".attention.self.query.", ".attention.attn.q.") \
        .replace(".attention.self.key.", ".attention.attn.k.")


def run(model, q_batch, p_batch, pooling, scale):
    model.zero_grad(set_to_none=True)
    hq = model(**q_batch).last_hidden_state
    hp = model(**p_batch).last_hidden_state
    if pooling == "mean":
        q = mean_pool(hq, q_batch["attention_mask"])
        p = mean_pool(hp, p_batch["attention_mask"])
    else:
        q, p = hq[:, 0], hp[:, 0]
    q = F.normalize(q, p=2, dim=1)
    p = F.normalize(p, p=2, dim=1)
    scores = scale * q @ p.T
    labels = torch.arange(scores.shape[0])
    loss = F.cross_entropy(scores, labels)
    loss.backward()
    grads = {name: (None if prm.grad is None else prm.grad.detach().clone())
             for name, prm in model.named_parameters()}
    return loss.detach(), q.detach(), p.detach(), scores.detach(), grads


def grad_stats(g):
    a = g.detach().to(torch.float64).flatten().numpy()
    absa = np.abs(a)
    order = np.argsort(-absa, kind="stable")[:TOP_K]
    return {
        "shape": list(g.shape),
        "sum": float(a.sum()),
        "l2": float(np.sqrt((a * a).sum())),
        "max_abs": float(absa.max()),
        "nonzero": int((a != 0).sum()),
        "top": [[int(i), flt(a[i])] for i in order],
    }


def load(path, dtype):
    model = AutoModel.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    model.eval()  # dropout off
    for prm in model.parameters():
        prm.requires_grad_(True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.model)
    model = load(args.model, torch.float32)
    assert type(model).__name__ in ("BertModel", "MPNetModel", "XLMRobertaModel"), type(model)
    assert not model.training

    def batch(texts):
        return tok(texts, padding="longest", truncation=True, max_length=MAX_LENGTH,
                   return_tensors="pt")

    qb, pb = batch(QUERIES), batch(PASSAGES)
    q_untrunc = [len(tok(t)["input_ids"]) for t in QUERIES]
    p_untrunc = [len(tok(t)["input_ids"]) for t in PASSAGES]
    assert max(p_untrunc) > MAX_LENGTH, p_untrunc
    assert len(set(qb["attention_mask"].sum(1).tolist())) == len(QUERIES)
    assert len(set(pb["attention_mask"].sum(1).tolist())) == len(PASSAGES)

    # --- main check: mean pooling, scale 20
    loss, q, p, scores, grads = run(model, qb, pb, "mean", SCALE)
    params, no_grad = {}, []
    for name, g in grads.items():
        if g is None or not bool(g.any()):
            no_grad.append(name)
            continue
        params[name] = grad_stats(g)
    samples = {}
    last = min(5, model.config.num_hidden_layers - 1)
    for name in (family_name(model, n.format(last=last)) for n in SAMPLED_PARAMS):
        flat = grads[name].flatten()
        n = flat.numel()
        idx = [int(round(k * (n - 1) / (N_SAMPLES - 1))) for k in range(N_SAMPLES)]
        samples[name] = {"numel": n, "indices": idx, "values": [flt(flat[i]) for i in idx]}

    # --- float64 reference of the same computation (tolerance guide)
    model64 = load(args.model, torch.float64)
    loss64, q64, _, _, grads64 = run(model64, qb, pb, "mean", SCALE)
    rel, absdiff, l2_64, zero64 = {}, {}, {}, []
    for name in params:
        g32 = grads[name].to(torch.float64)
        g64 = grads64[name]
        d = float((g32 - g64).norm())
        n64 = float(g64.norm())
        absdiff[name], l2_64[name] = d, n64
        if n64 < 1e-12 * max(1.0, float(loss64)):
            zero64.append(name)
        else:
            rel[name] = d / n64
    expected_zero = [family_name(model, f"encoder.layer.{i}.attention.self.key.bias")
                     for i in range(model.config.num_hidden_layers)]
    assert sorted(zero64) == sorted(expected_zero), zero64
    del model64, grads64

    # --- second check: CLS pooling, scale 1
    loss_cls, _, _, _, grads_cls = run(model, qb, pb, "cls", 1.0)
    cls_l2 = {name: float(g.to(torch.float64).norm()) for name, g in grads_cls.items()
              if g is not None and bool(g.any())}
    cls_no_grad = [name for name, g in grads_cls.items() if g is None or not bool(g.any())]

    out = {
        "model": os.path.basename(os.path.normpath(args.model)),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "dropout": "disabled (model.eval())",
        "max_length": MAX_LENGTH,
        "padding": "longest, per side",
        "queries": QUERIES,
        "passages": PASSAGES,
        "untruncated_token_counts": {"queries": q_untrunc, "passages": p_untrunc},
        "query_input_ids": qb["input_ids"].tolist(),
        "query_attention_mask": qb["attention_mask"].tolist(),
        "query_token_type_ids": qb["token_type_ids"].tolist() if "token_type_ids" in qb else None,
        "passage_input_ids": pb["input_ids"].tolist(),
        "passage_attention_mask": pb["attention_mask"].tolist(),
        "passage_token_type_ids": pb["token_type_ids"].tolist() if "token_type_ids" in pb else None,
        "mean": {
            "pooling": "mean over attention mask, then L2 normalize",
            "scale": SCALE,
            "loss_fn": "cross_entropy(scale * Q @ P.T, arange(4)), mean reduction",
            "loss": flt(loss),
            "query_embeddings": [[flt(v) for v in r] for r in q],
            "passage_embeddings": [[flt(v) for v in r] for r in p],
            "scores": [[flt(v) for v in r] for r in scores],
            "no_grad": no_grad,
            "params": params,
            "samples": samples,
        },
        "float64_reference": {
            "loss": flt(loss64),
            "max_abs_embedding_diff": float((q.to(torch.float64) - q64).abs().max()),
            "theoretically_zero": zero64,
            "grad_l2": l2_64,
            "grad_l2_diff": absdiff,
            "grad_rel_l2_diff": rel,
        },
        "cls": {
            "pooling": "h[:, 0] ([CLS]), then L2 normalize",
            "scale": 1.0,
            "loss": flt(loss_cls),
            "no_grad": cls_no_grad,
            "l2": cls_l2,
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes; loss(mean, x20)={flt(loss)!r} "
          f"(float64 model: {flt(loss64)!r}); loss(cls, x1)={flt(loss_cls)!r}; "
          f"{len(params)} params with grad; no grad: {no_grad}; "
          f"max grad rel diff f32 vs f64: {max(rel.values()):.2e} "
          f"(theoretically zero: {len(zero64)} key biases)", file=sys.stderr)


if __name__ == "__main__":
    main()
