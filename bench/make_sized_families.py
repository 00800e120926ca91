#!/usr/bin/env python3
"""MiniLM-sized random checkpoints of the model families foil runs, for speed benchmarks.

    python3 bench/make_sized_families.py [--tiny tests/fixtures/tiny] [--out bench/out/families]

For each tiny folder of tests/fixtures/tiny (xlm-roberta, modernbert, qwen2, qwen3) writes
<out>/<family>/: the same architecture at all-MiniLM-L6-v2's size (hidden 384, 6 layers,
12 attention heads, intermediate 1536; Qwen: 4 key/value heads of 32; ModernBERT: its real
defaults for the window (128) and global layers (every 3rd)), random weights (seeded), the tiny
folder's tokenizer and sentence-transformers files, max_seq_length 256. The weights are
meaningless: these folders measure speed only.
"""
import argparse
import json
import os
import shutil
import sys

# bench/timeit.py would shadow the standard library's timeit (which torch imports).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402
from transformers import AutoConfig, AutoModel  # noqa: E402

SIZE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
EXTRA = {
    "xlm-roberta": dict(max_position_embeddings=514),
    "modernbert": dict(local_attention=128, global_attn_every_n_layers=3),
    "qwen2": dict(num_key_value_heads=4),
    "qwen3": dict(num_key_value_heads=4, head_dim=32),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", default="tests/fixtures/tiny")
    ap.add_argument("--out", default="bench/out/families")
    args = ap.parse_args()
    for family, extra in EXTRA.items():
        src, dst = os.path.join(args.tiny, family), os.path.join(args.out, family)
        shutil.rmtree(dst, ignore_errors=True)
        weights = {"model.safetensors", "config.json"}  # the top-level ones only
        shutil.copytree(src, dst, ignore=lambda d, names: (
            [n for n in names if n in weights] if os.path.samefile(d, src) else []))
        config = AutoConfig.from_pretrained(src)
        for k, v in {**SIZE, **extra}.items():
            setattr(config, k, v)
        if hasattr(config, "layer_types"):  # one entry per layer (Qwen)
            config.layer_types = ["full_attention"] * SIZE["num_hidden_layers"]
        torch.manual_seed(7)
        AutoModel.from_config(config).save_pretrained(dst, safe_serialization=True)
        pooling = os.path.join(dst, "1_Pooling", "config.json")
        with open(pooling) as f:
            p = json.load(f)
        p["word_embedding_dimension"] = SIZE["hidden_size"]
        with open(pooling, "w") as f:
            json.dump(p, f, indent=2)
        with open(os.path.join(dst, "sentence_bert_config.json"), "w") as f:
            json.dump({"max_seq_length": 256, "do_lower_case": False}, f, indent=2)
        print(f"{family}: {dst}")


if __name__ == "__main__":
    main()
