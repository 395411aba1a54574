#!/usr/bin/env python3
"""Do MMQ and cuBLAS prompt kernels give the same answers? Greedy continuations and the last
prompt position's logits of one model, each kernel choice in a fresh process (the patched
llama.cpp reads GGML_CUDA_CUBLAS_MIN_BATCH once per process), compared side by side.

    python3 native/kernels-compare.py MODEL.gguf TEXT.txt [--prompts 8] [--prompt-tokens 1500]
        [--gen 64] [--json out.json]

Prompts are consecutive pieces of TEXT (a real manual), each followed by a request to go on, so
their prefill runs through 512-row batches: cuBLAS with GGML_CUDA_CUBLAS_MIN_BATCH=128, MMQ without.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys




def run_one(a: argparse.Namespace) -> dict:
    """In the child: greedy continuations and last-position logits for every prompt."""
    import llama_cpp
    from llama_cpp import Llama

    import numpy as np

    llm = Llama(model_path=a.model, n_gpu_layers=-1, flash_attn=True, n_ctx=a.prompt_tokens + a.gen + 64,
                n_batch=512, n_ubatch=512, verbose=False, seed=0)
    toks = llm.tokenize(open(a.text, encoding="utf-8", errors="replace").read().encode(), add_bos=False)
    out = []
    for i in range(a.prompts):
        piece = toks[i * a.prompt_tokens:(i + 1) * a.prompt_tokens - 16]
        prompt = [llm.token_bos()] + piece + llm.tokenize(b"\n\nContinue the text above:\n", add_bos=False)
        llm.reset()
        llm.eval(prompt)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
        gen = []
        for _ in range(a.gen):
            t = int(np.argmax(logits)) if not gen else int(np.argmax(np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))))
            if t == llm.token_eos():
                break
            gen.append(t)
            llm.eval([t])
        top = np.argsort(-logits)[:10]
        out.append({"prompt_tokens": len(prompt), "greedy": gen,
                    "text": llm.detokenize(gen).decode("utf-8", "replace"),
                    "logits_top10": top.tolist(), "logits": logits.tolist()})
    return {"kernels": os.environ.get("GGML_CUDA_CUBLAS_MIN_BATCH", "mmq"), "results": out}


def compare(a: argparse.Namespace) -> dict:
    """In the parent: each kernel choice in a child, then the differences."""
    import numpy as np

    runs = {}
    for name, env in (("mmq", None), ("cublas", "128")):
        e = dict(os.environ)
        e.pop("GGML_CUDA_CUBLAS_MIN_BATCH", None)
        if env:
            e["GGML_CUDA_CUBLAS_MIN_BATCH"] = env
        p = subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]], env=e,
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"{name} run failed ({p.returncode}): {p.stderr[-2000:]}")
        runs[name] = json.loads(p.stdout.splitlines()[-1])["results"]
    rows = []
    for i, (m, c) in enumerate(zip(runs["mmq"], runs["cublas"])):
        lm, lc = np.array(m["logits"]), np.array(c["logits"])
        pm, pc = softmax(lm), softmax(lc)
        same = m["greedy"] == c["greedy"]
        first_diff = next((k for k, (x, y) in enumerate(zip(m["greedy"], c["greedy"])) if x != y),
                          None if same else min(len(m["greedy"]), len(c["greedy"])))
        rows.append({"prompt": i, "prompt_tokens": m["prompt_tokens"], "greedy_equal": same,
                     "first_difference_at": first_diff, "generated": len(m["greedy"]),
                     "top1_equal": int(lm.argmax()) == int(lc.argmax()),
                     "max_abs_logit_diff": round(float(np.abs(lm - lc).max()), 4),
                     "logit_range": round(float(lm.max() - lm.min()), 2),
                     "kld": float(np.sum(pm * (np.log(pm + 1e-30) - np.log(pc + 1e-30)))),
                     "mmq_text": m["text"][:60], "cublas_text": c["text"][:60]})
    return {"model": a.model, "text": a.text, "rows": rows,
            "greedy_equal": sum(r["greedy_equal"] for r in rows), "prompts": len(rows),
            "top1_equal": sum(r["top1_equal"] for r in rows),
            "max_abs_logit_diff": max(r["max_abs_logit_diff"] for r in rows),
            "mean_kld": sum(r["kld"] for r in rows) / len(rows)}


def softmax(x):
    import numpy as np

    e = np.exp(x - x.max())
    return e / e.sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=1500)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_one(a)))
        return
    d = compare(a)
    for r in d["rows"]:
        print(f"prompt {r['prompt']} ({r['prompt_tokens']} tok): greedy "
              f"{'equal' if r['greedy_equal'] else 'differs at token %s' % r['first_difference_at']}"
              f" ({r['generated']} generated), top-1 {'equal' if r['top1_equal'] else 'DIFFERS'}, "
              f"max |dlogit| {r['max_abs_logit_diff']} of range {r['logit_range']}, KLD {r['kld']:.2e}")
    print(f"summary: greedy equal {d['greedy_equal']}/{d['prompts']}, top-1 equal "
          f"{d['top1_equal']}/{d['prompts']}, max |dlogit| {d['max_abs_logit_diff']}, "
          f"mean KLD {d['mean_kld']:.2e}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(d, f, indent=1)


if __name__ == "__main__":
    main()
