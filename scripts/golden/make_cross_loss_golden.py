#!/usr/bin/env python3
"""Golden values and gradients of foil-train's cross-encoder losses (CrossLoss).

    python3 scripts/golden/make_cross_loss_golden.py [--out tests/fixtures/train/cross_losses.json]

Fixed logits [B, 1 + K] (the positive's column first): a random [4, 3] matrix (seed 20261206,
rounded to float32 so both sides read identical numbers), a [2, 5] matrix with logits of
magnitude up to 80 (where a naive exp overflows in float32), and a [3, 1] matrix (no negatives).
For each: PyTorch's value and gradient w.r.t. the logits in float64 of
  listwise -- torch.nn.functional.cross_entropy(z, target 0 for every row), mean over rows;
  bce      -- torch.nn.functional.binary_cross_entropy_with_logits(z, labels 1 for column 0,
              0 elsewhere), mean over all pairs.
Needs torch; runs in a second.
"""
import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F


def case(name, logits):
    out = []
    for loss in ["listwise", "bce"]:
        z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
        if loss == "listwise":
            value = F.cross_entropy(z, torch.zeros(z.shape[0], dtype=torch.long))
        else:
            labels = torch.zeros_like(z)
            labels[:, 0] = 1.0
            value = F.binary_cross_entropy_with_logits(z, labels)
        value.backward()
        out.append(
            {
                "name": f"{name}/{loss}",
                "loss": loss,
                "logits": logits,
                "value": value.item(),
                "grad": z.grad.tolist(),
            }
        )
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tests/fixtures/train/cross_losses.json")
    args = parser.parse_args()
    rng = np.random.default_rng(20261206)
    random = rng.normal(0.0, 2.0, size=(4, 3)).astype(np.float32).astype(np.float64)
    large = np.array(
        [[80.0, -80.0, 79.5, 0.0, -3.25], [-80.0, 80.0, -79.0, 12.5, 0.5]], dtype=np.float64
    )
    single = np.array([[1.5], [-2.0], [0.0]], dtype=np.float64)
    cases = case("random", random.tolist()) + case("large", large.tolist()) + case(
        "no-negatives", single.tolist()
    )
    with open(args.out, "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
