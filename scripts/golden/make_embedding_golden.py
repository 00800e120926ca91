#!/usr/bin/env python3
"""Golden sentence embeddings of all-MiniLM-L6-v2, computed by sentence-transformers.

    python3 scripts/golden/make_embedding_golden.py \
        [--model ~/.cache/foil/models/all-MiniLM-L6-v2] \
        [--out tests/fixtures/encoder/minilm_embeddings.json]

foil's BERT encoder (crate foil-candle) and its WordPiece tokenizer are checked against this
file. The texts are written below (no outside text): short queries, ordinary sentences, long
passages (some longer than the model's max_seq_length of 256 word pieces, some longer than
512, and some built to land exactly on 255/256/257 pieces), unicode of many scripts, emoji,
combining marks and zero-width characters, "empty-ish" strings, numbers / code / URLs,
repeated punctuation, mixed case, single words longer than 100 characters (WordPiece gives
[UNK]) and control characters (BERT's clean-up drops \\u0000 and other controls and turns
\\t / \\n / \\r into spaces).

The vectors come from
    model.encode(texts, batch_size=16, normalize_embeddings=False, convert_to_numpy=True)
all-MiniLM-L6-v2's modules.json ends in a Normalize module, so these are already unit vectors
(recorded as "normalized_by_model": true, with the largest |norm - 1| seen).

Output JSON keys:
  model, sentence_transformers, transformers, torch, max_seq_length, batch_size,
  modules (modules.json types), pooling, normalized_by_model, max_abs_norm_minus_one,
  texts            [str]                      the inputs, in order
  kinds            [str]                      a category tag per text (for test messages)
  token_counts     [int]                      tokens incl. [CLS]/[SEP] after truncation at 256,
                                              from the model's own preprocessing
                                              (model.preprocess / model.tokenize)
  untruncated_token_counts [int]              the same without truncation
  token_ids        [[int]]                    model.tokenizer(text, truncation=True,
                                              max_length=256)["input_ids"]
  embeddings       [[float] * 384]            rounded to 7 significant digits

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

torch.set_num_threads(2)

import sentence_transformers  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

DEFAULT_MODEL = os.path.expanduser("~/.cache/foil/models/all-MiniLM-L6-v2")
DEFAULT_OUT = "tests/fixtures/encoder/minilm_embeddings.json"
MAX_SEQ_LENGTH = 256
BATCH_SIZE = 16

# ---------------------------------------------------------------------------------------------
# Texts (all written for this file).

SHORT = [
    "hello",
    "protein folding",
    "vitamin D deficiency",
    "a",
    "I",
    "ok",
    "the",
    "cats",
    "unbelievable",
    "quantum entanglement",
    "gene expression",
    "tumor suppressor genes",
    "why?",
    "New York",
    "e-mail",
    "don't",
    "x",
    "rust compiler",
    "COVID-19",
    "β-blockers",
]

SENTENCES = [
    "The quick experiment showed that mice fed a high-fat diet gained weight faster.",
    "Does drinking coffee in the morning improve short-term memory in older adults?",
    "A retriever ranks passages by the dot product between query and passage vectors.",
    "Bees communicate the direction of flowers through a waggle dance inside the hive.",
    "The bridge was closed for repairs after engineers found cracks in two of its supports.",
    "She plays the cello in a small orchestra that rehearses every Thursday evening.",
    "Antibiotic resistance spreads when bacteria exchange plasmids carrying resistance genes.",
    "Insulin lowers blood glucose by promoting its uptake into muscle and fat cells.",
    "My grandmother's recipe for apple pie calls for a pinch of cinnamon and a little lemon.",
    "The committee postponed its decision until more data on long-term safety are available.",
    "Rainfall in the valley has dropped by a third over the last forty years.",
    "Which enzyme converts angiotensin I into angiotensin II?",
    "Low-dose aspirin reduces the risk of a second heart attack in some patients.",
    "The train to the coast leaves at seven and arrives shortly before noon.",
    "Neural networks can memorize random labels, yet they still generalize on real data.",
    "Sleep deprivation impairs attention more than it impairs simple reaction time.",
    "He forgot his umbrella, so he waited under the bus shelter until the rain stopped.",
    "T cells recognize antigens presented by MHC molecules on the surface of other cells.",
    "Glaciers in the Alps have lost more than half of their volume since 1900.",
    "Is there a link between gut microbiota and anxiety in adolescents?",
    "The library extends its opening hours during the exam period.",
    "Smoking during pregnancy is associated with lower birth weight.",
    "Children who read for pleasure tend to have a larger vocabulary.",
    "A single mutation in the spike protein changed how tightly the virus binds its receptor.",
    "We measured the thermal conductivity of the alloy between 20 and 300 kelvin.",
    "The museum's new wing displays ceramics from the tenth to the fourteenth century.",
    "Exercise increases the number of mitochondria in skeletal muscle.",
    "Please turn off the lights when you leave the room.",
    "Obesity is a risk factor for type 2 diabetes, hypertension and some cancers.",
    "The negative result was never published, which biases later meta-analyses.",
    "A fox ran across the frozen field just as the sun came up.",
    "Statins lower LDL cholesterol by inhibiting HMG-CoA reductase in the liver.",
    "Her thesis compares two methods of estimating the age of trees without cutting them.",
    "Wind turbines produce less power in summer, when the air is calmer.",
    "The defendant's lawyer asked for the trial to be moved to another city.",
    "I think, therefore I am.",
]

PARAGRAPHS = [
    # 0: biology
    "Cells respond to a shortage of oxygen by stabilizing a family of transcription factors "
    "that are otherwise destroyed within minutes. Once stable, these factors enter the nucleus, "
    "pair with a partner protein and switch on hundreds of genes. Some of those genes help the "
    "cell make energy without oxygen; others ask nearby blood vessels to grow toward the "
    "starving tissue. Tumors exploit the same program: their fast-growing cores are often "
    "poorly supplied with blood, and the resulting signals attract new vessels that feed "
    "further growth. Drugs that block the pathway have been tested in kidney cancer, where the "
    "protein that normally marks the factors for destruction is frequently lost, and in anemia "
    "linked to chronic kidney disease, where raising the factors boosts the production of red "
    "blood cells.",
    # 1: history / travel
    "The old harbor town grew rich on salt long before anyone thought of tourism. Barges carried "
    "the grey crystals upriver to markets three weeks away, and the merchants who controlled the "
    "trade built tall narrow houses whose gables still line the quay. When a railway reached the "
    "region in the nineteenth century the barges disappeared within a decade, and for a while "
    "the town seemed likely to empty. It was saved, oddly, by painters: a small group arrived one "
    "summer, rented rooms above the fish market and sent canvases of the grey water and red roofs "
    "to galleries in the capital. Visitors followed the paintings, hotels followed the visitors, "
    "and today the salt warehouses hold restaurants, a cinema and a museum of the trade itself.",
    # 2: computing
    "A hash table stores key-value pairs in an array of buckets. To insert a key, the table "
    "computes a hash of the key, reduces it modulo the number of buckets and places the pair in "
    "the chosen bucket. Two keys may land in the same bucket; open addressing resolves such "
    "collisions by probing other slots, while separate chaining keeps a small list per bucket. "
    "As the table fills, lookups slow down, so implementations grow the array, typically by a "
    "factor of two, and move every entry to its new position. A good hash function spreads keys "
    "evenly, and some languages randomize it per process so that an attacker cannot craft many "
    "keys that collide and turn every lookup into a linear scan.",
    # 3: climate / agriculture
    "Farmers in the dry hills have started planting rows of drought-tolerant shrubs between "
    "their fields of barley. The shrubs shade the soil, slow the wind and trap the little rain "
    "that falls, so that moisture lingers for days instead of hours. In trials run over five "
    "seasons, plots with shrub rows yielded about fifteen percent more grain in dry years and "
    "roughly the same in wet ones. The shrubs also provide fodder for goats during the lean "
    "months, although grazing has to be controlled or the animals strip the rows bare. "
    "Agronomists caution that the benefit depends on soil depth, and that on thin stony ground "
    "the shrubs compete with the crop for water rather than conserving it.",
    # 4: medicine / statistics
    "In a randomized trial, participants are assigned to treatment or control by chance, which "
    "balances both measured and unmeasured factors between the groups on average. Even so, a "
    "single trial can mislead. Small trials produce noisy estimates, and when many outcomes are "
    "measured, some will look significant purely by luck. Pre-registration of the primary "
    "outcome, an adequate sample size chosen before recruitment, and blinding of those who "
    "assess the outcome reduce these risks. Systematic reviews then pool the results of several "
    "trials, weighting each by its precision, but they inherit any bias in what was published, "
    "which is why registries of unpublished trials matter as much as the journals.",
    # 5: everyday narrative
    "On the first warm Saturday of spring the whole street seemed to be outside. Children drew "
    "chalk maps on the pavement, an elderly neighbor carried a folding chair into the sun and "
    "fell asleep with a newspaper over his face, and somebody's radio played the same three "
    "songs on repeat. By the afternoon a table had appeared outside the bakery with lemonade for "
    "sale at a price that changed every time a new customer approached. The owner, aged about "
    "eight, kept the accounts in a notebook with a pencil tied to it by a string, and refused to "
    "give change in anything but coins because paper money, she explained, was for grown-ups.",
]

ASTRO = (
    "A comet spends most of its life far from the sun as a dark lump of ice and dust. As its "
    "orbit brings it closer, sunlight warms the surface, the ice turns directly into gas, and "
    "jets of vapor carry dust away to form a glowing head and a long tail that always points "
    "away from the sun."
)

CJK_LONG = (
    "今天早上天气很好，我们一起去公园散步，看到很多人在跑步、打太极拳和放风筝。"
    "中午在附近的小饭馆吃了饺子和面条，味道非常好，价格也不贵。"
    "下午我们参观了博物馆，里面有很多古代的瓷器、字画和青铜器，讲解员介绍得很详细。"
    "晚上回家以后，我写了一篇日记，记录了这一天的见闻和感受，希望以后还能再去。"
) * 3

GERMAN_LONG = (
    "Die Straßenbahn fährt heute wegen Bauarbeiten nur bis zum Hauptbahnhof; Fahrgäste in "
    "Richtung Süden müssen dort in die Busse der Ersatzlinie umsteigen. Die Verkehrsbetriebe "
    "bitten um Verständnis und empfehlen, für größere Gepäckstücke mehr Zeit einzuplanen. "
) * 4

NUMBERS_LONG = " ".join(str((i * 7919) % 100003) for i in range(300))


def generated_passage(n_words, seed):
    """A deterministic, grammatical-ish passage from a small word list of our own."""
    rng = np.random.default_rng(seed)
    subj = ["the sample", "each patient", "our model", "the river", "a small team",
            "the enzyme", "every student", "the council", "this method", "the old engine"]
    verb = ["reduced", "measured", "changed", "supported", "ignored", "produced",
            "described", "improved", "delayed", "predicted"]
    obj = ["the final outcome", "several key markers", "the rate of growth", "local demand",
           "a hidden pattern", "the error budget", "two rival theories", "its water supply",
           "most of the noise", "a later decline"]
    tail = ["after three weeks", "in most cases", "despite the cold", "without warning",
            "under strict control", "as expected", "for unclear reasons", "at high doses",
            "near the border", "during the night"]
    words = []
    while len(words) < n_words:
        s = " ".join([subj[rng.integers(10)], verb[rng.integers(10)], obj[rng.integers(10)],
                      tail[rng.integers(10)]])
        words.extend((s[0].upper() + s[1:] + ".").split())
    return " ".join(words[:n_words])


UNICODE = [
    "café au lait",
    "naïve résumé façade",
    "Ångström über señor",
    "Straße",
    "Die Größe der Fußgängerzone ist beeindruckend.",
    "Η φωτοσύνθεση μετατρέπει το φως σε χημική ενέργεια.",
    "ΑΒΓΔ αβγδ",
    "Москва — столица России.",
    "Привет, как дела?",
    "機械学習は大量のデータからパターンを学ぶ。",
    "深度学习模型需要大量的训练数据。",
    "한국어 문장도 처리할 수 있나요?",
    "الذكاء الاصطناعي يغير العالم",
    "שלום עולם",
    "हिन्दी में एक वाक्य",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "I love pizza 🍕🍕 and coffee ☕",
    "👨\u200d👩\u200d👧\u200d👦 family emoji with zero-width joiners",
    "flags 🇩🇪 🇯🇵 and skin tone 👍🏽",
    "e\u0301te\u0301 with combining acute accents",
    "n\u0303 a\u0308 o\u0302 combining marks",
    "zero\u200bwidth\u200bspace and soft\u00adhyphen",
    "non\u00a0breaking\u00a0spaces and an em\u2003space",
    "right-to-left mark \u200f here and left-to-right \u200e there",
    "byte order mark \ufeff in the middle",
    "ﬁne ligatures ﬂow",
    "full-width ＡＢＣ １２３",
    "math symbols ∑ ∫ √ ≤ ≥ ≠ ∞",
    "℃ ℉ № ™ © ®",
    "Ωmega and Ωhm",
    "İstanbul ısı ĞÜŞ",
    "Đà Nẵng, Việt Nam",
    "Łódź, Kraków, Wrocław",
    "Čeština: příliš žluťoučký kůň",
]

EMPTYISH = [
    "",
    " ",
    "\n",
    ".",
    "?!",
    "🙂",
    "   \t  \n ",
    "-",
    "…",
    "\u200b",
]

CODE_NUMBERS = [
    "3.14159265358979",
    "1,000,000",
    "2024-03-15T12:34:56Z",
    "+1 (555) 010-9999",
    "https://example.com/path/to/page?query=embedding&lang=en#section-2",
    "user.name+tag@example.org",
    "fn main() { println!(\"Hello, world!\"); }",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "SELECT id, title FROM docs WHERE score > 0.5 ORDER BY score DESC LIMIT 10;",
    "def f(x):\n    return x ** 2 + 1\n",
    "C6H12O6 + 6 O2 -> 6 CO2 + 6 H2O",
    "IL-6, TNF-α and IFN-γ levels rose 2.5-fold (p < 0.001, n = 48)",
    "0x7fffffff 0b1010 1e-9 -42",
    "v1.2.3-rc.1+build.5",
    "/usr/local/bin/python3 --version",
    "#hashtag @mention $PATH %20 ^caret &amp;",
]

PUNCTUATION = [
    "!!!!!!!!!!",
    "????",
    "........................................",
    "wow!!! really??? yes...",
    "---===---===---",
    "(((nested))) [[brackets]] {{braces}}",
    "'quoted' \"double\" `back` «guillemets» „German“",
    "a,b;c:d!e?f",
]

MIXED_CASE = [
    "HELLO WORLD",
    "hElLo WoRlD",
    "The NASA Mission To MARS",
    "iPhone McDonald's eBay",
    "DNA RNA mRNA tRNA",
    "ThisIsCamelCaseWithoutSpaces",
]

LONG_WORDS = [
    "x" * 120,
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "a" * 101,
    "supercalifragilisticexpialidocious " + "z" * 150 + " end",
    "abcdefghijklmnopqrstuvwxyz0123456789" * 3,
    "word " + "ab" * 50,  # exactly 100 chars: at the limit, still split into pieces
    "word " + "ab" * 50 + "a",  # 101 chars: [UNK]
]

CONTROL = [
    "tab\tseparated\tvalues",
    "null\u0000byte inside",
    "\u0000",
    "carriage\rreturn and line\nfeed",
    "bell\u0007 and escape\u001b[0m codes",
    "delete\u007f char",
    "next line\u0085 and line separator\u2028 paragraph\u2029 end",
    "vertical\u000btab and form\u000cfeed",
]


def build_boundary_texts(tokenizer):
    """Texts whose untruncated length is exactly 255, 256 and 257 tokens incl. specials."""
    words = generated_passage(400, seed=7).split()
    out = []
    for target in (255, 256, 257):
        for k in range(1, len(words) + 1):
            n = len(tokenizer(" ".join(words[:k]))["input_ids"])
            if n == target:
                out.append((f"boundary_{target}", " ".join(words[:k])))
                break
            if n > target:
                # this word overshoots by >1 piece; pad with a single-piece word instead
                base = " ".join(words[:k - 1])
                while len(tokenizer(base)["input_ids"]) < target:
                    base += " a"
                assert len(tokenizer(base)["input_ids"]) == target
                out.append((f"boundary_{target}", base))
                break
    return out


def build_texts(tokenizer):
    texts = []
    texts += [("short", t) for t in SHORT]
    texts += [("sentence", t) for t in SENTENCES]
    P = PARAGRAPHS
    texts += [("paragraph", p) for p in P]
    texts += [
        ("long", P[0] + " " + P[1]),
        ("long", P[2] + "\n\n" + P[3]),
        ("long", P[4] + " " + P[5] + " " + ASTRO),
        ("long>512", " ".join(P)),
        ("long>512", " ".join(reversed(P)) + " " + ASTRO),
        ("long>512", generated_passage(600, seed=1)),
        ("long", generated_passage(260, seed=2)),
        ("long_cjk", CJK_LONG),
        ("long_de", GERMAN_LONG),
        ("long_numbers", NUMBERS_LONG),
        ("long_repeat", "data " * 700),
    ]
    texts += build_boundary_texts(tokenizer)
    texts += [("unicode", t) for t in UNICODE]
    texts += [("emptyish", t) for t in EMPTYISH]
    texts += [("code_numbers", t) for t in CODE_NUMBERS]
    texts += [("punctuation", t) for t in PUNCTUATION]
    texts += [("mixed_case", t) for t in MIXED_CASE]
    texts += [("long_word", t) for t in LONG_WORDS]
    texts += [("control", t) for t in CONTROL]
    return texts


def st_tokenize(model, texts):
    # sentence-transformers >= 6 renamed model.tokenize to model.preprocess.
    fn = getattr(model, "preprocess", None) or model.tokenize
    return fn(texts)


def round_sig(x, digits=7):
    return float(f"{x:.{digits}g}")


def dump(obj, path):
    """JSON with one list element per line for the big lists (readable diffs)."""
    parts = []
    for k, v in obj.items():
        if k in ("texts", "kinds", "token_counts", "untruncated_token_counts"):
            body = "[\n    " + ",\n    ".join(json.dumps(x, ensure_ascii=False) for x in v) + "\n  ]"
        elif k in ("token_ids", "embeddings"):
            body = "[\n    " + ",\n    ".join(
                json.dumps(x, separators=(",", ":")) for x in v) + "\n  ]"
        else:
            body = json.dumps(v, ensure_ascii=False)
        parts.append(f"  {json.dumps(k)}: {body}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(parts) + "\n}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    model = SentenceTransformer(args.model, device="cpu")
    assert model.max_seq_length == MAX_SEQ_LENGTH, model.max_seq_length
    tok = model.tokenizer

    kinds_texts = build_texts(tok)
    kinds = [k for k, _ in kinds_texts]
    texts = [t for _, t in kinds_texts]
    assert len(texts) >= 120, len(texts)
    assert len(set(texts)) == len(texts), "duplicate texts"

    # Token ids as the Rust tokenizer must produce them, and the counts the model really used.
    token_ids = [tok(t, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"] for t in texts]
    untruncated = [len(tok(t)["input_ids"]) for t in texts]
    feats = st_tokenize(model, texts)
    mask = feats["attention_mask"]
    token_counts = [int(x) for x in mask.sum(dim=1)]
    for i, ids in enumerate(token_ids):
        n = token_counts[i]
        assert len(ids) == n, (i, texts[i][:40], len(ids), n)
        assert feats["input_ids"][i, :n].tolist() == ids, (i, texts[i][:40])
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    n_trunc = sum(u > MAX_SEQ_LENGTH for u in untruncated)
    n_512 = sum(u > 512 for u in untruncated)
    assert n_trunc >= 5 and n_512 >= 3, (n_trunc, n_512)
    assert {255, 256, 257} <= set(untruncated)

    emb = model.encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=False,
                       convert_to_numpy=True)
    assert emb.shape == (len(texts), 384), emb.shape
    assert np.isfinite(emb).all()
    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    max_dev = float(np.abs(norms - 1.0).max())

    with open(os.path.join(args.model, "modules.json")) as f:
        modules = [m["type"] for m in json.load(f)]
    normalized = any(m.endswith(".Normalize") for m in modules)
    assert normalized and max_dev < 1e-5, (modules, max_dev)

    out = {
        "model": "all-MiniLM-L6-v2",
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": MAX_SEQ_LENGTH,
        "batch_size": BATCH_SIZE,
        "modules": modules,
        "pooling": "mean",
        "normalized_by_model": normalized,
        "max_abs_norm_minus_one": max_dev,
        "encode_call": "model.encode(texts, batch_size=16, normalize_embeddings=False, "
                       "convert_to_numpy=True)",
        "texts": texts,
        "kinds": kinds,
        "token_counts": token_counts,
        "untruncated_token_counts": untruncated,
        "token_ids": token_ids,
        "embeddings": [[round_sig(float(v)) for v in row] for row in emb],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    dump(out, args.out)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {len(texts)} texts, {n_trunc} truncated at {MAX_SEQ_LENGTH} "
          f"({n_512} over 512 pieces), max |norm-1| {max_dev:.2e}, {size} bytes",
          file=sys.stderr)


if __name__ == "__main__":
    main()
