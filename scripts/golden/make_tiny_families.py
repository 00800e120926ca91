#!/usr/bin/env python3
"""Tiny randomly initialized checkpoints of the encoder families foil runs, with golden outputs.

    python3 scripts/golden/make_tiny_families.py \
        [--data ../shared/data/scifact] [--out tests/fixtures/tiny]

No real XLM-RoBERTa weights (multilingual-e5, bge-m3) can be installed here, so foil proves the
architecture the way model libraries do: a 2-layer model with random weights (seeded), saved by
transformers as a Hugging Face folder plus sentence-transformers' files, and a tokenizer trained
on SciFact text with the `tokenizers` library (Unigram with a Metaspace pre-tokenizer and
<s> A </s></s> B </s> templates, as XLM-R's sentencepiece model). Per family the script writes

  <out>/<family>/              the model folder (config.json, model.safetensors,
                               tokenizer.json, tokenizer_config.json, special_tokens_map.json,
                               modules.json, 1_Pooling/, sentence_bert_config.json)
  <out>/<family>.json          golden outputs:
    texts, token_ids           model.tokenize(texts)["input_ids"], padding removed
    embeddings                 SentenceTransformer(folder).encode(texts) (mean pooling,
                               normalized), 9 significant digits
    gradients                  make_gradient_golden.py's main check on the same folder
                               (written separately to <out>/<family>_gradients.json)

Families: xlm-roberta (positions from pad_token_id + 1, one token type); modernbert
(ModernBERT: rotary positions, no biases, GeGLU, every second layer global attention and the
others a sliding window of 16 tokens so that the window matters for the longer texts; a
byte-level BPE tokenizer with [CLS] A [SEP]; its gradients from make_tiny_decoders.py's
sampled-gradient check with mean pooling); and
xlm-roberta-reranker, a one-logit XLMRobertaForSequenceClassification (bge-reranker's head:
classifier.dense + tanh + classifier.out_proj) with its raw logits for (query, passage) pairs
in <out>/xlm-roberta-reranker.json. Run with
HF_HUB_OFFLINE=1; uses 2 CPU threads. The model weights are seeded, but the Unigram trainer
may pick a slightly different vocabulary on each run, so regenerate one family at a time
(--only).
"""
import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(2)

from sentence_transformers import SentenceTransformer, models  # noqa: E402
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors  # noqa: E402
from tokenizers.models import BPE, Unigram  # noqa: E402
from tokenizers.trainers import BpeTrainer, UnigramTrainer  # noqa: E402
from transformers import (  # noqa: E402
    ModernBertConfig,
    ModernBertModel,
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
    XLMRobertaTokenizerFast,
)

SEED = 20261204
VOCAB = 1000
MAX_SEQ_LENGTH = 128
TEXTS = [
    "protein folding",
    "What causes vitamin D deficiency in older adults?",
    "Aspirin lowers the risk of a second heart attack.",
    "a",
    "Über die Wirkung von Koffein auf den Schlaf",
    "naïve T cells and IL-2",
    "HbA1c < 6.5% in type 2 diabetes (n = 1,204; p = 0.03)",
    "MUTATIONS IN BRCA1 AND BRCA2",
    "Mitochondria produce most of the cell's energy through oxidative phosphorylation, and "
    "defects in this pathway cause a wide range of diseases that affect muscle, brain and "
    "heart. " * 3,
]


def scifact_texts(data, limit=3000):
    with open(os.path.join(data, "corpus.jsonl"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= limit:
                break
            d = json.loads(line)
            yield (d.get("title") or "") + " " + (d.get("text") or "")


def unigram_tokenizer(data):
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = UnigramTrainer(vocab_size=VOCAB, special_tokens=special, unk_token="<unk>")
    tok.train_from_iterator(scifact_texts(data), trainer=trainer)
    assert [tok.token_to_id(t) for t in special] == [0, 1, 2, 3, 4]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=MAX_SEQ_LENGTH)


def xlm_roberta_config(tokenizer, **extra):
    return XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=MAX_SEQ_LENGTH + 2, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
        hidden_act="gelu", **extra)


def xlm_roberta(folder, data):
    tokenizer = unigram_tokenizer(data)
    config = xlm_roberta_config(tokenizer)
    torch.manual_seed(SEED)
    model = XLMRobertaModel(config, add_pooling_layer=False)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    word = models.Transformer(folder, max_seq_length=MAX_SEQ_LENGTH)
    pooling = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pooling, models.Normalize()]).save(folder)


def xlm_roberta_reranker(folder, data, pairs_out):
    """A one-logit XLMRobertaForSequenceClassification (bge-reranker's layout) and its logits
    for (query, passage) pairs, from transformers directly (no activation)."""
    tokenizer = unigram_tokenizer(data)
    # A wide initialization, so that the logits of different pairs differ in their first digits.
    config = xlm_roberta_config(tokenizer, num_labels=1, initializer_range=0.3,
                                architectures=["XLMRobertaForSequenceClassification"])
    torch.manual_seed(SEED + 1)
    model = XLMRobertaForSequenceClassification(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    pairs = [(TEXTS[i], TEXTS[j]) for i in range(len(TEXTS)) for j in (0, 2, 8)]
    batch = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True,
                      truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits[:, 0].tolist()
    with open(pairs_out, "w", encoding="utf-8") as f:
        json.dump({"model_type": "xlm-roberta", "pairs": pairs,
                   "logits": [float(f"{v:.9g}") for v in logits]}, f, indent=1)
        f.write("\n")


def bert_style_bpe_tokenizer(data):
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=VOCAB, special_tokens=special,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(scifact_texts(data), trainer=trainer)
    assert [tok.token_to_id(t) for t in special] == [0, 1, 2, 3, 4]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=MAX_SEQ_LENGTH,
        model_input_names=["input_ids", "attention_mask"])


def modernbert(folder, data):
    tokenizer = bert_style_bpe_tokenizer(data)
    config = ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=512, global_attn_every_n_layers=2,
        local_attention=16, global_rope_theta=160000.0, local_rope_theta=10000.0,
        pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3,
        initializer_range=0.1, hidden_activation="gelu")
    torch.manual_seed(SEED + 4)
    model = ModernBertModel(config)
    with torch.no_grad():  # random norm gains, so that a swapped or missing norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    word = models.Transformer(folder, max_seq_length=MAX_SEQ_LENGTH)
    pooling = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pooling, models.Normalize()]).save(folder)


def golden(folder, out):
    model = SentenceTransformer(folder, device="cpu")
    features = model.tokenize(TEXTS)
    ids = [[int(t) for t, m in zip(row, mask) if m]
           for row, mask in zip(features["input_ids"].tolist(),
                                features["attention_mask"].tolist())]
    vectors = model.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"model_type": model[0].auto_model.config.model_type, "texts": TEXTS,
                   "token_ids": ids,
                   "embeddings": [[float(f"{v:.9g}") for v in row] for row in vectors.tolist()]},
                  f, indent=1)
        f.write("\n")
    return [len(i) for i in ids]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/scifact")
    ap.add_argument("--out", default="tests/fixtures/tiny")
    ap.add_argument("--only", nargs="*", default=None,
                    help="regenerate only these (xlm-roberta, modernbert, xlm-roberta-reranker): "
                         "the Unigram trainer does not give the same vocabulary on every run, "
                         "so regenerating one family should leave the others alone")
    args = ap.parse_args()
    wanted = lambda name: args.only is None or name in args.only  # noqa: E731
    here = os.path.dirname(os.path.abspath(__file__))
    from make_tiny_decoders import gradients_golden
    for family, make in [("xlm-roberta", xlm_roberta), ("modernbert", modernbert)]:
        if not wanted(family):
            continue
        folder = os.path.join(args.out, family)
        os.makedirs(folder, exist_ok=True)
        make(folder, args.data)
        for stray in ("README.md",):
            path = os.path.join(folder, stray)
            if os.path.exists(path):
                os.remove(path)
        lengths = golden(folder, os.path.join(args.out, f"{family}.json"))
        gradients = os.path.join(args.out, f"{family}_gradients.json")
        if family == "xlm-roberta":
            subprocess.run([sys.executable, os.path.join(here, "make_gradient_golden.py"),
                            "--model", folder, "--out", gradients], check=True)
        else:
            gradients_golden(folder, gradients, pooling="mean")
        print(f"{family}: {folder}, token counts {lengths}")
    if not wanted("xlm-roberta-reranker"):
        return
    folder = os.path.join(args.out, "xlm-roberta-reranker")
    os.makedirs(folder, exist_ok=True)
    xlm_roberta_reranker(folder, args.data, os.path.join(args.out, "xlm-roberta-reranker.json"))
    print(f"xlm-roberta-reranker: {folder}")


if __name__ == "__main__":
    main()
