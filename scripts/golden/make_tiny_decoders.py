#!/usr/bin/env python3
"""Tiny randomly initialized decoder embedders (Qwen2 / Qwen3 layout) with golden outputs.

    python3 scripts/golden/make_tiny_decoders.py \
        [--data ../shared/data/scifact] [--out tests/fixtures/tiny]

Decoder embedders (Qwen3-Embedding, gte-Qwen2) are causal language models whose text vector is
the hidden state of the last token, read after an end-of-text token that the tokenizer appends,
with an instruction prefix on queries. No such weights can be installed here, so foil proves
the architecture on a 2-layer model with random (seeded) weights: RMSNorm before attention and
MLP, rotary positions, grouped-query attention (4 query heads sharing 2 key/value heads),
SwiGLU, a causal mask; Qwen2 with q/k/v biases, Qwen3 with per-head RMSNorm on q and k. The
tokenizer is byte-level BPE trained on SciFact text with the `tokenizers` library; its
post-processor appends <|endoftext|> (as Qwen3-Embedding's does) and it pads on the left.

Per family (qwen2, qwen3) the script writes
  <out>/<family>/              transformers' folder (Qwen2Model / Qwen3Model, no LM head) plus
                               sentence-transformers' files: last-token pooling, Normalize,
                               prompts {"query": INSTRUCTION, "document": ""}
  <out>/<family>.json          texts, their token ids (padding removed) and
                               SentenceTransformer(folder).encode(texts) — without a prompt
                               ("embeddings") and with prompt_name="query" ("query_embeddings")
  <out>/<family>_gradients.json   loss and gradients of a contrastive loss (below)

Gradients: 4 queries and 4 passages, tokenized per side with right padding to the longest and
truncation at 64 tokens; last-token pooling (the last real token; mean pooling where
make_tiny_families.py asks), L2 normalization,
scores = 20 Q Pᵀ, loss = cross_entropy(scores, arange(4)); model in eval mode (dropout off),
float32, eager attention. Recorded per parameter: shape, sum, L2 norm, max |g| and the gradient
at 64 evenly spaced flat indices; and, as a guide to tolerances, the same loss and gradient norms
of the model in float64.

Run with HF_HUB_OFFLINE=1; uses 2 CPU threads; deterministic for the same versions.
"""
import argparse
import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(2)

import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer, models  # noqa: E402
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors  # noqa: E402
from tokenizers.models import BPE  # noqa: E402
from tokenizers.trainers import BpeTrainer  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2Model,
    Qwen3Config,
    Qwen3Model,
)

from make_gradient_golden import PASSAGES, QUERIES  # noqa: E402
from make_tiny_families import SEED, TEXTS, scifact_texts  # noqa: E402

VOCAB = 1000
MAX_SEQ_LENGTH = 128
INSTRUCTION = "Instruct: Given a question, retrieve passages that answer it\nQuery: "
EOS = "<|endoftext|>"
GRAD_MAX_LENGTH = 64
SCALE = 20.0
N_SAMPLES = 64
def bpe_tokenizer(data):
    special = [EOS, "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=VOCAB, special_tokens=special,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(scifact_texts(data), trainer=trainer)
    assert [tok.token_to_id(t) for t in special] == [0, 1, 2]
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {EOS}:0", pair=f"$A:0 {EOS}:0 $B:1 {EOS}:1", special_tokens=[(EOS, 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, padding_side="left",
        model_max_length=MAX_SEQ_LENGTH)


def decoder(family, folder, data):
    tokenizer = bpe_tokenizer(data)
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  bos_token_id=None, eos_token_id=0, pad_token_id=0, initializer_range=0.1)
    torch.manual_seed(SEED + (2 if family == "qwen2" else 3))
    if family == "qwen2":
        model = Qwen2Model(Qwen2Config(rope_theta=10000.0, **common))
    else:
        model = Qwen3Model(Qwen3Config(head_dim=16, rope_theta=1000000.0, **common))
    # Random RMSNorm gains (transformers starts them at 1), so that a swapped or missing norm
    # shows in the outputs.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    word = models.Transformer(folder, max_seq_length=MAX_SEQ_LENGTH)
    pooling = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="lasttoken")
    SentenceTransformer(modules=[word, pooling, models.Normalize()],
                        prompts={"query": INSTRUCTION, "document": ""}).save(folder)


def rounded(rows):
    return [[float(f"{v:.9g}") for v in row] for row in rows]


def embeddings_golden(folder, out):
    model = SentenceTransformer(folder, device="cpu")
    features = model.tokenize(TEXTS)
    ids = [[int(t) for t, m in zip(row, mask) if m]
           for row, mask in zip(features["input_ids"].tolist(),
                                features["attention_mask"].tolist())]
    plain = model.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    query = model.encode(TEXTS, batch_size=4, convert_to_numpy=True, prompt_name="query")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"model_type": model[0].auto_model.config.model_type, "texts": TEXTS,
                   "query_prompt": INSTRUCTION, "token_ids": ids,
                   "embeddings": rounded(plain.tolist()),
                   "query_embeddings": rounded(query.tolist())}, f, indent=1)
        f.write("\n")
    return [len(i) for i in ids]


def pool(h, mask, pooling):
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1e-9)
    last = mask.sum(dim=1) - 1  # right padding: the last real token
    return h[torch.arange(h.shape[0]), last]


def loss_and_grads(model, qb, pb, pooling):
    model.zero_grad(set_to_none=True)
    q = F.normalize(pool(model(**qb).last_hidden_state, qb["attention_mask"], pooling), dim=1)
    p = F.normalize(pool(model(**pb).last_hidden_state, pb["attention_mask"], pooling), dim=1)
    scores = SCALE * q @ p.T
    loss = F.cross_entropy(scores, torch.arange(scores.shape[0]))
    loss.backward()
    return loss.detach(), {n: prm.grad.detach().clone() for n, prm in model.named_parameters()}


def load(folder, dtype):
    model = AutoModel.from_pretrained(folder, dtype=dtype, attn_implementation="eager").eval()
    for prm in model.parameters():
        prm.requires_grad_(True)
    return model


def gradients_golden(folder, out, pooling="lasttoken"):
    """The sampled-gradient golden of any folder (also used for ModernBERT, with mean
    pooling, by make_tiny_families.py)."""
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "right"

    def batch(texts):
        return tok(texts, padding="longest", truncation=True, max_length=GRAD_MAX_LENGTH,
                   return_tensors="pt")

    qb, pb = batch(QUERIES), batch(PASSAGES)
    assert max(len(tok(t)["input_ids"]) for t in PASSAGES) > GRAD_MAX_LENGTH
    loss, grads = loss_and_grads(load(folder, torch.float32), qb, pb, pooling)
    loss64, grads64 = loss_and_grads(load(folder, torch.float64), qb, pb, pooling)
    params, rel = {}, {}
    for name, g in grads.items():
        a = g.to(torch.float64).flatten()
        n = a.numel()
        idx = [int(round(k * (n - 1) / (N_SAMPLES - 1))) for k in range(N_SAMPLES)]
        params[name] = {"shape": list(g.shape), "sum": float(a.sum()),
                        "l2": float(a.norm()), "max_abs": float(a.abs().max()),
                        "indices": idx, "values": [float(a[i]) for i in idx]}
        g64 = grads64[name].flatten()
        d = float((a - g64).norm() / max(float(g64.norm()), 1e-30))
        # transformers' ModernBERT gives NaN in float64 (its masks overflow); no guide then.
        rel[name] = None if math.isnan(d) else d
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"model": os.path.basename(os.path.normpath(folder)),
                   "transformers": transformers.__version__, "torch": torch.__version__,
                   "max_length": GRAD_MAX_LENGTH, "scale": SCALE,
                   "pooling": f"{pooling}, then L2 normalize",
                   "queries": QUERIES, "passages": PASSAGES,
                   "query_input_ids": qb["input_ids"].tolist(),
                   "query_attention_mask": qb["attention_mask"].tolist(),
                   "passage_input_ids": pb["input_ids"].tolist(),
                   "passage_attention_mask": pb["attention_mask"].tolist(),
                   "loss": float(loss), "params": params,
                   "float64_reference": {
                       "loss": None if math.isnan(float(loss64)) else float(loss64),
                       "grad_rel_l2_diff": rel}},
                  f, indent=1)
        f.write("\n")
    return float(loss), max((v for v in rel.values() if v is not None), default=float("nan"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/scifact")
    ap.add_argument("--out", default="tests/fixtures/tiny")
    args = ap.parse_args()
    for family in ("qwen2", "qwen3"):
        folder = os.path.join(args.out, family)
        os.makedirs(folder, exist_ok=True)
        decoder(family, folder, args.data)
        for stray in ("README.md",):
            path = os.path.join(folder, stray)
            if os.path.exists(path):
                os.remove(path)
        lengths = embeddings_golden(folder, os.path.join(args.out, f"{family}.json"))
        loss, worst = gradients_golden(folder, os.path.join(args.out, f"{family}_gradients.json"))
        print(f"{family}: {folder}, token counts {lengths}, loss {loss:.6f}, "
              f"worst float32 vs float64 gradient {worst:.2e}")


if __name__ == "__main__":
    main()
