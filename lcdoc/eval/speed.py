"""Prefill/decode speed, memory and prompt-cache time-to-first-token, lcdoc's engine against raw calls.

Runs on any GGUF, a real one or a random-weight one of a production shape (speed is the same).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SpeedRow:
    model: str
    n_ctx: int
    kv: str
    prompt_tokens: int
    prefill_tok_s: float
    decode_tok_s: float
    raw_prefill_tok_s: float
    raw_decode_tok_s: float
    overhead_pct: float  # engine's prefill+decode time over raw llama-cpp-python, in percent
    ttft_cold_s: float
    ttft_warm_s: float
    gpu_mem_mib: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def _gpu_used_mib() -> float | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return float(out.split()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _filler_tokens(engine, n: int, seed: int = 0) -> list[int]:
    # Real words, so that a real model sees text; repeated and shuffled to the exact length.
    words = ("the report describes maintenance schedules budgets staff meetings rivers bridges "
             "orchards libraries committees audits and weather over several years").split()
    rng = np.random.default_rng(seed)
    text = " ".join(rng.choice(words, size=n))
    toks = engine.tokenizer.encode(text)
    while len(toks) < n:
        toks = toks + toks
    return toks[:n]


def bench_engine(model: str | Path | None, contexts: list[int], kv_types: list[str],
                 decode_tokens: int = 64, fill: float = 0.9, gpu_layers: int | None = None,
                 cache_dir: Path | None = None, reps: int = 2) -> list[SpeedRow]:
    """For each context and cache type: engine vs raw prefill/decode, memory, cold/warm TTFT."""
    from lcdoc.engine.llm import Engine

    rows = []
    for n_ctx in contexts:
        for kv in kv_types:
            base = _gpu_used_mib()
            eng = Engine(model, n_ctx=n_ctx, kv_type=kv, gpu_layers=gpu_layers, cache_dir=cache_dir)
            llm = eng.llm
            n_prompt = int(n_ctx * fill) - decode_tokens
            pre = _filler_tokens(eng, n_prompt - 16)
            suf = _filler_tokens(eng, 16, seed=1)
            eos = llm.token_eos()

            from llama_cpp import LogitsProcessorList

            def no_eos(_ids, logits, _eos=eos):
                logits[_eos] = -np.inf
                return logits

            procs = LogitsProcessorList([no_eos])
            raw_prefill = raw_decode = cold_total = float("inf")
            mem = None
            cold = None
            # Alternate raw and engine, best of `reps` each: shared machines are noisy.
            for _ in range(reps):
                # Raw llama-cpp-python: eval the prompt, then greedy decode token by token.
                llm.reset()
                t0 = time.perf_counter()
                llm.eval(pre + suf)
                t1 = time.perf_counter()
                for _ in range(decode_tokens):
                    tok = llm.sample(top_k=1, repeat_penalty=1.1, logits_processor=procs)
                    llm.eval([tok])
                t2 = time.perf_counter()
                mem = _gpu_used_mib()
                raw_prefill, raw_decode = min(raw_prefill, t1 - t0), min(raw_decode, t2 - t1)
                # lcdoc's engine, cold (the prefix snapshot is taken after the answer).
                eng.cache.mem.clear()
                c = eng.complete_tokens(pre, suf, max_tokens=decode_tokens, ignore_eos=True,
                                        persist_prefix=False)
                if c.prefill_s + c.generate_s < cold_total:
                    cold, cold_total = c, c.prefill_s + c.generate_s
            # Warm: the snapshot restored, a different question prefilled.
            warm = eng.complete_tokens(pre, suf[:8] + suf[8:][::-1], max_tokens=decode_tokens,
                                       ignore_eos=True, persist_prefix=False)
            eng_prefill = cold.prefill_s  # includes the first token's decode
            # Same work on both sides: prefill plus decode_tokens tokens.
            overhead = (cold_total / (raw_prefill + raw_decode) - 1) * 100
            rows.append(SpeedRow(
                model=eng.arch.name, n_ctx=n_ctx, kv=kv, prompt_tokens=len(pre) + len(suf),
                prefill_tok_s=(len(pre) + len(suf)) / eng_prefill,
                decode_tok_s=max(1, cold.n_completion - 1) / cold.generate_s,
                raw_prefill_tok_s=(len(pre) + len(suf)) / raw_prefill,
                raw_decode_tok_s=decode_tokens / raw_decode,
                overhead_pct=overhead, ttft_cold_s=cold.prefill_s, ttft_warm_s=warm.prefill_s,
                gpu_mem_mib=(mem - base) if mem is not None and base is not None else None,
            ))
            eng.close()
            del eng, llm
    return rows


def markdown_table(rows: list[SpeedRow]) -> str:
    head = ("| model | n_ctx | KV | prompt tok | prefill tok/s (raw) | decode tok/s (raw) | "
            "engine overhead | TTFT cold | TTFT warm | speed-up | GPU mem |\n|" + "---|" * 11)
    lines = [head]
    for r in rows:
        mem = f"{r.gpu_mem_mib / 1024:.1f} GiB" if r.gpu_mem_mib else "-"
        lines.append(
            f"| {r.model} | {r.n_ctx:,} | {r.kv} | {r.prompt_tokens:,} | {r.prefill_tok_s:,.0f} "
            f"({r.raw_prefill_tok_s:,.0f}) | {r.decode_tok_s:,.1f} ({r.raw_decode_tok_s:,.1f}) | "
            f"{r.overhead_pct:+.1f}% | {r.ttft_cold_s:.2f} s | {r.ttft_warm_s:.3f} s | "
            f"{r.ttft_cold_s / r.ttft_warm_s:,.0f}x | {mem} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """`python -m lcdoc.eval.speed --model M --ctx 32768,131072 --kv f16,q8_0` (no CLI deps)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--ctx", default="4096")
    ap.add_argument("--kv", default="f16")
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    a = ap.parse_args(argv)
    rows = bench_engine(a.model, [int(c) for c in a.ctx.split(",")], a.kv.split(","), a.decode,
                        reps=a.reps)
    print(markdown_table(rows), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump([r.as_dict() for r in rows], f, indent=1)


if __name__ == "__main__":
    main()
