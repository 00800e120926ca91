#!/usr/bin/env python3
"""Golden files for foil-llm: tokenizer ids, chat template renderings and greedy continuations
of the GGUF models, from llama.cpp (llama-cpp-python) and Jinja2.

    scripts/golden/make_llm_golden.py            # both models
    scripts/golden/make_llm_golden.py smollm2    # one

Writes tests/fixtures/llm/<model>.json:
  tokenize: [{text, ids}]           llama.cpp's tokenizer (vocab_only), no BOS, special tokens
                                    parsed (so "<|im_start|>" written in a text is one token)
  chat:     [{messages, text, ids}] the GGUF's own `tokenizer.chat_template` rendered by Jinja2
                                    the way transformers' apply_chat_template does (sandboxed,
                                    trim_blocks, lstrip_blocks, add_generation_prompt=True),
                                    then tokenized as above
  greedy:   [{messages, prompt_ids, ids, margins, first_top5}]  llama.cpp's greedy (argmax)
                                    continuation of the rendered prompt, N_GREEDY tokens or up
                                    to end of turn (n_threads=2, n_batch=512); margins[i] is the
                                    gap between the best and second-best logit at step i;
                                    first_top5 the five best [id, logit] of the first step

Needs: pip install llama-cpp-python jinja2. Models: scripts/fetch-models.sh smollm2 qwen.
"""

import json
import os
import sys
from pathlib import Path

import jinja2
import numpy as np
import jinja2.sandbox
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("FOIL_MODELS", Path.home() / ".cache/foil/models"))
FILES = {
    "smollm2": MODELS / "SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen": MODELS / "Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
}
N_GREEDY = 24

TEXTS = [
    "Hello world",
    "hello, World!",
    " leading space",
    "trailing space ",
    "two  spaces and   three",
    "tabs\tand\ttabs",
    "line\nbreak\n\nand\r\nCRLF",
    "    indented code",
    "\n\n\n",
    "",
    " ",
    "12345678901234567890",
    "3.14159 and 2,718 and -42",
    "In 1998, 42% of 1,000 mice (n=1000) died.",
    "Price: $19.99 (20% off!)",
    "I'm you're they've we'll it's she'd",
    "DON'T SHOUT, It'S fine",
    "naïve café résumé",
    "Größe straße Ärger",
    "日本語のテキスト",
    "中文文本测试，包括标点。",
    "Привет, мир!",
    "مرحبا بالعالم",
    "emoji 😀👍🏽🇫🇷 end",
    "zero\u200bwidth joiner\u200d",
    "αβγ δεζ ηθι ∑∫∂",
    "def foo(x):\n    return x ** 2  # square\n",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
    "<html><body class=\"x\">Hi</body></html>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "SELECT * FROM users WHERE id = 7;",
    "https://example.com/path?query=1&x=y#frag",
    "user@example.org",
    "CamelCaseIdentifier snake_case_identifier kebab-case",
    "BRCA1 mutations increase p53 expression in HeLa cells.",
    "The IL-6/JAK/STAT3 pathway (Fig. 2B) is upregulated.",
    "Vitamin D3 (25(OH)D) levels < 20 ng/mL",
    "...!!!???---",
    "a" * 40,
    "ab " * 15,
    "<|im_start|>user\nHi<|im_end|>\n",
    "text before <|im_end|> text after",
    "<|endoftext|>",
    "<|im_start|>assistant\n",
    "mixed\tws \n \t end",
    "1 2 3 4 5 6 7 8 9 0",
    "x=1;y=2;z=x+y",
    "Ünïcödé ÑOÑO",
    "  \n  leading newline and spaces",
    "quote 'single' and \"double\"",
    "hyphen-ated and under_scored and dot.ted",
]

CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You write search queries."}, {"role": "user", "content": "Passage: cats sleep a lot."}],
    [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "system", "content": "Now be verbose."},
        {"role": "user", "content": "Explain café ☕ in 日本語\nplease."},
    ],
    [{"role": "user", "content": "  spaces  \n\n and newlines \n"}],
]

GREEDY = [
    [{"role": "user", "content": "Write one search query for this passage: Vitamin D deficiency is associated with an increased risk of respiratory infections in children."}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "List three colors."}],
]


def render(template: str, messages) -> str:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, **kw)

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, tools=None)


def main(names):
    out_dir = ROOT / "tests/fixtures/llm"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = FILES[name]
        llm = Llama(str(path), n_ctx=2048, n_threads=2, n_batch=512, verbose=False)
        template = llm.metadata["tokenizer.chat_template"]

        def tok(text):
            return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

        golden = {
            "model": path.name,
            "reference": "llama-cpp-python " + __import__("llama_cpp").__version__,
            "tokenize": [{"text": t, "ids": tok(t)} for t in TEXTS],
            "chat": [],
            "greedy": [],
        }
        for messages in CHATS:
            text = render(template, messages)
            golden["chat"].append({"messages": messages, "text": text, "ids": tok(text)})
        eog = {llm.token_eos()}
        for special in ("<|im_end|>", "<|endoftext|>"):
            ids = tok(special)
            if len(ids) == 1:
                eog.add(ids[0])
        for messages in GREEDY:
            prompt = tok(render(template, messages))
            llm.reset()
            llm.eval(prompt)
            ids, margins, top5 = [], [], None
            while True:
                logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()
                order = np.argsort(-logits, kind="stable")
                if top5 is None:
                    top5 = [[int(i), float(logits[i])] for i in order[:5]]
                t = int(order[0])
                ids.append(t)
                margins.append(float(logits[order[0]] - logits[order[1]]))
                if t in eog or len(ids) >= N_GREEDY:
                    break
                llm.eval([t])
            golden["greedy"].append({"messages": messages, "prompt_ids": prompt, "ids": ids,
                                     "margins": margins, "first_top5": top5,
                                     "text": llm.detokenize([i for i in ids if i not in eog]).decode("utf-8", "replace")})
        target = out_dir / f"{name}.json"
        target.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:] or list(FILES))
