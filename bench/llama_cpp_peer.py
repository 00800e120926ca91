#!/usr/bin/env python3
"""llama-cpp-python's side of bench/generate.sh; prints one JSON line like foil's
crates/foil-llm/examples/llm_bench.rs.

    bench/llama_cpp_peer.py MODEL.gguf CORPUS.jsonl [N] [MAX_TOKENS] [RUNS] [THREADS]

Measures, on the same prompts as foil (the chat template rendered by Jinja2 as transformers
does, tokenized by llama.cpp with special tokens parsed):
  pp_tok_s         prompt tokens / time of one eval() of the first prompt (fresh context)
  tg_tok_s         64 greedy decode steps (eval of one token each) / their time
  batch_queries_s  N prompts / time to generate all N (greedy, up to MAX_TOKENS, stopping at
                   end of turn), one after another: llama-cpp-python's API runs one sequence
Medians over RUNS.
"""

import json
import resource
import statistics
import sys
import time

import numpy as np
from llama_cpp import Llama

sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "scripts", "golden"))
from make_llm_golden import render  # noqa: E402


def last_logits(llm):
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))


def query_prompt(title, text):
    return ("Write one search query that this passage answers. Reply with the query only.\n\n"
            f"Passage: {title}. {text}")


def main():
    model, corpus = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    threads = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    decode_tokens = 64

    t = time.perf_counter()
    llm = Llama(model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, n_batch=2048,
                n_ubatch=512, verbose=False)
    load_s = time.perf_counter() - t
    template = llm.metadata["tokenizer.chat_template"]
    passages = []
    with open(corpus) as f:
        for line in f:
            if len(passages) == n:
                break
            d = json.loads(line)
            passages.append(query_prompt(d.get("title", ""), d.get("text", "")))
    prompts = [llm.tokenize(render(template, [{"role": "user", "content": p}]).encode(),
                            add_bos=False, special=True) for p in passages]
    eog = {llm.token_eos()}
    for s in ("<|im_end|>", "<|endoftext|>"):
        ids = llm.tokenize(s.encode(), add_bos=False, special=True)
        if len(ids) == 1:
            eog.add(ids[0])

    pp, tg, pp_cpu, batch_cpu = [], [], [], []
    cpu = time.process_time
    for _ in range(runs):
        llm.reset()
        t, c = time.perf_counter(), cpu()
        llm.eval(prompts[0])
        pp.append(len(prompts[0]) / (time.perf_counter() - t))
        pp_cpu.append(cpu() - c)
        nxt = int(np.argmax(last_logits(llm)))
        t = time.perf_counter()
        for _ in range(decode_tokens):
            llm.eval([nxt])
            nxt = int(np.argmax(last_logits(llm)))
        tg.append(decode_tokens / (time.perf_counter() - t))

    qps = []
    first = ""
    completion = 0
    for _ in range(runs):
        t, c = time.perf_counter(), cpu()
        completion = 0
        outs = []
        for prompt in prompts:
            llm.reset()
            ids = []
            for tok in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0,
                                    reset=True):
                if tok in eog:
                    break
                ids.append(int(tok))
                if len(ids) >= max_tokens:
                    break
            completion += len(ids)
            outs.append(ids)
        qps.append(len(prompts) / (time.perf_counter() - t))
        batch_cpu.append(cpu() - c)
        first = llm.detokenize(outs[0]).decode("utf-8", "replace")
    print(json.dumps({
        "tool": "llama-cpp-python",
        "threads": threads,
        "load_s": load_s,
        "prompt_tokens_one": len(prompts[0]),
        "pp_tok_s": statistics.median(pp),
        "pp_cpu_s": statistics.median(pp_cpu),
        "tg_tok_s": statistics.median(tg),
        "batch": len(prompts),
        "batch_prompt_tokens": sum(map(len, prompts)),
        "batch_completion_tokens": completion,
        "batch_queries_s": statistics.median(qps),
        "batch_cpu_s": statistics.median(batch_cpu),
        "first_query": first,
        # Peak resident set in MB (Linux reports ru_maxrss in kB); the mapped GGUF pages count.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
