#!/usr/bin/env python3
"""Golden values and gradients of foil-train's losses, and AdamW/schedule/clipping trajectories.

    python3 scripts/golden/make_loss_golden.py [--out-dir tests/fixtures/train]

Writes two files:

losses.json -- fixed random embeddings (seed 20240611, rounded to float32 so that both sides
read identical numbers): queries [4, 8], positives [4, 8], hard negatives [4, 2, 8] (row b*2+k
is negative k of query b), teacher scores [4, 3] (positive first), Soft-InfoNCE weights [4, 2]
(hard negatives) and [4, 12] (every column of the document matrix [positives; negatives]).
For each case: the loss string foil parses ("mnrl:scale=20", ...), which inputs it takes, the
loss value and the gradient w.r.t. each input embedding, computed in float64 by PyTorch.
Where sentence-transformers has the loss, its own module computes it from the embeddings
(MultipleNegativesRankingLoss, MultipleNegativesSymmetricRankingLoss, TripletLoss,
MarginMSELoss via compute_loss_from_embeddings; hard negatives passed as extra columns, as its
data collator does). The other losses are re-stated below in PyTorch from their papers, as foil
documents them (crates/foil-train/src/losses/*.rs). MoCHi mixing replays foil's SplitMix64
draws (the generator is re-implemented here).

adamw.json -- three parameters ("dense.weight" [4, 3], "dense.bias" [3],
"norm.LayerNorm.weight" [3]; weight decay on the weight only, as transformers' Trainer) and 6
steps of given gradients (parameter "norm.LayerNorm.weight" has no gradient at step 3, so it
is skipped that step). Each step: clip_grad_norm_(max_norm=1.0), torch.optim.AdamW(lr=0.05,
betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1) stepped, then
get_linear_schedule_with_warmup(warmup=2, total=8) stepped. Recorded per step: the lr used,
the pre-clip total norm, and every parameter after the step (float32, as torch keeps them).

Runs on CPU in a few seconds; needs torch, sentence-transformers, transformers.
"""
import argparse
import json
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")
torch.set_num_threads(2)

from sentence_transformers.sentence_transformer import losses as st_losses  # noqa: E402
from sentence_transformers.util import cos_sim, dot_score, pairwise_dot_score  # noqa: E402
from transformers import get_linear_schedule_with_warmup  # noqa: E402

B, K, D = 4, 2, 8
MASK64 = (1 << 64) - 1


class SplitMix64:
    """foil_core::rng::SplitMix64, bit for bit."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def next_f64(self):
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def below(self, n):
        threshold = ((-n) & MASK64) % n
        while True:
            m = self.next_u64() * n
            if (m & MASK64) >= threshold:
                return m >> 64


def f32(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def docs_of(p, n):
    return torch.cat([p, n.reshape(-1, D)], 0) if n is not None else p


def lse(x):
    return torch.logsumexp(x, dim=1)


def diag_mask(b, n):
    m = torch.zeros(b, n, dtype=torch.float64)
    m[range(b), range(b)] = float("-inf")
    return m


def mixing_logits(qn, dn, raw, hardest, synthetic, query_synth, seed):
    """foil's MoCHi: unit-vector logits [B, s + s'] of synthetic (constant) negatives."""
    rng = SplitMix64(seed)
    qh = qn.detach().numpy()
    dh = dn.detach().numpy()
    s = raw.detach().numpy()
    b, n = s.shape
    pts = []
    for i in range(b):
        order = sorted([j for j in range(n) if j != i], key=lambda j: (-s[i, j], j))[:hardest]
        top = len(order)
        row = []
        for _ in range(synthetic):
            a = order[rng.below(top)]
            c = order[rng.below(top)]
            alpha = rng.next_f64()
            h = alpha * dh[a] + (1 - alpha) * dh[c]
            row.append(h / max(np.linalg.norm(h), 1e-12))
        for _ in range(query_synth):
            c = order[rng.below(top)]
            beta = 0.5 * rng.next_f64()
            h = beta * qh[i] + (1 - beta) * dh[c]
            row.append(h / max(np.linalg.norm(h), 1e-12))
        pts.append(row)
    h = torch.tensor(np.array(pts), dtype=torch.float64)  # [B, S, D], no gradient
    return (qn.unsqueeze(1) * h).sum(2)


def focal(rows, gamma):
    if gamma == 0:
        return rows
    return rows * (1 - torch.exp(-rows)).clamp_min(0) ** gamma


def infonce(q, p, n, scale=20.0, gamma=0.0, mixing=None, log_w=None):
    qn, pn = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    dn = F.normalize(docs_of(p, n), dim=-1)
    raw = qn @ dn.T
    z = raw * scale
    pos = z.diagonal()
    allz = z if log_w is None else z + log_w
    if mixing is not None:
        allz = torch.cat([allz, mixing_logits(qn, dn, raw, *mixing) * scale], 1)
    return focal(lse(allz) - pos, gamma).mean()


def dcl(q, p, n, scale=20.0, sigma=None):
    qn, dn = F.normalize(q, dim=-1), F.normalize(docs_of(p, n), dim=-1)
    raw = qn @ dn.T
    z = raw * scale
    b, m = z.shape
    pos = z.diagonal()
    if sigma is not None:
        # the authors' weight_fn: 2 - B * softmax(<z1, z2> / sigma) over the batch
        pos = pos * (2 - b * torch.softmax(raw.diagonal() / sigma, dim=0))
    return (lse(z + diag_mask(b, m)) - pos).mean()


def mw(q, p, n, scale=20.0):
    qn, dn = F.normalize(q, dim=-1), F.normalize(docs_of(p, n), dim=-1)
    z = (qn @ dn.T) * scale
    b, m = z.shape
    off = ~torch.eye(b, m, dtype=torch.bool)
    pos = z.diagonal()  # [B]
    neg = z[off]  # [B*m - B]
    return F.softplus(neg[None, :] - pos[:, None]).mean()


def multi_similarity(q, p, n, alpha=2.0, beta=50.0, base=0.5):
    # pytorch-metric-learning's MultiSimilarityLoss (no miner, MeanReducer) with
    # embeddings=queries (labels 0..B-1) and ref_emb=docs (labels 0..B-1, then distinct labels
    # for the hard negatives), CosineSimilarity.
    qn, dn = F.normalize(q, dim=-1), F.normalize(docs_of(p, n), dim=-1)
    s = qn @ dn.T
    b, m = s.shape
    pos_mask = torch.eye(b, m, dtype=torch.bool)

    def lse1(x, mask):  # log(1 + sum over mask of exp(x))
        x = x.masked_fill(~mask, float("-inf"))
        x = torch.cat([torch.zeros(b, 1, dtype=x.dtype), x], 1)
        return torch.logsumexp(x, 1)

    pos_loss = lse1(alpha * (base - s), pos_mask) / alpha
    neg_loss = lse1(beta * (s - base), ~pos_mask) / beta
    return (pos_loss + neg_loss).mean()


def triplet_general(q, p, n, distance, margin):
    if distance == "cosine":
        qn, pn, nn_ = F.normalize(q, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1)
        dp = 1 - (qn * pn).sum(-1)
        dn = 1 - (qn[:, None, :] * nn_).sum(-1)
    else:
        dp = (q - p).square().sum(-1).sqrt()
        dn = (q[:, None, :] - n).square().sum(-1).sqrt()
    return F.relu(dp[:, None] - dn + margin).mean()


def st_columns(n):
    return [n[:, k, :] for k in range(n.shape[1])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default="tests/fixtures/train")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    rs = np.random.RandomState(20240611)
    data = {
        "queries": f32(rs.randn(B, D)),
        "positives": None,
        "negatives": None,
    }
    # positives near their queries and negatives moderately near, so every term matters
    data["positives"] = f32(data["queries"] + 0.9 * rs.randn(B, D))
    data["negatives"] = f32(data["queries"][:, None, :] + 1.2 * rs.randn(B, K, D))
    teacher = f32(np.concatenate([rs.uniform(5, 10, (B, 1)), rs.uniform(0, 8, (B, K))], 1))
    weights_hard = f32(rs.uniform(0.1, 2.0, (B, K)))
    weights_full = f32(rs.uniform(0.0, 2.0, (B, B + B * K)))
    weights_full[0, 5] = 0.0  # a removed negative

    def t(name):
        return torch.tensor(data[name], dtype=torch.float64, requires_grad=True)

    mnrl = st_losses.MultipleNegativesRankingLoss(model=None, scale=20.0)
    mnrl_dot = st_losses.MultipleNegativesRankingLoss(model=None, scale=1.0, similarity_fct=dot_score)
    mnsrl = st_losses.MultipleNegativesSymmetricRankingLoss(model=None, scale=20.0)
    mnrl_50 = st_losses.MultipleNegativesRankingLoss(model=None, scale=50.0, similarity_fct=cos_sim)
    trip = st_losses.TripletLoss(model=None)  # Euclidean, margin 5
    mmse = st_losses.MarginMSELoss(model=None, similarity_fct=pairwise_dot_score)
    th = torch.tensor(teacher, dtype=torch.float64)
    lw_hard = torch.zeros(B, B + B * K, dtype=torch.float64)
    for i in range(B):
        for k in range(K):
            lw_hard[i, B + i * K + k] = float(np.log(weights_hard[i, k]))
    with np.errstate(divide="ignore"):
        lw_full = torch.tensor(np.log(weights_full), dtype=torch.float64)
    lw_full[range(B), range(B)] = 0.0

    # (name, loss string, negatives used (0: none), teacher, weights, seed, fn(q, p, n), reference)
    cases = [
        ("mnrl_pairs", "mnrl", 0, None, None, 0,
         lambda q, p, n: mnrl.compute_loss_from_embeddings([q, p], None), "sentence-transformers"),
        ("mnrl_hard", "mnrl:scale=20", K, None, None, 0,
         lambda q, p, n: mnrl.compute_loss_from_embeddings([q, p, *st_columns(n)], None), "sentence-transformers"),
        ("mnrl_scale50", "infonce:scale=50", K, None, None, 0,
         lambda q, p, n: mnrl_50.compute_loss_from_embeddings([q, p, *st_columns(n)], None), "sentence-transformers"),
        ("mnrl_dot", "mnrl:similarity=dot,scale=1", K, None, None, 0,
         lambda q, p, n: mnrl_dot.compute_loss_from_embeddings([q, p, *st_columns(n)], None), "sentence-transformers"),
        ("mnrl_symmetric", "mnrl:symmetric=true", K, None, None, 0,
         lambda q, p, n: mnsrl.compute_loss_from_embeddings([q, p, *st_columns(n)], None), "sentence-transformers"),
        ("infonce_focal", "infonce:focal_gamma=2", K, None, None, 0,
         lambda q, p, n: infonce(q, p, n, gamma=2.0), "restated"),
        ("infonce_mixing", "infonce:mix_hardest=3,mix_synthetic=2,mix_query=1", K, None, None, 7,
         lambda q, p, n: infonce(q, p, n, mixing=(3, 2, 1, 7)), "restated"),
        ("dcl_pairs", "dcl", 0, None, None, 0, lambda q, p, n: dcl(q, p, n), "restated"),
        ("dcl_hard", "dcl:scale=10", K, None, None, 0, lambda q, p, n: dcl(q, p, n, scale=10.0), "restated"),
        ("dclw_hard", "dclw", K, None, None, 0, lambda q, p, n: dcl(q, p, n, sigma=0.5), "restated"),
        ("mw_pairs", "mw", 0, None, None, 0, lambda q, p, n: mw(q, p, n), "restated"),
        ("mw_hard", "mw:scale=5", K, None, None, 0, lambda q, p, n: mw(q, p, n, scale=5.0), "restated"),
        ("soft_infonce_hard", "soft-infonce", K, None, "hard", 0,
         lambda q, p, n: infonce(q, p, n, log_w=lw_hard), "restated"),
        ("soft_infonce_full", "soft-infonce:focal_gamma=1", K, None, "full", 0,
         lambda q, p, n: infonce(q, p, n, gamma=1.0, log_w=lw_full), "restated"),
        ("multi_similarity", "multi-similarity", K, None, None, 0,
         lambda q, p, n: multi_similarity(q, p, n), "restated (pytorch-metric-learning)"),
        ("triplet_euclidean", "triplet", 1, None, None, 0,
         lambda q, p, n: trip.compute_loss_from_embeddings([q, p, n[:, 0, :]], None), "sentence-transformers"),
        ("triplet_cosine", "triplet:distance=cosine,margin=0.3", K, None, None, 0,
         lambda q, p, n: triplet_general(q, p, n, "cosine", 0.3), "restated"),
        ("margin_mse_scores", "margin-mse", K, "scores", None, 0,
         lambda q, p, n: mmse.compute_loss_from_embeddings([q, p, *st_columns(n)], th), "sentence-transformers"),
        ("margin_mse_margins", "margin-mse", K, "margins", None, 0,
         lambda q, p, n: mmse.compute_loss_from_embeddings(
             [q, p, *st_columns(n)], th[:, :1] - th[:, 1:]), "sentence-transformers"),
    ]

    out_cases = []
    for name, loss, k, teach, weights, seed, fn, ref in cases:
        q, p = t("queries"), t("positives")
        n = torch.tensor(data["negatives"][:, :k, :], dtype=torch.float64, requires_grad=True) if k else None
        value = fn(q, p, n)
        value.backward()
        case = {
            "name": name,
            "loss": loss,
            "negatives": k,
            "teacher": teach,
            "weights": weights,
            "seed": seed,
            "reference": ref,
            "value": value.item(),
            "grad_queries": q.grad.numpy().tolist(),
            "grad_positives": p.grad.numpy().tolist(),
        }
        if n is not None:
            case["grad_negatives"] = n.grad.numpy().tolist()
        out_cases.append(case)
        print(f"{name:22s} {value.item():.6f}")

    golden = {
        "generator": "scripts/golden/make_loss_golden.py",
        "torch": torch.__version__,
        "dims": {"B": B, "K": K, "d": D},
        "queries": data["queries"].tolist(),
        "positives": data["positives"].tolist(),
        "negatives": data["negatives"].tolist(),
        "teacher_scores": teacher.tolist(),
        "weights_hard": weights_hard.tolist(),
        "weights_full": weights_full.tolist(),
        "cases": out_cases,
    }
    with open(os.path.join(args.out_dir, "losses.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")

    # ---- AdamW + schedule + clipping ----
    rs = np.random.RandomState(7)
    shapes = {"dense.weight": (4, 3), "dense.bias": (3,), "norm.LayerNorm.weight": (3,)}
    init = {k: rs.randn(*s).astype(np.float32) for k, s in shapes.items()}
    steps = 6
    grads = []
    for step in range(steps):
        scale = [0.3, 2.0, 0.8, 3.0, 0.1, 1.5][step]
        g = {k: (scale * rs.randn(*s)).astype(np.float32) for k, s in shapes.items()}
        if step == 3:
            del g["norm.LayerNorm.weight"]
        grads.append(g)
    params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    opt = torch.optim.AdamW(
        [
            {"params": [params["dense.weight"]], "weight_decay": 0.1},
            {"params": [params["dense.bias"], params["norm.LayerNorm.weight"]], "weight_decay": 0.0},
        ],
        lr=0.05, betas=(0.9, 0.999), eps=1e-8,
    )
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=8)
    trajectory = []
    for step in range(steps):
        for k, prm in params.items():
            prm.grad = torch.tensor(grads[step][k]) if k in grads[step] else None
        lr = opt.param_groups[0]["lr"]
        norm = torch.nn.utils.clip_grad_norm_([p for p in params.values() if p.grad is not None], 1.0)
        opt.step()
        sched.step()
        trajectory.append({
            "lr": lr,
            "norm": float(norm),
            "params": {k: v.detach().numpy().astype(np.float64).tolist() for k, v in params.items()},
        })
    adamw = {
        "generator": "scripts/golden/make_loss_golden.py",
        "torch": torch.__version__,
        "config": {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1,
                   "warmup_steps": 2, "total_steps": 8, "max_norm": 1.0},
        "init": {k: v.astype(np.float64).tolist() for k, v in init.items()},
        "grads": [{k: v.astype(np.float64).tolist() for k, v in g.items()} for g in grads],
        "steps": trajectory,
    }
    with open(os.path.join(args.out_dir, "adamw.json"), "w") as f:
        json.dump(adamw, f, indent=1)
        f.write("\n")
    print("adamw lrs", [s["lr"] for s in trajectory], "norms", [round(s["norm"], 4) for s in trajectory])


if __name__ == "__main__":
    main()
