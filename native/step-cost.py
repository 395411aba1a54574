"""Where a side-by-side decode step's time goes: llama_decode for 1, 8 and 16 sequences, alone and
with a chunk of another sequence's prompt riding along (chunked prefill), and sampling.

    python3 native/step-cost.py MODEL.gguf [PROMPT_TOKENS]
"""
import sys
import time

import llama_cpp
import numpy as np

from lcdoc.engine.llm import Engine
from lcdoc.engine.parallel import ParallelDecoder, Request, _Stream

N_SEQ = 17  # 16 decoding sequences and one whose prompt is fed in chunks
PROMPT = int(sys.argv[2]) if len(sys.argv) > 2 else 2500  # tokens per resident sequence
e = Engine(sys.argv[1], n_ctx=4096, n_seq=N_SEQ)
d = ParallelDecoder(e)
rng = np.random.default_rng(0)
prompts = {q: [int(x) for x in rng.integers(100, 30000, PROMPT)] for q in range(N_SEQ - 1)}
mem = llama_cpp.llama_get_memory(d.ctx.ctx)
llama_cpp.llama_memory_clear(mem, True)
live = {q: _Stream(q, Request(p, 1)) for q, p in prompts.items()}
t = time.perf_counter()
while any(st.fed < len(st.prompt) for st in live.values()):  # as summarize feeds them
    d._fill_batch(live, d.n_batch)
    d._decode()
dt = time.perf_counter() - t
print(f"prefill {N_SEQ - 1} x {PROMPT} tokens: {dt:.2f} s ({(N_SEQ - 1) * PROMPT / dt:,.0f} tok/s)")
pos = {q: PROMPT for q in range(N_SEQ)}
feeder = N_SEQ - 1
print("| decoding sequences | prompt tokens along | step ms | ms per decoded token |")
print("|---:|---:|---:|---:|")
for n, chunk in ((1, 0), (8, 0), (8, 64), (8, 128), (8, 256), (16, 0), (16, 128), (16, 256),
                 (0, 512), (1, 0)):
    ts = []
    for _ in range(24):
        llama_cpp.llama_memory_seq_rm(mem, feeder, -1, -1)  # the chunk's sequence starts over
        d._clear()
        for q in range(feeder - n, feeder):  # ids up to the feeder's: one pass over the weights
            d._add(1000, pos[q], q, True)
            pos[q] += 1
        for j in range(chunk):
            d._add(int(rng.integers(100, 30000)), j, feeder, j == chunk - 1)
        t = time.perf_counter()
        d._decode()
        d._output_logits(n + (chunk > 0)).sum()
        ts.append(time.perf_counter() - t)
    ms = np.median(ts) * 1000
    print(f"| {n} | {chunk} | {ms:.2f} | {ms / n if n else float('nan'):.2f} |")
rows = rng.standard_normal((16, d.n_vocab)).astype(np.float32)
t = time.perf_counter()
for _ in range(40):
    d._greedy(rows, [list(range(64))] * 16)
print(f"sampling 16 rows: {(time.perf_counter() - t) / 40 * 1000:.2f} ms")
